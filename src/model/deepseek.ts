/**
 * DeepSeek-V3 / V2 (model_type deepseek_v3 / deepseek_v2), top to bottom as in the paper:
 *
 *   h = Embed(tokens)
 *   for each layer:  h += MLA(RMSNorm(h));  h += FFN(RMSNorm(h))      FFN = dense SwiGLU or DeepSeekMoE
 *   logits = LMHead(RMSNorm(h))
 *
 * The same code drives the GPU (kernels) and the CPU reference (plain TypeScript) through a Backend, so
 * configurations the official fixture does not cover are checked against "the same code on the CPU".
 */
import type { ModelConfig } from './config';
import type { MatrixRole } from './tensors';
import { toFloat32 } from '../formats/safetensors';
import { dequantize, isDecodable } from '../formats/gguf-blocks';
import type { GgufBlocks } from '../loader/checkpoint';
import { isMoeLayer } from './config';
import { ropeInvFreq, yarnSoftmaxScale } from '../kernels/rope-params';
import type { RawMatrix } from '../kernels/weight-quant';
import { runSteps, runStepsAsync, type Steps } from './steps';

/** Where a linear weight sits in the model; backends choose storage (f32/f16/int8/int4/sparse) by role. */
export type { MatrixRole };

/** A matrix as it comes out of the checkpoint: f32 values, or DeepSeek-V3's native FP8 with block scales. */
export interface HostMatrix {
  N: number;
  K: number;
  f32?: Float32Array;
  fp8?: { bytes: Uint8Array; scaleInv: Float32Array };
  /** A GGUF tensor's quantised blocks (streamed with ggufBlocks), for kernels that decode them. */
  gguf?: GgufBlocks;
  /**
   * The checkpoint's BF16 / F16 / F32 bytes as they are (no f32 copy made yet): a backend that packs
   * them itself (the GPU's WebAssembly q8/q4 packer) reads these and may set raw.nonFinite;
   * hostMatrixToF32 widens them for the others.
   */
  raw?: RawMatrix;
}

const RAW_DTYPE = { bf16: 'BF16', f16: 'F16', f32: 'F32' } as const;

/** A GGUF tensor's blocks → f32 (formats/gguf-blocks.ts). */
export function ggufToF32(b: GgufBlocks, n: number): Float32Array {
  if (!isDecodable(b.type)) throw new Error(`ggufToF32: GGUF type ${b.type} is not decodable`);
  return dequantize(b.type, b.bytes, n);
}

/** A host matrix as f32: checkpoint bytes widened, DeepSeek-V3 FP8 (e4m3 with 128×128 block scales) or GGUF blocks dequantised. */
export function hostMatrixToF32(m: HostMatrix): Float32Array {
  if (m.f32) return m.f32;
  if (m.raw) return toFloat32(RAW_DTYPE[m.raw.source], m.raw.bytes);
  if (m.gguf) return ggufToF32(m.gguf, m.N * m.K);
  return toFloat32('F8_E4M3', m.fp8!.bytes, { scaleInv: m.fp8!.scaleInv, shape: [m.N, m.K] });
}

export interface HostExpert { gate: Float32Array; up: Float32Array; down: Float32Array }
/**
 * One MoE layer from the checkpoint. With `ggufExperts` (GPU 'gguf' storage: every routed expert's
 * matrices arrived as GGUF blocks, gate and up of one type) the routed experts are those blocks, one
 * entry per expert, and `experts` is empty; `experts` is empty too when the routed experts were streamed
 * through Backend.expertSink.
 */
export interface HostMoe {
  gate: Float32Array;
  bias: Float32Array | null;
  /** Qwen2-MoE's shared_expert_gate [1, D]: the shared expert's output is scaled by sigmoid(gate · x). */
  sharedGate?: Float32Array | null;
  experts: HostExpert[];
  shared: HostExpert | null;
  ggufExperts?: { gate: GgufBlocks[]; up: GgufBlocks[]; down: GgufBlocks[] };
  /** Shared experts as GGUF blocks (with ggufExperts' storage), when they arrived so; `shared` then null. */
  ggufShared?: { gate: GgufBlocks; up: GgufBlocks; down: GgufBlocks };
  /** GPT-OSS: the router's linear bias and the layer's experts as the checkpoint stacks them (`experts` is then empty). */
  gptOss?: GptOssHostExperts;
}

/**
 * A GPT-OSS MoE layer's experts in the HF layout (gate and up interleaved: gate_up row 2i is gate i,
 * 2i + 1 up i), with the router's bias.
 */
export interface GptOssHostExperts {
  routerBias: Float32Array;
  /** [E, 2I] */
  gateUpBias: Float32Array;
  /** [E, D] */
  downBias: Float32Array;
  /** MXFP4 as stored: *_blocks [E, rows, K/32, 16] bytes, *_scales [E, rows, K/32] E8M0 bytes. */
  mxfp4?: { gateUpBlocks: Uint8Array; gateUpScales: Uint8Array; downBlocks: Uint8Array; downScales: Uint8Array };
  /** Unquantised (BF16 checkpoints), HF's `x @ W` layout: gate_up_proj [E, D, 2I], down_proj [E, I, D]. */
  dense?: { gateUp: Float32Array; down: Float32Array };
}

/** GPT-OSS attention extras: a sliding window (0: none) and per-head sink logits [heads]. */
export interface AttentionExtras<W> { window?: number; sinks?: W }

/** Takes a layer's routed expert matrices one at a time, as the loader streams them (f32 [rows, cols], HF layout). */
export interface ExpertSink {
  put(expert: number, proj: 'gate' | 'up' | 'down', data: Float32Array): void;
  /** The checkpoint's own bytes, written without host conversion when the sink can (false: call put). */
  putRaw?(expert: number, proj: 'gate' | 'up' | 'down', raw: RawMatrix): boolean;
  /** FP8 E4M3 bytes and their [ceil(rows/128), ceil(cols/128)] weight_scale_inv, packed without an f32 copy when the sink can (false: call put). */
  putFp8?(expert: number, proj: 'gate' | 'up' | 'down', bytes: Uint8Array, scaleInv: Float32Array): boolean;
}

export interface MlaShape { heads: number; qkNope: number; qkRope: number; vHead: number; kvLora: number }

/** Grouped-query attention: `heads` query heads share `kvHeads` key/value heads, all of `headDim`. */
export interface GqaShape { heads: number; kvHeads: number; headDim: number }

export type RopeStyle = 'interleaved' | 'half';

/**
 * T: an activation [rows, cols]; W: a weight; E: one MoE layer's weights. Compute methods return new
 * activations unless they say "in place".
 */
export interface Backend<T, W, E> {
  // Weights
  vector(name: string, data: Float32Array): W;
  matrix(name: string, m: HostMatrix, role: MatrixRole): W;
  embedding(name: string, m: HostMatrix): W;
  moe(layer: number, parts: HostMoe): E;
  /**
   * Optional: a sink for layer `layer`'s routed experts, so the loader hands each expert matrix over as
   * it arrives instead of staging the layer on the host; moe() then gets `experts: []`. null: this layer
   * takes its experts in moe().
   */
  expertSink?(layer: number): ExpertSink | null;

  // Activations
  embed(table: W, tokens: ArrayLike<number>, D: number): T;
  rmsNorm(x: T, w: W, eps: number): T;
  /** In place on columns [offset, offset + dim) of every row. */
  rmsNormSlice(x: T, offset: number, dim: number, w: W, eps: number): void;
  linear(x: T, w: W): T;
  /** In place: RoPE on `ropeDim` columns starting at `offset` within each of `heads` heads of `headStride` columns; row r is at position past + r. Pairs are interleaved (default) or halves ('half', HF rotate_half). */
  rope(x: T, heads: number, headStride: number, offset: number, ropeDim: number, past: number, style?: RopeStyle): void;
  /** In place: RMSNorm of each of the `heads` consecutive column blocks of every row, with one weight [cols/heads] (Qwen3's per-head q/k norm). */
  rmsNormHeads(x: T, heads: number, w: W, eps: number): void;
  /** In place: x[r, :] += b (a projection's bias). */
  addBias(x: T, b: W): void;
  /** In place: x *= s (Granite's multipliers). */
  scale(x: T, s: number): void;
  /** GQA attention for rows at positions [past, past + S): caches k and v per kv head, attends causally over the cache. q [S, heads·d], k/v [S, kvHeads·d] (roped). */
  attention(layer: number, q: T, k: T, v: T, shape: GqaShape, past: number, scale: number, extras?: AttentionExtras<W>): T;
  /** MLA attention for rows at positions [past, past + S): caches RMSNorm(c_KV) and roped k_pe, attends causally over the cache. q [S, H·(nope+rope)], kvA [S, kvLora+rope] (latent normalised, k_pe roped). */
  mla(layer: number, q: T, kvA: T, kvB: W, shape: MlaShape, past: number, scale: number): T;
  /** down(silu(gate·x) ⊙ up·x) */
  mlp(x: T, gate: W, up: W, down: W): T;
  /** Σ_j w_j·E_j(x) over the router's top-k, plus the shared expert(s) when the layer has them (scaled by sigmoid(shared_expert_gate·x) when it has that gate). */
  moeForward(layer: number, x: T, e: E, cfg: ModelConfig): T;
  /**
   * Optional: moeForward as steps that may pause the forward (each yielded promise is awaited before the
   * forward goes on): expert offload reads the routing back and uploads experts in between. Only
   * forwardAsync runs a backend whose steps pause.
   */
  moeSteps?(layer: number, x: T, e: E, cfg: ModelConfig): Steps<T>;
  /** In place: h += r. */
  addInPlace(h: T, r: T): void;
  /** In place: rows [0, rows) of x become 0 (the MTP input embedding at position 0). */
  zeroRows(x: T, rows: number): void;
  /** The last row of x as a [1, cols] activation. */
  lastRow(x: T): T;
  /**
   * A layer is recorded: activations created since the residual stream (the embedding's output) are
   * dead and their memory may be reused by the next layer (optional; the GPU backend's temporaries).
   */
  endLayer?(): void;
}

/** MLA (qA…kvB) or GQA (q, k, v, their biases and q/k norms) projections of one layer, and o. */
export interface AttentionWeights<W> {
  qA?: W; qANorm?: W; qB?: W; q?: W;
  kvA?: W; kvANorm?: W; kvB?: W; o: W;
  k?: W; v?: W; qBias?: W; kBias?: W; vBias?: W; qNorm?: W; kNorm?: W;
  /** GPT-OSS: o_proj's bias and the per-head attention sinks. */
  oBias?: W; sinks?: W;
}
export interface LayerWeights<W, E> {
  inputNorm: W;
  postNorm: W;
  attn: AttentionWeights<W>;
  mlp?: { gate: W; up: W; down: W };
  moe?: E;
}
export interface ModelWeights<W, E> {
  embed: W;
  norm: W;
  lmHead: W;
  layers: LayerWeights<W, E>[];
  /** Multi-Token Prediction modules the checkpoint holds (depth 1 first); absent or empty without them. */
  mtp?: MtpWeights<W, E>[];
}

/**
 * One MTP module (checkpoint layer `layer` = num_hidden_layers + depth). eh_proj [D, 2D] is held as its
 * two column halves: eh_proj · [e; h] = ehE · e + ehH · h, so no concatenation is needed.
 */
export interface MtpWeights<W, E> {
  layer: number;
  enorm: W;
  hnorm: W;
  /** eh_proj[:, :D] (applied to enorm(embedding)) and eh_proj[:, D:] (applied to hnorm(hidden)). */
  ehE: W;
  ehH: W;
  headNorm: W;
  /** The module's own embedding / head copies when the checkpoint stores them, else the main model's. */
  embed: W;
  head: W;
  block: LayerWeights<W, E>;
}

/** Attention constants derived once from the config (softmax scale includes YaRN's mscale²). */
export function attentionConstants(cfg: ModelConfig) {
  return {
    shape: { heads: cfg.numHeads, qkNope: cfg.qkNopeHeadDim, qkRope: cfg.qkRopeHeadDim, vHead: cfg.vHeadDim, kvLora: cfg.kvLoraRank } as MlaShape,
    scale: yarnSoftmaxScale(cfg.qkNopeHeadDim + cfg.qkRopeHeadDim, cfg.ropeScaling),
    invFreq: ropeInvFreq(cfg.qkRopeHeadDim, cfg.ropeTheta, cfg.ropeScaling),
  };
}

export interface ForwardOptions<T = unknown> {
  /** Position of the first token (tokens already in the KV cache). */
  past: number;
  /** Only the last row's logits (generation) instead of every row's (scoring, the fixture). */
  lastOnly?: boolean;
  /**
   * Stop after the last layer and return the residual stream, not logits: a prefill chunk other than
   * the last only fills the KV cache, so it needs neither the final norm nor lm_head.
   */
  cacheOnly?: boolean;
  /** Called with each layer's input to its FFN and its output (tests, the fixture's intermediates). */
  onActivation?: (name: string, x: unknown) => void;
  /** Called with the final norm's output (the rows lm_head reads): the MTP module's input hidden state. */
  onFinalHidden?: (normed: T) => void;
}

/** Multi-head Latent Attention (DeepSeek-V2 §2.1): low-rank queries, a latent KV shared by all heads. */
function mla<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, layer: number, a: AttentionWeights<W>, x: T, past: number): T {
  const { shape, scale } = attentionConstants(cfg);
  const qHead = cfg.qkNopeHeadDim + cfg.qkRopeHeadDim;
  // Queries: q = W_qb · RMSNorm(W_qa · x), or a plain q_proj when q_lora_rank is null (V2-Lite).
  const q = a.q ? be.linear(x, a.q) : be.linear(be.rmsNorm(be.linear(x, a.qA!), a.qANorm!, cfg.rmsNormEps), a.qB!);
  be.rope(q, cfg.numHeads, qHead, cfg.qkNopeHeadDim, cfg.qkRopeHeadDim, past);
  // Keys/values: one projection to [c_KV | k_rope]; the latent is normalised, the shared rope key rotated.
  const kvA = be.linear(x, a.kvA!);
  be.rmsNormSlice(kvA, 0, cfg.kvLoraRank, a.kvANorm!, cfg.rmsNormEps);
  be.rope(kvA, 1, cfg.kvLoraRank + cfg.qkRopeHeadDim, cfg.kvLoraRank, cfg.qkRopeHeadDim, past);
  const o = be.mla(layer, q, kvA, a.kvB!, shape, past, scale);
  return be.linear(o, a.o);
}

/**
 * One decoder layer in place on the residual stream h: h += MLA(RMSNorm(h)); h += FFN(RMSNorm(h)). As
 * steps: a backend whose MoE pauses (expert offload, Backend.moeSteps) yields there.
 */
function* decoderLayer<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, i: number, L: LayerWeights<W, E>, h: T, past: number, onActivation?: (name: string, x: unknown) => void): Steps<void> {
  const eps = cfg.rmsNormEps;
  const attnIn = be.rmsNorm(h, L.inputNorm, eps);
  onActivation?.(`layers.${i}.attn_in`, attnIn);
  const attnOut = mla(be, cfg, i, L.attn, attnIn, past);
  onActivation?.(`layers.${i}.attn_out`, attnOut);
  be.addInPlace(h, attnOut);
  const ffnIn = be.rmsNorm(h, L.postNorm, eps);
  onActivation?.(`layers.${i}.ffn_in`, ffnIn);
  const ffnOut = !isMoeLayer(cfg, i) ? be.mlp(ffnIn, L.mlp!.gate, L.mlp!.up, L.mlp!.down)
    : be.moeSteps ? yield* be.moeSteps(i, ffnIn, L.moe!, cfg) : be.moeForward(i, ffnIn, L.moe!, cfg);
  onActivation?.(`layers.${i}.ffn_out`, ffnOut);
  be.addInPlace(h, ffnOut);
  onActivation?.(`layers.${i}.out`, h);
}

/** One forward pass over `tokens` at positions [past, past + S). Returns logits [S or 1, vocab]. */
export function forward<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>): T {
  return runSteps(forwardSteps(be, cfg, w, tokens, opts), 'forward');
}

/** forward() for backends whose MoE steps pause (expert offload): awaits each pause. */
export function forwardAsync<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>): Promise<T> {
  return runStepsAsync(forwardSteps(be, cfg, w, tokens, opts));
}

/** The forward pass, pausing where the backend's MoE steps ask to (a generator: forward / forwardAsync drive it). */
export function* forwardSteps<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>): Steps<T> {
  const eps = cfg.rmsNormEps;
  const h = be.embed(w.embed, tokens, cfg.hiddenSize);
  opts.onActivation?.('embed', h);
  for (let i = 0; i < cfg.numLayers; i++) {
    yield* decoderLayer(be, cfg, i, w.layers[i], h, opts.past, opts.onActivation);
    // Intermediates handed to onActivation must outlive the layer.
    if (!opts.onActivation) be.endLayer?.();
  }
  if (opts.cacheOnly) return h;
  const last = opts.lastOnly ? be.lastRow(h) : h;
  const normed = be.rmsNorm(last, w.norm, eps);
  opts.onActivation?.('final_norm', normed);
  opts.onFinalHidden?.(normed);
  return be.linear(normed, w.lmHead);
}

/**
 * Multi-Token Prediction module `depth` (DeepSeek-V3 §2.2) over MTP positions [past, past + S), as
 * vLLM's DeepSeekMultiTokenPredictorLayer computes it for the released checkpoints:
 *
 *   e = Embed(token at position i + 1), zeroed at position 0
 *   x = eh_proj · [enorm(e); hnorm(h_i)]        (embedding first: the released weights' order; the
 *                                                report writes [h; e])
 *   x = DecoderLayer_{num_hidden_layers + depth}(x)   (its own KV cache rows at positions i)
 *   logits = head(shared_head.norm(x))          → the token at position i + 2 + depth
 *
 * `emb` is the embedding of the next tokens (Backend.embed with the module's `embed`: the caller gathers
 * it, on the GPU possibly from token ids sampled on the device), `prevHidden` the main model's
 * final-norm output at the same positions (ForwardOptions.onFinalHidden). Returns the logits of every row
 * (or of the last, `lastOnly`).
 */
export function mtpForward<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, m: MtpWeights<W, E>, emb: T, prevHidden: T, past: number, lastOnly = false): T {
  const eps = cfg.rmsNormEps;
  if (past === 0) be.zeroRows(emb, 1);
  const x = be.linear(be.rmsNorm(emb, m.enorm, eps), m.ehE);
  be.addInPlace(x, be.linear(be.rmsNorm(prevHidden, m.hnorm, eps), m.ehH));
  // The MTP block's experts are resident (the expert cache holds the main layers'), so it never pauses.
  runSteps(decoderLayer(be, cfg, m.layer, m.block, x, past), 'mtpForward');
  const last = lastOnly ? be.lastRow(x) : x;
  return be.linear(be.rmsNorm(last, m.headNorm, eps), m.head);
}
