import code from '../../shaders/rmsnorm.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { specialise } from './shader-source';

export const RMSNORM_PARAMS = defineUniforms({ rows: 'u32', dim: 'u32', eps: 'f32', x_stride: 'u32', x_offset: 'u32', y_stride: 'u32', y_offset: 'u32', _p: 'u32' });

export interface RmsNormArgs {
  x: Binding;
  w: Binding;
  y: Binding;
  rows: number;
  dim: number;
  eps: number;
  /** Row strides and offsets in elements (default: dense rows of `dim`). */
  xStride?: number;
  xOffset?: number;
  yStride?: number;
  yOffset?: number;
}

/**
 * One subgroup per workgroup (WG = the minimum subgroup size, subgroupAdd, no barriers) on devices with
 * subgroups when that leaves at most 64 elements per invocation — or on a CPU fallback adapter, where a
 * workgroup runs serially anyway and barriers are expensive. 0: the workgroup-memory tree.
 */
function subgroupLanes(gpu: Gpu, dim: number): number {
  const c = gpu.caps;
  if (!c.subgroups || c.subgroupMinSize < 4 || c.subgroupMinSize > c.maxComputeInvocationsPerWorkgroup) return 0;
  return gpu.adapter.isFallbackAdapter || dim <= 64 * c.subgroupMinSize ? c.subgroupMinSize : 0;
}

function pipeline(gpu: Gpu, entryPoint: string, dim: number): GPUComputePipeline {
  const sg = subgroupLanes(gpu, dim);
  const shader = specialise(code, { reduce: sg ? 'subgroup' : 'workgroup' });
  return gpu.pipelines.get({ label: 'rmsnorm', code: shader, entryPoint, constants: { WG: sg || workgroupSize(gpu, dim) } });
}

function workgroupSize(gpu: Gpu, dim: number): number {
  // Enough invocations to cover the row, a power of two for the tree reduction.
  const want = Math.min(256, Math.max(32, 2 ** Math.ceil(Math.log2(Math.max(1, dim) / 4))));
  return Math.min(want, 2 ** Math.floor(Math.log2(gpu.caps.maxComputeInvocationsPerWorkgroup)));
}

function params(a: RmsNormArgs) {
  return RMSNORM_PARAMS.pack({
    rows: a.rows, dim: a.dim, eps: a.eps,
    x_stride: a.xStride ?? a.dim, x_offset: a.xOffset ?? 0,
    y_stride: a.yStride ?? a.dim, y_offset: a.yOffset ?? 0, _p: 0,
  });
}

/** y = RMSNorm(x) · w, row by row. */
export function rmsNorm(gpu: Gpu, rec: Recorder, a: RmsNormArgs): void {
  rec.dispatch({
    pipeline: pipeline(gpu, 'rmsnorm', a.dim),
    bindings: [a.x, a.w, a.y],
    uniforms: params(a),
    workgroups: a.rows,
    label: 'rmsnorm',
  });
}

/** h += r; y = RMSNorm(h) · w (residual add fused with the following norm). `x` is r here. */
export function addRmsNorm(gpu: Gpu, rec: Recorder, a: RmsNormArgs & { h: Binding }): void {
  rec.dispatch({
    pipeline: pipeline(gpu, 'add_rmsnorm', a.dim),
    bindings: [a.x, a.w, a.y, a.h],
    uniforms: params(a),
    workgroups: a.rows,
    label: 'add_rmsnorm',
  });
}

/** y = RMSNorm(y) · w in place, on a strided slice of each row (yStride/yOffset). */
export function rmsNormInPlace(gpu: Gpu, rec: Recorder, a: Omit<RmsNormArgs, 'x' | 'xStride' | 'xOffset'>): void {
  rec.dispatch({
    pipeline: pipeline(gpu, 'rmsnorm_inplace', a.dim),
    bindings: [null, a.w, a.y],
    uniforms: params({ ...a, x: a.y }),
    workgroups: a.rows,
    label: 'rmsnorm_inplace',
  });
}
