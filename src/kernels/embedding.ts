/**
 * Embedding lookup: out[t, :] = table[ids[t], :] for a table stored as a GpuWeight [V, D] in any
 * packed format (f32, f16, q8, q4, fp8; decoded by the `gather` entry of shaders/linear.wgsl). A
 * chunked table (past the binding limit) runs one dispatch per chunk, each writing the tokens whose
 * id falls in it. Ids ≥ V leave their output row unwritten. CPU twin: embedding.ref.ts.
 */
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { ceilDiv } from '../gpu/dispatch';
import { ShapeError } from '../errors';
import { LINEAR_PARAMS, decodeConstants, linearShader, rowUnits, weightBindings } from './linear';
import type { GpuWeight } from './weight';

export interface EmbeddingArgs {
  /** [V, D] rows. */
  table: GpuWeight;
  /** u32 [T] token ids. */
  ids: Binding;
  /** f32 [T, D] (or [T, outStride] with outOffset). */
  out: Binding;
  T: number;
  D: number;
  outStride?: number;
  outOffset?: number;
}

const WG = 256;

export function embedding(gpu: Gpu, rec: Recorder, a: EmbeddingArgs): void {
  if (a.D !== a.table.K) throw new ShapeError(`embedding: D ${a.D} ≠ table row length ${a.table.K}`);
  if (!Number.isInteger(a.T) || a.T < 0) throw new ShapeError(`embedding: T must be a non-negative integer, got ${a.T}`);
  if (!a.T) return;
  const parts = a.table.chunks ?? [a.table];
  for (const w of parts) {
    rec.dispatch({
      pipeline: gpu.pipelines.get({ label: 'embedding', code: linearShader(w, false), entryPoint: 'gather', constants: { ...decodeConstants(w), WG } }),
      bindings: [null, ...weightBindings(w), a.out, a.ids],
      uniforms: LINEAR_PARAMS.pack({
        M: a.T, N: w.N, K: a.D, x_stride: 0, x_offset: 0, y_stride: a.outStride ?? a.D, y_offset: a.outOffset ?? 0,
        tiles_n: 0, row_units: rowUnits(w), scale_cols: w.params.scaleCols ?? 0, row0: w.rowStart ?? 0, tk: 0,
      }),
      workgroups: ceilDiv(a.T * a.D, WG),
      label: `embedding:${a.table.label}`,
    });
  }
}
