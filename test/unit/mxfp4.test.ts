import { describe, it, expect } from 'vitest';
import { mulberry32, randomUniform } from '../../src/util/random';
import { randomMxfp4 } from '../helpers/mxfp4';
import { FP4_VALUES, packMxfp4, quantizeMxfp4, sliceRows } from '../../src/kernels/weight-pack';
import { dequantizeRef, mxfp4DequantHfRef } from '../../src/kernels/weight.ref';

describe('MXFP4 (GPT-OSS expert weights): the packed layout against transformers convert_moe_packed_tensors', () => {
  it('hand-worked bytes: low nibble = even element, scale 2^(s − 127)', () => {
    // One row, one block: byte 0 = 0x2F → element 0 = FP4[0xF] = −6, element 1 = FP4[0x2] = 1; scale 128 → ×2.
    const blocks = new Uint8Array(16), scales = new Uint8Array([128]);
    blocks[0] = 0x2f;
    blocks[15] = 0x97; // element 30 = FP4[7] = 6, element 31 = FP4[9] = −0.5
    const w = dequantizeRef(packMxfp4(blocks, scales, 1, 32));
    expect(w[0]).toBe(-12);
    expect(w[1]).toBe(2);
    expect(w[30]).toBe(12);
    expect(w[31]).toBe(-1);
    expect(Array.from(w.subarray(2, 30)).every((v) => v === 0)).toBe(true);
  });

  it.each([[2, 6, 3], [1, 5, 1], [3, 64, 90]])('E=%i N=%i G=%i: dequantizeRef of each expert = HF dequantisation (transposed), bit for bit', (E, N, G) => {
    const { blocks, scales } = randomMxfp4(E, N, G, E * 100 + N + G);
    const hf = mxfp4DequantHfRef(blocks, scales, E, N, G); // [E, K, N]
    const K = G * 32;
    for (let e = 0; e < E; e++) {
      const p = packMxfp4(blocks.subarray(e * N * G * 16, (e + 1) * N * G * 16), scales.subarray(e * N * G, (e + 1) * N * G), N, K);
      const w = dequantizeRef(p);
      let bad = 0;
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) if (!Object.is(w[n * K + k], hf[(e * K + k) * N + n])) bad++;
      expect(bad).toBe(0);
    }
  });

  it('ragged K: padding nibbles past K decode to 0; row slices keep their scales', () => {
    const N = 5, K = 45, G = 2;
    const { blocks, scales } = randomMxfp4(1, N, G, 3);
    const p = packMxfp4(blocks, scales, N, K);
    const words = new Uint8Array(p.data.buffer);
    for (let n = 0; n < N; n++) for (let k = K; k < 64; k++) expect((words[n * 32 + (k >> 1)] >> (k & 1 ? 4 : 0)) & 15).toBe(0);
    const full = dequantizeRef(p), part = dequantizeRef(sliceRows(p, 2, 5));
    expect(Array.from(part)).toEqual(Array.from(full.subarray(2 * K)));
  });

  it('rejects NaN scales (E8M0 255) and wrong sizes', () => {
    expect(() => packMxfp4(new Uint8Array(16), new Uint8Array([255]), 1, 32)).toThrow(/255/);
    expect(() => packMxfp4(new Uint8Array(15), new Uint8Array([127]), 1, 32)).toThrow(RangeError);
  });

  it('quantizeMxfp4: representable values round-trip exactly, others within half the block max', () => {
    const N = 3, K = 70;
    const exact = new Float32Array(N * K);
    const r = mulberry32(9);
    for (let i = 0; i < exact.length; i++) exact[i] = FP4_VALUES[Math.floor(r() * 16)] * 0.25;
    exact[0] = 6 * 0.25; // every block of row 0 hits the max so the shared exponent is the same
    for (let n = 0; n < N; n++) for (let g = 0; g < 3; g++) exact[n * K + g * 32] = 1.5;
    const q1 = quantizeMxfp4(exact, N, K);
    const d1 = dequantizeRef(packMxfp4(q1.blocks, q1.scales, N, K));
    expect(d1.every((v, i) => v === exact[i])).toBe(true);   // (−0 comes back as +0: equal values)
    const w = randomUniform(N * K, 4, -3, 3);
    const q2 = quantizeMxfp4(w, N, K);
    const d = dequantizeRef(packMxfp4(q2.blocks, q2.scales, N, K));
    for (let n = 0; n < N; n++) for (let g = 0; g < 3; g++) {
      let amax = 0;
      for (let k = g * 32; k < Math.min(K, g * 32 + 32); k++) amax = Math.max(amax, Math.abs(w[n * K + k]));
      for (let k = g * 32; k < Math.min(K, g * 32 + 32); k++) expect(Math.abs(d[n * K + k] - w[n * K + k])).toBeLessThanOrEqual(amax / 2);
    }
  });
});
