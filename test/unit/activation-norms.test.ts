/**
 * Calibration activation norms (src/model/activation-norms.ts) on the reference fixture: which weights get
 * norms, and identities that tie them to the forward pass — gate and up see the same input; every token
 * reaches K routed experts and the shared expert, so Σ over routed experts of ‖x‖² is K times the shared
 * expert's; batches accumulate (the same batch twice gives √2 × the norms).
 */
import { describe, it, expect } from 'vitest';
import { activationNorms } from '../../src/model/activation-norms';
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { fixtureFile, fixtureJson, fixtureTokens } from '../helpers/fixture';
import { ArgumentError } from '../../src/errors';

const open = () => openCheckpoint(memoryModel({ 'config.json': JSON.stringify(fixtureJson('config.json')), 'model.safetensors': fixtureFile('model.safetensors') }));
const sq = (a: Float32Array) => a.reduce((s, v) => s + v * v, 0);

describe('activationNorms', () => {
  it('gives every MLP input its channel norms, consistent with the routing', async () => {
    const ckpt = await open();
    const cfg = ckpt.config;
    const { tokens } = fixtureTokens();
    const norms = await activationNorms(ckpt, [tokens]);
    // dense layer 0 MLP and the shared experts: all tokens
    for (const p of ['model.layers.0.mlp.', 'model.layers.1.mlp.shared_experts.', 'model.layers.2.mlp.shared_experts.']) {
      const g = norms.get(`${p}gate_proj.weight`)!, u = norms.get(`${p}up_proj.weight`)!, d = norms.get(`${p}down_proj.weight`)!;
      expect(g.length).toBe(cfg.hiddenSize);
      expect(Array.from(u)).toEqual(Array.from(g));
      expect(d.length).toBe(p.includes('shared') ? cfg.moeIntermediateSize * cfg.nSharedExperts : cfg.intermediateSize);
      expect(sq(d)).toBeGreaterThan(0);
    }
    for (const L of [1, 2]) {
      let routed = 0, experts = 0;
      for (let e = 0; e < cfg.nRoutedExperts; e++) {
        const g = norms.get(`model.layers.${L}.mlp.experts.${e}.gate_proj.weight`);
        if (!g) continue;
        experts++;
        routed += sq(g);
        expect(norms.get(`model.layers.${L}.mlp.experts.${e}.down_proj.weight`)!.length).toBe(cfg.moeIntermediateSize);
      }
      expect(experts).toBeGreaterThan(1);
      const shared = sq(norms.get(`model.layers.${L}.mlp.shared_experts.gate_proj.weight`)!);
      expect(routed / shared).toBeCloseTo(cfg.numExpertsPerTok, 4);
    }
    // two batches accumulate: the same batch twice gives √2 × the norms
    const twice = await activationNorms(ckpt, [tokens, tokens]);
    const a = norms.get('model.layers.0.mlp.down_proj.weight')!, b = twice.get('model.layers.0.mlp.down_proj.weight')!;
    for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(Math.SQRT2 * a[i], 4);
    await expect(activationNorms(ckpt, [])).rejects.toThrow(ArgumentError);
  }, 120_000);
});
