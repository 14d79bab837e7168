/**
 * Softmax and log-softmax over rows of any length (vocabulary rows of ~130k are split over many
 * workgroups): two dispatches, `stats` then `apply`. In place when `y` is omitted. CPU twin: softmax.ref.ts.
 */
import code from '../../shaders/softmax.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ShapeError } from '../errors';

export const SOFTMAX_PARAMS = defineUniforms({ rows: 'u32', V: 'u32', chunks: 'u32', log: 'u32' });
const CH = 256 * 16;

export interface SoftmaxArgs {
  /** f32 [rows, V]. */
  x: Binding;
  /** f32 [rows, V]; omitted = in place over x. */
  y?: Binding;
  rows: number;
  V: number;
}

const partials = new WeakMap<Gpu, GPUBuffer>();
/** Per-device partials buffer, grown on demand (old ones stay alive for recorded work; freed with the device). */
function partialsFor(gpu: Gpu, bytes: number): GPUBuffer {
  let b = partials.get(gpu);
  if (!b || b.size < bytes) {
    b = gpu.buffers.create('softmax.partials', Math.max(bytes, 4096));
    partials.set(gpu, b);
  }
  return b;
}

function run(gpu: Gpu, rec: Recorder, a: SoftmaxArgs, log: boolean) {
  if (!Number.isInteger(a.rows) || !Number.isInteger(a.V) || a.rows < 0 || a.V <= 0) throw new ShapeError(`softmax: bad shape [${a.rows}, ${a.V}]`);
  if (!a.rows) return;
  const chunks = Math.ceil(a.V / CH);
  const part = partialsFor(gpu, a.rows * chunks * 8);
  const uniforms = SOFTMAX_PARAMS.pack({ rows: a.rows, V: a.V, chunks, log: log ? 1 : 0 });
  const pipe = (entryPoint: string) => gpu.pipelines.get({ label: 'softmax', code, entryPoint });
  const name = log ? 'logSoftmax' : 'softmax';
  rec.dispatch({ pipeline: pipe('stats'), bindings: [a.x, null, part], uniforms, workgroups: a.rows * chunks, label: `${name}.stats` });
  if (a.y) rec.dispatch({ pipeline: pipe('apply'), bindings: [a.x, a.y, part], uniforms, workgroups: a.rows * chunks, label: `${name}.apply` });
  else rec.dispatch({ pipeline: pipe('apply_inplace'), bindings: [null, null, part, a.x], uniforms, workgroups: a.rows * chunks, label: `${name}.apply` });
}

/** y[r] = softmax(x[r]) for each row. */
export function softmax(gpu: Gpu, rec: Recorder, a: SoftmaxArgs): void { run(gpu, rec, a, false); }
/** y[r] = log_softmax(x[r]) = x − max − ln Σ e^(x − max). */
export function logSoftmax(gpu: Gpu, rec: Recorder, a: SoftmaxArgs): void { run(gpu, rec, a, true); }
