/**
 * Random-weight DeepSeek checkpoints in Hugging Face layout, made in memory: for tests of configurations
 * the official fixture does not cover (no q_lora, YaRN, several dense layers, F16/BF16 storage) and for
 * benchmarks at real model shapes (e.g. DeepSeek-V2-Lite cut to a few layers).
 */
import { parseConfig } from './config';
import { expectedTensorShapes, mtpTensors } from './tensors';
import { writeSafetensors, type SafetensorsDtype } from '../formats/safetensors';
import { mulberry32 } from '../util/random';
import { f32ToF16, f32ToBf16 } from '../util/half';

/** The fixture's config, as a base to vary. */
export const TINY_V3_CONFIG: Record<string, unknown> = {
  architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3', vocab_size: 256, hidden_size: 64,
  intermediate_size: 128, moe_intermediate_size: 32, num_hidden_layers: 3, num_nextn_predict_layers: 0,
  num_attention_heads: 4, num_key_value_heads: 4, n_shared_experts: 1, n_routed_experts: 8, ep_size: 1,
  routed_scaling_factor: 2.5, kv_lora_rank: 32, q_lora_rank: 32, qk_rope_head_dim: 8, v_head_dim: 16,
  qk_nope_head_dim: 16, topk_method: 'noaux_tc', n_group: 4, topk_group: 2, num_experts_per_tok: 2,
  moe_layer_freq: 1, first_k_dense_replace: 1, norm_topk_prob: true, scoring_func: 'sigmoid', hidden_act: 'silu',
  max_position_embeddings: 256, rms_norm_eps: 1e-6, bos_token_id: 0, eos_token_id: 1, tie_word_embeddings: false,
  rope_theta: 10000, rope_scaling: null, attention_bias: false, torch_dtype: 'float32',
};

/** DeepSeek-V2-Lite's shapes (16B), to be cut to a few layers for benchmarks. */
export const V2_LITE_CONFIG: Record<string, unknown> = {
  ...TINY_V3_CONFIG, architectures: ['DeepseekV2ForCausalLM'], model_type: 'deepseek_v2', vocab_size: 102400,
  hidden_size: 2048, intermediate_size: 10944, moe_intermediate_size: 1408, num_hidden_layers: 27,
  num_attention_heads: 16, num_key_value_heads: 16, n_shared_experts: 2, n_routed_experts: 64, routed_scaling_factor: 1,
  kv_lora_rank: 512, q_lora_rank: null, qk_rope_head_dim: 64, v_head_dim: 128, qk_nope_head_dim: 128,
  topk_method: 'greedy', n_group: 1, topk_group: 1, num_experts_per_tok: 6, norm_topk_prob: false, scoring_func: 'softmax',
  max_position_embeddings: 163840, rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 0.707 },
};

export interface SyntheticOptions {
  seed?: number;
  dtype?: Extract<SafetensorsDtype, 'F32' | 'F16' | 'BF16'>;
  /** Standard deviation of the matrices (norm weights are 1 ± 0.1, biases N(0, 0.1²)). */
  std?: number;
}

/** config.json text and a model.safetensors with random weights for `config`. */
export function syntheticCheckpoint(config: Record<string, unknown>, o: SyntheticOptions = {}): { 'config.json': string; 'model.safetensors': Uint8Array } {
  const rand = mulberry32(o.seed ?? 1);
  const normal = () => Math.sqrt(-2 * Math.log(Math.max(rand(), 1e-12))) * Math.cos(2 * Math.PI * rand());
  const dtype = o.dtype ?? 'F32';
  const tensors: Record<string, { dtype: SafetensorsDtype; shape: number[]; data: ArrayBufferView }> = {};
  const cfg = parseConfig(config);
  const shapes = expectedTensorShapes(cfg);
  // Multi-Token Prediction layers (num_nextn_predict_layers), without the optional embedding/head copies.
  for (let k = 0; k < cfg.numNextnPredictLayers; k++) for (const t of mtpTensors(cfg, cfg.numLayers + k)) shapes.set(t.name, t.shape);
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const f = new Float32Array(n);
    const isNorm = name.endsWith('norm.weight');
    const isBias = name.endsWith('e_score_correction_bias');
    const std = o.std ?? 1 / Math.sqrt(shape[shape.length - 1] ?? 1);
    for (let i = 0; i < n; i++) f[i] = isNorm ? 1 + 0.1 * normal() : isBias ? 0.1 * normal() : std * normal();
    // Router weights and biases stay F32, as in DeepSeek's checkpoints.
    const dt = isBias ? 'F32' : dtype;
    const data = dt === 'F32' ? f : dt === 'F16' ? Uint16Array.from(f, f32ToF16) : Uint16Array.from(f, f32ToBf16);
    tensors[name] = { dtype: dt, shape, data };
  }
  return { 'config.json': JSON.stringify(config), 'model.safetensors': writeSafetensors(tensors) };
}

