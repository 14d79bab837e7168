/**
 * Model assembly: an opened checkpoint → a GpuRunner on a device. The config and shapes were checked
 * when the checkpoint was opened (before any GPU allocation); here the memory is estimated against the
 * device's limits, the storage and sparsity are chosen, and the weights are streamed to the GPU. A
 * failed load frees what it allocated. The device is acquired here, kept across loads, and replaced
 * after loss.
 */
import { GpuRunner } from './gpu-runner';
import type { ModelRunner } from './runner';
import { acquireGpu, type Gpu, type GpuOptions } from '../gpu/device';
import { GpuBackend, type WeightPolicy } from './gpu-backend';
import { buildWeights } from './load';
import { familyLabel, type ModelConfig } from './config';
import { modelTensors, moeLayers } from './tensors';
import type { Checkpoint, LoadProgress } from './checkpoint';
import { autoSparsity, storedSparsity } from './prune-checkpoint';
import { sparsityLabel, type SparsityOption } from '../sparse/apply';
import { DEFAULT_PREFILL_CHUNK, checkPlanFits, embeddingStorage, kvCacheFor, planMemory, resolveStorage, whatFits, type MemoryPlan, type PlanDevice, type StorageFormat } from './memory-plan';
import { ArgumentError, LimitExceededError, UnsupportedError } from '../errors';
import { DEFAULT_EVICTION, DEFAULT_PREFETCH, type EvictionPolicy, type ExpertSourcePolicy, type OffloadConfig, type PrefetchPolicy } from './expert-cache';
import { hasRole, tensorName } from './tensors';
import { packMxfp4Experts } from '../kernels/moe-slots';
import { HostPacker } from '../kernels/wasm/host-pack';

export type { Gpu, GpuOptions };

export type WeightStorage = 'auto' | 'f32' | 'f16' | 'bf16' | 'q8' | 'q4' | 'gguf';

export interface SparsityOptions {
  /** 'auto': V and M chosen for `targetRatio` by the V:N:M paper's mask-diversity heuristic (src/sparse/select.ts). */
  format: '2:4' | 'vnm' | 'auto';
  /** V:N:M block rows (default 64) and group width M (default 8). */
  v?: number;
  m?: number;
  /** With format 'auto': the largest packed/dense-f32 byte ratio of the pruned matrices (e.g. 0.45). */
  targetRatio?: number;
  /** Which matrices run sparse: the routed/shared expert and dense MLP weights, or every linear layer. */
  apply?: 'experts' | 'all-linear';
  /** Permute each routed expert's intermediate channels before pruning (src/sparse/permute.ts; exact, costs load time). */
  permute?: boolean;
}

/** What a loaded model is: its shape, its parameter counts and how its weights are held. */
export interface ModelDescription {
  name: string;
  modelType: string;
  /** The architecture family's name ("Qwen3-MoE", "DeepSeek-V3"; config.ts FAMILIES). */
  family: string;
  layers: number;
  hiddenSize: number;
  vocabSize: number;
  experts: number;
  expertsPerToken: number;
  moeLayers: number[];
  parameters: number;
  activeParameters: number;
  weightStorage: string;
  /** How the routed experts are held: 'f32' | 'f16' | 'bf16' | 'q8' | 'q4' (dense stacks), 'mxfp4' (GPT-OSS's released experts), 'gguf' (a GGUF's stacked blocks), 'sparse f32|q8|q4', or 'none'. */
  expertStorage?: string;
  sparsity: string;
  contextLength: number;
  /**
   * Multi-Token Prediction modules loaded (DeepSeek-V3's MTP layers, model.layers.{layers + k}; 0 when
   * the config declares none or the checkpoint leaves them out): self-speculative decoding uses the first.
   */
  mtpLayers?: number;
  /** The memory plan the load was checked against (GPU loads; model/memory-plan.ts). */
  memoryPlan?: MemoryPlan;
}

export interface ModelLoadOptions {
  /** Weight storage on the GPU (see LoadOptions.weights). */
  weights?: WeightStorage;
  sparsity?: SparsityOptions | null;
  /** KV cache capacity in tokens (default: max_position_embeddings, at most 4096). */
  contextLength?: number;
  /** Most tokens per prefill forward (LoadOptions.prefillChunk); default min(DEFAULT_PREFILL_CHUNK, context), smaller on a device whose bindings cannot hold a chunk's temporaries (planMemory). */
  prefillChunk?: number;
  /** KV cache element format (LoadOptions.kvCache); default f16 on a GPU, f32 on a CPU fallback adapter (kvCacheFor). */
  kvCache?: 'f16' | 'f32';
  /** GPU memory the model may take (LoadOptions.memoryBytes); default gpu.memoryHint. */
  memoryBytes?: number;
  /** Where q8/q4 experts are quantised at load (LoadOptions.quantizeAt). */
  quantizeAt?: 'gpu' | 'host' | 'auto';
  /** GPU memory budget in bytes (LoadOptions.gpuMemoryBudget): past it, routed experts are offloaded. */
  gpuMemoryBudget?: number;
  /** Where cold experts wait (LoadOptions.expertSource; model/expert-cache.ts). */
  expertSource?: ExpertSourcePolicy;
  expertPrefetch?: PrefetchPolicy;
  expertEviction?: EvictionPolicy;
  /** Host memory for 'auto' expertSource (LoadOptions.hostMemoryBytes). */
  hostMemoryBytes?: number;
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  log?: (msg: string) => void;
}

export interface GpuModel {
  runner: ModelRunner;
  description: ModelDescription;
  /** The memory plan the load was checked against (model/memory-plan.ts). */
  plan: MemoryPlan;
  /** The adapter's name (vendor, architecture, description). */
  device: string;
}

/** A device for models: `navigator.gpu` in browsers and workers, the `webgpu` package in Node (webmoe/node). */
export type AcquireGpu = (options: GpuOptions | undefined, log: (m: string) => void) => Promise<Gpu>;

export const acquireBrowserGpu: AcquireGpu = async (o) => {
  const gpu = await acquireGpu(o);
  // A CPU fallback adapter's buffers live in system memory, which the browser tells coarsely
  // (navigator.deviceMemory: GiB, rounded down, at most 8 in Chrome): the plan is checked against it,
  // as Node checks it against the system memory. WebGPU says nothing of a real GPU's memory.
  const gib = (globalThis.navigator as { deviceMemory?: unknown } | undefined)?.deviceMemory;
  if (gpu.adapter.isFallbackAdapter && typeof gib === 'number' && gib > 0) gpu.memoryHint = gib * 2 ** 30;
  return gpu;
};

/**
 * The default context: max_position_embeddings, at most 4096. A configured sliding window does not cap it:
 * the attention kernels run the windows themselves (decoder-blocks.ts slidingWindowOf).
 */
export function defaultContextLength(cfg: ModelConfig): number {
  return Math.min(cfg.maxPositionEmbeddings, 4096);
}

/** Parameter counts from the config: all weights, and those one token reads (K routed experts). */
export function parameterCounts(cfg: ModelConfig): { total: number; active: number } {
  let total = 0, experts = 0;
  for (const t of modelTensors(cfg)) {
    // MXFP4: a block byte holds two parameters; the scales are not parameters.
    const per = t.spec.ossExperts === 'blocks' ? 2 : t.spec.ossExperts === 'scales' ? 0 : 1;
    const n = t.shape.reduce((a, b) => a * b, 1) * per;
    total += n;
    if (t.expert >= 0 || t.spec.stacked || t.spec.ossExperts) experts += n;
  }
  const moe = moeLayers(cfg).length;
  const perExpert = cfg.nRoutedExperts ? experts / (cfg.nRoutedExperts * Math.max(1, moe)) : 0;
  return { total, active: total - experts + perExpert * cfg.numExpertsPerTok * moe };
}

/**
 * 'auto' keeps what the checkpoint stores when the GPU can hold it exactly: F16 weights stay f16 and
 * BF16 weights bf16 (half the memory and bandwidth of f32, decoded in the shader, no shader-f16
 * needed); FP8 checkpoints become q8 tensor by tensor as they stream; F32 and mixed checkpoints run as f32. On a CPU fallback adapter (SwiftShader)
 * 'auto' is f32: there the kernels are compute-bound and decoding f16 costs more than the bytes it
 * saves (routed-expert decode 0.7× the f32 speed, measured). The rule lives in memory-plan.ts
 * (resolveStorage) so that the plan and the load agree.
 */
function storageFor(w: WeightStorage | undefined, ckpt: Checkpoint, gpu: Gpu): StorageFormat {
  const s = w ?? 'auto';
  if (!['auto', 'f32', 'f16', 'bf16', 'q8', 'q4', 'gguf'].includes(s)) throw new ArgumentError(`weights must be auto, f32, f16, bf16, q8, q4 or gguf, got ${String(s)}`);
  if (s === 'gguf' && ![...ckpt.tensors.values()].some((t) => t.gguf)) throw new ArgumentError(`weights 'gguf' keeps a GGUF file's quantised blocks on the GPU; this checkpoint has none (a safetensors folder or an F32/F16 GGUF): use auto, f32, f16, bf16, q8 or q4`);
  return resolveStorage(s, ckpt.tensors.values(), { isFallbackAdapter: gpu.adapter.isFallbackAdapter });
}

/**
 * Tokens per prefill forward: `asked`, or DEFAULT_PREFILL_CHUNK, at most the context (a longer chunk
 * would plan activations no prompt can use). The plan and the runner both take this value.
 */
export function prefillChunkOf(asked: number | undefined, contextLength: number): number {
  if (asked !== undefined && (typeof asked !== 'number' || !Number.isInteger(asked) || asked < 1)) {
    throw new ArgumentError(`prefillChunk must be a positive integer number of tokens (e.g. ${DEFAULT_PREFILL_CHUNK}), got ${String(asked)}`);
  }
  return Math.min(asked ?? DEFAULT_PREFILL_CHUNK, contextLength);
}

/** LoadOptions.quantizeAt resolved: 'auto' quantises on the device unless it is a CPU fallback adapter. */
export function quantizeOnDevice(asked: 'gpu' | 'host' | 'auto' | undefined, gpu: Gpu): boolean {
  if (asked !== undefined && !['gpu', 'host', 'auto'].includes(asked)) throw new ArgumentError(`quantizeAt must be gpu, host or auto, got ${String(asked)}`);
  return asked === 'gpu' || ((asked ?? 'auto') === 'auto' && !gpu.adapter.isFallbackAdapter);
}

/** The device facts the memory plan depends on. */
export function planDevice(gpu: Gpu): PlanDevice {
  const c = gpu.caps;
  return { isFallbackAdapter: gpu.adapter.isFallbackAdapter, maxStorageBufferBindingSize: c.maxStorageBufferBindingSize, maxBufferSize: c.maxBufferSize, minStorageBufferOffsetAlignment: c.minStorageBufferOffsetAlignment, maxComputeWorkgroupStorageSize: c.maxComputeWorkgroupStorageSize };
}

/** The description of a model of `cfg` (parameter counts from the config), with how it is held. */
export function describeModel(cfg: ModelConfig, held: Pick<ModelDescription, 'name' | 'weightStorage' | 'expertStorage' | 'sparsity' | 'contextLength'> & { mtpLayers?: number }): ModelDescription {
  const params = parameterCounts(cfg);
  return {
    name: held.name,
    modelType: cfg.modelType,
    family: familyLabel(cfg),
    layers: cfg.numLayers,
    hiddenSize: cfg.hiddenSize,
    vocabSize: cfg.vocabSize,
    experts: cfg.nRoutedExperts,
    expertsPerToken: cfg.numExpertsPerTok,
    moeLayers: moeLayers(cfg),
    parameters: params.total,
    activeParameters: params.active,
    weightStorage: held.weightStorage,
    expertStorage: held.expertStorage,
    sparsity: held.sparsity,
    contextLength: held.contextLength,
    mtpLayers: held.mtpLayers ?? 0,
  };
}

const POLICIES = { source: ['auto', 'host', 'source'], prefetch: ['none', 'previous-token', 'next-gate'], eviction: ['lru', 'load'] } as const;

/**
 * The expert cache's policies from the load options. Cold experts: 'auto' keeps them packed in host
 * memory when they take at most half of it (hostMemoryBytes; default navigator.deviceMemory GiB where
 * the browser tells, else 4 GiB assumed), else re-reads them from the checkpoint on each miss.
 */
export function offloadConfig(routedBytes: number, capacity: number, o: ModelLoadOptions, ckpt: Pick<Checkpoint, 'readF32' | 'readRaw' | 'config'>): OffloadConfig {
  const check = <K extends keyof typeof POLICIES>(what: K, v: unknown, option: string) => {
    if (v !== undefined && !(POLICIES[what] as readonly unknown[]).includes(v)) throw new ArgumentError(`${option} must be ${POLICIES[what].join(', ')}; got ${JSON.stringify(v)}`);
  };
  check('source', o.expertSource, 'expertSource');
  check('prefetch', o.expertPrefetch, 'expertPrefetch');
  check('eviction', o.expertEviction, 'expertEviction');
  if (o.hostMemoryBytes !== undefined && !(o.hostMemoryBytes > 0)) throw new ArgumentError(`hostMemoryBytes must be a positive number of bytes, got ${o.hostMemoryBytes}`);
  const gib = (globalThis.navigator as { deviceMemory?: unknown } | undefined)?.deviceMemory;
  const host = o.hostMemoryBytes ?? (typeof gib === 'number' && gib > 0 ? gib * 2 ** 30 : 4 * 2 ** 30);
  const asked = o.expertSource ?? 'auto';
  const source = asked === 'auto' ? (routedBytes <= host / 2 ? 'host' : 'source') : asked;
  return {
    capacity, source, prefetch: o.expertPrefetch ?? DEFAULT_PREFETCH, eviction: o.expertEviction ?? DEFAULT_EVICTION,
    readExpert: async (layer, e) => {
      const cfg = ckpt.config, I = cfg.moeIntermediateSize, D = cfg.hiddenSize;
      if (hasRole(cfg, 'experts_gate_up')) {
        // Granite keeps a layer's experts in two stacked tensors, input_linear [E, 2I, D] (rows [gate; up])
        // and output_linear [E, D, I]: both are read whole and expert e's rows taken, so a miss re-reads E
        // experts' bytes (expertSource 'host' avoids it).
        const [gateUp, down] = await Promise.all((['experts_gate_up', 'experts_down'] as const).map((r) => ckpt.readF32(tensorName(r, layer, -1, cfg))));
        const at = e * 2 * I * D;
        return { gate: gateUp.slice(at, at + I * D), up: gateUp.slice(at + I * D, at + 2 * I * D), down: down.slice(e * D * I, (e + 1) * D * I) };
      }
      const [gate, up, down] = await Promise.all((['expert_gate', 'expert_up', 'expert_down'] as const).map((r) => ckpt.readF32(tensorName(r, layer, e, cfg))));
      return { gate, up, down };
    },
    readPacked: async (layer, e) => {
      // GPT-OSS keeps a layer's experts in stacked tensors (blocks, scales, biases): all six are read
      // and expert e's bytes taken, so a miss re-reads E experts' bytes (expertSource 'host' avoids it).
      const cfg = ckpt.config, E = cfg.nRoutedExperts, I = cfg.moeIntermediateSize, D = cfg.hiddenSize;
      const raw = (r: 'oss_gate_up_blocks' | 'oss_gate_up_scales' | 'oss_down_blocks' | 'oss_down_scales') => ckpt.readRaw(tensorName(r, layer, -1, cfg)).then((t) => t.data);
      const f32 = (r: 'oss_gate_up_bias' | 'oss_down_bias') => ckpt.readF32(tensorName(r, layer, -1, cfg));
      const [gateUpBlocks, gateUpScales, downBlocks, downScales, gateUpBias, downBias] = await Promise.all([raw('oss_gate_up_blocks'), raw('oss_gate_up_scales'), raw('oss_down_blocks'), raw('oss_down_scales'), f32('oss_gate_up_bias'), f32('oss_down_bias')]);
      return packMxfp4Experts({ gateUpBlocks, gateUpScales, downBlocks, downScales, gateUpBias, downBias }, E, D, I)[e];
    },
  };
}

/**
 * The sparsity a load runs with (the GPU and the WASM loaders): a pre-pruned checkpoint's stored
 * pattern runs on the sparse kernels unless `asked` says otherwise (null: dense); else the asked
 * option, 'auto' resolved to V and M for its target ratio. `stored` when the stored values are used
 * as they are.
 */
export async function loadSparsity(ckpt: Checkpoint, asked: SparsityOptions | null | undefined, name: string, log: (msg: string) => void, signal?: AbortSignal): Promise<{ option: SparsityOption | null; stored: { option: SparsityOption; weights: string[] } | null }> {
  const cfg = ckpt.config;
  let stored = asked === undefined ? await storedSparsity(ckpt.tensors.keys(), async (t) => new Uint32Array((await ckpt.readRaw(t, signal)).data.slice().buffer)) : null;
  if (stored) {
    const { option: o, weights: w } = stored;
    // Routed experts' gate and up rows are packed as one [2I, D] matrix; a V-row block then spans both
    // unless V divides I, and re-packing would not keep the stored values exactly.
    const exact = o.format === '2:4' || cfg.moeIntermediateSize % (o.v ?? 64) === 0;
    log(`${name}: ${w.length} weights stored pre-pruned (${sparsityLabel(o)}, ${o.apply}): ${exact ? 'sparse kernels' : `dense kernels (V = ${o.v} does not divide moe_intermediate_size = ${cfg.moeIntermediateSize})`}`);
    if (!exact) stored = null;
  }
  const a = stored?.option ?? asked ?? null;
  if (!a) return { option: null, stored };
  if (a.format !== 'auto') return { option: { ...a, format: a.format, apply: a.apply ?? 'experts' }, stored };
  const auto = autoSparsity([...ckpt.tensors].map(([n, t]) => ({ name: n, shape: t.shape })), cfg, a.apply ?? 'experts', a.targetRatio);
  log(`${name}: sparsity auto (target ratio ${a.targetRatio}) → ${auto.label}, ${auto.selection.ratio.toFixed(4)} of the dense f32 bytes`);
  return { option: { ...auto.option, permute: a.permute }, stored };
}

/** Loads checkpoints onto one device, acquired at the first load and again after it is lost. */
export class GpuModelLoader {
  private gpu: Gpu | null = null;

  constructor(private acquire: AcquireGpu = acquireBrowserGpu, private gpuOptions?: GpuOptions) {}

  /**
   * The memory plan of `ckpt` on this device under `options`, from the config and tensor headers only
   * (no weight bytes read, nothing allocated); throws LimitExceededError naming the limit and the loads
   * that would fit when it does not fit. load() runs the same check first.
   */
  async plan(ckpt: Checkpoint, options: ModelLoadOptions = {}): Promise<MemoryPlan> {
    return (await this.checkedPlan(ckpt, options)).plan;
  }

  /** The device (acquired now if there is none yet, or a new one after loss); throws GpuUnavailableError without WebGPU. */
  async device(log: (m: string) => void = () => {}): Promise<Gpu> {
    if (!this.gpu || this.gpu.lostError) this.gpu = await this.acquire(this.gpuOptions, log);
    return this.gpu;
  }

  private async checkedPlan(ckpt: Checkpoint, options: ModelLoadOptions) {
    const log = options.log ?? (() => {});
    const cfg = ckpt.config;
    if (!this.gpu || this.gpu.lostError) this.gpu = await this.acquire(this.gpuOptions, log);
    const gpu = this.gpu;
    const storage = storageFor(options.weights, ckpt, gpu);
    const contextLength = options.contextLength ?? defaultContextLength(cfg);
    if (!Number.isInteger(contextLength) || contextLength < 2) throw new ArgumentError(`contextLength must be an integer ≥ 2, got ${contextLength}`);
    // The plan from the config and tensor headers, checked before anything is allocated; a load that
    // cannot fit fails here naming the limit and the loads that would fit.
    // Asked for, or sized from the device by the plan (plan.prefillTokens).
    const askedChunk = options.prefillChunk === undefined ? undefined : prefillChunkOf(options.prefillChunk, contextLength);
    const device = planDevice(gpu);
    const kvCache = kvCacheFor(options.kvCache, device);
    const planOpts = { weights: storage, contextLength, prefillTokens: askedChunk, device, kvCache };
    const memoryBytes = options.memoryBytes ?? gpu.memoryHint;
    if (memoryBytes !== undefined && !(memoryBytes > 0)) throw new ArgumentError(`memoryBytes must be a positive number of bytes, got ${memoryBytes}`);
    const gpuBudget = options.gpuMemoryBudget;
    if (gpuBudget !== undefined && memoryBytes !== undefined && gpuBudget > memoryBytes) {
      throw new LimitExceededError('GPU memory', gpuBudget, memoryBytes, `a GPU budget of ${(gpuBudget / 2 ** 20).toFixed(1)} MiB (gpuMemoryBudget) is more than this device's ${(memoryBytes / 2 ** 20).toFixed(1)} MiB: ask for at most that`);
    }
    const plan = planMemory(cfg, ckpt.tensors.values(), { ...planOpts, gpuBudget });
    const budget = { maxStorageBufferBindingSize: gpu.caps.maxStorageBufferBindingSize, maxBufferSize: gpu.caps.maxBufferSize, memoryBytes };
    checkPlanFits(plan, budget, () => whatFits(cfg, ckpt.tensors.values(), planOpts, budget));
    return { gpu, storage, contextLength, prefillChunk: plan.prefillTokens, kvCache, plan };
  }

  /** Uploads `ckpt` (named `name` in the description) to the device and returns its runner. */
  async load(ckpt: Checkpoint, name: string, options: ModelLoadOptions = {}): Promise<GpuModel> {
    const log = options.log ?? (() => {});
    const cfg = ckpt.config;
    const { gpu, storage, contextLength, prefillChunk, kvCache, plan } = await this.checkedPlan(ckpt, options);
    const { option: sp, stored } = await loadSparsity(ckpt, options.sparsity, name, log, options.signal);
    if (sp && cfg.family === 'gpt_oss') throw new UnsupportedError(`sparsity (${sparsityLabel(sp)}) does not apply to GPT-OSS yet: its experts run as the checkpoint's MXFP4 blocks, which the sparse kernels do not take; load without the sparsity option`);
    const onDevice = quantizeOnDevice(options.quantizeAt, gpu);
    const policy: WeightPolicy = {
      // Embeddings have f32 and f16 forms: quantised storage keeps them f16.
      storage: (role) => (role === 'embed' ? embeddingStorage(storage) : storage),
      nativeFp8: false,
      quantizeOnDevice: onDevice,
      // Host packing (dense q8/q4/f16/bf16 matrices and 16-bit embeddings; routed experts when not
      // quantised on the device) runs in WebAssembly SIMD from the checkpoint's bytes (null without SIMD: packWeight).
      hostPacker: storage === 'q8' || storage === 'q4' || storage === 'f16' || storage === 'bf16' ? await HostPacker.load() : null,
      sparsity: sp ? { format: sp.format, v: sp.v ?? 64, m: sp.m ?? 8, apply: sp.apply ?? 'experts', permute: sp.permute, values: storage === 'q8' || storage === 'q4' ? storage : 'f32' } : null,
    };
    const be = new GpuBackend(gpu, cfg, policy, contextLength, kvCache, prefillChunk);
    if (plan.offload) {
      if (sp) throw new UnsupportedError('expert offload runs the dense expert kernels: load with a GPU budget or with sparsity, not both');
      be.offload = offloadConfig(plan.offload.routedBytes, plan.offload.capacity, options, ckpt);
      log(`${name}: expert offload: ${plan.offload.capacity} of ${cfg.nRoutedExperts} routed experts per MoE layer on the GPU, cold experts ${be.offload.source === 'host' ? 'in host memory' : 're-read from the source'}, prefetch ${be.offload.prefetch}, eviction ${be.offload.eviction}`);
    }
    let weights;
    try {
      weights = await buildWeights(be, cfg, ckpt, { onProgress: options.onProgress, signal: options.signal, storedPattern: stored?.option, ggufBlocks: storage === 'gguf' });
      gpu.assertAlive(); // uploads to a device lost meanwhile went nowhere
    } catch (e) {
      be.destroy();
      throw e;
    }
    const a = gpu.adapter;
    const description = describeModel(cfg, {
      name,
      weightStorage: storage,
      // GPT-OSS's MXFP4 experts stay MXFP4 whatever the storage (gpu-backend.ts gptOssMoe), and are never pruned.
      expertStorage: cfg.nRoutedExperts === 0 ? 'none' : cfg.family === 'gpt_oss' && cfg.quantization?.method === 'mxfp4' ? 'mxfp4' : policy.sparsity && cfg.family !== 'gpt_oss' ? `sparse ${policy.sparsity.values}` : be.expertFormat,
      sparsity: sp ? `${sparsityLabel(sp)} (${sp.apply ?? 'experts'}${stored ? ', pre-pruned' : ''})` : 'dense',
      contextLength,
      mtpLayers: weights.mtp?.length ?? 0,
    });
    description.memoryPlan = plan;
    return {
      runner: new GpuRunner(be, cfg, weights, contextLength, prefillChunk),
      description,
      plan,
      device: [a.vendor, a.architecture, a.description].filter(Boolean).join(' ') || 'WebGPU device',
    };
  }
}
