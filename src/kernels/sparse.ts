/**
 * Structured-sparse linear layers on the GPU: 2:4 and V:2:M weights with f32, int8 or int4 values
 * (layouts: src/sparse/formats.ts, docs/sparsity.md; shader: shaders/sparse.wgsl; CPU reference:
 * sparse.ref.ts).
 *
 *   const w = uploadSparse(gpu, 'L0.q', pack24(prune24(dense, N, K).pruned, N, K), 'q8');
 *   sparseLinear(gpu, rec, { x, w, y, M });            // y[M, N] = x[M, K] · Wᵀ
 */
import sparseCode from '../../shaders/sparse.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { LimitExceededError, ShapeError, ArgumentError } from '../errors';
import { packedBytes, quantizeSparse, sliceSparseRows, type SparsePacked } from '../sparse/formats';
import { prunePacked } from '../sparse/apply';
import { loadWidth, specialise, subgroupChoice } from './shader-source';

export type SparseFormat = '2:4' | 'vnm';
export type SparseValues = 'f32' | 'q8' | 'q4';

/**
 * A sparse weight on the GPU, shaped like the runtime's GpuWeight (src/kernels/weight.ts).
 * buffers: [values, meta, scales? (q8/q4), columns? (vnm)]; their positions are params.scalesIndex /
 * params.colsIndex (−1 when absent).
 * params: G (groups per row), GW (group width), V (rows per block, 0 for 2:4), metaStride, rowWords,
 * rowScales (quantised only), valueBits (32 | 8 | 4), scalesIndex, colsIndex.
 */
export interface SparseGpuWeight {
  label: string;
  format: SparseFormat;
  /** Output features (rows of W). */
  N: number;
  /** Input features (columns of W). */
  K: number;
  buffers: GPUBuffer[];
  params: Record<string, number>;
  /** Bytes of all buffers: what one pass over the weight streams. */
  bytes: number;
  /** Row chunks when the weight exceeds one binding (then `buffers` is empty). */
  chunks?: SparseGpuWeight[];
  /** First row of this chunk in the whole weight (chunks only). */
  rowStart?: number;
}

export const SPARSE_PARAMS = defineUniforms({
  M: 'u32', N: 'u32', K: 'u32', x_stride: 'u32', x_offset: 'u32', y_stride: 'u32', y_offset: 'u32', tiles: 'u32',
  G: 'u32', GW: 'u32', V: 'u32', meta_stride: 'u32', row_words: 'u32', row_scales: 'u32', x_div: 'u32',
});

/** Rows of x at or below this use the GEMV entry point. */
export const SPARSE_GEMV_MAX_ROWS = 4;
/** Output rows per GEMV workgroup (const ROWS in the shader). */
const GEMV_ROWS = 8;
/** Matmul tile (BM × BN in the shader). */
const BM = 32, BN = 32;

function checkBinding(gpu: Gpu, label: string, bytes: number) {
  if (bytes > gpu.caps.maxStorageBufferBindingSize) throw new LimitExceededError('maxStorageBufferBindingSize', bytes, gpu.caps.maxStorageBufferBindingSize, `sparse weight '${label}'`);
}

/**
 * Uploads a packed weight; `values` picks f32 or int8/int4 values with per-32 scales. A weight whose
 * arrays exceed the binding limit (or `maxBindingBytes`, for tests) is split into row chunks (a
 * multiple of V and of 8 rows each): then `buffers` is empty and `chunks` lists them, each with its
 * `rowStart`, as for dense weights (linear() and sparseLinear run one call per chunk).
 */
export function uploadSparse(gpu: Gpu, label: string, packed: SparsePacked, values: SparseValues = 'f32', opts: { maxBindingBytes?: number } = {}): SparseGpuWeight {
  const limit = Math.min(opts.maxBindingBytes ?? Infinity, gpu.caps.maxStorageBufferBindingSize, gpu.caps.maxBufferSize);
  const perRow = Math.max(2 * packed.G * 4, packed.metaStride * 4); // the widest per-row array (f32 values)
  if (packed.N * perRow <= limit) return uploadOne(gpu, label, packed, values, 0);
  const unit = packed.format === 'vnm' ? lcm(packed.V, GEMV_ROWS) : GEMV_ROWS;
  const rows = Math.floor(limit / perRow / unit) * unit;
  if (rows <= 0) throw new LimitExceededError('maxStorageBufferBindingSize', perRow * unit, limit, `sparse weight '${label}' (${unit} rows)`);
  const chunks: SparseGpuWeight[] = [];
  for (let r0 = 0; r0 < packed.N; r0 += rows) {
    const r1 = Math.min(packed.N, r0 + rows);
    chunks.push(uploadOne(gpu, `${label}[${r0}:${r1}]`, sliceSparseRows(packed, r0, r1), values, r0));
  }
  return {
    label, format: packed.format, N: packed.N, K: packed.K, buffers: [], params: chunks[0].params,
    bytes: chunks.reduce((s, c) => s + c.bytes, 0), chunks,
  };
}

const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);
const lcm = (a: number, b: number) => (a / gcd(a, b)) * b;

function uploadOne(gpu: Gpu, label: string, packed: SparsePacked, values: SparseValues, rowStart: number): SparseGpuWeight {
  const buffers: GPUBuffer[] = [];
  const params: Record<string, number> = {
    G: packed.G, GW: packed.format === '2:4' ? 4 : packed.M, V: packed.format === '2:4' ? 0 : packed.V,
    metaStride: packed.metaStride, rowWords: 0, rowScales: 0, valueBits: 32, scalesIndex: -1, colsIndex: -1,
  };
  const add = (name: string, data: Uint32Array | Float32Array) => {
    checkBinding(gpu, `${label}.${name}`, data.byteLength);
    buffers.push(gpu.buffers.upload(`${label}.${name}`, data));
    return buffers.length - 1;
  };
  let scales: Float32Array | null = null;
  if (values === 'f32') add('values', packed.values);
  else {
    const q = quantizeSparse(packed, values === 'q8' ? 8 : 4);
    add(`values.${values}`, q.words);
    params.rowWords = q.rowWords;
    params.rowScales = q.rowScales;
    params.valueBits = q.bits;
    scales = q.scales;
  }
  add('meta', packed.meta);
  if (scales) params.scalesIndex = add('scales', scales);
  if (packed.format === 'vnm') params.colsIndex = add('columns', packed.columns);
  const bytes = buffers.reduce((s, b) => s + b.size, 0);
  return { label, format: packed.format, N: packed.N, K: packed.K, buffers, params, bytes, rowStart };
}

export function destroySparse(gpu: Gpu, w: SparseGpuWeight): void {
  for (const c of w.chunks ?? []) destroySparse(gpu, c);
  for (const b of w.buffers) gpu.buffers.destroy(b);
  w.buffers = [];
  w.chunks = undefined;
}

export interface SparseLinearArgs {
  /** [M, xStride] activations; K values per row from xOffset. */
  x: Binding;
  w: SparseGpuWeight;
  /** [M, yStride] output; N values per row from yOffset. */
  y: Binding;
  M: number;
  xStride?: number;
  xOffset?: number;
  yStride?: number;
  yOffset?: number;
}

function check(a: SparseLinearArgs, N = a.w.N) {
  if (!Number.isInteger(a.M) || a.M < 0) throw new ShapeError(`sparseLinear: M must be a non-negative integer, got ${a.M}`);
  if (a.w.format !== '2:4' && a.w.format !== 'vnm') throw new ArgumentError(`sparseLinear: weight '${a.w.label}' has format '${a.w.format}', not 2:4 or vnm`);
  if ((a.xStride ?? a.w.K) < a.w.K) throw new ShapeError(`sparseLinear: xStride ${a.xStride} < K ${a.w.K}`);
  if ((a.yStride ?? N) < N) throw new ShapeError(`sparseLinear: yStride ${a.yStride} < N ${N}`);
  if (a.w.chunks) throw new ArgumentError(`sparse GEMV/matmul: weight '${a.w.label}' is chunked; call sparseLinear (or linear())`);
  if (!a.w.buffers.length) throw new ArgumentError(`sparseLinear: weight '${a.w.label}' was destroyed`);
}

/** shaders/sparse.wgsl for a weight's values and columns; `load` (the register tile's operands) is always vec4. */
function shaderFor(w: SparseGpuWeight, rows: 'plain' | 'expert', subgroups: boolean): string {
  const values = w.params.valueBits === 32 ? 'f32' : w.params.valueBits === 8 ? 'q8' : 'q4';
  return specialise(sparseCode, { values, cols: w.format === '2:4' ? '2:4' : 'vnm', rows, load: loadWidth(true), subgroups: subgroupChoice(subgroups) });
}

/** Storage bindings 2..5 in shader order: vals, scales, meta, cols (null where the variant has none). */
function weightBindings(gpu: Gpu, w: SparseGpuWeight, extra = 0): (GPUBuffer | null)[] {
  const p = w.params;
  const used = 3 + extra + (p.scalesIndex >= 0 ? 1 : 0) + (p.colsIndex >= 0 ? 1 : 0);
  if (used > gpu.caps.maxStorageBuffersPerStage) throw new LimitExceededError('maxStorageBuffersPerShaderStage', used, gpu.caps.maxStorageBuffersPerStage, `sparse linear '${w.label}'`);
  return [w.buffers[0], p.scalesIndex >= 0 ? w.buffers[p.scalesIndex] : null, w.buffers[1], p.colsIndex >= 0 ? w.buffers[p.colsIndex] : null];
}

function pack(a: SparseLinearArgs, tiles: number, N = a.w.N, xDiv = 1) {
  const { w } = a, p = w.params;
  return SPARSE_PARAMS.pack({
    M: a.M, N, K: w.K,
    x_stride: a.xStride ?? w.K, x_offset: a.xOffset ?? 0, y_stride: a.yStride ?? N, y_offset: a.yOffset ?? 0, tiles,
    G: p.G, GW: p.GW, V: Math.max(1, p.V), meta_stride: p.metaStride, row_words: p.rowWords, row_scales: p.rowScales, x_div: xDiv,
  });
}

/**
 * Rows of an expert-stacked weight: `w` is E experts' [N, K] matrices stacked as one [E·N, K] sparse
 * weight (N a multiple of V, so no block straddles two experts). y row m (of M) is expert ids[m]
 * applied to x row m / xDiv.
 */
export interface ExpertRows { ids: Binding; N: number; xDiv: number }

const pow2Floor = (n: number) => 2 ** Math.floor(Math.log2(n));

/**
 * GEMV invocations per workgroup (a power of 2 for the tree reduction): about 8+ groups per lane, at
 * least one subgroup (≥ 16) and at most 64. Idle lanes are not free: on SwiftShader every lane of a
 * workgroup costs about as much as a busy one, and on GPUs a lane with one group has nothing to
 * overlap its loads with.
 */
export function gemvLanes(gpu: Gpu, G: number): number {
  const caps = gpu.caps;
  const cap = Math.min(64, pow2Floor(caps.maxComputeInvocationsPerWorkgroup), pow2Floor(caps.maxComputeWorkgroupSizeX));
  const lo = Math.min(cap, Math.max(16, caps.subgroupMinSize));
  return Math.max(lo, Math.min(cap, pow2Floor(Math.max(1, G / 8))));
}

/** y = W · x for a few rows of x (decode); with `experts`, each y row picks its expert's rows. */
export function sparseGemv(gpu: Gpu, rec: Recorder, a: SparseLinearArgs, experts?: ExpertRows): void {
  check(a, experts?.N);
  const { w } = a;
  if (!a.M) return;
  const caps = gpu.caps;
  const N = experts ? experts.N : w.N;
  if (experts && (w.N % N !== 0 || (w.format === 'vnm' && N % w.params.V !== 0))) throw new ShapeError(`sparseGemv '${w.label}': ${w.N} stacked rows are not whole experts of ${N} rows in blocks of V = ${w.params.V}`);
  // With subgroups, one subgroup per workgroup (the minimum subgroup size keeps it in one subgroup).
  const sg = caps.subgroups && caps.subgroupMinSize >= 4 && caps.subgroupMinSize <= caps.maxComputeInvocationsPerWorkgroup;
  const WG = sg ? caps.subgroupMinSize : gemvLanes(gpu, w.params.G);
  if (!sg && WG * 32 > caps.maxComputeWorkgroupStorageSize) throw new LimitExceededError('maxComputeWorkgroupStorageSize', WG * 32, caps.maxComputeWorkgroupStorageSize, 'sparse GEMV');
  const shared = w.format === '2:4' || w.params.V % GEMV_ROWS === 0;
  const tiles = ceilDiv(N, GEMV_ROWS);
  const bindings: (Binding | null)[] = [a.x, ...weightBindings(gpu, w, experts ? 1 : 0), a.y];
  if (experts) bindings.push(experts.ids);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: `sparse.gemv.${w.format}`, code: shaderFor(w, experts ? 'expert' : 'plain', sg), entryPoint: sg ? 'gemv_subgroup' : 'gemv', constants: { WG, SHARED: shared } }),
    bindings,
    uniforms: pack(a, tiles, N, experts?.xDiv ?? 1),
    workgroups: tiles * a.M,
    label: `sparse.gemv(${w.label})`,
  });
}

/** Whether the BN output rows of every matmul tile share their candidate columns (2:4, or V a multiple of BN). */
export const sharedTiles = (w: SparseGpuWeight) => w.format === '2:4' || w.params.V % BN === 0;

/**
 * The matmul path: `shared` (gathered x, vec4 dots: the fewest workgroup-memory words per FMA, what
 * tiled kernels are bound by) whenever the tiles' rows share their columns, `generic` otherwise.
 * Measured on SwiftShader (CPU time, 64×704 · 704×1024, dense f32 = 1): shared 2:4 1.02, 64:2:5 0.96,
 * 64:2:8 0.61; generic 1.2–1.6, 1.1–1.2, 0.8–0.85.
 */
export function matmulPath(_gpu: Gpu, w: SparseGpuWeight): 'shared' | 'generic' {
  return sharedTiles(w) ? 'shared' : 'generic';
}

/**
 * Y = X · Wᵀ with a tiled kernel (prefill): `matmul_shared` or the generic `matmul` (see matmulPath;
 * `path` forces one, for tests and benchmarks).
 */
export function sparseMatmul(gpu: Gpu, rec: Recorder, a: SparseLinearArgs & { path?: 'shared' | 'generic' }): void {
  check(a);
  const { w } = a;
  if (!a.M) return;
  const caps = gpu.caps;
  if (caps.maxComputeInvocationsPerWorkgroup < 64) throw new LimitExceededError('maxComputeInvocationsPerWorkgroup', 64, caps.maxComputeInvocationsPerWorkgroup, 'sparse matmul');
  const tiles = ceilDiv(w.N, BN);
  const path = a.path ?? matmulPath(gpu, w);
  if (path === 'shared' && !sharedTiles(w)) throw new ArgumentError(`sparseMatmul '${w.label}': the shared path needs 2:4 or V a multiple of ${BN}, got V = ${w.params.V}`);
  const shared = path === 'shared';
  let constants: Record<string, number>;
  if (shared) {
    const GS = 8;
    const wgBytes = (BM + BN) * GS * 16;
    if (wgBytes > caps.maxComputeWorkgroupStorageSize) throw new LimitExceededError('maxComputeWorkgroupStorageSize', wgBytes, caps.maxComputeWorkgroupStorageSize, 'sparse matmul');
    constants = { GS };
  } else {
    const GW = w.params.GW;
    const GS = Math.max(1, Math.min(8, Math.floor(32 / GW)));
    const XW = Math.max(32, GS * GW);
    const wgBytes = (BM * XW + BN * GS * 3) * 4;
    if (wgBytes > caps.maxComputeWorkgroupStorageSize) throw new LimitExceededError('maxComputeWorkgroupStorageSize', wgBytes, caps.maxComputeWorkgroupStorageSize, `sparse matmul with M = ${GW}`);
    constants = { GS, XW };
  }
  const entryPoint = shared ? 'matmul_shared' : 'matmul';
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: `sparse.${entryPoint}.${w.format}`, code: shaderFor(w, 'plain', false), entryPoint, constants }),
    bindings: [a.x, ...weightBindings(gpu, w), a.y],
    uniforms: pack(a, tiles),
    workgroups: tiles * ceilDiv(a.M, BM),
    label: `sparse.${entryPoint}(${w.label})`,
  });
}

/** GEMV for a few rows, the tiled matmul otherwise (one call per row chunk of a chunked weight). */
export function sparseLinear(gpu: Gpu, rec: Recorder, a: SparseLinearArgs, kernel?: 'gemv' | 'matmul'): void {
  if (a.w.chunks) {
    const yStride = a.yStride ?? a.w.N;
    if (yStride < a.w.N) throw new ShapeError(`sparseLinear: yStride ${yStride} < N ${a.w.N}`);
    for (const c of a.w.chunks) sparseLinear(gpu, rec, { ...a, w: c, yStride, yOffset: (a.yOffset ?? 0) + (c.rowStart ?? 0) }, kernel);
    return;
  }
  if (kernel ? kernel === 'gemv' : a.M <= SPARSE_GEMV_MAX_ROWS) sparseGemv(gpu, rec, a);
  else sparseMatmul(gpu, rec, a);
}

/** Any weight record with the GpuWeight fields (src/kernels/weight.ts), format not yet narrowed. */
export interface WeightLike extends Omit<SparseGpuWeight, 'format' | 'chunks'> { format: string; chunks?: WeightLike[] }

/**
 * The `linear()` table entry (src/kernels/linear.ts IMPLS) for '2:4' and 'vnm' weights: runs
 * `kernel` when forced, GEMV for ≤ 4 rows and the tiled matmul otherwise.
 */
export function sparseLinearImpl(gpu: Gpu, rec: Recorder, a: Omit<SparseLinearArgs, 'w'> & { w: WeightLike; kernel?: 'gemv' | 'matmul' }): void {
  if (a.w.format !== '2:4' && a.w.format !== 'vnm') throw new ArgumentError(`sparseLinear: weight '${a.w.label}' has format '${a.w.format}', not 2:4 or vnm`);
  const args = { x: a.x, w: a.w as SparseGpuWeight, y: a.y, M: a.M, xStride: a.xStride, xOffset: a.xOffset, yStride: a.yStride, yOffset: a.yOffset };
  sparseLinear(gpu, rec, args, a.kernel);
}

export interface SparsifyOptions {
  format: SparseFormat;
  /** Rows per block (V:2:M), default 64. */
  v?: number;
  /** Columns per group (V:2:M), default 8. */
  m?: number;
  values?: SparseValues;
  /** Activation norms per input column (length K) or full [N, K] scores; |w| when absent. */
  importance?: Float32Array;
  /** Cap on one buffer's bytes (default: the device limit); larger weights are split into row chunks. */
  maxBindingBytes?: number;
}

/** Prunes a dense [N, K] matrix to the pattern, packs it and uploads it: the load-time path. */
export function sparsifyWeight(gpu: Gpu, label: string, dense: Float32Array, N: number, K: number, opts: SparsifyOptions): { weight: SparseGpuWeight; keptNormFraction: number; packed: SparsePacked } {
  if (opts.format !== '2:4' && opts.format !== 'vnm') throw new ArgumentError(`sparsifyWeight: unknown format '${(opts as { format: string }).format}'`);
  const { packed, keptNormFraction } = prunePacked(dense, N, K, opts, opts.importance);
  return { weight: uploadSparse(gpu, label, packed, opts.values ?? 'f32', { maxBindingBytes: opts.maxBindingBytes }), keptNormFraction, packed };
}

/** Bytes a pass over a packed weight streams (values + scales + metadata + block columns). */
export { packedBytes };
