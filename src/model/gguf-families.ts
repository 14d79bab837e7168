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

const ARCH: Partial<Record<ModelConfig['family'], string>> = { qwen2_moe: 'qwen2moe', qwen3_moe: 'qwen3moe', olmoe: 'olmoe', mixtral: 'llama', granitemoe: 'granitemoe' };
/** llama.cpp archs whose RoPE rotates adjacent pairs (LLAMA_ROPE_TYPE_NORM): the converter permutes q/k for them. */
const NORM_ROPE = new Set(['llama', 'granitemoe']);

export function ggufArchOf(cfg: ModelConfig): string {
  const a = ARCH[cfg.family];
  if (!a) throw new UnsupportedError(`GGUF: no llama.cpp layout for model_type '${cfg.modelType}' here (deepseek2 is gguf-deepseek2.ts)`);
  return a;
}

/** llama.cpp metadata of a family config, with the tokenizer's keys when given. */
export function familyGgufMetadata(cfg: ModelConfig, tokenizer?: { json: unknown; config: Record<string, unknown> | null }): [string, GgufKv][] {
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

const FAMILY_OF_ARCH: Record<string, 'qwen2_moe' | 'qwen3_moe' | 'olmoe' | 'mixtral' | 'granitemoe'> = { qwen2moe: 'qwen2_moe', qwen3moe: 'qwen3_moe', olmoe: 'olmoe', llama: 'mixtral', granitemoe: 'granitemoe' };

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
export function familyConfigFromGguf(h: { metadata: Map<string, GgufKv>; tensors: Map<string, unknown> }): Record<string, unknown> {
  const arch = metaString(h, 'general.architecture')!;
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
  | { kind: 'restack'; parts: GgufSplitTensor[] };

/** HF tensor name → how to build it, for every tensor of a family GGUF. */
export function familyTensorMap(h: GgufModelHeader, cfg: ModelConfig): Map<string, { shape: number[]; src: FamilySource }> {
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
