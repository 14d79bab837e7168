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
export { linearRef } from './linear.ref';
import { pickVariant } from './variants';
import { unitOf, type PackedFormat } from './weight.ref';
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
  /** GEMV tiling override (tuning experiments): invocations along K and rows per invocation. */
  gemvTiling?: { TK: number; RPT: number };
}

/** One format's implementation; receives a single (unchunked) weight. */
export type LinearImpl = (gpu: Gpu, rec: Recorder, a: LinearArgs) => void;

export const LINEAR_PARAMS = defineUniforms({
  M: 'u32', N: 'u32', K: 'u32', x_stride: 'u32',
  x_offset: 'u32', y_stride: 'u32', y_offset: 'u32', tiles_n: 'u32',
  row_units: 'u32', scale_cols: 'u32', row0: 'u32', tk: 'u32',
});

const FORMATS: PackedFormat[] = ['f32', 'f16', 'q8', 'q4', 'fp8'];
const MATMUL_TILE = 32;

function packedFormat(w: GpuWeight): PackedFormat {
  if (!FORMATS.includes(w.format as PackedFormat)) throw new UnsupportedError(`weight '${w.label}': format '${w.format}' has no dense decoder`);
  return w.format as PackedFormat;
}

/** shaders/linear.wgsl specialised for a weight's format and the x load width. */
export function linearShader(w: GpuWeight, xVec4: boolean): string {
  const f = packedFormat(w);
  const withScales = pickVariant(linearCode, 'scales', f === 'f32' || f === 'f16' ? 'off' : 'on');
  return pickVariant(pickVariant(withScales, 'fmt', f), 'x', xVec4 ? 'vec4' : 'scalar');
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

function xVariant(a: LinearArgs): string {
  return linearShader(a.w, [a.w.K, a.xStride ?? a.w.K, a.xOffset ?? 0].every((v) => v % 4 === 0));
}

/**
 * GEMV tiling: TK invocations along K per row group (32 — a warp — or fewer when a row has few units,
 * keeping ≥ 2 units each), WG / TK row groups per workgroup, RPT rows per row group.
 * On GPUs RPT = 1: one row per row group, N / (WG / TK) workgroups, enough to keep every core's
 * memory pipeline busy. On a CPU fallback adapter (SwiftShader) per-workgroup cost dominates, so rows
 * per workgroup grow until about 32 workgroups remain.
 */
export function gemvShape(gpu: Gpu, w: GpuWeight): { WG: number; TK: number; RPT: number; rows: number } {
  const WG = Math.min(128, 2 ** Math.floor(Math.log2(gpu.caps.maxComputeInvocationsPerWorkgroup)));
  const units = Math.ceil(w.K / unitOf(w.format as PackedFormat));
  let TK = Math.max(4, Math.min(32, WG, 2 ** Math.floor(Math.log2(Math.max(1, units / 2)))));
  let RPT = 1;
  if (gpu.adapter.isFallbackAdapter) {
    TK = Math.min(TK, 16);
    RPT = Math.max(1, Math.min(8, Math.ceil(w.N / ((WG / TK) * 32))));
  }
  return { WG, TK, RPT, rows: (WG / TK) * RPT };
}

/** x rows per GEMV workgroup (each decoded weight is reused for all of them). */
export const GEMV_MR = 8;

/** The packed-format GEMV: decode (M = 1) and small prefill (MR rows of x per pass over W). */
export function linearGemv(gpu: Gpu, rec: Recorder, a: LinearArgs): void {
  const shape = gemvShape(gpu, a.w);
  const { WG } = shape;
  const { TK, RPT } = a.gemvTiling ?? shape;
  // MR ∈ {1, 4, 8} (few pipelines); RPT · MR ≤ 16 accumulators per invocation.
  let MR = a.M === 1 ? 1 : a.M <= 4 ? 4 : GEMV_MR;
  while (MR > 1 && RPT * MR > 16) MR /= 2;
  const rows = (WG / TK) * RPT;
  const tiles = ceilDiv(a.w.N, rows);
  const workgroups = tiles * ceilDiv(a.M, MR);
  const maxDim = gpu.caps.maxComputeWorkgroupsPerDimension;
  if (workgroups > maxDim * maxDim) throw new LimitExceededError('maxComputeWorkgroupsPerDimension²', workgroups, maxDim * maxDim, `linear '${a.w.label}'`);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'linear', code: xVariant(a), entryPoint: 'gemv', constants: { ...decodeConstants(a.w), WG, RPT, MR } }),
    bindings: [a.x, ...weightBindings(a.w), a.y],
    uniforms: packParams(a, tiles, TK),
    workgroups,
    label: `gemv.${a.w.format}:${a.w.label}`,
  });
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
 * small prefills of quantised weights stay bandwidth-bound (≤ 4 passes over W), f16 up to 2 passes.
 */
export function gemvMaxRows(w: GpuWeight): number {
  return w.format === 'f32' ? (w.K % 4 === 0 ? GEMV_MR : GEMV_MAX_ROWS) : w.format === 'f16' ? 2 * GEMV_MR : 4 * GEMV_MR;
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

/** Per-format implementations; '2:4' and 'vnm' run the structured-sparse kernels of sparse.ts. */
export const IMPLS: Record<WeightFormat, LinearImpl | undefined> = {
  f32: f32Impl, f16: packedImpl, q8: packedImpl, q4: packedImpl, fp8: packedImpl, '2:4': sparseLinearImpl, vnm: sparseLinearImpl,
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

