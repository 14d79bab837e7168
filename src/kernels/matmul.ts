import matmulCode from '../../shaders/matmul.wgsl?raw';
import gemvCode from '../../shaders/gemv.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { ShapeError } from '../errors';
import { allMultiplesOf4, loadWidth, specialise, subgroupChoice } from './shader-source';

/** Shared by the f32 matmul and GEMV (and by quantised variants that keep the same addressing). */
export const MATMUL_PARAMS = defineUniforms({
  M: 'u32', N: 'u32', K: 'u32', x_stride: 'u32', x_offset: 'u32', y_stride: 'u32', y_offset: 'u32', tiles_n: 'u32',
});

export interface MatmulArgs {
  /** [M, xStride] activations; K values per row from xOffset. */
  x: Binding;
  /** [N, K] weights (rows = output features). */
  w: Binding;
  /** [M, yStride] output; N values per row from yOffset. */
  y: Binding;
  M: number;
  N: number;
  K: number;
  xStride?: number;
  xOffset?: number;
  yStride?: number;
  yOffset?: number;
}

/** Rows at or below this use the GEMV kernel (weights streamed once per row, no tiling overhead). */
export const GEMV_MAX_ROWS = 4;
const TILE = 32;
const GEMV_ROWS = 4;

function check(a: MatmulArgs) {
  for (const k of ['M', 'N', 'K'] as const) {
    if (!Number.isInteger(a[k]) || a[k] < 0) throw new ShapeError(`matmul: ${k} must be a non-negative integer, got ${a[k]}`);
  }
  if ((a.xStride ?? a.K) < a.K) throw new ShapeError(`matmul: xStride ${a.xStride} < K ${a.K}`);
  if ((a.yStride ?? a.N) < a.N) throw new ShapeError(`matmul: yStride ${a.yStride} < N ${a.N}`);
}

function vec4Ok(a: MatmulArgs) {
  return allMultiplesOf4(a.K, a.xStride ?? a.K, a.xOffset ?? 0);
}

function pack(a: MatmulArgs, tiles: number) {
  return MATMUL_PARAMS.pack({
    M: a.M, N: a.N, K: a.K,
    x_stride: a.xStride ?? a.K, x_offset: a.xOffset ?? 0,
    y_stride: a.yStride ?? a.N, y_offset: a.yOffset ?? 0, tiles_n: tiles,
  });
}

/** Y = X · Wᵀ with the register-tiled kernel (prefill shapes). */
export function matmulTiled(gpu: Gpu, rec: Recorder, a: MatmulArgs): void {
  check(a);
  if (!a.M || !a.N) return;
  const tilesN = ceilDiv(a.N, TILE);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'matmul', code: specialise(matmulCode, { load: loadWidth(vec4Ok(a)) }) }),
    bindings: [a.x, a.w, a.y],
    uniforms: pack(a, tilesN),
    workgroups: tilesN * ceilDiv(a.M, TILE),
    label: 'matmul',
  });
}

/** y = W · x for each of M (few) rows: the decode GEMV. */
export function gemv(gpu: Gpu, rec: Recorder, a: MatmulArgs): void {
  check(a);
  if (!a.M || !a.N) return;
  const groups = ceilDiv(a.N, GEMV_ROWS);
  // With subgroups, one subgroup per workgroup reduces without barriers; the minimum subgroup size
  // guarantees the workgroup is not split across subgroups.
  const sg = gpu.caps.subgroups && gpu.caps.subgroupMinSize >= 4 && gpu.caps.subgroupMinSize <= gpu.caps.maxComputeInvocationsPerWorkgroup;
  // Otherwise enough invocations to give each about four vec4 loads of a row: short rows (the small
  // projections of MLA) get small workgroups and a shallow reduction tree.
  const want = 2 ** Math.ceil(Math.log2(Math.max(1, Math.ceil(a.K / 16))));
  const WG = sg ? gpu.caps.subgroupMinSize : Math.min(128, Math.max(32, want), 2 ** Math.floor(Math.log2(gpu.caps.maxComputeInvocationsPerWorkgroup)));
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'gemv', code: specialise(gemvCode, { load: loadWidth(vec4Ok(a)), subgroups: subgroupChoice(sg) }), entryPoint: sg ? 'main_subgroup' : 'main', constants: { WG } }),
    bindings: [a.x, a.w, a.y],
    uniforms: pack(a, groups),
    workgroups: groups * a.M,
    label: 'gemv',
  });
}

/** Picks GEMV for a few rows and the tiled matmul otherwise. */
export function matmul(gpu: Gpu, rec: Recorder, a: MatmulArgs): void {
  if (a.M <= GEMV_MAX_ROWS) gemv(gpu, rec, a);
  else matmulTiled(gpu, rec, a);
}
