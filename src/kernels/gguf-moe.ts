/**
 * Routed MoE experts on GGUF expert tensors in their raw block bytes (shaders/gguf_moe.wgsl): the
 * decode-path dispatch contract of moe.ts `moeExperts` (x, ids and weights from moeGate on the GPU,
 * optional shared-expert output added, out [T, D]), so a model holding GGUF experts can call it in
 * the same place. Up to moe.ts moeDecodeMaxTokens tokens (as webmoe's own experts) run the per-(token,
 * slot) GEMV path; more run the grouped path (entries sorted by expert, tiles of one expert's rows with
 * its weight slices decoded into workgroup memory once per tile; llama.cpp's MUL_MAT_ID), gathered back
 * by moe.ts's combine.
 * A layer whose stacked tensors pass the binding limit is held as stacks of whole experts (each its
 * own gate|up and down buffers); the forward runs one pass per stack on the routing remapped to it.
 * Scratch (decode: h [T·K, I]; grouped: also the sort's and y [T·K, D]; stacks: remapped routing and
 * running sums) comes from gpu.temps: release with gpu.temps.releaseAll() after the submit.
 */
import ggufMoeCode from '../../shaders/gguf_moe.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { LimitExceededError, ShapeError } from '../errors';
import type { DecodableType } from '../formats/gguf-blocks';
import { gemvSubgroups } from './linear';
import { specialise, subgroupChoice } from './shader-source';
import { ggufExpertStackBytes, ggufExpertsPerStack } from './gguf-layout';
import { ggufChoice, ggufRowBytes, ggufUnit, ggufWorkgroupSize, uploadGgufBytes } from './gguf-linear';
import { maxGroupedTiles, moeCombine, moeDecodeMaxTokens, moeGroupRemap, MOE_TILE_ROWS, sortedExpertEntries, type MoeExpertsArgs } from './moe';

/**
 * One layer's stacked GGUF experts on the GPU. gate and up share a type (one buffer: gate rows, then up
 * rows). Past the binding limit the experts are split into `stacks` of whole experts (stack s holds
 * experts e0 .. e0 + E − 1 of the layer); `gateUp` / `down` are then the first stack's and `E` the layer's.
 */
export interface GgufMoeExpertWeights {
  gateUpType: DecodableType;
  downType: DecodableType;
  /** gate [E, I, D] bytes, then (from byte upBase) up [E, I, D] bytes. */
  gateUp: GPUBuffer;
  upBase: number;
  /** [E, D, I] bytes. */
  down: GPUBuffer;
  E: number;
  I: number;
  D: number;
  /** GPU bytes held (all stacks). */
  bytes: number;
  /** Stacks of whole experts when the layer passes the binding limit (each has no stacks of its own). */
  stacks?: GgufMoeExpertWeights[];
  /** First expert of this stack in the layer (stacks only). */
  e0?: number;
}

export interface GgufTensorBytes { type: string; bytes: Uint8Array }

export const GGUF_MOE_PARAMS = defineUniforms({
  T: 'u32', K: 'u32', D: 'u32', I: 'u32', E: 'u32', groups: 'u32', has_shared: 'u32', row_bytes: 'u32', units: 'u32', up_base: 'u32', _p0: 'u32', _p1: 'u32',
});

/**
 * Uploads ffn_gate_exps / ffn_up_exps ([E, I, D]) and ffn_down_exps ([E, D, I]) as they are in the file:
 * one gate|up and one down buffer, or, when those pass the binding limit (the device's, or a lower
 * `maxBindingBytes`), stacks of whole experts that each fit (gguf-layout.ts ggufExpertsPerStack).
 */
export function uploadGgufExperts(gpu: Gpu, label: string, gate: GgufTensorBytes, up: GgufTensorBytes, down: GgufTensorBytes, E: number, I: number, D: number, opts: { maxBindingBytes?: number } = {}): GgufMoeExpertWeights {
  for (const [k, v] of [['E', E], ['I', I], ['D', D]] as const) if (!Number.isInteger(v) || v <= 0) throw new ShapeError(`uploadGgufExperts ${label}: ${k} must be a positive integer, got ${v}`);
  if (gate.type !== up.type) throw new ShapeError(`uploadGgufExperts ${label}: gate (${gate.type}) and up (${up.type}) must have one type (they share a decoder)`);
  const guRow = ggufRowBytes(gate.type, D, `experts '${label}' gate/up`);
  const dnRow = ggufRowBytes(down.type, I, `experts '${label}' down`);
  for (const [what, t, want] of [['gate', gate, E * I * guRow], ['up', up, E * I * guRow], ['down', down, E * D * dnRow]] as const) {
    if (t.bytes.length !== want) throw new ShapeError(`uploadGgufExperts ${label}: ${what} has ${t.bytes.length} bytes, [${E}, ${what === 'down' ? `${D}, ${I}` : `${I}, ${D}`}] of ${t.type} is ${want}`);
  }
  const gateE = I * guRow, downE = D * dnRow;
  const limit = Math.min(opts.maxBindingBytes ?? Infinity, gpu.caps.maxStorageBufferBindingSize, gpu.caps.maxBufferSize);
  const per = ggufExpertsPerStack(E, gateE, gateE, downE, limit);
  if (per < 1) {
    throw new LimitExceededError('maxStorageBufferBindingSize', Math.max(...ggufExpertStackBytes(1, gateE, gateE, downE)), limit, `one routed expert of '${label}' (2×${I}×${D} ${gate.type} gate|up rows, ${D}×${I} ${down.type} down rows)`);
  }
  const one = (e0: number, e1: number, name: string): GgufMoeExpertWeights => {
    const gb = gate.bytes.subarray(e0 * gateE, e1 * gateE), ub = up.bytes.subarray(e0 * gateE, e1 * gateE);
    const upBase = Math.ceil(gb.length / 4) * 4;
    const gu = new Uint8Array(upBase + ub.length);
    gu.set(gb);
    gu.set(ub, upBase);
    const gateUp = uploadGgufBytes(gpu, `${name}.experts.gate_up.${gate.type}`, gu, `the stacked gate|up experts of '${name}'`);
    let dn: GPUBuffer;
    try { dn = uploadGgufBytes(gpu, `${name}.experts.down.${down.type}`, down.bytes.subarray(e0 * downE, e1 * downE), `the stacked down experts of '${name}'`); } catch (e) { gpu.buffers.destroy(gateUp); throw e; }
    return { gateUpType: gate.type as DecodableType, downType: down.type as DecodableType, gateUp, upBase, down: dn, E: e1 - e0, I, D, bytes: gateUp.size + dn.size };
  };
  if (per >= E) return one(0, E, label);
  const stacks: GgufMoeExpertWeights[] = [];
  try {
    for (let e0 = 0; e0 < E; e0 += per) stacks.push({ ...one(e0, Math.min(E, e0 + per), `${label}[${e0}:${Math.min(E, e0 + per)}]`), e0 });
  } catch (e) {
    for (const s of stacks) destroyGgufExperts(gpu, s);
    throw e;
  }
  return { ...stacks[0], E, bytes: stacks.reduce((a, s) => a + s.bytes, 0), stacks, e0: undefined };
}

export function destroyGgufExperts(gpu: Gpu, w: GgufMoeExpertWeights): void {
  for (const s of w.stacks ?? [w]) {
    gpu.buffers.destroy(s.gateUp);
    gpu.buffers.destroy(s.down);
  }
  w.bytes = 0;
}

export interface GgufMoeExpertsArgs extends Omit<MoeExpertsArgs, 'experts' | 'mode'> {
  experts: GgufMoeExpertWeights;
  /** Force a path (tests, benchmarks); default: 'decode' for T ≤ moeDecodeMaxTokens (moe.ts), else 'grouped'. */
  mode?: 'decode' | 'grouped';
}

function bindingBytes(b: Binding): number {
  const bb = b as GPUBufferBinding;
  if (bb.buffer) return bb.size ?? bb.buffer.size - (bb.offset ?? 0);
  return (b as GPUBuffer).size;
}
function need(b: Binding | null, bytes: number, what: string) {
  if (!b) throw new ShapeError(`${what}: binding missing`);
  if (bindingBytes(b) < bytes) throw new ShapeError(`${what}: needs ${bytes} bytes, binding has ${bindingBytes(b)}`);
}

// load: the grouped path's staged tiles are always vec4 (register_tile.wgsl).
const shaderFor = (type: DecodableType, subgroups: boolean) => specialise(ggufMoeCode, { gtype: ggufChoice(type), subgroups: subgroupChoice(subgroups), load: 'vec4' });

/** The grouped path's tile (BM = BN in gguf_moe.wgsl, = moe.ts MOE_TILE_ROWS for moeSort) and workgroup memory (x and W slices of 32 × 64 f32). */
const GROUPED_TILE = MOE_TILE_ROWS;
const GROUPED_STORAGE = 2 * GROUPED_TILE * 64 * 4;

/** out[t] = Σ_j w[t,j]·E_{ids[t,j]}(x[t]) + shared[t]: two dispatches, ids never leave the GPU. */
export function ggufMoeExperts(gpu: Gpu, rec: Recorder, a: GgufMoeExpertsArgs): void {
  const { T, K } = a;
  const { E, I, D } = a.experts;
  if (!Number.isInteger(T) || T < 0) throw new ShapeError(`ggufMoeExperts: bad T=${T}`);
  if (!Number.isInteger(K) || K < 1 || K > E) throw new ShapeError(`ggufMoeExperts: K=${K} must be in 1..E (${E})`);
  if (!T) return;
  need(a.x, T * D * 4, 'ggufMoeExperts x [T, D]');
  need(a.ids, T * K * 4, 'ggufMoeExperts ids [T, K]');
  need(a.weights, T * K * 4, 'ggufMoeExperts weights [T, K]');
  need(a.out, T * D * 4, 'ggufMoeExperts out [T, D]');
  if (a.shared) need(a.shared, T * D * 4, 'ggufMoeExperts shared [T, D]');
  if (gpu.caps.maxStorageBuffersPerStage < 6) throw new LimitExceededError('maxStorageBuffersPerShaderStage', 6, gpu.caps.maxStorageBuffersPerStage, 'ggufMoeExperts');
  const stacks = a.experts.stacks;
  if (!stacks) { stackPass(gpu, rec, a, a.experts); return; }
  // Several stacks (as moe.ts moeExpertGroupsForward): per stack, the routing remapped to it (entries of
  // other stacks → its expert 0 with weight 0) and one pass whose "shared" input is the sum so far, so
  // the last pass writes out = shared + the routed sum over every stack.
  const N = T * K;
  let acc: Binding | null = a.shared;
  stacks.forEach((s, i) => {
    const ids = gpu.temps.acquire(N * 4), weights = gpu.temps.acquire(N * 4);
    moeGroupRemap(gpu, rec, { ids: a.ids, weights: a.weights, N, e0: s.e0!, e1: s.e0! + s.E, idsOut: ids, weightsOut: weights });
    const out = i === stacks.length - 1 ? a.out : gpu.temps.acquire(T * D * 4);
    stackPass(gpu, rec, { ...a, ids, weights, shared: acc, out }, s);
    acc = out;
  });
}

/** One stack's dispatches (ids index the stack's experts; ids past it read its last expert). */
function stackPass(gpu: Gpu, rec: Recorder, a: GgufMoeExpertsArgs, w: GgufMoeExpertWeights): void {
  const mode = a.mode ?? (a.T <= moeDecodeMaxTokens(gpu, a.K, w.E) ? 'decode' : 'grouped');
  (mode === 'decode' ? decodePass : groupedPass)(gpu, rec, a, w);
}

/**
 * The grouped path: sort the T·K entries by expert (moe.ts moeSort), h = SiLU(gate)·up per sorted row,
 * y = down·h per sorted row, then combine (moe.ts moeCombine: weighted gather to token order + shared).
 * Scratch: perm, inv [N], seg [2(E+1)], h [N, I], y [N, D] (the plan's grouped temporaries).
 */
function groupedPass(gpu: Gpu, rec: Recorder, a: GgufMoeExpertsArgs, w: GgufMoeExpertWeights): void {
  const { T, K } = a;
  const { E, I, D } = w;
  const N = T * K;
  if (GROUPED_STORAGE > gpu.caps.maxComputeWorkgroupStorageSize) throw new LimitExceededError('maxComputeWorkgroupStorageSize', GROUPED_STORAGE, gpu.caps.maxComputeWorkgroupStorageSize, 'ggufMoeExperts (grouped)');
  const { perm, inv, seg, h, y } = sortedExpertEntries(gpu, rec, { ids: a.ids, N, E, I, D, tileRows: GROUPED_TILE });
  const tiles = maxGroupedTiles(N, E, GROUPED_TILE);
  const tnI = ceilDiv(I, GROUPED_TILE), tnD = ceilDiv(D, GROUPED_TILE);
  const maxDim = gpu.caps.maxComputeWorkgroupsPerDimension;
  for (const n of [tiles * tnI, tiles * tnD]) if (n > maxDim * maxDim) throw new LimitExceededError('maxComputeWorkgroupsPerDimension²', n, maxDim * maxDim, 'ggufMoeExperts (grouped)');
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'gguf_moe', code: shaderFor(w.gateUpType, false), entryPoint: 'grouped_gate_up' }),
    bindings: [a.x, w.gateUp, null, h, null, null, null, null, null, perm, seg],
    uniforms: GGUF_MOE_PARAMS.pack({ T, K, D, I, E, groups: tnI, has_shared: 0, row_bytes: ggufRowBytes(w.gateUpType, D, 'gate/up'), units: ceilDiv(D, ggufUnit(w.gateUpType)), up_base: w.upBase, _p0: 0, _p1: 0 }),
    workgroups: tiles * tnI,
    label: `gguf_moe_grouped_gate_up.${w.gateUpType}`,
  });
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'gguf_moe', code: shaderFor(w.downType, false), entryPoint: 'grouped_down' }),
    bindings: [null, w.down, null, null, h, null, null, null, y, null, seg],
    uniforms: GGUF_MOE_PARAMS.pack({ T, K, D, I, E, groups: tnD, has_shared: 0, row_bytes: ggufRowBytes(w.downType, I, 'down'), units: ceilDiv(I, ggufUnit(w.downType)), up_base: 0, _p0: 0, _p1: 0 }),
    workgroups: tiles * tnD,
    label: `gguf_moe_grouped_down.${w.downType}`,
  });
  moeCombine(gpu, rec, { y, inv, weights: a.weights, shared: a.shared, out: a.out, T, K, D });
}

/** The decode path: per (token, slot) GEMVs over the chosen experts' rows, two dispatches. */
function decodePass(gpu: Gpu, rec: Recorder, a: GgufMoeExpertsArgs, w: GgufMoeExpertWeights): void {
  const { T, K } = a;
  const { E, I, D } = w;
  const unitsUp = ceilDiv(D, ggufUnit(w.gateUpType)), unitsDown = ceilDiv(I, ggufUnit(w.downType));
  // One subgroup per workgroup where the device has subgroups (as moe.ts's decode), else 4..64 invocations.
  const sg = !a.noSubgroups && gemvSubgroups(gpu);
  const wgUp = sg ? gpu.caps.subgroupMinSize : ggufWorkgroupSize(gpu, unitsUp), wgDown = sg ? gpu.caps.subgroupMinSize : ggufWorkgroupSize(gpu, unitsDown);
  const storage = 2 * 16 * Math.max(wgUp, wgDown);
  if (!sg && storage > gpu.caps.maxComputeWorkgroupStorageSize) throw new LimitExceededError('maxComputeWorkgroupStorageSize', storage, gpu.caps.maxComputeWorkgroupStorageSize, 'ggufMoeExperts');
  const h = gpu.temps.acquire(T * K * I * 4);
  const gu = ceilDiv(I, 4);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'gguf_moe', code: shaderFor(w.gateUpType, sg), entryPoint: sg ? 'decode_gate_up_subgroup' : 'decode_gate_up', constants: { WG: wgUp } }),
    bindings: [a.x, w.gateUp, a.ids, h],
    uniforms: GGUF_MOE_PARAMS.pack({ T, K, D, I, E, groups: gu, has_shared: 0, row_bytes: ggufRowBytes(w.gateUpType, D, 'gate/up'), units: unitsUp, up_base: w.upBase, _p0: 0, _p1: 0 }),
    workgroups: gu * T * K,
    label: `gguf_moe_gate_up.${w.gateUpType}`,
  });
  const gd = ceilDiv(D, 4);
  const dummy = a.shared ?? gpu.temps.acquire(16);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'gguf_moe', code: shaderFor(w.downType, sg), entryPoint: sg ? 'decode_down_subgroup' : 'decode_down', constants: { WG: wgDown } }),
    bindings: [null, w.down, a.ids, null, h, null, a.weights, dummy, a.out],
    uniforms: GGUF_MOE_PARAMS.pack({ T, K, D, I, E, groups: gd, has_shared: a.shared ? 1 : 0, row_bytes: ggufRowBytes(w.downType, I, 'down'), units: unitsDown, up_base: 0, _p0: 0, _p1: 0 }),
    workgroups: gd * T,
    label: `gguf_moe_down.${w.downType}`,
  });
}
