import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform, mulberry32 } from '../../src/util/random';
import { sparsifyExperts, sparseMoeExperts, destroySparseExperts } from '../../src/kernels/sparse-moe';
import { moeExperts, uploadExperts, destroyExperts } from '../../src/kernels/moe';
import { moeExpertsRef } from '../../src/kernels/moe.ref';
import { unpack, quantizeSparse, dequantizeValues, type SparsePacked } from '../../src/sparse/formats';
import { ShapeError } from '../../src/errors';
import type { SparseValues } from '../../src/kernels/sparse';

// Tolerance: two f32 GEMVs (≤ 64-term sums of values in [-1, 1]) around a SiLU, then a K-term weighted
// sum; the GPU sums in a different order than the float64 reference and the dense kernel: 1e-4 abs + rel.
const TOL = { atol: 1e-4, rtol: 1e-4 };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

/** The dense [rows, cols] matrices the packed stack stands for, split back per expert. */
function unstack(p: SparsePacked, values: SparseValues, E: number) {
  const v = values === 'f32' ? p.values : dequantizeValues(quantizeSparse(p, values === 'q8' ? 8 : 4));
  const d = unpack(p, v);
  const per = d.length / E;
  return Array.from({ length: E }, (_, e) => d.subarray(e * per, (e + 1) * per));
}

describe('sparse MoE experts == dense MoE kernel and reference on the pruned experts', () => {
  const cases: [string, number, number, number, number, number, SparseValues, { format: '2:4' | 'vnm'; v?: number; m?: number }][] = [
    // label, E, D, I, T, K, values, pattern
    ['2:4 fixture-sized', 8, 64, 32, 1, 2, 'f32', { format: '2:4' }],
    ['64:2:8 fixture-sized', 8, 64, 32, 3, 2, 'q8', { format: 'vnm', v: 64, m: 8 }],
    ['16:2:5 ragged K', 5, 48, 40, 7, 3, 'q4', { format: 'vnm', v: 16, m: 5 }],
    ['2:4 odd dims', 4, 37, 21, 2, 4, 'q8', { format: '2:4' }],
  ];
  it.each(cases)('%s: E=%i D=%i I=%i T=%i K=%i %s', async (_label, E, D, I, T, K, values, pattern) => {
    const seed = E * 1000 + D * 10 + I;
    const experts = Array.from({ length: E }, (_, e) => ({
      gate: randomUniform(I * D, seed + 3 * e), up: randomUniform(I * D, seed + 3 * e + 1), down: randomUniform(D * I, seed + 3 * e + 2),
    }));
    const { experts: sw, keptNormFraction, packed } = sparsifyExperts(gpu, 'L1', experts, D, I, { ...pattern, values });
    expect(keptNormFraction).toBeGreaterThan(0.3);
    expect(keptNormFraction).toBeLessThan(1);
    expect(sw.bytes).toBeLessThan(E * 3 * I * D * 4 * 0.6);
    // pruned (and dequantised) dense experts
    const gu = unstack(packed.gateUp, values, E), dn = unstack(packed.down, values, E);
    const dense = Array.from({ length: E }, (_, e) => ({ gate: gu[e].subarray(0, I * D), up: gu[e].subarray(I * D), down: dn[e] }));
    const rnd = mulberry32(seed);
    const ids: number[][] = [], wts: number[][] = [];
    for (let t = 0; t < T; t++) {
      const pool = [...Array(E).keys()];
      ids.push(Array.from({ length: K }, () => pool.splice(Math.floor(rnd() * pool.length), 1)[0]));
      wts.push(Array.from({ length: K }, () => rnd()));
    }
    const x = randomUniform(T * D, seed + 99);
    const shared = T % 2 ? randomUniform(T * D, seed + 98) : null;
    const bx = gpu.buffers.upload('x', x);
    const bids = gpu.buffers.upload('ids', new Uint32Array(ids.flat()));
    const bw = gpu.buffers.upload('wts', new Float32Array(wts.flat()));
    const bs = shared ? gpu.buffers.upload('shared', shared) : null;
    const outS = poisoned(gpu, 'out.sparse', T * D), outD = poisoned(gpu, 'out.dense', T * D);
    const dw = uploadExperts(gpu, 'dense', dense, D, I);
    const [ys, yd] = await gpu.checked(async () => {
      const rec = gpu.recorder('sparse-moe');
      sparseMoeExperts(gpu, rec, { x: bx, T, experts: sw, ids: bids, weights: bw, K, shared: bs, out: outS });
      moeExperts(gpu, rec, { x: bx, T, experts: dw, ids: bids, weights: bw, K, shared: bs, out: outD, mode: 'decode' });
      rec.submit();
      gpu.temps.releaseAll();
      return Promise.all([gpu.buffers.readF32(outS), gpu.buffers.readF32(outD)]);
    });
    expectClose(ys, yd, TOL, 'sparse vs dense MoE kernel');
    expectClose(ys, moeExpertsRef(x, T, D, I, dense, ids, wts, shared), TOL, 'sparse vs reference');
    destroySparseExperts(gpu, sw);
    destroyExperts(gpu, dw);
    [bx, bids, bw, bs, outS, outD].forEach((b) => gpu.buffers.destroy(b));
  });

  it('refuses V that would let a block straddle two experts', () => {
    const e = { gate: new Float32Array(24 * 64), up: new Float32Array(24 * 64), down: new Float32Array(64 * 24) };
    expect(() => sparsifyExperts(gpu, 'L', [e, e], 64, 24, { format: 'vnm', v: 32, m: 8 })).toThrow(ShapeError);
  });
});
