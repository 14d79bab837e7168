/**
 * config.json of a Hugging Face DeepSeek-V3 / V2 checkpoint → a typed, validated ModelConfig, and the
 * list of tensors (with shapes) that config implies, so a checkpoint can be checked before any GPU
 * allocation. Defaults follow HF `configuration_deepseek_v3.py` (V3) and `configuration_deepseek.py` (V2).
 */
import type { YarnScaling } from '../kernels/rope-params';
import { ConfigError, FormatError, ShapeError, UnsupportedError } from '../errors';
import type { SafetensorsDtype } from '../formats/safetensors';

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

/** What each tensor's shape is derived from, for error messages. */
interface ExpectedTensor {
  name: string;
  shape: number[];
  /** config.json fields the shape comes from. */
  fields: string;
  /** 'matrix' weights may be FP8 with a block scale; 'vector' (norms, biases) may not. */
  kind: 'matrix' | 'vector' | 'embedding';
}

/** Every tensor the model needs, in model order (lazily: a hostile config cannot make a huge list). */
export function* expectedTensors(cfg: ModelConfig): Generator<ExpectedTensor> {
  const D = cfg.hiddenSize, V = cfg.vocabSize, H = cfg.numHeads;
  const qk = cfg.qkNopeHeadDim + cfg.qkRopeHeadDim;
  yield { name: 'model.embed_tokens.weight', shape: [V, D], fields: 'vocab_size, hidden_size', kind: 'embedding' };
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}.`;
    yield { name: p + 'input_layernorm.weight', shape: [D], fields: 'hidden_size', kind: 'vector' };
    if (cfg.qLoraRank !== null) {
      yield { name: p + 'self_attn.q_a_proj.weight', shape: [cfg.qLoraRank, D], fields: 'q_lora_rank, hidden_size', kind: 'matrix' };
      yield { name: p + 'self_attn.q_a_layernorm.weight', shape: [cfg.qLoraRank], fields: 'q_lora_rank', kind: 'vector' };
      yield { name: p + 'self_attn.q_b_proj.weight', shape: [H * qk, cfg.qLoraRank], fields: 'num_attention_heads × (qk_nope_head_dim + qk_rope_head_dim), q_lora_rank', kind: 'matrix' };
    } else {
      yield { name: p + 'self_attn.q_proj.weight', shape: [H * qk, D], fields: 'num_attention_heads × (qk_nope_head_dim + qk_rope_head_dim), hidden_size (q_lora_rank null)', kind: 'matrix' };
    }
    yield { name: p + 'self_attn.kv_a_proj_with_mqa.weight', shape: [cfg.kvLoraRank + cfg.qkRopeHeadDim, D], fields: 'kv_lora_rank + qk_rope_head_dim, hidden_size', kind: 'matrix' };
    yield { name: p + 'self_attn.kv_a_layernorm.weight', shape: [cfg.kvLoraRank], fields: 'kv_lora_rank', kind: 'vector' };
    yield { name: p + 'self_attn.kv_b_proj.weight', shape: [H * (cfg.qkNopeHeadDim + cfg.vHeadDim), cfg.kvLoraRank], fields: 'num_attention_heads × (qk_nope_head_dim + v_head_dim), kv_lora_rank', kind: 'matrix' };
    yield { name: p + 'self_attn.o_proj.weight', shape: [D, H * cfg.vHeadDim], fields: 'hidden_size, num_attention_heads × v_head_dim', kind: 'matrix' };
    yield { name: p + 'post_attention_layernorm.weight', shape: [D], fields: 'hidden_size', kind: 'vector' };
    if (!isMoeLayer(cfg, l)) {
      const I = cfg.intermediateSize;
      yield { name: p + 'mlp.gate_proj.weight', shape: [I, D], fields: 'intermediate_size, hidden_size', kind: 'matrix' };
      yield { name: p + 'mlp.up_proj.weight', shape: [I, D], fields: 'intermediate_size, hidden_size', kind: 'matrix' };
      yield { name: p + 'mlp.down_proj.weight', shape: [D, I], fields: 'hidden_size, intermediate_size', kind: 'matrix' };
    } else {
      const E = cfg.nRoutedExperts, M = cfg.moeIntermediateSize;
      yield { name: p + 'mlp.gate.weight', shape: [E, D], fields: 'n_routed_experts, hidden_size', kind: 'matrix' };
      if (cfg.topkMethod === 'noaux_tc') yield { name: p + 'mlp.gate.e_score_correction_bias', shape: [E], fields: 'n_routed_experts (topk_method noaux_tc)', kind: 'vector' };
      for (let e = 0; e < E; e++) {
        const q = `${p}mlp.experts.${e}.`;
        yield { name: q + 'gate_proj.weight', shape: [M, D], fields: 'moe_intermediate_size, hidden_size', kind: 'matrix' };
        yield { name: q + 'up_proj.weight', shape: [M, D], fields: 'moe_intermediate_size, hidden_size', kind: 'matrix' };
        yield { name: q + 'down_proj.weight', shape: [D, M], fields: 'hidden_size, moe_intermediate_size', kind: 'matrix' };
      }
      if (cfg.nSharedExperts > 0) {
        const S = cfg.nSharedExperts * M;
        yield { name: p + 'mlp.shared_experts.gate_proj.weight', shape: [S, D], fields: 'n_shared_experts × moe_intermediate_size, hidden_size', kind: 'matrix' };
        yield { name: p + 'mlp.shared_experts.up_proj.weight', shape: [S, D], fields: 'n_shared_experts × moe_intermediate_size, hidden_size', kind: 'matrix' };
        yield { name: p + 'mlp.shared_experts.down_proj.weight', shape: [D, S], fields: 'hidden_size, n_shared_experts × moe_intermediate_size', kind: 'matrix' };
      }
    }
  }
  yield { name: 'model.norm.weight', shape: [D], fields: 'hidden_size', kind: 'vector' };
  if (!cfg.tieWordEmbeddings) yield { name: 'lm_head.weight', shape: [V, D], fields: 'vocab_size, hidden_size', kind: 'embedding' };
}

/** Every tensor the model needs → its shape ([out, in] for matrices). */
export function expectedTensorShapes(cfg: ModelConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  for (const t of expectedTensors(cfg)) m.set(t.name, t.shape);
  return m;
}

/** Number of tensors expectedTensors yields, without building them. */
export function expectedTensorCount(cfg: ModelConfig): number {
  let n = 1 + 1 + (cfg.tieWordEmbeddings ? 0 : 1);
  for (let l = 0; l < cfg.numLayers; l++) {
    n += 2 + (cfg.qLoraRank !== null ? 3 : 1) + 4;
    if (!isMoeLayer(cfg, l)) n += 3;
    else n += 1 + (cfg.topkMethod === 'noaux_tc' ? 1 : 0) + 3 * cfg.nRoutedExperts + (cfg.nSharedExperts > 0 ? 3 : 0);
  }
  return n;
}

const FLOAT_DTYPES: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16']);
const SCALE_DTYPES: ReadonlySet<string> = new Set(['F32', 'BF16', 'F16']);
const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

export function scaleInvName(weightName: string): string {
  return weightName.replace(/\.weight$/, '.weight_scale_inv');
}

/** The FP8 block size: from quantization_config, else the DeepSeek default. */
export function fp8BlockSize(cfg: ModelConfig): [number, number] {
  return cfg.quantization?.weightBlockSize ?? [128, 128];
}

/**
 * Checks every tensor the config implies against the checkpoint's tensor table, before any GPU
 * allocation: a missing tensor (FormatError), a wrong shape (ShapeError naming the tensor, the config
 * fields, expected and actual), an unsupported dtype (UnsupportedError). FP8 matrices need their
 * `weight_scale_inv` sibling of shape [ceil(out/b0), ceil(in/b1)]. Extra tensors (e.g. the MTP layer
 * model.layers.{numLayers}.*) are ignored.
 */
export function checkTensorsAgainstConfig(cfg: ModelConfig, tensors: Map<string, { dtype: SafetensorsDtype | string; shape: number[] }>): void {
  const [b0, b1] = fp8BlockSize(cfg);
  for (const e of expectedTensors(cfg)) {
    const t = tensors.get(e.name);
    if (!t && e.kind === 'matrix' && tensors.has(`${e.name}.sparse_config`)) {
      checkSparseTensors(e.name, e.shape, tensors);
      continue;
    }
    if (!t) throw new FormatError(`checkpoint: tensor '${e.name}' is missing (config.json implies shape ${fmt(e.shape)} from ${e.fields})`, { tensor: e.name, expected: e.shape });
    if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
      throw new ShapeError(`checkpoint: tensor '${e.name}' has shape ${fmt(t.shape)}, but config.json (${e.fields}) implies ${fmt(e.shape)}`);
    }
    if (t.dtype === 'F8_E4M3') {
      if (e.kind !== 'matrix') throw new UnsupportedError(`checkpoint: tensor '${e.name}' is F8_E4M3; only linear-layer weights may be FP8`, { tensor: e.name, dtype: t.dtype });
      const sn = scaleInvName(e.name);
      const s = tensors.get(sn);
      const want = [Math.ceil(e.shape[0] / b0), Math.ceil(e.shape[1] / b1)];
      if (!s) throw new FormatError(`checkpoint: FP8 tensor '${e.name}' has no '${sn}' (expected shape ${fmt(want)})`, { tensor: sn, expected: want });
      if (!SCALE_DTYPES.has(s.dtype)) throw new UnsupportedError(`checkpoint: '${sn}' has dtype ${s.dtype}; expected F32`, { tensor: sn, dtype: s.dtype });
      if (s.shape.length !== 2 || s.shape[0] !== want[0] || s.shape[1] !== want[1]) {
        throw new ShapeError(`checkpoint: '${sn}' has shape ${fmt(s.shape)}, but weight ${fmt(e.shape)} with block [${b0}, ${b1}] needs ${fmt(want)}`);
      }
    } else if (!FLOAT_DTYPES.has(t.dtype)) {
      throw new UnsupportedError(`checkpoint: tensor '${e.name}' has dtype ${t.dtype}; supported: F32, F16, BF16${e.kind === 'matrix' ? ', F8_E4M3 (with weight_scale_inv)' : ''}`, { tensor: e.name, dtype: t.dtype });
    }
  }
}

/**
 * A pre-pruned weight stored compressed (src/sparse/tensors.ts): the parts a loader needs exist with the
 * dtypes and row counts the config implies. The format and K are in the config tensor's data, checked
 * when it is read (sparseFromTensors).
 */
function checkSparseTensors(name: string, shape: number[], tensors: Map<string, { dtype: SafetensorsDtype | string; shape: number[] }>): void {
  const part = (suffix: string, dtype: string, rank: number) => {
    const t = tensors.get(name + suffix);
    if (!t) throw new FormatError(`checkpoint: sparse weight '${name}' has no '${name}${suffix}'`, { tensor: name + suffix });
    if (t.dtype !== dtype || t.shape.length !== rank) throw new FormatError(`checkpoint: '${name}${suffix}' is ${t.dtype} ${fmt(t.shape)}, expected ${dtype} of rank ${rank}`, { tensor: name + suffix });
    return t;
  };
  const c = part('.sparse_config', 'U32', 1);
  if (c.shape[0] !== 5) throw new FormatError(`checkpoint: '${name}.sparse_config' has shape ${fmt(c.shape)}, expected [5]`, { tensor: name + '.sparse_config' });
  for (const suffix of ['.sparse_values', '.sparse_meta']) {
    const t = part(suffix, suffix === '.sparse_values' ? 'F32' : 'U32', 2);
    if (t.shape[0] !== shape[0]) throw new ShapeError(`checkpoint: '${name}${suffix}' has ${t.shape[0]} rows, but config.json implies ${shape[0]}`);
  }
}
