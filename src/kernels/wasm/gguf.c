/*
 * GGUF blocks read as they are in the file (included by kernels.c; layouts: formats/gguf-blocks.ts,
 * docs/gguf.md): Q8_0, Q4_0, Q4_K, Q5_K, Q6_K weights [N, K] (rows of K/blockSize blocks) times
 * activations quantised to int16 per group of 32 along K (quant_x16: scale max|x|/32767).
 *
 * Why int16 activations and not llama.cpp's Q8_0 / Q8_K int8 ones: llama.cpp quantises x to 8 bits so
 * its CPU kernels can multiply 8-bit by 8-bit (AVX2 maddubs, NEON sdot). wasm simd128 has no 8-bit dot
 * product (relaxed-simd's is not in every engine, nor in clang 14), so the weights widen to i16 either
 * way and i32x4.dot_i16x8_s multiplies 8 pairs into exact i32 sums: int16 activations cost the same
 * instructions as int8 ones, and round 128× finer (≈ 1/65534 of a group's max instead of 1/254).
 *
 * Per group g of 32 activations (scale xs[g], Σq = xsum[g]) and the matching 32 weights:
 *   Q8_0, Q4_0          d · xs[g] · Σ q·xq                         (one block = one group)
 *   Q4_K, Q5_K          d·sc_j · xs[g] · Σ q·xq − dmin·m_j · xs[g] · xsum[g]   (sub-block j = group)
 *   Q6_K                d · xs[g] · Σ_half sc_half · Σ (q − 32)·xq  (two 16-weight sub-blocks a group)
 * Integer sums per lane stay below 2^31 (Q6_K, the largest: 2 sub-blocks · 4 products · 32 · 32767 · 128).
 */

static inline float half_to_f32(u32 h) {
  /* Normal halves by moving the fields into f32 places (exponent re-biased by 112); subnormal halves
     (exponent 0: common for K-quant super-block scales, e.g. d ≈ 1e-5) as mantissa · 2^-24. No f32
     subnormal is ever an operand: x86 takes a ~100-cycle assist per such multiply, which made Q5_K and
     Q6_K GEMVs 2-4× slower than Q4_K before. GGUF scales are finite: exponent 31 is not decoded. */
  const u32 e = (h >> 10) & 31, m = h & 1023;
  union { u32 u; float f; } v;
  v.u = ((h & 0x8000u) << 16) | ((e + 112) << 23) | (m << 13);
  if (e == 0) v.f = (h & 0x8000u) ? -(float)m * 0x1p-24f : (float)m * 0x1p-24f;
  return v.f;
}
static inline u32 rd16(const u8 *p) { return (u32)p[0] | ((u32)p[1] << 8); }

/* Scale and min (6 bits each) of sub-block j of a Q4_K/Q5_K block's 12 scale bytes (ggml get_scale_min_k4), as sc | m << 8. */
static inline int scale_min_k4(int j, const u8 *s) {
  if (j < 4) return (s[j] & 63) | ((s[j + 4] & 63) << 8);
  return ((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4)) | (((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) << 8);
}

/* Bytes shifted right by 4 in 16-bit lanes (native, unlike 8-bit shifts): the low 4 bits of each byte are
   its high nibble, the top 4 hold the next byte's low bits (callers mask them off). */
static inline v128_t nib_hi(v128_t b) { return wasm_u16x8_shr(b, 4); }

/* Σ over 32 int8/uint8 weights (two 16-byte vectors) × 32 int16 activations, as four i32 lanes. */
static inline v128_t dot32(v128_t a, v128_t b, const short *x) {
  return wasm_i32x4_add(dot16_i8i16(a, x), dot16_i8i16(b, x + 16));
}

/*
 * Each row function computes one weight row against R = 1 or 2 activation rows (x at xa and xa + K, their
 * scales and sums G further on), decoding the weights once for both: prefill, the experts' gathered
 * rows and MTP's verify step (S = 2) read each block once per two rows. Results go to y[0] and y[N].
 */
#define ROWS static inline __attribute__((always_inline)) void

ROWS rows_q8_0(const u8 *w, const short *xa, const float *sa, int K, int G, int nb, int R, float *y, int N) {
  v128_t acc0 = wasm_f32x4_splat(0), acc1 = acc0;
  for (int b = 0; b < nb; b++, w += 34) {
    const v128_t q0 = wasm_v128_load(w + 2), q1 = wasm_v128_load(w + 18);
    const float d = half_to_f32(rd16(w));
    acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(dot32(q0, q1, xa + 32 * b)), wasm_f32x4_splat(d * sa[b])));
    if (R == 2) acc1 = wasm_f32x4_add(acc1, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(dot32(q0, q1, xa + K + 32 * b)), wasm_f32x4_splat(d * sa[G + b])));
  }
  y[0] = hsum(acc0);
  if (R == 2) y[N] = hsum(acc1);
}

ROWS rows_q4_0(const u8 *w, const short *xa, const float *sa, int K, int G, int nb, int R, float *y, int N) {
  const v128_t mask = wasm_i8x16_splat(0x0f), eight = wasm_i8x16_splat(8);
  v128_t acc0 = wasm_f32x4_splat(0), acc1 = acc0;
  for (int b = 0; b < nb; b++, w += 18) {
    const v128_t q = wasm_v128_load(w + 2);
    /* Low nibbles are weights 0..15, high nibbles 16..31. */
    const v128_t lo = wasm_i8x16_sub(wasm_v128_and(q, mask), eight), hi = wasm_i8x16_sub(wasm_v128_and(nib_hi(q), mask), eight);
    const float d = half_to_f32(rd16(w));
    acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(dot32(lo, hi, xa + 32 * b)), wasm_f32x4_splat(d * sa[b])));
    if (R == 2) acc1 = wasm_f32x4_add(acc1, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(dot32(lo, hi, xa + K + 32 * b)), wasm_f32x4_splat(d * sa[G + b])));
  }
  y[0] = hsum(acc0);
  if (R == 2) y[N] = hsum(acc1);
}

/* Q4_K (five = 0) and Q5_K (five = 1): 8 sub-blocks of 32; qs byte 32c + l holds weight 64c + l (low
   nibble) and 64c + 32 + l (high); Q5_K's qh[l] bit 2c / 2c + 1 is their fifth bit. */
ROWS rows_qk45(const u8 *w, const short *xa, const float *sa, const int *ua, int K, int G, int nb, int five, int R, float *y, int N) {
  const v128_t mask = wasm_i8x16_splat(0x0f), sixteen = wasm_i8x16_splat(16);
  const int bb = five ? 176 : 144;
  v128_t acc0 = wasm_f32x4_splat(0), acc1 = acc0;
  float mins0 = 0, mins1 = 0;
  for (int b = 0; b < nb; b++, w += bb) {
    const float d = half_to_f32(rd16(w)), dmin = half_to_f32(rd16(w + 2));
    const u8 *sc = w + 4, *qs = w + (five ? 48 : 16);
    const short *x0 = xa + 256 * b, *x1 = x0 + K;
    const float *s0 = sa + 8 * b, *s1 = s0 + G;
    const int *u0 = ua + 8 * b, *u1 = u0 + G;
    v128_t h0 = wasm_i8x16_splat(0), h1 = h0;
    if (five) { h0 = wasm_v128_load(w + 16); h1 = wasm_v128_load(w + 32); }
    for (int c = 0; c < 4; c++) {
      v128_t b0 = wasm_v128_load(qs + 32 * c), b1 = wasm_v128_load(qs + 32 * c + 16);
      v128_t l0 = wasm_v128_and(b0, mask), l1 = wasm_v128_and(b1, mask);
      v128_t m0 = wasm_v128_and(nib_hi(b0), mask), m1 = wasm_v128_and(nib_hi(b1), mask);
      if (five) {
        /* The fifth bit as 16 where qh has it: and, compare, and (8-bit shifts are emulated in engines). */
        const v128_t bl = wasm_i8x16_splat((char)(1 << (2 * c))), bh = wasm_i8x16_splat((char)(2 << (2 * c)));
        l0 = wasm_v128_or(l0, wasm_v128_and(wasm_i8x16_eq(wasm_v128_and(h0, bl), bl), sixteen));
        l1 = wasm_v128_or(l1, wasm_v128_and(wasm_i8x16_eq(wasm_v128_and(h1, bl), bl), sixteen));
        m0 = wasm_v128_or(m0, wasm_v128_and(wasm_i8x16_eq(wasm_v128_and(h0, bh), bh), sixteen));
        m1 = wasm_v128_or(m1, wasm_v128_and(wasm_i8x16_eq(wasm_v128_and(h1, bh), bh), sixteen));
      }
      const int sm1 = scale_min_k4(2 * c, sc), sm2 = scale_min_k4(2 * c + 1, sc);
      const float d1 = d * (float)(sm1 & 255), d2 = d * (float)(sm2 & 255), n1 = dmin * (float)(sm1 >> 8), n2 = dmin * (float)(sm2 >> 8);
      const int g1 = 2 * c, g2 = g1 + 1;
      acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(dot32(l0, l1, x0 + 64 * c)), wasm_f32x4_splat(d1 * s0[g1])));
      acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(dot32(m0, m1, x0 + 64 * c + 32)), wasm_f32x4_splat(d2 * s0[g2])));
      mins0 += n1 * s0[g1] * (float)u0[g1] + n2 * s0[g2] * (float)u0[g2];
      if (R == 2) {
        acc1 = wasm_f32x4_add(acc1, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(dot32(l0, l1, x1 + 64 * c)), wasm_f32x4_splat(d1 * s1[g1])));
        acc1 = wasm_f32x4_add(acc1, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(dot32(m0, m1, x1 + 64 * c + 32)), wasm_f32x4_splat(d2 * s1[g2])));
        mins1 += n1 * s1[g1] * (float)u1[g1] + n2 * s1[g2] * (float)u1[g2];
      }
    }
  }
  y[0] = hsum(acc0) - mins0;
  if (R == 2) y[N] = hsum(acc1) - mins1;
}

/* Σ over 16 weights q × int16 x, times the sub-block's int8 scale, added to the i32 lanes of acc. */
static inline v128_t scaled16(v128_t acc, v128_t q, const short *x, int sc) {
  return wasm_i32x4_add(acc, wasm_i32x4_mul(dot16_i8i16(q, x), wasm_i32x4_splat(sc)));
}

/* Q6_K: per half h (128 weights): ql[64h + l], ql[64h + 32 + l] (low/high nibbles) and qh[32h + l] (2 bits
   each) give weights 128h + l, +32, +64, +96; int8 scale per 16 weights: group j's weights 16t + i use
   scales[8h + 2j + t]. */
ROWS rows_q6_k(const u8 *w, const short *xa, const float *sa, int K, int G, int nb, int R, float *y, int N) {
  const v128_t m4 = wasm_i8x16_splat(0x0f), m2 = wasm_i8x16_splat(3), m30 = wasm_i8x16_splat(0x30), k32 = wasm_i8x16_splat(32);
  v128_t acc0 = wasm_f32x4_splat(0), acc1 = acc0;
  for (int b = 0; b < nb; b++, w += 210) {
    const float d = half_to_f32(rd16(w + 208));
    const signed char *sc = (const signed char *)(w + 192);
    for (int h = 0; h < 2; h++) {
      const u8 *ql = w + 64 * h, *qh = w + 128 + 32 * h;
      const short *x0 = xa + 256 * b + 128 * h, *x1 = x0 + K;
      const signed char *s = sc + 8 * h;
      v128_t i0 = wasm_i32x4_splat(0), i1 = i0, i2 = i0, i3 = i0, j0 = i0, j1 = i0, j2 = i0, j3 = i0;
      for (int t = 0; t < 2; t++) {
        const v128_t A = wasm_v128_load(ql + 16 * t), B = wasm_v128_load(ql + 32 + 16 * t), H = wasm_v128_load(qh + 16 * t);
        const int o = 16 * t;
        /* Shifts in 16-bit lanes, then masks: the bits that cross a byte boundary are masked off. Each q
           is used as soon as it is built (fewer live vectors: engines have 16 SIMD registers). */
        v128_t q = wasm_i8x16_sub(wasm_v128_or(wasm_v128_and(A, m4), wasm_i16x8_shl(wasm_v128_and(H, m2), 4)), k32);
        i0 = scaled16(i0, q, x0 + o, s[t]);
        if (R == 2) j0 = scaled16(j0, q, x1 + o, s[t]);
        q = wasm_i8x16_sub(wasm_v128_or(wasm_v128_and(B, m4), wasm_v128_and(wasm_i16x8_shl(H, 2), m30)), k32);
        i1 = scaled16(i1, q, x0 + 32 + o, s[2 + t]);
        if (R == 2) j1 = scaled16(j1, q, x1 + 32 + o, s[2 + t]);
        q = wasm_i8x16_sub(wasm_v128_or(wasm_v128_and(nib_hi(A), m4), wasm_v128_and(H, m30)), k32);
        i2 = scaled16(i2, q, x0 + 64 + o, s[4 + t]);
        if (R == 2) j2 = scaled16(j2, q, x1 + 64 + o, s[4 + t]);
        q = wasm_i8x16_sub(wasm_v128_or(wasm_v128_and(nib_hi(B), m4), wasm_v128_and(wasm_u16x8_shr(H, 2), m30)), k32);
        i3 = scaled16(i3, q, x0 + 96 + o, s[6 + t]);
        if (R == 2) j3 = scaled16(j3, q, x1 + 96 + o, s[6 + t]);
      }
      const float *g0 = sa + 8 * b + 4 * h, *g1 = g0 + G;
      acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(i0), wasm_f32x4_splat(d * g0[0])));
      acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(i1), wasm_f32x4_splat(d * g0[1])));
      acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(i2), wasm_f32x4_splat(d * g0[2])));
      acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(i3), wasm_f32x4_splat(d * g0[3])));
      if (R == 2) {
        acc1 = wasm_f32x4_add(acc1, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(j0), wasm_f32x4_splat(d * g1[0])));
        acc1 = wasm_f32x4_add(acc1, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(j1), wasm_f32x4_splat(d * g1[1])));
        acc1 = wasm_f32x4_add(acc1, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(j2), wasm_f32x4_splat(d * g1[2])));
        acc1 = wasm_f32x4_add(acc1, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(j3), wasm_f32x4_splat(d * g1[3])));
      }
    }
  }
  y[0] = hsum(acc0);
  if (R == 2) y[N] = hsum(acc1);
}

/* ggml type ids (formats/gguf-blocks.ts GGML_TYPE). */
enum { GGML_Q4_0 = 2, GGML_Q8_0 = 8, GGML_Q4_K = 12, GGML_Q5_K = 13, GGML_Q6_K = 14 };

/*
 * x [M, K] → xq int16 [M, K] (natural order), xs [M, K/32] scales, xsum [M, K/32] Σ xq per group (the
 * K-quants' min term). K a multiple of 32.
 */
EXPORT(gguf_quant_x)
void gguf_quant_x(const float *x, short *xq, float *xs, int *xsum, int M, int K) {
  quant_x16(x, xq, xs, M, K, K, 0);
  const int G = K >> 5;
  for (int m = 0; m < M; m++) {
    for (int g = 0; g < G; g++) {
      const short *q = xq + (long)m * K + g * 32;
      int s = 0;
      for (int i = 0; i < 32; i++) s += q[i];
      xsum[(long)m * G + g] = s;
    }
  }
}

/* Rows [n0, n1) of y [M, N] = x · Wᵀ for W [N, K] in GGUF blocks of ggml type `type`: input rows two at a time. */
EXPORT(matmul_gguf)
void matmul_gguf(int type, const short *xq, const float *xs, const int *xsum, const u8 *w, float *y, int M, int N, int K, int n0, int n1) {
  const int G = K >> 5;
  const int nb = type == GGML_Q8_0 || type == GGML_Q4_0 ? G : K >> 8;
  const int bb = type == GGML_Q8_0 ? 34 : type == GGML_Q4_0 ? 18 : type == GGML_Q4_K ? 144 : type == GGML_Q5_K ? 176 : 210;
  const long rowBytes = (long)nb * bb;
  for (int n = n0; n < n1; n++) {
    const u8 *wr = w + (long)n * rowBytes;
    for (int m = 0; m < M; m += 2) {
      const short *xa = xq + (long)m * K;
      const float *sa = xs + (long)m * G;
      const int *ua = xsum + (long)m * G;
      float *ya = y + (long)m * N + n;
      const int two = m + 1 < M;
      switch (type) {
        case GGML_Q8_0: if (two) rows_q8_0(wr, xa, sa, K, G, nb, 2, ya, N); else rows_q8_0(wr, xa, sa, K, G, nb, 1, ya, N); break;
        case GGML_Q4_0: if (two) rows_q4_0(wr, xa, sa, K, G, nb, 2, ya, N); else rows_q4_0(wr, xa, sa, K, G, nb, 1, ya, N); break;
        case GGML_Q4_K: if (two) rows_qk45(wr, xa, sa, ua, K, G, nb, 0, 2, ya, N); else rows_qk45(wr, xa, sa, ua, K, G, nb, 0, 1, ya, N); break;
        case GGML_Q5_K: if (two) rows_qk45(wr, xa, sa, ua, K, G, nb, 1, 2, ya, N); else rows_qk45(wr, xa, sa, ua, K, G, nb, 1, 1, ya, N); break;
        default: if (two) rows_q6_k(wr, xa, sa, K, G, nb, 2, ya, N); else rows_q6_k(wr, xa, sa, K, G, nb, 1, ya, N); break;
      }
    }
  }
}
