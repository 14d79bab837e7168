/**
 * GPU token sampling: a decode step reads back only the 4-byte token id. Algorithm and CPU twin:
 * src/kernels/sample.ref.ts. Dispatches for a 130k vocabulary: greedy 2; temperature only 3;
 * top-k or top-p 6; both 9 (plus a buffer copy, and one more dispatch with a repetition penalty).
 */
import code from '../../shaders/sample.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { ArgumentError, ShapeError } from '../errors';
import { isGreedy, topPFixed, type SamplingParams } from './sample-params';

export type { SamplingParams } from './sample-params';

export const SAMPLE_PARAMS = defineUniforms({
  V: 'u32', chunks: 'u32', round: 'u32', inv_t: 'f32',
  inv_rp: 'f32', rp: 'f32', history: 'u32', seed: 'u32',
  step: 'u32', top_k: 'u32', top_p: 'u32', flags: 'u32',
  out_index: 'u32', logits_offset: 'u32', _p1: 'u32', _p2: 'u32',
});
const CH = 1024;
const WG = 256;
const NB = 2048;
const HIST_BYTES = 6 * NB * 2 * 4;

export interface SampleArgs {
  /** f32 [V] logits (one row); a { buffer, offset } binding selects a row of a [T, V] buffer (offset: any multiple of 4 bytes). */
  logits: Binding;
  V: number;
  /** u32 buffer; the token id is written at element `outIndex` (default 0). */
  out: Binding;
  outIndex?: number;
  params: SamplingParams;
  /** Mixed into the RNG with the seed: draw `step` of a generation. */
  step: number;
  /** Token ids the repetition penalty applies to (u32 [count]). */
  history?: { ids: Binding; count: number };
}

interface Scratch { V: number; z: GPUBuffer; info: GPUBuffer; hist: GPUBuffer }
const scratch = new WeakMap<Gpu, Scratch>();

/** Per-device working buffers, grown on demand (old ones are left to the device's teardown, since recorded work may still use them). */
function scratchFor(gpu: Gpu, V: number): Scratch {
  let s = scratch.get(gpu);
  if (!s || s.V < V) {
    const cap = Math.max(V, 1024);
    const chunks = ceilDiv(cap, CH);
    s = {
      V: cap,
      z: gpu.buffers.create('sample.z', cap * 4),
      info: gpu.buffers.create('sample.info', (32 + 3 * chunks) * 4),
      hist: gpu.buffers.create('sample.hist', HIST_BYTES),
    };
    scratch.set(gpu, s);
  }
  return s;
}

const asBinding = (b: Binding): GPUBufferBinding => ((b as GPUBufferBinding).buffer ? (b as GPUBufferBinding) : { buffer: b as GPUBuffer });

function validate(a: SampleArgs) {
  const p = a.params;
  if (!Number.isInteger(a.V) || a.V <= 0 || a.V >= 2 ** 31) throw new ShapeError(`sampleToken: V must be a positive integer, got ${a.V}`);
  if (!Number.isFinite(p.temperature) || p.temperature < 0) throw new ArgumentError(`sampling: temperature must be ≥ 0, got ${p.temperature}`);
  if (!Number.isInteger(p.topK) || p.topK < 0) throw new ArgumentError(`sampling: topK must be a non-negative integer, got ${p.topK}`);
  if (!(p.topP > 0 && p.topP <= 1)) throw new ArgumentError(`sampling: topP must be in (0, 1], got ${p.topP}`);
  if (!(p.repetitionPenalty > 0) || !Number.isFinite(p.repetitionPenalty)) throw new ArgumentError(`sampling: repetitionPenalty must be > 0, got ${p.repetitionPenalty}`);
  if (!Number.isInteger(a.step) || a.step < 0) throw new ArgumentError(`sampling: step must be a non-negative integer, got ${a.step}`);
}

/** Records the sampling of one token from `logits` into `out[outIndex]`. */
export function sampleToken(gpu: Gpu, rec: Recorder, a: SampleArgs): void {
  validate(a);
  const p = a.params;
  const V = a.V;
  const chunks = ceilDiv(V, CH);
  const s = scratchFor(gpu, V);
  const greedy = isGreedy(p);
  const kOn = !greedy && p.topK > 0 && p.topK < V;
  const pOn = !greedy && p.topP < 1;
  const lg = asBinding(a.logits);
  if ((lg.offset ?? 0) % 4) throw new ShapeError(`sampleToken: logits offset ${lg.offset} is not a multiple of 4`);
  const base = {
    V, chunks, round: 0, inv_t: greedy ? 1 : 1 / p.temperature,
    inv_rp: 1 / p.repetitionPenalty, rp: p.repetitionPenalty, history: a.history?.count ?? 0, seed: p.seed >>> 0,
    step: a.step >>> 0, top_k: p.topK, top_p: topPFixed(p.topP), flags: (greedy ? 1 : 0) | (kOn ? 2 : 0) | (pOn ? 4 : 0),
    out_index: a.outIndex ?? 0, logits_offset: (lg.offset ?? 0) / 4, _p1: 0, _p2: 0,
  };
  const pipe = (entryPoint: string) => gpu.pipelines.get({ label: 'sample', code, entryPoint });
  rec.copy(lg.buffer, lg.offset ?? 0, s.z, 0, V * 4);
  const penalise = !!a.history && a.history.count > 0 && p.repetitionPenalty !== 1;
  if (penalise) {
    rec.dispatch({ pipeline: pipe('penalty'), bindings: [lg.buffer, a.history!.ids, s.z], uniforms: SAMPLE_PARAMS.pack(base), workgroups: ceilDiv(a.history!.count, WG), label: 'sample.penalty' });
  }
  rec.dispatch({ pipeline: pipe('prep'), bindings: [null, null, s.z, s.info], uniforms: SAMPLE_PARAMS.pack(base), workgroups: chunks, label: 'sample.prep' });
  if (!greedy) {
    if (kOn || pOn) rec.clear(s.hist, 0, HIST_BYTES);
    const rounds = [...(kOn ? [0, 1, 2] : []), ...(pOn ? [3, 4, 5] : [])];
    for (const round of rounds) {
      rec.dispatch({ pipeline: pipe('radix_round'), bindings: [null, null, s.z, s.info, s.hist], uniforms: SAMPLE_PARAMS.pack({ ...base, round }), workgroups: chunks, label: `sample.round${round}` });
    }
    rec.dispatch({ pipeline: pipe('finalize'), bindings: [null, null, s.z, s.info, s.hist], uniforms: SAMPLE_PARAMS.pack(base), workgroups: chunks, label: 'sample.finalize' });
  }
  rec.dispatch({ pipeline: pipe('pick'), bindings: [null, null, s.z, s.info, null, a.out], uniforms: SAMPLE_PARAMS.pack(base), workgroups: 1, label: 'sample.pick' });
}
