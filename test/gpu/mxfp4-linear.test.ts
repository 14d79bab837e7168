import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform } from '../../src/util/random';
import { linear } from '../../src/kernels/linear';
import { linearRef } from '../../src/kernels/linear.ref';
import { uploadMxfp4Weight, uploadPacked, destroyWeight, type GpuWeight } from '../../src/kernels/weight';
import { packMxfp4 } from '../../src/kernels/weight-pack';
import { dequantizeRef } from '../../src/kernels/weight.ref';
import { ArgumentError, ShapeError } from '../../src/errors';
import { randomMxfp4 } from '../helpers/mxfp4';

// Tolerance: FP4 × 2^k is exact in f32, so the kernels compute with the very matrix dequantizeRef gives;
// only the f32 accumulation order differs from the float64 reference: ~sqrt(K)·ε·Σ|x·w|. Weights here
// reach 6·2^9 = 3072 (scale bytes up to 136), |x| ≤ 1, K ≤ 200: Σ|x·w| ≤ ~1e5 → ≤ ~0.1 absolute on
// outputs of that size, so the bound is relative: 1e-4 abs + 1e-4 rel + 3e-7·Σ|x·w| per output (checked
// element-wise below); a wrong nibble, scale or row is off by ≥ 2^-10·(|w| ≥ 0.5·2^-10) and fails.
const TOL = { atol: 1e-4, rtol: 1e-4 };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

async function run(w: GpuWeight, x: Float32Array, M: number, kernel?: 'gemv' | 'matmul') {
  const bx = gpu.buffers.upload('x', x);
  const by = poisoned(gpu, 'y', M * w.N);
  const out = await gpu.checked(async () => {
    const rec = gpu.recorder('mxfp4');
    linear(gpu, rec, { x: bx, w, y: by, M, kernel });
    rec.submit();
    return gpu.buffers.readF32(by, 0, M * w.N);
  });
  gpu.buffers.destroy(bx);
  gpu.buffers.destroy(by);
  return out;
}

/** Compares with the per-output bound atol + rtol·|ref| + 3e-7·Σ_k |x·w| (see TOL). */
function expectMx(got: Float32Array, x: Float32Array, W: Float32Array, M: number, N: number, K: number, what: string) {
  const ref = linearRef(x, W, M, N, K);
  const bad: string[] = [];
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let mag = 0;
    for (let k = 0; k < K; k++) mag += Math.abs(x[m * K + k] * W[n * K + k]);
    const i = m * N + n;
    if (!(Math.abs(got[i] - ref[i]) <= TOL.atol + TOL.rtol * Math.abs(ref[i]) + 3e-7 * mag)) bad.push(`[${m},${n}] got ${got[i]} want ${ref[i]}`);
  }
  expect(bad.slice(0, 3), what).toEqual([]);
}

describe('linear with MXFP4 weights (GPT-OSS expert format) against the dequantised reference', () => {
  // GEMV (M = 1, ragged M in the 4-row blocks), matmul, K not a multiple of 32 (padded last block) or of 4
  // (scalar x loads), N ragged in the 4-row groups.
  const cases: [number, number, number, ('gemv' | 'matmul')[]][] = [
    [1, 129, 64, ['gemv']], [3, 7, 200, ['gemv', 'matmul']], [33, 31, 136, ['gemv', 'matmul']], [2, 9, 37, ['gemv', 'matmul']], [1, 4, 2880, ['gemv']],
  ];
  it.each(cases)('M=%i N=%i K=%i %j', async (M, N, K, kernels) => {
    const G = Math.ceil(K / 32);
    const { blocks, scales } = randomMxfp4(1, N, G, M * 7 + N + K);
    const w = uploadMxfp4Weight(gpu, 'w.mxfp4', blocks, scales, N, K);
    const W = dequantizeRef(packMxfp4(blocks, scales, N, K));
    const x = randomUniform(M * K, N + K);
    for (const kernel of kernels) expectMx(await run(w, x, M, kernel), x, W, M, N, K, `mxfp4 ${kernel} ${M}x${N}x${K}`);
    destroyWeight(gpu, w);
  });

  it('row chunks past the binding limit (each chunk with its own scale bytes)', async () => {
    const N = 300, K = 96, M = 2;
    const { blocks, scales } = randomMxfp4(1, N, 3, 77);
    const p = packMxfp4(blocks, scales, N, K);
    const w = uploadPacked(gpu, 'chunked.mxfp4', p, p.rowWords * 4 * 128);
    expect(w.chunks?.length).toBe(3);
    expectMx(await run(w, randomUniform(M * K, 78), M), randomUniform(M * K, 78), dequantizeRef(p), M, N, K, 'chunked');
    destroyWeight(gpu, w);
  });

  it('rejects NaN scales and mis-sized tensors with typed errors', () => {
    expect(() => uploadMxfp4Weight(gpu, 'nan', new Uint8Array(16), new Uint8Array([255]), 1, 32)).toThrow(ArgumentError);
    expect(() => uploadMxfp4Weight(gpu, 'short', new Uint8Array(16), new Uint8Array([127]), 1, 64)).toThrow(ShapeError);
  });
});
