/*
 * q8 / q4 group quantisation at load, from a checkpoint's own bytes (BF16, F16, F32, or FP8 E4M3 with
 * DeepSeek-V3's block scales; little-endian [N, K] row-major) straight into weight-pack.ts' packed
 * layout (and BF16 / F32 → f16 storage rows: half_rows, at the end): q4 nibbles (q + 8) / q8 int8 bytes in
 * rows of rowWords u32 words, f16 group scales (flat index n·G + g, two per u32, low half first). Included
 * by kernels.c; the TypeScript side is host-pack.ts. No f32 intermediate array: each group of the source
 * is read twice (its maximum, then its codes) while it sits in L1.
 *
 * Bit-identical to packWeight(toFloat32(source, bytes), N, K, fmt, { groupSize, scaleDtype: 'f16' }) on
 * every input (test/unit/host-pack.test.ts), because it does the same arithmetic in the same precision:
 *   scale   s = f16(f32(amax / Q)) with amax / Q in double (f32ToF16 stores the double into an f32 first);
 *   inv     1 / s in double (0 when s is 0 or NaN);
 *   codes   full groups: floor(clamp(w·inv + 8.5, 1, 15)) (q4) / (floor(clamp(w·inv + 128.5, 1, 255)) ^ 0x80)
 *           (q8), w·inv + offset rounded in double, two weights per f64x2; NaN → code 0 as JS's `t | 0`;
 *           the last, partial group (K % gs ≠ 0): Math.round(w·inv) clamped to ±Q, scalar, NaN → 0.
 * The group maximum is taken on integers: for these formats |w| orders like the bits with the sign
 * cleared (NaN above infinity above every finite value), so u8 / u16 / u32 SIMD max finds it exactly
 * (FP8: then times the block's scale, which f32 rounding keeps monotonic).
 *
 * Returns the number of NaN / ±Inf weights in the rows (counted only in groups whose maximum says there
 * are some: free on clean data), so the loader needs no scan of its own over these bytes.
 */

/* binary16 bits → value (exact, in double); NaN for exponent 31 with a mantissa. */
static inline double half_value(u32 h) {
  const u32 e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 0) v = (double)m * 0x1p-24;
  else if (e == 31) v = m ? __builtin_nan("") : __builtin_inf();
  else {
    union { unsigned long long u; double d; } b;
    b.u = ((unsigned long long)(e - 15 + 1023) << 52) | ((unsigned long long)m << 42);
    v = b.d;
  }
  return (h & 0x8000) ? -v : v;
}

/* float32 → binary16 bits, round to nearest even; overflow → Inf; NaN → 0x7e00 | sign (util/half.ts f32ToF16). */
static inline u32 f32_to_half(float x) {
  union { float f; u32 u; } b;
  b.f = x;
  const u32 sign = (b.u >> 16) & 0x8000, e = (b.u >> 23) & 0xff, m = b.u & 0x7fffff;
  if (e == 0xff) return sign | (m ? 0x7e00 : 0x7c00);
  const int he = (int)e - 127 + 15;
  if (he >= 31) return sign | 0x7c00;
  if (he <= 0) {
    if (he < -10) return sign;
    const u32 full = m | 0x800000, shift = (u32)(14 - he);
    u32 r = full >> shift;
    const u32 rem = full & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return sign | r;
  }
  u32 r = ((u32)he << 10) | (m >> 13);
  const u32 rem = m & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
  return sign | r;
}

/* FP8 E4M3 (fn: no infinities, S.1111.111 is NaN) byte → f32 bits, exact (util/half.ts fp8e4m3ToF32):
   the fields moved into f32 places and scaled by 2^120 (exact for normal and subnormal values). */
static inline float e4m3_value(u32 v) {
  union { u32 u; float f; } b;
  if ((v & 0x7f) == 0x7f) { b.u = 0x7fc00000u; return b.f; }
  b.u = (v & 0x7f) << 20;
  b.f *= 0x1p120f;
  return (v & 0x80) ? -b.f : b.f;
}

/* Element i of a source row as a double (F16: util/half.ts f16ToF32, exact; FP8: its value times the
   block's scale s in f32, as toFloat32's applyBlockScale rounds it). */
static inline double src_value(const u8 *row, int source, int i, float s) {
  union { u32 u; float f; } b;
  if (source == 3) return e4m3_value(row[i]) * s;
  if (source == 0) { b.u = (u32)(row[2 * i] | (row[2 * i + 1] << 8)) << 16; return b.f; }
  if (source == 1) return half_value((u32)(row[2 * i] | (row[2 * i + 1] << 8)));
  b.u = (u32)row[4 * i] | ((u32)row[4 * i + 1] << 8) | ((u32)row[4 * i + 2] << 16) | ((u32)row[4 * i + 3] << 24);
  return b.f;
}

/* Sign-cleared bits of element i, and the exponent mask that marks NaN / ±Inf for the source. */
static inline u32 src_abs_bits(const u8 *row, int source, int i) {
  if (source == 3) return row[i] & 0x7fu;
  if (source == 2) return ((u32)row[4 * i] | ((u32)row[4 * i + 1] << 8) | ((u32)row[4 * i + 2] << 16) | ((u32)row[4 * i + 3] << 24)) & 0x7fffffffu;
  return (u32)(row[2 * i] | (row[2 * i + 1] << 8)) & 0x7fff;
}
static inline u32 exp_mask(int source) { return source == 0 ? 0x7f80 : source == 1 ? 0x7c00 : source == 3 ? 0x7f : 0x7f800000u; }

/* Largest sign-cleared bits of elements [k0, k0 + n) of a row, n a multiple of 32 (integer SIMD). */
static inline u32 group_max_bits(const u8 *row, int source, int k0, int n) {
  if (source == 3) {
    const v128_t mask = wasm_i8x16_splat(0x7f);
    v128_t m = wasm_i8x16_splat(0);
    for (int k = k0; k < k0 + n; k += 32) {
      m = wasm_u8x16_max(m, wasm_v128_and(wasm_v128_load(row + k), mask));
      m = wasm_u8x16_max(m, wasm_v128_and(wasm_v128_load(row + k + 16), mask));
    }
    m = wasm_u8x16_max(m, wasm_i32x4_shuffle(m, m, 2, 3, 0, 1));
    m = wasm_u8x16_max(m, wasm_i32x4_shuffle(m, m, 1, 0, 3, 2));
    m = wasm_u8x16_max(m, wasm_u32x4_shr(m, 16));
    m = wasm_u8x16_max(m, wasm_u16x8_shr(m, 8));
    return wasm_u8x16_extract_lane(m, 0);
  }
  if (source == 2) {
    const v128_t mask = wasm_i32x4_splat(0x7fffffff);
    v128_t m = wasm_i32x4_splat(0);
    for (int k = k0; k < k0 + n; k += 8) {
      m = wasm_u32x4_max(m, wasm_v128_and(wasm_v128_load(row + 4 * k), mask));
      m = wasm_u32x4_max(m, wasm_v128_and(wasm_v128_load(row + 4 * k + 16), mask));
    }
    m = wasm_u32x4_max(m, wasm_i32x4_shuffle(m, m, 2, 3, 0, 1));
    m = wasm_u32x4_max(m, wasm_i32x4_shuffle(m, m, 1, 0, 3, 2));
    return wasm_u32x4_extract_lane(m, 0);
  }
  const v128_t mask = wasm_i16x8_splat(0x7fff);
  v128_t m = wasm_i16x8_splat(0);
  for (int k = k0; k < k0 + n; k += 16) {
    m = wasm_u16x8_max(m, wasm_v128_and(wasm_v128_load(row + 2 * k), mask));
    m = wasm_u16x8_max(m, wasm_v128_and(wasm_v128_load(row + 2 * k + 16), mask));
  }
  m = wasm_u16x8_max(m, wasm_i32x4_shuffle(m, m, 2, 3, 0, 1));
  m = wasm_u16x8_max(m, wasm_i32x4_shuffle(m, m, 1, 0, 3, 2));
  m = wasm_u16x8_max(m, wasm_u32x4_shr(m, 16));
  return wasm_u16x8_extract_lane(m, 0);
}

/* The group maximum as packWeight's double amax (NaN when the group holds a NaN). FP8: f32 rounding is
   monotonic, so max |fl(v·s)| = |fl(max|v| · s)| (s finite: the wrapper sends other matrices to JS). */
static inline double amax_of_bits(u32 mb, int source, float s) {
  union { u32 u; float f; } b;
  if (source == 3) { const float a = e4m3_value(mb) * s; return a < 0 ? -a : a; }
  if (source == 0) { if (mb > 0x7f80) return __builtin_nan(""); b.u = mb << 16; return b.f; }
  if (source == 1) return half_value(mb);
  if (mb > 0x7f800000u) return __builtin_nan("");
  b.u = mb;
  return b.f;
}

/* NaN / ±Inf weights among elements [k0, k1) of a row. */
static int count_non_finite(const u8 *row, int source, int k0, int k1) {
  const u32 em = exp_mask(source);
  int c = 0;
  for (int k = k0; k < k1; k++) c += (src_abs_bits(row, source, k) & em) == em;
  return c;
}

/* Eight weights from k (BF16 / F16 / F32 source; FP8 times its block scale s) as two f32x4 vectors (exact widening). */
static inline void load8(const u8 *row, int source, int k, v128_t *lo, v128_t *hi, v128_t s) {
  if (source == 3) {
    const v128_t v = wasm_u16x8_extend_low_u8x16(wasm_v128_load64_zero(row + k));
    const v128_t a = wasm_u32x4_extend_low_u16x8(v), b = wasm_u32x4_extend_high_u16x8(v);
    const v128_t mag = wasm_i32x4_splat(0x7f), scale = wasm_f32x4_splat(0x1p120f), nan = wasm_i32x4_splat(0x7fc00000);
    const v128_t ma = wasm_v128_and(a, mag), mb = wasm_v128_and(b, mag);
    v128_t fa = wasm_f32x4_mul(wasm_i32x4_shl(ma, 20), scale), fb = wasm_f32x4_mul(wasm_i32x4_shl(mb, 20), scale);
    fa = wasm_v128_or(fa, wasm_i32x4_shl(wasm_u32x4_shr(a, 7), 31));
    fb = wasm_v128_or(fb, wasm_i32x4_shl(wasm_u32x4_shr(b, 7), 31));
    fa = wasm_v128_bitselect(nan, fa, wasm_i32x4_eq(ma, mag));
    fb = wasm_v128_bitselect(nan, fb, wasm_i32x4_eq(mb, mag));
    *lo = wasm_f32x4_mul(fa, s);
    *hi = wasm_f32x4_mul(fb, s);
    return;
  }
  if (source == 2) { *lo = wasm_v128_load(row + 4 * k); *hi = wasm_v128_load(row + 4 * k + 16); return; }
  const v128_t h = wasm_v128_load(row + 2 * k);
  v128_t a = wasm_u32x4_extend_low_u16x8(h), b = wasm_u32x4_extend_high_u16x8(h);
  if (source == 0) { *lo = wasm_i32x4_shl(a, 16); *hi = wasm_i32x4_shl(b, 16); return; }
  /* F16: the fields moved into f32 places and scaled by 2^112 (exact for normal and subnormal halves);
     exponent 31 (Inf / NaN) becomes exponent 255. */
  const v128_t mag = wasm_i32x4_splat(0x7fff), e31 = wasm_i32x4_splat(0x7c00), infb = wasm_i32x4_splat(0x7f800000);
  const v128_t scale = wasm_f32x4_splat(0x1p112f);
  v128_t ma = wasm_v128_and(a, mag), mb = wasm_v128_and(b, mag);
  v128_t fa = wasm_f32x4_mul(wasm_i32x4_shl(ma, 13), scale), fb = wasm_f32x4_mul(wasm_i32x4_shl(mb, 13), scale);
  fa = wasm_v128_or(fa, wasm_v128_and(wasm_i32x4_eq(wasm_v128_and(a, e31), e31), infb));
  fb = wasm_v128_or(fb, wasm_v128_and(wasm_i32x4_eq(wasm_v128_and(b, e31), e31), infb));
  *lo = wasm_v128_or(fa, wasm_i32x4_shl(wasm_u32x4_shr(a, 15), 31));
  *hi = wasm_v128_or(fb, wasm_i32x4_shl(wasm_u32x4_shr(b, 15), 31));
}

/* floor(clamp(w·inv + off, 1, top)) for four f32 weights, computed in double; NaN → 0 (as `t | 0`). */
static inline v128_t codes4(v128_t w, v128_t inv, v128_t off, v128_t top, v128_t one) {
  v128_t a = wasm_f64x2_promote_low_f32x4(w);
  v128_t b = wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(w, w, 2, 3, 2, 3));
  /* pmin(t, top) = top < t ? top : t and pmax(t, 1) = t < 1 ? 1 : t keep a NaN t: Math.min / Math.max's result. */
  a = wasm_f64x2_pmax(wasm_f64x2_pmin(wasm_f64x2_add(wasm_f64x2_mul(a, inv), off), top), one);
  b = wasm_f64x2_pmax(wasm_f64x2_pmin(wasm_f64x2_add(wasm_f64x2_mul(b, inv), off), top), one);
  return wasm_i32x4_shuffle(wasm_i32x4_trunc_sat_f64x2_zero(a), wasm_i32x4_trunc_sat_f64x2_zero(b), 0, 1, 4, 5);
}

/* 32 weights from k → 16 bytes of q4 nibbles (q4) or of q8 codes at out (q8: the first 16 weights; 32 bytes). */
static inline void pack32(const u8 *row, int source, int k, v128_t inv, int q4, u8 *out, v128_t s) {
  const v128_t off = wasm_f64x2_splat(q4 ? 8.5 : 128.5), top = wasm_f64x2_splat(q4 ? 15.0 : 255.0), one = wasm_f64x2_splat(1.0);
  v128_t w0, w1, w2, w3, w4, w5, w6, w7;
  load8(row, source, k, &w0, &w1, s);
  load8(row, source, k + 8, &w2, &w3, s);
  load8(row, source, k + 16, &w4, &w5, s);
  load8(row, source, k + 24, &w6, &w7, s);
  /* Codes of weights 0..15 and 16..31 as bytes (every code is 0..255: the saturating narrows are exact). */
  v128_t c0 = wasm_u8x16_narrow_i16x8(wasm_i16x8_narrow_i32x4(codes4(w0, inv, off, top, one), codes4(w1, inv, off, top, one)),
                                      wasm_i16x8_narrow_i32x4(codes4(w2, inv, off, top, one), codes4(w3, inv, off, top, one)));
  v128_t c1 = wasm_u8x16_narrow_i16x8(wasm_i16x8_narrow_i32x4(codes4(w4, inv, off, top, one), codes4(w5, inv, off, top, one)),
                                      wasm_i16x8_narrow_i32x4(codes4(w6, inv, off, top, one), codes4(w7, inv, off, top, one)));
  if (q4) {
    /* Byte pairs (c[2i], c[2i+1]) as u16 lanes → c[2i] | c[2i+1] << 4 in the low byte; then 16 bytes. */
    const v128_t lowByte = wasm_i16x8_splat(0xff);
    v128_t p0 = wasm_v128_and(wasm_v128_or(c0, wasm_u16x8_shr(c0, 4)), lowByte);
    v128_t p1 = wasm_v128_and(wasm_v128_or(c1, wasm_u16x8_shr(c1, 4)), lowByte);
    wasm_v128_store(out, wasm_u8x16_narrow_i16x8(p0, p1));
  } else {
    const v128_t flip = wasm_i8x16_splat((char)0x80);
    wasm_v128_store(out, wasm_v128_xor(c0, flip));
    wasm_v128_store(out + 16, wasm_v128_xor(c1, flip));
  }
}

/* Math.round(x) (halves toward +∞), exact for every double. */
static inline double js_round(double x) {
  const double f = __builtin_floor(x);
  return x - f >= 0.5 ? f + 1.0 : f;
}

/*
 * Rows [n0, n1) of the [N, K] source at src (source 0 BF16, 1 F16, 2 F32, 3 FP8 E4M3) into q4 (q4 = 1)
 * or q8 words at data ([N, rowWords]) and f16 scales at scales (u16 [N·G], flat n·G + g; G = ceil(K / gs),
 * gs 32 or 128). Every word and scale of those rows is written (row padding: q4 nibble 8, q8 byte 0).
 * FP8: weight = e4m3 · sinv[((row0 + n) / 128)·SC + k / 128] (DeepSeek-V3's 128×128 weight_scale_inv
 * blocks, as toFloat32 applies them; row0: the first row's index in the whole matrix). Returns the NaN /
 * ±Inf count of the source values (FP8: the NaN bytes, as countNonFinite).
 */
EXPORT(pack_quant)
int pack_quant(const u8 *src, int source, int K, int q4, int gs, u32 *data, u16 *scales, int n0, int n1, const float *sinv, int SC, int row0) {
  const int bpe = source == 3 ? 1 : source == 2 ? 4 : 2;
  const int G = (K + gs - 1) / gs, full = (K / gs) * gs;
  const int rowWords = q4 ? ((K + 31) / 32) * 4 : ((K + 15) / 16) * 4;
  const double Q = q4 ? 7.0 : 127.0;
  const u32 em = exp_mask(source);
  int bad = 0;
  for (int n = n0; n < n1; n++) {
    const u8 *row = src + (long)n * K * bpe;
    u8 *out = (u8 *)(data + (long)n * rowWords);
    const float *srow = source == 3 ? sinv + (long)((row0 + n) / 128) * SC : 0;
    for (int g = 0; g < G; g++) {
      const int k0 = g * gs, k1 = k0 + gs < K ? k0 + gs : K;
      const float bs = source == 3 ? srow[k0 / 128] : 1.0f;
      u32 mb;
      if (k1 - k0 == gs) mb = group_max_bits(row, source, k0, gs);
      else { mb = 0; for (int k = k0; k < k1; k++) { u32 a = src_abs_bits(row, source, k); mb = a > mb ? a : mb; } }
      if (mb >= em) bad += count_non_finite(row, source, k0, k1);
      const double amax = amax_of_bits(mb, source, bs);
      const u32 h = amax != amax ? 0x7e00 : f32_to_half((float)(amax / Q));
      scales[(long)n * G + g] = (u16)h;
      const double s = half_value(h);
      const double inv = s > 0 ? 1.0 / s : 0.0;
      if (k1 - k0 == gs) {
        const v128_t vinv = wasm_f64x2_splat(inv);
        const v128_t vs = wasm_f32x4_splat(bs);
        for (int k = k0; k < k1; k += 32) pack32(row, source, k, vinv, q4, out + (q4 ? k / 2 : k), vs);
        continue;
      }
      /* The partial last group: Math.round(w·inv) clamped, as packWeight's scalar tail; then the padding. */
      for (int k = full; k < (q4 ? rowWords * 8 : rowWords * 4); k += q4 ? 2 : 1) {
        if (q4) {
          u32 byte = 0;
          for (int b = 0; b < 2; b++) {
            u32 nib = 8;
            if (k + b < K) {
              double q = js_round(src_value(row, source, k + b, bs) * inv);
              q = q > Q ? Q : q < -Q ? -Q : q;
              nib = q != q ? 0 : (u32)((int)q + 8);
            }
            byte |= nib << (4 * b);
          }
          out[k / 2] = (u8)byte;
        } else {
          int c = 0;
          if (k < K) {
            double q = js_round(src_value(row, source, k, bs) * inv);
            q = q > Q ? Q : q < -Q ? -Q : q;
            c = q != q ? 0 : (int)q;
          }
          out[k] = (u8)(c & 0xff);
        }
      }
    }
    /* Row padding after whole groups (K a multiple of gs but not of the row unit: q8 with gs 32 never; kept general). */
    if (full == K) for (int k = K; k < (q4 ? rowWords * 8 : rowWords * 4); k += q4 ? 2 : 1) out[q4 ? k / 2 : k] = q4 ? 0x88 : 0;
  }
  return bad;
}

/* ---------------------------------------------------------------------------------- f16 storage */

/* Four f32 (bits) → binary16 bits in the low halves of the lanes, round to nearest even, exactly
   util/half.ts f32ToF16 (overflow → ±Inf, NaN → 0x7e00 | sign, subnormal halves rounded in an f32 add of
   0.5: the sum's ulp is 2^-24, the half's). `ovf` gets all-ones lanes for finite values that became ±Inf. */
static inline v128_t half4(v128_t x, v128_t *ovf) {
  const v128_t sign = wasm_v128_and(x, wasm_i32x4_splat((int)0x80000000u));
  const v128_t a = wasm_v128_xor(x, sign);
  const v128_t inf32 = wasm_i32x4_splat(0x7f800000), magic = wasm_i32x4_splat(0x3f000000);
  const v128_t big = wasm_u32x4_ge(a, wasm_i32x4_splat(0x47800000)); /* |x| ≥ 65536, Inf, NaN */
  const v128_t small = wasm_u32x4_lt(a, wasm_i32x4_splat(0x38800000)); /* |x| < 2^-14: a subnormal half or 0 */
  const v128_t special = wasm_v128_bitselect(wasm_i32x4_splat(0x7e00), wasm_i32x4_splat(0x7c00), wasm_u32x4_gt(a, inf32));
  const v128_t sub = wasm_i32x4_sub(wasm_f32x4_add(a, magic), magic);
  const v128_t odd = wasm_v128_and(wasm_u32x4_shr(a, 13), wasm_i32x4_splat(1));
  const v128_t norm = wasm_u32x4_shr(wasm_i32x4_add(wasm_i32x4_add(a, wasm_i32x4_splat((int)0xc8000fffu)), odd), 13);
  const v128_t o = wasm_v128_bitselect(special, wasm_v128_bitselect(sub, norm, small), big);
  *ovf = wasm_v128_and(wasm_i32x4_eq(o, wasm_i32x4_splat(0x7c00)), wasm_u32x4_lt(a, inf32));
  return wasm_v128_or(o, wasm_u32x4_shr(sign, 16));
}

/*
 * Rows [n0, n1) of the [N, K] source (0 BF16, 2 F32) as f16 storage rows of Kp halves (zero padding past
 * K) at dst: packWeight's 'f16' words. Returns the number of NaN / ±Inf values, or -1 when a finite
 * value overflowed to ±Inf (packWeight refuses those matrices: the caller then takes the JS path, which
 * names the value).
 */
EXPORT(half_rows)
int half_rows(const u8 *src, int source, int K, int Kp, u16 *dst, int n0, int n1) {
  const int bpe = source == 2 ? 4 : 2;
  const v128_t abs = wasm_i32x4_splat(0x7fffffff), inf32 = wasm_i32x4_splat(0x7f800000);
  v128_t over = wasm_i32x4_splat(0), nf = over, o0, o1;
  int bad = 0, nonFinite = 0;
  for (int n = n0; n < n1; n++) {
    const u8 *row = src + (long)n * K * bpe;
    u16 *out = dst + (long)n * Kp;
    int k = 0;
    for (; k + 8 <= K; k += 8) {
      v128_t lo, hi;
      load8(row, source, k, &lo, &hi, wasm_f32x4_splat(1.0f));
      const v128_t h = wasm_u16x8_narrow_i32x4(half4(lo, &o0), half4(hi, &o1));
      over = wasm_v128_or(over, wasm_v128_or(o0, o1));
      nf = wasm_i32x4_sub(nf, wasm_u32x4_ge(wasm_v128_and(lo, abs), inf32));
      nf = wasm_i32x4_sub(nf, wasm_u32x4_ge(wasm_v128_and(hi, abs), inf32));
      wasm_v128_store(out + k, h);
    }
    for (; k < K; k++) {
      union { u32 u; float f; } b;
      b.f = (float)src_value(row, source, k, 1.0f);
      const u32 h = f32_to_half(b.f);
      bad += (h & 0x7fff) == 0x7c00 && (b.u & 0x7f800000u) != 0x7f800000u;
      nonFinite += (b.u & 0x7f800000u) == 0x7f800000u;
      out[k] = (u16)h;
    }
    for (; k < Kp; k++) out[k] = 0;
  }
  if (bad || wasm_v128_any_true(over)) return -1;
  return nonFinite + wasm_i32x4_extract_lane(nf, 0) + wasm_i32x4_extract_lane(nf, 1) + wasm_i32x4_extract_lane(nf, 2) + wasm_i32x4_extract_lane(nf, 3);
}

/* ---------------------------------------------------------------------------------- bf16 storage */

/*
 * Rows [n0, n1) of a BF16 [N, K] source as bf16 storage rows of Kp halves (zero padding past K) at dst:
 * packWeight's 'bf16' words of the widened values, i.e. the bits as they are except NaNs, which
 * f32ToBf16 quiets (| 0x40). Returns the NaN / ±Inf count.
 */
EXPORT(bf16_rows)
int bf16_rows(const u16 *src, int K, int Kp, u16 *dst, int n0, int n1) {
  const v128_t mag = wasm_i16x8_splat(0x7fff), inf = wasm_i16x8_splat(0x7f80), quiet = wasm_i16x8_splat(0x40);
  v128_t nf = wasm_i16x8_splat(0);
  int nonFinite = 0, steps = 0;
  for (int n = n0; n < n1; n++) {
    const u16 *row = src + (long)n * K;
    u16 *out = dst + (long)n * Kp;
    int k = 0;
    for (; k + 8 <= K; k += 8) {
      const v128_t v = wasm_v128_load(row + k), a = wasm_v128_and(v, mag);
      wasm_v128_store(out + k, wasm_v128_or(v, wasm_v128_and(wasm_u16x8_gt(a, inf), quiet)));
      nf = wasm_i16x8_sub(nf, wasm_u16x8_ge(a, inf));
      /* i16 lane counters: fold into the total before they can wrap. */
      if (++steps == 16384) {
        nonFinite += wasm_i32x4_extract_lane(wasm_i32x4_extadd_pairwise_i16x8(nf), 0) + wasm_i32x4_extract_lane(wasm_i32x4_extadd_pairwise_i16x8(nf), 1)
                   + wasm_i32x4_extract_lane(wasm_i32x4_extadd_pairwise_i16x8(nf), 2) + wasm_i32x4_extract_lane(wasm_i32x4_extadd_pairwise_i16x8(nf), 3);
        nf = wasm_i16x8_splat(0);
        steps = 0;
      }
    }
    for (; k < K; k++) {
      const u32 v = row[k], a = v & 0x7fff;
      out[k] = (u16)(a > 0x7f80 ? v | 0x40 : v);
      nonFinite += a >= 0x7f80;
    }
    for (; k < Kp; k++) out[k] = 0;
  }
  const v128_t w = wasm_i32x4_extadd_pairwise_i16x8(nf);
  return nonFinite + wasm_i32x4_extract_lane(w, 0) + wasm_i32x4_extract_lane(w, 1) + wasm_i32x4_extract_lane(w, 2) + wasm_i32x4_extract_lane(w, 3);
}
