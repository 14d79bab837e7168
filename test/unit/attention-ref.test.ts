import { describe, it, expect } from 'vitest';
import { randomUniform } from '../../src/util/random';
import { attentionRef, attentionOnlineRef, type AttentionShape } from '../../src/kernels/attention.ref';
import { mlaAttentionRef, mlaAbsorbQRef } from '../../src/kernels/mla.ref';
import type { MlaDims } from '../../src/kernels/mla';
import { latentCacheBytesPerToken, mhaCacheBytesPerToken } from '../../src/model/kvcache';

// Float64 accumulation on both sides; only the order of operations differs, so 1e-6 covers it.
const TOL = 1e-6;

function maxDiff(a: Float32Array, b: Float32Array) {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    expect(Number.isFinite(a[i])).toBe(true);
    m = Math.max(m, Math.abs(a[i] - b[i]));
  }
  return m;
}

const shape = (S: number, past: number, heads: number, kvHeads: number, dQk: number, dV: number, causal = true, T = past + S): AttentionShape =>
  ({ S, T, past, heads, kvHeads, dQk, dV, scale: dQk ** -0.5, causal });

describe('online-softmax / split-K recurrence equals the materialised softmax', () => {
  const cases: [AttentionShape, number, number][] = [
    [shape(1, 0, 1, 1, 8, 8), 32, 1],
    [shape(7, 0, 4, 2, 24, 16), 4, 1],
    [shape(64, 10, 3, 1, 16, 12), 16, 3],
    [shape(129, 0, 2, 2, 8, 8), 32, 5],
    [shape(1, 500, 16, 4, 12, 10), 32, 9],
    [shape(5, 0, 2, 1, 6, 4, false, 77), 8, 4],
  ];
  it.each(cases.map(([s, tile, splits]) => [`S=${s.S} T=${s.T} past=${s.past} H=${s.heads}/${s.kvHeads} tile=${tile} splits=${splits}`, s, tile, splits] as const))('%s', (_n, s, tile, splits) => {
    const q = randomUniform(s.S * s.heads * s.dQk, 1, -2, 2), k = randomUniform(s.T * s.kvHeads * s.dQk, 2, -2, 2), v = randomUniform(s.T * s.kvHeads * s.dV, 3);
    expect(maxDiff(attentionOnlineRef(q, k, v, s, tile, splits), attentionRef(q, k, v, s))).toBeLessThan(TOL);
  });

  it('causal: a query never sees later keys', () => {
    const s = shape(6, 2, 2, 1, 8, 8);
    const q = randomUniform(s.S * 16, 1), k = randomUniform(s.T * 8, 2), v = randomUniform(s.T * 8, 3);
    const base = attentionRef(q, k, v, s);
    const k2 = k.slice(), v2 = v.slice();
    for (let i = 5 * 8; i < s.T * 8; i++) { k2[i] += 1; v2[i] -= 1; } // change keys 5.. (visible only to queries ≥ 3)
    const moved = attentionRef(q, k2, v2, s);
    expect(maxDiff(moved.subarray(0, 3 * 16), base.subarray(0, 3 * 16))).toBe(0);
    expect(maxDiff(moved.subarray(3 * 16), base.subarray(3 * 16))).toBeGreaterThan(1e-3);
  });
});

describe('attention sinks and sliding windows (GPT-OSS) in the references', () => {
  const withWindow = (s: AttentionShape, window: number): AttentionShape => ({ ...s, window });
  const cases: [AttentionShape, number, number][] = [
    [withWindow(shape(1, 300, 8, 2, 16, 16), 128), 32, 1],
    [withWindow(shape(1, 300, 8, 2, 16, 16), 128), 32, 3],
    [withWindow(shape(40, 5, 4, 1, 8, 8), 7), 4, 2],
    [withWindow(shape(3, 0, 2, 2, 8, 4), 1), 8, 1],
    [shape(9, 4, 4, 2, 8, 8), 4, 4],
  ];
  it.each(cases.map(([s, tile, splits]) => [`S=${s.S} past=${s.past} W=${s.window ?? 0} tile=${tile} splits=${splits}`, s, tile, splits] as const))('online/split recurrence with sinks equals the materialised softmax: %s', (_n, s, tile, splits) => {
    const q = randomUniform(s.S * s.heads * s.dQk, 4, -2, 2), k = randomUniform(s.T * s.kvHeads * s.dQk, 5, -2, 2), v = randomUniform(s.T * s.kvHeads * s.dV, 6);
    const sinks = randomUniform(s.heads, 7, -3, 3);
    expect(maxDiff(attentionOnlineRef(q, k, v, s, tile, splits, sinks), attentionRef(q, k, v, s, sinks))).toBeLessThan(TOL);
  });

  it('a sink is a softmax column with no value: HF eager_attention_forward written out (cat, max, softmax, drop)', () => {
    const s = shape(3, 2, 2, 1, 4, 3);
    const q = randomUniform(s.S * 8, 8, -2, 2), k = randomUniform(s.T * 4, 9, -2, 2), v = randomUniform(s.T * 3, 10);
    const sinks = new Float32Array([0.7, -1.3]);
    const got = attentionRef(q, k, v, s, sinks);
    for (let i = 0; i < s.S; i++) for (let h = 0; h < 2; h++) {
      const n = s.past + i + 1;
      const logits: number[] = [];
      for (let t = 0; t < n; t++) { let d = 0; for (let c = 0; c < 4; c++) d += q[(i * 2 + h) * 4 + c] * k[t * 4 + c]; logits.push(d * s.scale); }
      logits.push(sinks[h]);
      const mx = Math.max(...logits);
      const e = logits.map((x) => Math.exp(x - mx));
      const z = e.reduce((a, b) => a + b, 0);
      for (let c = 0; c < 3; c++) {
        let o = 0;
        for (let t = 0; t < n; t++) o += (e[t] / z) * v[t * 3 + c];
        expect(Math.abs(got[(i * 2 + h) * 3 + c] - o)).toBeLessThan(1e-6);
      }
    }
  });

  it('window W: keys at or before past + s − W do not matter, the last W do; W ≥ T is full attention', () => {
    const s = withWindow(shape(4, 10, 2, 1, 8, 8), 5);
    const q = randomUniform(s.S * 16, 11), k = randomUniform(s.T * 8, 12), v = randomUniform(s.T * 8, 13);
    const base = attentionRef(q, k, v, s);
    // Query 0 (position 10) sees keys 6..10: changing keys 0..5 changes nothing anywhere.
    const k2 = k.slice(), v2 = v.slice();
    for (let i = 0; i < 6 * 8; i++) { k2[i] += 1; v2[i] -= 1; }
    expect(maxDiff(attentionRef(q, k2, v2, s), base)).toBe(0);
    // Key 6 is visible to query 0 only.
    const k3 = k.slice(); for (let i = 6 * 8; i < 7 * 8; i++) k3[i] += 1;
    const moved = attentionRef(q, k3, v, s);
    expect(maxDiff(moved.subarray(0, 16), base.subarray(0, 16))).toBeGreaterThan(1e-4);
    expect(maxDiff(moved.subarray(16), base.subarray(16))).toBe(0);
    const full = shape(4, 10, 2, 1, 8, 8);
    expect(maxDiff(attentionRef(q, k, v, withWindow(full, 14)), attentionRef(q, k, v, full))).toBe(0);
  });
});

describe('MLA: absorbed equals expanded (random weights)', () => {
  const dims: [string, MlaDims][] = [
    ['fixture', { heads: 4, qkNope: 16, qkRope: 8, vHead: 16, kvLora: 32 }],
    ['odd', { heads: 3, qkNope: 5, qkRope: 2, vHead: 7, kvLora: 11 }],
    ['16 heads', { heads: 16, qkNope: 8, qkRope: 4, vHead: 8, kvLora: 24 }],
  ];
  it.each(dims)('%s', (_n, d) => {
    for (const [S, past] of [[1, 0], [7, 0], [3, 20]]) {
      const T = past + S;
      const q = randomUniform(S * d.heads * (d.qkNope + d.qkRope), S + past);
      const latent = randomUniform(T * d.kvLora, 2), kPe = randomUniform(T * d.qkRope, 3);
      const kvB = randomUniform(d.heads * (d.qkNope + d.vHead) * d.kvLora, 4, -0.3, 0.3);
      const a = { dims: d, q, latent, kPe, kvB, past, S, scale: 0.17 };
      expect(maxDiff(mlaAttentionRef({ ...a, mode: 'absorb' }), mlaAttentionRef({ ...a, mode: 'naive' }))).toBeLessThan(TOL);
    }
  });
  it('absorbed queries: q̃·c equals q_nope·(W_UK c) for every head', () => {
    const d: MlaDims = { heads: 2, qkNope: 3, qkRope: 2, vHead: 4, kvLora: 5 };
    const q = randomUniform(2 * 5, 1), kvB = randomUniform(2 * 7 * 5, 2), c = randomUniform(5, 3);
    const qa = mlaAbsorbQRef(d, q, kvB, 1);
    for (let h = 0; h < 2; h++) {
      let lhs = 0, rhs = 0;
      for (let j = 0; j < 5; j++) lhs += qa[h * 7 + j] * c[j];
      for (let n = 0; n < 3; n++) {
        let kn = 0;
        for (let j = 0; j < 5; j++) kn += kvB[(h * 7 + n) * 5 + j] * c[j];
        rhs += q[h * 5 + n] * kn;
      }
      expect(Math.abs(lhs - rhs)).toBeLessThan(1e-6);
      expect(Array.from(qa.subarray(h * 7 + 5, h * 7 + 7))).toEqual(Array.from(q.subarray(h * 5 + 3, h * 5 + 5)));
    }
  });
});

describe('cache sizes per token', () => {
  it('matches the design brief’s derived figures (bf16)', () => {
    // V3: 576 values per layer per token, 61 layers → 70,272 B; V2-Lite 27 layers → 31,104 B.
    expect(latentCacheBytesPerToken({ layers: 61, kvLoraRank: 512, ropeDim: 64 }, 2)).toBe(70_272);
    expect(latentCacheBytesPerToken({ layers: 27, kvLoraRank: 512, ropeDim: 64 }, 2)).toBe(31_104);
    // Naive V2-Lite: 16 heads × (192 + 128) × 2 B = 10,240 B per layer per token.
    expect(mhaCacheBytesPerToken({ layers: 1, heads: 16, qkHeadDim: 192, vHeadDim: 128 }, 2)).toBe(10_240);
  });
});
