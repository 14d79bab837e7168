// The WebAssembly kernels (src/kernels/wasm/kernels.c) against the CPU references, on random shapes
// including ragged ones (1, tile−1, tile+1, odd K). Outputs are poisoned with NaN before every run, so an
// unwritten element fails. Tolerances (f32 accumulation in SIMD order vs the references' float64):
//   matmul, any storage: |Δ| ≤ 1e-5·(1 + Σ|x·w|) — the same dequantised matrix (weight.ref.ts), and for
//     q8/q4 the same int16 activations (quant-x16.ref.ts), so they are checked for the arithmetic, not for
//     quantisation error;
//   rmsnorm / rope / silu: 1e-5 relative; MLA: 1e-4 absolute on outputs of magnitude ≤ ~1;
//   router: identical ids, weights within 1e-5.
import { describe, it, expect, beforeAll, vi } from 'vitest';
import { WasmKernels, ropeTable, type WasmWeightFormat } from '../../src/kernels/wasm/kernels';
import { packWeight } from '../../src/kernels/weight-pack';
import { dequantizeRef } from '../../src/kernels/weight.ref';
import { matmulRef } from '../../src/kernels/matmul.ref';
import { rmsNormRef } from '../../src/kernels/rmsnorm.ref';
import { ropeRef } from '../../src/kernels/rope.ref';
import { ropeInvFreq } from '../../src/kernels/rope-params';
import { mlaAttentionRef } from '../../src/kernels/mla.ref';
import { moeGateRef } from '../../src/kernels/moe.ref';
import { mulberry32 } from '../../src/util/random';
import { prunePacked } from '../../src/sparse/apply';
import { sparseMatmulRef } from '../../src/kernels/sparse.ref';
import { quantizeActivationsI16Ref } from '../../src/kernels/quant-x16.ref';

// Whole-model loads (q8/q4 quantise on the host) take seconds on a shared 2-core machine.
vi.setConfig({ testTimeout: 120_000 });

let k: WasmKernels;
beforeAll(async () => { k = await WasmKernels.create({ threads: 1 }); });

const rand = (n: number, seed: number, scale = 1) => { const r = mulberry32(seed); return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale); };
function poisoned(n: number): number { const p = k.alloc(n * 4); k.f32.fill(NaN, p >> 2, (p >> 2) + n); return p; }
function expectAllClose(got: Float32Array, want: ArrayLike<number>, tol: (i: number) => number, what: string) {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol(i))) throw new Error(`${what}: element ${i}: got ${got[i]}, want ${want[i]} (tol ${tol(i)})`);
  }
}

describe('WASM matmul in every stored format vs the reference on the dequantised matrix', () => {
  const shapes: [number, number, number][] = [[1, 1, 1], [1, 5, 7], [2, 4, 8], [3, 9, 33], [1, 129, 256], [5, 17, 100], [7, 64, 31], [4, 3, 257], [1, 768, 256]];
  const formats: WasmWeightFormat[] = ['f32', 'f16', 'bf16', 'q8', 'q4'];
  it.each(formats)('%s on ragged shapes', (format) => {
    let seed = 1;
    for (const [M, N, K] of shapes) {
      const mark = k.mark();
      const w = rand(N * K, seed++, 0.5), x = rand(M * K, seed++);
      const deq = format === 'f32' ? w : dequantizeRef(packWeight(w, N, K, format));
      const ww = k.weight(w, N, K, format);
      const xp = k.putF32(x), yp = poisoned(M * N);
      k.matmul(xp, ww, yp, M);
      // q8/q4 multiply int16 activations (groups of 32): the reference takes x through the same rounding.
      const xr = format === 'q8' || format === 'q4' ? quantizeActivationsI16Ref(x, M, K) : x;
      const want = matmulRef(xr, deq, M, N, K);
      const mag = new Float64Array(M * N);
      for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) { let s = 0; for (let j = 0; j < K; j++) s += Math.abs(xr[m * K + j] * deq[n * K + j]); mag[m * N + n] = s; }
      expectAllClose(k.readF32(yp, M * N), want, (i) => 1e-5 * (1 + mag[i]), `${format} [${M}, ${N}, ${K}]`);
      // A row range writes those rows only.
      if (N > 2) {
        const y2 = poisoned(M * N);
        k.matmul(xp, ww, y2, M, 1, N - 1);
        const got = k.readF32(y2, M * N);
        for (let m = 0; m < M; m++) { expect(got[m * N]).toBeNaN(); expect(got[m * N + N - 1]).toBeNaN(); expect(got[m * N + 1]).toBeCloseTo(want[m * N + 1], 4); }
      }
      k.release(mark);
    }
  });
});

describe('WASM f16 decoding edge cases', () => {
  it('subnormals, signed zeros and the largest f16 decode exactly; a matrix with an infinity is stored as f32', () => {
    const mark = k.mark();
    const K = 16, vals = [6e-8, -6e-8, 3e-5, -1e-5, 0, -0, 65504, -65504, 1, -2.5, 1e-4, 0.333, 6.1e-5, -6.1e-5, 1000, 7];
    const w = Float32Array.from(vals);
    const ww = k.weight(w, 1, K, 'f16');
    expect(ww.format).toBe('f16');
    const x = new Float32Array(K);
    const deq = dequantizeRef(packWeight(w, 1, K, 'f16'));
    for (let i = 0; i < K; i++) {
      x.fill(0); x[i] = 1;
      const y = poisoned(1);
      k.matmul(k.putF32(x), ww, y, 1);
      // (A dot product cannot show the sign of a zero: compare by difference.)
      expect(k.readF32(y, 1)[0] - deq[i], `element ${i} (${vals[i]})`).toBe(0);
    }
    const inf = k.weight(Float32Array.from([1, Infinity, 2, 3]), 1, 4, 'f16');
    expect(inf.format).toBe('f32');
    k.release(mark);
  });
});

describe('WASM structured-sparse matmul vs sparseMatmulRef (straight from the packed arrays)', () => {
  const patterns = [
    { label: '2:4', o: { format: '2:4' as const } },
    { label: '64:2:8', o: { format: 'vnm' as const, v: 64, m: 8 } },
    { label: '5:2:5', o: { format: 'vnm' as const, v: 5, m: 5 } },
    { label: '4:2:7', o: { format: 'vnm' as const, v: 4, m: 7 } },
  ];
  const shapes: [number, number, number][] = [[1, 1, 1], [1, 3, 5], [2, 9, 33], [1, 70, 45], [3, 129, 64], [1, 256, 128], [5, 17, 257]];
  it.each(patterns)('$label on ragged shapes, whole and in row ranges', ({ label, o }) => {
    let seed = 100;
    for (const [M, N, K] of shapes) {
      const mark = k.mark();
      const packed = prunePacked(rand(N * K, seed++), N, K, o).packed;
      const x = rand(M * K, seed++);
      const w = k.sparseWeight(packed);
      const xp = k.putF32(x), yp = poisoned(M * N);
      k.matmul(xp, w, yp, M);
      const want = sparseMatmulRef(x, packed, M);
      // f32 sums of ≤ K/2 products of values in [-1, 1] in another order: 1e-5·(1 + K) covers it.
      expectAllClose(k.readF32(yp, M * N), want, () => 1e-5 * (1 + K), `${label} [${M}, ${N}, ${K}]`);
      if (N > 3) {
        // Rows [2, N − 1): a range that starts and ends inside V-row blocks.
        const y2 = poisoned(M * N);
        k.matmul(xp, w, y2, M, 2, N - 1);
        const got = k.readF32(y2, M * N);
        for (let m = 0; m < M; m++) {
          expect(got[m * N + 1]).toBeNaN();
          expect(got[m * N + N - 1]).toBeNaN();
          for (let n = 2; n < N - 1; n++) expect(Math.abs(got[m * N + n] - want[m * N + n])).toBeLessThanOrEqual(1e-5 * (1 + K));
        }
      }
      k.release(mark);
    }
  });
});

describe('WASM elementwise kernels', () => {
  it('rmsnorm (strided slice in place, and out of place) on ragged dims', () => {
    for (const [rows, dim] of [[1, 1], [3, 7], [2, 64], [5, 257]]) {
      const m = k.mark();
      const x = rand(rows * dim, dim), w = rand(dim, dim + 1);
      const xp = k.putF32(x), wp = k.putF32(w), yp = poisoned(rows * dim);
      k.rmsNorm(xp, wp, yp, rows, dim, 1e-6);
      const want = rmsNormRef(x, w, rows, dim, 1e-6);
      expectAllClose(k.readF32(yp, rows * dim), want, (i) => 1e-5 * (1 + Math.abs(want[i])), `rmsnorm [${rows}, ${dim}]`);
      // In place on columns [2, 2 + dim) of rows of dim + 5.
      const wide = rand(rows * (dim + 5), 9), wp2 = k.putF32(wide);
      k.rmsNorm(wp2 + 8, wp, wp2 + 8, rows, dim, 1e-6, dim + 5, dim + 5);
      const slice = new Float32Array(rows * dim);
      for (let r = 0; r < rows; r++) slice.set(wide.subarray(r * (dim + 5) + 2, r * (dim + 5) + 2 + dim), r * dim);
      const ws = rmsNormRef(slice, w, rows, dim, 1e-6);
      const got = k.readF32(wp2, rows * (dim + 5));
      for (let r = 0; r < rows; r++) {
        expect(got[r * (dim + 5)]).toBe(wide[r * (dim + 5)]);
        for (let i = 0; i < dim; i++) expect(Math.abs(got[r * (dim + 5) + 2 + i] - ws[r * dim + i])).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(ws[r * dim + i])));
      }
      k.release(m);
    }
  });

  it('rope with a host (cos, sin) table equals ropeRef', () => {
    const invFreq = ropeInvFreq(16, 10000, null);
    const cs = k.putF32(ropeTable(invFreq, 64));
    for (const [rows, heads, pos0] of [[1, 1, 0], [3, 4, 5], [7, 2, 40]]) {
      const stride = heads * 48 + 3;
      const x = rand(rows * stride, rows * 10 + heads), xp = k.putF32(x);
      const a = { rows, heads, rowStride: stride, headStride: 48, offset: 32, ropeDim: 16, pos0 };
      k.rope(xp, a, cs);
      const want = ropeRef(Float32Array.from(x), { ...a, invFreq });
      expectAllClose(k.readF32(xp, rows * stride), want, (i) => 1e-5 * (1 + Math.abs(want[i])), `rope rows ${rows}`);
    }
  });

  it('silu_mul_fused, silu_mul, axpy, add_inplace; exp over the f32 range', () => {
    const rows = 3, I = 13;
    const gu = rand(rows * 2 * I, 3, 6), gp = k.putF32(gu), hp = poisoned(rows * I);
    k.siluMulFused(gp, hp, rows, I);
    const h = k.readF32(hp, rows * I);
    for (let r = 0; r < rows; r++) for (let i = 0; i < I; i++) {
      const g = gu[r * 2 * I + i], u = gu[r * 2 * I + I + i], want = (g / (1 + Math.exp(-g))) * u;
      expect(Math.abs(h[r * I + i] - want)).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(want)));
    }
    const g = rand(9, 7, 5), u = rand(9, 8), sp = poisoned(9);
    k.siluMul(k.putF32(g), k.putF32(u), sp, 9);
    expectAllClose(k.readF32(sp, 9), Array.from(g, (v, i) => (v / (1 + Math.exp(-v))) * u[i]), (i) => 1e-5 * (1 + Math.abs(g[i] * u[i])), 'silu_mul');
    const a = rand(11, 4), b = rand(11, 5), ap = k.putF32(a), bp = k.putF32(b);
    k.axpy(ap, bp, 0.5, 11);
    k.addInPlace(ap, bp, 11);
    expectAllClose(k.readF32(ap, 11), Array.from(a, (v, i) => v + 1.5 * b[i]), () => 1e-6, 'axpy + add');
    for (const x of [-103, -90, -20, -1.5, -1e-3, 0, 0.3, 1, 10, 50, 88]) {
      const want = Math.exp(x);
      // Relative 3e-7 where the result is a normal f32; subnormal results (x < −87.3) have 1.4e-45 steps.
      expect(Math.abs(k.exp(x) - want)).toBeLessThanOrEqual(Math.max(3e-7 * want, 1.5e-45));
    }
    expect(k.exp(-200)).toBe(0);
    expect(k.exp(100)).toBe(Infinity);
  });
});

describe('WASM MLA attention (absorbed, latent cache) vs mlaAttentionRef', () => {
  it.each([
    [1, 0, 4, 32, 16, 32, 64], [5, 0, 4, 32, 16, 32, 64], [1, 9, 2, 8, 4, 8, 12], [3, 6, 3, 5, 6, 7, 9],
  ])('S %i past %i heads %i nope %i rope %i v %i r %i', (S, past, H, nope, rope, dv, r) => {
    const m = k.mark();
    const T = past + S, dims = { heads: H, qkNope: nope, qkRope: rope, vHead: dv, kvLora: r };
    const q = rand(S * H * (nope + rope), 1), latent = rand(T * r, 2), kPe = rand(T * rope, 3), kvB = rand(H * (nope + dv) * r, 4, 0.3);
    const scale = 1 / Math.sqrt(nope + rope);
    const out = poisoned(S * H * dv);
    k.mla({ q: k.putF32(q), kvB: k.putF32(kvB), latent: k.putF32(latent), pe: k.putF32(kPe), out, S, heads: H, nope, rope, v: dv, r, past, scale });
    const want = mlaAttentionRef({ dims, q, latent, kPe, kvB, past, S, scale, mode: 'absorb' });
    expectAllClose(k.readF32(out, S * H * dv), want, () => 1e-4, 'mla');
    k.release(m);
  });
});

describe('WASM MoE router vs moeGateRef', () => {
  const cases = [
    { name: 'DeepSeek-V3: sigmoid, bias, groups 4 keep 2, top-4', experts: 16, topK: 4, nGroup: 4, topkGroup: 2, scoring: 'sigmoid', normTopkProb: true, routedScalingFactor: 2.5, hasBias: true },
    { name: 'V2: softmax, no bias, group max', experts: 16, topK: 3, nGroup: 4, topkGroup: 2, scoring: 'softmax', normTopkProb: false, routedScalingFactor: 16, hasBias: false },
    { name: 'Mixtral-like: softmax top-2', experts: 8, topK: 2, nGroup: 1, topkGroup: 1, scoring: 'softmax', normTopkProb: true, routedScalingFactor: 1, hasBias: false },
    { name: '256 experts, 8 groups keep 4, top-8', experts: 256, topK: 8, nGroup: 8, topkGroup: 4, scoring: 'sigmoid', normTopkProb: true, routedScalingFactor: 2.5, hasBias: true },
  ] as const;
  it.each(cases)('$name', (r) => {
    const m = k.mark();
    const T = 7, E = r.experts;
    const logits = rand(T * E, E, 4);
    // Ties on purpose: equal logits must pick the lower index, as the reference does.
    logits[3] = logits[5];
    const bias = r.hasBias ? rand(E, 99, 0.1) : null;
    const ids = poisoned(T * r.topK), w = poisoned(T * r.topK);
    k.moeRoute(k.putF32(logits), bias ? k.putF32(bias) : 0, T, r, ids, w);
    const want = moeGateRef(logits, bias, r, T);
    const gotIds = new Int32Array(k.u8.buffer, ids, T * r.topK), gotW = k.readF32(w, T * r.topK);
    for (let t = 0; t < T; t++) {
      expect([...gotIds.subarray(t * r.topK, (t + 1) * r.topK)]).toEqual(want.ids[t]);
      expectAllClose(gotW.subarray(t * r.topK, (t + 1) * r.topK), want.weights[t], (i) => 1e-5 * (1 + Math.abs(want.weights[t][i])), `weights row ${t}`);
    }
    k.release(m);
  });
});

describe('WASM worker pool (kernels-mt.wasm over a shared memory)', () => {
  // Every output row (or head) is computed whole by one thread with the same kernel: the pool's results
  // equal the single-threaded ones bit for bit.
  it('matmul in every format, sparse, and MLA on 3 threads equal 1 thread exactly', async () => {
    const mt = await WasmKernels.create({ threads: 3 });
    try {
      expect(mt.threads).toBe(3);
      const N = 203, K = 260, M = 3;
      const w = rand(N * K, 1), x = rand(M * K, 2);
      const run = (kk: WasmKernels, make: (kk: WasmKernels) => ReturnType<WasmKernels['weight']>) => {
        const mark = kk.mark();
        const ww = make(kk);
        const xp = kk.putF32(x), yp = kk.alloc(M * N * 4);
        kk.f32.fill(NaN, yp >> 2, (yp >> 2) + M * N);
        kk.matmul(xp, ww, yp, M);
        const out = kk.readF32(yp, M * N);
        kk.release(mark);
        return out;
      };
      for (const f of ['f32', 'f16', 'bf16', 'q8', 'q4'] as const) {
        const a = run(k, (kk) => kk.weight(w, N, K, f)), b = run(mt, (kk) => kk.weight(w, N, K, f));
        expect(b.some(Number.isNaN), f).toBe(false);
        expect(Array.from(b), f).toEqual(Array.from(a));
      }
      for (const o of [{ format: '2:4' as const }, { format: 'vnm' as const, v: 16, m: 8 }]) {
        const packed = prunePacked(w, N, K, o).packed;
        const a = run(k, (kk) => kk.sparseWeight(packed)), b = run(mt, (kk) => kk.sparseWeight(packed));
        expect(b.some(Number.isNaN), o.format).toBe(false);
        expect(Array.from(b), o.format).toEqual(Array.from(a));
      }
      for (const [S, past] of [[1, 200], [6, 100]]) {
        const H = 5, nope = 16, rope = 8, dv = 16, r = 32, T = past + S;
        const q = rand(S * H * (nope + rope), 3), lat = rand(T * r, 4), pe = rand(T * rope, 5), kvB = rand(H * (nope + dv) * r, 6, 0.3);
        const mla = (kk: WasmKernels) => {
          const mark = kk.mark();
          const out = kk.alloc(S * H * dv * 4);
          kk.f32.fill(NaN, out >> 2, (out >> 2) + S * H * dv);
          kk.mla({ q: kk.putF32(q), kvB: kk.putF32(kvB), latent: kk.putF32(lat), pe: kk.putF32(pe), out, S, heads: H, nope, rope, v: dv, r, past, scale: 0.2 });
          const o = kk.readF32(out, S * H * dv);
          kk.release(mark);
          return o;
        };
        const a = mla(k), b = mla(mt);
        expect(b.some(Number.isNaN)).toBe(false);
        expect(Array.from(b)).toEqual(Array.from(a));
      }
    } finally {
      mt.destroy();
    }
  });

  it('threads outside [1, 64] are an ArgumentError', async () => {
    await expect(WasmKernels.create({ threads: 0 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(WasmKernels.create({ threads: 1.5 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
  });
});
