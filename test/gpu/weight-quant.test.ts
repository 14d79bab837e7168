// Quantisation at load on the GPU (shaders/weight_quant.wgsl, src/kernels/weight-quant.ts) against its
// CPU reference (weight-quant.ref.ts): bit-exact words and scales (tolerance 0: both implement the same
// integer-exact rounding), on random ragged shapes from BF16, F16 and F32 sources, into q8 and q4,
// written at offsets into poisoned buffers whose other words must stay poisoned, in one slice and in
// many. The reference itself equals the host packer (packWeight) except at exact ties x = (k + 1/2)·s,
// where they differ by one step (the host multiplies by a double-precision 1/s).
import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu } from '../helpers/gpu';
import { quantizeOnGpu, type QuantSource } from '../../src/kernels/weight-quant';
import { quantizeRef } from '../../src/kernels/weight-quant.ref';
import { packWeight, rowLayout, QMAX } from '../../src/kernels/weight-pack';
import { f32ToBf16, bf16ToF32, f32ToF16, f16ToF32 } from '../../src/util/half';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

const POISON = 0xdeadbeef;

/** Seeded values with groups that exercise the edges: zeros, tiny (f16-subnormal scales), huge, exact ties. */
function values(rows: number, K: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const rnd = () => { s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0; return s / 2 ** 32; };
  const w = new Float32Array(rows * K);
  for (let n = 0; n < rows; n++) {
    const kind = n % 5, mag = kind === 1 ? 2 ** -(14 + Math.floor(rnd() * 20)) : kind === 2 ? 2 ** Math.floor(rnd() * 10) : 0.05;
    for (let k = 0; k < K; k++) {
      const g = (rnd() + rnd() + rnd() - 1.5) * mag;
      w[n * K + k] = kind === 3 && k % 32 < 8 ? 0 : g;
    }
  }
  return w;
}

/** Replaces values with exact ties (k + 1/2)·s of their group's scale (as the reference computes s). */
function withTies(w: Float32Array, rows: number, K: number, Q: number): void {
  for (let n = 0; n < rows; n += 3) {
    for (let g = 0; g * 32 < K; g++) {
      let amax = 0;
      for (let k = g * 32; k < Math.min(K, g * 32 + 32); k++) amax = Math.max(amax, Math.abs(w[n * K + k]));
      const sc = f16ToF32(f32ToF16(Math.fround(amax / Q)));
      for (let k = g * 32 + 1; k < Math.min(K, g * 32 + 32); k += 4) {
        const t = Math.fround((Math.floor(w[n * K + k] / sc) + 0.5) * sc);
        if (Math.abs(t) <= amax) w[n * K + k] = t;
      }
    }
  }
}

/** The matrix in `source` format: its bytes and the f32 values those bytes hold. */
function encode(w: Float32Array, source: QuantSource): { bytes: Uint8Array; exact: Float32Array } {
  if (source === 'f32') return { bytes: new Uint8Array(w.buffer.slice(0)), exact: w };
  const h = new Uint16Array(w.length), exact = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) {
    h[i] = source === 'bf16' ? f32ToBf16(w[i]) : f32ToF16(w[i]);
    exact[i] = source === 'bf16' ? bf16ToF32(h[i]) : f16ToF32(h[i]);
  }
  return { bytes: new Uint8Array(h.buffer), exact };
}

async function runGpu(bytes: Uint8Array, source: QuantSource, rows: number, K: number, format: 'q8' | 'q4', sliceBytes?: number) {
  const { rowWords } = rowLayout(format, K);
  const G = Math.ceil(K / 32);
  const dataWords = rows * rowWords, scaleWords = Math.ceil((rows * G) / 2);
  // Written at offsets, with poisoned words before and after the region.
  const dOff = 5, sOff = 3;
  const dst = gpu.buffers.create('dst', (dOff + dataWords + 7) * 4);
  const scales = gpu.buffers.create('scales', (sOff + scaleWords + 5) * 4);
  gpu.buffers.write(dst, new Uint32Array(dOff + dataWords + 7).fill(POISON));
  gpu.buffers.write(scales, new Uint32Array(sOff + scaleWords + 5).fill(POISON));
  await gpu.checked(async () => quantizeOnGpu(gpu, { src: bytes, source, rows, K, format, dst, dstOffsetWords: dOff, scales, scaleOffsetWords: sOff, sliceBytes }));
  const d = await gpu.buffers.readU32(dst), s = await gpu.buffers.readU32(scales);
  gpu.buffers.destroy(dst);
  gpu.buffers.destroy(scales);
  for (const [arr, off, n] of [[d, dOff, dataWords], [s, sOff, scaleWords]] as const) {
    expect([...arr.subarray(0, off)].every((x) => x === POISON)).toBe(true);
    expect([...arr.subarray(off + n)].every((x) => x === POISON)).toBe(true);
  }
  return { data: d.subarray(dOff, dOff + dataWords), scales: s.subarray(sOff, sOff + scaleWords) };
}

const firstDiff = (a: Uint32Array, b: Uint32Array) => a.findIndex((x, i) => x !== b[i]);

describe('weight_quant: GPU quantisation equals its CPU reference bit for bit', () => {
  const shapes: [number, number][] = [[1, 1], [3, 31], [5, 33], [7, 100], [2, 1000], [13, 48], [64, 256], [9, 2049]];
  for (const source of ['bf16', 'f16', 'f32'] as const) {
    for (const format of ['q8', 'q4'] as const) {
      it(`${source} → ${format} on ragged shapes`, async () => {
        for (const [rows, K] of shapes) {
          const w = values(rows, K, rows * 7919 + K);
          withTies(w, rows, K, QMAX[format]);
          const { bytes, exact } = encode(w, source);
          const got = await runGpu(bytes, source, rows, K, format);
          const want = quantizeRef(exact, rows, K, format);
          expect(firstDiff(got.scales, want.scales!), `scales [${rows}, ${K}]`).toBe(-1);
          expect(firstDiff(got.data, want.data), `words [${rows}, ${K}]`).toBe(-1);
        }
      });
    }
  }

  it('in slices of a few rows (odd and even group counts) as in one', async () => {
    for (const [rows, K] of [[37, 96], [41, 100], [16, 64]] as const) {
      for (const format of ['q8', 'q4'] as const) {
        const { bytes, exact } = encode(values(rows, K, rows + K), 'bf16');
        const got = await runGpu(bytes, 'bf16', rows, K, format, K * 2 * 3); // 3 rows of bf16 per slice (2 when rows must pair)
        const want = quantizeRef(exact, rows, K, format);
        expect(firstDiff(got.scales, want.scales!)).toBe(-1);
        expect(firstDiff(got.data, want.data)).toBe(-1);
      }
    }
  });

  it('scales of amax across the whole range equal f16(fround(amax / Q)) (integer division in the shader)', async () => {
    // One group per row whose largest |x| is a random f32 from 2^-40 to 2^17: every rounding case of the
    // two-step conversion, f16 subnormals and overflow to Inf included.
    const rows = 4096, K = 32, w = new Float32Array(rows * K);
    let s = 12345;
    const rnd = () => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return s / 2 ** 32; };
    for (let n = 0; n < rows; n++) {
      const a = Math.fround(2 ** (-40 + rnd() * 57) * (rnd() < 0.5 ? 1 : -1));
      w[n * K + (n % K)] = a;
      for (let k = 0; k < K; k++) if (k !== n % K) w[n * K + k] = Math.fround(a * rnd() * 0.9);
    }
    for (const format of ['q8', 'q4'] as const) {
      const got = await runGpu(new Uint8Array(w.buffer.slice(0)), 'f32', rows, K, format);
      const want = quantizeRef(w, rows, K, format);
      expect(firstDiff(got.scales, want.scales!)).toBe(-1);
    }
  });
});

describe('the reference against the host packer', () => {
  it('equal words and scales except at exact ties, where the codes differ by one step', () => {
    let ties = 0, diffs = 0;
    for (const [rows, K] of [[64, 256], [7, 100], [33, 2048]] as const) {
      for (const format of ['q8', 'q4'] as const) {
        const w = values(rows, K, rows ^ K);
        withTies(w, rows, K, QMAX[format]);
        const { exact } = encode(w, 'bf16');
        const ref = quantizeRef(exact, rows, K, format), host = packWeight(exact, rows, K, format);
        expect(firstDiff(ref.scales!, host.scales!)).toBe(-1);
        const bits = format === 'q8' ? 8 : 4, per = 32 / bits, mask = (1 << bits) - 1;
        for (let n = 0; n < rows; n++) {
          for (let k = 0; k < K; k++) {
            const word = n * ref.rowWords + Math.floor(k / per), sh = (k % per) * bits;
            const a = (ref.data[word] >>> sh) & mask, b = (host.data[word] >>> sh) & mask;
            const sc = f16ToF32((ref.scales![(n * ref.scaleCols + (k >> 5)) >> 1] >>> (((n * ref.scaleCols + (k >> 5)) & 1) * 16)) & 0xffff);
            const x = exact[n * K + k];
            const tie = sc > 0 && Number.isInteger(x / sc - 0.5);
            if (tie) ties++;
            if (a !== b) {
              diffs++;
              expect(tie, `code of [${n}, ${k}] differs off a tie`).toBe(true);
              const signed = (v: number) => (format === 'q8' ? (v << 24) >> 24 : v - 8);
              expect(Math.abs(signed(a) - signed(b))).toBe(1);
            }
          }
        }
      }
    }
    // The ties are there (so the comparison above covered them); some may round alike.
    expect(ties).toBeGreaterThan(100);
    console.info(`reference vs host packer: ${ties} exact ties, ${diffs} codes differ (all at ties)`);
  });
});
