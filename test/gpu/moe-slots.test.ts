/**
 * Expert-cache slots (kernels/moe-slots.ts): slot_remap against its CPU reference on ragged entry
 * ranges (expert ids past the table included), packExpert's bytes equal to what uploadExperts stores for
 * that expert, and an experts pass over slots equal to the same pass over the full stack.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { poisoned, testGpu } from '../helpers/gpu';
import { mulberry32, randomNormal } from '../../src/util/random';
import { destroyExperts, moeExperts, uploadExperts } from '../../src/kernels/moe';
import { NO_SLOT, createExpertSlots, destroyExpertSlots, moeSlotRemap, packExpert, slotBytes, writeExpertSlot } from '../../src/kernels/moe-slots';
import { slotRemapRef } from '../../src/kernels/moe-slots.ref';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

const experts = (E: number, D: number, I: number, seed: number) => Array.from({ length: E }, (_, e) => ({
  gate: randomNormal(I * D, seed + 3 * e, 0.3), up: randomNormal(I * D, seed + 3 * e + 1, 0.3), down: randomNormal(D * I, seed + 3 * e + 2, 0.3),
}));

describe('expert-cache slots', () => {
  // (entries in the routing, first, N, experts, slots)
  it.each([[1, 0, 1, 5, 2], [97, 13, 61, 37, 9], [1000, 0, 1000, 64, 23], [257, 255, 2, 16, 16]])('slot_remap: %i entries, [%i, +%i), E=%i, %i slots', async (total, first, N, E, C) => {
    const r = mulberry32(total + E);
    // ids include E (outside the table) to check the bound.
    const ids = Uint32Array.from({ length: total }, () => Math.floor(r() * (E + 1)));
    const w = Float32Array.from({ length: total }, () => r());
    const slotOf = new Uint32Array(E).fill(NO_SLOT);
    const perm = [...Array(E).keys()].sort(() => r() - 0.5);
    perm.slice(0, C).forEach((e, s) => { slotOf[e] = s; });
    const bi = gpu.buffers.upload('ids', ids), bw = gpu.buffers.upload('w', w), bt = gpu.buffers.upload('table', slotOf);
    const oi = gpu.buffers.create('oi', N * 4), ow = poisoned(gpu, 'ow', N);
    gpu.buffers.fill(oi, 0xdeadbeef, false);
    const [gi, gw] = await gpu.checked(async () => {
      const rec = gpu.recorder('slot remap');
      moeSlotRemap(gpu, rec, { ids: bi, weights: bw, first, N, slotTable: bt, E, idsOut: oi, weightsOut: ow });
      rec.submit();
      return Promise.all([gpu.buffers.readU32(oi, 0, N), gpu.buffers.readF32(ow, 0, N)]);
    });
    const ref = slotRemapRef(ids, w, first, N, slotOf);
    expect(Array.from(gi)).toEqual(Array.from(ref.ids));
    expect(Array.from(gw)).toEqual(Array.from(ref.weights));
    for (const b of [bi, bw, bt, oi, ow]) gpu.buffers.destroy(b);
  });

  it.each([['f32', 12, 8], ['f16', 16, 12], ['bf16', 16, 12], ['q8', 64, 32], ['q4', 64, 96]] as const)('%s (D=%i, I=%i): packed experts in slots run like the full stack, bit for bit', async (format, D, I) => {
    const E = 7, K = 3, T = 5, C = 4;
    const xs = experts(E, D, I, 11);
    const fullStack = uploadExperts(gpu, 'full', xs, D, I, format);
    const slots = createExpertSlots(gpu, 'slots', C, D, I, format);
    // Expert e's packed bytes are exactly the full stack's bytes at e's offset.
    const s = slotBytes(format, D, I);
    const e = 5, packed = packExpert(xs[e], D, I, format);
    const stackBytes = new Uint8Array(await gpu.buffers.read(fullStack.gateUp, e * s.gateUp, s.gateUp));
    expect(Array.from(packed.gateUp)).toEqual(Array.from(stackBytes));
    // Tokens routed among experts {1, 3, 5, 6}, put into slots in another order.
    const r = mulberry32(3);
    const pool = [1, 3, 5, 6];
    const ids = new Uint32Array(T * K), w = new Float32Array(T * K);
    for (let t = 0; t < T; t++) {
      const pick = [...pool].sort(() => r() - 0.5).slice(0, K);
      pick.forEach((x, j) => { ids[t * K + j] = x; w[t * K + j] = 0.3 + r(); });
    }
    const order = [6, 1, 5, 3];
    const table = new Uint32Array(E).fill(NO_SLOT);
    order.forEach((x, slot) => { writeExpertSlot(gpu, slots, slot, packExpert(xs[x], D, I, format)); table[x] = slot; });
    const x = gpu.buffers.upload('x', randomNormal(T * D, 9, 1));
    const bi = gpu.buffers.upload('ids', ids), bw = gpu.buffers.upload('w', w), bt = gpu.buffers.upload('table', table);
    const si = gpu.buffers.create('si', T * K * 4), sw = gpu.buffers.create('sw', T * K * 4);
    for (const mode of ['decode', 'grouped'] as const) {
      const a = poisoned(gpu, 'a', T * D), b = poisoned(gpu, 'b', T * D);
      const [want, got] = await gpu.checked(async () => {
        const rec = gpu.recorder('slots');
        moeExperts(gpu, rec, { x, T, experts: fullStack, ids: bi, weights: bw, K, shared: null, out: a, mode });
        moeSlotRemap(gpu, rec, { ids: bi, weights: bw, first: 0, N: T * K, slotTable: bt, E, idsOut: si, weightsOut: sw });
        moeExperts(gpu, rec, { x, T, experts: slots, ids: si, weights: sw, K, shared: null, out: b, mode });
        rec.submit();
        const out = await Promise.all([gpu.buffers.readF32(a), gpu.buffers.readF32(b)]);
        gpu.temps.releaseAll();
        return out;
      });
      expect(want.every(Number.isFinite)).toBe(true);
      expect(Array.from(got), `${format} ${mode}`).toEqual(Array.from(want));
      gpu.buffers.destroy(a);
      gpu.buffers.destroy(b);
    }
    for (const buf of [x, bi, bw, bt, si, sw]) gpu.buffers.destroy(buf);
    destroyExperts(gpu, fullStack);
    destroyExpertSlots(gpu, slots);
  });
});
