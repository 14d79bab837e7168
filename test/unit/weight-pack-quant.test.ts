/**
 * The fast q8/q4 packers (weight-pack.ts: per-row scale pass, words built in locals, rounding as
 * floor(x + offset)) against the plain per-element quantiser they replaced (Math.round, Math.max/min
 * clamp, one nibble/byte at a time), written out here: bit-identical words and scales on random ragged
 * shapes, both group sizes and scale dtypes, with zero groups, outliers and values placed on ties.
 */
import { describe, expect, it } from 'vitest';
import { packWeight, QMAX } from '../../src/kernels/weight-pack';
import { f16ToF32, f32ToF16 } from '../../src/util/half';
import { mulberry32 } from '../../src/util/random';

function plainPack(w: Float32Array, N: number, K: number, format: 'q8' | 'q4', gs: number, scaleF16: boolean) {
  const unit = format === 'q8' ? 16 : 32;
  const Kp = Math.ceil(K / unit) * unit, rowWords = (Kp * (format === 'q8' ? 8 : 4)) / 32;
  const G = Math.ceil(K / gs), Q = QMAX[format];
  const data = new Uint32Array(N * rowWords);
  const scales = new Uint32Array(scaleF16 ? Math.ceil((N * G) / 2) : N * G);
  const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
  if (format === 'q4') data.fill(0x88888888);
  for (let n = 0; n < N; n++) for (let g = 0; g < G; g++) {
    const k0 = g * gs, k1 = Math.min(K, k0 + gs);
    let amax = 0;
    for (let k = k0; k < k1; k++) amax = Math.max(amax, Math.abs(w[n * K + k]));
    const s = scaleF16 ? f16ToF32(f32ToF16(amax / Q)) : Math.fround(amax / Q);
    const idx = n * G + g;
    if (scaleF16) scales[idx >> 1] |= (idx & 1 ? f32ToF16(s) << 16 : f32ToF16(s)) >>> 0;
    else { f32[0] = s; scales[idx] = u32[0]; }
    const inv = s > 0 ? 1 / s : 0;
    for (let k = k0; k < k1; k++) {
      const q = Math.max(-Q, Math.min(Q, Math.round(w[n * K + k] * inv)));
      if (format === 'q8') { const i = n * rowWords + (k >> 2); data[i] = (data[i] | ((q & 0xff) << ((k & 3) * 8))) >>> 0; }
      else { const i = n * rowWords + (k >> 3), sh = (k & 7) * 4; data[i] = ((data[i] & ~(0xf << sh)) | ((q + 8) << sh)) >>> 0; }
    }
  }
  return { data, scales };
}

describe('packWeight q8/q4 (fast loops)', () => {
  it('equals the per-element quantiser bit for bit on random ragged shapes', () => {
    const r = mulberry32(11);
    let cases = 0;
    for (let t = 0; t < 120; t++) {
      const N = 1 + Math.floor(r() * 7), K = 1 + Math.floor(r() * 300);
      const w = Float32Array.from({ length: N * K }, () => (r() - 0.5) * (r() < 0.05 ? 100 : 1));
      if (t % 5 === 0) w.fill(0, 0, Math.min(w.length, 70)); // all-zero groups: scale 0
      if (t % 3 === 0) for (let i = 0; i < w.length; i += 2) w[i] = Math.round(w[i] * 64) / 64; // ties after scaling
      for (const format of ['q8', 'q4'] as const) for (const gs of [32, 128] as const) for (const sd of ['f16', 'f32'] as const) {
        const got = packWeight(w, N, K, format, { groupSize: gs, scaleDtype: sd });
        const want = plainPack(w, N, K, format, gs, sd === 'f16');
        expect(got.data, `${format} gs${gs} ${sd} [${N}, ${K}]`).toEqual(want.data);
        expect(got.scales, `${format} gs${gs} ${sd} [${N}, ${K}] scales`).toEqual(want.scales);
        cases++;
      }
    }
    expect(cases).toBe(960);
  });
});
