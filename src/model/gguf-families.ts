/**
 * GGUF files of the Llama-style MoE families in llama.cpp's layouts (what its convert_hf_to_gguf.py
 * writes), so that llama.cpp can run the same weights as webmoe (the cross-check of
 * test/unit/llama-cpp-families.test.ts):
 *
 *   model_type   llama.cpp arch   RoPE in llama.cpp        q/k rows
 *   qwen2_moe    qwen2moe         NEOX (= HF rotate_half)  as in HF
 *   qwen3_moe    qwen3moe         NEOX                     as in HF
 *   olmoe        olmoe            NEOX                     as in HF
 *   mixtral      llama            NORM (adjacent pairs)    permuted per head (LlamaModel.permute)
 *   granitemoe   granitemoe       NORM                     permuted per head
 *   gpt_oss      gpt-oss          NEOX (YaRN)              as in HF; experts MXFP4 (see GPT-OSS below)
 *
 * NORM-rope archs get q_proj / k_proj rows permuted per head from HF's halves layout to adjacent pairs,
 * exactly as the converter's LlamaModel.permute does, which makes llama.cpp's interleaved RoPE compute HF's
 * rotate_half. Experts are stacked per layer (ffn_{gate,up,down}_exps; Granite's input_linear split into
 * gate and up); Qwen2's shared expert becomes ffn_*_shexp with ffn_gate_inp_shexp [n_embd].
 * `webmoe convert --to gguf` writes them (gguf-convert.ts), and webmoe reads them back (familyConfigFromGguf +
 * familyTensorMap, used by gguf-deepseek2.ts openGgufCheckpoint): q/k rows of NORM-rope files un-permuted,
 * stacked experts sliced per expert (Granite's re-stacked into input_linear / output_linear).
 */
import { ConfigError, FormatError, UnsupportedError } from '../errors';
import { ggmlTypeByName, quantize, type DecodableType } from '../formats/gguf-blocks';
import { kv, type GgufTensorToWrite } from '../formats/gguf-write';
import { metaArray, metaBool, metaNumber, metaString, type GgufKv, type GgufModelHeader, type GgufSplitTensor } from '../formats/gguf';
import { appendTokenizerMetadata } from '../formats/gguf-tokenizer';
import type { ModelConfig } from './config';

/** A matrix's GGUF type by name and ne (gguf-deepseek2.ts GgufTypeChooser, restated to keep this file below it). */
type GgufTypeChooser = (name: string, ne: number[]) => DecodableType;
const blockWeights = (t: DecodableType) => ggmlTypeByName(t)!.blockSize;

/** llama.cpp's architecture name for GPT-OSS (LLM_ARCH_OPENAI_MOE). */
export const GPT_OSS_ARCH = 'gpt-oss';

const ARCH: Partial<Record<ModelConfig['family'], string>> = { qwen2_moe: 'qwen2moe', qwen3_moe: 'qwen3moe', olmoe: 'olmoe', mixtral: 'llama', granitemoe: 'granitemoe', gpt_oss: 'gpt-oss' };
/** llama.cpp archs whose RoPE rotates adjacent pairs (LLAMA_ROPE_TYPE_NORM): the converter permutes q/k for them. */
const NORM_ROPE = new Set(['llama', 'granitemoe']);

export function ggufArchOf(cfg: ModelConfig): string {
  const a = ARCH[cfg.family];
  if (!a) throw new UnsupportedError(`GGUF: no llama.cpp layout for model_type '${cfg.modelType}' here (deepseek2 is gguf-deepseek2.ts)`);
  return a;
}

/** llama.cpp metadata of a family config, with the tokenizer's keys when given. */
export function familyGgufMetadata(cfg: ModelConfig, tokenizer?: { json: unknown; config: Record<string, unknown> | null }): [string, GgufKv][] {
  if (cfg.family === 'gpt_oss') return gptOssGgufMetadata(cfg, tokenizer);
  const arch = ggufArchOf(cfg);
  const a = (k: string) => `${arch}.${k}`;
  const m: [string, GgufKv][] = [
    ['general.architecture', kv.str(arch)],
    [a('context_length'), kv.u32(cfg.maxPositionEmbeddings)],
    [a('embedding_length'), kv.u32(cfg.hiddenSize)],
    [a('block_count'), kv.u32(cfg.numLayers)],
    // Dense FFN width (Qwen) or, where every layer is MoE, the expert width (Mixtral/OLMoE/Granite converters write intermediate_size).
    [a('feed_forward_length'), kv.u32(cfg.intermediateSize)],
    [a('attention.head_count'), kv.u32(cfg.numHeads)],
    [a('attention.head_count_kv'), kv.u32(cfg.numKvHeads)],
    [a('attention.key_length'), kv.u32(cfg.headDim)],
    [a('attention.value_length'), kv.u32(cfg.headDim)],
    [a('rope.dimension_count'), kv.u32(cfg.headDim)],
    [a('rope.freq_base'), kv.f32(cfg.ropeTheta)],
    [a('attention.layer_norm_rms_epsilon'), kv.f32(cfg.rmsNormEps)],
    [a('expert_count'), kv.u32(cfg.nRoutedExperts)],
    [a('expert_used_count'), kv.u32(cfg.numExpertsPerTok)],
    [a('vocab_size'), kv.u32(cfg.vocabSize)],
  ];
  if (cfg.family === 'qwen2_moe' || cfg.family === 'qwen3_moe') m.push([a('expert_feed_forward_length'), kv.u32(cfg.moeIntermediateSize)]);
  if (cfg.family === 'qwen2_moe') m.push([a('expert_shared_feed_forward_length'), kv.u32(cfg.sharedExpertIntermediateSize)]);
  if (cfg.family === 'qwen3_moe' || cfg.family === 'qwen2_moe' || cfg.family === 'olmoe') m.push([a('expert_weights_norm'), kv.bool(cfg.normTopkProb)]);
  if (cfg.slidingWindow !== null && cfg.layerTypes) {
    // llama.cpp's keys for a window (LLM_KV_ATTENTION_SLIDING_WINDOW, _PATTERN as one bool a layer), which
    // its llama, qwen2moe and qwen3moe archs do not read: they keep webmoe's reading of the file exact.
    m.push([a('attention.sliding_window'), kv.u32(cfg.slidingWindow)]);
    m.push([a('attention.sliding_window_pattern'), { type: 'ARRAY', value: { type: 'BOOL', values: Uint8Array.from(cfg.layerTypes, (t) => +(t === 'sliding_attention')) } }]);
  }
  if (cfg.family === 'granitemoe') {
    const x = cfg.multipliers;
    m.push([a('attention.scale'), kv.f32(x.attention!)], [a('embedding_scale'), kv.f32(x.embedding)], [a('residual_scale'), kv.f32(x.residual)], [a('logit_scale'), kv.f32(x.logitsScaling)]);
  }
  return appendTokenizerMetadata(m, tokenizer, { vocabSize: cfg.vocabSize, bos: cfg.bosTokenId, eos: cfg.eosTokenIds[0] ?? null });
}

/** convert_hf_to_gguf's LlamaModel.permute: per head, rows [2, d/2] (halves) → [d/2, 2] (adjacent pairs). */
export function permuteRopeRows(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols, d = rows / heads, half = d / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = h * d + j * half + i, to = h * d + 2 * i + j;
        out.set(w.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

const GLOBAL: Record<string, string> = { 'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight', 'lm_head.weight': 'output.weight' };
const LAYER: Record<string, string> = {
  'input_layernorm.weight': 'attn_norm.weight', 'post_attention_layernorm.weight': 'ffn_norm.weight',
  'self_attn.q_proj.weight': 'attn_q.weight', 'self_attn.k_proj.weight': 'attn_k.weight', 'self_attn.v_proj.weight': 'attn_v.weight', 'self_attn.o_proj.weight': 'attn_output.weight',
  'self_attn.q_proj.bias': 'attn_q.bias', 'self_attn.k_proj.bias': 'attn_k.bias', 'self_attn.v_proj.bias': 'attn_v.bias',
  'self_attn.q_norm.weight': 'attn_q_norm.weight', 'self_attn.k_norm.weight': 'attn_k_norm.weight',
  'mlp.gate.weight': 'ffn_gate_inp.weight', 'block_sparse_moe.gate.weight': 'ffn_gate_inp.weight', 'block_sparse_moe.router.layer.weight': 'ffn_gate_inp.weight',
  'mlp.shared_expert.gate_proj.weight': 'ffn_gate_shexp.weight', 'mlp.shared_expert.up_proj.weight': 'ffn_up_shexp.weight', 'mlp.shared_expert.down_proj.weight': 'ffn_down_shexp.weight',
  'mlp.shared_expert_gate.weight': 'ffn_gate_inp_shexp.weight',
  'mlp.gate_proj.weight': 'ffn_gate.weight', 'mlp.up_proj.weight': 'ffn_up.weight', 'mlp.down_proj.weight': 'ffn_down.weight',
};
const EXPERT_PROJ: Record<string, 'gate' | 'up' | 'down'> = { gate_proj: 'gate', up_proj: 'up', down_proj: 'down', w1: 'gate', w3: 'up', w2: 'down' };

/**
 * The GGUF tensors of a family checkpoint (HF names → llama.cpp names, experts stacked). Matrices are
 * `type` when their rows are whole blocks of it, else F32; vectors and the routers stay F32.
 */
export async function familyGguf(cfg: ModelConfig, readF32: (name: string) => Promise<Float32Array>, names: Iterable<string>, type: DecodableType | GgufTypeChooser = 'F32'): Promise<GgufTensorToWrite[]> {
  const arch = ggufArchOf(cfg);
  const out: GgufTensorToWrite[] = [];
  const put = (name: string, ne: number[], data: Float32Array, matrix: boolean) => {
    const want = typeof type === 'function' ? type(name, ne) : type;
    const t: DecodableType = matrix && !name.includes('ffn_gate_inp') && ne[0] % blockWeights(want) === 0 ? want : 'F32';
    out.push({ name, type: t, ne, data: quantize(t, data) });
  };
  const D = cfg.hiddenSize, I = cfg.moeIntermediateSize;
  const experts = new Map<string, Float32Array[]>();
  const stack = (L: number, proj: string, e: number, f: Float32Array) => {
    const key = `${L}.${proj}`;
    if (!experts.has(key)) experts.set(key, []);
    experts.get(key)![e] = f;
  };
  for (const name of names) {
    const f = await readF32(name);
    if (GLOBAL[name]) {
      const isMatrix = name !== 'model.norm.weight';
      put(GLOBAL[name], isMatrix ? [D, f.length / D] : [f.length], f, isMatrix);
      continue;
    }
    const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
    if (!m) throw new FormatError(`familyGguf: no GGUF name for '${name}'`);
    const L = Number(m[1]), rest = m[2];
    const ex = /^(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(\w+)\.weight$/.exec(rest);
    if (ex) { stack(L, EXPERT_PROJ[ex[2]], Number(ex[1]), f); continue; }
    if (rest === 'block_sparse_moe.input_linear.weight' || rest === 'block_sparse_moe.output_linear.weight') {
      const down = rest.includes('output'), n = down ? D * I : 2 * I * D;
      for (let e = 0; e < cfg.nRoutedExperts; e++) {
        const w = f.subarray(e * n, (e + 1) * n);
        if (down) stack(L, 'down', e, w);
        else { stack(L, 'gate', e, w.subarray(0, I * D)); stack(L, 'up', e, w.subarray(I * D)); }
      }
      continue;
    }
    const g = LAYER[rest];
    if (!g) throw new FormatError(`familyGguf: no GGUF name for '${name}'`);
    let data = f;
    if (NORM_ROPE.has(arch) && (rest === 'self_attn.q_proj.weight' || rest === 'self_attn.k_proj.weight')) data = permuteRopeRows(f, rest.startsWith('self_attn.q') ? cfg.numHeads : cfg.numKvHeads, D);
    const isVector = g.endsWith('.bias') || g.endsWith('norm.weight') || g === 'ffn_gate_inp_shexp.weight';
    const cols = rest === 'self_attn.o_proj.weight' ? cfg.numHeads * cfg.headDim : rest.endsWith('down_proj.weight') ? f.length / D : D;
    put(`blk.${L}.${g}`, isVector ? [f.length] : [cols, f.length / cols], data, !isVector);
  }
  for (const [key, list] of experts) {
    const [L, proj] = key.split('.');
    const [rows, inner] = proj === 'down' ? [D, I] : [I, D];
    const all = new Float32Array(list.length * rows * inner);
    list.forEach((f, e) => all.set(f, e * rows * inner));
    put(`blk.${L}.ffn_${proj}_exps.weight`, [inner, rows, list.length], all, true);
  }
  return out;
}

// ------------------------------------------------------------------------------------------ reading

const FAMILY_OF_ARCH: Record<string, 'qwen2_moe' | 'qwen3_moe' | 'olmoe' | 'mixtral' | 'granitemoe' | 'gpt_oss'> = { qwen2moe: 'qwen2_moe', qwen3moe: 'qwen3_moe', olmoe: 'olmoe', llama: 'mixtral', granitemoe: 'granitemoe', [GPT_OSS_ARCH]: 'gpt_oss' };

/** Whether webmoe reads GGUF files of `arch` through this file. */
export const isFamilyGgufArch = (arch: string | undefined): boolean => arch !== undefined && arch in FAMILY_OF_ARCH;

/** The shortest decimal that rounds to the same f32 (GGUF floats are f32; config.json had the decimal). */
function f32Decimal(x: number): number {
  for (let p = 1; p <= 9; p++) {
    const d = Number(x.toPrecision(p));
    if (Math.fround(d) === x) return d;
  }
  return x;
}

/** HF config.json fields from a family GGUF's metadata (what parseConfig reads). */
export function familyConfigFromGguf(h: { metadata: Map<string, GgufKv>; tensors: Map<string, GgufSplitTensor> }): Record<string, unknown> {
  const arch = metaString(h, 'general.architecture')!;
  if (arch === GPT_OSS_ARCH) return gptOssConfigFromGguf(h);
  const modelType = FAMILY_OF_ARCH[arch];
  if (!modelType) throw new UnsupportedError(`GGUF architecture '${arch}' is not one webmoe reads`, { architecture: arch });
  const num = (k: string) => {
    const v = metaNumber(h, `${arch}.${k}`);
    return v !== undefined && h.metadata.get(`${arch}.${k}`)!.type === 'FLOAT32' ? f32Decimal(v) : v;
  };
  const need = (k: string) => {
    const v = num(k);
    if (v === undefined) throw new ConfigError(`${arch}.${k}`, 'missing from the GGUF metadata');
    return v;
  };
  const experts = num('expert_count') ?? 0;
  if (!experts) throw new UnsupportedError(`GGUF '${arch}' file without experts (a dense model): webmoe runs MoE models`, { architecture: arch });
  const heads = need('attention.head_count'), hidden = need('embedding_length');
  const headDim = num('attention.key_length') ?? num('rope.dimension_count') ?? hidden / heads;
  const qwen = modelType === 'qwen2_moe' || modelType === 'qwen3_moe';
  const ffn = need('feed_forward_length');
  const c: Record<string, unknown> = {
    model_type: modelType,
    vocab_size: num('vocab_size') ?? (h.metadata.get('tokenizer.ggml.tokens')?.value as unknown[] | undefined)?.length,
    hidden_size: hidden,
    intermediate_size: qwen ? ffn : num('expert_feed_forward_length') ?? ffn,
    num_hidden_layers: need('block_count'),
    num_attention_heads: heads,
    num_key_value_heads: num('attention.head_count_kv') ?? heads,
    num_experts_per_tok: need('expert_used_count'),
    rms_norm_eps: need('attention.layer_norm_rms_epsilon'),
    rope_theta: num('rope.freq_base') ?? 10000,
    max_position_embeddings: need('context_length'),
    bos_token_id: metaNumber(h, 'tokenizer.ggml.bos_token_id') ?? null,
    eos_token_id: metaNumber(h, 'tokenizer.ggml.eos_token_id') ?? null,
    // llama.cpp's converters leave output.weight out for a tied head.
    tie_word_embeddings: !h.tensors.has('output.weight'),
  };
  if (modelType === 'mixtral' || modelType === 'granitemoe') c.num_local_experts = experts;
  else c.num_experts = experts;
  if (qwen) c.moe_intermediate_size = need('expert_feed_forward_length');
  if (modelType === 'qwen3_moe' || headDim !== hidden / heads) c.head_dim = headDim;
  if (modelType === 'qwen2_moe') c.shared_expert_intermediate_size = num('expert_shared_feed_forward_length') ?? 0;
  if (modelType !== 'mixtral' && modelType !== 'granitemoe') c.norm_topk_prob = metaBool(h, `${arch}.expert_weights_norm`) ?? modelType === 'qwen3_moe';
  const window = num('attention.sliding_window');
  if (window !== undefined) {
    c.sliding_window = window;
    if (qwen) c.use_sliding_window = true;
    const pattern = metaArray(h, `${arch}.attention.sliding_window_pattern`);
    if (modelType === 'qwen2_moe' && pattern?.type === 'BOOL') c.layer_types = Array.from(pattern.values as Uint8Array, (b) => (b ? 'sliding_attention' : 'full_attention'));
  }
  if (modelType === 'granitemoe') {
    c.attention_multiplier = need('attention.scale');
    c.embedding_multiplier = num('embedding_scale') ?? 1;
    c.residual_multiplier = num('residual_scale') ?? 1;
    c.logits_scaling = num('logit_scale') ?? 1;
  }
  return c;
}

/** How one HF tensor is made from a family GGUF's tensors. */
export type FamilySource =
  | { kind: 'plain'; t: GgufSplitTensor }
  | { kind: 'expert'; t: GgufSplitTensor; e: number }
  /** q_proj / k_proj of a NORM-rope file: rows back from adjacent pairs to halves. */
  | { kind: 'unpermute'; t: GgufSplitTensor; heads: number }
  /** Granite's input_linear [E, 2I, D] (gate and up exps) or output_linear [E, D, I] (down exps). */
  | { kind: 'restack'; parts: GgufSplitTensor[] }
  /**
   * GPT-OSS's MXFP4 experts as HF stores them (U8): blocks or scales of the parts' block_mxfp4 rows
   * (`rows` each, `groups` blocks a row), interleaved (gate, up → gate_up) — hfMxfp4FromGgml.
   */
  | { kind: 'mxfp4'; parts: GgufSplitTensor[]; what: 'blocks' | 'scales'; rows: number; groups: number }
  /** GPT-OSS's gate_up bias [E, 2I] from the gate and up exps biases [E, I], rows interleaved. */
  | { kind: 'interleave'; parts: GgufSplitTensor[]; rows: number };

/** HF tensor name → how to build it, for every tensor of a family GGUF. */
export function familyTensorMap(h: GgufModelHeader, cfg: ModelConfig): Map<string, { shape: number[]; src: FamilySource }> {
  if (cfg.family === 'gpt_oss') return gptOssTensorMap(h, cfg);
  const arch = ggufArchOf(cfg);
  const out = new Map<string, { shape: number[]; src: FamilySource }>();
  const shapeOf = (ne: number[]) => ne.slice().reverse();
  const inverse = new Map<string, string>();
  for (const [hf, g] of Object.entries(LAYER)) {
    // One GGUF name, the family's HF name (the router's depends on the family).
    if (g === 'ffn_gate_inp.weight') continue;
    inverse.set(g, hf);
  }
  const router = cfg.family === 'mixtral' ? 'block_sparse_moe.gate.weight' : cfg.family === 'granitemoe' ? 'block_sparse_moe.router.layer.weight' : 'mlp.gate.weight';
  const expertName = (L: number, e: number, proj: string) => cfg.family === 'mixtral'
    ? `model.layers.${L}.block_sparse_moe.experts.${e}.${{ gate: 'w1', up: 'w3', down: 'w2' }[proj]}.weight`
    : `model.layers.${L}.mlp.experts.${e}.${proj}_proj.weight`;
  const granite = new Map<number, Record<string, GgufSplitTensor>>();
  for (const t of h.tensors.values()) {
    const g = Object.entries(GLOBAL).find(([, v]) => v === t.name)?.[0];
    if (g) { out.set(g, { shape: shapeOf(t.ne), src: { kind: 'plain', t } }); continue; }
    const m = /^blk\.(\d+)\.(.+)$/.exec(t.name);
    if (!m) throw new FormatError(`GGUF tensor '${t.name}' is not part of the ${arch} layout`, { tensor: t.name });
    const L = Number(m[1]), suffix = m[2];
    if (suffix === 'ffn_gate_inp.weight') { out.set(`model.layers.${L}.${router}`, { shape: shapeOf(t.ne), src: { kind: 'plain', t } }); continue; }
    if (suffix === 'ffn_gate_inp_shexp.weight') { out.set(`model.layers.${L}.mlp.shared_expert_gate.weight`, { shape: [1, t.ne[0]], src: { kind: 'plain', t } }); continue; }
    const x = /^ffn_(gate|up|down)_exps\.weight$/.exec(suffix);
    if (x && t.ne.length === 3) {
      if (cfg.family === 'granitemoe') { granite.set(L, { ...granite.get(L), [x[1]]: t }); continue; }
      const [inner, rows, E] = t.ne;
      for (let e = 0; e < E; e++) out.set(expertName(L, e, x[1]), { shape: [rows, inner], src: { kind: 'expert', t, e } });
      continue;
    }
    const hf = inverse.get(suffix);
    if (!hf) throw new FormatError(`GGUF tensor '${t.name}' is not part of the ${arch} layout`, { tensor: t.name });
    const name = `model.layers.${L}.${hf}`;
    if (NORM_ROPE.has(arch) && (hf === 'self_attn.q_proj.weight' || hf === 'self_attn.k_proj.weight')) {
      out.set(name, { shape: shapeOf(t.ne), src: { kind: 'unpermute', t, heads: hf.startsWith('self_attn.q') ? cfg.numHeads : cfg.numKvHeads } });
    } else out.set(name, { shape: shapeOf(t.ne), src: { kind: 'plain', t } });
  }
  for (const [L, p] of granite) {
    if (!p.gate || !p.up || !p.down) throw new FormatError(`GGUF layer ${L}: Granite experts need ffn_gate_exps, ffn_up_exps and ffn_down_exps`, { layer: L });
    const [D, I, E] = p.gate.ne;
    out.set(`model.layers.${L}.block_sparse_moe.input_linear.weight`, { shape: [E, 2 * I, D], src: { kind: 'restack', parts: [p.gate, p.up] } });
    out.set(`model.layers.${L}.block_sparse_moe.output_linear.weight`, { shape: [E, D, I], src: { kind: 'restack', parts: [p.down] } });
  }
  return out;
}

/** convert_hf_to_gguf's permute undone: per head, rows [d/2, 2] (adjacent pairs) → [2, d/2] (halves). */
export function unpermuteRopeRows(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols, d = rows / heads, half = d / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const at = h * d + 2 * i + j, to = h * d + j * half + i;
        out.set(w.subarray(at * cols, (at + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------- GPT-OSS

/**
 * GPT-OSS in llama.cpp's `gpt-oss` layout (convert_hf_to_gguf.py GptOssModel, llama.cpp
 * src/models/openai-moe.cpp):
 *
 *   HF (model.layers.L.)                  GGUF (blk.L.)
 *   input_layernorm / post_attention_layernorm   attn_norm / post_attention_norm
 *   self_attn.{q,k,v,o}_proj.{weight,bias}       attn_{q,k,v,output}.{weight,bias}
 *   self_attn.sinks [H]                          attn_sinks.weight
 *   mlp.router.{weight,bias}                     ffn_gate_inp.{weight,bias}
 *   mlp.experts.gate_up_proj_{blocks,scales}     ffn_gate_exps.weight (even rows), ffn_up_exps.weight (odd rows), MXFP4
 *   mlp.experts.down_proj_{blocks,scales}        ffn_down_exps.weight, MXFP4
 *   mlp.experts.gate_up_proj_bias [E, 2I]        ffn_gate_exps.bias / ffn_up_exps.bias [E, I] (even / odd)
 *   mlp.experts.down_proj_bias                   ffn_down_exps.bias
 *
 * MXFP4 is GGML type 39, block_mxfp4 = { u8 e; u8 qs[16] } per 32 weights (17 bytes): e is the E8M0
 * scale byte as HF stores it, qs[j] holds weight j in its low nibble and weight j + 16 in its high one
 * (HF's byte j holds weights 2j and 2j + 1): the converter moves nibbles, never values, so the experts
 * stay the checkpoint's MXFP4 bits both ways. Metadata: llama.cpp's keys plus attention.sliding_window
 * and rope.scaling.* (yarn); llama.cpp fixes the rest (sliding layers = even layers, swa period 2; SwiGLU
 * alpha 1.702 and limit 7; softmax over the chosen router logits), so other configs are refused.
 */
const OSS_GLOBAL: Record<string, string> = GLOBAL;
const OSS_LAYER: Record<string, string> = {
  'input_layernorm.weight': 'attn_norm.weight', 'post_attention_layernorm.weight': 'post_attention_norm.weight',
  'self_attn.q_proj.weight': 'attn_q.weight', 'self_attn.k_proj.weight': 'attn_k.weight', 'self_attn.v_proj.weight': 'attn_v.weight', 'self_attn.o_proj.weight': 'attn_output.weight',
  'self_attn.q_proj.bias': 'attn_q.bias', 'self_attn.k_proj.bias': 'attn_k.bias', 'self_attn.v_proj.bias': 'attn_v.bias', 'self_attn.o_proj.bias': 'attn_output.bias',
  'self_attn.sinks': 'attn_sinks.weight', 'mlp.router.weight': 'ffn_gate_inp.weight', 'mlp.router.bias': 'ffn_gate_inp.bias',
  'mlp.experts.down_proj_bias': 'ffn_down_exps.bias',
};
const MXFP4_BLOCK = 32, MXFP4_BLOCK_BYTES = 17;

/** What llama.cpp's gpt-oss graph cannot express, as a typed error (null: the config converts). */
function gptOssGgufRefusal(cfg: ModelConfig): string | null {
  if (cfg.quantization?.method !== 'mxfp4') return 'only MXFP4 experts (quantization_config mxfp4, as released) are written; this checkpoint\'s experts are unquantised';
  const act = cfg.expertActivation;
  if (!act || act.alpha !== 1.702 || act.limit !== 7) return `llama.cpp fixes the clamped SwiGLU at alpha 1.702, limit 7 (swiglu_limit ${act?.limit})`;
  if (cfg.layerTypes!.some((t, i) => (t === 'sliding_attention') !== (i % 2 === 0))) return `llama.cpp's gpt-oss windows the even layers (sliding_window_pattern 2); layer_types ${JSON.stringify(cfg.layerTypes)} differ`;
  if (cfg.hiddenSize % MXFP4_BLOCK || cfg.moeIntermediateSize % MXFP4_BLOCK) return `hidden_size ${cfg.hiddenSize} and intermediate_size ${cfg.moeIntermediateSize} must be multiples of 32 (whole MXFP4 blocks per row)`;
  const rs = cfg.ropeScaling;
  if (rs && (rs.type !== 'yarn' || rs.mscale !== 1 || rs.mscaleAllDim !== 0)) return 'rope scaling other than plain YaRN';
  return null;
}

/** llama.cpp's gpt-oss metadata of a GPT-OSS config, with the tokenizer's keys when given. */
export function gptOssGgufMetadata(cfg: ModelConfig, tokenizer?: { json: unknown; config: Record<string, unknown> | null }): [string, GgufKv][] {
  const refusal = gptOssGgufRefusal(cfg);
  if (refusal) throw new UnsupportedError(`GGUF (llama.cpp gpt-oss): ${refusal}`);
  const a = (k: string) => `${GPT_OSS_ARCH}.${k}`;
  const m: [string, GgufKv][] = [
    ['general.architecture', kv.str(GPT_OSS_ARCH)],
    [a('context_length'), kv.u32(cfg.maxPositionEmbeddings)],
    [a('embedding_length'), kv.u32(cfg.hiddenSize)],
    [a('block_count'), kv.u32(cfg.numLayers)],
    [a('feed_forward_length'), kv.u32(cfg.intermediateSize)],
    [a('expert_feed_forward_length'), kv.u32(cfg.moeIntermediateSize)],
    [a('attention.head_count'), kv.u32(cfg.numHeads)],
    [a('attention.head_count_kv'), kv.u32(cfg.numKvHeads)],
    [a('attention.key_length'), kv.u32(cfg.headDim)],
    [a('attention.value_length'), kv.u32(cfg.headDim)],
    [a('attention.sliding_window'), kv.u32(cfg.slidingWindow!)],
    [a('rope.dimension_count'), kv.u32(cfg.headDim)],
    [a('rope.freq_base'), kv.f32(cfg.ropeTheta)],
    [a('attention.layer_norm_rms_epsilon'), kv.f32(cfg.rmsNormEps)],
    [a('expert_count'), kv.u32(cfg.nRoutedExperts)],
    [a('expert_used_count'), kv.u32(cfg.numExpertsPerTok)],
    [a('vocab_size'), kv.u32(cfg.vocabSize)],
  ];
  const rs = cfg.ropeScaling;
  if (rs) {
    m.push([a('rope.scaling.type'), kv.str('yarn')], [a('rope.scaling.factor'), kv.f32(rs.factor)], [a('rope.scaling.original_context_length'), kv.u32(rs.originalMaxPositionEmbeddings)],
      [a('rope.scaling.yarn_beta_fast'), kv.f32(rs.betaFast)], [a('rope.scaling.yarn_beta_slow'), kv.f32(rs.betaSlow)]);
  }
  return appendTokenizerMetadata(m, tokenizer, { vocabSize: cfg.vocabSize, bos: cfg.bosTokenId, eos: cfg.eosTokenIds[0] ?? null });
}

/**
 * HF MXFP4 rows (blocks [E, rows, G, 16], scales [E, rows, G]) → block_mxfp4 rows [E, rows/step, G, 17] of
 * the rows first, first + step, … (gate: 0, 2, …; up: 1, 3, …; down: every row).
 */
export function ggmlMxfp4FromHf(blocks: Uint8Array, scales: Uint8Array, E: number, rows: number, G: number, first: number, step: number): Uint8Array {
  const n = Math.floor((rows - first + step - 1) / step);
  const out = new Uint8Array(E * n * G * MXFP4_BLOCK_BYTES);
  for (let e = 0; e < E; e++) {
    for (let r = 0; r < n; r++) {
      const src = e * rows + first + r * step;
      for (let g = 0; g < G; g++) {
        const o = ((e * n + r) * G + g) * MXFP4_BLOCK_BYTES, b = (src * G + g) * 16;
        out[o] = scales[src * G + g];
        for (let j = 0; j < 16; j++) {
          const lo = (blocks[b + (j >> 1)] >> ((j & 1) * 4)) & 15, k = j + 16;
          const hi = (blocks[b + (k >> 1)] >> ((k & 1) * 4)) & 15;
          out[o + 1 + j] = lo | (hi << 4);
        }
      }
    }
  }
  return out;
}

/**
 * block_mxfp4 parts [E, n, G, 17] each → HF MXFP4 blocks [E, n·parts, G, 16] or scales [E, n·parts, G], the
 * parts' rows interleaved (gate, up → gate_up row 2i is gate i, 2i + 1 is up i).
 */
export function hfMxfp4FromGgml(parts: Uint8Array[], E: number, n: number, G: number, what: 'blocks' | 'scales'): Uint8Array {
  const P = parts.length, rows = n * P;
  const out = new Uint8Array(E * rows * G * (what === 'blocks' ? 16 : 1));
  for (let e = 0; e < E; e++) {
    for (let r = 0; r < n; r++) {
      for (let p = 0; p < P; p++) {
        const dst = e * rows + r * P + p, src = parts[p];
        for (let g = 0; g < G; g++) {
          const o = ((e * n + r) * G + g) * MXFP4_BLOCK_BYTES;
          if (what === 'scales') { out[dst * G + g] = src[o]; continue; }
          const d = (dst * G + g) * 16;
          for (let j = 0; j < 16; j++) {
            const a = 2 * j, b = 2 * j + 1;
            const na = a < 16 ? src[o + 1 + a] & 15 : src[o + 1 + a - 16] >> 4;
            const nb = b < 16 ? src[o + 1 + b] & 15 : src[o + 1 + b - 16] >> 4;
            out[d + j] = na | (nb << 4);
          }
        }
      }
    }
  }
  return out;
}

/** Rows of the parts [E, n] each interleaved per expert: [E, n·parts] (the gate_up bias from gate and up). */
export function interleaveRows(parts: Float32Array[], E: number, n: number): Float32Array {
  const P = parts.length, out = new Float32Array(E * n * P);
  for (let e = 0; e < E; e++) for (let r = 0; r < n; r++) for (let p = 0; p < P; p++) out[(e * n + r) * P + p] = parts[p][e * n + r];
  return out;
}

/**
 * The GGUF tensors of a GPT-OSS checkpoint in llama.cpp's gpt-oss layout: experts as MXFP4 (the
 * checkpoint's bits, nibbles moved), the other matrices `type` when their rows are whole blocks of it
 * (else F32), the router and vectors F32.
 */
export async function gptOssGguf(cfg: ModelConfig, read: (name: string) => Promise<{ bytes: Uint8Array | null; f32: Float32Array | null }>, names: Iterable<string>, type: DecodableType | GgufTypeChooser = 'F32'): Promise<GgufTensorToWrite[]> {
  const refusal = gptOssGgufRefusal(cfg);
  if (refusal) throw new UnsupportedError(`GGUF (llama.cpp gpt-oss): ${refusal}`);
  const out: GgufTensorToWrite[] = [];
  const D = cfg.hiddenSize, I = cfg.moeIntermediateSize, E = cfg.nRoutedExperts;
  const put = (name: string, ne: number[], data: Float32Array, matrix: boolean) => {
    const want = typeof type === 'function' ? type(name, ne) : type;
    const t: DecodableType = matrix && !name.includes('ffn_gate_inp') && ne[0] % blockWeights(want) === 0 ? want : 'F32';
    out.push({ name, type: t, ne, data: quantize(t, data) });
  };
  const mx = new Map<number, Record<string, Uint8Array>>();
  const f32Of = (name: string, r: { f32: Float32Array | null }) => {
    if (!r.f32) throw new FormatError(`gptOssGguf: '${name}' is U8 where a float tensor belongs`, { tensor: name });
    return r.f32;
  };
  for (const name of names) {
    if (OSS_GLOBAL[name]) {
      const f = f32Of(name, await read(name));
      const isMatrix = name !== 'model.norm.weight';
      put(OSS_GLOBAL[name], isMatrix ? [D, f.length / D] : [f.length], f, isMatrix);
      continue;
    }
    const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
    if (!m) throw new FormatError(`gptOssGguf: no GGUF name for '${name}'`);
    const L = Number(m[1]), rest = m[2];
    const x = /^mlp\.experts\.(gate_up|down)_proj_(blocks|scales)$/.exec(rest);
    if (x) {
      const r = await read(name);
      if (!r.bytes) throw new FormatError(`gptOssGguf: '${name}' must be U8 MXFP4 ${x[2]}`, { tensor: name });
      mx.set(L, { ...mx.get(L), [`${x[1]}_${x[2]}`]: r.bytes });
      continue;
    }
    const f = f32Of(name, await read(name));
    if (rest === 'mlp.experts.gate_up_proj_bias') {
      const gate = new Float32Array(E * I), up = new Float32Array(E * I);
      for (let i = 0; i < E * I; i++) { gate[i] = f[2 * i]; up[i] = f[2 * i + 1]; }
      put(`blk.${L}.ffn_gate_exps.bias`, [I, E], gate, false);
      put(`blk.${L}.ffn_up_exps.bias`, [I, E], up, false);
      continue;
    }
    const g = OSS_LAYER[rest];
    if (!g) throw new FormatError(`gptOssGguf: no GGUF name for '${name}'`);
    if (rest === 'mlp.experts.down_proj_bias') { put(`blk.${L}.${g}`, [D, E], f, false); continue; }
    const isVector = g.endsWith('.bias') || g.endsWith('norm.weight') || g === 'attn_sinks.weight';
    const cols = rest === 'self_attn.o_proj.weight' ? cfg.numHeads * cfg.headDim : D;
    put(`blk.${L}.${g}`, isVector ? [f.length] : [cols, f.length / cols], f, !isVector);
  }
  for (const [L, p] of mx) {
    if (!p.gate_up_blocks || !p.gate_up_scales || !p.down_blocks || !p.down_scales) throw new FormatError(`gptOssGguf: layer ${L} lacks MXFP4 expert blocks or scales`);
    const GD = D / MXFP4_BLOCK, GI = I / MXFP4_BLOCK;
    const mxfp4 = (name: string, ne: number[], data: Uint8Array) => out.push({ name, type: 'MXFP4', ne, data });
    mxfp4(`blk.${L}.ffn_gate_exps.weight`, [D, I, E], ggmlMxfp4FromHf(p.gate_up_blocks, p.gate_up_scales, E, 2 * I, GD, 0, 2));
    mxfp4(`blk.${L}.ffn_up_exps.weight`, [D, I, E], ggmlMxfp4FromHf(p.gate_up_blocks, p.gate_up_scales, E, 2 * I, GD, 1, 2));
    mxfp4(`blk.${L}.ffn_down_exps.weight`, [I, D, E], ggmlMxfp4FromHf(p.down_blocks, p.down_scales, E, D, GI, 0, 1));
  }
  return out;
}

/** HF config.json fields from a gpt-oss GGUF's metadata (what parseGptOss reads). */
function gptOssConfigFromGguf(h: { metadata: Map<string, GgufKv>; tensors: Map<string, GgufSplitTensor> }): Record<string, unknown> {
  const arch = GPT_OSS_ARCH;
  const num = (k: string) => {
    const v = metaNumber(h, `${arch}.${k}`);
    return v !== undefined && h.metadata.get(`${arch}.${k}`)!.type === 'FLOAT32' ? f32Decimal(v) : v;
  };
  const need = (k: string) => {
    const v = num(k);
    if (v === undefined) throw new ConfigError(`${arch}.${k}`, 'missing from the GGUF metadata');
    return v;
  };
  const layers = need('block_count'), heads = need('attention.head_count');
  // llama.cpp: sliding_window_pattern (default 2) windows layer il when il % period < period − 1.
  const period = num('attention.sliding_window_pattern') ?? 2;
  const experts = [...h.tensors.values()].filter((t) => /^blk\.\d+\.ffn_(gate|up|down)_exps\.weight$/.test(t.name));
  if (experts.some((t) => t.type.name !== 'MXFP4')) {
    const t = experts.find((x) => x.type.name !== 'MXFP4')!;
    throw new UnsupportedError(`GGUF gpt-oss: expert tensor '${t.name}' is ${t.type.name}; webmoe reads gpt-oss experts as MXFP4 (as llama.cpp's converter writes the released checkpoints)`, { tensor: t.name, type: t.type.name });
  }
  const scaling = metaString(h, `${arch}.rope.scaling.type`);
  return {
    model_type: 'gpt_oss',
    vocab_size: num('vocab_size') ?? (h.metadata.get('tokenizer.ggml.tokens')?.value as { values?: unknown[] } | undefined)?.values?.length,
    hidden_size: need('embedding_length'),
    intermediate_size: num('expert_feed_forward_length') ?? need('feed_forward_length'),
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: num('attention.head_count_kv') ?? heads,
    head_dim: num('attention.key_length') ?? need('embedding_length') / heads,
    num_local_experts: need('expert_count'),
    num_experts_per_tok: need('expert_used_count'),
    rms_norm_eps: need('attention.layer_norm_rms_epsilon'),
    rope_theta: num('rope.freq_base') ?? 150000,
    max_position_embeddings: need('context_length'),
    sliding_window: need('attention.sliding_window'),
    layer_types: Array.from({ length: layers }, (_, i) => (period === 0 || i % period < period - 1 ? 'sliding_attention' : 'full_attention')),
    // HF's GPT-OSS YaRN does not truncate the correction range (rope_scaling.truncate false in the release).
    rope_scaling: scaling === 'yarn'
      ? { rope_type: 'yarn', factor: need('rope.scaling.factor'), original_max_position_embeddings: need('rope.scaling.original_context_length'), beta_fast: num('rope.scaling.yarn_beta_fast') ?? 32, beta_slow: num('rope.scaling.yarn_beta_slow') ?? 1, truncate: false }
      : null,
    swiglu_limit: 7,
    attention_bias: true,
    bos_token_id: metaNumber(h, 'tokenizer.ggml.bos_token_id') ?? null,
    eos_token_id: metaNumber(h, 'tokenizer.ggml.eos_token_id') ?? null,
    tie_word_embeddings: false,
    quantization_config: { quant_method: 'mxfp4' },
  };
}

/** HF tensor name → how to build it, for every tensor of a gpt-oss GGUF. */
function gptOssTensorMap(h: GgufModelHeader, cfg: ModelConfig): Map<string, { shape: number[]; src: FamilySource }> {
  const out = new Map<string, { shape: number[]; src: FamilySource }>();
  const shapeOf = (ne: number[]) => ne.slice().reverse();
  const inverse = new Map(Object.entries(OSS_LAYER).map(([hf, g]) => [g, hf]));
  const E = cfg.nRoutedExperts, D = cfg.hiddenSize, I = cfg.moeIntermediateSize;
  const per = new Map<number, Record<string, GgufSplitTensor>>();
  for (const t of h.tensors.values()) {
    const g = Object.entries(OSS_GLOBAL).find(([, v]) => v === t.name)?.[0];
    if (g) { out.set(g, { shape: shapeOf(t.ne), src: { kind: 'plain', t } }); continue; }
    const m = /^blk\.(\d+)\.(.+)$/.exec(t.name);
    if (!m) throw new FormatError(`GGUF tensor '${t.name}' is not part of the ${GPT_OSS_ARCH} layout`, { tensor: t.name });
    const L = Number(m[1]), suffix = m[2];
    if (/^ffn_(gate|up|down)_exps\.(weight|bias)$/.test(suffix) && suffix !== 'ffn_down_exps.bias') { per.set(L, { ...per.get(L), [suffix]: t }); continue; }
    const hf = inverse.get(suffix);
    if (!hf) throw new FormatError(`GGUF tensor '${t.name}' is not part of the ${GPT_OSS_ARCH} layout`, { tensor: t.name });
    out.set(`model.layers.${L}.${hf}`, { shape: shapeOf(t.ne), src: { kind: 'plain', t } });
  }
  const G = (k: number) => k / MXFP4_BLOCK;
  for (const [L, p] of per) {
    const need = (k: string, ne: number[]) => {
      const t = p[k];
      if (!t) throw new FormatError(`GGUF layer ${L}: gpt-oss experts need blk.${L}.${k}`, { layer: L });
      if (t.ne.length !== ne.length || t.ne.some((d, i) => d !== ne[i])) throw new FormatError(`GGUF tensor '${t.name}' has ne [${t.ne}], expected [${ne}] from the metadata`, { tensor: t.name });
      return t;
    };
    const gate = need('ffn_gate_exps.weight', [D, I, E]), up = need('ffn_up_exps.weight', [D, I, E]), down = need('ffn_down_exps.weight', [I, D, E]);
    const x = `model.layers.${L}.mlp.experts.`;
    out.set(`${x}gate_up_proj_blocks`, { shape: [E, 2 * I, G(D), 16], src: { kind: 'mxfp4', parts: [gate, up], what: 'blocks', rows: I, groups: G(D) } });
    out.set(`${x}gate_up_proj_scales`, { shape: [E, 2 * I, G(D)], src: { kind: 'mxfp4', parts: [gate, up], what: 'scales', rows: I, groups: G(D) } });
    out.set(`${x}down_proj_blocks`, { shape: [E, D, G(I), 16], src: { kind: 'mxfp4', parts: [down], what: 'blocks', rows: D, groups: G(I) } });
    out.set(`${x}down_proj_scales`, { shape: [E, D, G(I)], src: { kind: 'mxfp4', parts: [down], what: 'scales', rows: D, groups: G(I) } });
    out.set(`${x}gate_up_proj_bias`, { shape: [E, 2 * I], src: { kind: 'interleave', parts: [need('ffn_gate_exps.bias', [I, E]), need('ffn_up_exps.bias', [I, E])], rows: I } });
  }
  return out;
}
