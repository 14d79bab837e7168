/**
 * Model assembly on the WebAssembly engine: an opened checkpoint → a WasmRunner. The same checks as a
 * GPU load where they apply (storage option, context length), the weights streamed into the module's
 * memory in the storage asked for, and a load that cannot fit wasm32's 4 GiB refused before any weight
 * is read.
 */
import type { Checkpoint } from './checkpoint';
import { WasmBackend, wasmKvValuesPerToken, type WasmStorage } from './wasm-backend';
import { WasmRunner } from './wasm-runner';
import { buildWeights } from './load';
import { defaultContextLength, describeModel, loadSparsity, parameterCounts, prefillChunkOf, type ModelDescription, type ModelLoadOptions, type WeightStorage } from './assemble';
import { resolveStorage } from './memory-plan';
import { WasmKernels, type WasmWeightFormat } from '../kernels/wasm/kernels';
import { ArgumentError, LimitExceededError, UnsupportedError } from '../errors';
import { sparsityLabel } from '../sparse/apply';

export interface WasmModel { runner: WasmRunner; description: ModelDescription; device: string }

const BYTES_PER_VALUE: Record<WasmWeightFormat, number> = { f32: 4, f16: 2, bf16: 2, q8: 1 + 4 / 32, q4: 0.5 + 4 / 32 };
const WASM32_BYTES = 4 * 2 ** 30;

/**
 * The storage of linear weights on WASM. 'auto' is f32 on this engine as on a CPU fallback adapter
 * (docs/wasm.md has the f32 / f16 / q8 / q4 decode speeds); a GGUF in quantised blocks stays in them
 * ('gguf': the WASM kernels of gguf.c read Q8_0, Q4_0, Q4_K, Q5_K and Q6_K blocks as stored).
 */
export function wasmStorage(w: WeightStorage | undefined, ckpt: Checkpoint): WasmStorage {
  const s = w ?? 'auto';
  if (!['auto', 'f32', 'f16', 'bf16', 'q8', 'q4', 'gguf'].includes(s)) throw new ArgumentError(`weights must be auto, f32, f16, bf16, q8, q4 or gguf, got ${String(s)}`);
  const r = resolveStorage(s, ckpt.tensors.values(), { isFallbackAdapter: true });
  if (r === 'gguf' && ![...ckpt.tensors.values()].some((t) => t.gguf)) throw new ArgumentError(`weights 'gguf' keeps a GGUF file's quantised blocks; this checkpoint has none (use auto, f32, f16, bf16, q8 or q4)`);
  return r as WasmStorage;
}

export async function loadWasmModel(ckpt: Checkpoint, name: string, options: ModelLoadOptions & { threads?: number } = {}, kernels?: WasmKernels): Promise<WasmModel> {
  const cfg = ckpt.config;
  const log = options.log ?? (() => {});
  const storage = wasmStorage(options.weights, ckpt);
  const contextLength = options.contextLength ?? defaultContextLength(cfg);
  if (!Number.isInteger(contextLength) || contextLength < 2) throw new ArgumentError(`contextLength must be an integer ≥ 2, got ${contextLength}`);
  if (options.kvCache === 'f16') throw new ArgumentError(`kvCache 'f16' is a WebGPU option; the WASM engine's KV cache is f32 (omit kvCache or pass 'f32')`);
  const prefillChunk = prefillChunkOf(options.prefillChunk, contextLength);
  // Memory before any weight is read: every parameter in the storage (f32 for the embedding, kv_b, the
  // router and norms is not separated out: an upper bound for f32, close for the rest) plus the cache.
  const params = parameterCounts(cfg).total;
  const kv = cfg.numLayers * contextLength * wasmKvValuesPerToken(cfg) * 4;
  // 'gguf': the file's tensor bytes (blocks as stored; F32/F16 tensors counted as f32).
  const estimate = (storage === 'gguf' ? [...ckpt.tensors.values()].reduce((a, t) => a + (t.gguf ? t.gguf.bytes : t.shape.reduce((x, d) => x * d, 1) * 4), 0) : params * BYTES_PER_VALUE[storage]) + kv;
  if (estimate > WASM32_BYTES) throw new LimitExceededError('wasm32 memory', Math.round(estimate), WASM32_BYTES, `${name} with ${storage} weights and a ${contextLength}-token cache (use q4 weights, a shorter context, or device webgpu)`);
  const { option: sp, stored } = await loadSparsity(ckpt, options.sparsity, name, log, options.signal);
  if (sp && cfg.family === 'gpt_oss') throw new UnsupportedError(`sparsity does not apply to GPT-OSS yet (its experts are stacked MXFP4 blocks, not the per-expert matrices the sparse kernels prune): load without the sparsity option`);
  const format = sp?.format === '2:4' ? '2:4' as const : 'vnm' as const;
  const sparsity = sp ? { format, v: sp.v ?? 64, m: sp.m ?? 8, apply: sp.apply ?? 'experts', permute: sp.permute } : null;
  const k = kernels ?? await WasmKernels.create({ threads: options.threads });
  if (k.threadsNote) log(`${name}: WASM engine on ${k.threadsNote}`);
  let weights;
  const be = new WasmBackend(k, cfg, { storage: () => storage, sparsity }, contextLength);
  try {
    weights = await buildWeights(be, cfg, ckpt, { onProgress: options.onProgress, signal: options.signal, storedPattern: stored?.option, ggufBlocks: storage === 'gguf' && !sparsity });
    // The MTP layers' own latent caches (self-speculative decoding: wasm-runner.ts).
    for (const m of weights.mtp ?? []) be.addCacheLayer(m.layer);
  } catch (e) {
    if (!kernels) k.destroy();
    throw e;
  }
  const description = describeModel(cfg, {
    name, weightStorage: storage,
    // Sparse weights keep f32 values on WASM (the quantised sparse kernels are WebGPU's).
    expertStorage: cfg.nRoutedExperts === 0 ? 'none' : sparsity ? 'sparse f32' : storage,
    sparsity: sparsity ? `${sparsityLabel(sparsity)} (${sparsity.apply}${stored ? ', pre-pruned' : ''})` : 'dense',
    contextLength,
    mtpLayers: weights.mtp?.length ?? 0,
  });
  const threads = `${k.threads} thread${k.threads === 1 ? '' : 's'}`;
  return { runner: new WasmRunner(be, cfg, weights, prefillChunk), description, device: `WebAssembly SIMD128 (${threads}${k.threadsNote ? `; ${k.threadsNote.replace(/^1 thread, /, '')}` : ''})` };
}
