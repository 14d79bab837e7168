import { describe, expect, it } from 'vitest';
import { FormatError, ShapeError } from '../../src/errors';
import { DECODABLE, dequantize, ggmlTypeByName, packScaleMinK4, quantize, scaleMinK4, type DecodableType } from '../../src/formats/gguf-blocks';
import { f16ToF32 } from '../../src/util/half';
import { mulberry32, randomNormal } from '../../src/util/random';

// Known byte vectors, built by hand from ggml's block definitions (ggml-common.h), with small exact
// numbers so every expected weight is exact in f32.
const F16_HALF = [0x00, 0x38]; // 0.5
const F16_ONE = [0x00, 0x3c]; // 1.0
const F16_TWO = [0x00, 0x40]; // 2.0

describe('GGUF blocks: hand-built byte vectors', () => {
  it('Q8_0: half d, then 32 int8', () => {
    const b = new Uint8Array(34);
    b.set(F16_HALF, 0);
    for (let i = 0; i < 32; i++) b[2 + i] = (i * 8 - 128) & 255; // −128, −120, …, 120
    const y = dequantize('Q8_0', b, 32);
    for (let i = 0; i < 32; i++) expect(y[i]).toBe(0.5 * (i * 8 - 128));
  });

  it('Q4_0: half d, 16 bytes; weight i is the low nibble of byte i, weight i + 16 its high nibble, minus 8', () => {
    const b = new Uint8Array(18);
    b.set(F16_TWO, 0);
    for (let i = 0; i < 16; i++) b[2 + i] = (i & 15) | ((15 - i) << 4);
    const y = dequantize('Q4_0', b, 32);
    for (let i = 0; i < 16; i++) {
      expect(y[i]).toBe(2 * (i - 8));
      expect(y[i + 16]).toBe(2 * (15 - i - 8));
    }
  });

  // Sub-block scales and mins (6 bits each) of the K-quant vectors.
  const LS = [1, 2, 3, 4, 33, 34, 35, 63];
  const LM = [0, 1, 2, 3, 16, 17, 48, 63];
  /** The 12 scale bytes written out field by field (bytes 0–3: scale j | top bits of scale j+4; 4–7: min j | top bits of min j+4; 8–11: low nibbles of scale / min j+4). */
  function k4ScaleBytes(): number[] {
    const s: number[] = [];
    for (let j = 0; j < 4; j++) s.push(LS[j] | ((LS[j + 4] >> 4) << 6));
    for (let j = 0; j < 4; j++) s.push(LM[j] | ((LM[j + 4] >> 4) << 6));
    for (let j = 0; j < 4; j++) s.push((LS[j + 4] & 15) | ((LM[j + 4] & 15) << 4));
    return s;
  }

  it('K-quant 6-bit scale packing (get_scale_min_k4) both ways', () => {
    const bytes = Uint8Array.from(k4ScaleBytes());
    for (let j = 0; j < 8; j++) expect(scaleMinK4(j, bytes)).toEqual([LS[j], LM[j]]);
    const packed = new Uint8Array(12);
    packScaleMinK4(LS, LM, packed);
    expect([...packed]).toEqual([...bytes]);
  });

  // Codes of weight i of a 256-weight block: a fixed pattern covering the whole range.
  const code = (i: number, bits: number) => (i * 7 + (i >> 5)) % (1 << bits);

  it('Q4_K: half d, half dmin, 12 scale bytes, 128 bytes of nibbles (64-weight chunks: low nibbles = first 32, high = next 32)', () => {
    const b = new Uint8Array(144);
    b.set(F16_ONE, 0);
    b.set(F16_HALF, 2);
    b.set(k4ScaleBytes(), 4);
    for (let c = 0; c < 4; c++) for (let l = 0; l < 32; l++) b[16 + 32 * c + l] = code(64 * c + l, 4) | (code(64 * c + 32 + l, 4) << 4);
    const y = dequantize('Q4_K', b, 256);
    for (let i = 0; i < 256; i++) {
      const j = i >> 5; // sub-block of 32
      expect(y[i], `w${i}`).toBe(1 * LS[j] * code(i, 4) - 0.5 * LM[j]);
    }
  });

  it('Q5_K: as Q4_K plus qh[32]: bit 2c of qh[l] is the 5th bit of weight 64c + l, bit 2c + 1 that of 64c + 32 + l', () => {
    const b = new Uint8Array(176);
    b.set(F16_ONE, 0);
    b.set(F16_HALF, 2);
    b.set(k4ScaleBytes(), 4);
    for (let c = 0; c < 4; c++) {
      for (let l = 0; l < 32; l++) {
        const a = code(64 * c + l, 5), z = code(64 * c + 32 + l, 5);
        b[48 + 32 * c + l] = (a & 15) | ((z & 15) << 4);
        b[16 + l] |= ((a >> 4) << (2 * c)) | ((z >> 4) << (2 * c + 1));
      }
    }
    const y = dequantize('Q5_K', b, 256);
    for (let i = 0; i < 256; i++) expect(y[i], `w${i}`).toBe(LS[i >> 5] * code(i, 5) - 0.5 * LM[i >> 5]);
  });

  it('Q6_K: ql[128], qh[64], int8 scales[16], half d; 6-bit codes minus 32, one scale per 16 weights', () => {
    const b = new Uint8Array(210);
    const SC = Array.from({ length: 16 }, (_, j) => (j % 2 ? -1 : 1) * (j * 8 + 1)); // ±1 … ±121
    b.set(SC.map((s) => s & 255), 192);
    b.set(F16_HALF, 208);
    // half h (128 weights): ql[64h + l] = low nibbles of weights 128h + l (bits 0–3) and + 64 (bits 4–7),
    // ql[64h + 32 + l] those of + 32 and + 96; qh[32h + l] the top 2 bits of + 0, + 32, + 64, + 96.
    for (let h = 0; h < 2; h++) {
      for (let l = 0; l < 32; l++) {
        const q = [0, 32, 64, 96].map((k) => code(128 * h + l + k, 6));
        b[64 * h + l] = (q[0] & 15) | ((q[2] & 15) << 4);
        b[64 * h + 32 + l] = (q[1] & 15) | ((q[3] & 15) << 4);
        b[128 + 32 * h + l] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
      }
    }
    const y = dequantize('Q6_K', b, 256);
    for (let i = 0; i < 256; i++) expect(y[i], `w${i}`).toBe(0.5 * SC[i >> 4] * (code(i, 6) - 32));
  });

  it('F16 / BF16 / F32 are plain little-endian scalars', () => {
    expect([...dequantize('F16', Uint8Array.from([0x00, 0x3c, 0x00, 0xc0]), 2)]).toEqual([1, -2]);
    expect([...dequantize('BF16', Uint8Array.from([0x80, 0x3f, 0x40, 0xc0]), 2)]).toEqual([1, -3]);
    expect([...dequantize('F32', Uint8Array.from([0, 0, 0x80, 0x3f]), 1)]).toEqual([1]);
  });
});

/** ‖a − b‖ / ‖b‖ */
function relRms(a: Float32Array, b: Float32Array): number {
  let e = 0, s = 0;
  for (let i = 0; i < b.length; i++) { e += (a[i] - b[i]) ** 2; s += b[i] ** 2; }
  return Math.sqrt(e / s);
}

// Relative RMS error of quantise → dequantise on N(0, 1) weights (65,536 values, seed 1234): the bound
// is ~1.3× the value measured when written (printed by the test; docs/gguf.md), so a quantiser
// regression shows up. Measured: F16 2.09e-4, BF16 1.66e-3, Q8_0 5.37e-3, Q4_0 8.62e-2, Q4_K 7.18e-2,
// Q5_K 3.61e-2, Q6_K 1.88e-2.
const REL_RMS_BOUND: Record<DecodableType, number> = { F32: 0, F16: 2.8e-4, BF16: 2.2e-3, Q8_0: 0.007, Q4_0: 0.11, Q4_K: 0.093, Q5_K: 0.047, Q6_K: 0.025 };

describe('GGUF blocks: quantise round trips', () => {
  const x = randomNormal(65_536, 1234);
  it.each([...DECODABLE])('%s', (type) => {
    const q = quantize(type, x);
    const t = ggmlTypeByName(type)!;
    expect(q.length).toBe((x.length / t.blockSize) * t.blockBytes);
    const y = dequantize(type, q, x.length);
    const err = relRms(y, x);
    console.log(`${type}: rel-RMS ${err.toExponential(3)}, ${(8 * t.blockBytes / t.blockSize).toFixed(4)} bits/weight`);
    expect(err).toBeLessThanOrEqual(REL_RMS_BOUND[type]);
    // The dequantised values are what the blocks encode: quantising them again reproduces them exactly
    // for the symmetric formats (each value is on its block's grid).
    if (['F32', 'F16', 'BF16', 'Q8_0'].includes(type)) expect(Buffer.compare(quantize(type, y), q)).toBe(0);
  });

  it('edge blocks: all zero, constant, one spike, tiny and huge values stay finite and close', () => {
    const r = mulberry32(5);
    const cases = [new Float32Array(256), new Float32Array(256).fill(3.25), new Float32Array(256).map((_, i) => (i === 77 ? 100 : 0.01 * r())), new Float32Array(256).map(() => 1e-6 * (r() - 0.5)), new Float32Array(256).map(() => 6e4 * (r() - 0.5))];
    for (const type of DECODABLE) {
      if (type === 'F16' || type === 'BF16' || type === 'F32') continue;
      for (const c of cases) {
        const y = dequantize(type, quantize(type, c), 256);
        expect(y.every(Number.isFinite), type).toBe(true);
        const amax = c.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
        for (let i = 0; i < 256; i++) expect(Math.abs(y[i] - c[i]), `${type} w${i}`).toBeLessThanOrEqual(0.2 * amax + 1e-6); // + f16 scale resolution for the tiny block
      }
    }
    expect(dequantize('Q8_0', quantize('Q8_0', new Float32Array(32)), 32).every((v) => v === 0)).toBe(true);
    expect(f16ToF32(0x3c00)).toBe(1);
  });

  it('wrong sizes are typed errors', () => {
    expect(() => dequantize('Q4_K', new Uint8Array(143), 256)).toThrow(FormatError);
    expect(() => dequantize('Q8_0', new Uint8Array(34), 33)).toThrow(ShapeError);
    expect(() => quantize('Q6_K', new Float32Array(255))).toThrow(ShapeError);
  });
});
