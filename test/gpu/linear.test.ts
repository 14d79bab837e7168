import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform, mulberry32 } from '../../src/util/random';
import { linear, linearGemv, linearMatmul } from '../../src/kernels/linear';
import { linearRef } from '../../src/kernels/linear.ref';
import { uploadWeight, uploadFp8Weight, uploadPacked, destroyWeight, type GpuWeight } from '../../src/kernels/weight';
import { packWeight, packFp8, type PackedWeight } from '../../src/kernels/weight-pack';
import { dequantizeRef } from '../../src/kernels/weight.ref';
import { f32ToFp8e4m3 } from '../../src/util/half';

// Tolerance: the kernels decode the packed weights exactly (f16, int8/int4 × scale, e4m3 × scale are
// exact in f32), so the only difference from the float64 reference on the dequantised matrix is f32
// accumulation order (and scaling a unit's partial dot once instead of each product): ~sqrt(K)·ε·Σ|x·w|.
// With |x|, |w| ≤ 1 and K ≤ 300 that is < 1e-5; 1e-4 abs + 1e-4 rel leaves margin and still catches any
// wrong element, nibble, scale or row (those give errors ≥ 1e-2).
const TOL = { atol: 1e-4, rtol: 1e-4 };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

type Fmt = 'f32' | 'f16' | 'bf16' | 'q8' | 'q4' | 'fp8';

/** Random fp8 weights: e4m3 bytes of values in [−2, 2] and scales around 1/2. */
function randomFp8(N: number, K: number, seed: number): PackedWeight {
  const v = randomUniform(N * K, seed, -2, 2);
  const bytes = new Uint8Array(N * K);
  for (let i = 0; i < v.length; i++) bytes[i] = f32ToFp8e4m3(v[i]);
  // a few subnormals and zeros on purpose
  for (let i = 0; i < Math.min(8, bytes.length); i++) bytes[i] = (i * 3) & 7 | (i & 1 ? 0x80 : 0);
  const sc = randomUniform(Math.ceil(N / 128) * Math.ceil(K / 128), seed + 7, 0.25, 0.75);
  return packFp8(bytes, sc, N, K);
}

function pack(fmt: Fmt, N: number, K: number, seed: number, gs: 32 | 128 = 32, scaleDtype: 'f16' | 'f32' = 'f16'): PackedWeight {
  if (fmt === 'fp8') return randomFp8(N, K, seed);
  return packWeight(randomUniform(N * K, seed), N, K, fmt, { groupSize: gs, scaleDtype });
}

async function run(w: GpuWeight, x: Float32Array, M: number, kernel?: 'gemv' | 'matmul', direct = false, g: Gpu = gpu) {
  const gpu = g;
  const bx = gpu.buffers.upload('x', x);
  const by = poisoned(gpu, 'y', M * w.N);
  const out = await gpu.checked(async () => {
    const rec = gpu.recorder('t');
    if (direct) (kernel === 'gemv' ? linearGemv : linearMatmul)(gpu, rec, { x: bx, w, y: by, M });
    else linear(gpu, rec, { x: bx, w, y: by, M, kernel });
    rec.submit();
    return gpu.buffers.readF32(by, 0, M * w.N);
  });
  gpu.buffers.destroy(bx);
  gpu.buffers.destroy(by);
  return out;
}

describe('linear: packed formats against the dequantised reference', () => {
  // Shader pipelines are costly to compile on the software GPU, so the format sweep uses vec4-loadable
  // K (the x load width is a separate variant, covered for scalar loads by the strided test below)
  // and covers each GEMV row-block size (MR = 1, 4, 8; M = 33 is ragged in MR) and the tiled matmul.
  const shapes: [number, number, number, ('gemv' | 'matmul')[]][] = [
    [1, 129, 4, ['gemv']], [3, 7, 200, ['gemv']], [33, 31, 136, ['gemv', 'matmul']],
  ];
  const cases: [Fmt, number, number, number, ('gemv' | 'matmul')[]][] = [];
  for (const f of ['f16', 'bf16', 'q8', 'q4', 'fp8'] as Fmt[]) for (const [M, N, K, kernels] of shapes) cases.push([f, M, N, K, kernels]);
  it.each(cases)('%s M=%i N=%i K=%i %j', async (fmt, M, N, K, kernels) => {
    const p = pack(fmt, N, K, M * 7919 + N * 31 + K);
    const w = uploadPacked(gpu, `w.${fmt}`, p);
    const x = randomUniform(M * K, N + K);
    const ref = linearRef(x, dequantizeRef(p), M, N, K);
    for (const kernel of kernels) expectClose(await run(w, x, M, kernel), ref, TOL, `${fmt} ${kernel} ${M}x${N}x${K}`);
    destroyWeight(gpu, w);
  });

  it('K = 1 (one padded unit, scalar x loads)', async () => {
    const p = pack('q4', 5, 1, 1);
    const w = uploadPacked(gpu, 'k1', p);
    const x = Float32Array.from([0.5]);
    expectClose(await run(w, x, 1, 'gemv'), linearRef(x, dequantizeRef(p), 1, 5, 1), TOL, 'q4 K=1');
    destroyWeight(gpu, w);
  });

  it.each([['q8', 32, 'f32'], ['q4', 128, 'f16']] as [Fmt, 32 | 128, 'f16' | 'f32'][])('%s group %i, %s scales', async (fmt, gs, sd) => {
    {
      const M = 2, N = 19, K = 300;
      const p = pack(fmt, N, K, gs + K, gs, sd);
      const w = uploadPacked(gpu, 'w', p);
      const x = randomUniform(M * K, 3);
      const ref = linearRef(x, dequantizeRef(p), M, N, K);
      expectClose(await run(w, x, M, 'gemv'), ref, TOL, `${fmt} gs${gs} ${sd} gemv`);
      const x7 = randomUniform(7 * K, 4);
      expectClose(await run(w, x7, 7, 'matmul'), linearRef(x7, dequantizeRef(p), 7, N, K), TOL, `${fmt} gs${gs} ${sd} matmul`);
      destroyWeight(gpu, w);
    }
  });

  it('f32: the packed kernels (K % 4 = 0) and the matmul.ts fallbacks (K % 4 ≠ 0) via linear', async () => {
    for (const [M, K] of [[1, 13], [6, 13]]) {
      const N = 9, wf = randomUniform(N * K, K), x = randomUniform(M * K, M);
      const w = uploadWeight(gpu, 'w13', wf, N, K);
      expectClose(await run(w, x, M), linearRef(x, wf, M, N, K), TOL, `f32 K=13 M=${M}`);
      destroyWeight(gpu, w);
    }
    const M = 3, N = 21, K = 68;
    const wf = randomUniform(N * K, 5);
    const w = uploadWeight(gpu, 'w32', wf, N, K);
    const x = randomUniform(M * K, 6);
    const ref = linearRef(x, wf, M, N, K);
    expectClose(await run(w, x, M, 'gemv', true), ref, TOL, 'f32 generic gemv');
    expectClose(await run(w, x, M, 'matmul', true), ref, TOL, 'f32 generic matmul');
    expectClose(await run(w, x, M), ref, TOL, 'f32 via linear');
    destroyWeight(gpu, w);
  });

  it('uploadWeight f16/bf16/q8/q4 and uploadFp8Weight match their CPU packers', async () => {
    const N = 130, K = 136, M = 1;
    const wf = randomUniform(N * K, 11);
    const x = randomUniform(M * K, 12);
    for (const format of ['f16', 'bf16', 'q8', 'q4'] as const) {
      const w = uploadWeight(gpu, format, wf, N, K, { format });
      expect(w.format).toBe(format);
      const ref = linearRef(x, dequantizeRef(packWeight(wf, N, K, format)), M, N, K);
      expectClose(await run(w, x, M), ref, TOL, `uploadWeight ${format}`);
      destroyWeight(gpu, w);
    }
    const p = randomFp8(N, K, 13);
    const bytes = new Uint8Array(N * K);
    const raw = new Uint8Array(p.data.buffer);
    for (let n = 0; n < N; n++) bytes.set(raw.subarray(n * p.rowWords * 4, n * p.rowWords * 4 + K), n * K);
    const w = uploadFp8Weight(gpu, 'fp8', bytes, new Float32Array(p.scales!.buffer), N, K);
    expectClose(await run(w, x, M), linearRef(x, dequantizeRef(p), M, N, K), TOL, 'uploadFp8Weight');
    destroyWeight(gpu, w);
  });

  it('row chunks past the binding limit (forced small) cover all rows', async () => {
    const N = 300, K = 40;
    const wf = randomUniform(N * K, 21);
    for (const format of ['f32', 'q4', 'f16'] as const) {
      const p = packWeight(wf, N, K, format);
      const w = uploadPacked(gpu, `chunked.${format}`, p, p.rowWords * 4 * 128);
      expect(w.chunks?.length).toBe(3);
      expect(w.buffers.length).toBe(0);
      for (const M of [1, 6]) {
        const x = randomUniform(M * K, M);
        expectClose(await run(w, x, M), linearRef(x, dequantizeRef(p), M, N, K), TOL, `chunked ${format} M=${M}`);
      }
      destroyWeight(gpu, w);
    }
    const fp = randomFp8(N, K, 3);
    const w = uploadPacked(gpu, 'chunked.fp8', fp, fp.rowWords * 4 * 128);
    const x = randomUniform(2 * K, 4);
    expectClose(await run(w, x, 2), linearRef(x, dequantizeRef(fp), 2, N, K), TOL, 'chunked fp8');
    destroyWeight(gpu, w);
  });

  it('strided x and y slices (vec4 and scalar x loads)', async () => {
    for (const [K, xStride, xOffset] of [[16, 24, 8], [13, 20, 3]]) {
      const M = 5, N = 6, yStride = 10, yOffset = 3;
      const xFull = randomUniform(M * xStride, K);
      const x = new Float32Array(M * K);
      for (let m = 0; m < M; m++) x.set(xFull.subarray(m * xStride + xOffset, m * xStride + xOffset + K), m * K);
      for (const fmt of (K % 4 ? ['q4', 'fp8', 'bf16'] : ['f16']) as Fmt[]) {
        const p = pack(fmt, N, K, 99);
        const w = uploadPacked(gpu, 'w', p);
        const ref = linearRef(x, dequantizeRef(p), M, N, K);
        const bx = gpu.buffers.upload('x', xFull);
        for (const kernel of ['gemv', 'matmul'] as const) {
          const by = gpu.buffers.upload('y', new Float32Array(M * yStride).fill(-7));
          const out = await gpu.checked(async () => {
            const rec = gpu.recorder('t');
            linear(gpu, rec, { x: bx, w, y: by, M, xStride, xOffset, yStride, yOffset, kernel });
            rec.submit();
            return gpu.buffers.readF32(by);
          });
          for (let m = 0; m < M; m++) {
            expectClose(out.subarray(m * yStride + yOffset, m * yStride + yOffset + N), ref.subarray(m * N, (m + 1) * N), TOL, `${fmt} ${kernel} K=${K}`);
            expect(out[m * yStride]).toBe(-7);
          }
          gpu.buffers.destroy(by);
        }
        gpu.buffers.destroy(bx);
        destroyWeight(gpu, w);
      }
    }
  });

  it('GEMV without subgroups (workgroup-memory reduction): every format, one and four rows of x per pass', async () => {
    const plain = await testGpu({ disableFeatures: ['subgroups'] });
    expect(plain.caps.subgroups).toBe(false);
    // N = 9: ragged in the 4-row groups; K = 200 / 520: ragged in units, several units per invocation.
    for (const [fmt, M, N, K] of [['f32', 1, 9, 200], ['f16', 3, 9, 200], ['bf16', 2, 9, 200], ['q8', 1, 37, 520], ['q4', 6, 9, 200], ['fp8', 2, 9, 200]] as [Fmt, number, number, number][]) {
      const p = fmt === 'f32' ? packWeight(randomUniform(N * K, K), N, K, 'f32') : pack(fmt, N, K, N + K + M);
      const w = uploadPacked(plain, `plain.${fmt}`, p);
      const x = randomUniform(M * K, M + K);
      expectClose(await run(w, x, M, 'gemv', true, plain), linearRef(x, dequantizeRef(p), M, N, K), TOL, `${fmt} gemv (no subgroups) M=${M}`);
      destroyWeight(plain, w);
    }
    plain.destroy();
  });

  it('subgroup GEMV with several row groups per workgroup (ragged in the last workgroup)', async () => {
    const N = 37, K = 72;
    for (const [fmt, M, rowGroups] of [['q4', 1, 3], ['f32', 5, 4]] as [Fmt, number, number][]) {
      const p = fmt === 'f32' ? packWeight(randomUniform(N * K, 3), N, K, 'f32') : pack(fmt, N, K, 4);
      const w = uploadPacked(gpu, `rg.${fmt}`, p);
      const x = randomUniform(M * K, 5);
      const bx = gpu.buffers.upload('x', x), by = poisoned(gpu, 'y', M * N);
      const out = await gpu.checked(async () => {
        const rec = gpu.recorder('t');
        linear(gpu, rec, { x: bx, w, y: by, M, kernel: 'gemv', rowGroups });
        rec.submit();
        return gpu.buffers.readF32(by);
      });
      expectClose(out, linearRef(x, dequantizeRef(p), M, N, K), TOL, `${fmt} rowGroups=${rowGroups}`);
      [bx, by].forEach((b) => gpu.buffers.destroy(b));
      destroyWeight(gpu, w);
    }
  });

  it('decode-sized GEMV (q4, 256 × 2048) stays exact', async () => {
    const N = 256, K = 2048, r = mulberry32(1);
    const wf = new Float32Array(N * K).map(() => r() * 2 - 1);
    const p = packWeight(wf, N, K, 'q4', { groupSize: 128 });
    const w = uploadPacked(gpu, 'big', p);
    const x = randomUniform(K, 2);
    expectClose(await run(w, x, 1), linearRef(x, dequantizeRef(p), 1, N, K), { atol: 3e-4, rtol: 1e-4 }, 'q4 2048');
    destroyWeight(gpu, w);
  });
});
