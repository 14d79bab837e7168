/**
 * The WebAssembly SIMD packer (kernels/wasm/weight-pack.c via host-pack.ts) against the JS path it
 * replaces at load, packWeight(toFloat32(source, bytes), ...): bit-identical words and f16 scales, and a
 * NaN / ±Inf count equal to countNonFinite's, for BF16, F16 and F32 sources, q8 and q4, group sizes 32
 * and 128, on random ragged shapes (K % 32 ≠ 0: partial last groups and padding nibbles) and constructed
 * inputs: zero groups, subnormals, the largest finite values, exact ties (x·inv + ½ integral), NaN and
 * ±Inf. Tolerance: none (every bit compared).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { packWeight } from '../../src/kernels/weight-pack';
import { countNonFinite, toFloat32, type SafetensorsDtype } from '../../src/formats/safetensors';
import { HostPacker, fp8ScalesPackable } from '../../src/kernels/wasm/host-pack';
import type { QuantSource } from '../../src/kernels/weight-quant';
import { f32ToBf16, f32ToF16 } from '../../src/util/half';
import { mulberry32 } from '../../src/util/random';

const DTYPE: Record<QuantSource, SafetensorsDtype> = { bf16: 'BF16', f16: 'F16', f32: 'F32' };
const BPE: Record<QuantSource, number> = { bf16: 2, f16: 2, f32: 4 };

/** Source bytes of the values (BF16 / F16 rounded to nearest even from f32). */
function encode(source: QuantSource, v: ArrayLike<number>): Uint8Array {
  if (source === 'f32') return new Uint8Array(Float32Array.from(v).buffer);
  const h = Uint16Array.from(v as ArrayLike<number>, source === 'bf16' ? f32ToBf16 : f32ToF16);
  return new Uint8Array(h.buffer);
}

let packer: HostPacker;
beforeAll(async () => {
  const p = await HostPacker.load();
  expect(p, 'Node has WebAssembly SIMD').not.toBeNull();
  packer = p!;
});

/** Packs `bytes` with both packers; compares every word, every scale word and the non-finite count. */
function same(source: QuantSource, bytes: Uint8Array, N: number, K: number, format: 'q8' | 'q4', gs: 32 | 128, what: string) {
  // An offset copy: the packer must not assume aligned input.
  const shifted = new Uint8Array(bytes.byteLength + 3).subarray(3);
  shifted.set(bytes);
  const want = packWeight(toFloat32(DTYPE[source], bytes), N, K, format, { groupSize: gs, scaleDtype: 'f16' });
  const got = packer.pack(source, shifted, N, K, format, gs);
  const at = (a: Uint32Array, b: Uint32Array) => { for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i; return -1; };
  const dw = at(got.data, want.data), ds = at(got.scales, want.scales!);
  expect(got.data.length, `${what}: words`).toBe(want.data.length);
  expect(got.scales.length, `${what}: scale words`).toBe(want.scales!.length);
  expect(dw, `${what}: first differing word ${dw}: got ${got.data[dw]?.toString(16)}, want ${want.data[dw]?.toString(16)}`).toBe(-1);
  expect(ds, `${what}: first differing scale word ${ds}: got ${got.scales[ds]?.toString(16)}, want ${want.scales![ds]?.toString(16)}`).toBe(-1);
  expect(got.nonFinite, `${what}: non-finite count`).toBe(countNonFinite(DTYPE[source], bytes));
}

const SOURCES: QuantSource[] = ['bf16', 'f16', 'f32'];
const FORMATS = ['q4', 'q8'] as const;
const GROUPS = [32, 128] as const;

describe('HostPacker (WASM SIMD) equals packWeight(toFloat32(...))', () => {
  it('on random ragged shapes, every source, format and group size', () => {
    const r = mulberry32(21);
    for (let trial = 0; trial < 60; trial++) {
      const source = SOURCES[trial % 3], format = FORMATS[(trial >> 1) % 2], gs = GROUPS[(trial >> 2) % 2];
      const N = 1 + Math.floor(r() * 9);
      const K = trial < 12 ? gs * (1 + Math.floor(r() * 4)) : 1 + Math.floor(r() * 300);
      const scale = 2 ** (Math.floor(r() * 20) - 12);
      const v = Float32Array.from({ length: N * K }, () => (r() * 2 - 1) * scale * (r() < 0.05 ? 40 : 1));
      same(source, encode(source, v), N, K, format, gs, `${source}→${format} gs ${gs} [${N}, ${K}]`);
    }
  });

  it('on raw random bit patterns (every finite value the formats hold, subnormals included)', () => {
    const r = mulberry32(5);
    for (const source of SOURCES) for (const format of FORMATS) for (const gs of GROUPS) {
      const N = 7, K = 291, bpe = BPE[source];
      const bytes = new Uint8Array(N * K * bpe);
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(r() * 256);
      // Clear exponent-all-ones patterns (NaN / Inf: their own test).
      for (let i = 0; i < N * K; i++) {
        const hi = i * bpe + bpe - 1;
        if (source === 'bf16' && (bytes[hi] & 0x7f) === 0x7f && bytes[hi - 1] & 0x80) bytes[hi] &= 0xbf;
        if (source === 'f16' && (bytes[hi] & 0x7c) === 0x7c) bytes[hi] &= 0xbf;
        if (source === 'f32' && (bytes[hi] & 0x7f) === 0x7f && bytes[hi - 1] & 0x80) bytes[hi] &= 0xbf;
      }
      same(source, bytes, N, K, format, gs, `random bits ${source}→${format} gs ${gs}`);
    }
  });

  it('on zero groups, subnormals and the largest finite values', () => {
    const r = mulberry32(9);
    const specials: Record<QuantSource, number[]> = {
      bf16: [0, -0, 2 ** -133, -(2 ** -130), 2 ** -126, 3.3895313892515355e38, -3.3895313892515355e38, 65504, 458528, 1e-20],
      f16: [0, -0, 2 ** -24, -(2 ** -24), 3 * 2 ** -20, 2 ** -14, 65504, -65504, 1e-7],
      f32: [0, -0, 2 ** -149, -(2 ** -140), 2 ** -126, 3.4028234663852886e38, -3.4028234663852886e38, 1e-30, 458528],
    };
    for (const source of SOURCES) for (const format of FORMATS) for (const gs of GROUPS) {
      const N = 6, K = 2 * gs + 17;
      const v = new Float32Array(N * K);
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
        // row 0: all zero; row 1: subnormals only; other rows: specials mixed with small values
        v[n * K + k] = n === 0 ? 0 : n === 1 ? (r() - 0.5) * 2 ** -130 : r() < 0.2 ? specials[source][Math.floor(r() * specials[source].length)] : (r() - 0.5) * 2 ** -(n * 3);
      }
      same(source, encode(source, v), N, K, format, gs, `specials ${source}→${format} gs ${gs}`);
    }
  });

  it('on exact ties w·inv = k + ½ and values next to them', () => {
    const r = mulberry32(13);
    for (const source of SOURCES) for (const format of FORMATS) for (const gs of GROUPS) {
      const Q = format === 'q4' ? 7 : 127;
      const N = 8, K = gs * 2 + 9;
      const v = new Float32Array(N * K);
      for (let n = 0; n < N; n++) {
        // amax placed first in each group so the scale is amax / Q (a power of two or a few-bit value).
        const s = (1 + Math.floor(r() * 8) / 8) * 2 ** (Math.floor(r() * 10) - 12);
        for (let k = 0; k < K; k++) {
          const first = k % gs === 0;
          const m = Math.floor(r() * (2 * Q)) - Q;
          v[n * K + k] = first ? Q * s : (m + 0.5) * s * (r() < 0.2 ? 1 + (r() - 0.5) * 2 ** -7 : 1);
        }
      }
      same(source, encode(source, v), N, K, format, gs, `ties ${source}→${format} gs ${gs}`);
    }
  });

  it('on NaN and ±Inf (same words and scales as the JS path, and their count)', () => {
    const r = mulberry32(17);
    for (const source of SOURCES) for (const format of FORMATS) for (const gs of GROUPS) {
      const N = 5, K = gs + 40;
      const v = Float32Array.from({ length: N * K }, () => (r() - 0.5) * (r() < 0.08 ? [NaN, Infinity, -Infinity][Math.floor(r() * 3)] : 1));
      const bytes = encode(source, v);
      // A NaN with a payload and the sign set, as a file may hold.
      if (source !== 'f32') { bytes[2 * 3] = 0x41; bytes[2 * 3 + 1] = source === 'bf16' ? 0xff : 0xfe; }
      same(source, bytes, N, K, format, gs, `non-finite ${source}→${format} gs ${gs}`);
    }
  });

  it('packMatrix: packWeight\'s PackedWeight, packed in row slices (odd groups per row, odd rows)', () => {
    const r = mulberry32(29);
    for (const [N, K, gs, format, slice] of [[37, 96, 32, 'q4', 1000], [41, 200, 128, 'q8', 3000], [9, 2048, 32, 'q4', 1 << 20], [5, 33, 32, 'q8', 1]] as const) {
      const v = Float32Array.from({ length: N * K }, () => (r() - 0.5) * 0.1);
      const bytes = encode('bf16', v);
      const want = packWeight(toFloat32('BF16', bytes), N, K, format, { groupSize: gs, scaleDtype: 'f16' });
      const got = packer.packMatrix('bf16', bytes, N, K, format, gs, slice);
      const { data, scales, nonFinite, ...meta } = got;
      const { data: wd, scales: ws, ...wantMeta } = want;
      expect(meta, `[${N}, ${K}]`).toEqual(wantMeta);
      expect(Array.from(data)).toEqual(Array.from(wd));
      expect(Array.from(scales!)).toEqual(Array.from(ws!));
      expect(nonFinite).toBe(0);
    }
  });

  it('halfMatrix: packWeight\'s f16 words for every BF16 value and random F32 bits; null where packWeight refuses (overflow)', () => {
    // Every BF16 pattern that fits f16 (NaN, ±Inf, subnormals, ties included), as rows of K = 250 (padding).
    const all = Array.from({ length: 65536 }, (_, i) => i);
    const fits = all.filter((b) => { const e = (b >> 7) & 0xff; return e === 0xff || e < 143 && !((b & 0x7fff) >= 0x477f && (b & 0x7fff) < 0x7f80); });
    const N = Math.floor(fits.length / 250), K = 250;
    const bf = Uint16Array.from(fits.slice(0, N * K));
    const bytes = new Uint8Array(bf.buffer);
    const want = packWeight(toFloat32('BF16', bytes), N, K, 'f16');
    const got = packer.halfMatrix('bf16', bytes, N, K, 40_000)!;
    expect(got).not.toBeNull();
    expect(Array.from(got.data)).toEqual(Array.from(want.data));
    expect({ ...got, data: 0, nonFinite: 0 }).toEqual({ ...want, data: 0, nonFinite: 0 });
    expect(got.nonFinite).toBe(countNonFinite('BF16', bytes));
    // F32: random bits (every exponent; overflowing exponents cleared) and K % 8 ≠ 0.
    const r = mulberry32(31);
    const f = Uint32Array.from({ length: 33 * 77 }, () => { let u = Math.floor(r() * 2 ** 32) >>> 0; const e = (u >>> 23) & 0xff; if (e >= 143 && e < 255) u = (u & ~(0xff << 23)) | ((e - 143) << 23); else if (e === 142) u &= ~(1 << 22); return u >>> 0; });
    const fb = new Uint8Array(f.buffer);
    const h32 = packer.halfMatrix('f32', fb, 33, 77, 1000)!;
    expect(Array.from(h32.data)).toEqual(Array.from(packWeight(toFloat32('F32', fb), 33, 77, 'f16').data));
    expect(h32.nonFinite).toBe(countNonFinite('F32', fb));
    expect(h32.nonFinite).toBeGreaterThan(0);
    // 65520 rounds to Inf in f16 (packWeight throws): null, in the SIMD body and in a row's scalar tail.
    for (const k of [3, 12]) {
      const v = new Float32Array(13).fill(0.5);
      v[k] = 65520;
      expect(() => packWeight(v, 1, 13, 'f16')).toThrow(/overflows f16/);
      expect(packer.halfMatrix('f32', new Uint8Array(v.buffer), 1, 13)).toBeNull();
      expect(packer.halfMatrix('bf16', encode('bf16', v), 1, 13)).toBeNull();
    }
  });

  it('FP8 E4M3 with 128×128 block scales: equals packWeight(toFloat32(\'F8_E4M3\', bytes, { scaleInv, shape })), slices included', () => {
    const r = mulberry32(37);
    for (const [N, K, gs, format] of [[300, 290, 32, 'q4'], [130, 256, 128, 'q8'], [129, 97, 32, 'q8'], [260, 384, 128, 'q4']] as const) {
      const bytes = Uint8Array.from({ length: N * K }, () => Math.floor(r() * 256)); // NaN bytes (0x7f, 0xff) and subnormals included
      const SR = Math.ceil(N / 128), SC = Math.ceil(K / 128);
      // Scales from tiny to large (448 · 2^120 overflows f32 to Inf, which the JS path packs too), one zero.
      const scaleInv = Float32Array.from({ length: SR * SC }, (_, i) => (i === 1 ? 0 : 2 ** (Math.floor(r() * 160) - 130) * (1 + r())));
      const want = packWeight(toFloat32('F8_E4M3', bytes, { scaleInv, shape: [N, K] }), N, K, format, { groupSize: gs, scaleDtype: 'f16' });
      for (const slice of [1 << 30, 40 * K]) {
        const got = packer.packMatrix('fp8', bytes, N, K, format, gs, slice, { scaleInv });
        const at = Array.from(got.data).findIndex((w, i) => w !== want.data[i]);
        expect(at, `[${N}, ${K}] ${format} gs ${gs} slice ${slice}: word ${at}`).toBe(-1);
        expect(Array.from(got.scales!)).toEqual(Array.from(want.scales!));
        expect(got.nonFinite).toBe(countNonFinite('F8_E4M3', bytes));
      }
    }
    expect(fp8ScalesPackable(new Float32Array([1, NaN]))).toBe(false);
    expect(() => packer.pack('fp8', new Uint8Array(256 * 2), 2, 256, 'q8', 32, { scaleInv: new Float32Array(1) })).toThrow(/block scales/);
  });

  it('bf16Matrix: packWeight\'s bf16 words for every BF16 pattern (NaNs quieted as f32ToBf16 does), rows padded', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    for (const [K, slice] of [[256, 1 << 20], [250, 3000], [7, 100]] as const) {
      const N = Math.floor(65536 / K);
      const bytes = new Uint8Array(all.buffer, 0, N * K * 2);
      const want = packWeight(toFloat32('BF16', bytes), N, K, 'bf16');
      const got = packer.bf16Matrix(bytes, N, K, slice);
      const at = Array.from(got.data).findIndex((w, i) => w !== want.data[i]);
      expect(at, `K ${K}: word ${at}: got ${got.data[at]?.toString(16)}, want ${want.data[at]?.toString(16)}`).toBe(-1);
      expect({ ...got, data: 0, nonFinite: 0 }).toEqual({ ...want, data: 0, nonFinite: 0 });
      expect(got.nonFinite).toBe(countNonFinite('BF16', bytes));
    }
    // More than 16384 SIMD steps of NaNs (the lane counters are folded before they wrap).
    const nan = new Uint16Array(8 * 40000).fill(0x7fc1);
    expect(packer.bf16Matrix(new Uint8Array(nan.buffer), 40000, 8).nonFinite).toBe(8 * 40000);
  });

  it('reuses its memory across calls of different sizes, and refuses bad shapes', () => {
    const r = mulberry32(23);
    for (const [N, K] of [[64, 512], [3, 40], [200, 96], [1, 1]]) {
      const v = Float32Array.from({ length: N * K }, () => r() - 0.5);
      same('bf16', encode('bf16', v), N, K, 'q4', 32, `size [${N}, ${K}]`);
    }
    expect(() => packer.pack('bf16', new Uint8Array(10), 2, 3, 'q4')).toThrow(/10 bytes for \[2, 3\] bf16/);
    expect(() => packer.pack('bf16', new Uint8Array(0), 0, 3, 'q4')).toThrow(/positive integers/);
  });
});
