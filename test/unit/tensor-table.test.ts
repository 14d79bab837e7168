// The tensor table (src/model/tensors.ts): every name it lists parses back to its entry, the sparsity
// targets are exactly the Hugging Face projections each scope names, and the load list follows what the
// checkpoint holds (FP8 scales, pre-pruned parts, the optional router bias).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/model/config';
import {
  TENSOR_TABLE, expectedTensorCount, isProjection, isSparsityTarget, modelTensors, moeLayers, parseTensorName, tensorName, tensorsToLoad,
} from '../../src/model/tensors';
import { SPARSE_SUFFIXES } from '../../src/sparse/tensors';

const FIX = new URL('../fixtures/deepseek-v3-tiny/', import.meta.url);
const fixture = (): Record<string, unknown> => JSON.parse(readFileSync(new URL('config.json', FIX), 'utf8'));

describe('tensor table', () => {
  const v3 = parseConfig(fixture());
  const noLora = parseConfig({ ...fixture(), q_lora_rank: null, n_shared_experts: 0, topk_method: 'greedy', tie_word_embeddings: true });

  it('lists each role once, and every listed name parses back to its entry, layer and expert', () => {
    expect(new Set(TENSOR_TABLE.map((s) => s.role)).size).toBe(TENSOR_TABLE.length);
    for (const cfg of [v3, noLora]) {
      const all = [...modelTensors(cfg)];
      expect(all.length).toBe(expectedTensorCount(cfg));
      expect(new Set(all.map((t) => t.name)).size).toBe(all.length);
      for (const t of all) expect(parseTensorName(t.name)).toEqual({ spec: t.spec, layer: t.layer, expert: t.expert });
    }
  });

  it('puts the right tensors in dense and MoE layers, with or without q_lora', () => {
    // Fixture: 3 layers, first_k_dense_replace 1 → layer 0 dense, 1 and 2 MoE; 8 routed experts.
    expect(moeLayers(v3)).toEqual([1, 2]);
    const names = new Set([...modelTensors(v3)].map((t) => t.name));
    expect(names.has('model.layers.0.mlp.gate_proj.weight')).toBe(true);
    expect(names.has('model.layers.0.mlp.gate.weight')).toBe(false);
    expect(names.has('model.layers.1.mlp.experts.7.down_proj.weight')).toBe(true);
    expect(names.has('model.layers.1.mlp.gate.e_score_correction_bias')).toBe(true);
    expect(names.has('model.layers.2.self_attn.q_a_layernorm.weight')).toBe(true);
    expect(names.has('model.layers.2.self_attn.q_proj.weight')).toBe(false);
    const plain = new Set([...modelTensors(noLora)].map((t) => t.name));
    expect(plain.has('model.layers.2.self_attn.q_proj.weight')).toBe(true);
    expect(plain.has('model.layers.2.self_attn.q_a_proj.weight')).toBe(false);
    expect(plain.has('model.layers.1.mlp.shared_experts.up_proj.weight')).toBe(false);
    expect(plain.has('model.layers.1.mlp.gate.e_score_correction_bias')).toBe(false);
    expect(plain.has('lm_head.weight')).toBe(false);
    // Experts run expert by expert: gate, up, down of expert 0 before expert 1.
    const layer1 = [...modelTensors(v3)].filter((t) => t.layer === 1 && t.expert >= 0).slice(0, 4).map((t) => t.name);
    expect(layer1).toEqual([0, 0, 0, 1].map((e, i) => tensorName((['expert_gate', 'expert_up', 'expert_down', 'expert_gate'] as const)[i], 1, e)));
  });

  it('targets exactly the projections each sparsity scope names (and MTP layers by the same patterns)', () => {
    const expert = /^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$/;
    const linear = /^model\.layers\.\d+\.(self_attn\.(q_a_proj|q_b_proj|q_proj|kv_a_proj_with_mqa|o_proj)|mlp\.(gate|up|down)_proj|mlp\.shared_experts\.(gate|up|down)_proj|mlp\.experts\.\d+\.(gate|up|down)_proj)\.weight$/;
    const names = [...modelTensors(v3), ...modelTensors(noLora)].map((t) => t.name);
    names.push('model.layers.3.mlp.experts.0.up_proj.weight', 'model.layers.3.eh_proj.weight', 'model.layers.1.self_attn.o_proj.weight_scale_inv');
    for (const n of names) {
      expect(isSparsityTarget(n, 'experts'), n).toBe(expert.test(n));
      expect(isSparsityTarget(n, 'all-linear'), n).toBe(linear.test(n));
      expect(isProjection(n), n).toBe(/^model\.layers\.\d+\.(self_attn|mlp)\..*_proj(_with_mqa)?\.weight$/.test(n));
    }
    expect(isSparsityTarget('model.layers.1.self_attn.kv_b_proj.weight', 'all-linear')).toBe(false);
    expect(isSparsityTarget('model.layers.1.mlp.gate.weight', 'all-linear')).toBe(false);
  });

  it('loads FP8 scales, pre-pruned parts and the router bias only when the checkpoint has them', () => {
    const held = new Set([...modelTensors(noLora)].map((t) => t.name));
    const o = 'model.layers.0.self_attn.o_proj.weight';
    held.add(o.replace(/\.weight$/, '.weight_scale_inv'));
    const down = 'model.layers.1.mlp.experts.3.down_proj.weight';
    held.delete(down);
    for (const s of SPARSE_SUFFIXES) held.add(down + s);
    held.add('model.layers.1.mlp.gate.e_score_correction_bias');
    const list = tensorsToLoad(noLora, (n) => held.has(n), SPARSE_SUFFIXES);
    expect(list.slice(list.indexOf(o), list.indexOf(o) + 2)).toEqual([o, `${o}_scale_inv`]);
    expect(list).not.toContain(down);
    for (const s of SPARSE_SUFFIXES) expect(list).toContain(down + s);
    expect(list).toContain('model.layers.1.mlp.gate.e_score_correction_bias');
    expect(list).not.toContain('model.layers.2.mlp.gate.e_score_correction_bias');
    expect(new Set(list)).toEqual(held);
  });
});
