import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform } from '../../src/util/random';
import { pack24, packVnm, unpack, quantizeSparse, dequantizeValues, type SparsePacked } from '../../src/sparse/formats';
import { prune24, pruneVnm } from '../../src/sparse/prune';
import { uploadSparse, destroySparse, sparseGemv, sparseMatmul, sparseLinear, sparsifyWeight, sharedTiles, sparseLinearImpl, type SparseValues } from '../../src/kernels/sparse';
import { sparseMatmulRef } from '../../src/kernels/sparse.ref';
import { gemv, matmulTiled } from '../../src/kernels/matmul';
import { linear } from '../../src/kernels/linear';
import { ShapeError, ArgumentError } from '../../src/errors';
import sparseCode from '../../shaders/sparse.wgsl?raw';
import { specialise } from '../../src/kernels/shader-source';

// Tolerance (f32 and dequantised int8/int4 values alike): the sparse kernels and the dense kernel sum
// the same products (zeros aside) in different orders, and the quantised kernels dequantise as
// f32(q)·scale exactly like the host. With x, w in [-1, 1] and K ≤ 300 the f32 rounding differences
// stay well below 1e-4 abs + 1e-4 rel.
const TOL = { atol: 1e-4, rtol: 1e-4 };

let gpu: Gpu;
let dev: Gpu;
beforeAll(async () => { gpu = dev = await testGpu(); });

function makePacked(fmt: '2:4' | [number, number], N: number, K: number, seed: number): SparsePacked {
  const w = randomUniform(N * K, seed);
  if (fmt === '2:4') return pack24(prune24(w, N, K).pruned, N, K);
  const [V, M] = fmt;
  const r = pruneVnm(w, N, K, V, M);
  return packVnm(r.pruned, N, K, V, M, r.columns);
}

/**
 * Runs the sparse GEMV (rows `mv`), matmul (rows `mm`; both tiled paths when the weight allows the
 * shared one) and, on the unpacked (dequantised) matrix,
 * the dense GEMV and tiled matmul, all in one submit; checks sparse == dense and sparse == CPU reference.
 */
async function check(p: SparsePacked, values: SparseValues, mv: number, mm: number, seed: number, what: string, gpu: Gpu = dev, gemvOnly = false) {
  const { N, K } = p;
  const q = values === 'f32' ? undefined : quantizeSparse(p, values === 'q8' ? 8 : 4);
  const dense = unpack(p, q ? dequantizeValues(q) : p.values);
  const w = uploadSparse(gpu, `w(${what})`, p, values);
  const bd = gpu.buffers.upload('dense', dense);
  // Both matmul paths: 'matmul' runs the shared path where the weight allows it, the generic one
  // otherwise; 'generic' also runs the generic path on the f32 weights that allow the shared one
  // (value decoding is shared code, and each extra variant is one more pipeline to compile).
  const runs: { M: number; kind: 'gemv' | 'matmul' | 'generic' }[] = [{ M: mv, kind: 'gemv' }, { M: mm, kind: 'matmul' }];
  if (sharedTiles(w) && values === 'f32') runs.push({ M: mm + 2, kind: 'generic' });
  if (gemvOnly) runs.splice(1);
  const bufs = runs.map(({ M }, i) => ({
    x: randomUniform(M * K, seed + i),
    ys: poisoned(gpu, 'ys', M * N), yd: poisoned(gpu, 'yd', M * N),
  }));
  const bx = bufs.map((b) => gpu.buffers.upload('x', b.x));
  const outs = await gpu.checked(async () => {
    const rec = gpu.recorder('sparse-test');
    runs.forEach(({ M, kind }, i) => {
      const a = { x: bx[i], w, y: bufs[i].ys, M };
      if (kind === 'gemv') sparseGemv(gpu, rec, a);
      else sparseMatmul(gpu, rec, { ...a, path: kind === 'generic' || !sharedTiles(w) ? 'generic' : 'shared' });
      (kind === 'gemv' ? gemv : matmulTiled)(gpu, rec, { x: bx[i], w: bd, y: bufs[i].yd, M, N, K });
    });
    rec.submit();
    return Promise.all(bufs.flatMap((b, i) => [gpu.buffers.readF32(b.ys, 0, runs[i].M * N), gpu.buffers.readF32(b.yd, 0, runs[i].M * N)]));
  });
  runs.forEach(({ M, kind }, i) => {
    const [ys, yd] = [outs[2 * i], outs[2 * i + 1]];
    expectClose(ys, yd, TOL, `${what} ${kind} M=${M} vs dense kernel`);
    expectClose(ys, sparseMatmulRef(bufs[i].x, p, M, q), TOL, `${what} ${kind} M=${M} vs CPU reference`);
  });
  destroySparse(gpu, w);
  [bd, ...bx, ...bufs.flatMap((b) => [b.ys, b.yd])].forEach((b) => gpu.buffers.destroy(b));
}

const VALUES: SparseValues[] = ['f32', 'q8', 'q4'];

describe('2:4 sparse linear == dense kernel on the unpacked matrix', () => {
  // Ragged N (1, tile−1, tile+1, primes) and K (not multiples of 4, of 32 or of the 16-group scale block).
  // K = 2100 (525 groups) gives the GEMV its widest workgroup (64 lanes); small K gives 16.
  const cases: [number, number, SparseValues][] = [[1, 3, 'f32'], [31, 45, 'q8'], [33, 64, 'q4'], [129, 129, 'f32'], [8, 300, 'q8'], [70, 7, 'q4'], [17, 256, 'f32'], [9, 2100, 'f32']];
  it.each(cases)('N=%i K=%i values=%s', async (N, K, values) => {
    await check(makePacked('2:4', N, K, N * 7 + K), values, N % 2 ? 1 : 3, N % 3 ? 33 : 5, N + K, `2:4 ${N}x${K} ${values}`);
  });
});

describe('V:2:M sparse linear == dense kernel on the unpacked matrix', () => {
  // Every V in {16, 32, 64} with every M in {5, 6, 7, 8, 16}; shapes cycle through ragged sizes so each
  // has a partial last block (N not a multiple of V) and a partial last group (K not a multiple of M).
  const NS = [70, 33, 129, 17, 97];
  const KS = [45, 131, 64, 300, 23];
  const cases: [number, number, number, number, SparseValues][] = [];
  let i = 0;
  for (const V of [16, 32, 64]) for (const M of [5, 6, 7, 8, 16]) { cases.push([V, M, NS[i % 5], KS[(i * 2) % 5], VALUES[i % 3]]); i++; }
  // V not a multiple of the GEMV's 8 rows per workgroup (the unshared path), and a single-row matrix.
  cases.push([12, 8, 50, 77, 'f32'], [3, 5, 10, 21, 'q4'], [64, 8, 1, 9, 'q8']);
  // 260 groups: a 32-lane GEMV workgroup.
  cases.push([16, 5, 20, 1300, 'q8']);
  it.each(cases)('V=%i M=%i N=%i K=%i values=%s', async (V, M, N, K, values) => {
    await check(makePacked([V, M], N, K, V * 100 + M + N), values, 1 + (N % 3), 5 + (K % 40), V + M + K, `${V}:2:${M} ${N}x${K} ${values}`);
  });
});

describe('GEMV without subgroups (workgroup-memory reduction, 16/32/64 lanes)', () => {
  let noSg: Gpu;
  beforeAll(async () => { noSg = await testGpu({ disableFeatures: ['subgroups'] }); });
  // 2:4 and V:2:M (shared and per-row gathers); G = 11, 260 and 525 groups give 16, 32 and 64 lanes.
  const cases: ['2:4' | [number, number], number, number, SparseValues][] = [['2:4', 33, 45, 'f32'], [[16, 5], 20, 1300, 'q8'], ['2:4', 9, 2100, 'q4'], [[12, 8], 50, 77, 'f32']];
  it.each(cases)('%o N=%i K=%i %s', async (fmt, N, K, values) => {
    expect(noSg.caps.subgroups).toBe(false);
    await check(makePacked(fmt, N, K, N + K), values, 3, 5, N * K, `no-subgroups ${N}x${K}`, noSg, true);
  });
});

describe('sparse linear plumbing', () => {
  it('writes into strided slices of rows and leaves the rest untouched', async () => {
    const M = 6, K = 40, N = 21, xStride = 48, xOffset = 4, yStride = 30, yOffset = 5;
    for (const p of [makePacked('2:4', N, K, 1), makePacked([16, 5], N, K, 2)]) {
      const w = uploadSparse(gpu, 'w', p, 'q8');
      const xFull = randomUniform(M * xStride, 3);
      const x = new Float32Array(M * K);
      for (let m = 0; m < M; m++) x.set(xFull.subarray(m * xStride + xOffset, m * xStride + xOffset + K), m * K);
      const bx = gpu.buffers.upload('x', xFull);
      for (const rows of [2, M]) {
        const by = gpu.buffers.upload('y', new Float32Array(M * yStride).fill(-7));
        const out = await gpu.checked(async () => {
          const rec = gpu.recorder('t');
          sparseLinear(gpu, rec, { x: bx, w, y: by, M: rows, xStride, xOffset, yStride, yOffset });
          rec.submit();
          return gpu.buffers.readF32(by);
        });
        const ref = sparseMatmulRef(x, p, M, quantizeSparse(p, 8));
        for (let m = 0; m < M; m++) {
          const got = out.subarray(m * yStride + yOffset, m * yStride + yOffset + N);
          if (m < rows) expectClose(got, ref.subarray(m * N, (m + 1) * N), TOL, `${p.format} rows=${rows}`);
          else expect(Array.from(got).every((v) => v === -7)).toBe(true);
          expect(out[m * yStride]).toBe(-7);
          expect(out[m * yStride + yOffset + N]).toBe(-7);
        }
        gpu.buffers.destroy(by);
      }
      gpu.buffers.destroy(bx);
      destroySparse(gpu, w);
    }
  });

  it('sparsifyWeight prunes, packs and uploads; reports the kept norm and packed bytes', async () => {
    const N = 40, K = 64, M = 2;
    const dense = randomUniform(N * K, 9);
    const x = randomUniform(M * K, 10);
    const bx = gpu.buffers.upload('x', x);
    for (const opts of [{ format: '2:4' as const }, { format: 'vnm' as const, v: 32, m: 8, values: 'q4' as const }]) {
      const { weight, keptNormFraction, packed } = sparsifyWeight(gpu, 'w', dense, N, K, opts);
      expect(weight.format).toBe(opts.format);
      expect(keptNormFraction).toBeGreaterThan(0.5);
      expect(keptNormFraction).toBeLessThan(1);
      expect(weight.bytes).toBeLessThan(N * K * 4 * (opts.format === '2:4' ? 0.6 : 0.2));
      const by = poisoned(gpu, 'y', M * N);
      const out = await gpu.checked(async () => {
        const rec = gpu.recorder('t');
        sparseLinear(gpu, rec, { x: bx, w: weight, y: by, M });
        rec.submit();
        return gpu.buffers.readF32(by);
      });
      const q = opts.format === 'vnm' ? quantizeSparse(packed, 4) : undefined;
      expectClose(out, sparseMatmulRef(x, packed, M, q), TOL, `sparsify ${opts.format}`);
      gpu.buffers.destroy(by);
      destroySparse(gpu, weight);
    }
    gpu.buffers.destroy(bx);
  });

  it('the linear() table entry honours a forced kernel, refuses other formats, and linear() runs it', async () => {
    const p = makePacked([32, 6], 45, 50, 4);
    const w = uploadSparse(gpu, 'w', p, 'f32');
    for (const [M, kernel] of [[6, 'gemv'], [2, 'matmul'], [3, undefined]] as const) {
      const x = randomUniform(M * p.K, M);
      const bx = gpu.buffers.upload('x', x), by = poisoned(gpu, 'y', M * p.N);
      const out = await gpu.checked(async () => {
        const rec = gpu.recorder('t');
        sparseLinearImpl(gpu, rec, { x: bx, w, y: by, M, kernel });
        rec.submit();
        return gpu.buffers.readF32(by);
      });
      expectClose(out, sparseMatmulRef(x, p, M), TOL, `impl kernel=${kernel}`);
      gpu.buffers.destroy(bx);
      gpu.buffers.destroy(by);
    }
    expect(() => sparseLinearImpl(gpu, gpu.recorder('t'), { x: w.buffers[0], w: { ...w, format: 'q8' }, y: w.buffers[0], M: 1 })).toThrow(ArgumentError);
    // and linear() dispatches sparse weights through its format table
    const M = 5, x = randomUniform(M * p.K, 11);
    const bx = gpu.buffers.upload('x', x), by = poisoned(gpu, 'y', M * p.N);
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      linear(gpu, rec, { x: bx, w, y: by, M });
      rec.submit();
      return gpu.buffers.readF32(by);
    });
    expectClose(out, sparseMatmulRef(x, p, M), TOL, 'linear() on a vnm weight');
    gpu.buffers.destroy(bx);
    gpu.buffers.destroy(by);
    destroySparse(gpu, w);
  });

  it('weights over the binding limit are split into row chunks that sparseLinear and linear() run', async () => {
    const N = 75, K = 40;
    for (const fmt of ['2:4', [16, 5]] as const) {
      const p = makePacked(fmt as '2:4' | [number, number], N, K, 21);
      // 2G f32 values per row = 80 or 64 bytes: a 2 KiB cap gives chunks of 16..24 rows
      const w = uploadSparse(gpu, 'w', p, 'q8', { maxBindingBytes: 2048 });
      expect(w.chunks!.length).toBeGreaterThan(2);
      // chunks start on V-row blocks (and on the GEMV's 8-row groups)
      const unit = fmt === '2:4' ? 8 : 16;
      expect(w.chunks!.every((c) => (c.rowStart ?? 0) % unit === 0 && c.buffers.every((b) => b.size <= 2048))).toBe(true);
      for (const M of [1, 6]) {
        const x = randomUniform(M * K, M + 3);
        const bx = gpu.buffers.upload('x', x), ya = poisoned(gpu, 'ya', M * N), yb = poisoned(gpu, 'yb', M * N);
        const [a, b] = await gpu.checked(async () => {
          const rec = gpu.recorder('t');
          sparseLinear(gpu, rec, { x: bx, w, y: ya, M });
          linear(gpu, rec, { x: bx, w, y: yb, M });
          rec.submit();
          return Promise.all([gpu.buffers.readF32(ya), gpu.buffers.readF32(yb)]);
        });
        const ref = sparseMatmulRef(x, p, M, quantizeSparse(p, 8));
        expectClose(a, ref, TOL, `chunked sparseLinear M=${M}`);
        expectClose(b, ref, TOL, `chunked linear() M=${M}`);
        [bx, ya, yb].forEach((q) => gpu.buffers.destroy(q));
      }
      destroySparse(gpu, w);
    }
  });

  it('rejects bad strides; shader variants keep exactly one block per set', () => {
    const p = makePacked('2:4', 4, 8, 1);
    const w = uploadSparse(gpu, 'w', p);
    const b = gpu.buffers.create('b', 64);
    expect(() => sparseLinear(gpu, gpu.recorder('t'), { x: b, w, y: b, M: 1, xStride: 4 })).toThrow(ShapeError);
    for (const values of VALUES) for (const cols of ['2:4', 'vnm']) {
      const code = specialise(sparseCode, { values, cols, rows: 'plain', load: 'vec4', subgroups: 'off' });
      expect(code.match(/fn load_vals/g)?.length).toBe(1);
      expect(code.match(/fn group_cols/g)?.length).toBe(1);
      expect(code.includes('@binding(3)')).toBe(values !== 'f32');
      expect(code.includes('@binding(5)')).toBe(cols === 'vnm');
    }
    destroySparse(gpu, w);
    gpu.buffers.destroy(b);
  });
});
