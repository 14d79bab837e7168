/**
 * createEngine: the in-thread engine with the GPU loader. Loading = open the checkpoint (config and
 * shapes checked before any GPU allocation), estimate memory against the device's limits, build the
 * tokenizer, then stream the weights to the GPU. A failed load frees what it allocated.
 */
import { WebMoeEngine, type LoadedModel, type ModelLoader } from './engine';
import type { EngineOptions, LoadOptions, ModelInfo, WeightStorage } from './types';
import { TextCodec } from './text';
import { GpuRunner } from './gpu-runner';
import { acquireGpu, type Gpu, type GpuOptions } from '../gpu/device';
import { GpuBackend, type WeightPolicy } from '../model/gpu-backend';
import { buildWeights } from '../model/load';
import { isMoeLayer, type ModelConfig } from '../model/config';
import { expectedTensorShapes } from '../model/tensors';
import { openCheckpoint, type Checkpoint } from '../model/checkpoint';
import { storedSparsity } from '../model/prune-checkpoint';
import { sparsityLabel } from '../sparse/apply';
import { urlModel, memoryModel, type ModelSource } from '../loader/model-source';
import { estimateMemory, checkFitsDevice } from '../model/memory-plan';
import { FormatError, ArgumentError } from '../errors';

export interface EngineEnvironment {
  /** A device for this engine (a new one after device loss). */
  acquire(options: GpuOptions | undefined, log: (m: string) => void): Promise<Gpu>;
  /** A model reference string → a ModelSource (URL in the browser; path or URL in Node). */
  resolve(model: string, options: LoadOptions): ModelSource;
}

export const browserEnvironment: EngineEnvironment = {
  acquire: (o) => acquireGpu(o),
  resolve: (model, o) => urlModel(model, { cache: o.cache === false ? false : undefined }),
};

/** Parameter counts from the config: all weights, and those one token reads (K routed experts). */
export function parameterCounts(cfg: ModelConfig): { total: number; active: number } {
  let total = 0, experts = 0;
  for (const [name, shape] of expectedTensorShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    total += n;
    if (/\.mlp\.experts\.\d+\./.test(name)) experts += n;
  }
  const perExpert = cfg.nRoutedExperts ? experts / (cfg.nRoutedExperts * Math.max(1, countMoeLayers(cfg))) : 0;
  return { total, active: total - experts + perExpert * cfg.numExpertsPerTok * countMoeLayers(cfg) };
}

const countMoeLayers = (cfg: ModelConfig) => Array.from({ length: cfg.numLayers }, (_, i) => i).filter((i) => isMoeLayer(cfg, i)).length;

/**
 * 'auto' keeps what the checkpoint stores when the GPU can hold it exactly: F16 weights stay f16 (half
 * the memory and bandwidth, decoded in the shader, no shader-f16 needed), anything else runs as f32
 * (BF16's range does not fit f16; FP8 and F32 are widened). On a CPU fallback adapter (SwiftShader)
 * 'auto' is f32: there the kernels are compute-bound and decoding f16 costs more than the bytes it
 * saves (routed-expert decode 0.7× the f32 speed, measured).
 */
function storageFor(w: WeightStorage | undefined, ckpt: Checkpoint, gpu: Gpu): 'f32' | 'f16' | 'q8' | 'q4' {
  const s = w ?? 'auto';
  if (!['auto', 'f32', 'f16', 'q8', 'q4'].includes(s)) throw new ArgumentError(`weights must be auto, f32, f16, q8 or q4, got ${String(s)}`);
  if (s !== 'auto') return s as 'f32' | 'f16' | 'q8' | 'q4';
  if (gpu.adapter.isFallbackAdapter) return 'f32';
  const linear = [...ckpt.tensors.values()].filter((t) => /\.(self_attn|mlp)\..*_proj\.weight$/.test(t.name));
  return linear.length > 0 && linear.every((t) => t.dtype === 'F16') ? 'f16' : 'f32';
}

export function gpuLoader(env: EngineEnvironment): ModelLoader {
  let gpu: Gpu | null = null;
  return async (model, options, engineOptions): Promise<LoadedModel> => {
    const log = engineOptions.log ?? (() => {});
    const t0 = performance.now();
    const source = typeof model === 'string' ? env.resolve(model, options) : model;
    const overlay = options.overlay instanceof Uint8Array ? memoryModel({ 'model.safetensors': options.overlay }) : typeof options.overlay === 'string' ? env.resolve(options.overlay, options) : options.overlay;
    const ckpt = await openCheckpoint(source, { onProgress: options.onProgress, signal: options.signal, overlay });
    const cfg = ckpt.config;
    if (!ckpt.tokenizerJson) throw new FormatError(`${source.description}: tokenizer.json is missing`);
    const codec = new TextCodec(ckpt.tokenizerJson, ckpt.tokenizerConfig, cfg.eosTokenIds);
    if (!gpu || gpu.lostError) gpu = await env.acquire(engineOptions.gpu, log);
    const storage = storageFor(options.weights, ckpt, gpu);
    const contextLength = options.contextLength ?? Math.min(cfg.maxPositionEmbeddings, 4096);
    if (!Number.isInteger(contextLength) || contextLength < 2) throw new ArgumentError(`contextLength must be an integer ≥ 2, got ${contextLength}`);
    checkFitsDevice(estimateMemory(cfg, { weightFormat: storage, contextLength }), gpu.caps);
    // A pre-pruned checkpoint runs on the sparse kernels by default; `sparsity: null` runs it dense.
    let stored = options.sparsity === undefined ? await storedSparsity(ckpt.tensors.keys(), async (t) => new Uint32Array((await ckpt.readRaw(t, options.signal)).data.slice().buffer)) : null;
    if (stored) {
      const { option: o, weights: w } = stored;
      // The GPU packs each routed expert's gate and up rows as one [2I, D] matrix; a V-row block then
      // spans both unless V divides I, and re-packing would not keep the stored values exactly.
      const exact = o.format === '2:4' || cfg.moeIntermediateSize % (o.v ?? 64) === 0;
      log(`${source.description}: ${w.length} weights stored pre-pruned (${sparsityLabel(o)}, ${o.apply}): ${exact ? 'sparse kernels' : `dense kernels (V = ${o.v} does not divide moe_intermediate_size = ${cfg.moeIntermediateSize})`}`);
      if (!exact) stored = null;
    }
    const sp = stored?.option ?? options.sparsity ?? null;
    const policy: WeightPolicy = {
      // Embeddings have f32 and f16 forms: quantised storage keeps them f16.
      storage: (role) => (role === 'embed' ? (storage === 'f32' ? 'f32' : 'f16') : storage),
      nativeFp8: false,
      sparsity: sp ? { format: sp.format, v: sp.v ?? 64, m: sp.m ?? 8, apply: sp.apply ?? 'experts', values: storage === 'q8' || storage === 'q4' ? storage : 'f32' } : null,
    };
    const be = new GpuBackend(gpu, cfg, policy, contextLength);
    let weights;
    try {
      weights = await buildWeights(be, cfg, ckpt, { onProgress: options.onProgress, signal: options.signal, storedPattern: stored?.option });
      gpu.assertAlive(); // uploads to a device lost meanwhile went nowhere
    } catch (e) {
      be.destroy();
      throw e;
    }
    const params = parameterCounts(cfg);
    const a = gpu.adapter;
    const info: ModelInfo = {
      name: source.description,
      modelType: cfg.modelType,
      layers: cfg.numLayers,
      hiddenSize: cfg.hiddenSize,
      vocabSize: cfg.vocabSize,
      experts: cfg.nRoutedExperts,
      expertsPerToken: cfg.numExpertsPerTok,
      moeLayers: Array.from({ length: cfg.numLayers }, (_, i) => i).filter((i) => isMoeLayer(cfg, i)),
      parameters: params.total,
      activeParameters: params.active,
      weightStorage: storage,
      expertStorage: cfg.nRoutedExperts === 0 ? 'none' : policy.sparsity ? `sparse ${policy.sparsity.values}` : be.expertFormat,
      sparsity: sp ? `${sparsityLabel(sp)} (${sp.apply ?? 'experts'}${stored ? ', pre-pruned' : ''})` : 'dense',
      contextLength,
      chatTemplate: codec.hasChatTemplate,
    };
    options.onProgress?.({ phase: 'done', bytesLoaded: 0, bytesTotal: 0, tensorsLoaded: 0, tensorsTotal: 0 });
    return {
      runner: new GpuRunner(be, cfg, weights, contextLength),
      codec,
      info,
      loadTimeMs: performance.now() - t0,
      device: [a.vendor, a.architecture, a.description].filter(Boolean).join(' ') || 'WebGPU device',
    };
  };
}

/** An engine running in this thread (page, worker or Node with the `webgpu` package: see webmoe/node). */
export function createEngine(options: EngineOptions = {}, env: EngineEnvironment = browserEnvironment): WebMoeEngine {
  return new WebMoeEngine(gpuLoader(env), options);
}
