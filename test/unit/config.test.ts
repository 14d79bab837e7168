import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, FormatError, ShapeError, UnsupportedError } from '../../src/errors';
import { parseSafetensors } from '../../src/formats/safetensors';
import { isMoeLayer, parseConfig, type ModelConfig } from '../../src/model/config';
import { checkTensorsAgainstConfig, expectedTensorCount, expectedTensorShapes, moeLayers } from '../../src/model/tensors';
import { parameterCounts } from '../../src/model/assemble';

const FIX = new URL('../fixtures/deepseek-v3-tiny/', import.meta.url);
const fixtureConfig = (): Record<string, unknown> => JSON.parse(readFileSync(new URL('config.json', FIX), 'utf8'));
const fixtureTensors = () => parseSafetensors(new Uint8Array(readFileSync(new URL('model.safetensors', FIX)))).header.tensors;

function configError(fn: () => unknown, field: string) {
  let err: unknown;
  try { fn(); } catch (e) { err = e; }
  expect(err, `expected ConfigError on ${field}`).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).details?.field).toBe(field);
}

/** DeepSeek-V2-Lite's config.json (HF), abridged to the fields the loader reads. */
const V2_LITE = {
  architectures: ['DeepseekV2ForCausalLM'], model_type: 'deepseek_v2', vocab_size: 102400, hidden_size: 2048,
  intermediate_size: 10944, moe_intermediate_size: 1408, num_hidden_layers: 27, num_attention_heads: 16,
  num_key_value_heads: 16, n_shared_experts: 2, n_routed_experts: 64, routed_scaling_factor: 1.0, kv_lora_rank: 512,
  q_lora_rank: null, qk_rope_head_dim: 64, v_head_dim: 128, qk_nope_head_dim: 128, topk_method: 'greedy', n_group: 1,
  topk_group: 1, num_experts_per_tok: 6, moe_layer_freq: 1, first_k_dense_replace: 1, norm_topk_prob: false,
  scoring_func: 'softmax', aux_loss_alpha: 0.001, seq_aux: true, hidden_act: 'silu', max_position_embeddings: 163840,
  rms_norm_eps: 1e-6, bos_token_id: 100000, eos_token_id: 100001, tie_word_embeddings: false, rope_theta: 10000,
  rope_scaling: { beta_fast: 32, beta_slow: 1, factor: 40, mscale: 0.707, mscale_all_dim: 0.707, original_max_position_embeddings: 4096, type: 'yarn' },
};

describe('parseConfig', () => {
  it('reads the fixture config', () => {
    const c = parseConfig(fixtureConfig());
    expect(c).toMatchObject({
      modelType: 'deepseek_v3', vocabSize: 256, hiddenSize: 64, intermediateSize: 128, moeIntermediateSize: 32, numLayers: 3,
      numHeads: 4, qLoraRank: 32, kvLoraRank: 32, qkNopeHeadDim: 16, qkRopeHeadDim: 8, vHeadDim: 16, nRoutedExperts: 8,
      nSharedExperts: 1, numExpertsPerTok: 2, nGroup: 4, topkGroup: 2, routedScalingFactor: 2.5, scoringFunc: 'sigmoid',
      normTopkProb: true, topkMethod: 'noaux_tc', firstKDenseReplace: 1, moeLayerFreq: 1, rmsNormEps: 1e-6, ropeTheta: 10000,
      ropeScaling: null, bosTokenId: 0, eosTokenIds: [1], tieWordEmbeddings: false, quantization: null,
    });
    expect([0, 1, 2].map((l) => isMoeLayer(c, l))).toEqual([false, true, true]);
  });

  it('reads a V2-Lite config: q_lora null, softmax, greedy, YaRN', () => {
    const c = parseConfig(V2_LITE);
    expect(c.qLoraRank).toBeNull();
    expect(c.scoringFunc).toBe('softmax');
    expect(c.ropeScaling).toEqual({ type: 'yarn', factor: 40, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, mscale: 0.707, mscaleAllDim: 0.707 });
    const shapes = expectedTensorShapes(c);
    expect(shapes.get('model.layers.0.self_attn.q_proj.weight')).toEqual([16 * 192, 2048]);
    expect(shapes.has('model.layers.0.self_attn.q_a_proj.weight')).toBe(false);
    expect(shapes.has('model.layers.1.mlp.gate.e_score_correction_bias')).toBe(false); // greedy: no bias
    expect(shapes.get('model.layers.1.mlp.shared_experts.gate_proj.weight')).toEqual([2 * 1408, 2048]);
    expect(shapes.get('model.layers.26.mlp.experts.63.down_proj.weight')).toEqual([2048, 1408]);
    expect(shapes.size).toBe(expectedTensorCount(c));
  });

  it('applies V3 vs V2 defaults for routing options', () => {
    const base = fixtureConfig();
    for (const k of ['scoring_func', 'topk_method', 'norm_topk_prob', 'routed_scaling_factor', 'first_k_dense_replace']) delete base[k];
    const v3 = parseConfig(base);
    expect([v3.scoringFunc, v3.topkMethod, v3.normTopkProb, v3.routedScalingFactor, v3.firstKDenseReplace]).toEqual(['sigmoid', 'noaux_tc', true, 2.5, 3]);
    const v2 = parseConfig({ ...base, model_type: 'deepseek_v2', architectures: ['DeepseekV2ForCausalLM'] });
    expect([v2.scoringFunc, v2.topkMethod, v2.normTopkProb, v2.routedScalingFactor, v2.firstKDenseReplace]).toEqual(['softmax', 'greedy', false, 1, 0]);
    expect(parseConfig({ ...base, model_type: 'deepseek_v2', n_routed_experts: null }).nRoutedExperts).toBe(0); // all-dense V2
    expect(parseConfig({ ...base, eos_token_id: [1, 2] }).eosTokenIds).toEqual([1, 2]);
    expect(parseConfig({ ...base, quantization_config: { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128] } }).quantization)
      .toEqual({ method: 'fp8', fmt: 'e4m3', weightBlockSize: [128, 128] });
  });

  it('names the field for unsupported or invalid values', () => {
    const base = fixtureConfig();
    configError(() => parseConfig({ ...base, model_type: 'llama' }), 'model_type');
    configError(() => parseConfig({ ...base, architectures: ['LlamaForCausalLM'] }), 'architectures');
    configError(() => parseConfig({ ...base, hidden_act: 'gelu' }), 'hidden_act');
    configError(() => parseConfig({ ...base, scoring_func: 'sqrtsoftplus' }), 'scoring_func');
    configError(() => parseConfig({ ...base, topk_method: 'magic' }), 'topk_method');
    configError(() => parseConfig({ ...base, hidden_size: undefined }), 'hidden_size');
    configError(() => parseConfig({ ...base, hidden_size: 64.5 }), 'hidden_size');
    configError(() => parseConfig({ ...base, hidden_size: '64' }), 'hidden_size');
    configError(() => parseConfig({ ...base, num_hidden_layers: 1e9 }), 'num_hidden_layers');
    configError(() => parseConfig({ ...base, qk_rope_head_dim: 7 }), 'qk_rope_head_dim');
    configError(() => parseConfig({ ...base, num_experts_per_tok: 9 }), 'num_experts_per_tok');
    configError(() => parseConfig({ ...base, n_group: 3 }), 'n_group');
    configError(() => parseConfig({ ...base, topk_group: 5 }), 'topk_group');
    configError(() => parseConfig({ ...base, n_group: 4, topk_group: 1, num_experts_per_tok: 3 }), 'topk_group');
    configError(() => parseConfig({ ...base, rms_norm_eps: -1 }), 'rms_norm_eps');
    configError(() => parseConfig({ ...base, eos_token_id: 999 }), 'eos_token_id');
    configError(() => parseConfig({ ...base, rope_scaling: { type: 'linear', factor: 2 } }), 'rope_scaling.type');
    configError(() => parseConfig({ ...base, rope_scaling: { type: 'yarn', original_max_position_embeddings: 64 } }), 'rope_scaling.factor');
    configError(() => parseConfig({ ...base, quantization_config: { quant_method: 'gptq' } }), 'quantization_config.quant_method');
    configError(() => parseConfig({ ...base, quantization_config: { quant_method: 'fp8', fmt: 'e5m2' } }), 'quantization_config.fmt');
    configError(() => parseConfig({ ...base, attention_bias: true }), 'attention_bias');
    configError(() => parseConfig([]), '(root)');
  });
});

describe('checkTensorsAgainstConfig', () => {
  it('accepts the fixture: every expected tensor is present with its shape', () => {
    const cfg = parseConfig(fixtureConfig());
    const t = fixtureTensors();
    checkTensorsAgainstConfig(cfg, t);
    const shapes = expectedTensorShapes(cfg);
    expect(shapes.size).toBe(expectedTensorCount(cfg));
    for (const [name, shape] of shapes) expect(t.get(name)!.shape, name).toEqual(shape);
    // Every fixture tensor is expected (nothing unaccounted for in the architecture's list).
    for (const name of t.keys()) expect(shapes.has(name), name).toBe(true);
  });

  it('names the tensor, the config fields and expected vs actual when config and tensors disagree', () => {
    const t = fixtureTensors();
    const err = (cfg: ModelConfig, tt = t) => { try { checkTensorsAgainstConfig(cfg, tt); } catch (e) { return e as Error; } return null; };
    const e1 = err(parseConfig({ ...fixtureConfig(), q_lora_rank: 48 }))!;
    expect(e1).toBeInstanceOf(ShapeError);
    expect(e1.message).toContain('model.layers.0.self_attn.q_a_proj.weight');
    expect(e1.message).toContain('[32, 64]');
    expect(e1.message).toContain('[48, 64]');
    expect(e1.message).toContain('q_lora_rank');
    const e2 = err(parseConfig({ ...fixtureConfig(), q_lora_rank: null }))!;
    expect(e2).toBeInstanceOf(FormatError);
    expect(e2.message).toContain('self_attn.q_proj.weight');
    expect(err(parseConfig({ ...fixtureConfig(), n_routed_experts: 16, n_group: 4 }))!.message).toContain('mlp.gate.weight');
    expect(err(parseConfig({ ...fixtureConfig(), num_hidden_layers: 4 }))!.message).toContain('model.layers.3.');
    // Extra tensors (an MTP layer) are ignored; fewer layers in the config still pass.
    checkTensorsAgainstConfig(parseConfig({ ...fixtureConfig(), num_hidden_layers: 2 }), t);
    const bad = new Map(t);
    bad.set('model.norm.weight', { ...t.get('model.norm.weight')!, dtype: 'I32' });
    expect(err(parseConfig(fixtureConfig()), bad)).toBeInstanceOf(UnsupportedError);
  });

  it('FP8 weights need a weight_scale_inv sibling of shape [ceil(out/128), ceil(in/128)]', () => {
    const cfg = parseConfig({ ...fixtureConfig(), hidden_size: 200, quantization_config: { quant_method: 'fp8' } });
    const tensors = new Map<string, { dtype: string; shape: number[] }>();
    for (const [name, shape] of expectedTensorShapes(cfg)) tensors.set(name, { dtype: shape.length === 2 ? 'F8_E4M3' : 'F32', shape });
    tensors.set('model.embed_tokens.weight', { dtype: 'BF16', shape: [256, 200] });
    tensors.set('lm_head.weight', { dtype: 'BF16', shape: [256, 200] });
    expect(() => checkTensorsAgainstConfig(cfg, tensors)).toThrow(/q_a_proj\.weight_scale_inv/);
    for (const [name, shape] of expectedTensorShapes(cfg)) {
      if (shape.length === 2 && !name.includes('embed') && !name.startsWith('lm_head')) {
        tensors.set(name.replace(/weight$/, 'weight_scale_inv'), { dtype: 'F32', shape: [Math.ceil(shape[0] / 128), Math.ceil(shape[1] / 128)] });
      }
    }
    checkTensorsAgainstConfig(cfg, tensors);
    tensors.set('model.layers.0.self_attn.o_proj.weight_scale_inv', { dtype: 'F32', shape: [1, 1] });
    expect(() => checkTensorsAgainstConfig(cfg, tensors)).toThrow(ShapeError); // o_proj [200, 64] needs [2, 1]
    tensors.set('model.layers.0.self_attn.o_proj.weight_scale_inv', { dtype: 'F32', shape: [2, 1] });
    tensors.set('model.norm.weight', { dtype: 'F8_E4M3', shape: [200] });
    expect(() => checkTensorsAgainstConfig(cfg, tensors)).toThrow(UnsupportedError);
  });
});

/** The real config.json files of published models (test/data/configs, sources in its README). */
const REAL = new URL('../data/configs/', import.meta.url);
const realConfig = (model: string): Record<string, unknown> => JSON.parse(readFileSync(new URL(`${model}/config.json`, REAL), 'utf8'));

describe('real published configs', () => {
  // [folder, layers, routed experts, top-k, MoE layers, total params (B), active params (B)] — the
  // parameter figures the model cards publish: 15.7B / 2.4B (V2-Lite), 16B / 3B (Moonlight), 671B / 37B (V3).
  // DeepSeek's cards count active parameters without the input embedding table (a lookup, not a
  // matmul: 2.45B for V2-Lite, 2.66B with it); Moonlight's "A3B" counts it (2.91B with, 2.58B without).
  const cases: [string, number, number, number, number, number, number, boolean][] = [
    ['DeepSeek-V2-Lite', 27, 64, 6, 26, 15.7, 2.4, false],
    ['DeepSeek-V2-Lite-Chat', 27, 64, 6, 26, 15.7, 2.4, false],
    ['Moonlight-16B-A3B-Instruct', 27, 64, 6, 26, 16.0, 3.0, true],
    ['DeepSeek-V3', 61, 256, 8, 58, 671, 37, false],
  ];
  for (const [model, layers, experts, topK, moe, totalB, activeB, withEmbedding] of cases) {
    it(`${model}: parsed as published (${totalB}B total, ${activeB}B active)`, () => {
      const c = parseConfig(realConfig(model));
      expect([c.numLayers, c.nRoutedExperts, c.numExpertsPerTok]).toEqual([layers, experts, topK]);
      expect(moeLayers(c).length).toBe(moe);
      const p = parameterCounts(c);
      // Within 3% of the rounded figure of the card (the cards round to 2-3 digits).
      expect(Math.abs(p.total / 1e9 - totalB) / totalB).toBeLessThan(0.03);
      const active = p.active - (withEmbedding ? 0 : c.vocabSize * c.hiddenSize);
      expect(Math.abs(active / 1e9 - activeB) / activeB, `active ${active}`).toBeLessThan(0.05);
      expect(expectedTensorShapes(c).size).toBe(expectedTensorCount(c));
    });
  }

  it('reads what differs between them: MLA ranks, routing, FP8, MTP', () => {
    const v2 = parseConfig(realConfig('DeepSeek-V2-Lite'));
    expect([v2.modelType, v2.qLoraRank, v2.kvLoraRank, v2.scoringFunc, v2.topkMethod, v2.normTopkProb, v2.quantization]).toEqual(['deepseek_v2', null, 512, 'softmax', 'greedy', false, null]);
    expect(v2.ropeScaling).toMatchObject({ type: 'yarn', factor: 40, mscale: 0.707, mscaleAllDim: 0.707 });
    expect(parseConfig(realConfig('DeepSeek-V2-Lite-Chat'))).toEqual(v2);
    const moon = parseConfig(realConfig('Moonlight-16B-A3B-Instruct'));
    expect([moon.modelType, moon.qLoraRank, moon.scoringFunc, moon.topkMethod, moon.routedScalingFactor, moon.vocabSize, moon.ropeScaling, moon.eosTokenIds]).toEqual(['deepseek_v3', null, 'sigmoid', 'noaux_tc', 2.446, 163840, null, [163586]]);
    expect(expectedTensorShapes(moon).has('model.layers.1.mlp.gate.e_score_correction_bias')).toBe(true);
    const v3 = parseConfig(realConfig('DeepSeek-V3'));
    expect([v3.qLoraRank, v3.nGroup, v3.topkGroup, v3.firstKDenseReplace, v3.numNextnPredictLayers, v3.vocabSize]).toEqual([1536, 8, 4, 3, 1, 129280]);
    expect(v3.quantization).toEqual({ method: 'fp8', fmt: 'e4m3', weightBlockSize: [128, 128] });
  });
});

describe('real published configs of the other families', () => {
  // [folder, model_type, layers, experts, top-k, kv heads, head_dim, total params (B), active params (B)]:
  // the figures the model cards publish — Qwen1.5-MoE-A2.7B 14.3B / 2.7B, Qwen3-30B-A3B 30.5B / 3.3B,
  // OLMoE-1B-7B 6.9B / 1.3B, Mixtral-8x7B 46.7B / 12.9B, granite-3.1-3b-a800m 3.3B / 0.8B. The active
  // figures count the embedding table except Granite's "A800M" (0.807B without its tied 75M-parameter
  // table, 0.883B with it).
  const cases: [string, string, number, number, number, number, number, number, number, boolean][] = [
    ['Qwen1.5-MoE-A2.7B', 'qwen2_moe', 24, 60, 4, 16, 128, 14.3, 2.7, true],
    ['Qwen3-30B-A3B', 'qwen3_moe', 48, 128, 8, 4, 128, 30.5, 3.3, true],
    ['OLMoE-1B-7B-0924', 'olmoe', 16, 64, 8, 16, 128, 6.9, 1.3, true],
    ['Mixtral-8x7B-v0.1', 'mixtral', 32, 8, 2, 8, 128, 46.7, 12.9, true],
    ['granite-3.1-3b-a800m', 'granitemoe', 32, 40, 8, 8, 64, 3.3, 0.8, false],
  ];
  for (const [model, type, layers, experts, topK, kvHeads, headDim, totalB, activeB, withEmbedding] of cases) {
    it(`${model}: parsed as published (${totalB}B total, ${activeB}B active)`, () => {
      const c = parseConfig(realConfig(model));
      expect([c.modelType, c.attention, c.numLayers, c.nRoutedExperts, c.numExpertsPerTok, c.numKvHeads, c.headDim]).toEqual([type, 'gqa', layers, experts, topK, kvHeads, headDim]);
      expect(moeLayers(c).length).toBe(layers);
      const p = parameterCounts(c);
      expect(Math.abs(p.total / 1e9 - totalB) / totalB, `total ${p.total}`).toBeLessThan(0.03);
      const active = p.active - (withEmbedding ? 0 : c.vocabSize * c.hiddenSize);
      expect(Math.abs(active / 1e9 - activeB) / activeB, `active ${active}`).toBeLessThan(0.06);
      expect(expectedTensorShapes(c).size).toBe(expectedTensorCount(c));
    });
  }

  it('reads what differs between them: routing normalisation, shared expert, q/k norms, multipliers', () => {
    const q2 = parseConfig(realConfig('Qwen1.5-MoE-A2.7B'));
    expect([q2.normTopkProb, q2.attentionBias, q2.sharedExpertIntermediateSize, q2.sharedExpertGate, q2.slidingWindow, q2.qkNorm]).toEqual([false, true, 5632, true, null, 'none']);
    const q3 = parseConfig(realConfig('Qwen3-30B-A3B'));
    expect([q3.normTopkProb, q3.attentionBias, q3.sharedExpertIntermediateSize, q3.qkNorm, q3.numHeads * q3.headDim, q3.hiddenSize]).toEqual([true, false, 0, 'head', 4096, 2048]);
    const ol = parseConfig(realConfig('OLMoE-1B-7B-0924'));
    expect([ol.normTopkProb, ol.qkNorm, ol.bosTokenId, ol.eosTokenIds, ol.rmsNormEps]).toEqual([false, 'full', null, [50279], 1e-5]);
    const mx = parseConfig(realConfig('Mixtral-8x7B-v0.1'));
    expect([mx.normTopkProb, mx.slidingWindow, mx.moeIntermediateSize, mx.ropeTheta]).toEqual([true, null, 14336, 1e6]);
    const gr = parseConfig(realConfig('granite-3.1-3b-a800m'));
    expect([gr.tieWordEmbeddings, gr.multipliers]).toEqual([true, { embedding: 12, attention: 0.015625, residual: 0.22, logitsScaling: 6 }]);
    expect(expectedTensorShapes(gr).get('model.layers.0.block_sparse_moe.input_linear.weight')).toEqual([40, 1024, 1536]);
  });
});
