/**
 * RoPE on the GPU: in place, interleaved pairs or halves (`style`), on a slice of every head of every row (the rope part
 * of q, or the k_pe part of the kv_a output with heads = 1). CPU twin: rope.ref.ts; inverse frequencies and YaRN: rope-params.ts.
 */
import code from '../../shaders/rope.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { ShapeError } from '../errors';
import { specialise } from './shader-source';


export const ROPE_PARAMS = defineUniforms({ rows: 'u32', heads: 'u32', row_stride: 'u32', head_stride: 'u32', offset: 'u32', half: 'u32', pos0: 'u32', n: 'u32' });
const WG = 64;

export interface RopeArgs {
  /** [rows, rowStride] f32, rotated in place. */
  x: Binding;
  rows: number;
  heads: number;
  rowStride: number;
  headStride: number;
  /** Start of the rope slice within each head. */
  offset: number;
  ropeDim: number;
  /** f32 [ropeDim/2] (ropeInvFreq). */
  invFreq: Binding;
  /** Position of row 0 (row r is at pos0 + r). */
  pos0: number;
  /** Optional u32 [1] added to pos0 on the GPU, so a recorded decode step needs no CPU-side change. */
  posBuffer?: Binding;
  /** Which elements pair up (rope.ref.ts RopeRefArgs.style): 'pairs' (default, DeepSeek) or 'halves' (GPT-OSS, NeoX). */
  style?: 'pairs' | 'halves';
}

const zeroPos = new WeakMap<Gpu, GPUBuffer>();

export function rope(gpu: Gpu, rec: Recorder, a: RopeArgs): void {
  for (const k of ['rows', 'heads', 'rowStride', 'headStride', 'offset', 'ropeDim', 'pos0'] as const) {
    if (!Number.isInteger(a[k]) || a[k] < 0) throw new ShapeError(`rope: ${k} must be a non-negative integer, got ${a[k]}`);
  }
  if (a.ropeDim % 2) throw new ShapeError(`rope: ropeDim must be even, got ${a.ropeDim}`);
  if (a.heads > 1 && a.offset + a.ropeDim > a.headStride) throw new ShapeError(`rope: slice [${a.offset}, ${a.offset + a.ropeDim}) does not fit a head of ${a.headStride}`);
  if ((a.heads - 1) * a.headStride + a.offset + a.ropeDim > a.rowStride) throw new ShapeError(`rope: ${a.heads} heads of ${a.headStride} with the slice at ${a.offset} overflow a row of ${a.rowStride}`);
  const n = a.rows * a.heads * (a.ropeDim / 2);
  if (!n) return;
  let pos = a.posBuffer;
  if (!pos) {
    pos = zeroPos.get(gpu);
    if (!pos) { pos = gpu.buffers.upload('rope.zeroPos', new Uint32Array(1)); zeroPos.set(gpu, pos as GPUBuffer); }
  }
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'rope', code: specialise(code, { style: a.style ?? 'pairs' }), constants: { WG } }),
    bindings: [a.x, a.invFreq, pos],
    uniforms: ROPE_PARAMS.pack({ rows: a.rows, heads: a.heads, row_stride: a.rowStride, head_stride: a.headStride, offset: a.offset, half: a.ropeDim / 2, pos0: a.pos0, n }),
    workgroups: ceilDiv(n, WG),
    label: `rope(${a.style ?? 'pairs'})`,
  });
}
