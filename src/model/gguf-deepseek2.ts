/**
 * llama.cpp's `deepseek2` GGUF layout (DeepSeek-V2, V2-Lite, V3, Moonlight) ↔ the Hugging Face tensor
 * table and config of tensors.ts / config.ts:
 *  - the config comes from the metadata (`deepseek2.*` hyper-parameters, tokenizer ids);
 *  - GGUF tensor names map to HF names; stacked experts (`ffn_{gate,up,down}_exps`, [E, I, D]) are
 *    sliced per expert; MLA's split `attn_k_b` {qk_nope, kv_lora, H} / `attn_v_b` {kv_lora, v, H}
 *    (k rows transposed per head) are put back together as `kv_b_proj`, the older combined
 *    `attn_kv_b` maps directly; `exp_probs_b.bias` is the router's e_score_correction_bias.
 * `openGgufCheckpoint` gives a Checkpoint whose tensors read as F32 (blocks dequantised on the host,
 * formats/gguf-blocks.ts), so every backend loads it as it loads safetensors. `deepseek2Gguf` is the
 * inverse (a checkpoint → GGUF tensors and metadata) for the writer and tests.
 */
import { ConfigError, FormatError, UnsupportedError, WebMoeError } from '../errors';
import { metaArray, metaBool, metaNumber, metaString, readGgufModel, type GgufKv, type GgufModelHeader, type GgufSplitTensor, type RangeReader } from '../formats/gguf';
import { dequantize, isDecodable, quantize, type DecodableType } from '../formats/gguf-blocks';
import { kv, type GgufTensorInfoToWrite, type GgufTensorToWrite } from '../formats/gguf-write';
import { appendTokenizerMetadata, tokenizerFilesFromGguf } from '../formats/gguf-tokenizer';
import { loadTokenizer } from '../loader/tokenizer-file';
import type { CheckpointOf, CheckpointTensor, LoadProgress, RawTensor, StreamOptions } from '../loader/checkpoint';
import { parseConfig, type ModelConfig } from './config';
import { checkTensorsAgainstConfig } from './tensors';
import { familyConfigFromGguf, familyTensorMap, hfMxfp4FromGgml, interleaveRows, isFamilyGgufArch, unpermuteRopeRows, type FamilySource } from './gguf-families';

const ARCH = 'deepseek2';

/** model/checkpoint.ts's Checkpoint (spelled out here: that file opens GGUFs through this one). */
type Checkpoint = CheckpointOf<ModelConfig>;

/**
 * The shortest decimal that rounds to the same f32 (GGUF stores float hyper-parameters as f32: 1e-6
 * arrives as 9.99999997e-7; config.json had 1e-6, and Python's float32 repr shows that too).
 */
export function f32Decimal(x: number): number {
  for (let p = 1; p <= 9; p++) {
    const d = Number(x.toPrecision(p));
    if (Math.fround(d) === x) return d;
  }
  return x;
}

/** HF config.json fields from a deepseek2 GGUF's metadata (what parseConfig reads). */
export function deepseek2ConfigFromGguf(h: { metadata: Map<string, GgufKv> }): Record<string, unknown> {
  const arch = metaString(h, 'general.architecture');
  if (arch !== ARCH) throw new UnsupportedError(`GGUF architecture '${arch}' is not supported (webmoe reads '${ARCH}')`, { architecture: arch });
  const num = (k: string) => {
    const v = metaNumber(h, `${ARCH}.${k}`);
    return v !== undefined && h.metadata.get(`${ARCH}.${k}`)!.type === 'FLOAT32' ? f32Decimal(v) : v;
  };
  const need = (k: string) => {
    const v = num(k);
    if (v === undefined) throw new ConfigError(`${ARCH}.${k}`, 'missing from the GGUF metadata');
    return v;
  };
  const tokens = metaArray(h, 'tokenizer.ggml.tokens');
  const vocab = num('vocab_size') ?? (tokens ? tokens.values.length : undefined);
  if (vocab === undefined) throw new ConfigError(`${ARCH}.vocab_size`, 'missing (and no tokenizer.ggml.tokens to count)');
  const kvLora = need('attention.kv_lora_rank');
  const rope = need('rope.dimension_count');
  // MLA-split files (attn_k_b / attn_v_b) carry the per-head sizes in key/value_length_mla; older
  // files in key/value_length.
  const keyLen = num('attention.key_length_mla') ?? need('attention.key_length');
  const valueLen = num('attention.value_length_mla') ?? need('attention.value_length');
  const gating = num('expert_gating_func') ?? 1; // 1 softmax (files before the key: V2/V2.5), 2 sigmoid
  if (gating !== 1 && gating !== 2) throw new ConfigError(`${ARCH}.expert_gating_func`, `${gating} (webmoe knows 1 = softmax, 2 = sigmoid)`);
  const nGroup = num('expert_group_count') ?? 1;
  const qLora = num('attention.q_lora_rank');
  const scalingType = metaString(h, `${ARCH}.rope.scaling.type`);
  let ropeScaling: Record<string, unknown> | null = null;
  if (scalingType && scalingType !== 'none') {
    if (scalingType !== 'yarn') throw new ConfigError(`${ARCH}.rope.scaling.type`, `'${scalingType}' (only yarn)`);
    // llama.cpp's converter stores 0.1 · mscale_all_dim as yarn_log_multiplier; DeepSeek's configs use mscale = mscale_all_dim.
    const mscale = (num('rope.scaling.yarn_log_multiplier') ?? 0) / 0.1;
    ropeScaling = {
      type: 'yarn', factor: need('rope.scaling.factor'), original_max_position_embeddings: need('rope.scaling.original_context_length'),
      beta_fast: num('rope.scaling.yarn_beta_fast') ?? 32, beta_slow: num('rope.scaling.yarn_beta_slow') ?? 1, mscale, mscale_all_dim: mscale,
    };
  }
  const eos = metaNumber(h, 'tokenizer.ggml.eos_token_id');
  return {
    model_type: gating === 2 ? 'deepseek_v3' : 'deepseek_v2',
    vocab_size: vocab,
    hidden_size: need('embedding_length'),
    intermediate_size: need('feed_forward_length'),
    moe_intermediate_size: need('expert_feed_forward_length'),
    num_hidden_layers: need('block_count'),
    num_attention_heads: need('attention.head_count'),
    q_lora_rank: qLora ? qLora : null,
    kv_lora_rank: kvLora,
    qk_rope_head_dim: rope,
    qk_nope_head_dim: keyLen - rope,
    v_head_dim: valueLen,
    n_routed_experts: need('expert_count'),
    n_shared_experts: num('expert_shared_count') ?? 0,
    num_experts_per_tok: need('expert_used_count'),
    n_group: nGroup,
    topk_group: num('expert_group_used_count') ?? 1,
    routed_scaling_factor: num('expert_weights_scale') ?? 1,
    scoring_func: gating === 2 ? 'sigmoid' : 'softmax',
    norm_topk_prob: metaBool(h, `${ARCH}.expert_weights_norm`) ?? false,
    topk_method: gating === 2 ? 'noaux_tc' : nGroup > 1 ? 'group_limited_greedy' : 'greedy',
    first_k_dense_replace: num('leading_dense_block_count') ?? 0,
    moe_layer_freq: 1,
    rms_norm_eps: need('attention.layer_norm_rms_epsilon'),
    rope_theta: num('rope.freq_base') ?? 10000,
    rope_scaling: ropeScaling,
    max_position_embeddings: need('context_length'),
    bos_token_id: metaNumber(h, 'tokenizer.ggml.bos_token_id') ?? null,
    eos_token_id: eos ?? null,
    num_nextn_predict_layers: 0,
  };
}

/** HF name of a per-layer GGUF tensor suffix (`blk.{L}.<suffix>`), except the stacked experts and k_b / v_b. */
const LAYER_NAMES: Record<string, string> = {
  'attn_norm.weight': 'input_layernorm.weight',
  'attn_q_a.weight': 'self_attn.q_a_proj.weight',
  'attn_q_a_norm.weight': 'self_attn.q_a_layernorm.weight',
  'attn_q_b.weight': 'self_attn.q_b_proj.weight',
  'attn_q.weight': 'self_attn.q_proj.weight',
  'attn_kv_a_mqa.weight': 'self_attn.kv_a_proj_with_mqa.weight',
  'attn_kv_a_norm.weight': 'self_attn.kv_a_layernorm.weight',
  'attn_kv_b.weight': 'self_attn.kv_b_proj.weight',
  'attn_output.weight': 'self_attn.o_proj.weight',
  'ffn_norm.weight': 'post_attention_layernorm.weight',
  'ffn_gate.weight': 'mlp.gate_proj.weight',
  'ffn_up.weight': 'mlp.up_proj.weight',
  'ffn_down.weight': 'mlp.down_proj.weight',
  'ffn_gate_inp.weight': 'mlp.gate.weight',
  'exp_probs_b.bias': 'mlp.gate.e_score_correction_bias',
  'ffn_gate_shexp.weight': 'mlp.shared_experts.gate_proj.weight',
  'ffn_up_shexp.weight': 'mlp.shared_experts.up_proj.weight',
  'ffn_down_shexp.weight': 'mlp.shared_experts.down_proj.weight',
};
const GLOBAL_NAMES: Record<string, string> = { 'token_embd.weight': 'model.embed_tokens.weight', 'output_norm.weight': 'model.norm.weight', 'output.weight': 'lm_head.weight' };
const EXPS = /^(gate|up|down)$/;

/** How one HF tensor is made from GGUF tensors. */
type Source =
  | { kind: 'plain'; t: GgufSplitTensor }
  | { kind: 'expert'; t: GgufSplitTensor; e: number }
  | { kind: 'kv_b'; k: GgufSplitTensor; v: GgufSplitTensor }
  | FamilySource;

const shapeOf = (ne: number[]) => ne.slice().reverse();
const numel = (s: number[]) => s.reduce((a, d) => a * d, 1);

function typeOf(t: GgufSplitTensor): DecodableType {
  if (!isDecodable(t.type.name)) throw new UnsupportedError(`GGUF tensor '${t.name}' is ${t.type.name}; webmoe reads F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K and Q6_K`, { tensor: t.name, type: t.type.name });
  return t.type.name;
}

/** HF tensor name → how to build it, for every tensor of a deepseek2 GGUF. */
export function deepseek2TensorMap(h: GgufModelHeader, cfg: ModelConfig): Map<string, { shape: number[]; src: Source }> {
  const out = new Map<string, { shape: number[]; src: Source }>();
  const kb = new Map<number, GgufSplitTensor>(), vb = new Map<number, GgufSplitTensor>();
  for (const t of h.tensors.values()) {
    if (GLOBAL_NAMES[t.name]) { out.set(GLOBAL_NAMES[t.name], { shape: shapeOf(t.ne), src: { kind: 'plain', t } }); continue; }
    const m = /^blk\.(\d+)\.(.+)$/.exec(t.name);
    if (!m) throw new FormatError(`GGUF tensor '${t.name}' is not part of the ${ARCH} layout`, { tensor: t.name });
    const L = Number(m[1]), suffix = m[2];
    if (LAYER_NAMES[suffix]) { out.set(`model.layers.${L}.${LAYER_NAMES[suffix]}`, { shape: shapeOf(t.ne), src: { kind: 'plain', t } }); continue; }
    if (suffix === 'attn_k_b.weight') { kb.set(L, t); continue; }
    if (suffix === 'attn_v_b.weight') { vb.set(L, t); continue; }
    const x = /^ffn_(\w+)_exps\.weight$/.exec(suffix);
    if (x && EXPS.test(x[1]) && t.ne.length === 3) {
      const [inner, rows, E] = t.ne;
      for (let e = 0; e < E; e++) out.set(`model.layers.${L}.mlp.experts.${e}.${x[1]}_proj.weight`, { shape: [rows, inner], src: { kind: 'expert', t, e } });
      continue;
    }
    throw new FormatError(`GGUF tensor '${t.name}' is not part of the ${ARCH} layout`, { tensor: t.name });
  }
  for (const [L, k] of kb) {
    const v = vb.get(L);
    if (!v) throw new FormatError(`GGUF layer ${L} has attn_k_b but no attn_v_b`, { tensor: k.name });
    const H = cfg.numHeads, nope = cfg.qkNopeHeadDim, vd = cfg.vHeadDim, r = cfg.kvLoraRank;
    const want = (t: GgufSplitTensor, ne: number[]) => {
      if (t.ne.length !== 3 || t.ne.some((d, i) => d !== ne[i])) throw new FormatError(`GGUF tensor '${t.name}' has ne [${t.ne}], expected [${ne}] from the metadata`, { tensor: t.name });
    };
    want(k, [nope, r, H]);
    want(v, [r, vd, H]);
    out.set(`model.layers.${L}.self_attn.kv_b_proj.weight`, { shape: [H * (nope + vd), r], src: { kind: 'kv_b', k, v } });
  }
  for (const L of vb.keys()) if (!kb.has(L)) throw new FormatError(`GGUF layer ${L} has attn_v_b but no attn_k_b`, { tensor: vb.get(L)!.name });
  return out;
}

/** Block types the GPU kernels decode from the file's bytes (F32/F16/BF16 tensors take the float paths). */
const QUANTISED = new Set<string>(['Q8_0', 'Q4_0', 'Q4_K', 'Q5_K', 'Q6_K']);

/**
 * Where a tensor's quantised blocks are, when they can be handed on as they are: a plain tensor or one
 * expert of a stacked tensor in a quantised type (kv_b is rebuilt from k_b and v_b, so it never is).
 */
function blocksOf(src: Source): { t: GgufSplitTensor; type: DecodableType; offset: number; length: number } | null {
  // kv_b, un-permuted q/k rows and re-stacked Granite experts are rebuilt, so their blocks are not the file's.
  if ((src.kind !== 'plain' && src.kind !== 'expert') || !QUANTISED.has(src.t.type.name)) return null;
  const type = typeOf(src.t), all = src.t.end - src.t.begin;
  if (src.kind === 'plain') return { t: src.t, type, offset: 0, length: all };
  const slice = all / src.t.ne[2];
  return { t: src.t, type, offset: src.e * slice, length: slice };
}

/**
 * Opens a deepseek2 GGUF, or one of the other families' llama.cpp layouts (gguf-families.ts: qwen2moe,
 * qwen3moe, olmoe, llama with experts, granitemoe), one file or every split in order, as a Checkpoint
 * with F32 tensors; tensors in quantised blocks say so (CheckpointTensor.gguf) and stream as those blocks
 * with `ggufBlocks`.
 */
export async function openGgufCheckpoint(sources: RangeReader[], opts: StreamOptions = {}): Promise<Checkpoint> {
  const h = await readGgufModel(sources, { signal: opts.signal });
  const family = isFamilyGgufArch(metaString(h, 'general.architecture'));
  const config = parseConfig(family ? familyConfigFromGguf(h) : deepseek2ConfigFromGguf(h));
  const map: Map<string, { shape: number[]; src: Source }> = family ? familyTensorMap(h, config) : deepseek2TensorMap(h, config);
  const file = sources[0].name;
  // Virtual F32 extents (what a reader of the table sees: numel × 4 bytes each).
  const tensors = new Map<string, CheckpointTensor>();
  let at = 0;
  for (const [name, { shape, src }] of map) {
    // GPT-OSS's MXFP4 experts read as HF's U8 blocks and scales (one byte an element).
    const u8 = src.kind === 'mxfp4';
    const bytes = numel(shape) * (u8 ? 1 : 4);
    const blocks = blocksOf(src);
    tensors.set(name, { name, dtype: u8 ? 'U8' : 'F32', shape, begin: at, end: at + bytes, file, ...(blocks ? { gguf: { type: blocks.type, bytes: blocks.length } } : {}) });
    at += bytes;
  }
  checkTensorsAgainstConfig(config, tensors);
  // The tokenizer metadata as tokenizer.json + tokenizer_config.json: one tokenizer path for both formats.
  const tok = tokenizerFilesFromGguf(h);
  const tokenizer = tok ? loadTokenizer(tok.tokenizerJson, tok.tokenizerConfig, { vocabSize: config.vocabSize }) : null;
  const read = async (t: GgufSplitTensor, offset: number, length: number, signal?: AbortSignal) => {
    const b = await sources[t.file].read(t.begin + offset, length, signal);
    if (b.length !== length) throw new FormatError(`${sources[t.file].name}: read ${b.length} of ${length} bytes of '${t.name}'`, { tensor: t.name });
    return b;
  };
  const readF32 = async (name: string, signal?: AbortSignal): Promise<Float32Array> => {
    const m = map.get(name);
    if (!m) throw new WebMoeError('NOT_FOUND', `GGUF checkpoint has no tensor '${name}'`, { tensor: name });
    const s = m.src;
    if (s.kind === 'plain') return dequantize(typeOf(s.t), await read(s.t, 0, s.t.end - s.t.begin, signal), numel(m.shape));
    if (s.kind === 'expert') {
      const slice = (s.t.end - s.t.begin) / s.t.ne[2];
      return dequantize(typeOf(s.t), await read(s.t, s.e * slice, slice, signal), numel(m.shape));
    }
    if (s.kind === 'unpermute') return unpermuteRopeRows(dequantize(typeOf(s.t), await read(s.t, 0, s.t.end - s.t.begin, signal), numel(m.shape)), s.heads, m.shape[1]);
    // U8 bytes as numbers, as a safetensors checkpoint reads its U8 tensors.
    if (s.kind === 'mxfp4') return Float32Array.from((await readRaw(name, signal)).data);
    if (s.kind === 'interleave') {
      const parts = await Promise.all(s.parts.map(async (t) => dequantize(typeOf(t), await read(t, 0, t.end - t.begin, signal), numel(shapeOf(t.ne)))));
      return interleaveRows(parts, m.shape[0], s.rows);
    }
    if (s.kind === 'restack') {
      // Per expert: the parts' slices one after another ([gate; up] rows of input_linear, or down).
      const parts = await Promise.all(s.parts.map(async (t) => dequantize(typeOf(t), await read(t, 0, t.end - t.begin, signal), numel(shapeOf(t.ne)))));
      const E = m.shape[0], out = new Float32Array(numel(m.shape));
      let at = 0;
      for (let e = 0; e < E; e++) for (const p of parts) { const n = p.length / E; out.set(p.subarray(e * n, (e + 1) * n), at); at += n; }
      return out;
    }
    const H = config.numHeads, nope = config.qkNopeHeadDim, vd = config.vHeadDim, r = config.kvLoraRank;
    const k = dequantize(typeOf(s.k), await read(s.k, 0, s.k.end - s.k.begin, signal), H * r * nope); // [H, r, nope]
    const v = dequantize(typeOf(s.v), await read(s.v, 0, s.v.end - s.v.begin, signal), H * vd * r); // [H, vd, r]
    const out = new Float32Array(H * (nope + vd) * r);
    for (let hh = 0; hh < H; hh++) {
      const base = hh * (nope + vd) * r;
      for (let i = 0; i < nope; i++) for (let c = 0; c < r; c++) out[base + i * r + c] = k[(hh * r + c) * nope + i];
      out.set(v.subarray(hh * vd * r, (hh + 1) * vd * r), base + nope * r);
    }
    return out;
  };
  const readRaw = async (name: string, signal?: AbortSignal, ggufBlocks = false): Promise<RawTensor> => {
    const m = map.get(name);
    if (m?.src.kind === 'mxfp4') {
      // The file's block_mxfp4 rows, nibbles moved back to HF's layout: the same MXFP4 bits.
      const s = m.src;
      const parts = await Promise.all(s.parts.map((t) => read(t, 0, t.end - t.begin, signal)));
      return { dtype: 'U8', shape: m.shape.slice(), data: hfMxfp4FromGgml(parts, m.shape[0], s.rows, s.groups, s.what) };
    }
    const blocks = m && ggufBlocks ? blocksOf(m.src) : null;
    if (blocks) {
      // The blocks as they are in the file (an expert's slice of the stacked tensor is whole rows).
      const bytes = await read(blocks.t, blocks.offset, blocks.length, signal);
      return { dtype: 'F32', shape: m!.shape.slice(), data: new Uint8Array(0), gguf: { type: blocks.type, bytes } };
    }
    const f = await readF32(name, signal);
    return { dtype: 'F32', shape: tensors.get(name)!.shape.slice(), data: new Uint8Array(f.buffer, f.byteOffset, f.byteLength) };
  };
  return {
    config, tokenizerJson: tok?.tokenizerJson ?? null, tokenizerConfig: tok?.tokenizerConfig ?? null, generationConfig: null, tokenizer,
    tensors, files: sources.map((s) => s.name), nonFinite: [],
    readRaw: (name, signal) => readRaw(name, signal), readF32,
    async stream(names, onTensor, sopts = {}) {
      const list = names ?? [...tensors.keys()];
      for (const n of list) if (!tensors.has(n)) throw new WebMoeError('NOT_FOUND', `GGUF checkpoint has no tensor '${n}'`, { tensor: n });
      // Bytes as delivered: a block tensor's block bytes with ggufBlocks, else its F32 size.
      const size = (n: string) => { const t = tensors.get(n)!; return sopts.ggufBlocks && t.gguf ? t.gguf.bytes : t.end - t.begin; };
      const p: LoadProgress = { phase: 'weights', bytesLoaded: 0, bytesTotal: list.reduce((a, n) => a + size(n), 0), tensorsLoaded: 0, tensorsTotal: list.length };
      for (const n of list) {
        if (sopts.signal?.aborted) throw new WebMoeError('ABORTED', 'The operation was aborted');
        await onTensor(n, await readRaw(n, sopts.signal, sopts.ggufBlocks));
        p.bytesLoaded += size(n);
        p.tensorsLoaded++;
        sopts.onProgress?.({ ...p, file });
      }
      sopts.onProgress?.({ ...p, phase: 'done' });
    },
    async close() { for (const s of sources) await (s as { close?: () => unknown }).close?.(); },
  };
}

// --------------------------------------------------------------------------------------- inverse

/**
 * deepseek2 metadata from an HF config (inverse of deepseek2ConfigFromGguf; MLA-split key lengths), with
 * the tokenizer's keys when its tokenizer.json (+ tokenizer_config.json) is given (llama.cpp needs them:
 * tokenizer.ggml.model is a required key there).
 */
export function deepseek2Metadata(cfg: ModelConfig, tokenizer?: { json: unknown; config: Record<string, unknown> | null }): [string, GgufKv][] {
  const a = (k: string) => `${ARCH}.${k}`;
  const m: [string, GgufKv][] = [
    ['general.architecture', kv.str(ARCH)],
    [a('context_length'), kv.u32(cfg.maxPositionEmbeddings)],
    [a('embedding_length'), kv.u32(cfg.hiddenSize)],
    [a('block_count'), kv.u32(cfg.numLayers)],
    [a('feed_forward_length'), kv.u32(cfg.intermediateSize)],
    [a('attention.head_count'), kv.u32(cfg.numHeads)],
    // MLA with split k_b/v_b runs as MQA over the compressed cache (one KV head of kv_lora + rope), as
    // llama.cpp's converter writes it; with numHeads here llama.cpp sizes the K cache per head and aborts.
    [a('attention.head_count_kv'), kv.u32(1)],
    [a('rope.freq_base'), kv.f32(cfg.ropeTheta)],
    [a('attention.layer_norm_rms_epsilon'), kv.f32(cfg.rmsNormEps)],
    [a('expert_used_count'), kv.u32(cfg.numExpertsPerTok)],
    [a('leading_dense_block_count'), kv.u32(cfg.firstKDenseReplace)],
    [a('vocab_size'), kv.u32(cfg.vocabSize)],
    [a('attention.kv_lora_rank'), kv.u32(cfg.kvLoraRank)],
    [a('attention.key_length'), kv.u32(cfg.kvLoraRank + cfg.qkRopeHeadDim)],
    [a('attention.value_length'), kv.u32(cfg.kvLoraRank)],
    [a('attention.key_length_mla'), kv.u32(cfg.qkNopeHeadDim + cfg.qkRopeHeadDim)],
    [a('attention.value_length_mla'), kv.u32(cfg.vHeadDim)],
    [a('rope.dimension_count'), kv.u32(cfg.qkRopeHeadDim)],
    [a('expert_feed_forward_length'), kv.u32(cfg.moeIntermediateSize)],
    [a('expert_count'), kv.u32(cfg.nRoutedExperts)],
    [a('expert_shared_count'), kv.u32(cfg.nSharedExperts)],
    [a('expert_weights_scale'), kv.f32(cfg.routedScalingFactor)],
    [a('expert_weights_norm'), kv.bool(cfg.normTopkProb)],
    [a('expert_gating_func'), kv.u32(cfg.scoringFunc === 'sigmoid' ? 2 : 1)],
    [a('expert_group_count'), kv.u32(cfg.nGroup)],
    [a('expert_group_used_count'), kv.u32(cfg.topkGroup)],
  ];
  if (cfg.qLoraRank !== null) m.push([a('attention.q_lora_rank'), kv.u32(cfg.qLoraRank)]);
  if (cfg.ropeScaling) {
    const s = cfg.ropeScaling;
    m.push([a('rope.scaling.type'), kv.str('yarn')], [a('rope.scaling.factor'), kv.f32(s.factor)], [a('rope.scaling.original_context_length'), kv.u32(s.originalMaxPositionEmbeddings)],
      [a('rope.scaling.yarn_log_multiplier'), kv.f32(0.1 * s.mscaleAllDim)], [a('rope.scaling.yarn_beta_fast'), kv.f32(s.betaFast)], [a('rope.scaling.yarn_beta_slow'), kv.f32(s.betaSlow)]);
  }
  return appendTokenizerMetadata(m, tokenizer, { vocabSize: cfg.vocabSize, bos: cfg.bosTokenId, eos: cfg.eosTokenIds[0] ?? null });
}

/** Weights per block of each type a matrix can be written as (its rows must be whole blocks). */
export const GGUF_BLOCK_WEIGHTS: Record<DecodableType, number> = { F32: 1, F16: 1, BF16: 1, Q8_0: 32, Q4_0: 32, Q4_K: 256, Q5_K: 256, Q6_K: 256 };
/** The type to write a matrix as, from its GGUF name and ne (a mixed file such as Q4_K_M); rows that are not whole blocks of it stay F32. */
export type GgufTypeChooser = (name: string, ne: number[]) => DecodableType;

/**
 * One GGUF tensor of a conversion, before its data exists: the header entry, the checkpoint tensors
 * it is made from, and `chunks`, which reads them and yields the data in file order — a stacked
 * expert tensor one expert at a time (blocks never span rows, so quantising expert by expert gives
 * the bytes of the whole stack), everything else in one piece.
 */
export interface GgufTensorPlan extends GgufTensorInfoToWrite {
  type: DecodableType;
  sources: string[];
  chunks(readF32: (name: string) => Promise<Float32Array>): AsyncIterable<Uint8Array>;
}

/**
 * GGUF tensors of a DeepSeek checkpoint in llama.cpp's deepseek2 layout: experts stacked, kv_b split
 * into k_b (transposed per head) and v_b. Matrices are stored as `type` when their rows are whole
 * blocks of it, else F32 (llama.cpp likewise falls back for such rows); vectors stay F32. `type` may
 * choose per tensor (gguf-convert.ts: ggufTypeChooser). From the tensor table alone (a checkpoint's
 * `tensors` map: names and shapes): the data comes later, tensor by tensor (GgufTensorPlan.chunks).
 */
export function deepseek2GgufPlan(cfg: ModelConfig, tensors: Iterable<[string, { shape: readonly number[] }]>, type: DecodableType | GgufTypeChooser = 'F32'): GgufTensorPlan[] {
  const out: GgufTensorPlan[] = [];
  const typeOf = (name: string, ne: number[], matrix: boolean): DecodableType => {
    const want = typeof type === 'function' ? type(name, ne) : type;
    return matrix && ne[0] % GGUF_BLOCK_WEIGHTS[want] === 0 ? want : 'F32';
  };
  /** A tensor made from one checkpoint tensor by `f` (the identity unless given). */
  const put = (name: string, ne: number[], matrix: boolean, source: string, f: (x: Float32Array) => Float32Array = (x) => x) => {
    const t = typeOf(name, ne, matrix);
    out.push({ name, type: t, ne, sources: [source], async *chunks(read) { yield quantize(t, f(await read(source))); } });
  };
  const inverse = new Map<string, string>();
  for (const [g, hf] of Object.entries(GLOBAL_NAMES)) inverse.set(hf, g);
  // Multi-Token Prediction layers (model.layers.{num_hidden_layers + k}) are left out: the deepseek2
  // layout written here has no MTP tensors and its block count is num_hidden_layers.
  const mainLayer = (n: string) => { const m = /^model\.layers\.(\d+)\./.exec(n); return !m || Number(m[1]) < cfg.numLayers; };
  const experts = new Map<string, string[]>();
  for (const [name, { shape }] of tensors) {
    if (!mainLayer(name)) continue;
    const len = shape.reduce((a, d) => a * d, 1);
    if (inverse.has(name)) {
      const isMatrix = name !== 'model.norm.weight';
      put(inverse.get(name)!, isMatrix ? [cfg.hiddenSize, len / cfg.hiddenSize] : [len], isMatrix, name);
      continue;
    }
    const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
    if (!m) throw new FormatError(`deepseek2Gguf: no GGUF name for '${name}'`);
    const L = Number(m[1]), rest = m[2];
    const ex = /^mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$/.exec(rest);
    if (ex) {
      const key = `${L}.${ex[2]}`;
      if (!experts.has(key)) experts.set(key, []);
      experts.get(key)![Number(ex[1])] = name;
      continue;
    }
    if (rest === 'self_attn.kv_b_proj.weight') {
      const H = cfg.numHeads, nope = cfg.qkNopeHeadDim, vd = cfg.vHeadDim, r = cfg.kvLoraRank;
      const kPart = (f: Float32Array) => {
        const k = new Float32Array(H * r * nope);
        for (let h = 0; h < H; h++) {
          const base = h * (nope + vd) * r;
          for (let i = 0; i < nope; i++) for (let c = 0; c < r; c++) k[(h * r + c) * nope + i] = f[base + i * r + c];
        }
        return k;
      };
      const vPart = (f: Float32Array) => {
        const v = new Float32Array(H * vd * r);
        for (let h = 0; h < H; h++) v.set(f.subarray(h * (nope + vd) * r + nope * r, (h + 1) * (nope + vd) * r), h * vd * r);
        return v;
      };
      put(`blk.${L}.attn_k_b.weight`, [nope, r, H], true, name, kPart);
      put(`blk.${L}.attn_v_b.weight`, [r, vd, H], true, name, vPart);
      continue;
    }
    const suffix = Object.entries(LAYER_NAMES).find(([, hf]) => hf === rest)?.[0];
    if (!suffix) throw new FormatError(`deepseek2Gguf: no GGUF name for '${name}'`);
    const isVector = suffix.endsWith('norm.weight') || suffix === 'exp_probs_b.bias';
    const cols = isVector ? len : colsOf(cfg, rest);
    put(`blk.${L}.${suffix}`, isVector ? [len] : [cols, len / cols], !isVector, name);
  }
  for (const [key, sources] of experts) {
    const [L, proj] = key.split('.');
    const [rows, inner] = proj === 'down' ? [cfg.hiddenSize, cfg.moeIntermediateSize] : [cfg.moeIntermediateSize, cfg.hiddenSize];
    const missing = Array.from(sources, (s, e) => (s === undefined ? e : -1)).filter((e) => e >= 0);
    if (missing.length) throw new FormatError(`deepseek2Gguf: layer ${L} has no ${proj}_proj for expert(s) ${missing.join(', ')}`);
    const name = `blk.${L}.ffn_${proj}_exps.weight`;
    const ne = [inner, rows, sources.length];
    const t = typeOf(name, ne, true);
    out.push({ name, type: t, ne, sources, async *chunks(read) { for (const s of sources) yield quantize(t, await read(s)); } });
  }
  return out;
}

/** deepseek2GgufPlan's tensors with their data, all in memory (small models and tests). */
export async function deepseek2Gguf(cfg: ModelConfig, readF32: (name: string) => Promise<Float32Array>, tensors: Iterable<[string, { shape: readonly number[] }]>, type: DecodableType | GgufTypeChooser = 'F32'): Promise<GgufTensorToWrite[]> {
  const out: GgufTensorToWrite[] = [];
  for (const p of deepseek2GgufPlan(cfg, tensors, type)) {
    const parts: Uint8Array[] = [];
    for await (const c of p.chunks(readF32)) parts.push(c);
    const data = parts.length === 1 ? parts[0] : new Uint8Array(parts.reduce((a, c) => a + c.length, 0));
    if (parts.length > 1) parts.reduce((o, c) => (data.set(c, o), o + c.length), 0);
    out.push({ name: p.name, type: p.type, ne: p.ne, data });
  }
  return out;
}

/** Reduction length (columns) of a per-layer HF matrix. */
function colsOf(cfg: ModelConfig, rest: string): number {
  if (rest.endsWith('q_b_proj.weight')) return cfg.qLoraRank!;
  if (rest.endsWith('o_proj.weight')) return cfg.numHeads * cfg.vHeadDim;
  if (rest === 'mlp.down_proj.weight') return cfg.intermediateSize;
  if (rest === 'mlp.shared_experts.down_proj.weight') return cfg.nSharedExperts * cfg.moeIntermediateSize;
  return cfg.hiddenSize;
}
