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
 *    Sliding-window layers (`windows`) hold only their window: a fixed windowRows(W, maxRows, …) rows,
 *    row i = position base + i; before a forward that would run past the end, the last
 *    W − 1 + WINDOW_REWIND keys move to row 0 (base advances). Attention is translation-invariant in the
 *    row index (RoPE is applied before caching; the window mask is relative), so the kernels run on the
 *    rows with past − base as the past (windowPast).
 *
 * Lifecycle: the forward for S new tokens writes rows [length, length+S) of every layer (the attention
 * wrappers do that), then the caller calls `commit(S)`. `ensureCapacity(length + S)` before the forward
 * grows the buffers (old rows copied on the GPU; previously recorded bind groups then refer to the old
 * buffers, so look `layer(i)` up again after growing).
 */
import type { Gpu } from '../gpu/device';
import { ArgumentError, ContextLengthError } from '../errors';
import { kvElementBytes, kvRowStride, type KvFormat } from '../kernels/attention-plan';

/**
 * Keys a sliding-window layer keeps beyond the W − 1 the next token needs, so that rewinding up to this
 * many tokens (a regenerated reply, rejected speculative drafts) still finds them.
 */
export const WINDOW_REWIND = 16;
/** Rows of a sliding-window layer (window W): the kept W − 1 + WINDOW_REWIND keys and a forward of maxRows new ones, at most the context. */
export const windowRows = (window: number, maxRows: number, context: number): number => Math.min(context, window - 1 + WINDOW_REWIND + maxRows);

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

  /** Per layer: a fixed row count (sliding-window layers), or null (the layer grows with `capacity`). */
  protected fixed: (number | null)[];

  protected constructor(protected gpu: Gpu, layers: number, widths: number[], capacity: number, maxCapacity: number | undefined, label: string, readonly format: KvFormat, fixed?: readonly (number | null)[]) {
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
    this.fixed = Array.from({ length: layers }, (_, l) => fixed?.[l] ?? null);
    this.bufs = [];
    for (let l = 0; l < layers; l++) this.bufs.push(this.alloc(l, this.fixed[l] ?? capacity));
  }

  private alloc(layer: number, rows: number): GPUBuffer[] {
    return this.rowBytes.map((rb, i) => this.gpu.buffers.create(`${this.label}.L${layer}.${this.partName(i)}`, rows * rb));
  }

  /** Rows layer `layer`'s buffers hold (its fixed rows, or the capacity). */
  rowsOf(layer: number): number { return this.fixed[layer] ?? this.capacity; }

  /** Bytes of one row of part i. */
  protected partRowBytes(i: number): number { return this.rowBytes[i]; }

  /**
   * Moves rows [from, from + n) of a fixed layer to row 0, into buffers of `rows` rows (new ones when
   * that differs): a recorder of its own, submitted now, so queue order puts it after every forward
   * submitted before and before the next (whose attention writes and reads these rows).
   */
  protected moveRows(layer: number, from: number, n: number, rows: number): void {
    const old = this.bufs[layer];
    const grow = rows !== this.fixed[layer];
    const fresh = grow ? this.alloc(layer, rows) : old;
    const rec = this.gpu.recorder(`${this.label}.L${layer}.window`);
    const scratch: GPUBuffer[] = [];
    old.forEach((b, i) => {
      const bytes = n * this.rowBytes[i];
      if (!bytes) return;
      if (grow) { rec.copy(b, from * this.rowBytes[i], fresh[i], 0, bytes); return; }
      // (A buffer cannot be both the source and the destination of one copy: through a scratch buffer.)
      const t = this.gpu.buffers.create(`${this.label}.L${layer}.${this.partName(i)}.move`, bytes);
      scratch.push(t);
      rec.copy(b, from * this.rowBytes[i], t, 0, bytes);
      rec.copy(t, 0, fresh[i], 0, bytes);
    });
    rec.submit();
    for (const t of scratch) this.gpu.buffers.destroy(t);
    if (grow) {
      for (const b of old) this.gpu.buffers.destroy(b);
      this.bufs[layer] = fresh;
      this.fixed[layer] = rows;
    }
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
    // Fixed (sliding-window) layers keep their buffers.
    this.bufs = old.map((parts, l) => {
      if (this.fixed[l] !== null) return parts;
      const fresh = this.alloc(l, next);
      parts.forEach((b, i) => { if (this.len) rec.copy(b, 0, fresh[i], 0, this.len * this.rowBytes[i]); });
      return fresh;
    });
    rec.submit();
    // Destroying after submit is safe: WebGPU keeps the buffers alive for the queued copies.
    old.forEach((parts, l) => { if (this.fixed[l] === null) for (const b of parts) this.gpu.buffers.destroy(b); });
    this.capacity = next;
  }

  /** Marks rows [length, length+tokens) of every layer as written by the last forward. */
  commit(tokens: number): void {
    if (!Number.isInteger(tokens) || tokens < 0) throw new ArgumentError(`${this.label}: commit(${tokens})`);
    if (this.len + tokens > this.capacity) throw new ContextLengthError(this.len + tokens, this.capacity, `${this.label} (call ensureCapacity before the forward)`);
    this.len += tokens;
  }

  /**
   * Drops the tail: keeps the first `length` tokens (chat prefix reuse). A sliding-window cache keeps
   * fewer (none) when a window layer no longer holds the keys that prefix's next token attends to:
   * `length` afterwards says what was kept.
   */
  truncate(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.len) throw new ArgumentError(`${this.label}: truncate(${length}) with ${this.len} tokens cached`);
    this.len = this.keepable(length) ? length : 0;
    if (!this.len) this.resetWindows();
  }

  reset(): void { this.len = 0; this.resetWindows(); }

  /** Whether every layer still holds what a forward after `length` tokens reads (the full layers always do). */
  protected keepable(_length: number): boolean { return true; }
  protected resetWindows(): void { /* no window layers */ }

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
  /** Per layer its sliding window (0 or absent: full attention): those layers keep windowRows rows. */
  windows?: readonly number[];
  /** Rows one forward writes at most (the prefill chunk), which window layers make room for. */
  maxRows?: number;
}

/** Standard MHA/GQA cache: per layer K [capacity, kvHeads, kDim] and V [capacity, kvHeads, vDim]. */
export class MhaKvCache extends RowCache {
  readonly kvHeads: number;
  readonly kDim: number;
  readonly vDim: number;

  /** Per layer its sliding window (0: full attention, the layer holds every token). */
  readonly windows: readonly number[];
  /** Per window layer the position its row 0 holds. */
  private base: number[];

  constructor(gpu: Gpu, opts: MhaKvCacheOptions) {
    const windows = Array.from({ length: opts.layers }, (_, l) => opts.windows?.[l] ?? 0);
    const context = opts.maxCapacity ?? opts.capacity;
    const maxRows = opts.maxRows ?? 1;
    // Window layers whose rows would reach the context are plain growing layers.
    const fixed = windows.map((w) => (w > 0 && windowRows(w, maxRows, context) < context ? windowRows(w, maxRows, context) : null));
    super(gpu, opts.layers, [opts.kvHeads * opts.kDim, opts.kvHeads * opts.vDim], opts.capacity, opts.maxCapacity, opts.label ?? 'mhaKvCache', opts.format ?? 'f32', fixed);
    this.windows = windows.map((w, l) => (fixed[l] === null ? 0 : w));
    this.base = windows.map(() => 0);
    this.kvHeads = opts.kvHeads;
    this.kDim = opts.kDim;
    this.vDim = opts.vDim;
  }

  protected partName(i: number): string { return i === 0 ? 'k' : 'v'; }

  layer(i: number): { k: GPUBuffer; v: GPUBuffer } {
    const [k, v] = this.buffers(i);
    return { k, v };
  }

  /** Layer `layer` as mhaAttention's cache: its own row count as the capacity. */
  binding(layer: number): { capacity: number; kvHeads: number; kDim: number; vDim: number; format: KvFormat; layer: () => { k: GPUBuffer; v: GPUBuffer } } {
    return { capacity: this.rowsOf(layer), kvHeads: this.kvHeads, kDim: this.kDim, vDim: this.vDim, format: this.format, layer: () => this.layer(layer) };
  }

  /**
   * Before a forward of `S` rows at position `past`: the row where layer `layer`'s position `past`
   * goes (past itself for a full layer). A window layer that would run past its rows first moves its
   * last W − 1 + WINDOW_REWIND keys to row 0 (and grows when S is over the rows it was made for).
   */
  windowPast(layer: number, past: number, S: number): number {
    const W = this.windows[layer];
    if (!W) return past;
    const rows = this.rowsOf(layer), base = this.base[layer];
    if (past < base) throw new ArgumentError(`${this.label}: layer ${layer} holds positions from ${base}, asked to write at ${past}`);
    if (past - base + S <= rows) return past - base;
    const from = Math.max(base, past - (W - 1 + WINDOW_REWIND));
    const n = past - from;
    this.moveRows(layer, from - base, n, Math.max(rows, n + S));
    this.base[layer] = from;
    return past - from;
  }

  protected override keepable(length: number): boolean {
    // The next token at `length` reads positions length − W + 1 … length − 1.
    return this.windows.every((W, l) => !W || (this.base[l] <= Math.max(0, length - W + 1) && length >= this.base[l]));
  }

  protected override resetWindows(): void { if (this.base) this.base.fill(0); }
}

/** Bytes per token of the latent cache (all layers): (kvLora + rope) values per layer. */
export function latentCacheBytesPerToken(cfg: { layers: number; kvLoraRank: number; ropeDim: number }, bytesPerValue: number): number {
  return cfg.layers * (cfg.kvLoraRank + cfg.ropeDim) * bytesPerValue;
}

/** Bytes per token of the equivalent expanded MHA cache (all layers): K (qk dims) and V per head. */
export function mhaCacheBytesPerToken(cfg: { layers: number; heads: number; qkHeadDim: number; vHeadDim: number }, bytesPerValue: number): number {
  return cfg.layers * cfg.heads * (cfg.qkHeadDim + cfg.vHeadDim) * bytesPerValue;
}
