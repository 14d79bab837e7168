// The WASM GGUF block kernels (src/kernels/wasm/gguf.c) against the CPU reference (kernels/gguf-linear.ref.ts:
// ggml's dequantisation, then the f32 product in float64), on ragged shapes (N and M not multiples of the
// kernels' steps, K from one block up). Outputs are poisoned with NaN first, so an unwritten element fails.
// The kernels multiply int16 activations (groups of 32, kernels/quant-x16.ref.ts): the reference takes x
// through the same rounding, so the check is of the block decode and the arithmetic, with the tolerance of
// the other WASM matmuls: |Δ| ≤ 1e-5·(1 + Σ|x·w|) (f32 sums in SIMD order vs float64).
// A separate check bounds what the int16 activations cost against f32 ones: ≤ 1e-4·(1 + Σ|x·w|).
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { WasmKernels } from '../../src/kernels/wasm/kernels';
import { quantize, type DecodableType } from '../../src/formats/gguf-blocks';
import { ggufLinearRef } from '../../src/kernels/gguf-linear.ref';
import { dequantize } from '../../src/formats/gguf-blocks';
import { quantizeActivationsI16Ref } from '../../src/kernels/quant-x16.ref';
import { mulberry32 } from '../../src/util/random';

vi.setConfig({ testTimeout: 120_000 });

let k: WasmKernels;
let k2: WasmKernels;
beforeAll(async () => { k = await WasmKernels.create({ threads: 1 }); k2 = await WasmKernels.create({ threads: 2 }); });
afterAll(() => { k2?.destroy(); });

const rand = (n: number, seed: number, scale = 1) => { const r = mulberry32(seed); return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale); };
function poisoned(kk: WasmKernels, n: number): number { const p = kk.alloc(n * 4); kk.f32.fill(NaN, p >> 2, (p >> 2) + n); return p; }

function magnitudes(x: ArrayLike<number>, w: Float32Array, M: number, N: number, K: number): Float64Array {
  const mag = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) { let s = 0; for (let j = 0; j < K; j++) s += Math.abs(x[m * K + j] * w[n * K + j]); mag[m * N + n] = s; }
  return mag;
}

function expectWithin(got: Float32Array, want: ArrayLike<number>, tol: (i: number) => number, what: string) {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol(i))) throw new Error(`${what}: element ${i}: got ${got[i]}, want ${want[i]} (tol ${tol(i)})`);
  }
}

/** How many blocks have an f16-subnormal d (the super-block scale). */
function subnormalScales(type: 'Q5_K' | 'Q6_K', b: Uint8Array): number {
  const bb = type === 'Q5_K' ? 176 : 210, at = type === 'Q5_K' ? 0 : 208;
  let n = 0;
  for (let o = 0; o < b.length; o += bb) if (((b[o + at + 1] >> 2) & 31) === 0 && (b[o + at] | (b[o + at + 1] & 3))) n++;
  return n;
}

const BLOCK: Record<string, number> = { Q8_0: 32, Q4_0: 32, Q4_K: 256, Q5_K: 256, Q6_K: 256, F16: 8, BF16: 8 };
const TYPES: DecodableType[] = ['Q8_0', 'Q4_0', 'Q4_K', 'Q5_K', 'Q6_K', 'F16', 'BF16'];

describe('WASM GGUF matmul vs the dequantising reference', () => {
  it.each(TYPES)('%s on ragged shapes, stored byte for byte', (type) => {
    const b = BLOCK[type];
    const shapes: [number, number, number][] = [[1, 1, b], [1, 7, 2 * b], [2, 5, b], [3, 33, 3 * b], [5, 17, 2 * b], [1, 130, 4 * b], [4, 9, b]];
    let seed = 11;
    for (const [i, [M, N, K]] of shapes.entries()) {
      const mark = k.mark();
      try {
        // Every other shape with small weights: K-quant scales d then are f16 subnormals (decoded apart).
        const w = rand(N * K, seed++, i % 2 ? 0.004 : 0.5), x = rand(M * K, seed++);
        const bytes = quantize(type, w);
        const ww = k.ggufWeight(type, [bytes], N, K, `${type} test weight`);
        // The blocks (or halves) are in the module's memory as they are in the file.
        expect(ww.bytes).toBe(bytes.length);
        expect(k.u8.slice(ww.ptr, ww.ptr + bytes.length)).toEqual(bytes);
        expect(ww.format).toBe(type === 'F16' ? 'f16' : type === 'BF16' ? 'bf16' : 'gguf');
        const xp = k.putF32(x), yp = poisoned(k, M * N);
        k.matmul(xp, ww, yp, M);
        const deq = dequantize(type, bytes, N * K);
        // Block types multiply int16 activations; the 16-bit kernels take x as f32.
        const xr = ww.format === 'gguf' ? quantizeActivationsI16Ref(x, M, K) : x;
        const want = ggufLinearRef(xr, type, bytes, M, N, K);
        const mag = magnitudes(xr, deq, M, N, K);
        const got = k.readF32(yp, M * N);
        if (i === 1 && (type === 'Q5_K' || type === 'Q6_K')) expect(subnormalScales(type, bytes)).toBeGreaterThan(0);
        expectWithin(got, want, (i) => 1e-5 * (1 + mag[i]), `${type} [${M}, ${N}, ${K}]`);
        // Against f32 activations: the int16 rounding's cost.
        const exact = ggufLinearRef(x, type, bytes, M, N, K);
        expectWithin(got, exact, (i) => 1e-4 * (1 + mag[i]), `${type} [${M}, ${N}, ${K}] vs f32 activations`);
        // A row range writes those rows only.
        if (N > 2) {
          const y2 = poisoned(k, M * N);
          k.matmul(xp, ww, y2, M, 1, N - 1);
          const g2 = k.readF32(y2, M * N);
          for (let m = 0; m < M; m++) {
            for (let n = 0; n < N; n++) {
              const v = g2[m * N + n];
              if (n === 0 || n === N - 1) expect(Number.isNaN(v)).toBe(true);
              else expect(v).toBe(got[m * N + n]);
            }
          }
        }
      } finally {
        k.release(mark);
      }
    }
  });

  it('stacked pieces (an expert\'s gate and up) form one [2I, K] matrix; 2 threads give the same bits', async () => {
    for (const type of ['Q4_K', 'Q6_K', 'Q8_0'] as DecodableType[]) {
      const I = 45, K = 512, M = 3;
      const g = rand(I * K, 5, 0.3), u = rand(I * K, 6, 0.3), x = rand(M * K, 7);
      const gb = quantize(type, g), ub = quantize(type, u);
      const both = new Uint8Array(gb.length + ub.length);
      both.set(gb); both.set(ub, gb.length);
      const want = ggufLinearRef(quantizeActivationsI16Ref(x, M, K), type, both, M, 2 * I, K);
      const deq = dequantize(type, both, 2 * I * K);
      const mag = magnitudes(quantizeActivationsI16Ref(x, M, K), deq, M, 2 * I, K);
      const outs: Float32Array[] = [];
      for (const kk of [k, k2]) {
        const mark = kk.mark();
        const ww = kk.ggufWeight(type, [gb, ub], 2 * I, K);
        const xp = kk.putF32(x), yp = poisoned(kk, M * 2 * I);
        kk.matmul(xp, ww, yp, M);
        outs.push(kk.readF32(yp, M * 2 * I));
        kk.release(mark);
      }
      expect(k2.threads).toBe(2);
      expectWithin(outs[0], want, (i) => 1e-5 * (1 + mag[i]), `${type} gate|up`);
      expect(outs[1]).toEqual(outs[0]);
    }
  });

  it('F16 rows with K not a multiple of 8 and F32 tensors become f32; bad sizes and types are refused', () => {
    const mark = k.mark();
    const N = 3, K = 12, x = rand(K, 9), w = rand(N * K, 10);
    const ww = k.ggufWeight('F16', [quantize('F16', w)], N, K);
    expect(ww.format).toBe('f32');
    const xp = k.putF32(x), yp = poisoned(k, N);
    k.matmul(xp, ww, yp, 1);
    expectWithin(k.readF32(yp, N), ggufLinearRef(x, 'F16', quantize('F16', w), 1, N, K), () => 1e-5 * (1 + K), 'F16 K = 12');
    expect(k.ggufWeight('F32', [quantize('F32', w)], N, K).format).toBe('f32');
    expect(() => k.ggufWeight('Q4_K', [new Uint8Array(144)], 1, 512)).toThrow(/bytes of Q4_K/);
    expect(() => k.ggufWeight('Q4_K', [new Uint8Array(144)], 1, 200)).toThrow(/multiple of 256/);
    expect(() => k.ggufWeight('Q2_K', [new Uint8Array(84)], 1, 256)).toThrow(/cannot be read/);
    k.release(mark);
  });
});
