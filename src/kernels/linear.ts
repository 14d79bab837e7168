/**
 * Y[M, N] = X[M, K] · Wᵀ for a GpuWeight of any format: the one call the model makes for every linear
 * layer. A table maps each format to its implementation (GEMV for few rows, tiled matmul otherwise);
 * chunked weights run one call per chunk into their column range of Y.
 */
import linearCode from '../../shaders/linear.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { ArgumentError, LimitExceededError, ShapeError, UnsupportedError } from '../errors';
import { GEMV_MAX_ROWS, gemv as gemvF32, matmulTiled as matmulF32 } from './matmul';
import { loadWidth, specialise, subgroupChoice } from './shader-source';
import { unitOf, type PackedFormat } from './weight-pack';
import type { GpuWeight, WeightFormat } from './weight';
import { sparseLinearImpl } from './sparse';

export interface LinearArgs {
  /** [M, xStride] activations, K values per row from xOffset. */
  x: Binding;
  w: GpuWeight;
  /** [M, yStride] output, N values per row from yOffset. */
  y: Binding;
  M: number;
  xStride?: number;
  xOffset?: number;
  yStride?: number;
  yOffset?: number;
  /** Force a kernel (tests, benchmarks); default: GEMV for M ≤ gemvMaxRows(w), matmul otherwise. */
  kernel?: 'gemv' | 'matmul';
  /** Use the workgroup-memory GEMV even when the device has subgroups (tests, benchmarks). */
  noSubgroups?: boolean;
  /** Subgroup GEMV: row groups (of 4 rows) per workgroup, overriding gemvShape's choice (tuning). */
  rowGroups?: number;
}

/** One format's implementation; receives a single (unchunked) weight. */
export type LinearImpl = (gpu: Gpu, rec: Recorder, a: LinearArgs) => void;

export const LINEAR_PARAMS = defineUniforms({
  M: 'u32', N: 'u32', K: 'u32', x_stride: 'u32',
  x_offset: 'u32', y_stride: 'u32', y_offset: 'u32', tiles_n: 'u32',
  row_units: 'u32', scale_cols: 'u32', row0: 'u32', tk: 'u32',
});

const FORMATS: PackedFormat[] = ['f32', 'f16', 'bf16', 'q8', 'q4', 'fp8', 'mxfp4'];
const MATMUL_TILE = 32;

function packedFormat(w: GpuWeight): PackedFormat {
  if (!FORMATS.includes(w.format as PackedFormat)) throw new UnsupportedError(`weight '${w.label}': format '${w.format}' has no dense decoder`);
  return w.format as PackedFormat;
}

/**
 * shaders/linear.wgsl specialised for a weight's format and the x load width; `subgroups` keeps the
 * subgroup entry point (only on devices with the feature: it adds `enable subgroups;`).
 */
export function linearShader(w: GpuWeight, xVec4: boolean, subgroups = false): string {
  // `load` is the register tile's operand width: always vec4 (the matmul stages x and W as vec4s).
  return specialise(linearCode, { fmt: packedFormat(w), x: xVec4 ? 'vec4' : 'scalar', load: loadWidth(true), subgroups: subgroupChoice(subgroups) });
}

/** Override constants of the decoder (group size and scale dtype of q8/q4). */
export function decodeConstants(w: GpuWeight): Record<string, number | boolean> {
  const f = packedFormat(w);
  if (f !== 'q8' && f !== 'q4') return {};
  return { SK: w.params.groupSize || 32, SCALE_F16: !!w.params.scaleF16 };
}

/** Weight bindings (w, scales): null scales for f32/f16 (their shader variants have no scales binding). */
export function weightBindings(w: GpuWeight): [GPUBuffer, GPUBuffer | null] {
  return [w.buffers[0], w.buffers[1] ?? null];
}

export function rowUnits(w: GpuWeight): number {
  return (w.params.rowWords ?? w.K) / 4;
}

function packParams(a: LinearArgs, tiles: number, tk = 0) {
  const w = a.w;
  return LINEAR_PARAMS.pack({
    M: a.M, N: w.N, K: w.K, x_stride: a.xStride ?? w.K, x_offset: a.xOffset ?? 0,
    y_stride: a.yStride ?? w.N, y_offset: a.yOffset ?? 0, tiles_n: tiles,
    row_units: rowUnits(w), scale_cols: w.params.scaleCols ?? 0, row0: 0, tk,
  });
}

function xVariant(a: LinearArgs, subgroups = false): string {
  return linearShader(a.w, [a.w.K, a.xStride ?? a.w.K, a.xOffset ?? 0].every((v) => v % 4 === 0), subgroups);
}

/** Weight rows per GEMV row group (the four components of the shader's vec4 accumulators). */
const GEMV_ROWS = 4;

/** Whether the GEMV can run one subgroup per workgroup (see gemvShape). */
export function gemvSubgroups(gpu: Gpu): boolean {
  const c = gpu.caps;
  return c.subgroups && c.subgroupMinSize >= 4 && c.subgroupMinSize <= c.maxComputeInvocationsPerWorkgroup;
}

/**
 * GEMV tiling. A row group is 4 weight rows × MR rows of x, its TK invocations stride along K.
 * With subgroups (unless `noSubgroups`): one row group per workgroup of WG = TK = the device's minimum
 * subgroup size (the workgroup is one subgroup; subgroupAdd reduces it: no barriers, no workgroup
 * memory). Otherwise WG = 64 invocations: TK = 32 (a warp) or fewer when a row has few units (≥ 2
 * units each; ≤ 8 on a CPU fallback adapter, where each barrier of the reduction tree is expensive),
 * WG / TK row groups per workgroup.
 */
export function gemvShape(gpu: Gpu, w: GpuWeight, noSubgroups = false): { subgroups: boolean; WG: number; TK: number; RG: number; rows: number } {
  if (!noSubgroups && gemvSubgroups(gpu)) {
    const S = gpu.caps.subgroupMinSize;
    // RG row groups per workgroup, one after the other: 1 on GPUs (many small workgroups fill the
    // cores); on a CPU fallback adapter, where each workgroup has a fixed cost, enough to leave ~64.
    const RG = gpu.adapter.isFallbackAdapter ? Math.max(1, Math.min(16, Math.floor(w.N / (GEMV_ROWS * 64)))) : 1;
    return { subgroups: true, WG: S, TK: S, RG, rows: GEMV_ROWS * RG };
  }
  const WG = Math.min(64, 2 ** Math.floor(Math.log2(gpu.caps.maxComputeInvocationsPerWorkgroup)));
  const units = Math.ceil(w.K / unitOf(w.format as PackedFormat));
  const maxTK = gpu.adapter.isFallbackAdapter ? 8 : 32;
  const TK = Math.max(1, Math.min(maxTK, WG, 2 ** Math.floor(Math.log2(Math.max(1, units / 2)))));
  return { subgroups: false, WG, TK, RG: 1, rows: (WG / TK) * GEMV_ROWS };
}

/** x rows per GEMV row group (each decoded weight unit is reused for all of them) when M > 1. */
export const GEMV_MR = 4;

/** The packed-format GEMV: decode (M = 1) and small prefill (GEMV_MR rows of x per pass over W). */
export function linearGemv(gpu: Gpu, rec: Recorder, a: LinearArgs): void {
  const shape = gemvShape(gpu, a.w, a.noSubgroups);
  const { subgroups, WG, TK } = shape;
  const RG = subgroups ? a.rowGroups ?? shape.RG : 1;
  const rows = subgroups ? GEMV_ROWS * RG : shape.rows;
  const MR = a.M === 1 ? 1 : GEMV_MR;
  const tiles = ceilDiv(a.w.N, rows);
  const workgroups = tiles * ceilDiv(a.M, MR);
  const maxDim = gpu.caps.maxComputeWorkgroupsPerDimension;
  if (workgroups > maxDim * maxDim) throw new LimitExceededError('maxComputeWorkgroupsPerDimension²', workgroups, maxDim * maxDim, `linear '${a.w.label}'`);
  checkWorkgroupStorage(gpu, subgroups ? 0 : 4 * WG * 16, `linear '${a.w.label}'`);
  rec.dispatch({
    pipeline: gpu.pipelines.get({
      label: 'linear', code: xVariant(a, subgroups), entryPoint: subgroups ? 'gemv_subgroup' : 'gemv',
      constants: { ...decodeConstants(a.w), WG, MR, ...(subgroups ? { RG } : {}) },
    }),
    bindings: [a.x, ...weightBindings(a.w), a.y],
    uniforms: packParams(a, tiles, TK),
    workgroups,
    label: `gemv.${a.w.format}:${a.w.label}`,
  });
}

function checkWorkgroupStorage(gpu: Gpu, bytes: number, what: string) {
  if (bytes > gpu.caps.maxComputeWorkgroupStorageSize) {
    throw new LimitExceededError('maxComputeWorkgroupStorageSize', bytes, gpu.caps.maxComputeWorkgroupStorageSize, what);
  }
}

/** The packed-format tiled matmul (prefill): W slices decoded into workgroup memory. */
export function linearMatmul(gpu: Gpu, rec: Recorder, a: LinearArgs): void {
  const tiles = ceilDiv(a.w.N, MATMUL_TILE);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'linear', code: xVariant(a), entryPoint: 'matmul', constants: decodeConstants(a.w) }),
    bindings: [a.x, ...weightBindings(a.w), a.y],
    uniforms: packParams(a, tiles),
    workgroups: tiles * ceilDiv(a.M, MATMUL_TILE),
    label: `matmul.${a.w.format}:${a.w.label}`,
  });
}

/**
 * Rows up to which the GEMV (weights streamed once per GEMV_MR rows of x) beats the tiled matmul:
 * small prefills of quantised weights stay bandwidth-bound (≤ 8 passes over W), f16 up to 4, f32 2.
 */
export function gemvMaxRows(w: GpuWeight): number {
  return w.format === 'f32' ? (w.K % 4 === 0 ? 2 * GEMV_MR : GEMV_MAX_ROWS) : w.format === 'f16' || w.format === 'bf16' ? 4 * GEMV_MR : 8 * GEMV_MR;
}

const packedImpl: LinearImpl = (gpu, rec, a) => {
  const useGemv = a.kernel ? a.kernel === 'gemv' : a.M <= gemvMaxRows(a.w);
  (useGemv ? linearGemv : linearMatmul)(gpu, rec, a);
};

/**
 * f32 weights ([N, K] unpadded): the packed GEMV when rows are whole vec4 units (K % 4 = 0), else the
 * foundation GEMV of matmul.ts; prefill uses matmul.ts's tiled kernel (the same tiling as linear.wgsl's).
 */
const f32Impl: LinearImpl = (gpu, rec, a) => {
  const useGemv = a.kernel ? a.kernel === 'gemv' : a.M <= gemvMaxRows(a.w);
  if (useGemv && a.w.K % 4 === 0) return linearGemv(gpu, rec, a);
  const m = { x: a.x, w: a.w.buffers[0], y: a.y, M: a.M, N: a.w.N, K: a.w.K, xStride: a.xStride, xOffset: a.xOffset, yStride: a.yStride, yOffset: a.yOffset };
  (useGemv ? gemvF32 : matmulF32)(gpu, rec, m);
};

/**
 * Per-format implementations; '2:4' and 'vnm' run the structured-sparse kernels of sparse.ts. 'gguf'
 * weights run gguf-linear.ts ggufLinear (it imports this file, so the caller, gpu-backend, picks it).
 */
export const IMPLS: Record<WeightFormat, LinearImpl | undefined> = {
  f32: f32Impl, f16: packedImpl, bf16: packedImpl, q8: packedImpl, q4: packedImpl, fp8: packedImpl, mxfp4: packedImpl, '2:4': sparseLinearImpl, vnm: sparseLinearImpl, gguf: undefined,
};

export function registerLinearImpl(format: WeightFormat, impl: LinearImpl): void {
  IMPLS[format] = impl;
}

function check(a: LinearArgs) {
  const { w, M } = a;
  if (!Number.isInteger(M) || M < 0) throw new ShapeError(`linear '${w.label}': M must be a non-negative integer, got ${M}`);
  if ((a.xStride ?? w.K) < w.K) throw new ShapeError(`linear '${w.label}': xStride ${a.xStride} < K ${w.K}`);
  if ((a.yStride ?? w.N) < w.N && !w.chunks) throw new ShapeError(`linear '${w.label}': yStride ${a.yStride} < N ${w.N}`);
  for (const k of ['xOffset', 'yOffset'] as const) if ((a[k] ?? 0) < 0 || !Number.isInteger(a[k] ?? 0)) throw new ShapeError(`linear '${w.label}': bad ${k} ${a[k]}`);
}

/** Y[M, N] = X[M, K] · Wᵀ for any weight format (and chunked weights). */
export function linear(gpu: Gpu, rec: Recorder, a: LinearArgs): void {
  check(a);
  if (!a.M) return;
  const w = a.w;
  if (w.chunks) {
    const yStride = a.yStride ?? w.N;
    if (yStride < w.N) throw new ShapeError(`linear '${w.label}': yStride ${yStride} < N ${w.N}`);
    for (const c of w.chunks) linear(gpu, rec, { ...a, w: c, yStride, yOffset: (a.yOffset ?? 0) + (c.rowStart ?? 0) });
    return;
  }
  const impl = IMPLS[w.format];
  if (!impl) throw new ArgumentError(`linear '${w.label}': no implementation registered for format '${w.format}'`);
  impl(gpu, rec, a);
}

