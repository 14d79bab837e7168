import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform } from '../../src/util/random';
import { matmul, matmulTiled, gemv } from '../../src/kernels/matmul';
import { matmulRef } from '../../src/kernels/matmul.ref';
import { rmsNorm, addRmsNorm, rmsNormInPlace } from '../../src/kernels/rmsnorm';
import { rmsNormRef } from '../../src/kernels/rmsnorm.ref';
import { add, addBias, addInPlace, scaleInPlace, sigmoidGateRows, siluMul, siluMulRows } from '../../src/kernels/elementwise';
import { addBiasRef, addRef, scaleRef, sigmoidGateRowsRef, siluMulRef, siluMulRowsRef } from '../../src/kernels/elementwise.ref';

// Tolerances (f32): matmul/GEMV accumulate K products in a different order than the float64 reference,
// so the error grows like sqrt(K)·ε·|x||w|; with inputs in [-1, 1] and K ≤ 300, 1e-4 abs + 1e-4 rel covers
// it with margin. Norms and elementwise ops are a handful of f32 operations: 1e-5 rel.
const MM_TOL = { atol: 1e-4, rtol: 1e-4 };
const EW_TOL = { atol: 1e-6, rtol: 1e-5 };
const SIZES = [1, 3, 17, 64, 129, 300];

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

async function runMatmul(kind: 'tiled' | 'gemv' | 'auto', M: number, N: number, K: number, seed: number) {
  const x = randomUniform(M * K, seed);
  const w = randomUniform(N * K, seed + 1);
  const bx = gpu.buffers.upload('x', x), bw = gpu.buffers.upload('w', w);
  const by = poisoned(gpu, 'y', M * N);
  const out = await gpu.checked(async () => {
    const rec = gpu.recorder('test');
    const fn = kind === 'tiled' ? matmulTiled : kind === 'gemv' ? gemv : matmul;
    fn(gpu, rec, { x: bx, w: bw, y: by, M, N, K });
    rec.submit();
    return gpu.buffers.readF32(by, 0, M * N);
  });
  [bx, bw, by].forEach((b) => gpu.buffers.destroy(b));
  return { out, ref: matmulRef(x, w, M, N, K) };
}

describe('matmul Y = X·Wᵀ (f32)', () => {
  // Every (M, N, K) from the ragged set would be 216 runs; a seeded sweep covers each size on every axis.
  const cases: [number, number, number][] = [];
  for (const M of SIZES) for (const N of SIZES) cases.push([M, N, SIZES[(M * 7 + N * 3) % SIZES.length]]);
  cases.push([31, 33, 4], [33, 31, 300], [64, 64, 64], [2, 129, 2]);
  it.each(cases)('tiled M=%i N=%i K=%i', async (M, N, K) => {
    const { out, ref } = await runMatmul('tiled', M, N, K, M * 1000 + N * 10 + K);
    expectClose(out, ref, MM_TOL, `tiled ${M}x${N}x${K}`);
  });
  it.each(SIZES.flatMap((N) => SIZES.map((K) => [N, K] as [number, number])))('gemv N=%i K=%i', async (N, K) => {
    for (const M of [1, 3]) {
      const { out, ref } = await runMatmul('gemv', M, N, K, N * 31 + K + M);
      expectClose(out, ref, MM_TOL, `gemv ${M}x${N}x${K}`);
    }
  });
  it('the workgroup-memory reduction path (devices without subgroups)', async () => {
    const plain = await testGpu({ disableFeatures: ['subgroups'] });
    expect(plain.caps.subgroups).toBe(false);
    for (const [N, K] of [[1, 1], [17, 300], [129, 64], [300, 17]]) {
      const x = randomUniform(2 * K, N), w = randomUniform(N * K, K);
      const bx = plain.buffers.upload('x', x), bw = plain.buffers.upload('w', w), by = poisoned(plain, 'y', 2 * N);
      const out = await plain.checked(async () => {
        const rec = plain.recorder('t');
        gemv(plain, rec, { x: bx, w: bw, y: by, M: 2, N, K });
        rec.submit();
        return plain.buffers.readF32(by);
      });
      expectClose(out, matmulRef(x, w, 2, N, K), MM_TOL, `gemv (no subgroups) ${N}x${K}`);
    }
    plain.destroy();
  });
  it('dispatches past 65,535 workgroups fold into 2-D', async () => {
    // N = 4·70,000 rows → 70,000 GEMV workgroups.
    const { out, ref } = await runMatmul('gemv', 1, 280_000, 4, 7);
    expectClose(out, ref, MM_TOL, 'gemv 1x280000x4');
  });
  it('writes into strided slices of rows', async () => {
    const M = 5, N = 6, K = 8, xStride = 12, xOffset = 4, yStride = 10, yOffset = 3;
    const xFull = randomUniform(M * xStride, 1), w = randomUniform(N * K, 2);
    const x = new Float32Array(M * K);
    for (let m = 0; m < M; m++) x.set(xFull.subarray(m * xStride + xOffset, m * xStride + xOffset + K), m * K);
    const bx = gpu.buffers.upload('x', xFull), bw = gpu.buffers.upload('w', w);
    const by = gpu.buffers.upload('y', new Float32Array(M * yStride).fill(-7));
    for (const fn of [matmulTiled, gemv]) {
      const out = await gpu.checked(async () => {
        const rec = gpu.recorder('t');
        fn(gpu, rec, { x: bx, w: bw, y: by, M, N, K, xStride, xOffset, yStride, yOffset });
        rec.submit();
        return gpu.buffers.readF32(by);
      });
      const ref = matmulRef(x, w, M, N, K);
      for (let m = 0; m < M; m++) {
        expectClose(out.subarray(m * yStride + yOffset, m * yStride + yOffset + N), ref.subarray(m * N, (m + 1) * N), MM_TOL, fn.name);
        expect(out[m * yStride]).toBe(-7); // untouched outside the slice
      }
    }
  });
});

describe('rmsnorm', () => {
  it.each(SIZES.flatMap((rows) => [1, 17, 64, 300, 1031].map((dim) => [rows, dim] as [number, number])))('rows=%i dim=%i', async (rows, dim) => {
    const x = randomUniform(rows * dim, rows + dim, -3, 3), w = randomUniform(dim, 5);
    const r = randomUniform(rows * dim, 9);
    const bx = gpu.buffers.upload('x', x), bw = gpu.buffers.upload('w', w), br = gpu.buffers.upload('r', r);
    const bh = gpu.buffers.upload('h', x);
    const by = poisoned(gpu, 'y', rows * dim), by2 = poisoned(gpu, 'y2', rows * dim);
    const [y, y2, h] = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      rmsNorm(gpu, rec, { x: bx, w: bw, y: by, rows, dim, eps: 1e-6 });
      addRmsNorm(gpu, rec, { x: br, w: bw, y: by2, h: bh, rows, dim, eps: 1e-6 });
      rec.submit();
      return Promise.all([gpu.buffers.readF32(by), gpu.buffers.readF32(by2), gpu.buffers.readF32(bh)]);
    });
    expectClose(y, rmsNormRef(x, w, rows, dim, 1e-6), EW_TOL, 'rmsnorm');
    const hRef = addRef(x, r);
    expectClose(h, hRef, EW_TOL, 'add_rmsnorm residual');
    expectClose(y2, rmsNormRef(hRef, w, rows, dim, 1e-6), EW_TOL, 'add_rmsnorm');
    [bx, bw, br, bh, by, by2].forEach((b) => gpu.buffers.destroy(b));
  });
  it('the workgroup-memory reduction (devices without subgroups)', async () => {
    const plain = await testGpu({ disableFeatures: ['subgroups'] });
    expect(plain.caps.subgroups).toBe(false);
    for (const [rows, dim] of [[1, 17], [3, 300]]) {
      const x = randomUniform(rows * dim, rows * dim, -3, 3), w = randomUniform(dim, 7), r = randomUniform(rows * dim, 8);
      const bx = plain.buffers.upload('x', x), bw = plain.buffers.upload('w', w), br = plain.buffers.upload('r', r), bh = plain.buffers.upload('h', x);
      const by = poisoned(plain, 'y', rows * dim), by2 = poisoned(plain, 'y2', rows * dim), by3 = plain.buffers.upload('y3', x);
      const [y, y2, y3] = await plain.checked(async () => {
        const rec = plain.recorder('t');
        rmsNorm(plain, rec, { x: bx, w: bw, y: by, rows, dim, eps: 1e-6 });
        addRmsNorm(plain, rec, { x: br, w: bw, y: by2, h: bh, rows, dim, eps: 1e-6 });
        rmsNormInPlace(plain, rec, { w: bw, y: by3, rows, dim, eps: 1e-6 });
        rec.submit();
        return Promise.all([plain.buffers.readF32(by), plain.buffers.readF32(by2), plain.buffers.readF32(by3)]);
      });
      const ref = rmsNormRef(x, w, rows, dim, 1e-6);
      expectClose(y, ref, EW_TOL, 'rmsnorm (no subgroups)');
      expectClose(y2, rmsNormRef(addRef(x, r), w, rows, dim, 1e-6), EW_TOL, 'add_rmsnorm (no subgroups)');
      expectClose(y3, ref, EW_TOL, 'rmsnorm_inplace (no subgroups)');
    }
    plain.destroy();
  });
  it('in place on a strided slice (the latent part of [latent | rope] rows)', async () => {
    const rows = 5, dim = 33, stride = 41, off = 0;
    const full = randomUniform(rows * stride, 4, -2, 2), w = randomUniform(dim, 6);
    const by = gpu.buffers.upload('y', full), bw = gpu.buffers.upload('w', w);
    const y = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      rmsNormInPlace(gpu, rec, { w: bw, y: by, rows, dim, eps: 1e-6, yStride: stride, yOffset: off });
      rec.submit();
      return gpu.buffers.readF32(by);
    });
    const slice = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++) slice.set(full.subarray(r * stride + off, r * stride + off + dim), r * dim);
    const ref = rmsNormRef(slice, w, rows, dim, 1e-6);
    for (let r = 0; r < rows; r++) {
      expectClose(y.subarray(r * stride + off, r * stride + off + dim), ref.subarray(r * dim, (r + 1) * dim), EW_TOL, 'inplace');
      expectClose(y.subarray(r * stride + dim, (r + 1) * stride), full.subarray(r * stride + dim, (r + 1) * stride), { atol: 0, rtol: 0 }, 'rest untouched');
    }
  });
});

describe('elementwise', () => {
  it.each([1, 3, 17, 255, 256, 257, 1000, 70_001])('n=%i', async (n) => {
    const a = randomUniform(n, n, -6, 6), b = randomUniform(n, n + 1, -6, 6);
    const ba = gpu.buffers.upload('a', a), bb = gpu.buffers.upload('b', b), bacc = gpu.buffers.upload('acc', b);
    const bs = poisoned(gpu, 'sum', n), bm = poisoned(gpu, 'silu', n);
    const [s, m, acc] = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      add(gpu, rec, ba, bb, bs, n);
      siluMul(gpu, rec, ba, bb, bm, n);
      addInPlace(gpu, rec, ba, bacc, n);
      rec.submit();
      return Promise.all([gpu.buffers.readF32(bs), gpu.buffers.readF32(bm), gpu.buffers.readF32(bacc)]);
    });
    expectClose(s, addRef(a, b), EW_TOL, 'add');
    expectClose(acc, addRef(a, b), EW_TOL, 'add_inplace');
    expectClose(m, siluMulRef(a, b), EW_TOL, 'silu_mul');
    [ba, bb, bacc, bs, bm].forEach((x) => gpu.buffers.destroy(x));
  });
  // In-place ops (they read y, so y cannot be poisoned): every element is compared, none may stay as uploaded.
  it.each([[1, 1], [3, 17], [5, 129], [300, 257]])('add_bias, scale, sigmoid_gate_rows rows=%i cols=%i', async (rows, cols) => {
    const n = rows * cols;
    const y0 = randomUniform(n, n + 7, -3, 3), b = randomUniform(cols, cols, -2, 2), g = randomUniform(rows, rows + 1, -6, 6);
    const bb = gpu.buffers.upload('b', b), bg = gpu.buffers.upload('g', g);
    const y1 = gpu.buffers.upload('y1', y0), y2 = gpu.buffers.upload('y2', y0), y3 = gpu.buffers.upload('y3', y0);
    const [o1, o2, o3] = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      addBias(gpu, rec, bb, y1, rows, cols);
      scaleInPlace(gpu, rec, y2, n, 0.015625 * 7);
      sigmoidGateRows(gpu, rec, bg, y3, rows, cols);
      rec.submit();
      return Promise.all([y1, y2, y3].map((x) => gpu.buffers.readF32(x)));
    });
    expectClose(o1, addBiasRef(y0, b, cols), EW_TOL, 'add_bias');
    expectClose(o2, scaleRef(y0, 0.015625 * 7), EW_TOL, 'scale');
    expectClose(o3, sigmoidGateRowsRef(y0, g, cols), EW_TOL, 'sigmoid_gate_rows');
    [bb, bg, y1, y2, y3].forEach((x) => gpu.buffers.destroy(x));
  });
  it.each([[1, 1], [3, 17], [5, 129]])('silu_mul_rows rows=%i cols=%i', async (rows, cols) => {
    const gu = randomUniform(rows * cols * 2, 3, -4, 4);
    const bg = gpu.buffers.upload('gu', gu), by = poisoned(gpu, 'y', rows * cols);
    const y = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      siluMulRows(gpu, rec, bg, by, rows, cols);
      rec.submit();
      return gpu.buffers.readF32(by);
    });
    expectClose(y, siluMulRowsRef(gu, rows, cols), EW_TOL, 'silu_mul_rows');
  });
});
