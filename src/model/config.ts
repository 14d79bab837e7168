/**
 * config.json of a Hugging Face DeepSeek-V3 / V2 checkpoint → a typed, validated ModelConfig. The
 * tensors (with shapes) a config implies are in the tensor table, tensors.ts. Defaults follow HF `configuration_deepseek_v3.py` (V3) and `configuration_deepseek.py` (V2).
 */
import type { YarnScaling } from '../kernels/rope-params';
import type { MoeRouting } from '../kernels/moe-routing';
import { ConfigError } from '../errors';

/** YaRN rope scaling as config.json's rope_scaling gives it (the kernels' parameter type). */
export type RopeScaling = YarnScaling;

export interface ModelConfig {
  modelType: 'deepseek_v3' | 'deepseek_v2';
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
  quantization: null | { method: 'fp8'; fmt: 'e4m3'; weightBlockSize: [number, number] };
  raw: Record<string, unknown>;
}

/** Bounds that keep every derived size an exact integer in a JS number and reject absurd configs early. */
const MAX_DIM = 1 << 24;
const MAX_LAYERS = 1024;
const MAX_EXPERTS = 1 << 16;

const TOPK_METHODS = ['noaux_tc', 'group_limited_greedy', 'greedy'] as const;

export function parseConfig(json: unknown): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError('(root)', 'config.json must be a JSON object');
  const raw = json as Record<string, unknown>;
  const has = (k: string) => Object.prototype.hasOwnProperty.call(raw, k) && raw[k] !== undefined;

  const modelType = raw.model_type;
  if (modelType !== 'deepseek_v3' && modelType !== 'deepseek_v2') {
    throw new ConfigError('model_type', `unsupported model_type ${JSON.stringify(modelType)}; webmoe runs 'deepseek_v3' and 'deepseek_v2'`);
  }
  const v3 = modelType === 'deepseek_v3';
  if (has('architectures')) {
    const a = raw.architectures;
    if (!Array.isArray(a) || a.some((x) => typeof x !== 'string')) throw new ConfigError('architectures', 'must be a list of strings');
    const ok = ['DeepseekV3ForCausalLM', 'DeepseekV2ForCausalLM'];
    if (!a.some((x) => ok.includes(x as string))) throw new ConfigError('architectures', `unsupported architectures ${JSON.stringify(a)}; expected one of ${ok.join(', ')}`);
  }

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

  const rmsNormEps = num('rms_norm_eps', 1e-6, { positive: true });
  const ropeTheta = num('rope_theta', 10000, { positive: true });
  const maxPositionEmbeddings = int('max_position_embeddings', { def: v3 ? 4096 : 2048, max: 1 << 30 });
  const ropeScaling = parseRopeScaling(raw.rope_scaling);

  const bosTokenId = has('bos_token_id') ? (raw.bos_token_id === null ? null : int('bos_token_id', { min: 0, max: vocabSize - 1 })) : v3 ? 0 : 100000;
  if (bosTokenId !== null && bosTokenId >= vocabSize) throw new ConfigError('bos_token_id', `${bosTokenId} is outside the vocabulary (${vocabSize})`);
  let eosTokenIds: number[];
  const eos = has('eos_token_id') ? raw.eos_token_id : v3 ? 1 : 100001;
  if (eos === null) eosTokenIds = [];
  else if (typeof eos === 'number') eosTokenIds = [eos];
  else if (Array.isArray(eos)) eosTokenIds = eos as number[];
  else throw new ConfigError('eos_token_id', `must be an integer or a list of integers, got ${JSON.stringify(eos)}`);
  if (eosTokenIds.length > 1024) throw new ConfigError('eos_token_id', 'too many entries');
  for (const t of eosTokenIds) {
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= vocabSize) throw new ConfigError('eos_token_id', `${JSON.stringify(t)} is not a token id in [0, ${vocabSize})`);
  }
  const tieWordEmbeddings = bool('tie_word_embeddings', false);
  const numNextnPredictLayers = int('num_nextn_predict_layers', { min: 0, max: 16, def: 0 });
  const quantization = parseQuantization(raw.quantization_config);

  return {
    modelType, vocabSize, hiddenSize, intermediateSize, moeIntermediateSize, numLayers, numHeads,
    qLoraRank, kvLoraRank, qkNopeHeadDim, qkRopeHeadDim, vHeadDim,
    nRoutedExperts, nSharedExperts, numExpertsPerTok, nGroup, topkGroup, routedScalingFactor,
    scoringFunc: scoring, normTopkProb, topkMethod, firstKDenseReplace, moeLayerFreq,
    rmsNormEps, ropeTheta, ropeScaling, maxPositionEmbeddings, bosTokenId, eosTokenIds,
    tieWordEmbeddings, numNextnPredictLayers, quantization, raw,
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
  return { type: 'yarn', factor, originalMaxPositionEmbeddings: orig, betaFast, betaSlow, mscale: get('mscale', 1, false), mscaleAllDim: get('mscale_all_dim', 0, false) };
}

function parseQuantization(v: unknown): ModelConfig['quantization'] {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError('quantization_config', 'must be an object');
  const o = v as Record<string, unknown>;
  if (o.quant_method !== 'fp8') throw new ConfigError('quantization_config.quant_method', `unsupported ${JSON.stringify(o.quant_method)} (only 'fp8')`);
  const fmt = o.fmt ?? 'e4m3';
  if (fmt !== 'e4m3') throw new ConfigError('quantization_config.fmt', `unsupported FP8 format ${JSON.stringify(fmt)} (only 'e4m3')`);
  if (o.activation_scheme !== undefined && o.activation_scheme !== 'dynamic') throw new ConfigError('quantization_config.activation_scheme', `unsupported ${JSON.stringify(o.activation_scheme)} (only 'dynamic')`);
  const bs = o.weight_block_size ?? [128, 128];
  if (!Array.isArray(bs) || bs.length !== 2 || bs.some((x) => typeof x !== 'number' || !Number.isInteger(x) || x < 1 || x > MAX_DIM)) {
    throw new ConfigError('quantization_config.weight_block_size', `must be [rows, cols] positive integers, got ${JSON.stringify(bs)}`);
  }
  return { method: 'fp8', fmt: 'e4m3', weightBlockSize: [bs[0], bs[1]] };
}

export function isMoeLayer(cfg: ModelConfig, layer: number): boolean {
  return cfg.nRoutedExperts > 0 && layer >= cfg.firstKDenseReplace && layer % cfg.moeLayerFreq === 0;
}

export function scaleInvName(weightName: string): string {
  return weightName.replace(/\.weight$/, '.weight_scale_inv');
}

/** The FP8 block size: from quantization_config, else the DeepSeek default. */
export function fp8BlockSize(cfg: ModelConfig): [number, number] {
  return cfg.quantization?.weightBlockSize ?? [128, 128];
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
