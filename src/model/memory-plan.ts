/**
 * The memory plan of a model on the GPU, from config.json and the tensor headers alone (no weight bytes
 * read): every buffer the runtime will allocate, sized the way the uploaders, the KV cache and the
 * per-step temporary pool size them, so the plan can be checked against a device before anything is
 * allocated (or printed for a model no device here can hold: `webmoe info`).
 *
 * What it mirrors (and must follow when those change):
 *  - weights: kernels/weight.ts + weight-pack.ts (packed rows padded to whole vec4 units, q8/q4 f16
 *    scales two per u32, f32 buffers padded to 16 bytes, row chunks past the binding limit),
 *    kernels/moe.ts uploadExperts (stacked gate|up and down per MoE layer, f16 scale pairs), and the
 *    storage policy of model/assemble.ts + gpu-backend.ts (embedding f16 unless f32, kv_b and the router
 *    f32, norms and biases f32, routed experts f32 when D or I is not a multiple of 4);
 *  - the KV cache: model/kvcache.ts, one buffer per layer of [context, kv_lora + rope] elements, f16
 *    (2 bytes, rows padded to even) by default on a GPU, f32 (4 bytes) on a CPU fallback adapter or on request;
 *  - activations: every temporary of one forward stays acquired until the step's submit (gpu.temps,
 *    size classes of gpu/buffers.ts TempPool), so a prefill of T tokens holds all layers' temporaries at
 *    once; the pool keeps, per size class, the most any step used. Prompts run in chunks of
 *    `prefillTokens` (model/gpu-runner.ts, LoadOptions.prefillChunk), one submit each; the plan counts
 *    a full chunk at every chunk start of the context (attention temporaries grow with the positions
 *    before the chunk) and a decode step at the full context. (A shorter last chunk, or decode before
 *    the full context, can leave a few buffers in other size classes: the pool keeps each class's most.);
 *  - fixed runtime buffers: the sampler's scratch, the uniform ring, the expert-load counters, the RoPE
 *    table and the small placeholder buffers.
 * Pre-pruned (sparse) checkpoints and `sparsity` loads are planned as their dense equivalent.
 */
import { rowLayout } from '../kernels/weight-pack';
import { ArgumentError, GpuBudgetError, LimitExceededError, UnsupportedError } from '../errors';
import { ggufBufferBytes, ggufChunkRows, ggufExpertStackBytes, ggufExpertsPerStack } from '../kernels/gguf-layout';
import { MLA_DECODE_MAX_S, mlaDecodePlan, mlaDecodeScratchBytes } from '../kernels/mla-plan';
import { attentionScratchBytes, autoSplits, blocksConfig, kvElementBytes, kvRowStride, rowsConfig, rowsSplits, type AttentionDevice, type KvFormat } from '../kernels/attention-plan';
import type { SafetensorsDtype } from '../formats/safetensors';
import { familyLabel, isMoeLayer, type ModelConfig } from './config';
import { hasRole, isProjection, layerTensors, modelTensors, moeLayers, mtpLayersPresent, mtpTensorName, tensorName, type TensorRole } from './tensors';
import { windowRows } from './kvcache';
import { slidingWindowOf } from './decoder-blocks';

/** Weight storage as load options name it. */
export type WeightStorage = 'auto' | 'f32' | 'f16' | 'bf16' | 'q8' | 'q4' | 'gguf';
/** A format webmoe packs weights in (weight-pack.ts). */
export type PackedFormat = 'f32' | 'f16' | 'bf16' | 'q8' | 'q4';
/** A concrete storage: a packed format, or 'gguf' (GGUF tensors' quantised blocks as in the file, the rest f32). */
export type StorageFormat = PackedFormat | 'gguf';

/** What the plan needs of one checkpoint tensor (a safetensors header entry; GGUF block tensors say their type and bytes). */
export interface PlanTensor { name: string; dtype: SafetensorsDtype; shape: number[]; gguf?: { type: string; bytes: number } }

/** The device facts the plan depends on (all optional: a plan without a device assumes a real GPU without limits). */
export interface PlanDevice {
  /** A CPU fallback adapter (SwiftShader): 'auto' is f32 there, and the MoE decode path covers more tokens. */
  isFallbackAdapter?: boolean;
  maxStorageBufferBindingSize?: number;
  maxBufferSize?: number;
  minStorageBufferOffsetAlignment?: number;
  /** Sizes the attention kernel's key blocks, so its split count (default: WebGPU's 16 KiB minimum). */
  maxComputeWorkgroupStorageSize?: number;
}

export interface PlanOptions {
  weights?: WeightStorage;
  /** KV cache capacity in tokens (default: max_position_embeddings, at most 4096). */
  contextLength?: number;
  /**
   * Tokens of one prefill forward, the chunk prompts run in (LoadOptions.prefillChunk; the activations
   * are sized for it). Default: min(DEFAULT_PREFILL_CHUNK, context), halved while a temporary would exceed
   * the device's binding limit (planMemory).
   */
  prefillTokens?: number;
  device?: PlanDevice;
  /** KV cache element format (LoadOptions.kvCache); default kvCacheFor(undefined, device). */
  kvCache?: KvFormat;
  /**
   * GPU memory the model may take, in bytes (LoadOptions.gpuMemoryBudget). When the full plan needs
   * more, the routed experts live in a per-MoE-layer expert cache of `offload.capacity` slots sized to
   * fit; everything else stays resident. Below the minimum that can run: GpuBudgetError.
   */
  gpuBudget?: number;
}

/** The expert cache a budget asks for (MemoryPlan.offload). */
export interface OffloadPlan {
  budgetBytes: number;
  /** Expert slots per MoE layer (the routed experts resident at once). */
  capacity: number;
  experts: number;
  moeLayers: number;
  /** GPU bytes of one routed expert in its storage format (one slot). */
  expertBytes: number;
  /** The slots of every MoE layer. */
  cacheBytes: number;
  /** The routed experts of every layer in their storage format (what the host store or the source holds). */
  routedBytes: number;
  /** Everything but the routed experts (plus the cache's own tables and temporaries). */
  residentBytes: number;
  /** The smallest budget that runs: resident + top-k slots per MoE layer. */
  minimumBytes: number;
}

/**
 * The KV cache format a load gets: the one asked for, else f16 on a GPU (half the bytes of the largest
 * per-token state, which every decode step reads whole) and f32 on a CPU fallback adapter. There the
 * halved bytes buy no speed: absorbed-MLA decode at V2-Lite shapes ran f16 / f32 = 1.28×, 0.98×, 1.04×
 * faster at caches of 512 / 2048 / 8192 in one run and 1.13×, 0.93×, 2.08× in the next (SwiftShader,
 * 2 shared cores: within the noise; `npm run bench -- --node --suites attention-kv`), the cache lives in
 * host memory (plentiful next to a GPU's), and f32 keeps the logits exact (the fixture's 1e-4; f16
 * moves them by up to 2.9e-3 there, test/gpu/model.test.ts).
 */
export function kvCacheFor(asked: unknown, device: PlanDevice | undefined): KvFormat {
  if (asked === undefined) return device?.isFallbackAdapter ? 'f32' : 'f16';
  if (asked !== 'f16' && asked !== 'f32') throw new ArgumentError(`kvCache must be 'f16' or 'f32', got ${JSON.stringify(asked)}`);
  return asked;
}

export interface MemoryPlan {
  model: { modelType: string; family: string; layers: number; hiddenSize: number; vocabSize: number; experts: number; expertsPerToken: number; parameters: number; activeParameters: number };
  /** Checkpoint tensor bytes by dtype (from the headers; empty when planned from the config alone). */
  checkpoint: { bytes: number; byDtype: Record<string, number> };
  storage: { weights: StorageFormat; experts: StorageFormat | 'none'; embedding: 'f32' | 'f16' | 'bf16' | 'gguf'; kvCache: KvFormat };
  /** Routed experts per stack buffer of a MoE layer (several when one stack would pass the binding limit). */
  expertStacks: number[];
  contextLength: number;
  prefillTokens: number;
  weights: { bytes: number; byFormat: Record<string, number>; byRole: Record<string, number> };
  /** `mtpBytes`: the MTP layers' own latent cache (allocated at the first speculative step), in gpuBytes too. */
  kvCache: { bytesPerToken: number; bytes: number; mtpBytes?: number };
  /** `largestBytes`: the biggest single temporary (its size class), which must fit one binding. */
  activations: { bytes: number; prefillBytes: number; decodeBytes: number; largestBytes: number };
  /** Runtime buffers: the sampler's scratch, uniform ring, counters, RoPE table, placeholders (and the MTP layers' KV cache). */
  runtime: { bytes: number };
  /** Multi-Token Prediction layers loaded with the model: their weights (in weights.byRole.mtp) and KV cache (in runtime). */
  mtp: { layers: number[]; weightBytes: number; kvBytes: number } | null;
  /** The biggest buffer that must be one binding (what maxStorageBufferBindingSize has to hold). */
  largestBinding: { name: string; bytes: number };
  /** Everything above: the GPU memory the model takes at full context. */
  gpuBytes: number;
  /** With a GPU budget the full plan passes: the expert cache that fits it (null: everything resident). */
  offload: OffloadPlan | null;
}

/** Tokens per prefill forward when LoadOptions.prefillChunk does not say (the GPU runner's default too). */
export const DEFAULT_PREFILL_CHUNK = 512;

const align4 = (n: number) => Math.max(4, Math.ceil(n / 4) * 4);
const roundUp = (v: number, m: number) => Math.ceil(v / m) * m;
/** Elements per vec4<u32> unit of a packed row (weight-pack.ts unitOf). */
const UNIT: Record<PackedFormat, number> = { f32: 4, f16: 8, bf16: 8, q8: 16, q4: 32 };
const BITS: Record<PackedFormat, number> = { f32: 32, f16: 16, bf16: 16, q8: 8, q4: 4 };
const GROUP = 32;
const ROW_CHUNK = 128;

/** u32 words per packed row (weight-pack.ts rowLayout). */
const rowWords = (f: PackedFormat, K: number) => ((f === 'f32' ? K : roundUp(K, UNIT[f])) * BITS[f]) / 32;

/** Buffers of one packed [N, K] weight upload (uploadOne): data padded to whole vec4<u32>, q8/q4 f16 scales. */
function packedBuffers(f: PackedFormat, N: number, K: number): { data: number; scales: number } {
  const words = N * rowWords(f, K);
  const data = roundUp(words, 4) * 4;
  const scales = f === 'q8' || f === 'q4' ? align4(Math.ceil((N * Math.ceil(K / GROUP)) / 2) * 4) : 0;
  return { data, scales };
}

/** GPU bytes of uploadWeight(format, N, K) with row chunks past `limit`, and the largest single buffer. */
export function weightUploadBytes(f: PackedFormat, N: number, K: number, limit = Infinity): { bytes: number; largest: number } {
  const whole = packedBuffers(f, N, K);
  if (Math.max(whole.data, whole.scales) <= limit) return { bytes: whole.data + whole.scales, largest: Math.max(whole.data, whole.scales) };
  const rows = Math.floor(limit / (rowWords(f, K) * 4) / ROW_CHUNK) * ROW_CHUNK;
  if (rows <= 0) return { bytes: whole.data + whole.scales, largest: rowWords(f, K) * 4 * ROW_CHUNK };
  let bytes = 0, largest = 0;
  for (let r0 = 0; r0 < N; r0 += rows) {
    const c = packedBuffers(f, Math.min(rows, N - r0), K);
    bytes += c.data + c.scales;
    largest = Math.max(largest, c.data, c.scales);
  }
  return { bytes, largest };
}

/** Buffers of one MoE layer's routed experts (uploadExperts): stacked gate|up [E, 2I, D], down [E, D, I], f16 scales. */
export function expertStackBuffers(f: PackedFormat, E: number, I: number, D: number): { name: string; bytes: number }[] {
  const rowBytes = (K: number) => (f === 'f32' ? 4 * K : f === 'f16' || f === 'bf16' ? 2 * K : rowWords(f, K) * 4);
  const quant = f === 'q8' || f === 'q4';
  const out = [
    { name: 'gate_up', bytes: align4(E * 2 * I * rowBytes(D)) },
    { name: 'down', bytes: align4(E * D * rowBytes(I)) },
  ];
  if (quant) {
    out.push({ name: 'gate_up.scales', bytes: align4(Math.max(16, E * 2 * I * Math.ceil(D / GROUP) * 2)) });
    out.push({ name: 'down.scales', bytes: align4(Math.max(16, E * D * Math.ceil(I / GROUP) * 2)) });
  }
  return out;
}

/**
 * Experts per stack (kernels/moe.ts expertsPerStack): as many as keep every buffer of a stack within
 * `limit`, then evened out over the fewest stacks; 0 when one expert does not fit.
 */
export function expertsPerStack(f: PackedFormat, E: number, I: number, D: number, limit: number): number {
  const rowBytes = (K: number) => (f === 'f32' ? 4 * K : f === 'f16' || f === 'bf16' ? 2 * K : rowWords(f, K) * 4);
  const perExpert = [2 * I * rowBytes(D), D * rowBytes(I)];
  if (f === 'q8' || f === 'q4') perExpert.push(2 * I * Math.ceil(D / GROUP) * 2, D * Math.ceil(I / GROUP) * 2);
  const n = Math.min(...perExpert.map((b) => Math.floor(limit / b)));
  if (n < 1) return 0;
  const stacks = Math.ceil(E / Math.min(n, E));
  return Math.ceil(E / stacks);
}

/** E experts in stacks of `per` (the last may be smaller); one stack of all when per < 1 (the fit check reports it). */
function splitStacks(E: number, per: number): number[] {
  const p = Math.max(1, per), out: number[] = [];
  for (let e0 = 0; e0 < E; e0 += p) out.push(Math.min(p, E - e0));
  return out;
}

/** Bytes of one MXFP4 row of K values (whole 32-value blocks, 16 bytes each). */
const mxfp4RowBytes = (K: number) => rowLayout('mxfp4', K).rowWords * 4;

/**
 * GPT-OSS's MXFP4 experts per stack (kernels/moe.ts expertsPerStack 'mxfp4': block bytes, one E8M0
 * byte per row and block, the two f32 biases, each buffer within `limit`), evened out over the fewest stacks.
 */
function mxfp4ExpertsPerStack(E: number, I: number, D: number, limit: number): number {
  const per = [2 * I * mxfp4RowBytes(D), D * mxfp4RowBytes(I), 2 * I * Math.ceil(D / 32), D * Math.ceil(I / 32), 2 * I * 4, D * 4];
  const n = Math.min(...per.map((b) => Math.floor(limit / b)));
  if (n < 1) return 0;
  return Math.ceil(E / Math.ceil(E / Math.min(n, E)));
}

/** The stacks of one MoE layer: experts per stack, and each stack's expert count. */
export function expertStacks(f: PackedFormat, E: number, I: number, D: number, limit = Infinity): number[] {
  // One expert past the limit: the load fails, and the plan's largest binding is that one expert.
  return expertCounts(E, Math.max(1, expertsPerStack(f, E, I, D, limit)));
}

/** Expert counts of the stacks of E experts, `per` a stack (the last may hold fewer). */
function expertCounts(E: number, per: number): number[] {
  const out: number[] = [];
  for (let e0 = 0; e0 < E; e0 += per) out.push(Math.min(per, E - e0));
  return out;
}

/**
 * 'auto' storage (model/assemble.ts): a checkpoint whose projections are all F16 stays f16 on a real GPU,
 * all BF16 bf16 (both exact); an FP8 checkpoint (e4m3 projections with weight_scale_inv, 16-bit for the
 * rest) becomes q8 at load, tensor by tensor (8 bits a weight as stored, plus f16 scales per 32: never
 * widened to f32); anything else (F32, mixed 16-bit), and anything on a CPU fallback adapter, runs as f32.
 */
export function resolveStorage(w: WeightStorage | undefined, tensors: Iterable<PlanTensor> | null, device?: PlanDevice): StorageFormat {
  const s = w ?? 'auto';
  if (s !== 'auto') return s;
  const linear = tensors ? [...tensors].filter((t) => isProjection(t.name)) : [];
  // A GGUF in quantised blocks runs on them (on every adapter: f32 would take 4-8× the memory).
  if (linear.some((t) => t.gguf)) return 'gguf';
  if (device?.isFallbackAdapter) return 'f32';
  if (linear.length > 0 && linear.every((t) => t.dtype === 'F16')) return 'f16';
  if (linear.length > 0 && linear.every((t) => t.dtype === 'BF16')) return 'bf16';
  if (linear.some((t) => t.dtype === 'F8_E4M3') && linear.every((t) => t.dtype === 'F8_E4M3' || t.dtype === 'BF16' || t.dtype === 'F16')) return 'q8';
  return 'f32';
}

/** The embedding table's storage (gpu-backend embedding): f32, bf16 with bf16 weights, else f16. */
export function embeddingStorage(s: StorageFormat): 'f32' | 'f16' | 'bf16' | 'gguf' {
  // gguf: a quantised table stays blocks (ggufEmbedding gathers it), an F32/F16 one f32.
  if (s === 'gguf') return 'gguf';
  return s === 'f32' ? 'f32' : s === 'bf16' ? 'bf16' : 'f16';
}

/** Routed experts' storage (gpu-backend expertFormat): the weight storage when D and I are multiples of 4, else f32. */
export function expertStorage(cfg: ModelConfig, s: StorageFormat): StorageFormat {
  return cfg.hiddenSize % 4 === 0 && cfg.moeIntermediateSize % 4 === 0 ? s : 'f32';
}


/**
 * Whether a MoE layer's routed experts stay GGUF blocks under 'gguf' storage (load.ts + gpu-backend.ts):
 * every expert matrix in quantised blocks, gate and up of one type, down of one type; else f32 stacks.
 */
export function ggufExpertLayer(cfg: ModelConfig, byName: Map<string, PlanTensor>, layer: number): boolean {
  const types = { gu: new Set<string>(), down: new Set<string>() };
  // Granite's stacked experts are re-stacked from the file (never its blocks).
  if (!hasRole(cfg, 'expert_gate')) return false;
  for (let e = 0; e < cfg.nRoutedExperts; e++) {
    for (const proj of ['gate', 'up', 'down'] as const) {
      const t = byName.get(tensorName(`expert_${proj}`, layer, e, cfg));
      if (!t?.gguf) return false;
      types[proj === 'down' ? 'down' : 'gu'].add(t.gguf.type);
    }
  }
  return types.gu.size === 1 && types.down.size === 1;
}

/** The routed experts' storage under 'gguf': gguf when every MoE layer's experts stay blocks, else f32 (some or all layers). */
export function ggufExpertStorage(cfg: ModelConfig, byName: Map<string, PlanTensor>): 'gguf' | 'f32' {
  return moeLayers(cfg).every((l) => ggufExpertLayer(cfg, byName, l)) ? 'gguf' : 'f32';
}

/** TempPool size class (gpu/buffers.ts): powers of two from 256 B to 1 MiB, then whole MiB. */
export function tempSizeClass(bytes: number): number {
  if (bytes <= 1 << 20) return Math.max(256, 2 ** Math.ceil(Math.log2(Math.max(1, bytes))));
  return Math.ceil(bytes / (1 << 20)) * (1 << 20);
}

/**
 * The temporaries one forward of S tokens at positions [past, past + S) acquires (bytes as requested,
 * before size classes), in order: gpu-backend's activations and the kernels' scratch (mla, moe,
 * attention). `global` (the token ids and the residual stream) lives the whole step; each layer's
 * list is released when the layer is recorded (GpuBackend.endLayer), so the next layer reuses it; the
 * `tail` (final norm, logits) comes after the last layer's release.
 */
export interface ForwardTemps { global: number[]; layers: number[][]; tail: number[] }

/** The acquisitions of a forward in order. */
export const flatTemps = (f: ForwardTemps): number[] => [...f.global, ...f.layers.flat(), ...f.tail];

export function forwardTemps(cfg: ModelConfig, S: number, past: number, o: { lastOnly: boolean; isFallbackAdapter?: boolean; expertStacks?: number[]; maxComputeWorkgroupStorageSize?: number; kvCache?: KvFormat; offloadSlots?: number }): ForwardTemps {
  const dev: AttentionDevice = { adapter: { isFallbackAdapter: o.isFallbackAdapter ?? false }, caps: { maxComputeWorkgroupStorageSize: o.maxComputeWorkgroupStorageSize ?? 16384 } };
  const global: number[] = [S * 4, Math.max(1, S * cfg.hiddenSize) * 4]; // embed: ids, h
  const layers: number[][] = [];
  let t: number[] = [];
  const D = cfg.hiddenSize, H = cfg.numHeads, nope = cfg.qkNopeHeadDim, rope = cfg.qkRopeHeadDim, dv = cfg.vHeadDim, r = cfg.kvLoraRank;
  const qk = nope + rope, T = past + S;
  const f = (rows: number, cols: number) => t.push(Math.max(1, rows * cols) * 4);
  // The token count up to which the experts (webmoe's stacks and GGUF blocks alike) run their decode
  // path (moe.ts moeDecodeMaxTokens); past it the grouped path's temporaries.
  const moeDecodeMax = (E: number) => (o.isFallbackAdapter ? Math.max(4, Math.min(64, Math.floor((24 * E) / Math.max(1, cfg.numExpertsPerTok)))) : 4);
  // Within it, a CPU fallback adapter runs the batched path (moe.ts moeExpertsMode: ≥ 1 entry per expert
  // of the pass, more than one token), whose temporaries are the grouped path's.
  const moeDecodeOnly = (E: number) => S <= moeDecodeMax(E) && !(o.isFallbackAdapter && S > 1 && S * cfg.numExpertsPerTok >= E);
  const stacks = o.expertStacks ?? [cfg.nRoutedExperts];
  for (let l = 0; l < cfg.numLayers; l++) {
    t = [];
    layers.push(t);
    f(S, D); // input norm
    if (cfg.attention === 'gqa') {
      const q = H * cfg.headDim, kv = cfg.numKvHeads * cfg.headDim;
      f(S, q); f(S, kv); f(S, kv); // q, k, v
      if (cfg.qkNorm === 'full') { f(S, q); f(S, kv); } // OLMoE's norms make new q, k
    } else {
      if (cfg.qLoraRank === null) f(S, H * qk);
      else { f(S, cfg.qLoraRank); f(S, cfg.qLoraRank); f(S, H * qk); }
      f(S, r + rope); // kv_a
    }
    f(S, H * dv); // attention output
    t.push(...attentionTemps(cfg, S, T, dev, o.kvCache ?? 'f32'));
    f(S, D); // o_proj
    f(S, D); // post-attention norm
    if (isMoeLayer(cfg, l)) {
      const K = cfg.numExpertsPerTok, E = cfg.nRoutedExperts, I = cfg.moeIntermediateSize, Is = cfg.sharedExpertIntermediateSize;
      t.push(S * K * 4, S * K * 4, S * E * 4); // ids, weights, router logits
      if (Is > 0) { f(S, Is); f(S, Is); f(S, Is); f(S, D); }
      if (cfg.sharedExpertGate) f(S, 1); // the shared expert's gate logit
      f(S, D); // out
      const N = S * K;
      if (o.offloadSlots) {
        // model/gpu-backend.ts moeSteps: the routing readback copy (with the next layer's predicted ids),
        // the next layer's gate (ids, weights, logits), the slot-remapped ids and weights, and when the
        // tokens need more experts than the slots hold, their slices (x, shared, out); then one pass over
        // the slots in the mode the full layer would take.
        t.push(2 * N * 4, N * 4, N * 4, S * E * 4, N * 4, N * 4);
        f(S, D); f(S, D); f(S, D);
        if (moeDecodeOnly(E)) t.push(N * I * 4);
        else t.push(N * 4, N * 4, 2 * (o.offloadSlots + 1) * 4, N * I * 4, N * D * 4);
        continue;
      }
      stacks.forEach((Eg, i) => {
        // Several stacks: the routing remapped to each (ids, weights), and the running sum between passes.
        if (stacks.length > 1) { t.push(N * 4, N * 4); if (i < stacks.length - 1) f(S, D); }
        if (moeDecodeOnly(Eg)) t.push(N * I * 4);
        else t.push(N * 4, N * 4, 2 * (Eg + 1) * 4, N * I * 4, N * D * 4);
      });
    } else {
      f(S, cfg.intermediateSize); f(S, cfg.intermediateSize); f(S, cfg.intermediateSize); f(S, D);
    }
  }
  t = [];
  const rows = o.lastOnly ? 1 : S;
  if (o.lastOnly) f(1, D);
  f(rows, D); // final norm
  f(rows, cfg.vocabSize); // logits
  return { global, layers, tail: t };
}

/** The temporaries of one layer's attention core for S queries over T positions (the part that grows with T). */
export function attentionTemps(cfg: ModelConfig, S: number, T: number, dev: AttentionDevice, kvCache: KvFormat = 'f32'): number[] {
  const H = cfg.numHeads, nope = cfg.qkNopeHeadDim, rope = cfg.qkRopeHeadDim, dv = cfg.vHeadDim, r = cfg.kvLoraRank;
  const qk = nope + rope;
  const t: number[] = [];
  if (cfg.attention === 'gqa') {
    // kernels/attention.ts mhaAttention: the new rows are written into the cache, queries attend in place
    // (split-K partials only; decode for S ≤ 4, FlashAttention otherwise).
    splitScratch(t, dev, { S, heads: H, kvHeads: cfg.numKvHeads, dQk: cfg.headDim, dV: cfg.headDim, T, sharedRows: false });
    return t;
  }
  // mla.ts: absorbed attention for short steps or when the expanded K/V would pass 64 MiB, else naive.
  const naiveBytes = 4 * T * H * (2 * nope + dv + rope);
  if (S <= 8 || naiveBytes > 64 << 20) {
    t.push(S * H * (r + rope) * 4, S * H * r * 4);
    if (S <= MLA_DECODE_MAX_S) {
      // mla_decode's split partials (mla-plan.ts).
      const bytes = mlaDecodeScratchBytes({ S, H, kvLora: r }, mlaDecodePlan(dev, { H, kvLora: r, rope, S, T }).splits);
      if (bytes > 0) t.push(bytes);
    } else {
      splitScratch(t, dev, { S, heads: H, kvHeads: 1, dQk: r + rope, dV: r, T, sharedRows: true });
    }
  } else {
    // An f16 cache is first unpacked to f32 rows [T, kv_lora + rope] for the kv_b matmul.
    if (kvCache === 'f16') t.push(T * (r + rope) * 4);
    t.push(T * H * (nope + dv) * 4, T * H * qk * 4);
    splitScratch(t, dev, { S, heads: H, kvHeads: H, dQk: qk, dV: dv, T, sharedRows: false });
  }
  return t;
}

/**
 * Split-K partials of the attention kernels: the split count attention.ts's plan picks for this call
 * (flash_blocks: blocksConfig + rowsSplits; else flash_rows: rowsConfig + rowsSplits; the tiled kernel
 * when neither fits workgroup memory), as attentionScratchBytes sizes them.
 */
function splitScratch(t: number[], dev: AttentionDevice, a: { S: number; heads: number; kvHeads: number; dQk: number; dV: number; T: number; sharedRows: boolean }): void {
  const rows = a.S * (a.heads / a.kvHeads);
  const bc = blocksConfig(dev, rows, a.dQk, a.dV);
  const rc = bc ? null : rowsConfig(dev, rows, a.dQk, a.dV, a.sharedRows);
  let splits: number;
  if (bc) splits = rowsSplits(dev, a.kvHeads * Math.ceil(rows / bc.FR), a.T, bc.FBK);
  else if (rc) splits = rowsSplits(dev, a.kvHeads * Math.ceil(rows / rc.DR), a.T, rc.DBK);
  else {
    const BQ = rows <= 4 ? 4 : 16, BK = BQ === 4 ? 64 : 32;
    splits = autoSplits(a.kvHeads * Math.ceil(rows / BQ), a.T, BK);
  }
  const bytes = attentionScratchBytes(a, splits);
  if (bytes > 0) t.push(bytes);
}

const classCounts = (list: number[]) => {
  const count = new Map<number, number>();
  for (const b of list) { const c = tempSizeClass(b); count.set(c, (count.get(c) ?? 0) + 1); }
  return count;
};

/**
 * Pool bytes after these steps ran: per size class, the most buffers any one step held at once (its
 * global temporaries plus the largest count of any one layer or the tail, which reuse each other's).
 * A plain list is one scope (nothing released before the step's end).
 */
export function tempPoolBytes(steps: (ForwardTemps | number[])[]): number {
  const most = new Map<number, number>();
  for (const step of steps) {
    const f: ForwardTemps = Array.isArray(step) ? { global: step, layers: [], tail: [] } : step;
    const g = classCounts(f.global);
    const scoped = new Map<number, number>();
    for (const scope of [...f.layers, f.tail]) for (const [c, n] of classCounts(scope)) scoped.set(c, Math.max(scoped.get(c) ?? 0, n));
    for (const c of new Set([...g.keys(), ...scoped.keys()])) most.set(c, Math.max(most.get(c) ?? 0, (g.get(c) ?? 0) + (scoped.get(c) ?? 0)));
  }
  let bytes = 0;
  for (const [c, n] of most) bytes += c * n;
  return bytes;
}

const ROLE_GROUP: Partial<Record<TensorRole, string>> = {
  embed: 'embedding', lm_head: 'lm_head', kv_b: 'kv_b', router: 'router', router_bias: 'router',
  q: 'attention', q_a: 'attention', q_b: 'attention', kv_a: 'attention', o: 'attention', k: 'attention', v: 'attention',
  shared_expert_gate: 'shared_experts', experts_gate_up: 'routed_experts', experts_down: 'routed_experts',
  mlp_gate: 'dense_mlp', mlp_up: 'dense_mlp', mlp_down: 'dense_mlp',
  shared_gate: 'shared_experts', shared_up: 'shared_experts', shared_down: 'shared_experts',
  expert_gate: 'routed_experts', expert_up: 'routed_experts', expert_down: 'routed_experts',
};

/** The smallest prefill chunk the device-sized default goes down to (below it, prefill is mostly per-token overhead). */
export const MIN_DEVICE_PREFILL_CHUNK = 16;

/**
 * The plan of `cfg` (with the checkpoint's tensor headers when known) under `opts`.
 *
 * Without `prefillTokens`, the chunk is sized from the device: DEFAULT_PREFILL_CHUNK, halved while one
 * of the chunk's temporaries would exceed the device's binding (or buffer) limit, down to
 * MIN_DEVICE_PREFILL_CHUNK. A prefill temporary grows with the chunk (e.g. the routed rows of a MoE
 * layer, chunk × top-k × moe_intermediate), so a device with small bindings runs shorter chunks instead
 * of refusing the model. `plan.prefillTokens` is the chunk chosen; the runner takes it.
 */
export function planMemory(cfg: ModelConfig, tensors: Iterable<PlanTensor> | null, opts: PlanOptions = {}): MemoryPlan {
  const list = tensors ? [...tensors] : null;
  const dev = opts.device;
  const limit = Math.min(dev?.maxStorageBufferBindingSize ?? Infinity, dev?.maxBufferSize ?? Infinity);
  if (opts.prefillTokens !== undefined || limit === Infinity) return planAtChunk(cfg, list, opts);
  for (let chunk = DEFAULT_PREFILL_CHUNK; ; chunk >>= 1) {
    const plan = planAtChunk(cfg, list, { ...opts, prefillTokens: chunk });
    if (plan.activations.largestBytes <= limit || chunk <= MIN_DEVICE_PREFILL_CHUNK) return plan;
  }
}

function planAtChunk(cfg: ModelConfig, list: PlanTensor[] | null, opts: PlanOptions): MemoryPlan {
  const storage = resolveStorage(opts.weights, list, opts.device);
  const byName = new Map((list ?? []).map((t) => [t.name, t]));
  const experts = storage === 'gguf' ? ggufExpertStorage(cfg, byName) : expertStorage(cfg, storage);
  // An F32/F16 table in a GGUF stays f32 under 'gguf' (gpu-backend embedding).
  const embedding = storage === 'gguf' && !byName.get('model.embed_tokens.weight')?.gguf ? 'f32' : embeddingStorage(storage);
  const contextLength = opts.contextLength ?? Math.min(cfg.maxPositionEmbeddings, 4096);
  const prefillTokens = Math.max(1, Math.min(opts.prefillTokens ?? DEFAULT_PREFILL_CHUNK, contextLength));
  const dev = opts.device ?? {};
  const limit = Math.min(dev.maxStorageBufferBindingSize ?? Infinity, dev.maxBufferSize ?? Infinity);

  const byFormat: Record<string, number> = {}, byRole: Record<string, number> = {};
  let weightBytes = 0;
  let largest = { name: '', bytes: 0 };
  const bind = (name: string, bytes: number) => { if (bytes > largest.bytes) largest = { name, bytes }; };
  const put = (format: string, role: string, bytes: number) => {
    byFormat[format] = (byFormat[format] ?? 0) + bytes;
    byRole[role] = (byRole[role] ?? 0) + bytes;
    weightBytes += bytes;
  };
  let parameters = 0, routed = 0;
  /** A matrix [N, K] of `name` in its storage (`group`: its role group in byRole). */
  const putMatrix = (name: string, role: string, group: string, N: number, K: number) => {
    const blocks = byName.get(name)?.gguf;
    if (storage === 'gguf' && blocks && role !== 'kv_b') {
      // gguf-linear.ts uploadGgufWeight: row chunks past the binding limit.
      const rowBytes = blocks.bytes / N, rows = Math.max(1, ggufChunkRows(N, rowBytes, limit)); // < 1: one row passes the limit (the fit check says so)
      const full = Math.floor(N / rows), rest = N - full * rows;
      const b = full * ggufBufferBytes(rows * rowBytes) + (rest ? ggufBufferBytes(rest * rowBytes) : 0);
      put('gguf', group, b);
      bind(`${name} (${blocks.type} blocks${rows < N ? ', largest row chunk' : ''})`, ggufBufferBytes(rows * rowBytes));
      return;
    }
    const f: PackedFormat = role === 'embed' ? (embedding === 'gguf' ? 'f32' : embedding) : role === 'kv_b' || storage === 'gguf' ? 'f32' : storage;
    // kv_b is read whole by the MLA kernels: it cannot be chunked.
    const u = role === 'kv_b' ? weightUploadBytes(f, N, K) : weightUploadBytes(f, N, K, limit);
    put(f, group, u.bytes);
    bind(role === 'kv_b' ? `${name} (one f32 binding)` : `${name}${u.bytes > u.largest ? ' (largest row chunk)' : ''}`, u.largest);
  };
  /** A tensor that is not a routed expert (those are stacked per layer): in `group`, or its role's. */
  const putTensor = (t: ReturnType<typeof modelTensors> extends Generator<infer X> ? X : never, group = ROLE_GROUP[t.spec.role] ?? 'norms') => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const role = t.spec.role;
    if (role === 'router' || role === 'shared_expert_gate' || role === 'router_bias') put('f32', group, align4(n * 4));
    else if (t.kind === 'vector') put('f32', group, roundUp(n, 4) * 4);
    else putMatrix(t.name, role, group, t.shape[0], t.shape[1]);
  };
  for (const t of modelTensors(cfg)) {
    // GPT-OSS's MXFP4 stacks: a block byte holds two parameters, scales none.
    const n = t.shape.reduce((a, b) => a * b, 1) * (t.spec.ossExperts === 'blocks' ? 2 : t.spec.ossExperts === 'scales' ? 0 : 1);
    parameters += n;
    if (t.expert >= 0 || t.spec.stacked || t.spec.ossExperts) { routed += n; continue; } // stacked per layer below
    putTensor(t);
  }
  const moe = moeLayers(cfg);
  // The largest binding but the routed experts' (an expert cache replaces their stacks).
  const largestResident = { ...largest };
  // Layers whose experts are not GGUF blocks are f32 stacks (experts is then 'f32').
  const packedExperts: PackedFormat = experts === 'gguf' ? 'f32' : experts;
  const E0 = cfg.nRoutedExperts, I0 = cfg.moeIntermediateSize, D0 = cfg.hiddenSize;
  const stacks = !E0 ? [] : experts === 'gguf' ? [E0]
    : cfg.family === 'gpt_oss' && cfg.quantization?.method === 'mxfp4' ? splitStacks(E0, mxfp4ExpertsPerStack(E0, I0, D0, limit))
    : expertStacks(packedExperts, E0, I0, D0, limit);
  /**
   * GPT-OSS (gpu-backend.ts gptOssMoe): MXFP4 stacks as uploadMxfp4ExpertGroups makes them (block bytes,
   * E8M0 scale bytes, each padded to 16 bytes; f32 gate|up and down biases), whatever the storage; an
   * unquantised checkpoint's experts in the storage's stacks plus the two f32 biases.
   */
  const putGptOssExperts = (l: number) => {
    const pad16 = (b: number) => Math.max(16, Math.ceil(b / 16) * 16);
    const rowD = mxfp4RowBytes(D0), rowI = mxfp4RowBytes(I0), GD = Math.ceil(D0 / 32), GI = Math.ceil(I0 / 32);
    for (const n of stacks) {
      const bufs = mxfp4
        ? [['gate_up', pad16(n * 2 * I0 * rowD)], ['down', pad16(n * D0 * rowI)], ['gate_up.scales', pad16(n * 2 * I0 * GD)], ['down.scales', pad16(n * D0 * GI)]] as const
        : expertStackBuffers(packedExperts, n, I0, D0).map((b) => [b.name, b.bytes] as const);
      const f = mxfp4 ? 'mxfp4' : packedExperts;
      for (const [name, bytes] of bufs) {
        put(f, 'routed_experts', bytes);
        bind(`model.layers.${l}.mlp.experts.*: stacked ${name} (${n} experts, ${f})`, bytes);
      }
      put('f32', 'routed_experts', align4(n * 2 * I0 * 4) + align4(n * D0 * 4));
    }
  };
  const mxfp4 = cfg.family === 'gpt_oss' && cfg.quantization?.method === 'mxfp4';
  // GGUF experts: the stacks of the layer split the most (each layer's types and so bytes may differ).
  let ggufStacks = stacks;
  for (const l of moe) {
    if (cfg.family === 'gpt_oss') { putGptOssExperts(l); continue; }
    if (storage === 'gguf' && ggufExpertLayer(cfg, byName, l)) {
      // gguf-moe.ts uploadGgufExperts: gate then up (from a 4-byte aligned offset) in one buffer, down in
      // another; past the binding limit, stacks of whole experts that each fit (one expert past it: the
      // fit check fails on that expert's buffer).
      const one = (proj: 'gate' | 'up' | 'down') => byName.get(tensorName(`expert_${proj}`, l, 0, cfg))!.gguf!.bytes;
      const E = cfg.nRoutedExperts, per = Math.max(1, ggufExpertsPerStack(E, one('gate'), one('up'), one('down'), limit));
      const layerStacks = expertCounts(E, per);
      if (layerStacks.length > ggufStacks.length) ggufStacks = layerStacks;
      for (const n of layerStacks) {
        const [gateUp, down] = ggufExpertStackBytes(n, one('gate'), one('up'), one('down'));
        put('gguf', 'routed_experts', gateUp + down);
        const what = n < E ? `, ${n} experts` : '';
        bind(`model.layers.${l}.mlp.experts.*: stacked gate|up (GGUF blocks${what})`, gateUp);
        bind(`model.layers.${l}.mlp.experts.*: stacked down (GGUF blocks${what})`, down);
      }
      continue;
    }
    for (const Eg of stacks) {
      for (const b of expertStackBuffers(packedExperts, Eg, cfg.moeIntermediateSize, cfg.hiddenSize)) {
        put(packedExperts, 'routed_experts', b.bytes);
        bind(`model.layers.${l}.mlp.experts.*: stacked ${b.name} (${Eg} experts, ${packedExperts})`, b.bytes);
      }
    }
  }
  // Multi-Token Prediction layers (model/load.ts loads those the checkpoint has; a plan from the config
  // alone counts none): the decoder block as a main layer's, its routed experts resident (an
  // expert cache serves the main layers), eh_proj as its two [D, D] halves, norms f32, the optional copies
  // of the embedding and head. Group 'mtp'; their own KV cache rows below. Not in `parameters`.
  const mtp = cfg.numNextnPredictLayers > 0 ? mtpLayersPresent(cfg, (n) => byName.has(n)) : [];
  for (const l of mtp) {
    for (const t of layerTensors(cfg, l)) if (t.expert < 0 && !t.spec.stacked) putTensor(t, 'mtp');
    if (isMoeLayer(cfg, l) && cfg.nRoutedExperts) {
      for (const Eg of expertStacks(packedExperts, cfg.nRoutedExperts, cfg.moeIntermediateSize, cfg.hiddenSize, limit)) {
        for (const b of expertStackBuffers(packedExperts, Eg, cfg.moeIntermediateSize, cfg.hiddenSize)) put(packedExperts, 'mtp', b.bytes);
      }
    }
    const D = cfg.hiddenSize, has = (n: string) => byName.has(n);
    put('f32', 'mtp', 3 * roundUp(D, 4) * 4); // enorm, hnorm, shared_head.norm
    const eh = mtpTensorName('mtp_eh_proj', l);
    putMatrix(`${eh}[:, :D]`, 'mtp_eh_proj', 'mtp', D, D);
    putMatrix(`${eh}[:, D:]`, 'mtp_eh_proj', 'mtp', D, D);
    if (has(mtpTensorName('mtp_embed', l))) putMatrix(mtpTensorName('mtp_embed', l), 'embed', 'mtp', cfg.vocabSize, D);
    if (has(mtpTensorName('mtp_head', l))) putMatrix(mtpTensorName('mtp_head', l), 'lm_head', 'mtp', cfg.vocabSize, D);
  }
  const perExpert = moe.length && cfg.nRoutedExperts ? routed / (moe.length * cfg.nRoutedExperts) : 0;
  const activeParameters = parameters - routed + perExpert * cfg.numExpertsPerTok * moe.length;

  // KV cache (model/kvcache.ts: f16 rows padded to whole words): MLA one [context, kv_lora + rope] buffer
  // per layer; GQA a K and a V buffer [context, kv_heads · head_dim] per layer.
  const kvCache = kvCacheFor(opts.kvCache, opts.device);
  const kvWidths = cfg.attention === 'gqa' ? [cfg.numKvHeads * cfg.headDim, cfg.numKvHeads * cfg.headDim] : [cfg.kvLoraRank + cfg.qkRopeHeadDim];
  const partBytes = kvWidths.map((w) => kvRowStride(w, kvCache) * kvElementBytes(kvCache));
  const rowBytes = partBytes.reduce((a, b) => a + b, 0);
  const kvLayer = partBytes.reduce((a, b) => a + align4(contextLength * b), 0);
  // Sliding-window layers (GQA) hold windowRows rows, not the context (kvcache.ts MhaKvCache).
  const windowed = (l: number) => {
    const W = cfg.attention === 'gqa' ? slidingWindowOf(cfg, l) : 0;
    return W && windowRows(W, prefillTokens, contextLength) < contextLength ? windowRows(W, prefillTokens, contextLength) : 0;
  };
  const fullLayers = Array.from({ length: cfg.numLayers }, (_, l) => l).filter((l) => !windowed(l)).length;
  const kvBytes = Array.from({ length: cfg.numLayers }, (_, l) => windowed(l) ? partBytes.reduce((a, b) => a + align4(windowed(l) * b), 0) : kvLayer).reduce((a, b) => a + b, 0);
  // The MTP layers' own latent cache (gpu-backend.ts mtpCache: one layer per predicted depth, the main cache's capacity).
  const mtpKvBytes = mtp.length ? Math.max(1, cfg.numNextnPredictLayers) * kvLayer : 0;
  const kvBinding = { name: cfg.attention === 'gqa' ? 'KV cache (one layer\'s K at full context)' : 'KV cache (one layer at full context)', bytes: align4(contextLength * partBytes[0]) };
  bind(kvBinding.name, kvBinding.bytes);

  const fallback = dev.isFallbackAdapter ?? false;
  const mtpPlan = mtp.length ? { layers: mtp, weightBytes: byRole.mtp ?? 0, kvBytes: mtpKvBytes } : null;
  const common = { mtp: mtpPlan, model: { modelType: cfg.modelType, family: familyLabel(cfg), layers: cfg.numLayers, hiddenSize: cfg.hiddenSize, vocabSize: cfg.vocabSize, experts: cfg.nRoutedExperts, expertsPerToken: cfg.numExpertsPerTok, parameters, activeParameters },
    checkpoint: checkpointBytes(list), storage: { weights: storage, experts: cfg.nRoutedExperts ? experts : 'none' as const, embedding, kvCache }, contextLength, prefillTokens };
  const full = planTail(cfg, { ...common, expertStacks: experts === 'gguf' ? ggufStacks : stacks, weights: { bytes: weightBytes, byFormat, byRole }, largest, kvBytes, rowBytes, fullLayers, fallback, dev, offloadSlots: 0, extraRuntime: mtpKvBytes });
  if (opts.gpuBudget === undefined) return full;
  const budget = opts.gpuBudget;
  if (typeof budget !== 'number' || !Number.isFinite(budget) || budget <= 0) throw new ArgumentError(`gpuMemoryBudget must be a positive number of bytes, got ${String(budget)}`);
  if (full.gpuBytes <= budget || !moe.length || !cfg.nRoutedExperts) return full;
  if (cfg.family === 'gpt_oss' && !mxfp4) throw new UnsupportedError(`expert offload covers GPT-OSS's MXFP4 experts (the release's); this checkpoint's experts are unquantised: it needs ${mib(full.gpuBytes)} MiB, over the GPU budget of ${mib(budget)} MiB; load it without a GPU budget on a device with that much memory, or the MXFP4 release, or with a shorter --context`);
  // GPT-OSS: slots of MXFP4 blocks, scale bytes and f32 biases (kernels/moe-slots.ts slotBytes 'mxfp4').
  const slotFormat = mxfp4 ? 'mxfp4' : packedExperts;
  if (experts === 'gguf') throw new UnsupportedError(`expert offload keeps routed experts in webmoe's stacks; this GGUF's experts stay GGUF blocks ('gguf' storage): load it with --weights q4 or q8 to offload, or without a GPU budget`);
  // One slot = one expert of a stack (every buffer of it); the slots of a layer are one stack, so at
  // most what one binding holds.
  const slot = slotStackBuffers(slotFormat, 1, cfg.moeIntermediateSize, cfg.hiddenSize).reduce((a, b) => a + b.bytes, 0);
  const routedBytes = byRole.routed_experts ?? 0;
  const K = cfg.numExpertsPerTok, E = cfg.nRoutedExperts;
  const withSlots = (C: number) => {
    const sized = stackOf(slotFormat, C, cfg);
    // (GPT-OSS's routed bytes are MXFP4 blocks and scales plus f32 biases; its slots likewise, booked as mxfp4.)
    const byF = { ...byFormat, [slotFormat]: (byFormat[slotFormat] ?? 0) + sized.bytes };
    if (mxfp4) { byF.mxfp4 -= byFormat.mxfp4 ?? 0; byF.f32 = (byF.f32 ?? 0) - (routedBytes - (byFormat.mxfp4 ?? 0)); } else byF[slotFormat] -= routedBytes;
    const w = { bytes: weightBytes - routedBytes + sized.bytes, byFormat: byF, byRole: { ...byRole, routed_experts: sized.bytes } };
    // Slot tables: one [E] u32 per MoE layer.
    const tables = moe.length * align4(E * 4);
    const lg = [largestResident, kvBinding, sized.largest].reduce((x, y) => (y.bytes > x.bytes ? y : x));
    const p = planTail(cfg, { ...common, expertStacks: [C], weights: w, largest: lg, kvBytes, rowBytes, fullLayers, fallback, dev, offloadSlots: C, extraRuntime: tables + mtpKvBytes });
    return p;
  };
  const perLayer = (mxfp4 ? mxfp4ExpertsPerStack(E, cfg.moeIntermediateSize, cfg.hiddenSize, limit) : expertsPerStack(packedExperts, E, cfg.moeIntermediateSize, cfg.hiddenSize, limit)) || 1;
  const minimum = withSlots(K);
  // A small model's experts can weigh less than the cache's tables and scratch: then offload saves
  // nothing and the least it runs in is the full plan.
  if (minimum.gpuBytes >= full.gpuBytes) {
    throw new GpuBudgetError(`a GPU budget of ${mib(budget)} MiB cannot run this model: it needs ${mib(full.gpuBytes)} MiB with every expert resident, and expert offload would not save memory (top-${K} slots per MoE layer with the cache's tables take ${mib(minimum.gpuBytes)} MiB): the minimum is ${mib(full.gpuBytes)} MiB (or a shorter --context, or smaller --weights)`, budget, full.gpuBytes);
  }
  if (minimum.gpuBytes > budget) {
    throw new GpuBudgetError(`a GPU budget of ${mib(budget)} MiB cannot run this model: what stays resident (attention, shared experts, router, embeddings, KV cache at ${contextLength} tokens, activations) takes ${mib(minimum.gpuBytes - moe.length * K * slot)} MiB, and each of its ${moe.length} MoE layers needs slots for at least its top-${K} experts (${mib(moe.length * K * slot)} MiB): the minimum is ${mib(minimum.gpuBytes)} MiB (or a shorter --context, or smaller --weights)`, budget, minimum.gpuBytes);
  }
  // The largest C whose plan fits (the plan grows with C by the slots and a little scratch).
  let lo = K, hi = Math.min(E, perLayer);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (withSlots(mid).gpuBytes <= budget) lo = mid; else hi = mid - 1;
  }
  const plan = withSlots(lo);
  plan.offload = {
    budgetBytes: budget, capacity: lo, experts: E, moeLayers: moe.length, expertBytes: slot, cacheBytes: plan.weights.byRole.routed_experts,
    routedBytes, residentBytes: plan.gpuBytes - plan.weights.byRole.routed_experts, minimumBytes: minimum.gpuBytes,
  };
  return plan;
}

const mib = (n: number) => (n / 2 ** 20).toFixed(1);

/** The buffers of a slot stack of C experts as createExpertSlots makes them (mxfp4: blocks, scale bytes, f32 biases). */
function slotStackBuffers(f: PackedFormat | 'mxfp4', C: number, I: number, D: number): { name: string; bytes: number }[] {
  if (f !== 'mxfp4') return expertStackBuffers(f, C, I, D);
  return [
    { name: 'gate_up', bytes: align4(C * 2 * I * mxfp4RowBytes(D)) }, { name: 'down', bytes: align4(C * D * mxfp4RowBytes(I)) },
    { name: 'gate_up.scales', bytes: align4(Math.max(16, C * 2 * I * Math.ceil(D / 32))) }, { name: 'down.scales', bytes: align4(Math.max(16, C * D * Math.ceil(I / 32))) },
    { name: 'gate_up.bias', bytes: C * 2 * I * 4 }, { name: 'down.bias', bytes: C * D * 4 },
  ];
}

/** One stack of C experts' buffers (createExpertSlots): total bytes and the largest buffer. */
function stackOf(f: PackedFormat | 'mxfp4', C: number, cfg: ModelConfig): { bytes: number; largest: { name: string; bytes: number } } {
  const bufs = slotStackBuffers(f, C, cfg.moeIntermediateSize, cfg.hiddenSize);
  const top = bufs.reduce((a, b) => (b.bytes > a.bytes ? b : a));
  return { bytes: bufs.reduce((a, b) => a + b.bytes, 0) * moeLayers(cfg).length, largest: { name: `model.layers.*.mlp.experts slots: stacked ${top.name} (${C} slots, ${f})`, bytes: top.bytes } };
}

interface TailInput {
  model: MemoryPlan['model']; checkpoint: MemoryPlan['checkpoint']; storage: MemoryPlan['storage']; contextLength: number; prefillTokens: number;
  expertStacks: number[]; weights: MemoryPlan['weights']; largest: { name: string; bytes: number }; kvBytes: number; rowBytes: number;
  fallback: boolean; dev: PlanDevice; offloadSlots: number; extraRuntime?: number; mtp: MemoryPlan['mtp'];
  /** Layers whose KV grows with the context (the others are sliding-window layers); default all. */
  fullLayers?: number;
}

/** The activations, runtime buffers and totals of a plan whose weights are known. */
function planTail(cfg: ModelConfig, a: TailInput): MemoryPlan {
  const { contextLength, prefillTokens, dev, fallback } = a;
  const kvCache = a.storage.kvCache;
  const stacks = a.expertStacks;
  const moe = moeLayers(cfg);
  let largest = a.largest;
  const bind = (name: string, bytes: number) => { if (bytes > largest.bytes) largest = { name, bytes }; };
  const tempOpts = { lastOnly: true, isFallbackAdapter: fallback, expertStacks: stacks, maxComputeWorkgroupStorageSize: dev.maxComputeWorkgroupStorageSize, kvCache, offloadSlots: a.offloadSlots };
  const attentionDev: AttentionDevice = { adapter: { isFallbackAdapter: fallback }, caps: { maxComputeWorkgroupStorageSize: dev.maxComputeWorkgroupStorageSize ?? 16384 } };
  // A chunk's attention temporaries depend on the positions before it, so the pool after a long prompt
  // holds the size classes of every chunk start: one forward per distinct set of attention classes.
  const prefill: ForwardTemps[] = [];
  const seen = new Set<string>();
  for (let past = 0; past + prefillTokens <= contextLength; past += prefillTokens) {
    const key = attentionTemps(cfg, prefillTokens, past + prefillTokens, attentionDev, kvCache).map(tempSizeClass).join(',');
    if (seen.has(key)) continue;
    seen.add(key);
    prefill.push(forwardTemps(cfg, prefillTokens, past, tempOpts));
  }
  const decode = forwardTemps(cfg, 1, contextLength - 1, tempOpts);
  const activations = tempPoolBytes([...prefill, decode]);
  // (a loop, not Math.max(...list): a short chunk over a long context lists too many temporaries to spread)
  let biggestTemp = 0;
  for (const t of [...prefill, decode]) for (const bytes of flatTemps(t)) biggestTemp = Math.max(biggestTemp, bytes);
  bind(`largest temporary (prefill of ${prefillTokens} tokens)`, tempSizeClass(biggestTemp));

  // Fixed buffers: sampler scratch (V ≥ 1024 floats, chunk info, the 96 KiB histogram of sample.ts), the
  // uniform ring (64 KiB at least), the expert-load counters (one aligned [E] u32 slice per MoE layer),
  // the RoPE frequency table, the token out buffer and the kernels' 16-byte placeholders. (A repetition
  // penalty adds a 4 KiB history buffer.)
  const align = dev.minStorageBufferOffsetAlignment ?? 256;
  const cap = Math.max(cfg.vocabSize, 1024);
  const runtime = cap * 4 + (32 + 3 * Math.ceil(cap / 1024)) * 4 + 6 * 2048 * 2 * 4 + (64 << 10)
    + (cfg.nRoutedExperts ? Math.max(4, Math.ceil((cfg.nRoutedExperts * 4) / align) * align * moe.length) : 0)
    // MTP: its layers' expert-load counters and the token-id buffer of its embeddings (gpu-runner.ts)
    + (a.mtp ? Math.max(4, Math.ceil((cfg.nRoutedExperts * 4) / align) * align * a.mtp.layers.filter((l) => isMoeLayer(cfg, l)).length) + 256 : 0)
    // the RoPE table, the sampled-token buffer (16 bytes: a speculative step's 4 ids), … (and the MTP KV cache, the offload tables)
    + align4((cfg.qkRopeHeadDim / 2) * 4) + 16 + 4 + 8 * 16 + (a.extraRuntime ?? 0);

  return {
    model: a.model,
    checkpoint: a.checkpoint,
    storage: a.storage,
    expertStacks: stacks,
    contextLength,
    prefillTokens,
    weights: a.weights,
    // Per token past the windows: sliding-window layers hold a fixed number of rows.
    kvCache: { bytesPerToken: a.rowBytes * (a.fullLayers ?? cfg.numLayers), bytes: a.kvBytes },
    activations: { bytes: activations, prefillBytes: tempPoolBytes(prefill), decodeBytes: tempPoolBytes([decode]), largestBytes: tempSizeClass(biggestTemp) },
    runtime: { bytes: runtime },
    mtp: a.mtp,
    largestBinding: largest,
    gpuBytes: a.weights.bytes + a.kvBytes + activations + runtime,
    offload: null,
  };
}

function checkpointBytes(list: PlanTensor[] | null): MemoryPlan['checkpoint'] {
  const byDtype: Record<string, number> = {};
  let bytes = 0;
  const size: Partial<Record<SafetensorsDtype, number>> = { F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, U16: 2, U32: 4, BOOL: 1 };
  for (const t of list ?? []) {
    const b = t.shape.reduce((a, x) => a * x, 1) * (size[t.dtype] ?? 0);
    byDtype[t.dtype] = (byDtype[t.dtype] ?? 0) + b;
    bytes += b;
  }
  return { bytes, byDtype };
}

/** The device limits a plan is checked against; `memoryBytes` when the caller knows the GPU's memory (WebGPU does not tell). */
export interface DeviceBudget { maxStorageBufferBindingSize: number; maxBufferSize: number; memoryBytes?: number }

/** Why a plan does not fit `budget` (null when it fits). */
export function planShortfall(plan: MemoryPlan, budget: DeviceBudget): { limit: string; needed: number; granted: number; what: string } | null {
  const b = plan.largestBinding;
  if (b.bytes > budget.maxBufferSize) return { limit: 'maxBufferSize', needed: b.bytes, granted: budget.maxBufferSize, what: `${b.name} (one buffer)` };
  if (b.bytes > budget.maxStorageBufferBindingSize) return { limit: 'maxStorageBufferBindingSize', needed: b.bytes, granted: budget.maxStorageBufferBindingSize, what: `${b.name} (one binding)` };
  if (budget.memoryBytes !== undefined && plan.gpuBytes > budget.memoryBytes) return { limit: 'GPU memory', needed: plan.gpuBytes, granted: budget.memoryBytes, what: 'the model (weights + KV cache + activations)' };
  return null;
}

/** An alternative load that fits where the asked one does not. */
export interface FitAlternative { weights: StorageFormat; contextLength: number; gpuBytes: number; largestBinding: number }

/**
 * Loads of the same model that fit `budget`: each smaller weight storage (q8, q4; f16 where exact) at the
 * asked context, then, for each storage, the longest context (halving, down to 256 tokens) that fits.
 * Ordered by how close they stay to the asked load (storage first, then context).
 */
export function whatFits(cfg: ModelConfig, tensors: Iterable<PlanTensor> | null, options: PlanOptions, budget: DeviceBudget): FitAlternative[] {
  const list = tensors ? [...tensors] : null;
  // Planned for the budget's limits (expert stacks and row chunks split by them).
  const opts: PlanOptions = { ...options, device: { ...options.device, maxStorageBufferBindingSize: budget.maxStorageBufferBindingSize, maxBufferSize: budget.maxBufferSize } };
  const asked = planMemory(cfg, list, opts);
  // One 16-bit step: f16 for F16 checkpoints, bf16 otherwise (BF16's range; exact for BF16 checkpoints).
  const sixteen: StorageFormat = asked.storage.weights === 'f16' || (list && resolveStorage('auto', list) === 'f16') ? 'f16' : 'bf16';
  // A GGUF's blocks: the same blocks at a shorter context, or webmoe's q4 (re-quantised from the decoded blocks).
  const order: StorageFormat[] = asked.storage.weights === 'gguf' ? ['gguf', 'q4'] : ['f32', sixteen, 'q8', 'q4'];
  const out: FitAlternative[] = [];
  for (const w of order.slice(Math.max(0, order.indexOf(asked.storage.weights === 'bf16' || asked.storage.weights === 'f16' ? sixteen : asked.storage.weights)))) {
    for (let ctx = asked.contextLength; ctx >= Math.min(256, asked.contextLength); ctx = Math.floor(ctx / 2)) {
      const p = planMemory(cfg, list, { ...opts, weights: w, contextLength: ctx });
      if (!planShortfall(p, budget)) { out.push({ weights: w, contextLength: ctx, gpuBytes: p.gpuBytes, largestBinding: p.largestBinding.bytes }); break; }
      if (ctx === 1) break;
    }
  }
  return out.filter((a) => a.weights !== asked.storage.weights || a.contextLength !== asked.contextLength);
}

const gb = (n: number) => `${(n / 1e9).toFixed(2)} GB`;

/**
 * Throws LimitExceededError naming the limit, the shortfall and (in the message and `details.fits`) the
 * loads that would fit, when `plan` does not fit `budget`.
 */
export function checkPlanFits(plan: MemoryPlan, budget: DeviceBudget, alternatives: () => FitAlternative[] = () => []): void {
  const s = planShortfall(plan, budget);
  if (!s) return;
  const fits = alternatives();
  const hint = fits.length
    ? ` What fits: ${fits.map((a) => `--weights ${a.weights} --context ${a.contextLength} (${gb(a.gpuBytes)})`).join('; ')}.`
    : ' No weight storage or context length makes it fit this device: serve it from a bigger machine (createRemoteEngine) or wait for expert offload.';
  const e = new LimitExceededError(s.limit, s.needed, s.granted, `${s.what}; the plan (weights ${plan.storage.weights}, context ${plan.contextLength}) needs ${gb(plan.gpuBytes)} in all`);
  Object.assign(e, { message: e.message + '.' + hint });
  Object.assign(e.details!, { plan: { gpuBytes: plan.gpuBytes, largestBinding: plan.largestBinding, weights: plan.storage.weights, contextLength: plan.contextLength }, fits });
  throw e;
}
