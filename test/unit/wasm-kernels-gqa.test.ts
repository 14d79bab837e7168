// The Llama-style families' WebAssembly kernels (src/kernels/wasm/kernels-gqa.c) against the CPU
// references, on ragged shapes (odd head dims, rope halves that are not a multiple of 4, columns with a
// scalar tail, head counts that are not powers of two). Outputs are poisoned with NaN first, so an
// unwritten element fails. Tolerances (f32 in SIMD order vs the references' float64 where they use it):
//   rope_half, biases, scale, sigmoid gate: 1e-5 relative; clamped SwiGLU expert: 1e-5·(1 + Σ|terms|);
//   GQA attention: 1e-5 absolute on outputs of magnitude ≤ ~1.
import { describe, it, expect, beforeAll, vi } from 'vitest';
import { WasmKernels, ropeTable } from '../../src/kernels/wasm/kernels';
import { ropeRef } from '../../src/kernels/rope.ref';
import { ropeInvFreq } from '../../src/kernels/rope-params';
import { attentionRef } from '../../src/kernels/attention.ref';
import { addBiasRef, scaleRef, sigmoidGateRowsRef } from '../../src/kernels/elementwise.ref';
import { gptOssExpertRef, GPT_OSS_SWIGLU } from '../../src/kernels/moe.ref';
import { mulberry32 } from '../../src/util/random';

vi.setConfig({ testTimeout: 120_000 });

let k: WasmKernels;
beforeAll(async () => { k = await WasmKernels.create({ threads: 1 }); });

const rand = (n: number, seed: number, scale = 1) => { const r = mulberry32(seed); return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale); };
function poisoned(kk: WasmKernels, n: number): number { const p = kk.alloc(n * 4); kk.f32.fill(NaN, p >> 2, (p >> 2) + n); return p; }
function expectAllClose(got: Float32Array, want: ArrayLike<number>, tol: (i: number) => number, what: string) {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol(i))) throw new Error(`${what}: element ${i}: got ${got[i]}, want ${want[i]} (tol ${tol(i)})`);
  }
}

describe('WASM half-split RoPE, biases, multipliers, the shared-expert gate', () => {
  it('rope_half equals ropeRef style half (SIMD quads and the scalar tail, strided heads)', () => {
    for (const ropeDim of [8, 14, 22, 64]) {
      const invFreq = ropeInvFreq(ropeDim, 10000, null);
      const mark = k.mark();
      const cs = k.putF32(ropeTable(invFreq, 64));
      for (const [rows, heads, pos0] of [[1, 1, 0], [3, 5, 7], [6, 2, 50]]) {
        const headStride = ropeDim + 3, stride = heads * headStride + 1;
        const x = rand(rows * stride, rows * 10 + heads + ropeDim), xp = k.putF32(x);
        const a = { rows, heads, rowStride: stride, headStride, offset: 2, ropeDim, pos0 };
        k.rope(xp, a, cs, 'half');
        const want = ropeRef(Float32Array.from(x), { ...a, invFreq, style: 'half' });
        expectAllClose(k.readF32(xp, rows * stride), want, (i) => 1e-5 * (1 + Math.abs(want[i])), `rope_half dim ${ropeDim} rows ${rows}`);
      }
      k.release(mark);
    }
  });

  it('add_bias_rows, scale_inplace and sigmoid_gate_rows equal their references on ragged columns', () => {
    for (const [rows, cols] of [[1, 1], [3, 13], [5, 64], [2, 67]]) {
      const mark = k.mark();
      const x = rand(rows * cols, rows + cols), b = rand(cols, 7 * cols), g = rand(rows, 3 * rows, 4);
      const xp = k.putF32(x), bp = k.putF32(b), gp = k.putF32(g);
      k.addBiasRows(xp, bp, rows, cols);
      const wantB = addBiasRef(x, b, cols);
      expectAllClose(k.readF32(xp, rows * cols), wantB, (i) => 1e-6 * (1 + Math.abs(wantB[i])), `add_bias_rows ${rows}×${cols}`);
      k.scale(xp, -0.37, rows * cols);
      const wantS = scaleRef(wantB, -0.37);
      expectAllClose(k.readF32(xp, rows * cols), wantS, (i) => 1e-6 * (1 + Math.abs(wantS[i])), `scale ${rows}×${cols}`);
      k.sigmoidGateRows(xp, gp, rows, cols);
      const wantG = sigmoidGateRowsRef(wantS, g, cols);
      expectAllClose(k.readF32(xp, rows * cols), wantG, (i) => 1e-5 * (1 + Math.abs(wantG[i])), `sigmoid_gate_rows ${rows}×${cols}`);
      k.release(mark);
    }
  });
});

describe('WASM GPT-OSS expert (biases + clamped SwiGLU) vs gptOssExpertRef', () => {
  it('gate|up matmul, bias, swiglu_oai_fused, down, bias: ragged D and I, values past the clamp', () => {
    for (const [rows, D, I] of [[1, 5, 3], [3, 19, 13], [4, 32, 24]]) {
      const mark = k.mark();
      // Large weights so that gate and up leave [−limit, limit] and the clamps matter.
      const gateUp = rand(2 * I * D, D + I, 4), gub = rand(2 * I, 2 * D, 2), down = rand(D * I, 3 * D), db = rand(D, 5 * I);
      const x = rand(rows * D, rows * D);
      // The WASM layout: gate rows then up rows (HF interleaves them: row 2i gate i, 2i + 1 up i).
      const gu = new Float32Array(2 * I * D), gb = new Float32Array(2 * I);
      for (let i = 0; i < I; i++) {
        gu.set(gateUp.subarray(2 * i * D, (2 * i + 1) * D), i * D);
        gu.set(gateUp.subarray((2 * i + 1) * D, (2 * i + 2) * D), (I + i) * D);
        gb[i] = gub[2 * i]; gb[I + i] = gub[2 * i + 1];
      }
      const wGu = k.weight(gu, 2 * I, D, 'f32'), wDown = k.weight(down, D, I, 'f32');
      const xp = k.putF32(x), gup = poisoned(k, rows * 2 * I), h = poisoned(k, rows * I), y = poisoned(k, rows * D);
      k.matmul(xp, wGu, gup, rows);
      k.addBiasRows(gup, k.putF32(gb), rows, 2 * I);
      const pre = k.readF32(gup, rows * 2 * I);
      expect(pre.some((v) => Math.abs(v) > GPT_OSS_SWIGLU.limit), 'some gate/up values are past the clamp').toBe(true);
      k.swigluOaiFused(gup, h, rows, I, GPT_OSS_SWIGLU.alpha, GPT_OSS_SWIGLU.limit);
      k.matmul(h, wDown, y, rows);
      k.addBiasRows(y, k.putF32(db), rows, D);
      const got = k.readF32(y, rows * D);
      for (let r = 0; r < rows; r++) {
        const want = gptOssExpertRef(x.subarray(r * D, (r + 1) * D), gateUp, gub, down, db, D, I);
        // Σ|down·h| bounds the rounding: h ≤ limit·(limit + 1) per element.
        let mag = 0;
        for (let d = 0; d < D; d++) for (let i = 0; i < I; i++) mag = Math.max(mag, Math.abs(down[d * I + i]));
        const bound = 1e-5 * (1 + mag * I * GPT_OSS_SWIGLU.limit * (GPT_OSS_SWIGLU.limit + 1));
        expectAllClose(got.subarray(r * D, (r + 1) * D), want, () => bound, `gpt-oss expert ${rows}×${D}→${I} row ${r}`);
      }
      k.release(mark);
    }
  });
});

/** WASM GQA over a cache of `cap` ≥ past + S rows vs attentionRef over exactly past + S keys. */
function gqaCase(kk: WasmKernels, c: { S: number; past: number; H: number; KVH: number; d: number; window: number; sinks: boolean; seed: number }) {
  const { S, past, H, KVH, d, window } = c;
  const T = past + S, cap = T + 3, w = KVH * d;
  const q = rand(S * H * d, c.seed), kc = rand(cap * w, c.seed + 1), vc = rand(cap * w, c.seed + 2), sinks = rand(H, c.seed + 3, 2);
  const mark = kk.mark();
  const out = poisoned(kk, S * H * d);
  kk.gqa({ q: kk.putF32(q), k: kk.putF32(kc), v: kk.putF32(vc), sinks: c.sinks ? kk.putF32(sinks) : 0, out, S, heads: H, kvHeads: KVH, d, past, scale: 1 / Math.sqrt(d), window });
  const got = kk.readF32(out, S * H * d);
  kk.release(mark);
  const want = attentionRef(q, kc.subarray(0, T * w), vc.subarray(0, T * w), { S, T, past, heads: H, kvHeads: KVH, dQk: d, dV: d, scale: 1 / Math.sqrt(d), causal: true, window: window || undefined }, c.sinks ? sinks : undefined);
  return { got, want };
}

const GQA_CASES = [
  { S: 1, past: 0, H: 1, KVH: 1, d: 2, window: 0, sinks: false },
  { S: 1, past: 37, H: 6, KVH: 2, d: 10, window: 0, sinks: false },
  { S: 5, past: 7, H: 6, KVH: 3, d: 13, window: 0, sinks: true },
  { S: 9, past: 0, H: 4, KVH: 4, d: 8, window: 4, sinks: true },
  { S: 3, past: 20, H: 8, KVH: 2, d: 16, window: 8, sinks: false },
  { S: 1, past: 40, H: 5, KVH: 1, d: 7, window: 5, sinks: true },
].map((c, i) => ({ ...c, seed: 100 + 10 * i }));

describe('WASM GQA attention (per-kv-head cache, causal, windows, sinks) vs attentionRef', () => {
  it.each(GQA_CASES)('S $S past $past heads $H/$KVH d $d window $window sinks $sinks', (c) => {
    const { got, want } = gqaCase(k, c);
    expectAllClose(got, want, () => 1e-5, `gqa ${JSON.stringify(c)}`);
  });

  it('heads that are not a multiple of the kv heads are a ShapeError', () => {
    expect(() => k.gqa({ q: 0, k: 0, v: 0, sinks: 0, out: 0, S: 1, heads: 6, kvHeads: 4, d: 8, past: 0, scale: 1, window: 0 })).toThrow(/multiple/);
  });

  it('on 3 threads (split by queries and by heads) equals 1 thread bit for bit', async () => {
    const mt = await WasmKernels.create({ threads: 3 });
    try {
      // Enough work to wake the pool: long caches, several queries (split by query) or one (split by head).
      for (const c of [{ S: 1, past: 300, H: 8, KVH: 2, d: 64, window: 0, sinks: true, seed: 7 }, { S: 12, past: 200, H: 4, KVH: 2, d: 32, window: 64, sinks: false, seed: 8 }]) {
        const a = gqaCase(k, c).got, b = gqaCase(mt, c).got;
        expect(b.some(Number.isNaN)).toBe(false);
        expect(Array.from(b)).toEqual(Array.from(a));
      }
    } finally {
      mt.destroy();
    }
  });
});
