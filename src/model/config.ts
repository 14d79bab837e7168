/**
 * config.json of a Hugging Face MoE checkpoint → a typed, validated ModelConfig. The family registry
 * (FAMILIES, keyed by `model_type`, checked against `architectures`) says which architectures run; the
 * tensors (with shapes) a config implies are in the tensor table, tensors.ts; the forward pass of each
 * family is its architecture file (architectures.ts lists them). Defaults follow each family's HF
 * `configuration_*.py` (DeepSeek-V3 / V2, Qwen2-MoE, Qwen3-MoE, OLMoE, Mixtral, Granite-MoE).
 */
import type { YarnScaling } from '../kernels/rope-params';
import type { MoeRouting } from '../kernels/moe-routing';
import { ConfigError } from '../errors';

/** YaRN rope scaling as config.json's rope_scaling gives it (the kernels' parameter type). */
export type RopeScaling = YarnScaling;

/** An architecture family: one architecture file and one tensor table each. */
export type Family = 'deepseek' | 'qwen2_moe' | 'qwen3_moe' | 'olmoe' | 'mixtral' | 'granitemoe' | 'gpt_oss';

/** The family registry: config.json's model_type → the family, its HF architecture class and its name. */
export const FAMILIES = {
  deepseek_v3: { family: 'deepseek', architectures: ['DeepseekV3ForCausalLM'], label: 'DeepSeek-V3' },
  deepseek_v2: { family: 'deepseek', architectures: ['DeepseekV2ForCausalLM'], label: 'DeepSeek-V2' },
  qwen2_moe: { family: 'qwen2_moe', architectures: ['Qwen2MoeForCausalLM'], label: 'Qwen2-MoE' },
  qwen3_moe: { family: 'qwen3_moe', architectures: ['Qwen3MoeForCausalLM'], label: 'Qwen3-MoE' },
  olmoe: { family: 'olmoe', architectures: ['OlmoeForCausalLM'], label: 'OLMoE' },
  mixtral: { family: 'mixtral', architectures: ['MixtralForCausalLM'], label: 'Mixtral' },
  granitemoe: { family: 'granitemoe', architectures: ['GraniteMoeForCausalLM'], label: 'Granite-MoE' },
  gpt_oss: { family: 'gpt_oss', architectures: ['GptOssForCausalLM'], label: 'GPT-OSS' },
} as const satisfies Record<string, { family: Family; architectures: readonly string[]; label: string }>;

export type ModelType = keyof typeof FAMILIES;

/** "model_type (Architecture)" for every supported family: what an unsupported config is told. */
export const SUPPORTED_MODEL_TYPES = Object.entries(FAMILIES).map(([t, f]) => `${t} (${f.architectures[0]})`).join(', ');

/** The display name of a config's family ("Qwen3-MoE"). */
export const familyLabel = (cfg: Pick<ModelConfig, 'modelType'>): string => FAMILIES[cfg.modelType].label;

export interface ModelConfig {
  modelType: ModelType;
  family: Family;
  /**
   * 'mla': DeepSeek's Multi-head Latent Attention (latent KV cache). 'gqa': standard grouped-query
   * attention, q/k/v projections of numHeads / numKvHeads heads of headDim, K/V cached per kv head.
   */
  attention: 'mla' | 'gqa';
  /** GQA: key/value heads (MLA: numHeads). */
  numKvHeads: number;
  /** GQA: the head dim of q, k and v (MLA: qk_nope + qk_rope). GQA configs set qkRopeHeadDim = vHeadDim = headDim, qkNopeHeadDim = kvLoraRank = 0. */
  headDim: number;
  /** RoPE pairs: 'interleaved' (2i, 2i+1) as DeepSeek; 'half' (i, i + d/2), HF `rotate_half` (Llama, Qwen, Mixtral, OLMoE, Granite). */
  ropeStyle: 'interleaved' | 'half';
  /** RMSNorm of q and k before RoPE: 'head' per head (Qwen3-MoE, q_norm/k_norm [head_dim]), 'full' over the whole projection (OLMoE, [heads·head_dim]). */
  qkNorm: 'none' | 'head' | 'full';
  /** Bias on the q/k/v projections (Qwen2-MoE). */
  attentionBias: boolean;
  /** Width of the shared expert MLP (DeepSeek: n_shared_experts × moe_intermediate_size; Qwen2-MoE: shared_expert_intermediate_size); 0 without one. */
  sharedExpertIntermediateSize: number;
  /** Qwen2-MoE: the shared expert's output is scaled by sigmoid(shared_expert_gate · x). */
  sharedExpertGate: boolean;
  /** Layers that hold a dense MLP although MoE would put experts there (Qwen mlp_only_layers). */
  mlpOnlyLayers: number[];
  /**
   * Granite's μP multipliers: h = embedding·Embed(x); scores scaled by `attention` (instead of
   * 1/√head_dim); h += residual·block(h); logits = head(h) / logitsScaling. Identity elsewhere.
   */
  multipliers: { embedding: number; attention: number | null; residual: number; logitsScaling: number };
  /** Sliding-window attention span (Mixtral/Qwen when configured, GPT-OSS's sliding layers); null: full causal attention. */
  slidingWindow: number | null;
  /**
   * Per-layer attention kind whenever slidingWindow is set (GPT-OSS's and Qwen2-MoE's layer_types;
   * every layer for Mixtral and Qwen3-MoE): sliding layers attend to the last slidingWindow positions,
   * full layers to all. null: no window, every layer full causal attention.
   */
  layerTypes: readonly LayerType[] | null;
  /** GPT-OSS: a learned per-head sink logit in every attention softmax (self_attn.sinks). */
  attentionSinks: boolean;
  /** GPT-OSS experts: clamped SwiGLU (gate ≤ limit, |up| ≤ limit, (up + 1)·gate·σ(1.702·gate)) and biases on gate_up/down; null: plain SwiGLU without biases. */
  expertActivation: null | { kind: 'swiglu_oai'; alpha: number; limit: number };
  /** The router's linear has a bias (GPT-OSS mlp.router.bias). */
  routerLinearBias: boolean;
  vocabSize: number;
  hiddenSize: number;
  /** Dense FFN width (layers < firstKDenseReplace, or every non-MoE layer). */
  intermediateSize: number;
  /** Width of one routed expert (and of each shared expert). */
  moeIntermediateSize: number;
  numLayers: number;
  numHeads: number;
  /** null: a plain q_proj (V2-Lite). */
  qLoraRank: number | null;
  kvLoraRank: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  /** 0 when the model has no MoE layers. */
  nRoutedExperts: number;
  nSharedExperts: number;
  numExpertsPerTok: number;
  nGroup: number;
  topkGroup: number;
  routedScalingFactor: number;
  scoringFunc: 'sigmoid' | 'softmax';
  normTopkProb: boolean;
  /** 'noaux_tc' (V3: sigmoid + e_score_correction_bias, group score = sum of top-2), 'group_limited_greedy' (V2: group score = max), 'greedy'. */
  topkMethod: string;
  firstKDenseReplace: number;
  moeLayerFreq: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
  tieWordEmbeddings: boolean;
  numNextnPredictLayers: number;
  /** FP8 block-scaled weights (DeepSeek-V3), or MXFP4 routed experts (GPT-OSS: *_blocks / *_scales tensors, everything else BF16). */
  quantization: null | { method: 'fp8'; fmt: 'e4m3'; weightBlockSize: [number, number] } | { method: 'mxfp4' };
  raw: Record<string, unknown>;
}

export type LayerType = 'sliding_attention' | 'full_attention';

/** Bounds that keep every derived size an exact integer in a JS number and reject absurd configs early. */
const MAX_DIM = 1 << 24;
const MAX_LAYERS = 1024;
const MAX_EXPERTS = 1 << 16;

const TOPK_METHODS = ['noaux_tc', 'group_limited_greedy', 'greedy'] as const;

type Readers = ReturnType<typeof readers>;

/** Typed, range-checked readers of config.json fields (each error names the field). */
function readers(raw: Record<string, unknown>) {
  const has = (k: string) => Object.prototype.hasOwnProperty.call(raw, k) && raw[k] !== undefined;
  const int = (k: string, opts: { min?: number; max?: number; def?: number } = {}): number => {
    const min = opts.min ?? 1, max = opts.max ?? MAX_DIM;
    if (!has(k) || raw[k] === null) {
      if (opts.def !== undefined) return opts.def;
      throw new ConfigError(k, 'missing (required)');
    }
    const v = raw[k];
    if (typeof v !== 'number' || !Number.isInteger(v)) throw new ConfigError(k, `must be an integer, got ${JSON.stringify(v)}`);
    if (v < min || v > max) throw new ConfigError(k, `${v} is out of range [${min}, ${max}]`);
    return v;
  };
  const num = (k: string, def: number, opts: { positive?: boolean; from?: Record<string, unknown>; field?: string } = {}): number => {
    const src = opts.from ?? raw;
    const field = opts.field ?? k;
    const v = Object.prototype.hasOwnProperty.call(src, k) ? src[k] : undefined;
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(field, `must be a finite number, got ${JSON.stringify(v)}`);
    if (opts.positive && !(v > 0)) throw new ConfigError(field, `must be > 0, got ${v}`);
    return v;
  };
  const bool = (k: string, def: boolean): boolean => {
    if (!has(k) || raw[k] === null) return def;
    if (typeof raw[k] !== 'boolean') throw new ConfigError(k, `must be true or false, got ${JSON.stringify(raw[k])}`);
    return raw[k] as boolean;
  };
  const str = (k: string, def: string): string => {
    if (!has(k) || raw[k] === null) return def;
    if (typeof raw[k] !== 'string') throw new ConfigError(k, `must be a string, got ${JSON.stringify(raw[k])}`);
    return raw[k] as string;
  };
  return { has, int, num, bool, str };
}

export function parseConfig(json: unknown): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError('(root)', 'config.json must be a JSON object');
  const raw = json as Record<string, unknown>;
  const modelType = raw.model_type;
  if (typeof modelType !== 'string' || !Object.prototype.hasOwnProperty.call(FAMILIES, modelType)) {
    throw new ConfigError('model_type', `unsupported model_type ${JSON.stringify(modelType)}; webmoe runs ${SUPPORTED_MODEL_TYPES}`);
  }
  const fam = FAMILIES[modelType as ModelType];
  if (raw.architectures !== undefined) {
    const a = raw.architectures;
    if (!Array.isArray(a) || a.some((x) => typeof x !== 'string')) throw new ConfigError('architectures', 'must be a list of strings');
    const ok: string[] = Object.values(FAMILIES).filter((f) => f.family === fam.family).flatMap((f) => f.architectures);
    if (!a.some((x) => ok.includes(x as string))) throw new ConfigError('architectures', `unsupported architectures ${JSON.stringify(a)} for model_type '${modelType}'; expected ${ok.join(', ')}`);
  }
  if (fam.family === 'gpt_oss') return parseGptOss(raw);
  return fam.family === 'deepseek' ? parseDeepseek(raw, modelType as 'deepseek_v3' | 'deepseek_v2') : parseSparseDecoder(raw, modelType as Exclude<ModelType, 'deepseek_v3' | 'deepseek_v2' | 'gpt_oss'>);
}

/** Fields every family shares: token ids, RoPE, tied head. */
function commonFields(raw: Record<string, unknown>, r: Readers, vocabSize: number, defs: { bos: number | null; eos: number | null; maxPos: number; eps: number; theta: number }) {
  const { has, int, num, bool } = r;
  const rmsNormEps = num('rms_norm_eps', defs.eps, { positive: true });
  const ropeTheta = num('rope_theta', defs.theta, { positive: true });
  const maxPositionEmbeddings = int('max_position_embeddings', { def: defs.maxPos, max: 1 << 30 });
  const ropeScaling = parseRopeScaling(raw.rope_scaling);
  const bosTokenId = has('bos_token_id') ? (raw.bos_token_id === null ? null : int('bos_token_id', { min: 0, max: vocabSize - 1 })) : defs.bos;
  if (bosTokenId !== null && bosTokenId >= vocabSize) throw new ConfigError('bos_token_id', `${bosTokenId} is outside the vocabulary (${vocabSize})`);
  let eosTokenIds: number[];
  const eos = has('eos_token_id') ? raw.eos_token_id : defs.eos;
  if (eos === null) eosTokenIds = [];
  else if (typeof eos === 'number') eosTokenIds = [eos];
  else if (Array.isArray(eos)) eosTokenIds = eos as number[];
  else throw new ConfigError('eos_token_id', `must be an integer or a list of integers, got ${JSON.stringify(eos)}`);
  if (eosTokenIds.length > 1024) throw new ConfigError('eos_token_id', 'too many entries');
  for (const t of eosTokenIds) {
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= vocabSize) throw new ConfigError('eos_token_id', `${JSON.stringify(t)} is not a token id in [0, ${vocabSize})`);
  }
  const tieWordEmbeddings = bool('tie_word_embeddings', false);
  return { rmsNormEps, ropeTheta, maxPositionEmbeddings, ropeScaling, bosTokenId, eosTokenIds, tieWordEmbeddings };
}

/**
 * The Llama-style sparse decoders (Qwen2-MoE, Qwen3-MoE, OLMoE, Mixtral, Granite-MoE): GQA attention,
 * RoPE on whole heads (rotate_half), a softmax top-k router. Defaults follow each family's HF
 * configuration_*.py; the expert width is moe_intermediate_size (Qwen) or intermediate_size (the others).
 */
function parseSparseDecoder(raw: Record<string, unknown>, modelType: Exclude<ModelType, 'deepseek_v3' | 'deepseek_v2' | 'gpt_oss'>): ModelConfig {
  const r = readers(raw);
  const { int, num, bool, str, has } = r;
  const family = FAMILIES[modelType].family;
  const qwen = modelType === 'qwen2_moe' || modelType === 'qwen3_moe';
  const hiddenAct = str('hidden_act', 'silu');
  if (hiddenAct !== 'silu') throw new ConfigError('hidden_act', `unsupported activation '${hiddenAct}' (only 'silu')`);
  if (has('clip_qkv') && raw.clip_qkv !== null) throw new ConfigError('clip_qkv', `clipping q/k/v (${JSON.stringify(raw.clip_qkv)}) is not supported; the published ${FAMILIES[modelType].label} configs have clip_qkv null`);
  // Qwen2's attention always has q/k/v biases (modeling_qwen2_moe.py: bias=True); the others follow attention_bias.
  const attentionBias = modelType === 'qwen2_moe' ? true : bool('attention_bias', false);
  if (attentionBias && modelType !== 'qwen2_moe') throw new ConfigError('attention_bias', `attention projections with bias are supported for qwen2_moe only (${modelType} has attention_bias false in its published configs)`);

  const vocabSize = int('vocab_size');
  const hiddenSize = int('hidden_size');
  const intermediateSize = int('intermediate_size');
  const numLayers = int('num_hidden_layers', { max: MAX_LAYERS });
  const numHeads = int('num_attention_heads', { max: 1 << 16 });
  const numKvHeads = int('num_key_value_heads', { def: numHeads, max: numHeads });
  if (numHeads % numKvHeads) throw new ConfigError('num_key_value_heads', `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  // head_dim: Qwen3's own key (default 128); elsewhere hidden_size / heads unless given (null counts as absent).
  const headDim = modelType === 'qwen3_moe' || (has('head_dim') && raw.head_dim !== null) ? int('head_dim', { def: modelType === 'qwen3_moe' ? 128 : undefined }) : hiddenSize / numHeads;
  if (!Number.isInteger(headDim)) throw new ConfigError('num_attention_heads', `hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads} (and head_dim is not given)`);
  if (headDim % 2) throw new ConfigError('head_dim', `must be even (RoPE rotates pairs), got ${headDim}`);
  if (numHeads * headDim > MAX_DIM) throw new ConfigError('num_attention_heads', `heads × head_dim = ${numHeads * headDim} is over ${MAX_DIM}`);

  const expertsKey = qwen || modelType === 'olmoe' ? 'num_experts' : 'num_local_experts';
  const nRoutedExperts = int(expertsKey, { max: MAX_EXPERTS });
  const numExpertsPerTok = int('num_experts_per_tok', { max: nRoutedExperts });
  const moeIntermediateSize = qwen ? int('moe_intermediate_size') : intermediateSize;
  const sharedExpertIntermediateSize = modelType === 'qwen2_moe' ? int('shared_expert_intermediate_size', { min: 0 }) : 0;
  // Mixtral and Granite take the softmax over the selected logits (= renormalised top-k); Qwen and OLMoE follow norm_topk_prob.
  const normTopkProb = modelType === 'mixtral' || modelType === 'granitemoe' ? true : bool('norm_topk_prob', false);
  const decoderSparseStep = qwen ? int('decoder_sparse_step', { def: 1, max: MAX_LAYERS }) : 1;
  const mlpOnly = qwen && has('mlp_only_layers') ? raw.mlp_only_layers : [];
  if (!Array.isArray(mlpOnly) || mlpOnly.some((l) => typeof l !== 'number' || !Number.isInteger(l) || l < 0 || l >= numLayers)) {
    throw new ConfigError('mlp_only_layers', `must be a list of layer indices in [0, ${numLayers}), got ${JSON.stringify(mlpOnly)}`);
  }
  // Sliding windows: Mixtral's sliding_window (null in Mixtral-8x7B), Qwen's only with use_sliding_window.
  const window = (modelType === 'mixtral' || (qwen && bool('use_sliding_window', false))) && has('sliding_window') && raw.sliding_window !== null ? int('sliding_window') : null;
  const layerTypes = window === null ? null : windowedLayers(raw, r, modelType, numLayers);
  const granite = modelType === 'granitemoe';
  const multipliers = {
    embedding: granite ? num('embedding_multiplier', 1, { positive: true }) : 1,
    attention: granite ? num('attention_multiplier', 1, { positive: true }) : null,
    residual: granite ? num('residual_multiplier', 1, { positive: true }) : 1,
    logitsScaling: granite ? num('logits_scaling', 1, { positive: true }) : 1,
  };
  const defs = {
    qwen2_moe: { bos: null, eos: null, maxPos: 32768, eps: 1e-6, theta: 10000 },
    qwen3_moe: { bos: null, eos: null, maxPos: 32768, eps: 1e-6, theta: 10000 },
    olmoe: { bos: null, eos: 50279, maxPos: 4096, eps: 1e-5, theta: 10000 },
    mixtral: { bos: 1, eos: 2, maxPos: 4096 * 32, eps: 1e-5, theta: 1e6 },
    granitemoe: { bos: 1, eos: 2, maxPos: 2048, eps: 1e-6, theta: 10000 },
  }[modelType];
  const common = commonFields(raw, r, vocabSize, defs);
  const quantization = parseQuantization(raw.quantization_config);
  if (quantization?.method === 'mxfp4') throw new ConfigError('quantization_config.quant_method', `mxfp4 is GPT-OSS's expert format (model_type gpt_oss); ${FAMILIES[modelType].label} checkpoints are expected unquantised or FP8`);
  if (common.ropeScaling) throw new ConfigError('rope_scaling', `rope scaling is supported for DeepSeek (YaRN) only; ${FAMILIES[modelType].label} configs are expected with rope_scaling null`);

  return {
    modelType, family, attention: 'gqa', numKvHeads, headDim, ropeStyle: 'half',
    qkNorm: modelType === 'qwen3_moe' ? 'head' : modelType === 'olmoe' ? 'full' : 'none',
    attentionBias, sharedExpertIntermediateSize, sharedExpertGate: sharedExpertIntermediateSize > 0,
    mlpOnlyLayers: mlpOnly as number[], multipliers, slidingWindow: window, layerTypes, attentionSinks: false, expertActivation: null, routerLinearBias: false,
    vocabSize, hiddenSize, intermediateSize, moeIntermediateSize, numLayers, numHeads,
    qLoraRank: null, kvLoraRank: 0, qkNopeHeadDim: 0, qkRopeHeadDim: headDim, vHeadDim: headDim,
    nRoutedExperts, nSharedExperts: sharedExpertIntermediateSize > 0 ? 1 : 0, numExpertsPerTok, nGroup: 1, topkGroup: 1,
    routedScalingFactor: 1, scoringFunc: 'softmax', normTopkProb, topkMethod: 'greedy',
    firstKDenseReplace: 0, moeLayerFreq: decoderSparseStep,
    ...common, numNextnPredictLayers: 0, quantization, raw,
  };
}

/**
 * Which layers attend through the configured sliding window, as each family's HF modeling file decides:
 * Mixtral and Qwen3-MoE every layer (MixtralModel builds create_sliding_window_causal_mask for all
 * layers once config.sliding_window is set; Qwen3MoeModel is MixtralModel); Qwen2-MoE per
 * config.layer_types (Qwen2MoeAttention sets its window where layer_types[i] is sliding_attention), whose
 * default configuration_qwen2_moe.py derives as even layers below max_window_layers (default 28).
 */
function windowedLayers(raw: Record<string, unknown>, r: ReturnType<typeof readers>, modelType: ModelType, numLayers: number): LayerType[] {
  if (modelType !== 'qwen2_moe') return Array<LayerType>(numLayers).fill('sliding_attention');
  if (r.has('layer_types') && raw.layer_types !== null) return layerTypesOf(raw.layer_types, numLayers);
  const maxWindowLayers = r.int('max_window_layers', { def: 28, min: 0 });
  return Array.from({ length: numLayers }, (_, i) => (i % 2 === 0 && i < maxWindowLayers ? 'sliding_attention' : 'full_attention'));
}

function layerTypesOf(lt: unknown, numLayers: number): LayerType[] {
  if (!Array.isArray(lt) || lt.length !== numLayers || lt.some((t) => t !== 'sliding_attention' && t !== 'full_attention')) {
    throw new ConfigError('layer_types', `must list 'sliding_attention' or 'full_attention' for each of the ${numLayers} layers, got ${JSON.stringify(lt)}`);
  }
  return lt as LayerType[];
}

/**
 * GPT-OSS (openai/gpt-oss-20b, -120b; HF configuration_gpt_oss.py): GQA with q/k/v/o biases and
 * attention sinks, layer_types alternating sliding (sliding_window) and full attention, YaRN
 * (rope_scaling truncate false), 'halves' RoPE, a router with bias (softmax over the top-k logits),
 * experts with the clamped SwiGLU (swiglu_limit) and biases, stored MXFP4 (quantization_config mxfp4).
 */
function parseGptOss(raw: Record<string, unknown>): ModelConfig {
  const r = readers(raw);
  const { int, num, str, bool, has } = r;
  const hiddenAct = str('hidden_act', 'silu');
  if (hiddenAct !== 'silu') throw new ConfigError('hidden_act', `unsupported activation '${hiddenAct}' (gpt_oss: 'silu', the clamped SwiGLU)`);
  const vocabSize = int('vocab_size');
  const hiddenSize = int('hidden_size');
  const intermediateSize = int('intermediate_size');
  const numLayers = int('num_hidden_layers', { max: MAX_LAYERS });
  const numHeads = int('num_attention_heads', { max: 1 << 16 });
  const numKvHeads = int('num_key_value_heads', { def: numHeads, max: numHeads });
  if (numHeads % numKvHeads) throw new ConfigError('num_key_value_heads', `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  const headDim = int('head_dim', { def: 64 });
  if (headDim % 2) throw new ConfigError('head_dim', `must be even (RoPE rotates pairs), got ${headDim}`);
  if (numHeads * headDim > MAX_DIM) throw new ConfigError('num_attention_heads', `heads × head_dim = ${numHeads * headDim} is over ${MAX_DIM}`);
  if (!bool('attention_bias', true)) throw new ConfigError('attention_bias', 'gpt_oss attention without q/k/v/o biases is not supported (the published configs have attention_bias true)');
  const nRoutedExperts = int('num_local_experts', { max: MAX_EXPERTS });
  const numExpertsPerTok = int('num_experts_per_tok', { max: nRoutedExperts });
  const slidingWindow = int('sliding_window', { def: 128 });
  // layer_types (HF default when absent: sliding on even layers, full on odd ones).
  const lt = layerTypesOf(has('layer_types') && raw.layer_types !== null ? raw.layer_types : Array.from({ length: numLayers }, (_, i) => (i % 2 ? 'full_attention' : 'sliding_attention')), numLayers);
  const limit = num('swiglu_limit', 7, { positive: true });
  const common = commonFields(raw, r, vocabSize, { bos: null, eos: null, maxPos: 131072, eps: 1e-5, theta: 150000 });
  return {
    modelType: 'gpt_oss', family: 'gpt_oss', attention: 'gqa', numKvHeads, headDim, ropeStyle: 'half',
    qkNorm: 'none', attentionBias: true, sharedExpertIntermediateSize: 0, sharedExpertGate: false,
    mlpOnlyLayers: [], multipliers: { embedding: 1, attention: null, residual: 1, logitsScaling: 1 },
    slidingWindow, layerTypes: lt, attentionSinks: true,
    expertActivation: { kind: 'swiglu_oai', alpha: 1.702, limit }, routerLinearBias: true,
    vocabSize, hiddenSize, intermediateSize, moeIntermediateSize: intermediateSize, numLayers, numHeads,
    qLoraRank: null, kvLoraRank: 0, qkNopeHeadDim: 0, qkRopeHeadDim: headDim, vHeadDim: headDim,
    nRoutedExperts, nSharedExperts: 0, numExpertsPerTok, nGroup: 1, topkGroup: 1,
    routedScalingFactor: 1, scoringFunc: 'softmax', normTopkProb: true, topkMethod: 'greedy',
    firstKDenseReplace: 0, moeLayerFreq: 1,
    ...common, numNextnPredictLayers: 0, quantization: parseQuantization(raw.quantization_config), raw,
  };
}

/** DeepSeek-V3 / V2: MLA, DeepSeekMoE (shared + routed experts, group-limited routing). */
function parseDeepseek(raw: Record<string, unknown>, modelType: 'deepseek_v3' | 'deepseek_v2'): ModelConfig {
  const r = readers(raw);
  const { has, int, num, bool, str } = r;
  const v3 = modelType === 'deepseek_v3';

  const hiddenAct = str('hidden_act', 'silu');
  if (hiddenAct !== 'silu') throw new ConfigError('hidden_act', `unsupported activation '${hiddenAct}' (only 'silu')`);
  if (bool('attention_bias', false)) throw new ConfigError('attention_bias', 'attention projections with bias are not supported');

  const vocabSize = int('vocab_size');
  const hiddenSize = int('hidden_size');
  const intermediateSize = int('intermediate_size');
  const numLayers = int('num_hidden_layers', { max: MAX_LAYERS });
  const numHeads = int('num_attention_heads', { max: 1 << 16 });
  const qLoraRank = has('q_lora_rank') ? (raw.q_lora_rank === null ? null : int('q_lora_rank')) : 1536;
  const kvLoraRank = int('kv_lora_rank');
  const qkNopeHeadDim = int('qk_nope_head_dim');
  const qkRopeHeadDim = int('qk_rope_head_dim', { min: 2 });
  if (qkRopeHeadDim % 2) throw new ConfigError('qk_rope_head_dim', `must be even (RoPE rotates pairs), got ${qkRopeHeadDim}`);
  const vHeadDim = int('v_head_dim');
  for (const [k, v] of [['num_attention_heads', numHeads * (qkNopeHeadDim + qkRopeHeadDim)], ['num_attention_heads', numHeads * (qkNopeHeadDim + vHeadDim)]] as const) {
    if (v > MAX_DIM) throw new ConfigError(k, `heads × head dims = ${v} is over ${MAX_DIM}`);
  }

  // MoE. V2 allows n_routed_experts null (an all-dense model).
  const nRoutedExperts = raw.n_routed_experts === null && !v3 ? 0 : int('n_routed_experts', { max: MAX_EXPERTS, def: v3 ? 256 : undefined });
  const moe = nRoutedExperts > 0;
  const moeIntermediateSize = moe ? int('moe_intermediate_size') : int('moe_intermediate_size', { def: 0, min: 0 });
  const nSharedExperts = int('n_shared_experts', { min: 0, max: MAX_EXPERTS, def: v3 ? 1 : 0 });
  const numExpertsPerTok = moe ? int('num_experts_per_tok', { max: nRoutedExperts, def: v3 ? 8 : undefined }) : int('num_experts_per_tok', { min: 0, def: 0 });
  if (moe && nSharedExperts * moeIntermediateSize > MAX_DIM) throw new ConfigError('n_shared_experts', `shared expert width ${nSharedExperts * moeIntermediateSize} is over ${MAX_DIM}`);
  const scoring = str('scoring_func', v3 ? 'sigmoid' : 'softmax');
  if (scoring !== 'sigmoid' && scoring !== 'softmax') throw new ConfigError('scoring_func', `unsupported scoring function '${scoring}' (sigmoid or softmax)`);
  const topkMethod = str('topk_method', v3 ? 'noaux_tc' : 'greedy');
  if (!(TOPK_METHODS as readonly string[]).includes(topkMethod)) throw new ConfigError('topk_method', `unsupported '${topkMethod}' (one of ${TOPK_METHODS.join(', ')})`);
  const nGroup = moe ? int('n_group', { def: 1, max: nRoutedExperts }) : 1;
  const topkGroup = moe ? int('topk_group', { def: 1, max: nGroup }) : 1;
  if (moe) {
    if (nRoutedExperts % nGroup) throw new ConfigError('n_group', `n_routed_experts ${nRoutedExperts} is not divisible by n_group ${nGroup}`);
    const perGroup = nRoutedExperts / nGroup;
    if (topkGroup * perGroup < numExpertsPerTok) throw new ConfigError('topk_group', `topk_group ${topkGroup} × ${perGroup} experts per group < num_experts_per_tok ${numExpertsPerTok}`);
    if (topkMethod === 'noaux_tc' && perGroup < 2) throw new ConfigError('n_group', `noaux_tc scores each group by its top-2 experts, but n_group ${nGroup} leaves ${perGroup} per group`);
  }
  const routedScalingFactor = num('routed_scaling_factor', v3 ? 2.5 : 1.0, { positive: true });
  const normTopkProb = bool('norm_topk_prob', v3);
  const firstKDenseReplace = int('first_k_dense_replace', { min: 0, max: MAX_LAYERS, def: v3 ? 3 : 0 });
  const moeLayerFreq = int('moe_layer_freq', { def: 1, max: MAX_LAYERS });

  const common = commonFields(raw, r, vocabSize, { bos: v3 ? 0 : 100000, eos: v3 ? 1 : 100001, maxPos: v3 ? 4096 : 2048, eps: 1e-6, theta: 10000 });
  const numNextnPredictLayers = int('num_nextn_predict_layers', { min: 0, max: 16, def: 0 });
  const quantization = parseQuantization(raw.quantization_config);
  if (quantization?.method === 'mxfp4') throw new ConfigError('quantization_config.quant_method', `mxfp4 is GPT-OSS's expert format (model_type gpt_oss); DeepSeek checkpoints are expected BF16 or FP8`);

  return {
    modelType, family: 'deepseek', attention: 'mla', numKvHeads: numHeads, headDim: qkNopeHeadDim + qkRopeHeadDim, ropeStyle: 'interleaved',
    qkNorm: 'none', attentionBias: false, sharedExpertIntermediateSize: moe ? nSharedExperts * moeIntermediateSize : 0, sharedExpertGate: false,
    mlpOnlyLayers: [], multipliers: { embedding: 1, attention: null, residual: 1, logitsScaling: 1 }, slidingWindow: null,
    layerTypes: null, attentionSinks: false, expertActivation: null, routerLinearBias: false,
    vocabSize, hiddenSize, intermediateSize, moeIntermediateSize, numLayers, numHeads,
    qLoraRank, kvLoraRank, qkNopeHeadDim, qkRopeHeadDim, vHeadDim,
    nRoutedExperts, nSharedExperts, numExpertsPerTok, nGroup, topkGroup, routedScalingFactor,
    scoringFunc: scoring, normTopkProb, topkMethod, firstKDenseReplace, moeLayerFreq,
    ...common, numNextnPredictLayers, quantization, raw,
  };
}

function parseRopeScaling(v: unknown): RopeScaling | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError('rope_scaling', `must be an object or null, got ${JSON.stringify(v)}`);
  const o = v as Record<string, unknown>;
  const type = o.type ?? o.rope_type;
  if (type === 'default') return null;
  if (type !== 'yarn') throw new ConfigError('rope_scaling.type', `unsupported rope scaling ${JSON.stringify(type)} (only 'yarn')`);
  const get = (k: string, def: number | undefined, positive: boolean): number => {
    const x = o[k];
    if (x === undefined || x === null) {
      if (def === undefined) throw new ConfigError(`rope_scaling.${k}`, 'missing (required for yarn)');
      return def;
    }
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new ConfigError(`rope_scaling.${k}`, `must be a finite number, got ${JSON.stringify(x)}`);
    if (positive ? !(x > 0) : x < 0) throw new ConfigError(`rope_scaling.${k}`, `must be ${positive ? '> 0' : '≥ 0'}, got ${x}`);
    return x;
  };
  const factor = get('factor', undefined, true);
  const orig = get('original_max_position_embeddings', undefined, true);
  if (!Number.isInteger(orig)) throw new ConfigError('rope_scaling.original_max_position_embeddings', `must be an integer, got ${orig}`);
  const betaFast = get('beta_fast', 32, true);
  const betaSlow = get('beta_slow', 1, true);
  if (betaSlow >= betaFast) throw new ConfigError('rope_scaling.beta_slow', `must be < beta_fast (${betaSlow} ≥ ${betaFast})`);
  const truncate = o.truncate ?? true;
  if (typeof truncate !== 'boolean') throw new ConfigError('rope_scaling.truncate', `must be true or false, got ${JSON.stringify(truncate)}`);
  return { type: 'yarn', factor, originalMaxPositionEmbeddings: orig, betaFast, betaSlow, mscale: get('mscale', 1, false), mscaleAllDim: get('mscale_all_dim', 0, false), ...(truncate ? {} : { truncate: false }) };
}

function parseQuantization(v: unknown): ModelConfig['quantization'] {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError('quantization_config', 'must be an object');
  const o = v as Record<string, unknown>;
  if (o.quant_method === 'mxfp4') return { method: 'mxfp4' };
  if (o.quant_method !== 'fp8') throw new ConfigError('quantization_config.quant_method', `unsupported ${JSON.stringify(o.quant_method)} (only 'fp8', or 'mxfp4' for gpt_oss)`);
  const fmt = o.fmt ?? 'e4m3';
  if (fmt !== 'e4m3') throw new ConfigError('quantization_config.fmt', `unsupported FP8 format ${JSON.stringify(fmt)} (only 'e4m3')`);
  if (o.activation_scheme !== undefined && o.activation_scheme !== 'dynamic') throw new ConfigError('quantization_config.activation_scheme', `unsupported ${JSON.stringify(o.activation_scheme)} (only 'dynamic')`);
  const bs = o.weight_block_size ?? [128, 128];
  if (!Array.isArray(bs) || bs.length !== 2 || bs.some((x) => typeof x !== 'number' || !Number.isInteger(x) || x < 1 || x > MAX_DIM)) {
    throw new ConfigError('quantization_config.weight_block_size', `must be [rows, cols] positive integers, got ${JSON.stringify(bs)}`);
  }
  return { method: 'fp8', fmt: 'e4m3', weightBlockSize: [bs[0], bs[1]] };
}

/**
 * Whether `layer` holds experts: DeepSeek from first_k_dense_replace on, every moe_layer_freq-th layer
 * (layer % freq == 0); Qwen every decoder_sparse_step-th ((layer + 1) % step == 0) outside mlp_only_layers.
 */
export function isMoeLayer(cfg: ModelConfig, layer: number): boolean {
  if (cfg.nRoutedExperts === 0 || layer < cfg.firstKDenseReplace || cfg.mlpOnlyLayers.includes(layer)) return false;
  return cfg.family === 'deepseek' ? layer % cfg.moeLayerFreq === 0 : (layer + 1) % cfg.moeLayerFreq === 0;
}

export function scaleInvName(weightName: string): string {
  return weightName.replace(/\.weight$/, '.weight_scale_inv');
}

/** The FP8 block size: from quantization_config, else the DeepSeek default. */
export function fp8BlockSize(cfg: ModelConfig): [number, number] {
  return cfg.quantization?.method === 'fp8' ? cfg.quantization.weightBlockSize : [128, 128];
}

/** The router settings of a config, as the MoE kernels take them. */
export function routingOf(cfg: ModelConfig): MoeRouting {
  return {
    experts: cfg.nRoutedExperts, topK: cfg.numExpertsPerTok, nGroup: cfg.nGroup, topkGroup: cfg.topkGroup,
    scoring: cfg.scoringFunc, normTopkProb: cfg.normTopkProb, routedScalingFactor: cfg.routedScalingFactor,
    hasBias: cfg.topkMethod === 'noaux_tc',
  };
}

/** HF config.json → MoeRouting (DeepSeek-V2/V3, Mixtral, Qwen-MoE, OLMoE field names). */
export function routingFromConfig(cfg: Record<string, any>): MoeRouting {
  const experts = cfg.n_routed_experts ?? cfg.num_local_experts ?? cfg.num_experts;
  const topK = cfg.num_experts_per_tok;
  const scoring = (cfg.scoring_func ?? 'softmax') as 'sigmoid' | 'softmax';
  const isMixtral = cfg.model_type === 'mixtral';
  return {
    experts,
    topK,
    nGroup: cfg.n_group ?? 1,
    topkGroup: cfg.topk_group ?? cfg.n_group ?? 1,
    scoring,
    normTopkProb: isMixtral ? true : !!cfg.norm_topk_prob,
    routedScalingFactor: cfg.routed_scaling_factor ?? 1,
    hasBias: cfg.topk_method === 'noaux_tc',
  };
}
