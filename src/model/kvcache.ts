/**
 * KV caches: preallocated per-layer GPU storage with growth, truncation and reset (chat prefix reuse),
 * and byte accounting for the memory panel.
 *
 * Element format (`format`, the `kvCache` load option): 'f32', or 'f16' pairs packed in u32 words
 * (kernels/attention.ts KvFormat: written with pack2x16float, read with unpack2x16float, so no
 * shader-f16), half the bytes; f16 rows are padded to an even number of elements (kvRowStride).
 *
 *  - LatentKvCache (MLA, DeepSeek-V2/V3): per layer one buffer of rows [capacity, kvLora + rope],
 *    row t = [RMSNorm(c_KV,t) (kvLora) | roped k_pe,t (rope)] — the exact layout of the
 *    kv_a_proj_with_mqa output, so absorbed attention reads K = the whole row and V = its first kvLora
 *    values from the same buffer (MQA with one KV head, as FlashMLA does).
 *  - MhaKvCache (standard MHA/GQA): per layer K [capacity, kvHeads, dk] and V [capacity, kvHeads, dv].
 *
 * Lifecycle: the forward for S new tokens writes rows [length, length+S) of every layer (the attention
 * wrappers do that), then the caller calls `commit(S)`. `ensureCapacity(length + S)` before the forward
 * grows the buffers (old rows copied on the GPU; previously recorded bind groups then refer to the old
 * buffers, so look `layer(i)` up again after growing).
 */
import type { Gpu } from '../gpu/device';
import { ArgumentError, ContextLengthError } from '../errors';
import { kvElementBytes, kvRowStride, type KvFormat } from '../kernels/attention-plan';

/** Shared lifecycle: per-layer buffers of rows `widths` values wide (one buffer per width), grown by doubling. */
abstract class RowCache {
  capacity: number;
  readonly maxCapacity: number;
  readonly layers: number;
  protected readonly label: string;
  private len = 0;
  private bufs: GPUBuffer[][];
  /** Bytes of one cached row per part (row stride × element bytes). */
  private rowBytes: number[];

  protected constructor(protected gpu: Gpu, layers: number, widths: number[], capacity: number, maxCapacity: number | undefined, label: string, readonly format: KvFormat) {
    if (format !== 'f32' && format !== 'f16') throw new ArgumentError(`${label}: format must be 'f16' or 'f32', got ${String(format)}`);
    if (!Number.isInteger(layers) || layers < 1) throw new ArgumentError(`${label}: layers must be a positive integer, got ${layers}`);
    if (!Number.isInteger(capacity) || capacity < 1) throw new ArgumentError(`${label}: capacity must be a positive integer, got ${capacity}`);
    this.layers = layers;
    this.label = label;
    this.rowBytes = widths.map((w) => kvRowStride(w, format) * kvElementBytes(format));
    // Largest row count one buffer can hold and bind.
    const limit = Math.min(gpu.caps.maxBufferSize, gpu.caps.maxStorageBufferBindingSize);
    const deviceMax = Math.floor(limit / Math.max(...this.rowBytes));
    this.maxCapacity = Math.min(maxCapacity ?? deviceMax, deviceMax);
    if (capacity > this.maxCapacity) throw new ContextLengthError(capacity, this.maxCapacity, label);
    this.capacity = capacity;
    this.bufs = [];
    for (let l = 0; l < layers; l++) this.bufs.push(this.alloc(l, capacity));
  }

  private alloc(layer: number, capacity: number): GPUBuffer[] {
    return this.rowBytes.map((rb, i) => this.gpu.buffers.create(`${this.label}.L${layer}.${this.partName(i)}`, capacity * rb));
  }

  protected abstract partName(i: number): string;

  protected buffers(layer: number): GPUBuffer[] {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.layers) throw new ArgumentError(`${this.label}: layer ${layer} out of range [0, ${this.layers})`);
    return this.bufs[layer];
  }

  /** Tokens currently cached (the same for every layer). */
  get length(): number { return this.len; }

  /** Grows every layer to hold `tokens` (doubling, capped at maxCapacity), copying the cached rows. */
  ensureCapacity(tokens: number): void {
    if (tokens <= this.capacity) return;
    if (tokens > this.maxCapacity) throw new ContextLengthError(tokens, this.maxCapacity, this.label);
    const next = Math.min(this.maxCapacity, Math.max(tokens, this.capacity * 2));
    const rec = this.gpu.recorder(`${this.label}.grow`);
    const old = this.bufs;
    this.bufs = old.map((parts, l) => {
      const fresh = this.alloc(l, next);
      parts.forEach((b, i) => { if (this.len) rec.copy(b, 0, fresh[i], 0, this.len * this.rowBytes[i]); });
      return fresh;
    });
    rec.submit();
    // Destroying after submit is safe: WebGPU keeps the buffers alive for the queued copies.
    for (const parts of old) for (const b of parts) this.gpu.buffers.destroy(b);
    this.capacity = next;
  }

  /** Marks rows [length, length+tokens) of every layer as written by the last forward. */
  commit(tokens: number): void {
    if (!Number.isInteger(tokens) || tokens < 0) throw new ArgumentError(`${this.label}: commit(${tokens})`);
    if (this.len + tokens > this.capacity) throw new ContextLengthError(this.len + tokens, this.capacity, `${this.label} (call ensureCapacity before the forward)`);
    this.len += tokens;
  }

  /** Drops the tail: keeps the first `length` tokens (chat prefix reuse). */
  truncate(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.len) throw new ArgumentError(`${this.label}: truncate(${length}) with ${this.len} tokens cached`);
    this.len = length;
  }

  reset(): void { this.len = 0; }

  /** Actual bytes per cached token per layer (f16 rows padded to whole words). */
  bytesPerTokenPerLayer(): number { return this.rowBytes.reduce((a, b) => a + b, 0); }

  /** Bytes of GPU memory the cache holds (all layers, full capacity). */
  bytesAllocated(): number {
    let n = 0;
    for (const parts of this.bufs) for (const b of parts) n += b.size;
    return n;
  }

  destroy(): void {
    for (const parts of this.bufs) for (const b of parts) this.gpu.buffers.destroy(b);
    this.bufs = [];
    this.len = 0;
  }
}

export interface LatentKvCacheOptions {
  layers: number;
  kvLoraRank: number;
  ropeDim: number;
  /** Tokens preallocated per layer. */
  capacity: number;
  /** Growth limit (default: what one buffer binding can hold). */
  maxCapacity?: number;
  label?: string;
  /** Element format (default 'f32'). */
  format?: KvFormat;
}

/** One layer of the latent cache: rows [capacity, kvLora + rope] = [latent | pe]. */
export interface LatentLayer {
  /** [capacity, rowFloats] of `format` elements: row t = [RMSNorm(c_KV,t) (kvLora) | k_pe,t (rope)]. */
  kv: GPUBuffer;
  /** Row stride in elements: kvLora + rope (f16: rounded up to even). */
  rowFloats: number;
  format: KvFormat;
  /** Offset of the latent within a row (0). */
  latentOffset: number;
  /** Offset of k_pe within a row (kvLora). */
  peOffset: number;
}

/** MLA cache: per layer and token only RMSNorm(c_KV) [kvLora] and the roped k_pe [rope]. */
export class LatentKvCache extends RowCache {
  readonly kvLoraRank: number;
  readonly ropeDim: number;

  constructor(gpu: Gpu, opts: LatentKvCacheOptions) {
    super(gpu, opts.layers, [opts.kvLoraRank + opts.ropeDim], opts.capacity, opts.maxCapacity, opts.label ?? 'latentKvCache', opts.format ?? 'f32');
    this.kvLoraRank = opts.kvLoraRank;
    this.ropeDim = opts.ropeDim;
  }

  protected partName(): string { return 'latent+pe'; }

  /** Row stride in elements (kvLora + rope; f16 rounded up to even). */
  get rowFloats(): number { return kvRowStride(this.kvLoraRank + this.ropeDim, this.format); }

  layer(i: number): LatentLayer {
    return { kv: this.buffers(i)[0], rowFloats: this.rowFloats, format: this.format, latentOffset: 0, peOffset: this.kvLoraRank };
  }
}

export interface MhaKvCacheOptions {
  layers: number;
  kvHeads: number;
  /** Key head dim (d_qk). */
  kDim: number;
  /** Value head dim (d_v). */
  vDim: number;
  capacity: number;
  maxCapacity?: number;
  label?: string;
  /** Element format (default 'f32'); f16 rows are kvRowStride(kvHeads·dim, 'f16') elements apart. */
  format?: KvFormat;
}

/** Standard MHA/GQA cache: per layer K [capacity, kvHeads, kDim] and V [capacity, kvHeads, vDim]. */
export class MhaKvCache extends RowCache {
  readonly kvHeads: number;
  readonly kDim: number;
  readonly vDim: number;

  constructor(gpu: Gpu, opts: MhaKvCacheOptions) {
    super(gpu, opts.layers, [opts.kvHeads * opts.kDim, opts.kvHeads * opts.vDim], opts.capacity, opts.maxCapacity, opts.label ?? 'mhaKvCache', opts.format ?? 'f32');
    this.kvHeads = opts.kvHeads;
    this.kDim = opts.kDim;
    this.vDim = opts.vDim;
  }

  protected partName(i: number): string { return i === 0 ? 'k' : 'v'; }

  layer(i: number): { k: GPUBuffer; v: GPUBuffer } {
    const [k, v] = this.buffers(i);
    return { k, v };
  }
}

/** Bytes per token of the latent cache (all layers): (kvLora + rope) values per layer. */
export function latentCacheBytesPerToken(cfg: { layers: number; kvLoraRank: number; ropeDim: number }, bytesPerValue: number): number {
  return cfg.layers * (cfg.kvLoraRank + cfg.ropeDim) * bytesPerValue;
}

/** Bytes per token of the equivalent expanded MHA cache (all layers): K (qk dims) and V per head. */
export function mhaCacheBytesPerToken(cfg: { layers: number; heads: number; qkHeadDim: number; vHeadDim: number }, bytesPerValue: number): number {
  return cfg.layers * cfg.heads * (cfg.qkHeadDim + cfg.vHeadDim) * bytesPerValue;
}
