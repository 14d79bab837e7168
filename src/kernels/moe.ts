import gateCode from '../../shaders/moe_gate.wgsl?raw';
import expertsCode from '../../shaders/moe_experts.wgsl?raw';
import dispatchCode from '../../shaders/moe_dispatch.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { LimitExceededError, ShapeError } from '../errors';
import { loadWidth, specialise, subgroupChoice } from './shader-source';
import { MX_BLOCK, deinterleaveGateUp, packWeight, rowLayout, type GptOssExpertTensors } from './weight-pack';
import { f32ArrayToBf16, f32ArrayToF16 } from '../util/half';
import { QUANT_GROUP, SOURCE_BYTES, quantizeOnGpu, type RawMatrix } from './weight-quant';
import { fp8ScalesPackable, type HostPacker } from './wasm/host-pack';
import { matmul } from './matmul';
import { addBias } from './elementwise';
import { checkRouting, type MoeRouting } from './moe-routing';

export type { MoeRouting } from './moe-routing';

/**
 * MoE layer kernels: router (gate), routed experts for decode (ids stay on the GPU) and prefill
 * (count/scan/scatter permutation + grouped GEMMs + gather-combine).
 *
 * Scratch buffers come from `gpu.temps`: the caller releases them with `gpu.temps.releaseAll()` after
 * the step's submit (as for every kernel that takes temporaries).
 */

/**
 * Stacked expert weights of one MoE layer: f32, f16 (4 binary16 per 8 bytes), q8 / q4 (group-quantised
 * rows as packWeight lays them out, f16 group scales in gateUpScales / downScales) or mxfp4 (GPT-OSS:
 * the HF block bytes per row, E8M0 scale bytes 4 per word in gateUpScales / downScales), decoded in the
 * shader; optional biases (GPT-OSS) added to the gate/up and down outputs.
 */
export interface MoeExpertWeights {
  format: 'f32' | 'f16' | 'bf16' | 'q8' | 'q4' | 'mxfp4';
  gateUpScales?: GPUBuffer;
  downScales?: GPUBuffer;
  /** q8/q4 group size along the reduction axis (mxfp4: 32, the MX block). */
  groupSize?: number;
  /** f32 [E, 2I]: per expert the gate biases, then the up biases (GPT-OSS gate_up_proj_bias, de-interleaved). */
  gateUpBias?: GPUBuffer;
  /** f32 [E, D] (GPT-OSS down_proj_bias): added to each expert's output before its routing weight. */
  downBias?: GPUBuffer;
  /** [E, 2I, D]: per expert, gate rows (0..I-1) then up rows (I..2I-1) */
  gateUp: GPUBuffer;
  /** [E, D, I] */
  down: GPUBuffer;
  E: number;
  I: number;
  D: number;
  bytes: number;
}

/** Formats uploadExperts quantises from f32 matrices (mxfp4 comes packed: uploadMxfp4ExpertGroups). */
export type PackableExpertFormat = Exclude<MoeExpertWeights['format'], 'mxfp4'>;

/** Token counts at or below this use the decode path in `mode: 'auto'` (GPUs; see moeDecodeMaxTokens). */
export const MOE_DECODE_MAX_TOKENS = 4;

/**
 * Tokens up to which `mode: 'auto'` takes the decode path. GPUs: MOE_DECODE_MAX_TOKENS (the decode
 * GEMVs read each expert once per (token, slot), the grouped GEMMs once per row tile). A CPU fallback
 * adapter (SwiftShader) is compute-bound with costly barriers, where the grouped GEMMs' tiles only pay
 * off at ~24+ rows per expert: decode while T·K ≤ 24·E (at most 64 tokens; measured 2x faster at T = 64).
 */
export function moeDecodeMaxTokens(gpu: Gpu, K: number, E: number): number {
  if (!gpu.adapter.isFallbackAdapter) return MOE_DECODE_MAX_TOKENS;
  return Math.max(MOE_DECODE_MAX_TOKENS, Math.min(64, Math.floor((24 * E) / K)));
}
export type MoeExpertsMode = 'decode' | 'batched' | 'grouped';

/**
 * The routed-experts path `mode: 'auto'` takes for T tokens (webmoe's stacks; the offloaded steps use it
 * too). Up to moeDecodeMaxTokens tokens the per-(token, slot) decode kernels, except on a CPU fallback
 * adapter from MOE_BATCHED_MIN_ENTRIES (token, slot) entries per expert on average, where the batched
 * kernels decode each expert's weights once per tile of 4 of its tokens (measured: docs/real-scale.md,
 * "Where the first token goes"). GPUs keep decode / grouped.
 */
export function moeExpertsMode(gpu: Gpu, T: number, K: number, E: number): MoeExpertsMode {
  if (T > moeDecodeMaxTokens(gpu, K, E)) return 'grouped';
  if (gpu.adapter.isFallbackAdapter && T > 1 && T * K >= MOE_BATCHED_MIN_ENTRIES * E) return 'batched';
  return 'decode';
}
/** (token, slot) entries per expert from which a CPU fallback adapter takes the batched path (moeExpertsMode). */
export const MOE_BATCHED_MIN_ENTRIES = 1;
/** Sorted rows per batched-pass tile (TB in moe_experts.wgsl). */
export const MOE_BATCH_ROWS = 4;
/** Sorted rows per grouped-GEMM tile (BM in moe_experts.wgsl). */
export const MOE_TILE_ROWS = 32;
const TILE_COLS = 32;
const DECODE_ROWS = 4;
/** Storage buffers the MoE entry points bind at most (decode_down, gate select); one more with expert biases. */
const MAX_STORAGE_BINDINGS = 7;

export const MOE_GATE_PARAMS = defineUniforms({
  T: 'u32', E: 'u32', K: 'u32', n_group: 'u32', topk_group: 'u32', softmax: 'u32', norm_topk: 'u32', has_bias: 'u32', scale: 'f32',
});
export const MOE_EXPERT_PARAMS = defineUniforms({ T: 'u32', K: 'u32', D: 'u32', I: 'u32', E: 'u32', groups: 'u32', has_shared: 'u32', _p: 'u32' });
export const MOE_DISPATCH_PARAMS = defineUniforms({ a: 'u32', b: 'u32', c: 'u32', d: 'u32' });

// ------------------------------------------------------------------------------------------ helpers

/** Small placeholder buffers for optional bindings (distinct per slot: no writable aliasing). */
const dummy = (gpu: Gpu, slot: string): GPUBuffer => gpu.buffers.placeholder(`moe.${slot}`);

function bindingBytes(b: Binding): number {
  const bb = b as GPUBufferBinding;
  if (bb.buffer) return bb.size ?? bb.buffer.size - (bb.offset ?? 0);
  return (b as GPUBuffer).size;
}

function need(b: Binding | null | undefined, bytes: number, what: string) {
  if (!b) throw new ShapeError(`${what}: binding missing`);
  const have = bindingBytes(b);
  if (have < bytes) throw new ShapeError(`${what}: needs ${bytes} bytes, binding has ${have}`);
}

function pow2Below(n: number) { return 2 ** Math.floor(Math.log2(n)); }

function checkStorageSlots(gpu: Gpu, what: string, need = MAX_STORAGE_BINDINGS) {
  if (gpu.caps.maxStorageBuffersPerStage < need) {
    throw new LimitExceededError('maxStorageBuffersPerShaderStage', need, gpu.caps.maxStorageBuffersPerStage, what);
  }
}

function checkWorkgroupStorage(gpu: Gpu, bytes: number, what: string) {
  if (bytes > gpu.caps.maxComputeWorkgroupStorageSize) {
    throw new LimitExceededError('maxComputeWorkgroupStorageSize', bytes, gpu.caps.maxComputeWorkgroupStorageSize, what);
  }
}

// ----------------------------------------------------------------------------------------- weights

/**
 * Uploads one layer's routed experts as two stacked buffers (written expert by expert: no host-side
 * copy of the whole stack). HF layouts: gate/up [I, D], down [D, I]. f16 halves the bytes; q8 / q4
 * quantise each row in groups of `groupSize` (32 or 128) with f16 scales. Non-f32 formats are read with
 * vec4 loads, so D and I must be multiples of 4.
 */
export function uploadExperts(gpu: Gpu, label: string, experts: { gate: Float32Array; up: Float32Array; down: Float32Array }[], D: number, I: number, format: PackableExpertFormat = 'f32', groupSize = 32): MoeExpertWeights {
  const E = experts.length;
  if (!E || !(D > 0) || !(I > 0)) throw new ShapeError(`uploadExperts ${label}: need experts, D and I, got E=${E} D=${D} I=${I}`);
  if (format !== 'f32' && (D % 4 || I % 4)) throw new ShapeError(`uploadExperts ${label}: ${format} experts need D and I multiples of 4, got D=${D} I=${I}`);
  if (groupSize !== 32 && groupSize !== 128) throw new ShapeError(`uploadExperts ${label}: group size must be 32 or 128, got ${groupSize}`);
  const quant = format === 'q8' || format === 'q4';
  // Bytes of one stacked row of reduction length K, and f16 scales per row.
  const rowBytes = (K: number) => (format === 'f32' ? 4 * K : format === 'f16' || format === 'bf16' ? 2 * K : rowLayout(format, K).rowWords * 4);
  const scaleBytes = (rows: number, K: number) => (quant ? rows * Math.ceil(K / groupSize) * 2 : 0);
  const gateUpBytes = E * 2 * I * rowBytes(D), downBytes = E * D * rowBytes(I);
  for (const [what, bytes] of [['gate|up', gateUpBytes], ['down', downBytes]] as const) {
    if (bytes > gpu.caps.maxStorageBufferBindingSize) {
      throw new LimitExceededError('maxStorageBufferBindingSize', bytes, gpu.caps.maxStorageBufferBindingSize, `the stacked ${what} weights of ${E} experts of '${label}' (${E}×${what === 'down' ? '' : '2×'}${I}×${D} ${format})`);
    }
  }
  experts.forEach((x, e) => {
    if (x.gate.length !== I * D || x.up.length !== I * D || x.down.length !== D * I) {
      throw new ShapeError(`uploadExperts ${label}: expert ${e} has gate ${x.gate.length}, up ${x.up.length}, down ${x.down.length}; want ${I}×${D} each`);
    }
  });
  const tag = format === 'f32' ? '' : ` ${format}`;
  const gateUp = gpu.buffers.create(`${label}.experts.gate_up[${E},${2 * I},${D}]${tag}`, gateUpBytes);
  const down = gpu.buffers.create(`${label}.experts.down[${E},${D},${I}]${tag}`, downBytes);
  // Per-expert rows are even in number (2I, D multiples of 4), so f16 scale pairs never straddle experts.
  const guScales = quant ? gpu.buffers.create(`${label}.experts.gate_up.scales`, Math.max(16, E * scaleBytes(2 * I, D))) : undefined;
  const dnScales = quant ? gpu.buffers.create(`${label}.experts.down.scales`, Math.max(16, E * scaleBytes(D, I))) : undefined;
  const put = (buf: GPUBuffer, scales: GPUBuffer | undefined, data: Float32Array, rows: number, K: number, at: number) => {
    if (format === 'f32' || format === 'f16' || format === 'bf16') { gpu.buffers.write(buf, format === 'f16' ? f32ArrayToF16(data) : format === 'bf16' ? f32ArrayToBf16(data) : data, at * rowBytes(K)); return; }
    const p = packWeight(data, rows, K, format, { groupSize, scaleDtype: 'f16' });
    gpu.buffers.write(buf, p.data, at * rowBytes(K));
    gpu.buffers.write(scales!, p.scales!, (at / rows) * scaleBytes(rows, K));
  };
  experts.forEach((x, e) => {
    if (quant) {
      // gate and up quantised as one [2I, D] block so the scale pairs line up with the stacked rows
      const gu = new Float32Array(2 * I * D);
      gu.set(x.gate, 0);
      gu.set(x.up, I * D);
      put(gateUp, guScales, gu, 2 * I, D, e * 2 * I);
    } else {
      put(gateUp, guScales, x.gate, I, D, e * 2 * I);
      put(gateUp, guScales, x.up, I, D, (e * 2 + 1) * I);
    }
    put(down, dnScales, x.down, D, I, e * D);
  });
  return { format, gateUp, down, gateUpScales: guScales, downScales: dnScales, groupSize: quant ? groupSize : undefined, E, I, D, bytes: gateUpBytes + downBytes + (guScales?.size ?? 0) + (dnScales?.size ?? 0) };
}

/**
 * A layer's routed experts held as consecutive stacks (experts [e0, e0 + w.E) each), so that no buffer
 * passes the binding limit however many experts a layer has: one stack when it fits, as many as needed
 * otherwise (moeExpertGroupsForward runs one experts pass per stack).
 */
export interface MoeExpertGroups {
  format: MoeExpertWeights['format'];
  groups: { e0: number; w: MoeExpertWeights }[];
  E: number;
  I: number;
  D: number;
  bytes: number;
}

/** Bytes of each buffer of a stack of one expert: gate|up, down and their f16 scales (q8/q4). */
export function expertStackBytesPerExpert(format: MoeExpertWeights['format'], D: number, I: number, groupSize = 32): number[] {
  const rowBytes = (K: number) => (format === 'f32' ? 4 * K : format === 'f16' || format === 'bf16' ? 2 * K : rowLayout(format, K).rowWords * 4);
  const quant = format === 'q8' || format === 'q4';
  // mxfp4: one E8M0 byte per row and 32-value block, and the two f32 bias arrays GPT-OSS has.
  if (format === 'mxfp4') return [2 * I * rowBytes(D), D * rowBytes(I), 2 * I * Math.ceil(D / MX_BLOCK), D * Math.ceil(I / MX_BLOCK), 2 * I * 4, D * 4];
  return [2 * I * rowBytes(D), D * rowBytes(I), ...(quant ? [2 * I * Math.ceil(D / groupSize) * 2, D * Math.ceil(I / groupSize) * 2] : [])];
}

/** Experts per stack so that every buffer of a stack stays within `limit` bytes (0: not even one expert fits). */
export function expertsPerStack(format: MoeExpertWeights['format'], E: number, D: number, I: number, limit: number, groupSize = 32): number {
  const per = expertStackBytesPerExpert(format, D, I, groupSize);
  const n = Math.min(...per.map((b) => Math.floor(limit / b)));
  if (n < 1) return 0;
  // Equal stacks (the last may be smaller): the fewest stacks, as even as they come.
  const stacks = Math.ceil(E / Math.min(n, E));
  return Math.ceil(E / stacks);
}

/**
 * Uploads a layer's routed experts as stacks that each fit the binding limit (`maxBindingBytes`, the
 * device's maxStorageBufferBindingSize and maxBufferSize). Throws LimitExceededError when one expert's
 * rows alone do not fit.
 */
export function uploadExpertGroups(
  gpu: Gpu, label: string, experts: { gate: Float32Array; up: Float32Array; down: Float32Array }[], D: number, I: number,
  format: PackableExpertFormat = 'f32', opts: { groupSize?: 32 | 128; maxBindingBytes?: number } = {},
): MoeExpertGroups {
  const E = experts.length;
  const gs = opts.groupSize ?? 32;
  const limit = Math.min(opts.maxBindingBytes ?? Infinity, gpu.caps.maxStorageBufferBindingSize, gpu.caps.maxBufferSize);
  const per = E ? expertsPerStack(format, E, D, I, limit, gs) : 1;
  if (per < 1) {
    const one = Math.max(...expertStackBytesPerExpert(format, D, I, gs));
    throw new LimitExceededError('maxStorageBufferBindingSize', one, limit, `one routed expert of '${label}' (2×${I}×${D} ${format} gate|up rows)`);
  }
  const groups: MoeExpertGroups['groups'] = [];
  try {
    for (let e0 = 0; e0 < Math.max(E, 1); e0 += per) {
      const e1 = Math.min(E, e0 + per);
      groups.push({ e0, w: uploadExperts(gpu, per >= E ? label : `${label}[${e0}:${e1}]`, experts.slice(e0, e1), D, I, format, gs) });
    }
  } catch (e) {
    for (const g of groups) destroyExperts(gpu, g.w);
    throw e;
  }
  return { format, groups, E, I, D, bytes: groups.reduce((s, g) => s + g.w.bytes, 0) };
}

/**
 * Writes a layer's routed experts into their stacks one projection at a time, as the loader streams
 * them: the stacks (same layout and grouping as uploadExpertGroups) are created up front, and each
 * expert's gate, up or down matrix is packed (quantised for q8/q4) and written at its offset at once, so
 * the host holds one expert matrix, never a layer. For q8/q4 the gate and up rows of an expert share
 * the [2I, D] scale array; when I·groups is odd a scale pair would straddle gate and up, and then the
 * gate waits for its up (one matrix more on the host).
 */
export interface ExpertGroupsWriter {
  /** Packs and writes `data` before returning (the caller may reuse the array). */
  put(e: number, proj: 'gate' | 'up' | 'down', data: Float32Array): void;
  /**
   * Takes the matrix as the checkpoint stores it (BF16, F16 or F32 bytes) and writes it without an f32
   * copy: copied when the stack has that format; for q8 / q4 quantised on the GPU (weight-quant.ts) or,
   * with quantizeOnDevice false, by the WebAssembly packer (host-pack.ts), which also sets
   * raw.nonFinite. False when it cannot (then `put` the f32 values): no packer, another group size on
   * the GPU, or gate and up sharing scale words. Done before returning, as put.
   */
  putRaw(e: number, proj: 'gate' | 'up' | 'down', raw: RawMatrix): boolean;
  /**
   * FP8 E4M3 bytes with their 128×128 weight_scale_inv, quantised to q8 / q4 by the WebAssembly packer
   * (on the device or not: the GPU quantiser reads no FP8). False when it cannot (then `put`): no packer,
   * a non-finite scale, or gate and up sharing scale words.
   */
  putFp8(e: number, proj: 'gate' | 'up' | 'down', bytes: Uint8Array, scaleInv: Float32Array): boolean;
  /** Every expert's three matrices arrived: the stacks. */
  finish(): MoeExpertGroups;
  destroy(): void;
}

export function expertGroupsWriter(
  gpu: Gpu, label: string, E: number, D: number, I: number,
  format: PackableExpertFormat = 'f32',
  opts: {
    groupSize?: 32 | 128; maxBindingBytes?: number;
    /** putRaw quantises q8/q4 on the GPU (default true; false: on the host with `hostPacker`, or not at all). */ quantizeOnDevice?: boolean;
    /** The WebAssembly packer putRaw quantises q8/q4 with on the host (when not on the device); without it putRaw only copies same-format bytes. */ hostPacker?: HostPacker | null;
  } = {},
): ExpertGroupsWriter {
  const gs = opts.groupSize ?? 32;
  if (!E || !(D > 0) || !(I > 0)) throw new ShapeError(`expertGroupsWriter ${label}: need experts, D and I, got E=${E} D=${D} I=${I}`);
  if (format !== 'f32' && (D % 4 || I % 4)) throw new ShapeError(`expertGroupsWriter ${label}: ${format} experts need D and I multiples of 4, got D=${D} I=${I}`);
  const limit = Math.min(opts.maxBindingBytes ?? Infinity, gpu.caps.maxStorageBufferBindingSize, gpu.caps.maxBufferSize);
  const per = expertsPerStack(format, E, D, I, limit, gs);
  if (per < 1) {
    const one = Math.max(...expertStackBytesPerExpert(format, D, I, gs));
    throw new LimitExceededError('maxStorageBufferBindingSize', one, limit, `one routed expert of '${label}' (2×${I}×${D} ${format} gate|up rows)`);
  }
  const quant = format === 'q8' || format === 'q4';
  const rowBytes = (K: number) => (format === 'f32' ? 4 * K : format === 'f16' || format === 'bf16' ? 2 * K : rowLayout(format, K).rowWords * 4);
  const scaleBytes = (rows: number, K: number) => (quant ? rows * Math.ceil(K / gs) * 2 : 0);
  const groups: MoeExpertGroups['groups'] = [];
  try {
    for (let e0 = 0; e0 < E; e0 += per) {
      const n = Math.min(E, e0 + per) - e0;
      const l = per >= E ? label : `${label}[${e0}:${e0 + n}]`;
      const tag = format === 'f32' ? '' : ` ${format}`;
      const gateUpBytes = n * 2 * I * rowBytes(D), downBytes = n * D * rowBytes(I);
      const gateUp = gpu.buffers.create(`${l}.experts.gate_up[${n},${2 * I},${D}]${tag}`, gateUpBytes);
      const down = gpu.buffers.create(`${l}.experts.down[${n},${D},${I}]${tag}`, downBytes);
      const guScales = quant ? gpu.buffers.create(`${l}.experts.gate_up.scales`, Math.max(16, n * scaleBytes(2 * I, D))) : undefined;
      const dnScales = quant ? gpu.buffers.create(`${l}.experts.down.scales`, Math.max(16, n * scaleBytes(D, I))) : undefined;
      groups.push({ e0, w: { format, gateUp, down, gateUpScales: guScales, downScales: dnScales, groupSize: quant ? gs : undefined, E: n, I, D, bytes: gateUpBytes + downBytes + (guScales?.size ?? 0) + (dnScales?.size ?? 0) } });
    }
  } catch (e) {
    for (const g of groups) destroyExperts(gpu, g.w);
    throw e;
  }
  // Scale pairs of the gate|up block line up with gate and up separately when I·groups is even.
  const splitGateUp = !quant || (I * Math.ceil(D / gs)) % 2 === 0;
  const heldGate = new Map<number, Float32Array>();
  const seen = new Uint8Array(E);
  const arrive = (e: number, proj: 'gate' | 'up' | 'down', values: number) => {
    if (!Number.isInteger(e) || e < 0 || e >= E) throw new ShapeError(`expertGroupsWriter ${label}: expert ${e} outside 0..${E - 1}`);
    if (values !== I * D) throw new ShapeError(`expertGroupsWriter ${label}: expert ${e} ${proj} has ${values} values, want ${proj === 'down' ? `${D}×${I}` : `${I}×${D}`}`);
    const bit = proj === 'gate' ? 1 : proj === 'up' ? 2 : 4;
    if (seen[e] & bit) throw new ShapeError(`expertGroupsWriter ${label}: expert ${e} ${proj} arrived twice`);
    seen[e] |= bit;
  };
  type Dest = [buf: GPUBuffer, scales: GPUBuffer | undefined, rows: number, K: number, at: number];
  /** Where expert e's matrix `proj` goes: its group's stack and scales, its [rows, K] and first stacked row. */
  const dest = (e: number, proj: 'gate' | 'up' | 'down'): Dest => {
    const g = groups[Math.floor(e / per)], le = e - g.e0;
    return proj === 'down' ? [g.w.down, g.w.downScales, D, I, le * D] : [g.w.gateUp, g.w.gateUpScales, I, D, (le * 2 + (proj === 'up' ? 1 : 0)) * I];
  };
  /** Packed q8/q4 words and their f16 scales into the stack at `d`. */
  const writePacked = ([buf, scales, rows, K, at]: Dest, p: { data: Uint32Array; scales?: Uint32Array }) => {
    gpu.buffers.write(buf, p.data, at * rowBytes(K));
    gpu.buffers.write(scales!, p.scales!, (at / rows) * scaleBytes(rows, K));
  };
  const write = (d: Dest, data: Float32Array) => {
    const [buf, , rows, K, at] = d;
    if (!quant) { gpu.buffers.write(buf, format === 'f16' ? f32ArrayToF16(data) : format === 'bf16' ? f32ArrayToBf16(data) : data, at * rowBytes(K)); return; }
    writePacked(d, packWeight(data, rows, K, format, { groupSize: gs, scaleDtype: 'f16' }));
  };
  return {
    putRaw(e, proj, raw) {
      const same = raw.source === format;
      const onDevice = opts.quantizeOnDevice ?? true;
      const onHost = !onDevice && !!opts.hostPacker;
      if (!same && !(quant && splitGateUp && ((onDevice && gs === QUANT_GROUP) || onHost))) return false;
      if (same && !splitGateUp) return false;
      arrive(e, proj, raw.bytes.byteLength / SOURCE_BYTES[raw.source]);
      const d = dest(e, proj);
      const [buf, scales, rows, K, at] = d;
      if (same) gpu.buffers.write(buf, raw.bytes, at * rowBytes(K));
      else if (onHost) {
        // WebAssembly SIMD, straight from the file's bytes (host-pack.ts: packWeight's words and scales
        // bit for bit). rows·groups is even here (splitGateUp), so the scales fill whole words.
        const p = opts.hostPacker!.pack(raw.source, raw.bytes, rows, K, format as 'q8' | 'q4', gs);
        writePacked(d, p);
        raw.nonFinite = p.nonFinite;
      } else quantizeOnGpu(gpu, { src: raw.bytes, source: raw.source, rows, K, format: format as 'q8' | 'q4', dst: buf, dstOffsetWords: (at * rowBytes(K)) / 4, scales: scales!, scaleOffsetWords: ((at / rows) * scaleBytes(rows, K)) / 4 });
      return true;
    },
    putFp8(e, proj, bytes, scaleInv) {
      if (!(quant && splitGateUp && opts.hostPacker && fp8ScalesPackable(scaleInv))) return false;
      arrive(e, proj, bytes.byteLength);
      const d = dest(e, proj);
      writePacked(d, opts.hostPacker.pack('fp8', bytes, d[2], d[3], format as 'q8' | 'q4', gs, { scaleInv }));
      return true;
    },
    put(e, proj, data) {
      arrive(e, proj, data.length);
      if (proj === 'down' || splitGateUp) { write(dest(e, proj), data); return; }
      const other = heldGate.get(e);
      if (!other) { heldGate.set(e, data.slice()); return; } // the caller may reuse `data`
      heldGate.delete(e);
      const gu = new Float32Array(2 * I * D);
      gu.set(proj === 'gate' ? data : other, 0);
      gu.set(proj === 'gate' ? other : data, I * D);
      const [buf, scales, , , at] = dest(e, 'gate');
      write([buf, scales, 2 * I, D, at], gu);
    },
    finish() {
      const missing = seen.findIndex((b) => b !== 7);
      if (missing >= 0) throw new ShapeError(`expertGroupsWriter ${label}: expert ${missing} is missing ${['gate', 'up', 'down'].filter((_, i) => !(seen[missing] & (1 << i))).join(', ')}`);
      return { format, groups, E, I, D, bytes: groups.reduce((s, g) => s + g.w.bytes, 0) };
    },
    destroy() { for (const g of groups) destroyExperts(gpu, g.w); },
  };
}

export function destroyExpertGroups(gpu: Gpu, w: MoeExpertGroups): void {
  for (const g of w.groups) destroyExperts(gpu, g.w);
}

/** group_remap: ids/weights of stack [e0, e1) (entries of other experts → expert 0, weight 0). */
export function moeGroupRemap(gpu: Gpu, rec: Recorder, a: { ids: Binding; weights: Binding; N: number; e0: number; e1: number; idsOut: Binding; weightsOut: Binding }): void {
  if (!a.N) return;
  need(a.ids, a.N * 4, 'moeGroupRemap ids [N]');
  need(a.weights, a.N * 4, 'moeGroupRemap weights [N]');
  need(a.idsOut, a.N * 4, 'moeGroupRemap idsOut [N]');
  need(a.weightsOut, a.N * 4, 'moeGroupRemap weightsOut [N]');
  const WG = sortWG(gpu);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'moe_dispatch', code: dispatchCode, entryPoint: 'group_remap', constants: { WG } }),
    bindings: [a.ids, a.idsOut, null, null, null, a.weights, null, a.weightsOut],
    uniforms: MOE_DISPATCH_PARAMS.pack({ a: a.N, b: a.e0, c: a.e1, d: 0 }),
    workgroups: ceilDiv(a.N, WG),
    label: 'moe_group_remap',
  });
}

/**
 * moeExperts over experts held as several stacks: per stack, the routing remapped to it (group_remap)
 * and one experts pass whose "shared" input is the sum so far, so the last pass writes
 * out = shared + Σ over all stacks. One stack: exactly moeExperts.
 */
export function moeExpertGroupsForward(gpu: Gpu, rec: Recorder, a: Omit<MoeExpertsArgs, 'experts'> & { experts: MoeExpertGroups }): void {
  const g = a.experts.groups;
  if (g.length === 1) { moeExperts(gpu, rec, { ...a, experts: g[0].w }); return; }
  if (!Number.isInteger(a.T) || a.T < 0) throw new ShapeError(`moeExperts: bad T=${a.T}`);
  if (!Number.isInteger(a.K) || a.K < 1 || a.K > a.experts.E) throw new ShapeError(`moeExperts: K=${a.K} must be in 1..E (${a.experts.E})`);
  if (!a.T) return;
  const N = a.T * a.K;
  let acc: Binding | null = a.shared;
  g.forEach((grp, i) => {
    const ids = gpu.temps.acquire(N * 4), weights = gpu.temps.acquire(N * 4);
    moeGroupRemap(gpu, rec, { ids: a.ids, weights: a.weights, N, e0: grp.e0, e1: grp.e0 + grp.w.E, idsOut: ids, weightsOut: weights });
    const out = i === g.length - 1 ? a.out : gpu.temps.acquire(a.T * a.experts.D * 4);
    expertsPass(gpu, rec, { ...a, experts: grp.w, ids, weights, shared: acc, out });
    acc = out;
  });
}

export function destroyExperts(gpu: Gpu, w: MoeExpertWeights): void {
  gpu.buffers.destroy(w.gateUp);
  gpu.buffers.destroy(w.down);
  if (w.gateUpScales) gpu.buffers.destroy(w.gateUpScales);
  if (w.downScales) gpu.buffers.destroy(w.downScales);
  if (w.gateUpBias) gpu.buffers.destroy(w.gateUpBias);
  if (w.downBias) gpu.buffers.destroy(w.downBias);
}

/** A byte array uploaded padded to whole 16-byte words (scales of mxfp4 stacks). */
function uploadBytes(gpu: Gpu, label: string, bytes: Uint8Array): GPUBuffer {
  const padded = new Uint8Array(Math.max(16, Math.ceil(bytes.length / 16) * 16));
  padded.set(bytes);
  return gpu.buffers.upload(label, new Uint32Array(padded.buffer));
}

/**
 * Uploads a GPT-OSS MoE layer's MXFP4 experts from the HF tensors (GptOssExpertTensors) as stacks that
 * each fit the binding limit (gpt-oss-20b: 32 experts of 2·2880 × 2880 gate|up rows = 265 MB, past the
 * 128 MiB WebGPU default, so usually several stacks): gate|up rows de-interleaved into the kernels'
 * [gate rows; up rows] order (deinterleaveGateUp), block bytes as they are, scale bytes 4 per word,
 * biases f32. Run with moeExpertGroupsForward and `activation: { kind: 'swiglu_oai', ... }`.
 * D and I must be multiples of 4 (vec4 reads); rows are padded to the 32-value block.
 */
export function uploadMxfp4ExpertGroups(gpu: Gpu, label: string, t: GptOssExpertTensors, E: number, D: number, I: number, opts: { maxBindingBytes?: number } = {}): MoeExpertGroups {
  if (!E || !(D > 0) || !(I > 0) || D % 4 || I % 4) throw new ShapeError(`uploadMxfp4ExpertGroups ${label}: need E ≥ 1 and D, I positive multiples of 4, got E=${E} D=${D} I=${I}`);
  const GD = Math.ceil(D / MX_BLOCK), GI = Math.ceil(I / MX_BLOCK);
  if (t.downBlocks.length !== E * D * GI * 16 || t.downScales.length !== E * D * GI || t.downBias.length !== E * D) {
    throw new ShapeError(`uploadMxfp4ExpertGroups ${label}: down tensors want [${E}, ${D}, ${GI}, 16], [${E}, ${D}, ${GI}], [${E}, ${D}]; got ${t.downBlocks.length}, ${t.downScales.length}, ${t.downBias.length} elements`);
  }
  let gu: ReturnType<typeof deinterleaveGateUp>;
  try { gu = deinterleaveGateUp(t, E, I, D); } catch (e) { throw new ShapeError(`uploadMxfp4ExpertGroups ${label}: ${(e as Error).message}`); }
  for (const [what, sc] of [['gate_up', gu.scales], ['down', t.downScales]] as const) {
    const at = sc.indexOf(255);
    if (at >= 0) throw new ShapeError(`uploadMxfp4ExpertGroups ${label}: ${what} scale byte ${at} is 255 (NaN in E8M0)`);
  }
  const limit = Math.min(opts.maxBindingBytes ?? Infinity, gpu.caps.maxStorageBufferBindingSize, gpu.caps.maxBufferSize);
  const per = expertsPerStack('mxfp4', E, D, I, limit);
  if (per < 1) throw new LimitExceededError('maxStorageBufferBindingSize', Math.max(...expertStackBytesPerExpert('mxfp4', D, I)), limit, `one routed expert of '${label}' (2×${I}×${D} mxfp4 gate|up rows)`);
  const rowD = rowLayout('mxfp4', D).rowWords * 4, rowI = rowLayout('mxfp4', I).rowWords * 4;
  // Rows of the HF blocks are G·16 bytes; padded rows (D or I not a multiple of 32) are whole blocks too.
  const groups: MoeExpertGroups['groups'] = [];
  try {
    for (let e0 = 0; e0 < E; e0 += per) {
      const e1 = Math.min(E, e0 + per), n = e1 - e0;
      const l = per >= E ? label : `${label}[${e0}:${e1}]`;
      const gateUp = uploadBytes(gpu, `${l}.experts.gate_up[${n},${2 * I},${D}] mxfp4`, gu.blocks.subarray(e0 * 2 * I * rowD, e1 * 2 * I * rowD));
      const down = uploadBytes(gpu, `${l}.experts.down[${n},${D},${I}] mxfp4`, t.downBlocks.subarray(e0 * D * rowI, e1 * D * rowI));
      const gateUpScales = uploadBytes(gpu, `${l}.experts.gate_up.scales`, gu.scales.subarray(e0 * 2 * I * GD, e1 * 2 * I * GD));
      const downScales = uploadBytes(gpu, `${l}.experts.down.scales`, t.downScales.subarray(e0 * D * GI, e1 * D * GI));
      const gateUpBias = gpu.buffers.upload(`${l}.experts.gate_up.bias`, gu.bias.slice(e0 * 2 * I, e1 * 2 * I));
      const downBias = gpu.buffers.upload(`${l}.experts.down.bias`, t.downBias.slice(e0 * D, e1 * D));
      const w: MoeExpertWeights = { format: 'mxfp4', gateUp, down, gateUpScales, downScales, groupSize: MX_BLOCK, gateUpBias, downBias, E: n, I, D, bytes: 0 };
      w.bytes = [gateUp, down, gateUpScales, downScales, gateUpBias, downBias].reduce((a, b) => a + b.size, 0);
      groups.push({ e0, w });
    }
  } catch (e) {
    for (const g of groups) destroyExperts(gpu, g.w);
    throw e;
  }
  return { format: 'mxfp4', groups, E, I, D, bytes: groups.reduce((a, g) => a + g.w.bytes, 0) };
}

/**
 * Adds expert biases to stacks uploaded by uploadExperts / uploadExpertGroups (any format): gateUpBias
 * [E, 2I] as the kernels read it (per expert the gate biases, then the up biases), downBias [E, D].
 */
export function uploadExpertBiases(gpu: Gpu, w: MoeExpertGroups, gateUpBias: Float32Array, downBias: Float32Array): void {
  const { E, I, D } = w;
  if (gateUpBias.length !== E * 2 * I || downBias.length !== E * D) throw new ShapeError(`uploadExpertBiases: want gate|up bias [${E}, ${2 * I}] and down bias [${E}, ${D}], got ${gateUpBias.length} and ${downBias.length} values`);
  for (const g of w.groups) {
    const label = g.w.gateUp.label.replace(/\.gate_up.*$/, '');
    g.w.gateUpBias = gpu.buffers.upload(`${label}.gate_up.bias`, gateUpBias.slice(g.e0 * 2 * I, (g.e0 + g.w.E) * 2 * I));
    g.w.downBias = gpu.buffers.upload(`${label}.down.bias`, downBias.slice(g.e0 * D, (g.e0 + g.w.E) * D));
    g.w.bytes += g.w.gateUpBias.size + g.w.downBias.size;
  }
  w.bytes = w.groups.reduce((a, g) => a + g.w.bytes, 0);
}

// -------------------------------------------------------------------------------------------- gate

export interface MoeGateArgs {
  /** [T, D] normalised hidden states */
  x: Binding;
  T: number;
  D: number;
  /** [E, D] router weight */
  gateW: Binding;
  /** [E] e_score_correction_bias, or null */
  bias: Binding | null;
  routing: MoeRouting;
  /** u32 [T, K] out: chosen experts, descending selection score */
  ids: Binding;
  /** f32 [T, K] out: final multipliers incl. routed_scaling_factor */
  weights: Binding;
  /** f32 [T, E] out: unbiased scores (optional) */
  scores?: Binding;
  /** u32 [E] telemetry counters, incremented once per choice (optional) */
  counts?: Binding;
  /** f32 [T, E] scratch for the logits (default: a gpu.temps buffer) */
  logits?: Binding;
  /**
   * f32 [E] bias of the router's linear layer (GPT-OSS router.bias: logits = x·Wᵀ + b), added before the
   * selection; unlike `bias` (DeepSeek's selection-only correction) it changes the scores too.
   */
  routerBias?: Binding;
}

/** Router: logits = x·Wgᵀ (GEMV/matmul), then the selection kernel. Two dispatches. */
export function moeGate(gpu: Gpu, rec: Recorder, a: MoeGateArgs): void {
  const E = a.routing.experts;
  if (!Number.isInteger(a.T) || a.T < 0 || !Number.isInteger(a.D) || a.D <= 0) throw new ShapeError(`moeGate: bad T=${a.T} D=${a.D}`);
  if (!a.T) return;
  need(a.x, a.T * a.D * 4, 'moeGate x [T, D]');
  need(a.gateW, E * a.D * 4, 'moeGate gateW [E, D]');
  const logits = a.logits ?? gpu.temps.acquire(a.T * E * 4);
  matmul(gpu, rec, { x: a.x, w: a.gateW, y: logits, M: a.T, N: E, K: a.D });
  if (a.routerBias) {
    need(a.routerBias, E * 4, 'moeGate routerBias [E]');
    addBias(gpu, rec, a.routerBias, logits, a.T, E);
  }
  moeGateSelect(gpu, rec, { logits, T: a.T, bias: a.bias, routing: a.routing, ids: a.ids, weights: a.weights, scores: a.scores, counts: a.counts });
}

/** The selection kernel on precomputed router logits [T, E] (one workgroup per token). */
export function moeGateSelect(gpu: Gpu, rec: Recorder, a: { logits: Binding; T: number; bias: Binding | null; routing: MoeRouting; ids: Binding; weights: Binding; scores?: Binding; counts?: Binding }): void {
  const r = a.routing;
  const err = checkRouting(r);
  if (err) throw new ShapeError(`moeGate: ${err}`);
  if (!Number.isInteger(a.T) || a.T < 0) throw new ShapeError(`moeGate: bad T=${a.T}`);
  if (!a.T) return;
  const E = r.experts, K = r.topK;
  if (r.hasBias && !a.bias) throw new ShapeError('moeGate: routing.hasBias but bias is null');
  need(a.logits, a.T * E * 4, 'moeGate logits [T, E]');
  if (r.hasBias) need(a.bias, E * 4, 'moeGate bias [E]');
  need(a.ids, a.T * K * 4, 'moeGate ids [T, K]');
  need(a.weights, a.T * K * 4, 'moeGate weights [T, K]');
  if (a.scores) need(a.scores, a.T * E * 4, 'moeGate scores [T, E]');
  if (a.counts) need(a.counts, E * 4, 'moeGate counts [E]');
  checkStorageSlots(gpu, 'moeGate');
  const WG = Math.max(1, Math.min(pow2Below(Math.min(256, gpu.caps.maxComputeInvocationsPerWorkgroup)), 2 ** Math.ceil(Math.log2(Math.max(32, E)))));
  checkWorkgroupStorage(gpu, (2 * E + 2 * r.nGroup + WG + K) * 4, `the MoE gate for ${E} experts`);
  rec.dispatch({
    pipeline: gpu.pipelines.get({
      label: 'moe_gate', code: gateCode,
      constants: { WG, MAX_E: E, MAX_G: r.nGroup, MAX_K: K, WRITE_SCORES: !!a.scores, COUNT: !!a.counts },
    }),
    bindings: [a.logits, r.hasBias ? a.bias : dummy(gpu, 'bias'), a.ids, a.weights, a.scores ?? dummy(gpu, 'scores'), a.counts ?? dummy(gpu, 'counts')],
    uniforms: MOE_GATE_PARAMS.pack({
      T: a.T, E, K, n_group: r.nGroup, topk_group: r.topkGroup, softmax: r.scoring === 'softmax' ? 1 : 0,
      norm_topk: r.normTopkProb ? 1 : 0, has_bias: r.hasBias ? 1 : 0, scale: r.routedScalingFactor,
    }),
    workgroups: a.T,
    label: 'moe_gate',
  });
}

// ----------------------------------------------------------------------------------------- experts

export interface MoeExpertsArgs {
  /** [T, D] normalised hidden states (the gate's input) */
  x: Binding;
  T: number;
  experts: MoeExpertWeights;
  /** u32 [T, K] from moeGate */
  ids: Binding;
  /** f32 [T, K] from moeGate */
  weights: Binding;
  K: number;
  /** [T, D] shared-expert output computed by the caller, added unscaled (null: none) */
  shared: Binding | null;
  /** [T, D] out */
  out: Binding;
  /**
   * 'decode': per-(token, slot) GEMVs; 'batched': permutation + per-expert GEMVs over tiles of 4 sorted
   * rows; 'grouped': permutation + grouped GEMMs; 'auto': moeExpertsMode.
   */
  mode?: 'auto' | MoeExpertsMode;
  /** Decode and batched: use the workgroup-memory reduction even when the device has subgroups (tests, benchmarks). */
  noSubgroups?: boolean;
  /** Decode, q8/q4/mxfp4 experts: walk rows by whole 4-word units (default: decodeUnitWalk's device rule; tests). */
  unitWalk?: boolean;
  /** The expert activation (default silu: silu(gate)·up). */
  activation?: ExpertActivation;
}

/**
 * Expert activations: 'silu' (SwiGLU: silu(g)·u) or 'swiglu_oai' (GPT-OSS: g' = min(g, limit),
 * u' = clamp(u, −limit, limit), g'·sigmoid(alpha·g')·(u' + 1); alpha 1.702, limit = config swiglu_limit 7).
 */
export type ExpertActivation = { kind: 'silu' } | { kind: 'swiglu_oai'; alpha: number; limit: number };

/**
 * Routed experts + shared expert combine: out[t] = Σ_j w[t,j]·E_{ids[t,j]}(x[t]) + shared[t].
 * Decode: 2 dispatches, ids never leave the GPU. Grouped: 4 dispatches (sort, gate|up, down, combine).
 */
export function moeExperts(gpu: Gpu, rec: Recorder, a: MoeExpertsArgs): void {
  const { T, K } = a;
  const { E } = a.experts;
  if (!Number.isInteger(T) || T < 0) throw new ShapeError(`moeExperts: bad T=${T}`);
  if (!Number.isInteger(K) || K < 1 || K > E) throw new ShapeError(`moeExperts: K=${K} must be in 1..E (${E})`);
  expertsPass(gpu, rec, a);
}

/** One experts pass over one stack (K may exceed the stack's E when the routing was remapped to it). */
function expertsPass(gpu: Gpu, rec: Recorder, a: MoeExpertsArgs): void {
  const { T, K } = a;
  const { E, D } = a.experts;
  if (!T) return;
  need(a.x, T * D * 4, 'moeExperts x [T, D]');
  need(a.ids, T * K * 4, 'moeExperts ids [T, K]');
  need(a.weights, T * K * 4, 'moeExperts weights [T, K]');
  need(a.out, T * D * 4, 'moeExperts out [T, D]');
  if (a.shared) need(a.shared, T * D * 4, 'moeExperts shared [T, D]');
  checkStorageSlots(gpu, 'moeExperts', MAX_STORAGE_BINDINGS + (a.experts.gateUpBias ? 1 : 0));
  if (!a.experts.gateUpBias !== !a.experts.downBias) throw new ShapeError('moeExperts: expert biases come in pairs (gateUpBias and downBias)');
  const act = a.activation ?? { kind: 'silu' };
  if (act.kind === 'swiglu_oai' && !(Number.isFinite(act.alpha) && act.limit > 0)) throw new ShapeError(`moeExperts: swiglu_oai needs a finite alpha and a positive limit, got ${act.alpha}, ${act.limit}`);
  const mode = a.mode && a.mode !== 'auto' ? a.mode : moeExpertsMode(gpu, T, K, E);
  if (mode === 'decode') moeExpertsDecode(gpu, rec, a);
  else if (mode === 'batched') moeExpertsBatched(gpu, rec, a);
  else moeExpertsGrouped(gpu, rec, a);
}

/** Invocations per decode workgroup without subgroups: enough to cover the reduction axis once (32..128). */
function decodeWG(gpu: Gpu, reduceLen: number) {
  const cap = Math.max(1, pow2Below(Math.min(128, gpu.caps.maxComputeInvocationsPerWorkgroup)));
  const vecs = reduceLen % 4 === 0 ? reduceLen / 4 : reduceLen;
  return Math.min(cap, Math.max(32, 2 ** Math.ceil(Math.log2(vecs))));
}

/**
 * Whether the decode kernels run one subgroup per workgroup: WG = the device's minimum subgroup size
 * (the workgroup is one subgroup, subgroupAdd reduces it: no barriers, no workgroup memory).
 */
function decodeSubgroups(gpu: Gpu): boolean {
  const c = gpu.caps;
  return c.subgroups && c.subgroupMinSize >= 4 && c.subgroupMinSize <= c.maxComputeInvocationsPerWorkgroup;
}

/** shaders/moe_experts.wgsl: load width along `reduceLen`, weight storage, activation, biases, subgroup entry points kept or dropped. */
function expertsShader(reduceLen: number, subgroups: boolean, a: MoeExpertsArgs) {
  return specialise(expertsCode, {
    load: loadWidth(reduceLen % 4 === 0), wfmt: a.experts.format, act: a.activation?.kind ?? 'silu',
    bias: a.experts.gateUpBias ? 'on' : 'off', subgroups: subgroupChoice(subgroups),
  });
}

/** Override constants of the weight format (q8/q4/mxfp4 group size) and the activation (swiglu_oai). */
const formatConstants = (a: MoeExpertsArgs): Record<string, number> => ({
  ...(a.experts.groupSize ? { GS: a.experts.groupSize } : {}),
  ...(a.activation?.kind === 'swiglu_oai' ? { ALPHA: a.activation.alpha, LIMIT: a.activation.limit } : {}),
});
/**
 * The bindings 1.. of a dispatch by binding number, then the format's extras: scales (13: gate|up,
 * 14: down) and biases (15: gate|up, 16: down) of the projection `which`.
 */
function expertBindings(first: (Binding | null)[], w: MoeExpertWeights, which: 'gate_up' | 'down'): (Binding | null)[] {
  const b: (Binding | null)[] = [...first, ...new Array<null>(Math.max(0, 16 - first.length)).fill(null)];
  if (w.gateUpScales) b[which === 'gate_up' ? 12 : 13] = which === 'gate_up' ? w.gateUpScales : w.downScales!;
  if (w.gateUpBias) b[which === 'gate_up' ? 14 : 15] = which === 'gate_up' ? w.gateUpBias : w.downBias!;
  while (b.length && b[b.length - 1] === null) b.pop();
  return b;
}

/**
 * Whether the decode kernels walk quantised expert rows by whole 4-word units (one scale per unit, as the
 * dense GEMV does) rather than by vec4s with each one's word and scale recomputed: on a CPU fallback
 * adapter, where that address arithmetic is the cost (with it, V2-Lite's q4 routed experts took 47–72%
 * less GPU time per decode step and 21–46% less in a 19-token prefill; docs/real-scale.md, `large` suite
 * with WEBMOE_LARGE_PROFILE=1). GPUs keep
 * the vec4 walk: neighbouring invocations read neighbouring words (coalesced), which a unit per
 * invocation would stride by 16 bytes.
 */
export function decodeUnitWalk(gpu: Gpu, format: MoeExpertWeights['format']): boolean {
  return gpu.adapter.isFallbackAdapter && (format === 'q8' || format === 'q4' || format === 'mxfp4');
}

function moeExpertsDecode(gpu: Gpu, rec: Recorder, a: MoeExpertsArgs) {
  const { T, K } = a;
  const { E, I, D } = a.experts;
  const sg = !a.noSubgroups && decodeSubgroups(gpu);
  const walk = { UNIT_WALK: (a.unitWalk ?? decodeUnitWalk(gpu, a.experts.format)) ? 1 : 0 };
  const wgUp = sg ? gpu.caps.subgroupMinSize : decodeWG(gpu, D), wgDown = sg ? gpu.caps.subgroupMinSize : decodeWG(gpu, I);
  if (!sg) checkWorkgroupStorage(gpu, 2 * 16 * Math.max(wgUp, wgDown), 'the MoE decode kernels');
  const h = gpu.temps.acquire(T * K * I * 4);
  const gu = ceilDiv(I, DECODE_ROWS);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'moe_experts', code: expertsShader(D, sg, a), entryPoint: sg ? 'decode_gate_up_subgroup' : 'decode_gate_up', constants: { WG: wgUp, ...walk, ...formatConstants(a) } }),
    bindings: expertBindings([a.x, a.experts.gateUp, a.ids, h], a.experts, 'gate_up'),
    uniforms: MOE_EXPERT_PARAMS.pack({ T, K, D, I, E, groups: gu, has_shared: 0, _p: 0 }),
    workgroups: gu * T * K,
    label: 'moe_decode_gate_up',
  });
  const gd = ceilDiv(D, DECODE_ROWS);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'moe_experts', code: expertsShader(I, sg, a), entryPoint: sg ? 'decode_down_subgroup' : 'decode_down', constants: { WG: wgDown, ...walk, ...formatConstants(a) } }),
    bindings: expertBindings([null, null, a.ids, null, h, a.experts.down, a.weights, a.shared ?? dummy(gpu, 'shared'), a.out], a.experts, 'down'),
    uniforms: MOE_EXPERT_PARAMS.pack({ T, K, D, I, E, groups: gd, has_shared: a.shared ? 1 : 0, _p: 0 }),
    workgroups: gd * T,
    label: 'moe_decode_down',
  });
}

/** Invocations per batched workgroup: one per reduction unit (q8/q4/mxfp4 with the unit walk) or vec4, 16..64. */
function batchedWG(gpu: Gpu, reduceLen: number, unitWalk: boolean, format: MoeExpertWeights['format']) {
  const perUnit = unitWalk ? (format === 'q8' ? 16 : 32) : reduceLen % 4 === 0 ? 4 : 1;
  const cap = Math.max(1, pow2Below(Math.min(64, gpu.caps.maxComputeInvocationsPerWorkgroup)));
  return Math.min(cap, Math.max(16, 2 ** Math.ceil(Math.log2(Math.max(1, Math.floor(reduceLen / perUnit))))));
}

/**
 * The batched path: sort the (token, slot) entries by expert (tiles of MOE_BATCH_ROWS rows), per tile
 * and 4 output rows one workgroup that decodes each weight once for the tile's tokens (gate|up, then
 * down into sorted rows), then the gather-combine with the routing weights and the shared expert.
 */
function moeExpertsBatched(gpu: Gpu, rec: Recorder, a: MoeExpertsArgs) {
  const { T, K } = a;
  const { E, I, D } = a.experts;
  const N = T * K;
  const unitWalk = a.unitWalk ?? decodeUnitWalk(gpu, a.experts.format);
  const walk = { UNIT_WALK: unitWalk ? 1 : 0 };
  // As the decode kernels: one subgroup per workgroup where there are subgroups (no barrier; on
  // SwiftShader the workgroup-memory variant was ~10x slower), else a workgroup-memory reduction.
  const sg = !a.noSubgroups && decodeSubgroups(gpu);
  const wgUp = sg ? gpu.caps.subgroupMinSize : batchedWG(gpu, D, unitWalk, a.experts.format);
  const wgDown = sg ? gpu.caps.subgroupMinSize : batchedWG(gpu, I, unitWalk, a.experts.format);
  if (!sg) checkWorkgroupStorage(gpu, 2 * MOE_BATCH_ROWS * 16 * Math.max(wgUp, wgDown), 'the MoE batched kernels');
  const { perm, inv, seg, h, y } = sortedExpertEntries(gpu, rec, { ids: a.ids, N, E, I, D, tileRows: MOE_BATCH_ROWS });
  const tiles = maxGroupedTiles(N, E, MOE_BATCH_ROWS);
  const gu = ceilDiv(I, DECODE_ROWS), gd = ceilDiv(D, DECODE_ROWS);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'moe_experts', code: expertsShader(D, sg, a), entryPoint: sg ? 'batched_gate_up_subgroup' : 'batched_gate_up', constants: { WG: wgUp, ...walk, ...formatConstants(a) } }),
    bindings: expertBindings([a.x, a.experts.gateUp, a.ids, h, null, null, null, null, null, perm, seg], a.experts, 'gate_up'),
    uniforms: MOE_EXPERT_PARAMS.pack({ T, K, D, I, E, groups: gu, has_shared: 0, _p: 0 }),
    workgroups: tiles * gu,
    label: 'moe_batched_gate_up',
  });
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'moe_experts', code: expertsShader(I, sg, a), entryPoint: sg ? 'batched_down_subgroup' : 'batched_down', constants: { WG: wgDown, ...walk, ...formatConstants(a) } }),
    bindings: expertBindings([null, null, null, null, h, a.experts.down, null, null, null, null, seg, y], a.experts, 'down'),
    uniforms: MOE_EXPERT_PARAMS.pack({ T, K, D, I, E, groups: gd, has_shared: 0, _p: 0 }),
    workgroups: tiles * gd,
    label: 'moe_batched_down',
  });
  moeCombine(gpu, rec, { y, inv, weights: a.weights, shared: a.shared, out: a.out, T, K, D });
}

/** Upper bound of Σ_e ⌈count_e / BM⌉ over any routing of N entries to E experts. */
export function maxGroupedTiles(N: number, E: number, BM = MOE_TILE_ROWS): number {
  return Math.floor((N + Math.min(E, N) * (BM - 1)) / BM);
}

export interface MoeSortArgs {
  /** u32 [N] expert ids (N = T·K entries, entry t·K + j) */
  ids: Binding;
  N: number;
  E: number;
  /** u32 [N] out: sorted row → entry */
  perm: Binding;
  /** u32 [N] out: entry → sorted row */
  inv: Binding;
  /** u32 [2(E+1)] out: [offsets | tile_start] */
  seg: Binding;
  /** rows per tile for tile_start (default MOE_TILE_ROWS) */
  tileRows?: number;
}

function sortWG(gpu: Gpu) { return Math.max(1, pow2Below(Math.min(256, gpu.caps.maxComputeInvocationsPerWorkgroup))); }

/** The grouped path's permutation (one workgroup): stable sort of entries by expert. */
export function moeSort(gpu: Gpu, rec: Recorder, a: MoeSortArgs): void {
  if (!a.N) return;
  need(a.ids, a.N * 4, 'moeSort ids [N]');
  need(a.perm, a.N * 4, 'moeSort perm [N]');
  need(a.inv, a.N * 4, 'moeSort inv [N]');
  need(a.seg, 2 * (a.E + 1) * 4, 'moeSort seg [2(E+1)]');
  const WG = sortWG(gpu);
  checkWorkgroupStorage(gpu, (2 * a.E + 3 * WG) * 4, `the MoE token sort for ${a.E} experts`);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'moe_dispatch', code: dispatchCode, entryPoint: 'sort', constants: { WG, MAX_E: a.E } }),
    bindings: [a.ids, a.perm, a.inv, a.seg],
    uniforms: MOE_DISPATCH_PARAMS.pack({ a: a.N, b: a.E, c: a.tileRows ?? MOE_TILE_ROWS, d: 0 }),
    workgroups: 1,
    label: 'moe_sort',
  });
}

/**
 * The scratch every sorted-entries expert pass (grouped, batched, GGUF grouped) starts from: the step's
 * N (token, slot) entries sorted by expert in tiles of `tileRows` (moeSort: perm, inv, seg) and the
 * h [N, I] / y [N, D] intermediates, all from the step's temporaries.
 */
export function sortedExpertEntries(gpu: Gpu, rec: Recorder, a: { ids: Binding; N: number; E: number; I: number; D: number; tileRows?: number }) {
  const perm = gpu.temps.acquire(a.N * 4), inv = gpu.temps.acquire(a.N * 4);
  const seg = gpu.temps.acquire(2 * (a.E + 1) * 4);
  const h = gpu.temps.acquire(a.N * a.I * 4), y = gpu.temps.acquire(a.N * a.D * 4);
  moeSort(gpu, rec, { ids: a.ids, N: a.N, E: a.E, perm, inv, seg, tileRows: a.tileRows });
  return { perm, inv, seg, h, y };
}

function moeExpertsGrouped(gpu: Gpu, rec: Recorder, a: MoeExpertsArgs) {
  const { T, K } = a;
  const { E, I, D } = a.experts;
  const N = T * K;
  checkWorkgroupStorage(gpu, 3 * MOE_TILE_ROWS * 32 * 4 + MOE_TILE_ROWS * 4, 'the MoE grouped GEMM');
  const { perm, inv, seg, h, y } = sortedExpertEntries(gpu, rec, { ids: a.ids, N, E, I, D });
  const tiles = maxGroupedTiles(N, E);
  const tnI = ceilDiv(I, TILE_COLS), tnD = ceilDiv(D, TILE_COLS);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'moe_experts', code: expertsShader(D, false, a), entryPoint: 'grouped_gate_up', constants: formatConstants(a) }),
    bindings: expertBindings([a.x, a.experts.gateUp, null, h, null, null, null, null, null, perm, seg], a.experts, 'gate_up'),
    uniforms: MOE_EXPERT_PARAMS.pack({ T, K, D, I, E, groups: tnI, has_shared: 0, _p: 0 }),
    workgroups: tiles * tnI,
    label: 'moe_grouped_gate_up',
  });
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'moe_experts', code: expertsShader(I, false, a), entryPoint: 'grouped_down', constants: formatConstants(a) }),
    bindings: expertBindings([null, null, null, null, h, a.experts.down, null, null, null, null, seg, y], a.experts, 'down'),
    uniforms: MOE_EXPERT_PARAMS.pack({ T, K, D, I, E, groups: tnD, has_shared: 0, _p: 0 }),
    workgroups: tiles * tnD,
    label: 'moe_grouped_down',
  });
  moeCombine(gpu, rec, { y, inv, weights: a.weights, shared: a.shared, out: a.out, T, K, D });
}

/** out[t, d] = Σ_j w[t·K+j]·y[inv[t·K+j], d] + shared[t, d]: the gather back to token order. */
export function moeCombine(gpu: Gpu, rec: Recorder, a: { y: Binding; inv: Binding; weights: Binding; shared: Binding | null; out: Binding; T: number; K: number; D: number }): void {
  const WG = sortWG(gpu);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'moe_dispatch', code: dispatchCode, entryPoint: 'combine', constants: { WG } }),
    bindings: [null, null, a.inv, null, a.y, a.weights, a.shared ?? dummy(gpu, 'shared'), a.out],
    uniforms: MOE_DISPATCH_PARAMS.pack({ a: a.T, b: a.K, c: a.D, d: a.shared ? 1 : 0 }),
    workgroups: ceilDiv(a.T * a.D, WG),
    label: 'moe_combine',
  });
}
