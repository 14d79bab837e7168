/**
 * Routed MoE experts on GGUF expert tensors in their raw block bytes (shaders/gguf_moe.wgsl): the
 * decode-path dispatch contract of moe.ts `moeExperts` (x, ids and weights from moeGate on the GPU,
 * optional shared-expert output added, out [T, D]), so a model holding GGUF experts can call it in
 * the same place. Every token count runs the per-(token, slot) GEMV path (no grouped GEMM yet).
 * Scratch (h [T·K, I]) comes from gpu.temps: release with gpu.temps.releaseAll() after the submit.
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
import { ggufChoice, ggufRowBytes, ggufUnit, ggufWorkgroupSize, uploadGgufBytes } from './gguf-linear';
import type { MoeExpertsArgs } from './moe';

/** One layer's stacked GGUF experts on the GPU. gate and up share a type (one buffer: gate rows, then up rows). */
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
  bytes: number;
}

export interface GgufTensorBytes { type: string; bytes: Uint8Array }

export const GGUF_MOE_PARAMS = defineUniforms({
  T: 'u32', K: 'u32', D: 'u32', I: 'u32', E: 'u32', groups: 'u32', has_shared: 'u32', row_bytes: 'u32', units: 'u32', up_base: 'u32', _p0: 'u32', _p1: 'u32',
});

/** Uploads ffn_gate_exps / ffn_up_exps ([E, I, D]) and ffn_down_exps ([E, D, I]) as they are in the file. */
export function uploadGgufExperts(gpu: Gpu, label: string, gate: GgufTensorBytes, up: GgufTensorBytes, down: GgufTensorBytes, E: number, I: number, D: number): GgufMoeExpertWeights {
  for (const [k, v] of [['E', E], ['I', I], ['D', D]] as const) if (!Number.isInteger(v) || v <= 0) throw new ShapeError(`uploadGgufExperts ${label}: ${k} must be a positive integer, got ${v}`);
  if (gate.type !== up.type) throw new ShapeError(`uploadGgufExperts ${label}: gate (${gate.type}) and up (${up.type}) must have one type (they share a decoder)`);
  const guRow = ggufRowBytes(gate.type, D, `experts '${label}' gate/up`);
  const dnRow = ggufRowBytes(down.type, I, `experts '${label}' down`);
  for (const [what, t, want] of [['gate', gate, E * I * guRow], ['up', up, E * I * guRow], ['down', down, E * D * dnRow]] as const) {
    if (t.bytes.length !== want) throw new ShapeError(`uploadGgufExperts ${label}: ${what} has ${t.bytes.length} bytes, [${E}, ${what === 'down' ? `${D}, ${I}` : `${I}, ${D}`}] of ${t.type} is ${want}`);
  }
  const upBase = Math.ceil(gate.bytes.length / 4) * 4;
  const gu = new Uint8Array(upBase + up.bytes.length);
  gu.set(gate.bytes);
  gu.set(up.bytes, upBase);
  const gateUp = uploadGgufBytes(gpu, `${label}.experts.gate_up.${gate.type}`, gu, `the stacked gate|up experts of '${label}'`);
  const dn = uploadGgufBytes(gpu, `${label}.experts.down.${down.type}`, down.bytes, `the stacked down experts of '${label}'`);
  return { gateUpType: gate.type as DecodableType, downType: down.type as DecodableType, gateUp, upBase, down: dn, E, I, D, bytes: gateUp.size + dn.size };
}

export function destroyGgufExperts(gpu: Gpu, w: GgufMoeExpertWeights): void {
  gpu.buffers.destroy(w.gateUp);
  gpu.buffers.destroy(w.down);
}

export interface GgufMoeExpertsArgs extends Omit<MoeExpertsArgs, 'experts' | 'mode'> {
  experts: GgufMoeExpertWeights;
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

const shaderFor = (type: DecodableType, subgroups: boolean) => specialise(ggufMoeCode, { gtype: ggufChoice(type), subgroups: subgroupChoice(subgroups) });

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
  const w = a.experts;
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
