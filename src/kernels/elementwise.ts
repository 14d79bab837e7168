import code from '../../shaders/elementwise.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';

export const ELEMENTWISE_PARAMS = defineUniforms({ n: 'u32', cols: 'u32', alpha: 'f32', _p1: 'u32' });
const WG = 256;

function run(gpu: Gpu, rec: Recorder, entryPoint: string, n: number, bindings: (Binding | null)[], cols = 0, alpha = 0) {
  if (n === 0) return;
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'elementwise', code, entryPoint, constants: { WG } }),
    bindings,
    uniforms: ELEMENTWISE_PARAMS.pack({ n, cols, alpha, _p1: 0 }),
    workgroups: ceilDiv(n, WG),
    label: entryPoint,
  });
}

/** y = a + b over n elements. */
export function add(gpu: Gpu, rec: Recorder, a: Binding, b: Binding, y: Binding, n: number): void {
  run(gpu, rec, 'add', n, [a, b, y]);
}

/** y += a over n elements (the residual stream). */
export function addInPlace(gpu: Gpu, rec: Recorder, a: Binding, y: Binding, n: number): void {
  run(gpu, rec, 'add_inplace', n, [a, null, y]);
}

/** y = silu(g) · u over n elements. */
export function siluMul(gpu: Gpu, rec: Recorder, g: Binding, u: Binding, y: Binding, n: number): void {
  run(gpu, rec, 'silu_mul', n, [g, u, y]);
}

/** y[r] = silu(gu[r, :cols]) · gu[r, cols:] for rows of a fused gate|up projection. */
export function siluMulRows(gpu: Gpu, rec: Recorder, gu: Binding, y: Binding, rows: number, cols: number): void {
  run(gpu, rec, 'silu_mul_rows', rows * cols, [gu, null, y], cols);
}

/** In place: y[r, c] += b[c] for rows of `cols` values (a projection's bias). */
export function addBias(gpu: Gpu, rec: Recorder, b: Binding, y: Binding, rows: number, cols: number): void {
  run(gpu, rec, 'add_bias', rows * cols, [b, null, y], cols);
}

/** In place: y *= alpha over n elements (Granite's embedding/residual/logits multipliers). */
export function scaleInPlace(gpu: Gpu, rec: Recorder, y: Binding, n: number, alpha: number): void {
  run(gpu, rec, 'scale', n, [null, null, y], 0, alpha);
}

/** In place: y[r, c] *= sigmoid(g[r]) for rows of `cols` values (Qwen2-MoE's gated shared expert). */
export function sigmoidGateRows(gpu: Gpu, rec: Recorder, g: Binding, y: Binding, rows: number, cols: number): void {
  run(gpu, rec, 'sigmoid_gate_rows', rows * cols, [g, null, y], cols);
}
