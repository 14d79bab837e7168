import code from '../../shaders/elementwise.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';

export const ELEMENTWISE_PARAMS = defineUniforms({ n: 'u32', cols: 'u32', _p0: 'u32', _p1: 'u32' });
const WG = 256;

function run(gpu: Gpu, rec: Recorder, entryPoint: string, n: number, bindings: (Binding | null)[], cols = 0) {
  if (n === 0) return;
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'elementwise', code, entryPoint, constants: { WG } }),
    bindings,
    uniforms: ELEMENTWISE_PARAMS.pack({ n, cols, _p0: 0, _p1: 0 }),
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

/** y[r, c] += bias[c] for rows × cols (a linear layer's bias, added in place after the matmul). */
export function addBias(gpu: Gpu, rec: Recorder, bias: Binding, y: Binding, rows: number, cols: number): void {
  run(gpu, rec, 'add_bias', rows * cols, [bias, null, y], cols);
}
