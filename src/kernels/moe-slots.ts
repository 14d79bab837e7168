import dispatchCode from '../../shaders/moe_dispatch.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { ceilDiv } from '../gpu/dispatch';
import { ShapeError } from '../errors';
import { MX_BLOCK, deinterleaveGateUp, packWeight, rowLayout, type GptOssExpertTensors } from './weight-pack';
import { f32ArrayToBf16, f32ArrayToF16 } from '../util/half';
import { MOE_DISPATCH_PARAMS, destroyExperts, type MoeExpertWeights, type PackableExpertFormat } from './moe';

/**
 * Routed experts in slots: a stack of C experts (the layout of uploadExperts with E = C) whose slot s
 * holds whichever expert the caller put there, the packed bytes of one expert as the stack stores them
 * (so a cold expert can wait on the host, or be re-packed from the checkpoint, ready to upload), and the
 * remap of a routing's expert ids to slots through a slot table on the GPU. The expert kernels then run
 * unchanged on the slot stack with the remapped ids.
 */

/** One expert in its stack's storage format: what writeExpertSlot uploads. */
export interface PackedExpert {
  /** [2I, D] gate rows then up rows, packed. */
  gateUp: Uint8Array;
  /** [D, I] packed. */
  down: Uint8Array;
  /** q8/q4: f16 group scales of gateUp and down; mxfp4: E8M0 scale bytes (one a row and block). */
  gateUpScales?: Uint8Array;
  downScales?: Uint8Array;
  /** GPT-OSS: f32 gate|up bias [2I] (gate biases, then up) and down bias [D], as bytes. */
  gateUpBias?: Uint8Array;
  downBias?: Uint8Array;
  bytes: number;
}

/** Expert offload packs experts on the host in webmoe's packed formats, or takes GPT-OSS's MXFP4 blocks as they are (packMxfp4Experts). */
type Format = MoeExpertWeights['format'];

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Bytes of one expert's buffers in a stack: gate|up, down and their f16 scales (q8/q4). */
export function slotBytes(format: Format, D: number, I: number, groupSize = 32): { gateUp: number; down: number; gateUpScales: number; downScales: number; gateUpBias: number; downBias: number } {
  if (format === 'mxfp4') {
    // uploadMxfp4ExpertGroups' per-expert share: block rows, one E8M0 byte a row and block, f32 biases.
    return { gateUp: 2 * I * rowLayout('mxfp4', D).rowWords * 4, down: D * rowLayout('mxfp4', I).rowWords * 4, gateUpScales: 2 * I * Math.ceil(D / MX_BLOCK), downScales: D * Math.ceil(I / MX_BLOCK), gateUpBias: 2 * I * 4, downBias: D * 4 };
  }
  const rowBytes = (K: number) => (format === 'f32' ? 4 * K : format === 'f16' || format === 'bf16' ? 2 * K : rowLayout(format, K).rowWords * 4);
  const quant = format === 'q8' || format === 'q4';
  return {
    gateUp: 2 * I * rowBytes(D), down: D * rowBytes(I),
    gateUpScales: quant ? 2 * I * Math.ceil(D / groupSize) * 2 : 0, downScales: quant ? D * Math.ceil(I / groupSize) * 2 : 0, gateUpBias: 0, downBias: 0,
  };
}

/**
 * GPT-OSS: a layer's MXFP4 experts (HF tensors, gate/up rows interleaved) as one PackedExpert each, in
 * the bytes uploadMxfp4ExpertGroups gives that expert in a stack (rows de-interleaved, blocks and scale
 * bytes as they are, the biases f32): a slot holding it computes what full residency computes.
 */
export function packMxfp4Experts(t: GptOssExpertTensors, E: number, D: number, I: number): PackedExpert[] {
  if (D % 4 || I % 4) throw new ShapeError(`packMxfp4Experts: D and I must be multiples of 4, got D=${D} I=${I}`);
  const gu = deinterleaveGateUp(t, E, I, D);
  const s = slotBytes('mxfp4', D, I);
  if (t.downBlocks.length !== E * s.down || t.downScales.length !== E * s.downScales || t.downBias.length !== E * D) throw new ShapeError(`packMxfp4Experts: down tensors want ${E * s.down}, ${E * s.downScales}, ${E * D} elements; got ${t.downBlocks.length}, ${t.downScales.length}, ${t.downBias.length}`);
  return Array.from({ length: E }, (_, e) => {
    const x: PackedExpert = {
      gateUp: gu.blocks.slice(e * s.gateUp, (e + 1) * s.gateUp), down: t.downBlocks.slice(e * s.down, (e + 1) * s.down),
      gateUpScales: gu.scales.slice(e * s.gateUpScales, (e + 1) * s.gateUpScales), downScales: t.downScales.slice(e * s.downScales, (e + 1) * s.downScales),
      gateUpBias: bytesOf(gu.bias.slice(e * 2 * I, (e + 1) * 2 * I)), downBias: bytesOf(t.downBias.slice(e * D, (e + 1) * D)), bytes: 0,
    };
    x.bytes = s.gateUp + s.down + s.gateUpScales + s.downScales + s.gateUpBias + s.downBias;
    return x;
  });
}

/**
 * Packs one expert (HF layouts: gate/up [I, D], down [D, I]) exactly as uploadExperts stores it in a
 * stack: the same bytes a full-residency load puts at that expert's offset.
 */
export function packExpert(x: { gate: Float32Array; up: Float32Array; down: Float32Array }, D: number, I: number, format: PackableExpertFormat, groupSize: 32 | 128 = 32): PackedExpert {
  if (x.gate.length !== I * D || x.up.length !== I * D || x.down.length !== D * I) throw new ShapeError(`packExpert: gate ${x.gate.length}, up ${x.up.length}, down ${x.down.length}; want ${I}×${D} each`);
  if (format !== 'f32' && (D % 4 || I % 4)) throw new ShapeError(`packExpert: ${format} experts need D and I multiples of 4, got D=${D} I=${I}`);
  const gu = new Float32Array(2 * I * D);
  gu.set(x.gate, 0);
  gu.set(x.up, I * D);
  if (format === 'f32') return { gateUp: bytesOf(gu), down: bytesOf(x.down.slice()), bytes: gu.byteLength + x.down.byteLength };
  if (format === 'f16' || format === 'bf16') {
    const half = format === 'f16' ? f32ArrayToF16 : f32ArrayToBf16;
    const a = bytesOf(half(gu)), b = bytesOf(half(x.down));
    return { gateUp: a, down: b, bytes: a.byteLength + b.byteLength };
  }
  const pg = packWeight(gu, 2 * I, D, format, { groupSize, scaleDtype: 'f16' });
  const pd = packWeight(x.down, D, I, format, { groupSize, scaleDtype: 'f16' });
  const s = slotBytes(format, D, I, groupSize);
  // packWeight's scale arrays are whole words; the stack holds exactly rows·groups f16 values per expert.
  const out: PackedExpert = {
    gateUp: bytesOf(pg.data), down: bytesOf(pd.data),
    gateUpScales: bytesOf(pg.scales!).slice(0, s.gateUpScales), downScales: bytesOf(pd.scales!).slice(0, s.downScales), bytes: 0,
  };
  out.bytes = out.gateUp.byteLength + out.down.byteLength + out.gateUpScales!.byteLength + out.downScales!.byteLength;
  return out;
}

/** A stack of `slots` experts (uploadExperts' layout), its contents written slot by slot with writeExpertSlot. */
export function createExpertSlots(gpu: Gpu, label: string, slots: number, D: number, I: number, format: Format, groupSize: 32 | 128 = 32): MoeExpertWeights {
  if (!Number.isInteger(slots) || slots < 1) throw new ShapeError(`createExpertSlots ${label}: need at least one slot, got ${slots}`);
  const s = slotBytes(format, D, I, groupSize);
  const scaled = format === 'q8' || format === 'q4' || format === 'mxfp4';
  const tag = format === 'f32' ? '' : ` ${format}`;
  const gateUp = gpu.buffers.create(`${label}.slots.gate_up[${slots},${2 * I},${D}]${tag}`, slots * s.gateUp);
  const down = gpu.buffers.create(`${label}.slots.down[${slots},${D},${I}]${tag}`, slots * s.down);
  const gateUpScales = scaled ? gpu.buffers.create(`${label}.slots.gate_up.scales`, Math.max(16, slots * s.gateUpScales)) : undefined;
  const downScales = scaled ? gpu.buffers.create(`${label}.slots.down.scales`, Math.max(16, slots * s.downScales)) : undefined;
  const gateUpBias = s.gateUpBias ? gpu.buffers.create(`${label}.slots.gate_up.bias`, slots * s.gateUpBias) : undefined;
  const downBias = s.downBias ? gpu.buffers.create(`${label}.slots.down.bias`, slots * s.downBias) : undefined;
  const group = format === 'mxfp4' ? MX_BLOCK : scaled ? groupSize : undefined;
  return { format, gateUp, down, gateUpScales, downScales, gateUpBias, downBias, groupSize: group, E: slots, I, D, bytes: [gateUp, down, gateUpScales, downScales, gateUpBias, downBias].reduce((a, b) => a + (b?.size ?? 0), 0) };
}

/** Queues the upload of one packed expert into `slot` (queue order: after every step submitted before). Returns the bytes written. */
export function writeExpertSlot(gpu: Gpu, stack: MoeExpertWeights, slot: number, x: PackedExpert): number {
  if (!Number.isInteger(slot) || slot < 0 || slot >= stack.E) throw new ShapeError(`writeExpertSlot: slot ${slot} outside 0..${stack.E - 1}`);
  const s = slotBytes(stack.format, stack.D, stack.I, stack.groupSize ?? 32);
  if (x.gateUp.byteLength !== s.gateUp || x.down.byteLength !== s.down) throw new ShapeError(`writeExpertSlot: packed expert has ${x.gateUp.byteLength} + ${x.down.byteLength} bytes, the stack's slots ${s.gateUp} + ${s.down}`);
  gpu.buffers.write(stack.gateUp, x.gateUp, slot * s.gateUp);
  gpu.buffers.write(stack.down, x.down, slot * s.down);
  if (stack.gateUpScales) gpu.buffers.write(stack.gateUpScales, x.gateUpScales!, slot * s.gateUpScales);
  if (stack.downScales) gpu.buffers.write(stack.downScales, x.downScales!, slot * s.downScales);
  if (stack.gateUpBias) gpu.buffers.write(stack.gateUpBias, x.gateUpBias!, slot * s.gateUpBias);
  if (stack.downBias) gpu.buffers.write(stack.downBias, x.downBias!, slot * s.downBias);
  return x.bytes;
}

export const destroyExpertSlots = destroyExperts;

export const NO_SLOT = 0xffffffff;

/**
 * slot_remap: entries [first, first + N) of a routing (ids, weights [T·K]) → slot ids and weights
 * [N] for an experts pass over the slot stack; an expert without a slot (table entry NO_SLOT) → slot 0
 * with weight 0.
 */
export function moeSlotRemap(gpu: Gpu, rec: Recorder, a: { ids: Binding; weights: Binding; first: number; N: number; slotTable: Binding; E: number; idsOut: Binding; weightsOut: Binding }): void {
  if (!Number.isInteger(a.N) || a.N < 0 || !Number.isInteger(a.first) || a.first < 0) throw new ShapeError(`moeSlotRemap: bad first=${a.first} N=${a.N}`);
  if (!a.N) return;
  const WG = Math.max(1, 2 ** Math.floor(Math.log2(Math.min(256, gpu.caps.maxComputeInvocationsPerWorkgroup))));
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'moe_dispatch', code: dispatchCode, entryPoint: 'slot_remap', constants: { WG } }),
    bindings: [a.ids, a.idsOut, null, a.slotTable, null, a.weights, null, a.weightsOut],
    uniforms: MOE_DISPATCH_PARAMS.pack({ a: a.N, b: a.first, c: a.E, d: 0 }),
    workgroups: ceilDiv(a.N, WG),
    label: 'moe_slot_remap',
  });
}
