import { LimitExceededError, GpuValidationError } from '../errors';
import type { Capabilities } from './capabilities';
import { yieldingWait } from './wait';

export const STORAGE = 0x80 | 0x08 | 0x04; // STORAGE | COPY_DST | COPY_SRC (GPUBufferUsage is absent in some hosts at import time)
const MAP_READ = 0x01;
const COPY_DST = 0x08;

const align4 = (n: number) => Math.max(4, Math.ceil(n / 4) * 4);

/**
 * Labelled GPU buffers with byte accounting. Every buffer webmoe allocates goes through here, so
 * `bytesAllocated` is the real figure the engine reports (and what the long-run leak test watches).
 */
export class BufferManager {
  private live = new Map<GPUBuffer, number>();
  private placeholders = new Map<string, GPUBuffer>();
  bytesAllocated = 0;
  peakBytes = 0;

  constructor(private device: GPUDevice, private caps: Capabilities) {}

  get count(): number { return this.live.size; }

  create(label: string, size: number, usage: number = STORAGE): GPUBuffer {
    const bytes = align4(size);
    if (bytes > this.caps.maxBufferSize) throw new LimitExceededError('maxBufferSize', bytes, this.caps.maxBufferSize, `buffer '${label}'`);
    const buffer = this.device.createBuffer({ label, size: bytes, usage });
    this.track(buffer, bytes);
    return buffer;
  }

  /** A buffer filled with `data` (via mappedAtCreation: no staging copy). */
  upload(label: string, data: ArrayBufferView | ArrayBuffer, usage: number = STORAGE): GPUBuffer {
    const src = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const bytes = align4(src.byteLength);
    if (bytes > this.caps.maxBufferSize) throw new LimitExceededError('maxBufferSize', bytes, this.caps.maxBufferSize, `buffer '${label}'`);
    const buffer = this.device.createBuffer({ label, size: bytes, usage, mappedAtCreation: true });
    new Uint8Array(buffer.getMappedRange()).set(src);
    buffer.unmap();
    this.track(buffer, bytes);
    return buffer;
  }

  write(buffer: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (src.byteLength % 4 === 0) {
      this.device.queue.writeBuffer(buffer, offset, src);
    } else {
      const padded = new Uint8Array(align4(src.byteLength));
      padded.set(src);
      this.device.queue.writeBuffer(buffer, offset, padded);
    }
  }

  /** Fills a buffer with one 32-bit pattern, e.g. NaN to poison outputs before a test run. */
  fill(buffer: GPUBuffer, pattern: number, asFloat = true): void {
    const n = buffer.size / 4;
    const words = asFloat ? new Float32Array(n).fill(pattern) : new Uint32Array(n).fill(pattern);
    this.device.queue.writeBuffer(buffer, 0, words);
  }

  /**
   * A 16-byte buffer for a binding an entry point declares but a call does not use, one per `slot` for
   * the device's life (distinct slots, so a dispatch never binds one buffer writable twice); made again
   * after destroyAll.
   */
  placeholder(slot: string): GPUBuffer {
    let b = this.placeholders.get(slot);
    if (!b || !this.live.has(b)) {
      b = this.create(`unused.${slot}`, 16);
      this.placeholders.set(slot, b);
    }
    return b;
  }

  destroy(buffer: GPUBuffer | undefined | null): void {
    if (!buffer) return;
    const bytes = this.live.get(buffer);
    if (bytes !== undefined) {
      this.live.delete(buffer);
      this.bytesAllocated -= bytes;
    }
    buffer.destroy();
  }

  destroyAll(): void {
    for (const b of [...this.live.keys()]) this.destroy(b);
  }

  /** Copies [offset, offset+size) to a staging buffer and maps it: one GPU→CPU round trip. */
  async read(buffer: GPUBuffer, offset = 0, size = buffer.size - offset): Promise<ArrayBuffer> {
    const bytes = align4(size);
    const staging = this.device.createBuffer({ label: `readback(${buffer.label})`, size: bytes, usage: MAP_READ | COPY_DST });
    const enc = this.device.createCommandEncoder({ label: `readback(${buffer.label})` });
    enc.copyBufferToBuffer(buffer, offset, staging, 0, bytes);
    this.device.queue.submit([enc.finish()]);
    try {
      await yieldingWait(() => staging.mapAsync(MAP_READ));
    } catch (e) {
      staging.destroy();
      throw new GpuValidationError(`readback of '${buffer.label}' failed: ${(e as Error).message}`, 'DEVICE_LOST');
    }
    const out = staging.getMappedRange().slice(0, size);
    staging.unmap();
    staging.destroy();
    this.readbacks++;
    return out;
  }
  readbacks = 0;

  async readF32(buffer: GPUBuffer, offset = 0, count?: number): Promise<Float32Array> {
    return new Float32Array(await this.read(buffer, offset, count === undefined ? undefined : count * 4));
  }
  async readU32(buffer: GPUBuffer, offset = 0, count?: number): Promise<Uint32Array> {
    return new Uint32Array(await this.read(buffer, offset, count === undefined ? undefined : count * 4));
  }

  private track(buffer: GPUBuffer, bytes: number) {
    this.live.set(buffer, bytes);
    this.bytesAllocated += bytes;
    this.peakBytes = Math.max(this.peakBytes, this.bytesAllocated);
  }
}

/**
 * A pool of per-step temporaries: buffers are handed out by size class and returned with
 * `releaseAll()` after the step's submit, so a decode loop allocates nothing after warm-up.
 */
export class TempPool {
  private free = new Map<number, GPUBuffer[]>();
  private used: [number, GPUBuffer][] = [];

  constructor(private buffers: BufferManager, private label = 'temp') {}

  private static sizeClass(bytes: number): number {
    // Powers of two up to 1 MiB, then multiples of 1 MiB: bounded waste, few distinct classes.
    if (bytes <= 1 << 20) return Math.max(256, 2 ** Math.ceil(Math.log2(bytes)));
    return Math.ceil(bytes / (1 << 20)) * (1 << 20);
  }

  acquire(bytes: number): GPUBuffer {
    const cls = TempPool.sizeClass(bytes);
    const list = this.free.get(cls);
    const buf = list?.pop() ?? this.buffers.create(`${this.label}[${cls}]`, cls);
    this.used.push([cls, buf]);
    return buf;
  }

  /** A point to release back to (releaseFrom): the temporaries acquired so far stay in use. */
  mark(): number {
    return this.used.length;
  }

  /**
   * Returns the temporaries acquired since `mark` to the pool while the step is still being recorded:
   * later dispatches may reuse them (commands run in order, and WebGPU orders storage accesses between
   * dispatches), so a forward needs one layer's temporaries, not all layers'.
   */
  releaseFrom(mark: number): void {
    for (const [cls, buf] of this.used.splice(mark)) {
      const list = this.free.get(cls) ?? [];
      list.push(buf);
      this.free.set(cls, list);
    }
  }

  releaseAll(): void {
    for (const [cls, buf] of this.used) {
      const list = this.free.get(cls) ?? [];
      list.push(buf);
      this.free.set(cls, list);
    }
    this.used = [];
  }

  destroy(): void {
    this.releaseAll();
    for (const list of this.free.values()) for (const b of list) this.buffers.destroy(b);
    this.free.clear();
  }
}
