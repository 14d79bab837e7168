/**
 * ggml tensor types: block layout facts (weights per block, bytes per block), from ggml's
 * `ggml/src/ggml-common.h` and the type traits table of `ggml.c`. Layouts of the types webmoe decodes
 * are documented in docs/gguf.md.
 */
import { FormatError, ShapeError } from '../errors';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../util/half';

/** ggml_type ids as stored in GGUF tensor infos (gaps are removed types: 4, 5 = Q4_2/Q4_3; 31–33; 36–38). */
export const GGML_TYPE = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9,
  Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, Q8_K: 15,
  IQ2_XXS: 16, IQ2_XS: 17, IQ3_XXS: 18, IQ1_S: 19, IQ4_NL: 20, IQ3_S: 21, IQ2_S: 22, IQ4_XS: 23,
  I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, IQ1_M: 29, BF16: 30, TQ1_0: 34, TQ2_0: 35, MXFP4: 39,
} as const;

export type GgmlTypeName = keyof typeof GGML_TYPE;

export interface GgmlTypeInfo {
  name: GgmlTypeName;
  id: number;
  /** Weights per block (1 for plain scalars). */
  blockSize: number;
  /** Bytes per block. */
  blockBytes: number;
}

/** [name, weights per block, bytes per block] (ggml's type_traits blck_size / type_size). */
const LAYOUTS: [GgmlTypeName, number, number][] = [
  ['F32', 1, 4], ['F16', 1, 2], ['Q4_0', 32, 18], ['Q4_1', 32, 20], ['Q5_0', 32, 22], ['Q5_1', 32, 24],
  ['Q8_0', 32, 34], ['Q8_1', 32, 36], ['Q2_K', 256, 84], ['Q3_K', 256, 110], ['Q4_K', 256, 144],
  ['Q5_K', 256, 176], ['Q6_K', 256, 210], ['Q8_K', 256, 292], ['IQ2_XXS', 256, 66], ['IQ2_XS', 256, 74],
  ['IQ3_XXS', 256, 98], ['IQ1_S', 256, 50], ['IQ4_NL', 32, 18], ['IQ3_S', 256, 110], ['IQ2_S', 256, 82],
  ['IQ4_XS', 256, 136], ['I8', 1, 1], ['I16', 1, 2], ['I32', 1, 4], ['I64', 1, 8], ['F64', 1, 8],
  ['IQ1_M', 256, 56], ['BF16', 1, 2], ['TQ1_0', 256, 54], ['TQ2_0', 256, 66], ['MXFP4', 32, 17],
];

const BY_ID = new Map<number, GgmlTypeInfo>(LAYOUTS.map(([name, blockSize, blockBytes]) => [GGML_TYPE[name], { name, id: GGML_TYPE[name], blockSize, blockBytes }]));
const BY_NAME = new Map<string, GgmlTypeInfo>([...BY_ID.values()].map((t) => [t.name, t]));

/** The layout of ggml type `id`, or undefined for an id ggml does not define. */
export function ggmlType(id: number): GgmlTypeInfo | undefined {
  return BY_ID.get(id);
}

export function ggmlTypeByName(name: string): GgmlTypeInfo | undefined {
  return BY_NAME.get(name);
}

/** Bytes of a row of `n` weights (n must be a multiple of the block size). */
export function rowBytes(t: GgmlTypeInfo, n: number): number {
  return (n / t.blockSize) * t.blockBytes;
}

// ------------------------------------------------------------------------------- decode and encode
// Block layouts (ggml-common.h; bytes little-endian, `half` = IEEE binary16), documented in docs/gguf.md:
//   Q8_0  34 B / 32:  half d; int8 qs[32]                          w = d·qs[i]
//   Q4_0  18 B / 32:  half d; u8 qs[16]                            w[i] = d·((qs[i] & 15) − 8), w[i+16] = d·((qs[i] >> 4) − 8)
//   Q4_K 144 B / 256: half d, dmin; u8 scales[12]; u8 qs[128]      8 sub-blocks of 32: w = d·sc_j·q − dmin·m_j
//   Q5_K 176 B / 256: half d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]   as Q4_K with a 5th bit from qh
//   Q6_K 210 B / 256: u8 ql[128]; u8 qh[64]; int8 scales[16]; half d      16 sub-blocks of 16: w = d·sc_j·(q − 32)
// Arithmetic follows ggml's dequantize_row_*: the same f32 products in the same order (Math.fround),
// so results should be bit-identical to ggml's (not checked against ggml binaries here).


/** The types webmoe dequantises (CPU) and decodes in the GPU kernels. */
export const DECODABLE = ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0', 'Q4_K', 'Q5_K', 'Q6_K'] as const;
export type DecodableType = (typeof DECODABLE)[number];
export function isDecodable(t: string): t is DecodableType {
  return (DECODABLE as readonly string[]).includes(t);
}

const fr = Math.fround;
const half = (b: Uint8Array, o: number) => f16ToF32(b[o] | (b[o + 1] << 8));

/**
 * The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block from its 12 scale bytes
 * (ggml's get_scale_min_k4): sub-blocks 0..3 keep their low 6 bits in bytes j (scale) and j + 4 (min);
 * sub-blocks 4..7 keep their low 4 bits in byte j + 4 (scale low nibble, min high nibble) and their top
 * 2 bits in the top 2 bits of bytes j − 4 (scale) and j (min).
 */
export function scaleMinK4(j: number, s: Uint8Array, o = 0): [number, number] {
  if (j < 4) return [s[o + j] & 63, s[o + j + 4] & 63];
  return [(s[o + j + 4] & 0xf) | ((s[o + j - 4] >> 6) << 4), (s[o + j + 4] >> 4) | ((s[o + j] >> 6) << 4)];
}

/** Inverse of scaleMinK4 for all 8 sub-blocks: 6-bit scales and mins → 12 bytes. */
export function packScaleMinK4(sc: ArrayLike<number>, mn: ArrayLike<number>, out: Uint8Array, o = 0): void {
  for (let j = 0; j < 12; j++) out[o + j] = 0;
  for (let j = 0; j < 8; j++) {
    const ls = sc[j] & 63, lm = mn[j] & 63;
    if (j < 4) {
      out[o + j] |= ls;
      out[o + j + 4] |= lm;
    } else {
      out[o + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
      out[o + j - 4] |= (ls >> 4) << 6;
      out[o + j] |= (lm >> 4) << 6;
    }
  }
}

function dequantBlock(type: DecodableType, b: Uint8Array, o: number, y: Float32Array, p: number): void {
  switch (type) {
    case 'Q8_0': {
      const d = half(b, o);
      for (let i = 0; i < 32; i++) y[p + i] = fr(d * ((b[o + 2 + i] << 24) >> 24));
      return;
    }
    case 'Q4_0': {
      const d = half(b, o);
      for (let i = 0; i < 16; i++) {
        const q = b[o + 2 + i];
        y[p + i] = fr(d * ((q & 15) - 8));
        y[p + i + 16] = fr(d * ((q >> 4) - 8));
      }
      return;
    }
    case 'Q4_K': case 'Q5_K': {
      const d = half(b, o), dmin = half(b, o + 2);
      const five = type === 'Q5_K';
      const qh = o + 16, qs = five ? o + 48 : o + 16;
      for (let c = 0; c < 4; c++) {
        const [s1, m1] = scaleMinK4(2 * c, b, o + 4), [s2, m2] = scaleMinK4(2 * c + 1, b, o + 4);
        const d1 = fr(d * s1), n1 = fr(dmin * m1), d2 = fr(d * s2), n2 = fr(dmin * m2);
        for (let l = 0; l < 32; l++) {
          const q = b[qs + 32 * c + l];
          const h1 = five && b[qh + l] & (1 << (2 * c)) ? 16 : 0, h2 = five && b[qh + l] & (2 << (2 * c)) ? 16 : 0;
          y[p + 64 * c + l] = fr(fr(d1 * ((q & 15) + h1)) - n1);
          y[p + 64 * c + 32 + l] = fr(fr(d2 * ((q >> 4) + h2)) - n2);
        }
      }
      return;
    }
    case 'Q6_K': {
      const d = half(b, o + 208);
      for (let h = 0; h < 2; h++) {
        const ql = o + 64 * h, qh = o + 128 + 32 * h, sc = o + 192 + 8 * h, yp = p + 128 * h;
        for (let l = 0; l < 32; l++) {
          const is = l >> 4, hb = b[qh + l];
          const q1 = ((b[ql + l] & 15) | ((hb & 3) << 4)) - 32;
          const q2 = ((b[ql + l + 32] & 15) | (((hb >> 2) & 3) << 4)) - 32;
          const q3 = ((b[ql + l] >> 4) | (((hb >> 4) & 3) << 4)) - 32;
          const q4 = ((b[ql + l + 32] >> 4) | (((hb >> 6) & 3) << 4)) - 32;
          const s = (k: number) => (b[sc + k] << 24) >> 24;
          y[yp + l] = fr(fr(d * s(is)) * q1);
          y[yp + l + 32] = fr(fr(d * s(is + 2)) * q2);
          y[yp + l + 64] = fr(fr(d * s(is + 4)) * q3);
          y[yp + l + 96] = fr(fr(d * s(is + 6)) * q4);
        }
      }
      return;
    }
    default: throw new FormatError(`dequantBlock: ${type} has no blocks`);
  }
}

/** `n` weights of `type` from their raw GGUF bytes, as f32 (exactly the bytes of n weights are needed). */
export function dequantize(type: DecodableType, bytes: Uint8Array, n: number): Float32Array {
  const t = ggmlTypeByName(type)!;
  if (!Number.isSafeInteger(n) || n < 0 || n % t.blockSize) throw new ShapeError(`dequantize ${type}: ${n} weights is not a whole number of ${t.blockSize}-weight blocks`);
  const need = (n / t.blockSize) * t.blockBytes;
  if (bytes.length !== need) throw new FormatError(`dequantize ${type}: ${bytes.length} bytes for ${n} weights (needs ${need})`);
  const y = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (type) {
    case 'F32': for (let i = 0; i < n; i++) y[i] = dv.getFloat32(4 * i, true); return y;
    case 'F16': for (let i = 0; i < n; i++) y[i] = f16ToF32(dv.getUint16(2 * i, true)); return y;
    case 'BF16': for (let i = 0; i < n; i++) y[i] = bf16ToF32(dv.getUint16(2 * i, true)); return y;
    default:
      for (let k = 0; k < n / t.blockSize; k++) dequantBlock(type, bytes, k * t.blockBytes, y, k * t.blockSize);
      return y;
  }
}

// Quantisers. They produce valid blocks of each layout (anything the decoder accepts is a valid file);
// the search for scales is webmoe's own (round-to-nearest with a small least-squares refinement), not
// llama-quantize's, so files are not byte-identical to llama.cpp's but decode the same way everywhere.

const rne = (x: number) => Math.round(x); // ties away from zero for .5 is fine: both are valid encodings
const clamp = (v: number, lo: number, hi: number) => (v < lo ? lo : v > hi ? hi : v);
const putHalf = (b: Uint8Array, o: number, v: number) => { const h = f32ToF16(v); b[o] = h & 255; b[o + 1] = h >> 8; };

/**
 * Symmetric block of `n` values → one scale and codes in [lo, hi]: the scale maps the largest-|x| value
 * to `edge` (keeping its sign, so an asymmetric code range like −8..7 uses its longer side), or to
 * |edge| with a positive scale when `positive`.
 */
function symmetric(x: Float32Array, at: number, n: number, edge: number, lo: number, hi: number, q: Int32Array, positive = false): number {
  let m = 0;
  for (let i = 0; i < n; i++) if (Math.abs(x[at + i]) > Math.abs(m)) m = x[at + i];
  const d = positive ? Math.abs(m) / Math.abs(edge) : m / edge;
  const id = d ? 1 / d : 0;
  for (let i = 0; i < n; i++) q[i] = clamp(rne(x[at + i] * id), lo, hi);
  return d;
}

/**
 * An asymmetric sub-block: x ≈ s·q − m with q in [0, nmax], m ≥ 0. Starts from the min/max grid, then
 * tries a few grid widths and refits s and m by least squares on the chosen codes; keeps the best.
 */
function asymmetric(x: Float32Array, at: number, n: number, nmax: number): [number, number] {
  let lo = 0, hi = 0;
  for (let i = 0; i < n; i++) { lo = Math.min(lo, x[at + i]); hi = Math.max(hi, x[at + i]); }
  if (hi === lo) return [0, -lo];
  let best: [number, number] = [(hi - lo) / nmax, -lo];
  let bestErr = Infinity;
  for (let k = -4; k <= 4; k++) {
    const is = (nmax + 0.1 * k) / (hi - lo);
    let sl = 0, sl2 = 0, sx = 0, sxl = 0;
    for (let i = 0; i < n; i++) {
      const l = clamp(rne((x[at + i] - lo) * is), 0, nmax);
      sl += l; sl2 += l * l; sx += x[at + i]; sxl += x[at + i] * l;
    }
    const D = n * sl2 - sl * sl;
    let s = D > 0 ? (n * sxl - sx * sl) / D : 1 / is, mn = D > 0 ? (sl2 * sx - sl * sxl) / D : lo;
    if (mn > 0) { mn = 0; s = sl2 ? sxl / sl2 : s; }
    if (!(s > 0)) continue;
    let err = 0;
    for (let i = 0; i < n; i++) {
      const l = clamp(rne((x[at + i] - mn) / s), 0, nmax);
      const e = s * l + mn - x[at + i];
      err += e * e;
    }
    if (err < bestErr) { bestErr = err; best = [s, -mn]; }
  }
  return best;
}

function quantBlock(type: DecodableType, x: Float32Array, at: number, b: Uint8Array, o: number): void {
  const q = new Int32Array(256);
  switch (type) {
    case 'Q8_0': {
      putHalf(b, o, symmetric(x, at, 32, 127, -127, 127, q, true));
      for (let i = 0; i < 32; i++) b[o + 2 + i] = q[i] & 255;
      return;
    }
    case 'Q4_0': {
      // the largest-|x| value maps to −8 (the code range is −8..7)
      putHalf(b, o, symmetric(x, at, 32, -8, -8, 7, q));
      for (let i = 0; i < 16; i++) b[o + 2 + i] = (q[i] + 8) | ((q[i + 16] + 8) << 4);
      return;
    }
    case 'Q4_K': case 'Q5_K': {
      const five = type === 'Q5_K', nmax = five ? 31 : 15;
      const sc = new Float64Array(8), mn = new Float64Array(8);
      let maxS = 0, maxM = 0;
      for (let j = 0; j < 8; j++) {
        [sc[j], mn[j]] = asymmetric(x, at + 32 * j, 32, nmax);
        maxS = Math.max(maxS, sc[j]); maxM = Math.max(maxM, mn[j]);
      }
      // 6-bit scales and mins relative to the block's d and dmin (f16); codes recomputed with the stored values
      putHalf(b, o, maxS / 63); putHalf(b, o + 2, maxM / 63);
      const d = half(b, o), dmin = half(b, o + 2);
      const ls = new Uint8Array(8), lm = new Uint8Array(8);
      for (let j = 0; j < 8; j++) { ls[j] = d ? clamp(rne(sc[j] / d), 0, 63) : 0; lm[j] = dmin ? clamp(rne(mn[j] / dmin), 0, 63) : 0; }
      packScaleMinK4(ls, lm, b, o + 4);
      for (let j = 0; j < 8; j++) {
        const s = fr(d * ls[j]), m = fr(dmin * lm[j]);
        for (let i = 0; i < 32; i++) q[32 * j + i] = s ? clamp(rne((x[at + 32 * j + i] + m) / s), 0, nmax) : 0;
      }
      const qh = o + 16, qs = five ? o + 48 : o + 16;
      if (five) for (let l = 0; l < 32; l++) b[qh + l] = 0;
      for (let c = 0; c < 4; c++) {
        for (let l = 0; l < 32; l++) {
          const a = q[64 * c + l], z = q[64 * c + 32 + l];
          b[qs + 32 * c + l] = (a & 15) | ((z & 15) << 4);
          if (five) b[qh + l] |= ((a >> 4) << (2 * c)) | ((z >> 4) << (2 * c + 1));
        }
      }
      return;
    }
    case 'Q6_K': {
      const s = new Float64Array(16);
      let big = 0;
      const qq = new Int32Array(16);
      for (let j = 0; j < 16; j++) { s[j] = symmetric(x, at + 16 * j, 16, -32, -32, 31, qq); if (Math.abs(s[j]) > Math.abs(big)) big = s[j]; }
      putHalf(b, o + 208, big / -128);
      const d = half(b, o + 208);
      const sc = new Int32Array(16);
      for (let j = 0; j < 16; j++) { sc[j] = d ? clamp(rne(s[j] / d), -128, 127) : 0; b[o + 192 + j] = sc[j] & 255; }
      for (let j = 0; j < 16; j++) {
        const f = fr(d * sc[j]);
        for (let i = 0; i < 16; i++) q[16 * j + i] = (f ? clamp(rne(x[at + 16 * j + i] / f), -32, 31) : 0) + 32;
      }
      for (let h = 0; h < 2; h++) {
        const ql = o + 64 * h, qh = o + 128 + 32 * h, y = 128 * h;
        for (let l = 0; l < 32; l++) {
          const q1 = q[y + l], q2 = q[y + l + 32], q3 = q[y + l + 64], q4 = q[y + l + 96];
          b[ql + l] = (q1 & 15) | ((q3 & 15) << 4);
          b[ql + l + 32] = (q2 & 15) | ((q4 & 15) << 4);
          b[qh + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
      }
      return;
    }
    default: throw new ShapeError(`quantBlock: ${type} has no blocks`);
  }
}

/** f32 values → raw GGUF bytes of `type` (length a multiple of the block size). */
export function quantize(type: DecodableType, x: Float32Array): Uint8Array {
  const t = ggmlTypeByName(type)!;
  if (x.length % t.blockSize) throw new ShapeError(`quantize ${type}: ${x.length} values is not a whole number of ${t.blockSize}-value blocks`);
  const out = new Uint8Array((x.length / t.blockSize) * t.blockBytes);
  const dv = new DataView(out.buffer);
  switch (type) {
    case 'F32': for (let i = 0; i < x.length; i++) dv.setFloat32(4 * i, x[i], true); return out;
    case 'F16': for (let i = 0; i < x.length; i++) dv.setUint16(2 * i, f32ToF16(x[i]), true); return out;
    case 'BF16': for (let i = 0; i < x.length; i++) dv.setUint16(2 * i, f32ToBf16(x[i]), true); return out;
    default:
      for (let k = 0; k < x.length / t.blockSize; k++) quantBlock(type, x, k * t.blockSize, out, k * t.blockBytes);
      return out;
  }
}
