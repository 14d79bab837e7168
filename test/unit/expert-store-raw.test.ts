/**
 * Expert offload's host store (model/expert-cache.ts HostExpertStore) taking the checkpoint's bytes
 * (sink.putRaw, packed at once by the WebAssembly packer) holds exactly the packed experts it holds when
 * fed f32 copies (sink.put → packExpert): byte for byte, q4 and q8, BF16 / F16 sources, with experts it
 * does not keep skipped, an expert whose matrices arrive half raw and half f32, and the NaN count
 * reported back; FP8 bytes with block scales (putFp8) likewise. Declines (false) without a packer and for
 * 16-bit formats.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { HostExpertStore } from '../../src/model/expert-cache';
import { HostPacker } from '../../src/kernels/wasm/host-pack';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/util/half';
import { mulberry32, randomNormal } from '../../src/util/random';
import { toFloat32 } from '../../src/formats/safetensors';

let packer: HostPacker;
beforeAll(async () => { packer = (await HostPacker.load())!; expect(packer).toBeTruthy(); });

const PROJS = ['gate', 'up', 'down'] as const;

describe('HostExpertStore sink: putRaw (WASM packer) equals put (f32 → packExpert)', () => {
  for (const [source, format] of [['bf16', 'q4'], ['f16', 'q8'], ['bf16', 'q8']] as const) {
    it(`${source} bytes → ${format}`, () => {
      const E = 6, D = 64, I = 48;
      const enc = (x: Float32Array) => {
        const h = Uint16Array.from(x, source === 'bf16' ? f32ToBf16 : f32ToF16);
        return { bytes: new Uint8Array(h.buffer), values: Float32Array.from(h, source === 'bf16' ? bf16ToF32 : f16ToF32) };
      };
      const ex = Array.from({ length: E }, (_, e) => ({ gate: enc(randomNormal(I * D, 7 * e + 1, 0.3)), up: enc(randomNormal(I * D, 7 * e + 2, 0.3)), down: enc(randomNormal(D * I, 7 * e + 3, 0.3)) }));
      // A NaN in expert 2's up rows (the packer counts it).
      ex[2].up.bytes[1] = 0x7f; ex[2].up.bytes[0] = 0xff; ex[2].up.values[0] = NaN;
      const keep = (e: number) => e !== 4;
      const viaPut = new HostExpertStore(E, D, I, format, keep), viaRaw = new HostExpertStore(E, D, I, format, keep, packer);
      const a = viaPut.sink(), b = viaRaw.sink();
      let nonFinite = 0;
      for (let e = 0; e < E; e++) {
        for (const p of PROJS) {
          a.put(e, p, ex[e][p].values);
          // Expert 5: its down arrives as f32 (put) after gate and up came raw.
          if (e === 5 && p === 'down') { b.put(e, p, ex[e][p].values); continue; }
          const raw = { source, bytes: ex[e][p].bytes, nonFinite: undefined as number | undefined };
          expect(b.putRaw!(e, p, raw)).toBe(true);
          nonFinite += raw.nonFinite ?? 0;
          if (!keep(e)) expect(raw.nonFinite, 'an expert not kept is not converted').toBeUndefined();
        }
      }
      expect(nonFinite).toBe(1);
      expect(b.arrived).toBe(a.arrived);
      expect(viaRaw.bytes).toBe(viaPut.bytes);
      for (let e = 0; e < E; e++) {
        const x = viaPut.packed[e], y = viaRaw.packed[e];
        if (!keep(e)) { expect(x).toBeNull(); expect(y).toBeNull(); continue; }
        for (const k of ['gateUp', 'down', 'gateUpScales', 'downScales'] as const) expect(Buffer.from(y![k]!).equals(Buffer.from(x![k]!)), `expert ${e} ${k}`).toBe(true);
        expect(y!.bytes).toBe(x!.bytes);
      }
    });
  }

  it('putFp8: FP8 bytes with 128×128 block scales, packed at once, equal put of their dequantised values', () => {
    const E = 3, D = 160, I = 136; // partial 128-blocks both ways
    const r = mulberry32(41);
    const mk = (rows: number, cols: number) => {
      const bytes = Uint8Array.from({ length: rows * cols }, () => Math.floor(r() * 256));
      const scaleInv = Float32Array.from({ length: Math.ceil(rows / 128) * Math.ceil(cols / 128) }, () => 2 ** (Math.floor(r() * 12) - 14));
      return { bytes, scaleInv, values: toFloat32('F8_E4M3', bytes, { scaleInv, shape: [rows, cols] }) };
    };
    const ex = Array.from({ length: E }, () => ({ gate: mk(I, D), up: mk(I, D), down: mk(D, I) }));
    const viaPut = new HostExpertStore(E, D, I, 'q8', () => true), viaRaw = new HostExpertStore(E, D, I, 'q8', () => true, packer);
    const a = viaPut.sink(), b = viaRaw.sink();
    for (let e = 0; e < E; e++) for (const p of PROJS) {
      a.put(e, p, ex[e][p].values);
      expect(b.putFp8!(e, p, ex[e][p].bytes, ex[e][p].scaleInv)).toBe(true);
    }
    for (let e = 0; e < E; e++) for (const k of ['gateUp', 'down', 'gateUpScales', 'downScales'] as const) {
      expect(Buffer.from(viaRaw.packed[e]![k]!).equals(Buffer.from(viaPut.packed[e]![k]!)), `expert ${e} ${k}`).toBe(true);
    }
    // A non-finite scale goes to put (the packer's shortcut for the group maximum assumes finite scales).
    expect(b.putFp8!(0, 'gate', ex[0].gate.bytes, Float32Array.from(ex[0].gate.scaleInv, () => Infinity))).toBe(false);
  });

  it('declines without a packer and for 16-bit stores', () => {
    const bytes = new Uint8Array(8 * 32 * 2);
    expect(new HostExpertStore(2, 32, 8, 'q4', () => true).sink().putRaw!(0, 'gate', { source: 'bf16', bytes })).toBe(false);
    expect(new HostExpertStore(2, 32, 8, 'f16', () => true, packer).sink().putRaw!(0, 'gate', { source: 'bf16', bytes })).toBe(false);
    // (q8/q4 stores need I % 4 = 0, so I·groups is even and gate and up never share a scale word.)
    expect(new HostExpertStore(2, 96, 12, 'q4', () => true, packer).sink().putRaw!(0, 'gate', { source: 'bf16', bytes: new Uint8Array(12 * 96 * 2) })).toBe(true);
  });
});
