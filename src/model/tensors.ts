/**
 * The tensor tables of the architecture families (tableOf(cfg)); DeepSeek-V2/V3's is TENSOR_TABLE: one ordered description of every tensor a
 * checkpoint holds (Hugging Face name pattern, role, shape from the config, which layers hold it,
 * whether it may be stored FP8 or pre-pruned, whether a sparsity option prunes it). Every name list,
 * name → role lookup, shape check and sparsity-target test derives from it.
 *
 * Layers: dense-MLP layers (i < first_k_dense_replace, or off the moe_layer_freq grid, or no routed
 * experts) hold `mlp.{gate,up,down}_proj`; MoE layers the router, the routed experts and the shared
 * experts. With q_lora_rank the query is q_a → q_a_layernorm → q_b, without it one q_proj.
 * Multi-token-prediction layers (model.layers.{num_hidden_layers + k}, k < num_nextn_predict_layers) are
 * listed by mtpTensors: a full decoder layer (the same table entries at that layer index) plus the MTP
 * parts (MTP_TABLE). They are read when the checkpoint holds them (its `eh_proj`); many conversions drop
 * them, and the main model runs without them.
 */
import { FormatError, ShapeError, UnsupportedError } from '../errors';
import type { SafetensorsDtype } from '../formats/safetensors';
import type { SparsityOption } from '../sparse/apply';
import { fp8BlockSize, isMoeLayer, scaleInvName, type Family, type ModelConfig } from './config';

/** The backend's kind of linear weight (storage policy: attention, kv_b inside MLA, MLPs, shared experts, the head). */
export type MatrixRole = 'attn' | 'kv_b' | 'mlp' | 'shared' | 'lm_head';

export type TensorRole =
  | 'embed' | 'final_norm' | 'lm_head'
  | 'input_norm' | 'q_a' | 'q_a_norm' | 'q_b' | 'q' | 'kv_a' | 'kv_a_norm' | 'kv_b' | 'o' | 'post_attention_norm'
  | 'k' | 'v' | 'q_bias' | 'k_bias' | 'v_bias' | 'q_norm' | 'k_norm'
  | 'shared_expert_gate' | 'experts_gate_up' | 'experts_down'
  | 'mlp_gate' | 'mlp_up' | 'mlp_down'
  | 'router' | 'router_bias'
  | 'expert_gate' | 'expert_up' | 'expert_down'
  | 'shared_gate' | 'shared_up' | 'shared_down'
  // GPT-OSS: o_proj bias, attention sinks, the router's linear bias, and the experts stacked per layer.
  | 'o_bias' | 'sinks' | 'router_linear_bias'
  | 'oss_gate_up_blocks' | 'oss_gate_up_scales' | 'oss_gate_up_bias' | 'oss_down_blocks' | 'oss_down_scales' | 'oss_down_bias'
  | 'oss_gate_up' | 'oss_down';

export interface TensorSpec {
  role: TensorRole;
  /** Hugging Face name; `{L}` stands for the layer index, `{E}` for the routed expert index. */
  pattern: string;
  /** Which decoder layers hold it (absent: one per model). */
  layers?: 'all' | 'dense' | 'moe';
  /** One per routed expert of the layer. */
  perExpert?: true;
  /** Present only when the config says so (q_lora_rank, noaux_tc bias, shared experts, untied head). */
  when?: (cfg: ModelConfig) => boolean;
  /** Read when the checkpoint has it, even where `when` does not require it. */
  loadIfPresent?: true;
  shape: (cfg: ModelConfig) => number[];
  /** config.json fields the shape comes from (error messages). */
  fields: string;
  /** 'matrix' weights may be FP8 (with weight_scale_inv) or stored pre-pruned; 'vector' (norms, biases) may not. */
  kind: 'matrix' | 'vector' | 'embedding';
  /** The sparsity scope that prunes it: 'experts' targets are pruned under 'experts' and 'all-linear'. */
  sparse?: SparsityOption['apply'];
  /** How the backend stores it (linear weights outside the MoE block). */
  matrixRole?: MatrixRole;
  /** The projection of an expert MLP (routed or shared) or dense MLP it is. */
  proj?: 'gate' | 'up' | 'down';
  /** Every routed expert's matrices in one 3-D tensor [E, rows, cols] (Granite-MoE's ParallelExperts): 'gate_up' = [gate; up] rows, 'down'. */
  stacked?: 'gate_up' | 'down';
  /**
   * GPT-OSS's per-layer expert stacks (HF GptOssExperts): counted as routed experts. 'blocks'/'scales':
   * MXFP4 bytes (U8; a block byte holds two parameters, a scale none), 'values': float tensors.
   */
  ossExperts?: 'blocks' | 'scales' | 'values';
}

const D = (c: ModelConfig) => c.hiddenSize;
const qkDim = (c: ModelConfig) => c.qkNopeHeadDim + c.qkRopeHeadDim;
const sharedI = (c: ModelConfig) => c.sharedExpertIntermediateSize;
const hasShared = (c: ModelConfig) => c.nSharedExperts > 0;

/** Every tensor of the architecture, in model order (the order checkpoints are written and checked in). */
export const TENSOR_TABLE: readonly TensorSpec[] = [
  { role: 'embed', pattern: 'model.embed_tokens.weight', shape: (c) => [c.vocabSize, D(c)], fields: 'vocab_size, hidden_size', kind: 'embedding' },
  { role: 'input_norm', pattern: 'model.layers.{L}.input_layernorm.weight', layers: 'all', shape: (c) => [D(c)], fields: 'hidden_size', kind: 'vector' },
  { role: 'q_a', pattern: 'model.layers.{L}.self_attn.q_a_proj.weight', layers: 'all', when: (c) => c.qLoraRank !== null, shape: (c) => [c.qLoraRank!, D(c)], fields: 'q_lora_rank, hidden_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'attn' },
  { role: 'q_a_norm', pattern: 'model.layers.{L}.self_attn.q_a_layernorm.weight', layers: 'all', when: (c) => c.qLoraRank !== null, shape: (c) => [c.qLoraRank!], fields: 'q_lora_rank', kind: 'vector' },
  { role: 'q_b', pattern: 'model.layers.{L}.self_attn.q_b_proj.weight', layers: 'all', when: (c) => c.qLoraRank !== null, shape: (c) => [c.numHeads * qkDim(c), c.qLoraRank!], fields: 'num_attention_heads × (qk_nope_head_dim + qk_rope_head_dim), q_lora_rank', kind: 'matrix', sparse: 'all-linear', matrixRole: 'attn' },
  { role: 'q', pattern: 'model.layers.{L}.self_attn.q_proj.weight', layers: 'all', when: (c) => c.qLoraRank === null, shape: (c) => [c.numHeads * qkDim(c), D(c)], fields: 'num_attention_heads × (qk_nope_head_dim + qk_rope_head_dim), hidden_size (q_lora_rank null)', kind: 'matrix', sparse: 'all-linear', matrixRole: 'attn' },
  { role: 'kv_a', pattern: 'model.layers.{L}.self_attn.kv_a_proj_with_mqa.weight', layers: 'all', shape: (c) => [c.kvLoraRank + c.qkRopeHeadDim, D(c)], fields: 'kv_lora_rank + qk_rope_head_dim, hidden_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'attn' },
  { role: 'kv_a_norm', pattern: 'model.layers.{L}.self_attn.kv_a_layernorm.weight', layers: 'all', shape: (c) => [c.kvLoraRank], fields: 'kv_lora_rank', kind: 'vector' },
  // Never pruned: MLA consumes kv_b inside the attention kernels (absorbed as W_UK / W_UV), as a dense matrix.
  { role: 'kv_b', pattern: 'model.layers.{L}.self_attn.kv_b_proj.weight', layers: 'all', shape: (c) => [c.numHeads * (c.qkNopeHeadDim + c.vHeadDim), c.kvLoraRank], fields: 'num_attention_heads × (qk_nope_head_dim + v_head_dim), kv_lora_rank', kind: 'matrix', matrixRole: 'kv_b' },
  { role: 'o', pattern: 'model.layers.{L}.self_attn.o_proj.weight', layers: 'all', shape: (c) => [D(c), c.numHeads * c.vHeadDim], fields: 'hidden_size, num_attention_heads × v_head_dim', kind: 'matrix', sparse: 'all-linear', matrixRole: 'attn' },
  { role: 'post_attention_norm', pattern: 'model.layers.{L}.post_attention_layernorm.weight', layers: 'all', shape: (c) => [D(c)], fields: 'hidden_size', kind: 'vector' },
  { role: 'mlp_gate', pattern: 'model.layers.{L}.mlp.gate_proj.weight', layers: 'dense', shape: (c) => [c.intermediateSize, D(c)], fields: 'intermediate_size, hidden_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'mlp', proj: 'gate' },
  { role: 'mlp_up', pattern: 'model.layers.{L}.mlp.up_proj.weight', layers: 'dense', shape: (c) => [c.intermediateSize, D(c)], fields: 'intermediate_size, hidden_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'mlp', proj: 'up' },
  { role: 'mlp_down', pattern: 'model.layers.{L}.mlp.down_proj.weight', layers: 'dense', shape: (c) => [D(c), c.intermediateSize], fields: 'hidden_size, intermediate_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'mlp', proj: 'down' },
  // The router: small next to the experts and sensitive, never pruned.
  { role: 'router', pattern: 'model.layers.{L}.mlp.gate.weight', layers: 'moe', shape: (c) => [c.nRoutedExperts, D(c)], fields: 'n_routed_experts, hidden_size', kind: 'matrix' },
  { role: 'router_bias', pattern: 'model.layers.{L}.mlp.gate.e_score_correction_bias', layers: 'moe', when: (c) => c.topkMethod === 'noaux_tc', loadIfPresent: true, shape: (c) => [c.nRoutedExperts], fields: 'n_routed_experts (topk_method noaux_tc)', kind: 'vector' },
  { role: 'expert_gate', pattern: 'model.layers.{L}.mlp.experts.{E}.gate_proj.weight', layers: 'moe', perExpert: true, shape: (c) => [c.moeIntermediateSize, D(c)], fields: 'moe_intermediate_size, hidden_size', kind: 'matrix', sparse: 'experts', proj: 'gate' },
  { role: 'expert_up', pattern: 'model.layers.{L}.mlp.experts.{E}.up_proj.weight', layers: 'moe', perExpert: true, shape: (c) => [c.moeIntermediateSize, D(c)], fields: 'moe_intermediate_size, hidden_size', kind: 'matrix', sparse: 'experts', proj: 'up' },
  { role: 'expert_down', pattern: 'model.layers.{L}.mlp.experts.{E}.down_proj.weight', layers: 'moe', perExpert: true, shape: (c) => [D(c), c.moeIntermediateSize], fields: 'hidden_size, moe_intermediate_size', kind: 'matrix', sparse: 'experts', proj: 'down' },
  { role: 'shared_gate', pattern: 'model.layers.{L}.mlp.shared_experts.gate_proj.weight', layers: 'moe', when: hasShared, shape: (c) => [sharedI(c), D(c)], fields: 'n_shared_experts × moe_intermediate_size, hidden_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'shared', proj: 'gate' },
  { role: 'shared_up', pattern: 'model.layers.{L}.mlp.shared_experts.up_proj.weight', layers: 'moe', when: hasShared, shape: (c) => [sharedI(c), D(c)], fields: 'n_shared_experts × moe_intermediate_size, hidden_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'shared', proj: 'up' },
  { role: 'shared_down', pattern: 'model.layers.{L}.mlp.shared_experts.down_proj.weight', layers: 'moe', when: hasShared, shape: (c) => [D(c), sharedI(c)], fields: 'hidden_size, n_shared_experts × moe_intermediate_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'shared', proj: 'down' },
  { role: 'final_norm', pattern: 'model.norm.weight', shape: (c) => [D(c)], fields: 'hidden_size', kind: 'vector' },
  { role: 'lm_head', pattern: 'lm_head.weight', when: (c) => !c.tieWordEmbeddings, shape: (c) => [c.vocabSize, D(c)], fields: 'vocab_size, hidden_size', kind: 'embedding', matrixRole: 'lm_head' },
];


/**
 * The Llama-style sparse decoders: GQA attention (q/k/v/o, Qwen2's q/k/v biases, Qwen3's per-head and
 * OLMoE's full-width q/k norms), a softmax router and SwiGLU experts under the family's names.
 */
interface DecoderNames {
  /** The MoE block's module ('mlp' for Qwen/OLMoE, 'block_sparse_moe' for Mixtral/Granite). */
  moe: string;
  /** The router weight under the MoE block. */
  router: string;
  /** Per-expert projection names [gate, up, down] (Mixtral: w1, w3, w2), or null for Granite's stacked input/output_linear. */
  expert: [string, string, string] | null;
}

export type MtpRole = 'mtp_enorm' | 'mtp_hnorm' | 'mtp_eh_proj' | 'mtp_head_norm' | 'mtp_embed' | 'mtp_head';

/**
 * The parts of a Multi-Token Prediction module besides its decoder block (DeepSeek-V3's README_WEIGHTS:
 * `embed_tokens` and `shared_head.head` share the main model's parameters; the release stores copies,
 * a checkpoint may leave them out and the main model's are used).
 */
export const MTP_TABLE: readonly { role: MtpRole; pattern: string; optional?: true; shape: (c: ModelConfig) => number[]; kind: 'vector' | 'matrix' | 'embedding' }[] = [
  { role: 'mtp_embed', pattern: 'model.layers.{L}.embed_tokens.weight', optional: true, shape: (c) => [c.vocabSize, D(c)], kind: 'embedding' },
  { role: 'mtp_enorm', pattern: 'model.layers.{L}.enorm.weight', shape: (c) => [D(c)], kind: 'vector' },
  { role: 'mtp_hnorm', pattern: 'model.layers.{L}.hnorm.weight', shape: (c) => [D(c)], kind: 'vector' },
  { role: 'mtp_eh_proj', pattern: 'model.layers.{L}.eh_proj.weight', shape: (c) => [D(c), 2 * D(c)], kind: 'matrix' },
  { role: 'mtp_head_norm', pattern: 'model.layers.{L}.shared_head.norm.weight', shape: (c) => [D(c)], kind: 'vector' },
  { role: 'mtp_head', pattern: 'model.layers.{L}.shared_head.head.weight', optional: true, shape: (c) => [c.vocabSize, D(c)], kind: 'embedding' },
];

export function mtpTensorName(role: MtpRole, layer: number): string {
  return MTP_TABLE.find((s) => s.role === role)!.pattern.replace('{L}', String(layer));
}

/** Which MTP parts a tensor name is (layer = its layer index), or null. */
export function parseMtpTensorName(name: string): { role: MtpRole; layer: number } | null {
  const m = /^model\.layers\.(\d+)\.(embed_tokens|enorm|hnorm|eh_proj|shared_head\.norm|shared_head\.head)\.weight$/.exec(name);
  if (!m) return null;
  const role = ({ embed_tokens: 'mtp_embed', enorm: 'mtp_enorm', hnorm: 'mtp_hnorm', eh_proj: 'mtp_eh_proj', 'shared_head.norm': 'mtp_head_norm', 'shared_head.head': 'mtp_head' } as const)[m[2] as 'enorm'];
  return { role, layer: +m[1] };
}

/** The MTP layer indices the checkpoint holds (num_hidden_layers + k for each k whose eh_proj is present). */
export function mtpLayersPresent(cfg: ModelConfig, available: (name: string) => boolean): number[] {
  const out: number[] = [];
  for (let k = 0; k < cfg.numNextnPredictLayers; k++) {
    const l = cfg.numLayers + k;
    if (available(mtpTensorName('mtp_eh_proj', l))) out.push(l);
  }
  return out;
}

/**
 * Every tensor of MTP layer `layer` (its decoder block from the main table, then the MTP parts), in
 * checkpoint order; the optional copies only when `available` says the checkpoint has them.
 */
export function* mtpTensors(cfg: ModelConfig, layer: number, available: (name: string) => boolean = () => false): Generator<{ name: string; shape: number[]; kind: 'vector' | 'matrix' | 'embedding'; fields: string }> {
  for (const s of MTP_TABLE) {
    const name = mtpTensorName(s.role, layer);
    if (s.optional && !available(name)) continue;
    yield { name, shape: s.shape(cfg), kind: s.kind, fields: 'hidden_size, vocab_size (MTP layer)' };
  }
  const present = (s: TensorSpec) => !s.when || s.when(cfg);
  for (const s of TENSOR_TABLE) {
    if (!s.layers || !holds(s, cfg, layer) || !present(s)) continue;
    if (s.perExpert) for (let e = 0; e < cfg.nRoutedExperts; e++) yield { name: tensorName(s.role, layer, e), shape: s.shape(cfg), kind: s.kind, fields: s.fields };
    else yield { name: tensorName(s.role, layer), shape: s.shape(cfg), kind: s.kind, fields: s.fields };
  }
}
const hd = (c: ModelConfig) => c.headDim;
function decoderTable(n: DecoderNames): TensorSpec[] {
  const attn = (role: TensorRole, proj: string, rows: (c: ModelConfig) => number, fields: string): TensorSpec =>
    ({ role, pattern: `model.layers.{L}.self_attn.${proj}.weight`, layers: 'all', shape: (c) => [rows(c), D(c)], fields: `${fields}, hidden_size`, kind: 'matrix', sparse: 'all-linear', matrixRole: 'attn' });
  const bias = (role: TensorRole, proj: string, rows: (c: ModelConfig) => number, fields: string): TensorSpec =>
    ({ role, pattern: `model.layers.{L}.self_attn.${proj}.bias`, layers: 'all', when: (c) => c.attentionBias, shape: (c) => [rows(c)], fields, kind: 'vector' });
  const qRows = (c: ModelConfig) => c.numHeads * hd(c), kvRows = (c: ModelConfig) => c.numKvHeads * hd(c);
  const expertSpecs: TensorSpec[] = n.expert
    ? (['gate', 'up', 'down'] as const).map((proj, i): TensorSpec => ({
        role: `expert_${proj}`, pattern: `model.layers.{L}.${n.moe}.experts.{E}.${n.expert![i]}.weight`, layers: 'moe', perExpert: true,
        shape: (c) => (proj === 'down' ? [D(c), c.moeIntermediateSize] : [c.moeIntermediateSize, D(c)]),
        fields: proj === 'down' ? 'hidden_size, expert width' : 'expert width, hidden_size', kind: 'matrix', sparse: 'experts', proj,
      }))
    : [
        { role: 'experts_gate_up', pattern: `model.layers.{L}.${n.moe}.input_linear.weight`, layers: 'moe', shape: (c) => [c.nRoutedExperts, 2 * c.moeIntermediateSize, D(c)], fields: 'num_local_experts, 2 × intermediate_size, hidden_size', kind: 'matrix', stacked: 'gate_up' },
        { role: 'experts_down', pattern: `model.layers.{L}.${n.moe}.output_linear.weight`, layers: 'moe', shape: (c) => [c.nRoutedExperts, D(c), c.moeIntermediateSize], fields: 'num_local_experts, hidden_size, intermediate_size', kind: 'matrix', stacked: 'down' },
      ];
  return [
    { role: 'embed', pattern: 'model.embed_tokens.weight', shape: (c) => [c.vocabSize, D(c)], fields: 'vocab_size, hidden_size', kind: 'embedding' },
    { role: 'input_norm', pattern: 'model.layers.{L}.input_layernorm.weight', layers: 'all', shape: (c) => [D(c)], fields: 'hidden_size', kind: 'vector' },
    attn('q', 'q_proj', qRows, 'num_attention_heads × head_dim'),
    bias('q_bias', 'q_proj', qRows, 'num_attention_heads × head_dim'),
    attn('k', 'k_proj', kvRows, 'num_key_value_heads × head_dim'),
    bias('k_bias', 'k_proj', kvRows, 'num_key_value_heads × head_dim'),
    attn('v', 'v_proj', kvRows, 'num_key_value_heads × head_dim'),
    bias('v_bias', 'v_proj', kvRows, 'num_key_value_heads × head_dim'),
    { role: 'q_norm', pattern: 'model.layers.{L}.self_attn.q_norm.weight', layers: 'all', when: (c) => c.qkNorm !== 'none', shape: (c) => [c.qkNorm === 'head' ? hd(c) : qRows(c)], fields: 'head_dim (qwen3_moe) or num_attention_heads × head_dim (olmoe)', kind: 'vector' },
    { role: 'k_norm', pattern: 'model.layers.{L}.self_attn.k_norm.weight', layers: 'all', when: (c) => c.qkNorm !== 'none', shape: (c) => [c.qkNorm === 'head' ? hd(c) : kvRows(c)], fields: 'head_dim (qwen3_moe) or num_key_value_heads × head_dim (olmoe)', kind: 'vector' },
    { role: 'o', pattern: 'model.layers.{L}.self_attn.o_proj.weight', layers: 'all', shape: (c) => [D(c), qRows(c)], fields: 'hidden_size, num_attention_heads × head_dim', kind: 'matrix', sparse: 'all-linear', matrixRole: 'attn' },
    { role: 'post_attention_norm', pattern: 'model.layers.{L}.post_attention_layernorm.weight', layers: 'all', shape: (c) => [D(c)], fields: 'hidden_size', kind: 'vector' },
    { role: 'mlp_gate', pattern: 'model.layers.{L}.mlp.gate_proj.weight', layers: 'dense', shape: (c) => [c.intermediateSize, D(c)], fields: 'intermediate_size, hidden_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'mlp', proj: 'gate' },
    { role: 'mlp_up', pattern: 'model.layers.{L}.mlp.up_proj.weight', layers: 'dense', shape: (c) => [c.intermediateSize, D(c)], fields: 'intermediate_size, hidden_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'mlp', proj: 'up' },
    { role: 'mlp_down', pattern: 'model.layers.{L}.mlp.down_proj.weight', layers: 'dense', shape: (c) => [D(c), c.intermediateSize], fields: 'hidden_size, intermediate_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'mlp', proj: 'down' },
    { role: 'router', pattern: `model.layers.{L}.${n.moe}.${n.router}.weight`, layers: 'moe', shape: (c) => [c.nRoutedExperts, D(c)], fields: 'number of experts, hidden_size', kind: 'matrix' },
    ...expertSpecs,
    { role: 'shared_gate', pattern: 'model.layers.{L}.mlp.shared_expert.gate_proj.weight', layers: 'moe', when: hasShared, shape: (c) => [sharedI(c), D(c)], fields: 'shared_expert_intermediate_size, hidden_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'shared', proj: 'gate' },
    { role: 'shared_up', pattern: 'model.layers.{L}.mlp.shared_expert.up_proj.weight', layers: 'moe', when: hasShared, shape: (c) => [sharedI(c), D(c)], fields: 'shared_expert_intermediate_size, hidden_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'shared', proj: 'up' },
    { role: 'shared_down', pattern: 'model.layers.{L}.mlp.shared_expert.down_proj.weight', layers: 'moe', when: hasShared, shape: (c) => [D(c), sharedI(c)], fields: 'hidden_size, shared_expert_intermediate_size', kind: 'matrix', sparse: 'all-linear', matrixRole: 'shared', proj: 'down' },
    { role: 'shared_expert_gate', pattern: 'model.layers.{L}.mlp.shared_expert_gate.weight', layers: 'moe', when: (c) => c.sharedExpertGate, shape: (c) => [1, D(c)], fields: 'hidden_size (shared_expert_intermediate_size > 0)', kind: 'matrix' },
    { role: 'final_norm', pattern: 'model.norm.weight', shape: (c) => [D(c)], fields: 'hidden_size', kind: 'vector' },
    { role: 'lm_head', pattern: 'lm_head.weight', when: (c) => !c.tieWordEmbeddings, shape: (c) => [c.vocabSize, D(c)], fields: 'vocab_size, hidden_size', kind: 'embedding', matrixRole: 'lm_head' },
  ];
}

/**
 * GPT-OSS (HF modeling_gpt_oss.py): q/k/v/o with biases, per-head sinks, the router (mlp.router, a
 * linear with bias) and the experts stacked per layer: MXFP4 `*_blocks` [E, rows, K/32, 16] and
 * `*_scales` [E, rows, K/32] (gate_up rows interleave gate and up: row 2i gate i, 2i+1 up i) with f32/bf16
 * biases, or, in checkpoints dequantised to BF16, `gate_up_proj` [E, D, 2I] and `down_proj` [E, I, D]
 * (HF's `x @ W` layout).
 */
function gptOssTable(): TensorSpec[] {
  const qRows = (c: ModelConfig) => c.numHeads * hd(c), kvRows = (c: ModelConfig) => c.numKvHeads * hd(c);
  const I = (c: ModelConfig) => c.moeIntermediateSize, E = (c: ModelConfig) => c.nRoutedExperts;
  const G = (k: number) => Math.ceil(k / 32);
  const mx = (c: ModelConfig) => c.quantization?.method === 'mxfp4';
  const attn = (role: TensorRole, proj: string, rows: (c: ModelConfig) => number, fields: string): TensorSpec[] => [
    { role, pattern: `model.layers.{L}.self_attn.${proj}.weight`, layers: 'all', shape: (c) => (role === 'o' ? [D(c), qRows(c)] : [rows(c), D(c)]), fields: role === 'o' ? `hidden_size, ${fields}` : `${fields}, hidden_size`, kind: 'matrix', sparse: 'all-linear', matrixRole: 'attn' },
    { role: `${role}_bias` as TensorRole, pattern: `model.layers.{L}.self_attn.${proj}.bias`, layers: 'all', shape: (c) => [role === 'o' ? D(c) : rows(c)], fields: role === 'o' ? 'hidden_size' : fields, kind: 'vector' },
  ];
  const ex = (role: TensorRole, name: string, shape: (c: ModelConfig) => number[], fields: string, ossExperts: 'blocks' | 'scales' | 'values', when?: (c: ModelConfig) => boolean): TensorSpec =>
    ({ role, pattern: `model.layers.{L}.mlp.experts.${name}`, layers: 'moe', shape, fields, kind: 'vector', ossExperts, ...(when ? { when } : {}) });
  return [
    { role: 'embed', pattern: 'model.embed_tokens.weight', shape: (c) => [c.vocabSize, D(c)], fields: 'vocab_size, hidden_size', kind: 'embedding' },
    { role: 'input_norm', pattern: 'model.layers.{L}.input_layernorm.weight', layers: 'all', shape: (c) => [D(c)], fields: 'hidden_size', kind: 'vector' },
    ...attn('q', 'q_proj', qRows, 'num_attention_heads × head_dim'),
    ...attn('k', 'k_proj', kvRows, 'num_key_value_heads × head_dim'),
    ...attn('v', 'v_proj', kvRows, 'num_key_value_heads × head_dim'),
    ...attn('o', 'o_proj', qRows, 'num_attention_heads × head_dim'),
    { role: 'sinks', pattern: 'model.layers.{L}.self_attn.sinks', layers: 'all', shape: (c) => [c.numHeads], fields: 'num_attention_heads', kind: 'vector' },
    { role: 'post_attention_norm', pattern: 'model.layers.{L}.post_attention_layernorm.weight', layers: 'all', shape: (c) => [D(c)], fields: 'hidden_size', kind: 'vector' },
    { role: 'router', pattern: 'model.layers.{L}.mlp.router.weight', layers: 'moe', shape: (c) => [E(c), D(c)], fields: 'num_local_experts, hidden_size', kind: 'matrix' },
    { role: 'router_linear_bias', pattern: 'model.layers.{L}.mlp.router.bias', layers: 'moe', shape: (c) => [E(c)], fields: 'num_local_experts', kind: 'vector' },
    ex('oss_gate_up_blocks', 'gate_up_proj_blocks', (c) => [E(c), 2 * I(c), G(D(c)), 16], 'num_local_experts, 2 × intermediate_size, hidden_size / 32, 16', 'blocks', mx),
    ex('oss_gate_up_scales', 'gate_up_proj_scales', (c) => [E(c), 2 * I(c), G(D(c))], 'num_local_experts, 2 × intermediate_size, hidden_size / 32', 'scales', mx),
    ex('oss_gate_up', 'gate_up_proj', (c) => [E(c), D(c), 2 * I(c)], 'num_local_experts, hidden_size, 2 × intermediate_size (unquantised)', 'values', (c) => !mx(c)),
    ex('oss_gate_up_bias', 'gate_up_proj_bias', (c) => [E(c), 2 * I(c)], 'num_local_experts, 2 × intermediate_size', 'values'),
    ex('oss_down_blocks', 'down_proj_blocks', (c) => [E(c), D(c), G(I(c)), 16], 'num_local_experts, hidden_size, intermediate_size / 32, 16', 'blocks', mx),
    ex('oss_down_scales', 'down_proj_scales', (c) => [E(c), D(c), G(I(c))], 'num_local_experts, hidden_size, intermediate_size / 32', 'scales', mx),
    ex('oss_down', 'down_proj', (c) => [E(c), I(c), D(c)], 'num_local_experts, intermediate_size, hidden_size (unquantised)', 'values', (c) => !mx(c)),
    ex('oss_down_bias', 'down_proj_bias', (c) => [E(c), D(c)], 'num_local_experts, hidden_size', 'values'),
    { role: 'final_norm', pattern: 'model.norm.weight', shape: (c) => [D(c)], fields: 'hidden_size', kind: 'vector' },
    { role: 'lm_head', pattern: 'lm_head.weight', when: (c) => !c.tieWordEmbeddings, shape: (c) => [c.vocabSize, D(c)], fields: 'vocab_size, hidden_size', kind: 'embedding', matrixRole: 'lm_head' },
  ];
}

/** Each family's tensor table (Hugging Face names of the published checkpoints). */
export const FAMILY_TABLES: Readonly<Record<Family, readonly TensorSpec[]>> = {
  deepseek: TENSOR_TABLE,
  qwen2_moe: decoderTable({ moe: 'mlp', router: 'gate', expert: ['gate_proj', 'up_proj', 'down_proj'] }),
  qwen3_moe: decoderTable({ moe: 'mlp', router: 'gate', expert: ['gate_proj', 'up_proj', 'down_proj'] }),
  olmoe: decoderTable({ moe: 'mlp', router: 'gate', expert: ['gate_proj', 'up_proj', 'down_proj'] }),
  mixtral: decoderTable({ moe: 'block_sparse_moe', router: 'gate', expert: ['w1', 'w3', 'w2'] }),
  granitemoe: decoderTable({ moe: 'block_sparse_moe', router: 'router.layer', expert: null }),
  gpt_oss: gptOssTable(),
};

/** The tensor table of the config's family. */
export const tableOf = (cfg: Pick<ModelConfig, 'family'>): readonly TensorSpec[] => FAMILY_TABLES[cfg.family];

const SPEC = new Map(TENSOR_TABLE.map((s) => [s.role, s]));
const FAMILY_SPECS = new Map(Object.entries(FAMILY_TABLES).map(([f, t]) => [f, new Map(t.map((s) => [s.role, s]))]));

/** The name of tensor `role` (of `layer`, and `expert` for routed experts) in `cfg`'s family (default DeepSeek's names). */
export function tensorName(role: TensorRole, layer: number | string = -1, expert: number | string = -1, cfg?: Pick<ModelConfig, 'family'>): string {
  const spec = cfg ? FAMILY_SPECS.get(cfg.family)!.get(role) : SPEC.get(role);
  if (!spec) throw new Error(`tensorName: the ${cfg?.family ?? 'deepseek'} table has no '${role}' tensor`);
  return spec.pattern.replace('{L}', String(layer)).replace('{E}', String(expert));
}

/** Whether the config's family has a tensor of `role`. */
export const hasRole = (cfg: Pick<ModelConfig, 'family'>, role: TensorRole): boolean => FAMILY_SPECS.get(cfg.family)!.has(role);

/** The MoE layers of the config, ascending. */
export function moeLayers(cfg: ModelConfig): number[] {
  return Array.from({ length: cfg.numLayers }, (_, i) => i).filter((i) => isMoeLayer(cfg, i));
}

const holds = (s: TensorSpec, cfg: ModelConfig, layer: number) =>
  s.layers === 'all' || (s.layers === 'moe') === isMoeLayer(cfg, layer);

/** One tensor of a model: its name, shape and the table entry it comes from. */
export interface ModelTensor {
  name: string;
  shape: number[];
  fields: string;
  kind: TensorSpec['kind'];
  spec: TensorSpec;
  /** Layer index, -1 for model-level tensors. */
  layer: number;
  /** Routed expert index, -1 otherwise. */
  expert: number;
}

/**
 * Every tensor the config implies, in model order (lazily: a hostile config cannot make a huge list).
 * `present(spec)` decides optional entries (default: the entry's `when`).
 */
export function* modelTensors(cfg: ModelConfig, present: (s: TensorSpec, name: string) => boolean = (s) => !s.when || s.when(cfg)): Generator<ModelTensor> {
  const one = (s: TensorSpec, layer: number, expert: number): ModelTensor | null => {
    const name = s.pattern.replace('{L}', String(layer)).replace('{E}', String(expert));
    if (!present(s, name)) return null;
    return { name, shape: s.shape(cfg), fields: s.fields, kind: s.kind, spec: s, layer, expert };
  };
  const table = tableOf(cfg);
  const model = table.filter((s) => !s.layers);
  const layerSpecs = table.filter((s) => s.layers);
  for (const s of model.filter((s) => s.role === 'embed')) { const t = one(s, -1, -1); if (t) yield t; }
  for (let l = 0; l < cfg.numLayers; l++) yield* layerTensors(cfg, l, present);
  for (const s of model.filter((s) => s.role !== 'embed')) { const t = one(s, -1, -1); if (t) yield t; }
}

/** The tensors of decoder layer `l` (a main layer, or an MTP module's block at num_hidden_layers + k), in model order. */
export function* layerTensors(cfg: ModelConfig, l: number, present: (s: TensorSpec, name: string) => boolean = (s) => !s.when || s.when(cfg)): Generator<ModelTensor> {
  const one = (s: TensorSpec, expert: number): ModelTensor | null => {
    const name = s.pattern.replace('{L}', String(l)).replace('{E}', String(expert));
    if (!present(s, name)) return null;
    return { name, shape: s.shape(cfg), fields: s.fields, kind: s.kind, spec: s, layer: l, expert };
  };
  const specs = tableOf(cfg).filter((s) => s.layers && holds(s, cfg, l));
  for (let i = 0; i < specs.length; i++) {
    if (!specs[i].perExpert) { const t = one(specs[i], -1); if (t) yield t; continue; }
    // Consecutive per-expert entries run expert by expert (gate, up, down of expert 0, then of 1, …).
    let j = i;
    while (j < specs.length && specs[j].perExpert) j++;
    for (let e = 0; e < cfg.nRoutedExperts; e++) for (let k = i; k < j; k++) { const t = one(specs[k], e); if (t) yield t; }
    i = j - 1;
  }
}

/** Every tensor the model needs, in model order (what checkTensorsAgainstConfig requires). */
export const expectedTensors = (cfg: ModelConfig) => modelTensors(cfg);

/** Every tensor the model needs → its shape ([out, in] for matrices). */
export function expectedTensorShapes(cfg: ModelConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  for (const t of modelTensors(cfg)) m.set(t.name, t.shape);
  return m;
}

/** Number of tensors expectedTensors yields, without building them. */
export function expectedTensorCount(cfg: ModelConfig): number {
  const present = (s: TensorSpec) => !s.when || s.when(cfg);
  const table = tableOf(cfg);
  let n = table.filter((s) => !s.layers && present(s)).length;
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const s of table) if (s.layers && holds(s, cfg, l) && present(s)) n += s.perExpert ? cfg.nRoutedExperts : 1;
  }
  return n;
}

/**
 * Every tensor a load reads for the config, given which names the checkpoint holds: the table's tensors
 * (and optional ones the checkpoint has), each FP8 weight with its scale, each pre-pruned weight as its
 * stored parts (SPARSE_SUFFIXES of sparse/tensors.ts).
 */
export function tensorsToLoad(cfg: ModelConfig, available: (name: string) => boolean, sparseSuffixes: readonly string[]): string[] {
  const out: string[] = [];
  for (const t of modelTensors(cfg, (s, name) => (s.loadIfPresent ? available(name) : !s.when || s.when(cfg)))) {
    const n = t.name;
    const scale = scaleInvName(n);
    if (scale !== n && available(scale)) out.push(n, scale);
    else if (!available(n) && available(`${n}.sparse_config`)) out.push(...sparseSuffixes.map((s) => n + s).filter(available));
    else out.push(n);
  }
  for (const l of mtpLayersPresent(cfg, available)) {
    for (const t of mtpTensors(cfg, l, available)) {
      const scale = scaleInvName(t.name);
      if (t.kind === 'matrix' && available(scale)) out.push(t.name, scale);
      else if (available(t.name)) out.push(t.name);
    }
  }
  return out;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
// Every family's patterns (a pattern two families share names the same role in both; the first family's entry is kept).
const PARSERS = [...new Map(Object.values(FAMILY_TABLES).flat().reverse().map((s) => [s.pattern, s])).values()].reverse().map((s) => ({
  spec: s,
  re: new RegExp(`^${escape(s.pattern).replace('\\{L\\}', '(\\d+)').replace('\\{E\\}', '(\\d+)')}$`),
}));

/** The table entry, layer and expert of a tensor name; null for names outside the table (scales, MTP extras still match by pattern). */
export function parseTensorName(name: string): { spec: TensorSpec; layer: number; expert: number } | null {
  for (const { spec, re } of PARSERS) {
    const m = re.exec(name);
    if (m) return { spec, layer: spec.layers ? +m[1] : -1, expert: spec.perExpert ? +m[2] : -1 };
  }
  return null;
}

/** Whether the tensor `name` (Hugging Face naming of any family) is pruned under `apply`. */
export function isSparsityTarget(name: string, apply: SparsityOption['apply']): boolean {
  const sparse = parseTensorName(name)?.spec.sparse;
  return apply === 'experts' ? sparse === 'experts' : sparse !== undefined;
}

/** Whether `name` is a linear projection weight: attention (q*, kv_a_proj_with_mqa, kv_b, o), MLP, routed or shared expert `*_proj`; not the router. */
export function isProjection(name: string): boolean {
  const spec = parseTensorName(name)?.spec;
  return spec !== undefined && (spec.sparse !== undefined || spec.role === 'kv_b');
}

const FLOAT_DTYPES: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16']);
const SCALE_DTYPES: ReadonlySet<string> = new Set(['F32', 'BF16', 'F16']);
const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * Checks every tensor the config implies against the checkpoint's tensor table, before any GPU
 * allocation: a missing tensor (FormatError), a wrong shape (ShapeError naming the tensor, the config
 * fields, expected and actual), an unsupported dtype (UnsupportedError). FP8 matrices need their
 * `weight_scale_inv` sibling of shape [ceil(out/b0), ceil(in/b1)]. MTP layers the checkpoint holds
 * (model.layers.{numLayers + k}.*, found by their eh_proj) are checked the same way; other extra tensors are ignored.
 */
export function checkTensorsAgainstConfig(cfg: ModelConfig, tensors: Map<string, { dtype: SafetensorsDtype | string; shape: number[] }>): void {
  const [b0, b1] = fp8BlockSize(cfg);
  // MTP layers the checkpoint holds (by their eh_proj) must be complete; absent ones are fine.
  const mtp = mtpLayersPresent(cfg, (n) => tensors.has(n)).flatMap((l) => [...mtpTensors(cfg, l, (n) => tensors.has(n))]);
  for (const e of [...expectedTensors(cfg), ...mtp]) {
    const t = tensors.get(e.name);
    if (!t && e.kind === 'matrix' && tensors.has(`${e.name}.sparse_config`)) {
      checkSparseTensors(e.name, e.shape, tensors);
      continue;
    }
    if (!t) throw new FormatError(`checkpoint: tensor '${e.name}' is missing (config.json implies shape ${fmt(e.shape)} from ${e.fields})`, { tensor: e.name, expected: e.shape });
    if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
      throw new ShapeError(`checkpoint: tensor '${e.name}' has shape ${fmt(t.shape)}, but config.json (${e.fields}) implies ${fmt(e.shape)}`);
    }
    const packed = 'spec' in e ? (e as ModelTensor).spec.ossExperts : undefined;
    if (packed === 'blocks' || packed === 'scales') {
      if (t.dtype !== 'U8') throw new UnsupportedError(`checkpoint: MXFP4 tensor '${e.name}' has dtype ${t.dtype}; expected U8 (packed FP4 blocks or E8M0 scales)`, { tensor: e.name, dtype: t.dtype });
    } else if (t.dtype === 'F8_E4M3') {
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
    if (!dtype.split('|').includes(t.dtype) || t.shape.length !== rank) throw new FormatError(`checkpoint: '${name}${suffix}' is ${t.dtype} ${fmt(t.shape)}, expected ${dtype.replace('|', ' or ')} of rank ${rank}`, { tensor: name + suffix });
    return t;
  };
  const c = part('.sparse_config', 'U32', 1);
  if (c.shape[0] !== 5) throw new FormatError(`checkpoint: '${name}.sparse_config' has shape ${fmt(c.shape)}, expected [5]`, { tensor: name + '.sparse_config' });
  for (const suffix of ['.sparse_values', '.sparse_meta']) {
    const t = part(suffix, suffix === '.sparse_values' ? 'F32|F16' : 'U32', 2);
    if (t.shape[0] !== shape[0]) throw new ShapeError(`checkpoint: '${name}${suffix}' has ${t.shape[0]} rows, but config.json implies ${shape[0]}`);
  }
}
