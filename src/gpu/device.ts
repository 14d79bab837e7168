import { capabilitiesOf, RAISED_LIMITS, WANTED_FEATURES, type Capabilities } from './capabilities';
import { BufferManager, TempPool } from './buffers';
import { PipelineCache } from './pipelines';
import { Profiler } from './profiler';
import { Recorder } from './recorder';
import { yieldingWait } from './wait';
import { DeviceLostError, GpuUnavailableError, GpuValidationError, WebMoeError } from '../errors';

export interface GpuOptions {
  /** The GPU entry point: navigator.gpu in pages and workers, `create()` from the `webgpu` package in Node. */
  gpu?: GPU;
  powerPreference?: GPUPowerPreference;
  /** Turn optional features off (e.g. to test the f32 fallbacks on a device that has shader-f16). */
  disableFeatures?: string[];
  /**
   * Cap a limit below what the adapter grants (tests of the limit checks). WebGPU raises a requested
   * limit below its baseline (e.g. 128 MiB bindings) to the baseline, so the cap is also applied to
   * `caps`, which is what webmoe plans and splits by: a smaller cap behaves like a smaller device.
   */
  limitOverrides?: Partial<Record<(typeof RAISED_LIMITS)[number], number>>;
  label?: string;
}

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  features: string[];
  limits: Record<string, number>;
}

const QUERY_CAPACITY = 4096; // timestamp slots per submit (2 per profiled dispatch)

/**
 * The device and everything hung on it: capabilities, buffers (with accounting), the pipeline cache,
 * the uniform ring, profiling, and error/loss reporting. One Gpu per device; kernels take it as their
 * first argument.
 */
export class Gpu {
  readonly caps: Capabilities;
  readonly buffers: BufferManager;
  readonly pipelines: PipelineCache;
  readonly profiler: Profiler;
  readonly temps: TempPool;
  dispatchCount = 0;
  submitCount = 0;
  /**
   * Bytes of memory the device can be expected to hold, when the host knows (Node sets the system memory
   * for a CPU fallback adapter, whose buffers live there); undefined otherwise: WebGPU does not expose it.
   */
  memoryHint: number | undefined = undefined;
  /** Set once the device is lost; every later GPU call throws a DeviceLostError. */
  lostError: DeviceLostError | null = null;
  /** Uncaptured errors (outside error scopes), newest last. */
  readonly uncaptured: WebMoeError[] = [];
  /** How many uncaptured errors occurred in all (the list keeps the newest 100). */
  uncapturedTotal = 0;
  private lostListeners = new Set<(e: DeviceLostError) => void>();
  private ring: GPUBuffer | null = null;
  private querySet: GPUQuerySet | null = null;

  constructor(readonly device: GPUDevice, readonly adapter: AdapterDescription, readonly label = 'webmoe', limitOverrides: GpuOptions['limitOverrides'] = {}) {
    this.caps = capabilitiesOf(device);
    for (const [name, cap] of Object.entries(limitOverrides)) {
      const key = (name === 'maxStorageBuffersPerShaderStage' ? 'maxStorageBuffersPerStage' : name) as keyof Capabilities;
      if (typeof cap === 'number' && typeof this.caps[key] === 'number') (this.caps as unknown as Record<string, number>)[key] = Math.min(this.caps[key] as number, cap);
    }
    this.buffers = new BufferManager(device, this.caps);
    this.pipelines = new PipelineCache(device);
    this.profiler = new Profiler(this.caps.timestampQuery);
    this.temps = new TempPool(this.buffers, `${label}.temp`);
    device.lost.then((info) => {
      this.lostError = new DeviceLostError(`The GPU device was lost (${info.reason}): ${info.message || 'no message'}`, info.reason);
      for (const l of this.lostListeners) l(this.lostError);
    });
    device.addEventListener('uncapturederror', (ev: Event) => {
      const err = (ev as GPUUncapturedErrorEvent).error;
      const code = err.constructor?.name === 'GPUOutOfMemoryError' ? 'GPU_OUT_OF_MEMORY' : 'GPU_VALIDATION';
      this.uncaptured.push(new GpuValidationError(err.message, code));
      this.uncapturedTotal++;
      if (this.uncaptured.length > 100) this.uncaptured.shift();
    });
  }

  onLost(listener: (e: DeviceLostError) => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  assertAlive(): void {
    if (this.lostError) throw this.lostError;
  }

  recorder(label: string): Recorder {
    return new Recorder(this, label);
  }

  /** Waits for all submitted work. */
  async sync(): Promise<void> {
    this.assertAlive();
    await yieldingWait(() => this.device.queue.onSubmittedWorkDone());
    this.assertAlive();
  }

  /**
   * Runs `fn` inside validation, out-of-memory and internal error scopes and throws a typed error if
   * any of them caught something. Tests wrap every kernel run in this.
   */
  async checked<T>(fn: () => T | Promise<T>): Promise<T> {
    const d = this.device;
    d.pushErrorScope('internal');
    d.pushErrorScope('out-of-memory');
    d.pushErrorScope('validation');
    let result: T;
    let thrown: unknown = null;
    try {
      result = await fn();
    } catch (e) {
      thrown = e;
    }
    const validation = await d.popErrorScope();
    const oom = await d.popErrorScope();
    const internal = await d.popErrorScope();
    if (thrown) throw thrown;
    if (validation) throw new GpuValidationError(`WebGPU validation error: ${validation.message}`);
    if (oom) throw new GpuValidationError(`WebGPU out of memory: ${oom.message}`, 'GPU_OUT_OF_MEMORY');
    if (internal) throw new GpuValidationError(`WebGPU internal error: ${internal.message}`, 'GPU_INTERNAL');
    return result!;
  }

  /** The shared uniform buffer, grown on demand. Queue order makes reuse across submits safe. */
  uniformRing(bytes: number): GPUBuffer {
    if (!this.ring || this.ring.size < bytes) {
      if (this.ring) this.buffers.destroy(this.ring);
      const size = Math.max(64 * 1024, 2 ** Math.ceil(Math.log2(bytes)));
      this.ring = this.buffers.create(`${this.label}.uniformRing`, size, 0x40 | 0x08);
    }
    return this.ring;
  }

  timestampSlot(i: number): { set: GPUQuerySet; begin: number; end: number } {
    if (!this.querySet) this.querySet = this.device.createQuerySet({ label: `${this.label}.timestamps`, type: 'timestamp', count: QUERY_CAPACITY });
    const k = i % (QUERY_CAPACITY / 2);
    return { set: this.querySet, begin: 2 * k, end: 2 * k + 1 };
  }

  /** Encodes the resolve; the returned function reads the times back after submit. */
  resolveTimestamps(encoder: GPUCommandEncoder, n: number): (labels: string[]) => Promise<void> {
    const count = Math.min(2 * n, QUERY_CAPACITY);
    const resolveBuf = this.device.createBuffer({ label: `${this.label}.tsResolve`, size: count * 8, usage: 0x200 | 0x04 });
    encoder.resolveQuerySet(this.querySet!, 0, count, resolveBuf, 0);
    const read = this.device.createBuffer({ label: `${this.label}.tsRead`, size: count * 8, usage: 0x01 | 0x08 });
    encoder.copyBufferToBuffer(resolveBuf, 0, read, 0, count * 8);
    return async (labels) => {
      await yieldingWait(() => read.mapAsync(0x01));
      const t = new BigUint64Array(read.getMappedRange());
      for (let i = 0; i < count / 2; i++) this.profiler.record(labels[i], Number(t[2 * i + 1] - t[2 * i]) / 1e6);
      read.unmap();
      read.destroy();
      resolveBuf.destroy();
    };
  }

  /** Frees every buffer and the device. */
  destroy(): void {
    this.temps.destroy();
    this.buffers.destroyAll();
    this.ring = null;
    this.querySet?.destroy();
    this.pipelines.clear();
    this.device.destroy();
  }
}

function describeAdapter(adapter: GPUAdapter): AdapterDescription {
  const info = (adapter as any).info ?? {};
  const limits: Record<string, number> = {};
  for (const k in adapter.limits) {
    const v = (adapter.limits as any)[k];
    if (typeof v === 'number') limits[k] = v;
  }
  return {
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    device: info.device ?? '',
    description: info.description ?? '',
    isFallbackAdapter: !!(info.isFallbackAdapter ?? (adapter as any).isFallbackAdapter),
    features: [...adapter.features].sort(),
    limits,
  };
}

function defaultGpu(): GPU | undefined {
  return typeof navigator !== 'undefined' ? (navigator as Navigator).gpu : undefined;
}

/**
 * Acquires a high-performance adapter and a device with the optional features it offers
 * (shader-f16, subgroups, timestamp-query) and limits raised to what it grants.
 */
export async function acquireGpu(options: GpuOptions = {}): Promise<Gpu> {
  const gpu = options.gpu ?? defaultGpu();
  if (!gpu) {
    throw new GpuUnavailableError(
      'WebGPU is not available here. Use a recent Chrome or Edge (113+), or Firefox/Safari with WebGPU enabled; ' +
        'pages must be served over https or from localhost. In Node, pass { gpu } from the `webgpu` package (see webmoe/node).',
    );
  }
  const adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference ?? 'high-performance' });
  if (!adapter) throw new GpuUnavailableError('WebGPU is present but no adapter was found (GPU blocklisted or drivers missing). In Chrome, check chrome://gpu; on Linux try --enable-unsafe-webgpu --enable-features=Vulkan.');
  const disabled = new Set(options.disableFeatures ?? []);
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f) && !disabled.has(f)) as GPUFeatureName[];
  const requiredLimits: Record<string, number> = {};
  for (const name of RAISED_LIMITS) {
    const granted = (adapter.limits as any)[name] as number | undefined;
    if (granted === undefined) continue;
    const override = options.limitOverrides?.[name];
    requiredLimits[name] = override !== undefined ? Math.min(override, granted) : granted;
  }
  const description = describeAdapter(adapter);
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ label: options.label ?? 'webmoe', requiredFeatures, requiredLimits });
  } catch (e) {
    throw new GpuUnavailableError(`requestDevice failed: ${(e as Error).message}`);
  }
  return new Gpu(device, description, options.label ?? 'webmoe', options.limitOverrides);
}
