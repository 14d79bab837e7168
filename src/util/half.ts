/**
 * Half-width float formats ↔ float32, bit-exact: IEEE binary16 (F16), bfloat16 (BF16) and
 * OCP FP8 E4M3 "fn" (no infinities, 0x7F/0xFF = NaN, max ±448) as used by DeepSeek-V3 checkpoints.
 * Scalar functions take/return raw bit patterns as numbers; the array versions are for loading weights.
 */

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** binary16 bits → float32 value (exact). */
export function f16ToF32(h: number): number {
  const s = (h & 0x8000) ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24; // zero / subnormal
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** float32 value → binary16 bits, round to nearest even; overflow → ±Inf, NaN → quiet NaN (0x7e00). */
export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  const b = u32Scratch[0];
  const sign = (b >>> 16) & 0x8000;
  const e = (b >>> 23) & 0xff;
  const m = b & 0x7fffff;
  if (e === 0xff) return sign | (m ? 0x7e00 : 0x7c00);
  const he = e - 127 + 15;
  if (he >= 31) return sign | 0x7c00;
  if (he <= 0) {
    // subnormal half (or zero): value = mant * 2^-24
    if (he < -10) return sign;
    const full = m | 0x800000; // 24-bit significand
    const shift = 14 - he; // 14..24
    let r = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r; // may round up into the smallest normal: still correct bits
  }
  let r = (he << 10) | (m >>> 13);
  const rem = m & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++; // may carry into exponent (→ Inf at the top): correct
  return sign | r;
}

/** bfloat16 bits → float32 value (exact). */
export function bf16ToF32(h: number): number {
  u32Scratch[0] = (h & 0xffff) << 16;
  return f32Scratch[0];
}

/** float32 value → bfloat16 bits, round to nearest even, NaN stays NaN. */
export function f32ToBf16(x: number): number {
  f32Scratch[0] = x;
  const b = u32Scratch[0];
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** FP8 E4M3 (fn) bits → float32 value (exact). */
export function fp8e4m3ToF32(b: number): number {
  const s = (b & 0x80) ? -1 : 1;
  const e = (b >> 3) & 15;
  const m = b & 7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return s * m * 2 ** -9; // 2^-6 · m/8
  return s * (1 + m / 8) * 2 ** (e - 7);
}

let fp8Table: Float32Array | null = null;
/** The 256 FP8 E4M3 values, indexed by byte. */
export function fp8e4m3Table(): Float32Array {
  if (!fp8Table) {
    fp8Table = new Float32Array(256);
    for (let i = 0; i < 256; i++) fp8Table[i] = fp8e4m3ToF32(i);
  }
  return fp8Table;
}

/** float32 value → FP8 E4M3 (fn) bits, round to nearest even, saturating to ±448 (NaN → 0x7f). */
export function f32ToFp8e4m3(x: number): number {
  if (Number.isNaN(x)) return 0x7f;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= 448) return sign | 0x7e;
  // Find the nearest representable magnitude among the 127 finite codes (monotone in the code).
  const t = fp8e4m3Table();
  let lo = 0, hi = 0x7e;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (t[mid] <= a) lo = mid; else hi = mid;
  }
  const dl = a - t[lo], dh = t[hi] - a;
  const code = dl < dh ? lo : dh < dl ? hi : (lo & 1 ? hi : lo);
  return sign | code;
}

let f16Table: Float32Array | null = null;
function f16Lut(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16ToF32(i);
  }
  return f16Table;
}

/** Bulk conversions (little-endian bit patterns already in typed arrays). */
export function f16ArrayToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const t = f16Lut();
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}
export function bf16ArrayToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  // Every weight of a BF16 checkpoint passes here: two values per 32-bit load (little-endian: the low
  // half is the first value), int32 stores (no uint32 → double conversions). ≈1.5× the per-value loop.
  const o = new Int32Array(out.buffer, out.byteOffset, out.length);
  const n = src.length;
  if (n === 0) return out;
  let i = 0;
  if (src.byteOffset & 3) { o[0] = src[0] << 16; i = 1; }
  const pairs = (n - i) >> 1;
  const w = new Int32Array(src.buffer, src.byteOffset + 2 * i, pairs);
  for (let k = 0; k < pairs; k++) {
    const x = w[k];
    o[i + 2 * k] = x << 16;
    o[i + 2 * k + 1] = x & -65536;
  }
  for (let j = i + 2 * pairs; j < n; j++) o[j] = src[j] << 16;
  return out;
}
export function fp8e4m3ArrayToF32(src: Uint8Array, out = new Float32Array(src.length)): Float32Array {
  const t = fp8e4m3Table();
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}
export function f32ArrayToF16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16(src[i]);
  return out;
}
export function f32ArrayToBf16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToBf16(src[i]);
  return out;
}
