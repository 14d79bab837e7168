import { describe, it, expect } from 'vitest';
import { moeGateRef, moeLayerRef, routerLogitsRef, moePermutationRef, topKIndices, type MoeRouting } from '../../src/kernels/moe.ref';
import { routingFromConfig } from '../../src/model/config';
import { randomNormal, mulberry32 } from '../../src/util/random';
import { loadMoeFixture, sameSet } from '../helpers/moe-fixture';

// The CPU reference against the official DeepSeek-V3 code's numbers (fixture): routing is exact (the
// fixture's margins are ≥ 2.5e-3), weights/scores agree to f32 rounding of a 64-long dot product (1e-5),
// the layer output to the README's 1e-4.
describe('MoE CPU reference vs the deepseek-v3-tiny fixture', () => {
  const fx = loadMoeFixture();
  it('config → routing', () => {
    expect(fx.routing).toMatchObject({ experts: 8, topK: 2, nGroup: 4, topkGroup: 2, scoring: 'sigmoid', normTopkProb: true, routedScalingFactor: 2.5, hasBias: true });
  });
  for (const L of fx.layers) {
    it(`layer ${L.layer}: expert sets, weights and scores equal the official routing`, () => {
      const logits = routerLogitsRef(L.ffnIn, L.gate, fx.S, fx.D, fx.routing.experts);
      const g = moeGateRef(logits, L.bias, fx.routing, fx.S);
      for (let t = 0; t < fx.S; t++) {
        expect(sameSet(g.ids[t], L.indices[t]), `layer ${L.layer} pos ${t}`).toBe(true);
        expect(g.ids[t]).toEqual(L.indices[t]); // same order too: descending biased score
        for (let j = 0; j < fx.routing.topK; j++) expect(Math.abs(g.weights[t][j] - L.weights[t][j])).toBeLessThan(1e-5);
      }
      for (let i = 0; i < g.scores.length; i++) expect(Math.abs(g.scores[i] - L.routerScores[i])).toBeLessThan(1e-5);
      // With the bias zeroed the official code picks differently at many positions: the bias matters.
      // (Only the first MoE layer sees the same input in that diagnostic run.)
      if (L.layer !== fx.layers[0].layer) return;
      const z = moeGateRef(logits, new Float32Array(fx.routing.experts), fx.routing, fx.S);
      let differs = 0;
      for (let t = 0; t < fx.S; t++) {
        expect(sameSet(z.ids[t], L.zeroBiasIndices[t])).toBe(true);
        if (!sameSet(z.ids[t], g.ids[t])) differs++;
      }
      expect(differs).toBeGreaterThan(0);
    });
    it(`layer ${L.layer}: moeLayerRef reproduces ffn_out`, () => {
      const r = moeLayerRef(L.ffnIn, fx.S, fx.D, { gate: L.gate, bias: L.bias, experts: L.experts, shared: L.shared }, fx.I, fx.routing);
      let max = 0;
      for (let i = 0; i < r.out.length; i++) max = Math.max(max, Math.abs(r.out[i] - L.ffnOut[i]));
      expect(max).toBeLessThan(1e-4);
    });
  }
});

describe('router semantics', () => {
  const base: MoeRouting = { experts: 16, topK: 4, nGroup: 4, topkGroup: 2, scoring: 'sigmoid', normTopkProb: true, routedScalingFactor: 2.5, hasBias: true };

  it('masked groups are −∞, not 0: negative biased scores never lose to masked experts', () => {
    // All biased scores negative (bias −3 + sigmoid < 1): a 0.0 fill would pick masked experts.
    const T = 64, E = base.experts, gs = E / base.nGroup;
    const logits = randomNormal(T * E, 11, 2);
    const bias = new Float32Array(E).map((_, e) => -3 + 0.01 * e);
    const g = moeGateRef(logits, bias, base, T);
    for (let t = 0; t < T; t++) {
      const groups = new Set(g.ids[t].map((e) => Math.floor(e / gs)));
      expect(groups.size).toBeLessThanOrEqual(base.topkGroup);
      // chosen experts are the top-K of the unmasked ones
      const c = g.selection[t];
      const kept = c.map((v, e) => (v === -Infinity ? -Infinity : v));
      expect(g.ids[t]).toEqual(topKIndices(kept, base.topK));
      expect(g.ids[t].every((e) => c[e] < 0 && c[e] > -Infinity)).toBe(true);
    }
  });

  it('group score = sum of top-2 with a bias, max without', () => {
    // Group 0: one big score; group 1: two medium ones. top-2 sum prefers group 1, max prefers group 0.
    const r: MoeRouting = { ...base, experts: 8, topK: 1, nGroup: 2, topkGroup: 1, normTopkProb: false, routedScalingFactor: 1 };
    const inv = (p: number) => Math.log(p / (1 - p));
    const logits = Float32Array.from([0.9, 0.05, 0.05, 0.05, 0.6, 0.6, 0.05, 0.05].map(inv));
    expect(moeGateRef(logits, new Float32Array(8), r, 1).ids[0]).toEqual([4]); // experts 4 and 5 tie → 4
    expect(moeGateRef(logits, null, { ...r, hasBias: false }, 1).ids[0]).toEqual([0]);
  });

  it('ties break to the lower expert index', () => {
    const r: MoeRouting = { ...base, nGroup: 1, topkGroup: 1 };
    const logits = new Float32Array(16).fill(0.5);
    logits[9] = logits[3] = logits[12] = 1;
    const g = moeGateRef(logits, new Float32Array(16), r, 1);
    expect(g.ids[0]).toEqual([3, 9, 12, 0]);
  });

  it('softmax routers: Mixtral (softmax over the chosen logits) and OLMoE (no renormalisation)', () => {
    const E = 8, K = 2, T = 20;
    const logits = randomNormal(T * E, 5, 1.5);
    const mixtral = routingFromConfig({ model_type: 'mixtral', num_local_experts: E, num_experts_per_tok: K });
    const olmoe = routingFromConfig({ model_type: 'olmoe', num_experts: E, num_experts_per_tok: K, norm_topk_prob: false });
    const gm = moeGateRef(logits, null, mixtral, T), go = moeGateRef(logits, null, olmoe, T);
    for (let t = 0; t < T; t++) {
      const l = logits.subarray(t * E, (t + 1) * E);
      const top = topKIndices(l, K);
      expect(gm.ids[t]).toEqual(top);
      const ex = top.map((e) => Math.exp(l[e]));
      const z = ex.reduce((a, b) => a + b);
      gm.weights[t].forEach((w, j) => expect(w).toBeCloseTo(ex[j] / z, 6));
      const all = [...l].reduce((a, v) => a + Math.exp(v), 0);
      go.weights[t].forEach((w, j) => expect(w).toBeCloseTo(Math.exp(l[top[j]]) / all, 6));
    }
  });
});

describe('token permutation reference', () => {
  it.each([[1, 1, 8], [7, 2, 8], [100, 6, 64], [33, 8, 256]])('T=%i K=%i E=%i round trips and is stable', (T, K, E) => {
    const rnd = mulberry32(T * 31 + E);
    const ids = Array.from({ length: T * K }, () => Math.floor(rnd() * rnd() * E)); // skewed
    const p = moePermutationRef(ids, E, 32);
    for (let i = 0; i < ids.length; i++) expect(p.perm[p.inv[i]]).toBe(i);
    for (let e = 0; e < E; e++) {
      let prev = -1;
      for (let r = p.offsets[e]; r < p.offsets[e + 1]; r++) {
        expect(ids[p.perm[r]]).toBe(e);
        expect(p.perm[r]).toBeGreaterThan(prev);
        prev = p.perm[r];
      }
    }
    expect(p.offsets[E]).toBe(ids.length);
  });
});
