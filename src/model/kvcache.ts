/**
 * KV caches: preallocated per-layer GPU storage with growth, truncation and reset (chat prefix reuse),
 * and byte accounting for the memory panel.
 *
 *  - LatentKvCache (MLA, DeepSeek-V2/V3): per layer one f32 buffer of rows [capacity, kvLora + rope],
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

const F32 = 4;

/** Shared lifecycle: per-layer buffers of `rowFloats`-wide rows, grown by doubling. */
abstract class RowCache {
  capacity: number;
  readonly maxCapacity: number;
  readonly layers: number;
  protected readonly label: string;
  private len = 0;
  private bufs: GPUBuffer[][];

  protected constructor(protected gpu: Gpu, layers: number, private widths: number[], capacity: number, maxCapacity: number | undefined, label: string) {
    if (!Number.isInteger(layers) || layers < 1) throw new ArgumentError(`${label}: layers must be a positive integer, got ${layers}`);
    if (!Number.isInteger(capacity) || capacity < 1) throw new ArgumentError(`${label}: capacity must be a positive integer, got ${capacity}`);
    this.layers = layers;
    this.label = label;
    // Largest row count one buffer can hold and bind.
    const limit = Math.min(gpu.caps.maxBufferSize, gpu.caps.maxStorageBufferBindingSize);
    const deviceMax = Math.floor(limit / (Math.max(...widths) * F32));
    this.maxCapacity = Math.min(maxCapacity ?? deviceMax, deviceMax);
    if (capacity > this.maxCapacity) throw new ContextLengthError(capacity, this.maxCapacity, label);
    this.capacity = capacity;
    this.bufs = [];
    for (let l = 0; l < layers; l++) this.bufs.push(this.alloc(l, capacity));
  }

  private alloc(layer: number, capacity: number): GPUBuffer[] {
    return this.widths.map((w, i) => this.gpu.buffers.create(`${this.label}.L${layer}.${this.partName(i)}`, capacity * w * F32));
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
      parts.forEach((b, i) => { if (this.len) rec.copy(b, 0, fresh[i], 0, this.len * this.widths[i] * F32); });
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

  /** Actual bytes per cached token per layer (f32 storage). */
  bytesPerTokenPerLayer(): number { return this.widths.reduce((a, w) => a + w * F32, 0); }

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
}

/** One layer of the latent cache: rows [capacity, kvLora + rope] = [latent | pe]. */
export interface LatentLayer {
  /** f32 [capacity, rowFloats]: row t = [RMSNorm(c_KV,t) (kvLora) | k_pe,t (rope)]. */
  kv: GPUBuffer;
  /** kvLora + rope. */
  rowFloats: number;
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
    super(gpu, opts.layers, [opts.kvLoraRank + opts.ropeDim], opts.capacity, opts.maxCapacity, opts.label ?? 'latentKvCache');
    this.kvLoraRank = opts.kvLoraRank;
    this.ropeDim = opts.ropeDim;
  }

  protected partName(): string { return 'latent+pe'; }

  get rowFloats(): number { return this.kvLoraRank + this.ropeDim; }

  layer(i: number): LatentLayer {
    return { kv: this.buffers(i)[0], rowFloats: this.rowFloats, latentOffset: 0, peOffset: this.kvLoraRank };
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
}

/** Standard MHA/GQA cache: per layer K [capacity, kvHeads, kDim] and V [capacity, kvHeads, vDim]. */
export class MhaKvCache extends RowCache {
  readonly kvHeads: number;
  readonly kDim: number;
  readonly vDim: number;

  constructor(gpu: Gpu, opts: MhaKvCacheOptions) {
    super(gpu, opts.layers, [opts.kvHeads * opts.kDim, opts.kvHeads * opts.vDim], opts.capacity, opts.maxCapacity, opts.label ?? 'mhaKvCache');
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
