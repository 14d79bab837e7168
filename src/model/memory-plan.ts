/**
 * Memory estimate of a model on the GPU, checked against the device's limits before anything is
 * allocated. Weight matrices can be split by rows across several bindings, so they only need one row
 * to fit; what the runtime binds whole (the embedding table gathered by token id, a layer's stacked
 * routed experts, one layer's KV cache) must fit maxStorageBufferBindingSize.
 */
import { LimitExceededError } from '../errors';
import type { Capabilities } from '../gpu/capabilities';
import type { ModelConfig } from './config';
import { modelTensors, moeLayers, tensorName } from './tensors';

export type WeightFormat = 'f32' | 'f16' | 'q8' | 'q4' | 'fp8';

/**
 * Bytes per weight element of each storage format, including its scales: q8/q4 carry one f32 scale
 * per 32 weights; fp8 one f32 scale per 128×128 block.
 */
export const BYTES_PER_WEIGHT: Readonly<Record<WeightFormat, number>> = {
  f32: 4,
  f16: 2,
  q8: 1 + 4 / 32,
  q4: 0.5 + 4 / 32,
  fp8: 1 + 4 / (128 * 128),
};

export interface MemoryEstimate {
  weightBytes: number;
  kvBytesPerToken: number;
  kvBytes: number;
  activationBytes: number;
  /** The biggest buffer that must be one binding. */
  largestBinding: { name: string; bytes: number };
  /** The biggest single buffer (a split tensor counts once per part, so this is ≤ its binding limit only if split). */
  largestBuffer: { name: string; bytes: number };
  total: number;
}

export interface EstimateOptions {
  weightFormat: WeightFormat;
  contextLength: number;
  /** Bytes per KV-cache element (4 = f32, 2 = f16). Default 4. */
  kvBytesPerElement?: number;
  /** 'latent' (absorbed MLA: c_KV + k_rope per token per layer, the default) or 'naive' (expanded K and V). */
  kvLayout?: 'latent' | 'naive';
  /** Tokens per prefill step (activations scale with it). Default 512. */
  prefillChunk?: number;
  /** Format of the embedding / lm_head tables (default: weightFormat, f16 at least for q8/q4/fp8). */
  embeddingFormat?: WeightFormat;
  /** Format of the stacked routed experts (default: weightFormat; f16 for fp8, which the experts do not read natively). */
  expertFormat?: WeightFormat;
  /** The runtime can split these by rows too (then they only need one row to fit). */
  splittable?: { embedding?: boolean; experts?: boolean };
}

export function estimateMemory(cfg: ModelConfig, opts: EstimateOptions): MemoryEstimate {
  const wb = BYTES_PER_WEIGHT[opts.weightFormat];
  const embFormat = opts.embeddingFormat ?? (opts.weightFormat === 'f32' ? 'f32' : 'f16');
  const eb = BYTES_PER_WEIGHT[embFormat];
  const xb = BYTES_PER_WEIGHT[opts.expertFormat ?? (opts.weightFormat === 'fp8' ? 'f16' : opts.weightFormat)];
  let weightBytes = 0;
  let largestBuffer = { name: '', bytes: 0 };
  for (const t of modelTensors(cfg)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const bytes = Math.ceil(n * (t.kind === 'vector' ? 4 : t.kind === 'embedding' ? eb : t.expert >= 0 ? xb : wb));
    weightBytes += bytes;
    if (bytes > largestBuffer.bytes) largestBuffer = { name: t.name, bytes };
  }
  const kve = opts.kvBytesPerElement ?? 4;
  const perLayer = (opts.kvLayout ?? 'latent') === 'latent'
    ? cfg.kvLoraRank + cfg.qkRopeHeadDim
    : cfg.numHeads * (cfg.qkNopeHeadDim + cfg.qkRopeHeadDim + cfg.vHeadDim);
  const kvBytesPerToken = perLayer * kve * cfg.numLayers;
  const ctx = opts.contextLength;
  const kvBytes = kvBytesPerToken * ctx;

  // Activations for one prefill chunk: the residual stream and norms, q / kv projections, attention
  // output, the widest FFN (dense, shared or k routed experts), logits, plus the attention scores of
  // one chunk against the whole context (f32).
  const T = Math.min(opts.prefillChunk ?? 512, ctx);
  const H = cfg.numHeads;
  const qk = cfg.qkNopeHeadDim + cfg.qkRopeHeadDim;
  const ffn = Math.max(cfg.intermediateSize, cfg.nSharedExperts * cfg.moeIntermediateSize, cfg.numExpertsPerTok * cfg.moeIntermediateSize);
  const perToken = 4 * cfg.hiddenSize + (cfg.qLoraRank ?? 0) + H * qk + (cfg.kvLoraRank + cfg.qkRopeHeadDim) + H * (cfg.kvLoraRank + cfg.qkRopeHeadDim) + H * cfg.vHeadDim + 3 * ffn + cfg.vocabSize + 2 * cfg.nRoutedExperts;
  const activationBytes = 4 * (T * perToken + H * T * ctx);

  const bindings: { name: string; bytes: number }[] = [];
  if (!opts.splittable?.embedding) bindings.push({ name: tensorName('embed'), bytes: Math.ceil(cfg.vocabSize * cfg.hiddenSize * eb) });
  else bindings.push({ name: `${tensorName('embed')} (one row)`, bytes: Math.ceil(cfg.hiddenSize * eb) });
  const moeLayer = moeLayers(cfg)[0];
  if (moeLayer !== undefined) {
    // gate and up rows are stacked together ([E, 2I, D]), the larger of the two expert buffers
    const stack = cfg.nRoutedExperts * 2 * cfg.moeIntermediateSize * cfg.hiddenSize * xb;
    if (!opts.splittable?.experts) bindings.push({ name: `${tensorName('expert_gate', moeLayer, '*')} + up_proj (stacked)`, bytes: Math.ceil(stack) });
  }
  bindings.push({ name: 'KV cache (one layer)', bytes: perLayer * kve * ctx });
  // Splittable matrices need one row per binding; their widest row:
  let widestRow = { name: '', bytes: 0 };
  for (const t of modelTensors(cfg)) {
    if (t.kind !== 'matrix') continue;
    const bytes = Math.ceil(t.shape[t.shape.length - 1] * wb);
    if (bytes > widestRow.bytes) widestRow = { name: `${t.name} (one row)`, bytes };
  }
  bindings.push(widestRow);
  bindings.push({ name: 'attention scores (one prefill chunk)', bytes: 4 * H * T * ctx });
  const largestBinding = bindings.reduce((a, b) => (b.bytes > a.bytes ? b : a));

  return { weightBytes, kvBytesPerToken, kvBytes, activationBytes, largestBinding, largestBuffer, total: weightBytes + kvBytes + activationBytes };
}

/**
 * Throws LimitExceededError, naming the limit and the shortfall, when the estimate cannot fit the device:
 * a buffer that must be one binding over maxStorageBufferBindingSize or maxBufferSize, or the total
 * over `memoryBytes` when the caller knows the device's memory (WebGPU does not expose it).
 */
export function checkFitsDevice(estimate: MemoryEstimate, caps: Pick<Capabilities, 'maxStorageBufferBindingSize' | 'maxBufferSize'>, opts: { memoryBytes?: number } = {}): void {
  const b = estimate.largestBinding;
  if (b.bytes > caps.maxBufferSize) throw new LimitExceededError('maxBufferSize', b.bytes, caps.maxBufferSize, `${b.name} (one buffer)`);
  if (b.bytes > caps.maxStorageBufferBindingSize) throw new LimitExceededError('maxStorageBufferBindingSize', b.bytes, caps.maxStorageBufferBindingSize, `${b.name} (one binding)`);
  if (opts.memoryBytes !== undefined && estimate.total > opts.memoryBytes) {
    throw new LimitExceededError('device memory', estimate.total, opts.memoryBytes, 'the model (weights + KV cache + activations)');
  }
}
