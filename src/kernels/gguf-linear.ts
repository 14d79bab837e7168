/**
 * Linear layers on GGUF weights in their raw block bytes (no host-side expansion): upload a tensor as
 * it sits in the file and run Y[M, N] = X[M, K] · Wᵀ with the blocks decoded in the shader
 * (shaders/gguf_linear.wgsl + shaders/lib/gguf_blocks.wgsl). Types: F32, F16, BF16, Q8_0, Q4_0, Q4_K,
 * Q5_K, Q6_K (layouts: docs/gguf.md); ggufEmbedding gathers rows of such a table. CPU reference: gguf-linear.ref.ts.
 */
import ggufLinearCode from '../../shaders/gguf_linear.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { LimitExceededError, ShapeError, UnsupportedError } from '../errors';
import { ggmlTypeByName, isDecodable, type DecodableType } from '../formats/gguf-blocks';
import { gemvSubgroups } from './linear';
import { ggufBufferBytes, ggufChunkRows } from './gguf-layout';
import { allMultiplesOf4, specialise, subgroupChoice } from './shader-source';

/**
 * A GGUF matrix [N, K] (ne = [K, N]) on the GPU, bytes exactly as in the file plus padding. A matrix
 * whose bytes pass the binding limit (a large vocabulary's embedding or output in F16/Q8_0, say) is
 * held as row chunks, each a buffer of its own: `chunks` lists them in row order and `buffer` is the
 * first's. The kernels below run once per chunk.
 */
export interface GgufWeight {
  label: string;
  type: DecodableType;
  N: number;
  K: number;
  /** Bytes of one row of K weights. */
  rowBytes: number;
  buffer: GPUBuffer;
  /** GPU bytes held (all chunks). */
  bytes: number;
  /** Row chunks [row0, row0 + N) when the matrix passes the binding limit (each chunk has no chunks of its own). */
  chunks?: GgufWeight[];
  /** First row of this chunk in the whole matrix (chunks only). */
  row0?: number;
}

export const GGUF_LINEAR_PARAMS = defineUniforms({
  M: 'u32', N: 'u32', K: 'u32', x_stride: 'u32', x_offset: 'u32', y_stride: 'u32', y_offset: 'u32',
  row_bytes: 'u32', units: 'u32', tiles_n: 'u32', _p0: 'u32', _p1: 'u32',
});

/** Weights per decode unit (GG_UNIT in gguf_blocks.wgsl). */
export function ggufUnit(type: DecodableType): number {
  return type === 'F32' || type === 'F16' || type === 'BF16' ? 4 : type === 'Q4_K' || type === 'Q5_K' ? 64 : 32;
}

/** The `gtype` choice of gguf_blocks.wgsl. */
export const ggufChoice = (type: DecodableType) => type.toLowerCase();

/** Checks a type name and a row length; returns the row's bytes. */
export function ggufRowBytes(type: string, K: number, what: string): number {
  if (!isDecodable(type)) throw new UnsupportedError(`${what}: GGUF type ${type} has no GPU decoder (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)`, { type });
  const t = ggmlTypeByName(type)!;
  if (!Number.isInteger(K) || K <= 0 || K % t.blockSize) throw new ShapeError(`${what}: row length ${K} is not a positive multiple of ${type}'s block of ${t.blockSize}`);
  return (K / t.blockSize) * t.blockBytes;
}

/**
 * Raw bytes as a GPU buffer: padded to whole words plus 16 spare bytes (the decoder reads fields at
 * even offsets as words, and F32/F16/BF16 row tails as whole vec4 units, masked).
 */
export function uploadGgufBytes(gpu: Gpu, label: string, bytes: Uint8Array, what: string): GPUBuffer {
  const size = ggufBufferBytes(bytes.length);
  const limit = Math.min(gpu.caps.maxStorageBufferBindingSize, gpu.caps.maxBufferSize);
  if (size > limit) throw new LimitExceededError('maxStorageBufferBindingSize', size, limit, what);
  const padded = new Uint8Array(size);
  padded.set(bytes);
  return gpu.buffers.upload(label, padded);
}

/** Uploads a GGUF matrix of N rows × K weights (`bytes` = the tensor's bytes from the file); row chunks past the binding limit. */
export function uploadGgufWeight(gpu: Gpu, label: string, type: string, bytes: Uint8Array, N: number, K: number, opts: { maxBindingBytes?: number } = {}): GgufWeight {
  const what = `GGUF weight '${label}'`;
  const rowBytes = ggufRowBytes(type, K, what);
  if (!Number.isInteger(N) || N <= 0) throw new ShapeError(`${what}: N must be a positive integer, got ${N}`);
  if (bytes.length !== N * rowBytes) throw new ShapeError(`${what}: ${bytes.length} bytes, but ${N} rows of ${K} ${type} weights are ${N * rowBytes}`);
  const limit = Math.min(opts.maxBindingBytes ?? Infinity, gpu.caps.maxStorageBufferBindingSize, gpu.caps.maxBufferSize);
  const rows = ggufChunkRows(N, rowBytes, limit);
  if (rows < 1) throw new LimitExceededError('maxStorageBufferBindingSize', rowBytes + 16, limit, `${what}: one row`);
  const one = (r0: number, r1: number, name: string): GgufWeight => {
    const buffer = uploadGgufBytes(gpu, name, bytes.subarray(r0 * rowBytes, r1 * rowBytes), what);
    return { label, type: type as DecodableType, N: r1 - r0, K, rowBytes, buffer, bytes: buffer.size };
  };
  if (rows >= N) return one(0, N, `${label}.${type}`);
  const chunks: GgufWeight[] = [];
  for (let r0 = 0; r0 < N; r0 += rows) {
    const r1 = Math.min(N, r0 + rows);
    chunks.push({ ...one(r0, r1, `${label}.${type}[${r0}:${r1}]`), row0: r0 });
  }
  return { label, type: type as DecodableType, N, K, rowBytes, buffer: chunks[0].buffer, bytes: chunks.reduce((a, c) => a + c.bytes, 0), chunks };
}

/** The buffers a GGUF weight holds (its chunks', or its own). */
export const ggufBuffers = (w: GgufWeight): GPUBuffer[] => (w.chunks ? w.chunks.map((c) => c.buffer) : [w.buffer]);

export function destroyGgufWeight(gpu: Gpu, w: GgufWeight): void {
  for (const b of ggufBuffers(w)) gpu.buffers.destroy(b);
  w.bytes = 0;
}

export interface GgufLinearArgs {
  /** [M, xStride] activations, K values per row from xOffset. */
  x: Binding;
  w: GgufWeight;
  /** [M, yStride] output, N values per row from yOffset. */
  y: Binding;
  M: number;
  xStride?: number;
  xOffset?: number;
  yStride?: number;
  yOffset?: number;
  /** Use the workgroup-memory reduction even when the device has subgroups (tests, benchmarks). */
  noSubgroups?: boolean;
  /** Force a kernel (tests, benchmarks); default: the GEMV for M ≤ GGUF_GEMV_MAX_ROWS, the tiled matmul above. */
  kernel?: 'gemv' | 'matmul';
}

/**
 * Rows of x up to which the GEMV runs (it decodes every weight once per 4 rows of x; the tiled matmul
 * once per 32, in workgroup memory, at the cost of barriers and whole 32-row tiles): as webmoe's q4/q8
 * (linear.ts gemvMaxRows). On SwiftShader at 64 rows × 1408×2048 the two are on par (Q4_K, Q8_0) or the
 * matmul 1.9× faster (Q6_K): `npm run bench -- --node --suites gguf-kernels`, prefill rows in docs/gguf.md.
 */
export const GGUF_GEMV_MAX_ROWS = 32;

/** The tiled matmul's output tile (BM = BN in gguf_linear.wgsl) and its workgroup memory (x and W slices of 32 × 64 f32). */
const MATMUL_TILE = 32;
const MATMUL_STORAGE = 2 * MATMUL_TILE * 64 * 4;

/** x rows per workgroup: 1 for decode (M = 1), else 4 (each decoded unit is reused for all of them). */
const mrFor = (M: number) => (M === 1 ? 1 : 4);

/** shaders/gguf_linear.wgsl for a block type, x load width, subgroup entry point kept or not, and x-row block size. */
export function ggufLinearShader(type: DecodableType, xVec4: boolean, subgroups: boolean, MR: number): string {
  // load: the matmul's staged tiles are always vec4 (register_tile.wgsl).
  return specialise(ggufLinearCode, { gtype: ggufChoice(type), x: xVec4 ? 'vec4' : 'scalar', subgroups: subgroupChoice(subgroups), load: 'vec4' }, { MR });
}

/**
 * GEMV tiling. With subgroups: one subgroup per workgroup (WG = the minimum subgroup size), RG row
 * groups of 4 rows each: 1 on GPUs, on a CPU fallback adapter (fixed cost per workgroup) enough to
 * leave ~64 workgroups per x-row block (as linear.ts). Without: WG invocations (4..64) per row group.
 */
export function ggufGemvShape(gpu: Gpu, w: GgufWeight, noSubgroups = false): { subgroups: boolean; WG: number; RG: number } {
  if (!noSubgroups && gemvSubgroups(gpu)) {
    const RG = gpu.adapter.isFallbackAdapter ? Math.max(1, Math.min(16, Math.floor(w.N / (4 * 64)))) : 1;
    return { subgroups: true, WG: gpu.caps.subgroupMinSize, RG };
  }
  return { subgroups: false, WG: ggufWorkgroupSize(gpu, ceilDiv(w.K, ggufUnit(w.type))), RG: 1 };
}

/** Invocations per workgroup: enough to cover a row's units once (4..64, a power of two). */
export function ggufWorkgroupSize(gpu: Gpu, units: number): number {
  const cap = 2 ** Math.floor(Math.log2(Math.min(64, gpu.caps.maxComputeInvocationsPerWorkgroup)));
  return Math.max(1, Math.min(cap, Math.max(4, 2 ** Math.ceil(Math.log2(units)))));
}

/** Y[M, N] = X[M, K] · Wᵀ. */
export function ggufLinear(gpu: Gpu, rec: Recorder, a: GgufLinearArgs): void {
  const { w, M } = a;
  const xStride = a.xStride ?? w.K, xOffset = a.xOffset ?? 0, yStride = a.yStride ?? w.N, yOffset = a.yOffset ?? 0;
  if (!Number.isInteger(M) || M < 0) throw new ShapeError(`ggufLinear '${w.label}': M must be a non-negative integer, got ${M}`);
  if (xStride < w.K) throw new ShapeError(`ggufLinear '${w.label}': xStride ${xStride} < K ${w.K}`);
  if (yStride < w.N) throw new ShapeError(`ggufLinear '${w.label}': yStride ${yStride} < N ${w.N}`);
  for (const [k, v] of [['xOffset', xOffset], ['yOffset', yOffset]] as const) if (!Number.isInteger(v) || v < 0) throw new ShapeError(`ggufLinear '${w.label}': bad ${k} ${v}`);
  if (!M) return;
  if (w.chunks) {
    for (const c of w.chunks) ggufLinear(gpu, rec, { ...a, w: c, yStride, yOffset: yOffset + c.row0! });
    return;
  }
  const units = ceilDiv(w.K, ggufUnit(w.type));
  const xVec4 = allMultiplesOf4(w.K, xStride, xOffset);
  const params = { M, N: w.N, K: w.K, x_stride: xStride, x_offset: xOffset, y_stride: yStride, y_offset: yOffset, row_bytes: w.rowBytes, units, _p0: 0, _p1: 0 };
  if (a.kernel ? a.kernel === 'matmul' : M > GGUF_GEMV_MAX_ROWS) {
    const tiles = ceilDiv(w.N, MATMUL_TILE);
    const workgroups = tiles * ceilDiv(M, MATMUL_TILE);
    const maxDim = gpu.caps.maxComputeWorkgroupsPerDimension;
    if (workgroups > maxDim * maxDim) throw new LimitExceededError('maxComputeWorkgroupsPerDimension²', workgroups, maxDim * maxDim, `ggufLinear '${w.label}'`);
    if (MATMUL_STORAGE > gpu.caps.maxComputeWorkgroupStorageSize) throw new LimitExceededError('maxComputeWorkgroupStorageSize', MATMUL_STORAGE, gpu.caps.maxComputeWorkgroupStorageSize, `ggufLinear '${w.label}' (tiled)`);
    rec.dispatch({
      pipeline: gpu.pipelines.get({ label: 'gguf_linear', code: ggufLinearShader(w.type, xVec4, false, 1), entryPoint: 'matmul' }),
      bindings: [a.x, w.buffer, a.y],
      uniforms: GGUF_LINEAR_PARAMS.pack({ ...params, tiles_n: tiles }),
      workgroups,
      label: `gguf_matmul.${w.type}:${w.label}`,
    });
    return;
  }
  const MR = mrFor(M);
  const { subgroups, WG, RG } = ggufGemvShape(gpu, w, a.noSubgroups);
  const bytes = MR * WG * 16;
  if (!subgroups && bytes > gpu.caps.maxComputeWorkgroupStorageSize) throw new LimitExceededError('maxComputeWorkgroupStorageSize', bytes, gpu.caps.maxComputeWorkgroupStorageSize, `ggufLinear '${w.label}'`);
  const tiles = ceilDiv(w.N, 4 * RG);
  const workgroups = tiles * ceilDiv(M, MR);
  const maxDim = gpu.caps.maxComputeWorkgroupsPerDimension;
  if (workgroups > maxDim * maxDim) throw new LimitExceededError('maxComputeWorkgroupsPerDimension²', workgroups, maxDim * maxDim, `ggufLinear '${w.label}'`);
  rec.dispatch({
    pipeline: gpu.pipelines.get({
      label: 'gguf_linear', code: ggufLinearShader(w.type, allMultiplesOf4(w.K, xStride, xOffset), subgroups, MR),
      entryPoint: subgroups ? 'gemv_subgroup' : 'gemv', constants: { WG, ...(subgroups ? { RG } : {}) },
    }),
    bindings: [a.x, w.buffer, a.y],
    uniforms: GGUF_LINEAR_PARAMS.pack({ ...params, tiles_n: tiles }),
    workgroups,
    label: `gguf_gemv.${w.type}:${w.label}`,
  });
}

export interface GgufEmbeddingArgs {
  /** [V, D] table (N = V rows of K = D). */
  table: GgufWeight;
  /** u32 [T] token ids; ids ≥ V leave their output row unwritten. */
  ids: Binding;
  /** f32 [T, outStride] output, D values per row from outOffset. */
  out: Binding;
  T: number;
  outStride?: number;
  outOffset?: number;
}

const GATHER_WG = 64;

/** Embedding lookup on a GGUF table: out[t, :] = dequantise(table row ids[t]) (the `gather` entry of gguf_linear.wgsl). */
export function ggufEmbedding(gpu: Gpu, rec: Recorder, a: GgufEmbeddingArgs): void {
  const w = a.table;
  const outStride = a.outStride ?? w.K, outOffset = a.outOffset ?? 0;
  if (!Number.isInteger(a.T) || a.T < 0) throw new ShapeError(`ggufEmbedding '${w.label}': T must be a non-negative integer, got ${a.T}`);
  if (outStride < w.K) throw new ShapeError(`ggufEmbedding '${w.label}': outStride ${outStride} < D ${w.K}`);
  if (!Number.isInteger(outOffset) || outOffset < 0) throw new ShapeError(`ggufEmbedding '${w.label}': bad outOffset ${outOffset}`);
  if (!a.T) return;
  // A chunked table: each chunk writes the rows of the ids in its range (the others wrap past its N).
  for (const c of w.chunks ?? [w]) gatherChunk(gpu, rec, a, c, outStride, outOffset);
}

function gatherChunk(gpu: Gpu, rec: Recorder, a: GgufEmbeddingArgs, w: GgufWeight, outStride: number, outOffset: number): void {
  const units = ceilDiv(w.K, ggufUnit(w.type));
  const workgroups = ceilDiv(a.T * units, GATHER_WG);
  const maxDim = gpu.caps.maxComputeWorkgroupsPerDimension;
  if (workgroups > maxDim * maxDim) throw new LimitExceededError('maxComputeWorkgroupsPerDimension²', workgroups, maxDim * maxDim, `ggufEmbedding '${w.label}'`);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'gguf_gather', code: ggufLinearShader(w.type, false, false, 1), entryPoint: 'gather', constants: { WG: GATHER_WG } }),
    bindings: [null, w.buffer, a.out, a.ids],
    // x_offset: the chunk's first row (the gather reads row ids[t] − x_offset).
    uniforms: GGUF_LINEAR_PARAMS.pack({
      M: a.T, N: w.N, K: w.K, x_stride: 0, x_offset: w.row0 ?? 0, y_stride: outStride, y_offset: outOffset,
      row_bytes: w.rowBytes, units, tiles_n: 0, _p0: 0, _p1: 0,
    }),
    workgroups,
    label: `gguf_gather.${w.type}:${w.label}`,
  });
}
