/*
 * webmoe's WebAssembly kernels: 128-bit SIMD (wasm simd128), no libc. Built by scripts/build-wasm.mjs
 * (`npm run build:wasm`) into kernels.wasm next to this file; src/kernels/wasm/module.ts instantiates it
 * and src/kernels/wasm/ops.ts wraps every export with shape checks. The CPU references these kernels are
 * tested against are the `*.ref.ts` files of src/kernels (test/unit/wasm-kernels.test.ts).
 *
 * Memory is one linear memory managed from JavaScript (a bump allocator with marks, module.ts); every
 * pointer here is a byte offset into it. Matrices are [N, K] row-major (rows = output features, HF layout)
 * in the layouts of src/kernels/weight-pack.ts, with quantisation scales widened to f32 by the loader.
 *
 * Every matmul computes rows [n0, n1) of Y[M, N] = X[M, K] · Wᵀ, so a worker pool can split N.
 */
#include <wasm_simd128.h>

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;

#define EXPORT(name) __attribute__((export_name(#name))) 

/* ------------------------------------------------------------------------------------------- maths */

static inline float hsum(v128_t v) {
  return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1) + wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3);
}

/* e^x to ~1 ulp: x = n·ln2 + r, |r| ≤ ln2/2, degree-7 Taylor polynomial, 2^n built in the exponent bits
   (in two steps below 2^-126 so subnormal results stay right). */
static float expf_(float x) {
  if (x > 88.72283f) return __builtin_inff();
  if (x < -103.97208f) return 0.0f;
  float n = __builtin_nearbyintf(x * 1.44269504088896341f);
  float r = x - n * 0.693145751953125f - n * 1.42860682030941723e-06f;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f + r * (0.00833333377f + r * (0.00138888892f + r * 0.000198412701f))))));
  int e = (int)n;
  union { u32 u; float f; } s;
  if (e < -126) {
    s.u = (u32)(e + 126 + 127) << 23;
    return p * s.f * 1.17549435e-38f;
  }
  s.u = (u32)(e + 127) << 23;
  return p * s.f;
}

static inline float silu(float g) { return g / (1.0f + expf_(-g)); }

EXPORT(exp_f32) float exp_f32(float x) { return expf_(x); }

/* ---------------------------------------------------------------------------------- dense matmuls */

/* f32: W [N, K] unpadded. Blocks of 4 weight rows × 2 input rows (8 accumulators), scalar K tail. */
EXPORT(matmul_f32)
void matmul_f32(const float *x, const float *w, float *y, int M, int N, int K, int n0, int n1) {
  const int K4 = K & ~3;
  int n = n0;
  for (; n + 4 <= n1; n += 4) {
    const float *w0 = w + (long)n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    int m = 0;
    for (; m + 2 <= M; m += 2) {
      const float *xa = x + (long)m * K, *xb = xa + K;
      v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      for (int k = 0; k < K4; k += 4) {
        v128_t va = wasm_v128_load(xa + k), vb = wasm_v128_load(xb + k);
        v128_t q0 = wasm_v128_load(w0 + k), q1 = wasm_v128_load(w1 + k), q2 = wasm_v128_load(w2 + k), q3 = wasm_v128_load(w3 + k);
        a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(va, q0)); b0 = wasm_f32x4_add(b0, wasm_f32x4_mul(vb, q0));
        a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(va, q1)); b1 = wasm_f32x4_add(b1, wasm_f32x4_mul(vb, q1));
        a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(va, q2)); b2 = wasm_f32x4_add(b2, wasm_f32x4_mul(vb, q2));
        a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(va, q3)); b3 = wasm_f32x4_add(b3, wasm_f32x4_mul(vb, q3));
      }
      float s[8] = { hsum(a0), hsum(a1), hsum(a2), hsum(a3), hsum(b0), hsum(b1), hsum(b2), hsum(b3) };
      for (int k = K4; k < K; k++) {
        s[0] += xa[k] * w0[k]; s[1] += xa[k] * w1[k]; s[2] += xa[k] * w2[k]; s[3] += xa[k] * w3[k];
        s[4] += xb[k] * w0[k]; s[5] += xb[k] * w1[k]; s[6] += xb[k] * w2[k]; s[7] += xb[k] * w3[k];
      }
      float *ya = y + (long)m * N + n, *yb = ya + N;
      ya[0] = s[0]; ya[1] = s[1]; ya[2] = s[2]; ya[3] = s[3];
      yb[0] = s[4]; yb[1] = s[5]; yb[2] = s[6]; yb[3] = s[7];
    }
    for (; m < M; m++) {
      const float *xa = x + (long)m * K;
      v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
      for (int k = 0; k < K4; k += 4) {
        v128_t va = wasm_v128_load(xa + k);
        a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(va, wasm_v128_load(w0 + k)));
        a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(va, wasm_v128_load(w1 + k)));
        a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(va, wasm_v128_load(w2 + k)));
        a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(va, wasm_v128_load(w3 + k)));
      }
      float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
      for (int k = K4; k < K; k++) { s0 += xa[k] * w0[k]; s1 += xa[k] * w1[k]; s2 += xa[k] * w2[k]; s3 += xa[k] * w3[k]; }
      float *ya = y + (long)m * N + n;
      ya[0] = s0; ya[1] = s1; ya[2] = s2; ya[3] = s3;
    }
  }
  for (; n < n1; n++) {
    const float *w0 = w + (long)n * K;
    for (int m = 0; m < M; m++) {
      const float *xa = x + (long)m * K;
      v128_t a0 = wasm_f32x4_splat(0);
      for (int k = 0; k < K4; k += 4) a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wasm_v128_load(xa + k), wasm_v128_load(w0 + k)));
      float s0 = hsum(a0);
      for (int k = K4; k < K; k++) s0 += xa[k] * w0[k];
      y[(long)m * N + n] = s0;
    }
  }
}

/*
 * The 16-bit and quantised formats read X from a padded copy (prep_x: rows of Kp, zeros past K), so their
 * inner loops have no tail, and in the order their SIMD decode produces weights (mode):
 *   0  as is (q8)
 *   1  each group of 32 as [16 even k | 16 odd k]: a 16-byte load's low and high nibbles (q4)
 *   2  each group of 8 as [k0 k2 k4 k6 | k1 k3 k5 k7]: the low and high halves of four u32 lanes (f16, bf16)
 * Weights: rows of Kp elements (weight-pack.ts).
 */
EXPORT(prep_x)
void prep_x(const float *x, float *xp, int M, int K, int Kp, int mode) {
  for (int m = 0; m < M; m++) {
    const float *s = x + (long)m * K;
    float *d = xp + (long)m * Kp;
    if (mode == 0) {
      for (int k = 0; k < K; k++) d[k] = s[k];
      for (int k = K; k < Kp; k++) d[k] = 0;
    } else {
      const int gw = mode == 1 ? 32 : 8, half = gw >> 1;
      for (int k = 0; k < Kp; k++) {
        float v = k < K ? s[k] : 0.0f;
        int g = k & ~(gw - 1), j = k & (gw - 1);
        d[g + (j & 1) * half + (j >> 1)] = v;
      }
    }
  }
}

/*
 * f16 (bf16 = 0) or bf16 (bf16 = 1): W [N, Kp] u16, Kp a multiple of 8, x in prep_x mode 2. A 16-byte
 * load holds 8 halves, two per u32 lane: the even elements shifted up (shl 16) and the odd ones masked
 * (and 0xffff0000) are each four values in the top half of their lanes. bf16 is then f32 already; f16
 * becomes f32 by an arithmetic shift right by 3 (the sign lands in bit 31, exponent and mantissa where
 * f32 has them, 13 bits down), a mask, and a multiply by 2^112 that re-biases the exponent (subnormals
 * included). f16 infinities and NaNs are not decoded: WasmKernels.weight stores such matrices as f32.
 */
static inline v128_t f16hi_to_f32(v128_t v) {
  v128_t t = wasm_v128_and(wasm_i32x4_shr(v, 3), wasm_i32x4_splat((int)0x8fffe000));
  return wasm_f32x4_mul(t, wasm_f32x4_splat(0x1p112f));
}
static inline v128_t dot8_16(v128_t h, const float *x, int bf16) {
  v128_t even = wasm_i32x4_shl(h, 16), odd = wasm_v128_and(h, wasm_i32x4_splat((int)0xffff0000));
  if (!bf16) { even = f16hi_to_f32(even); odd = f16hi_to_f32(odd); }
  return wasm_f32x4_add(wasm_f32x4_mul(even, wasm_v128_load(x)), wasm_f32x4_mul(odd, wasm_v128_load(x + 4)));
}

static inline void matmul_16(const float *xp, const u16 *w, float *y, int M, int N, int Kp, int n0, int n1, int bf16) {
  int n = n0;
  for (; n + 4 <= n1; n += 4) {
    const u16 *w0 = w + (long)n * Kp, *w1 = w0 + Kp, *w2 = w1 + Kp, *w3 = w2 + Kp;
    for (int m = 0; m < M; m++) {
      const float *xa = xp + (long)m * Kp;
      v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
      for (int k = 0; k < Kp; k += 8) {
        a0 = wasm_f32x4_add(a0, dot8_16(wasm_v128_load(w0 + k), xa + k, bf16));
        a1 = wasm_f32x4_add(a1, dot8_16(wasm_v128_load(w1 + k), xa + k, bf16));
        a2 = wasm_f32x4_add(a2, dot8_16(wasm_v128_load(w2 + k), xa + k, bf16));
        a3 = wasm_f32x4_add(a3, dot8_16(wasm_v128_load(w3 + k), xa + k, bf16));
      }
      float *ya = y + (long)m * N + n;
      ya[0] = hsum(a0); ya[1] = hsum(a1); ya[2] = hsum(a2); ya[3] = hsum(a3);
    }
  }
  for (; n < n1; n++) {
    const u16 *w0 = w + (long)n * Kp;
    for (int m = 0; m < M; m++) {
      const float *xa = xp + (long)m * Kp;
      v128_t a0 = wasm_f32x4_splat(0);
      for (int k = 0; k < Kp; k += 8) a0 = wasm_f32x4_add(a0, dot8_16(wasm_v128_load(w0 + k), xa + k, bf16));
      y[(long)m * N + n] = hsum(a0);
    }
  }
}

EXPORT(matmul_f16) void matmul_f16(const float *xp, const u16 *w, float *y, int M, int N, int Kp, int n0, int n1) { matmul_16(xp, w, y, M, N, Kp, n0, n1, 0); }
EXPORT(matmul_bf16) void matmul_bf16(const float *xp, const u16 *w, float *y, int M, int N, int Kp, int n0, int n1) { matmul_16(xp, w, y, M, N, Kp, n0, n1, 1); }

/* 16 int8 → four f32x4 products with x, summed. */
static inline v128_t dot16_i8(v128_t q, const float *x) {
  v128_t lo = wasm_i16x8_extend_low_i8x16(q), hi = wasm_i16x8_extend_high_i8x16(q);
  v128_t s = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(lo)), wasm_v128_load(x));
  s = wasm_f32x4_add(s, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(lo)), wasm_v128_load(x + 4)));
  s = wasm_f32x4_add(s, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(hi)), wasm_v128_load(x + 8)));
  return wasm_f32x4_add(s, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(hi)), wasm_v128_load(x + 12)));
}

/* q8: W [N, Kp] int8 (Kp a multiple of 16), scales [N, scaleCols] f32 per group of gs along K. */
EXPORT(matmul_q8)
void matmul_q8(const float *xp, const i8 *w, const float *scales, float *y, int M, int N, int Kp, int gs, int scaleCols, int n0, int n1) {
  for (int n = n0; n < n1; n++) {
    const i8 *wr = w + (long)n * Kp;
    const float *sr = scales + (long)n * scaleCols;
    for (int m = 0; m < M; m++) {
      const float *xa = xp + (long)m * Kp;
      v128_t acc = wasm_f32x4_splat(0);
      for (int g = 0, k0 = 0; k0 < Kp; g++, k0 += gs) {
        int k1 = k0 + gs < Kp ? k0 + gs : Kp;
        v128_t part = wasm_f32x4_splat(0);
        for (int k = k0; k < k1; k += 16) part = wasm_f32x4_add(part, dot16_i8(wasm_v128_load(wr + k), xa + k));
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(part, wasm_f32x4_splat(sr[g])));
      }
      y[(long)m * N + n] = hsum(acc);
    }
  }
}

/* q4: W [N, Kp/2] bytes, nibble pairs (low = even k), stored q + 8; Kp a multiple of 32; x de-interleaved by prep_x. */
EXPORT(matmul_q4)
void matmul_q4(const float *xp, const u8 *w, const float *scales, float *y, int M, int N, int Kp, int gs, int scaleCols, int n0, int n1) {
  const v128_t mask = wasm_i8x16_splat(0x0f), eight = wasm_i8x16_splat(8);
  for (int n = n0; n < n1; n++) {
    const u8 *wr = w + (long)n * (Kp >> 1);
    const float *sr = scales + (long)n * scaleCols;
    for (int m = 0; m < M; m++) {
      const float *xa = xp + (long)m * Kp;
      v128_t acc = wasm_f32x4_splat(0);
      for (int g = 0, k0 = 0; k0 < Kp; g++, k0 += gs) {
        int k1 = k0 + gs < Kp ? k0 + gs : Kp;
        v128_t part = wasm_f32x4_splat(0);
        for (int k = k0; k < k1; k += 32) {
          v128_t b = wasm_v128_load(wr + (k >> 1));
          v128_t even = wasm_i8x16_sub(wasm_v128_and(b, mask), eight);
          v128_t odd = wasm_i8x16_sub(wasm_u8x16_shr(b, 4), eight);
          part = wasm_f32x4_add(part, wasm_f32x4_add(dot16_i8(even, xa + k), dot16_i8(odd, xa + k + 16)));
        }
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(part, wasm_f32x4_splat(sr[g])));
      }
      y[(long)m * N + n] = hsum(acc);
    }
  }
}

/*
 * q8 / q4 weights against int16 activations: each input row is quantised per group of 32 along K (the
 * weights' groups: gs = 32 only) to int16 with scale max|x|/32767 (round half to even;
 * kernels/quant-x16.ref.ts), a relative rounding of ≈ 1/65534 — far below the weights' own. The inner loop
 * widens the int8 weights to i16 and multiplies lanes pairwise into i32 sums (i32x4.dot_i16x8_s: 8
 * products per instruction, exact; a group's sums stay below 2^31: 8 · 127 · 32767 per lane); each group
 * adds its i32 sum × (weight scale · activation scale) in f32. About 0.4 instructions per weight instead
 * of the ≈1.4 of widening weights to f32.
 */
EXPORT(quant_x16)
void quant_x16(const float *x, short *xq, float *xs, int M, int K, int Kp, int q4) {
  const int G = (Kp + 31) >> 5;
  for (int m = 0; m < M; m++) {
    const float *s = x + (long)m * K;
    short *d = xq + (long)m * Kp;
    float *sc = xs + (long)m * G;
    for (int g = 0; g < G; g++) {
      const int k0 = g * 32, k1 = k0 + 32 < Kp ? k0 + 32 : Kp;
      float amax = 0;
      for (int k = k0; k < k1 && k < K; k++) { float a = __builtin_fabsf(s[k]); if (a > amax) amax = a; }
      const float inv = amax > 0 ? 32767.0f / amax : 0.0f;
      sc[g] = amax / 32767.0f;
      for (int k = k0; k < k1; k++) {
        float v = k < K ? __builtin_nearbyintf(s[k] * inv) : 0.0f;
        if (v > 32767.0f) v = 32767.0f; else if (v < -32767.0f) v = -32767.0f;
        int j = k - k0;
        /* q4: [16 even | 16 odd] per group of 32, the nibble order. */
        int at = q4 ? k0 + (j & 1) * 16 + (j >> 1) : k;
        d[at] = (short)v;
      }
    }
  }
}

static inline v128_t dot16_i8i16(v128_t w8, const short *x) {
  v128_t lo = wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(w8), wasm_v128_load(x));
  return wasm_i32x4_add(lo, wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(w8), wasm_v128_load(x + 8)));
}

/* q8 × int16 x: W [N, Kp] int8 (Kp a multiple of 16), scales [N, scaleCols] per 32; xq/xs from quant_x16. */
EXPORT(matmul_q8x16)
void matmul_q8x16(const short *xq, const float *xs, const i8 *w, const float *scales, float *y, int M, int N, int Kp, int scaleCols, int n0, int n1) {
  const int G = (Kp + 31) >> 5;
  for (int n = n0; n < n1; n++) {
    const i8 *wr = w + (long)n * Kp;
    const float *sr = scales + (long)n * scaleCols;
    for (int m = 0; m < M; m++) {
      const short *xa = xq + (long)m * Kp;
      const float *sa = xs + (long)m * G;
      v128_t acc = wasm_f32x4_splat(0);
      for (int g = 0, k0 = 0; k0 < Kp; g++, k0 += 32) {
        v128_t part = dot16_i8i16(wasm_v128_load(wr + k0), xa + k0);
        if (k0 + 16 < Kp) part = wasm_i32x4_add(part, dot16_i8i16(wasm_v128_load(wr + k0 + 16), xa + k0 + 16));
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(part), wasm_f32x4_splat(sr[g] * sa[g])));
      }
      y[(long)m * N + n] = hsum(acc);
    }
  }
}

/* q4 × int16 x: W [N, Kp/2] nibble pairs (Kp a multiple of 32), scales per 32; xq de-interleaved (quant_x16 q4 = 1). */
EXPORT(matmul_q4x16)
void matmul_q4x16(const short *xq, const float *xs, const u8 *w, const float *scales, float *y, int M, int N, int Kp, int scaleCols, int n0, int n1) {
  const v128_t mask = wasm_i8x16_splat(0x0f), eight = wasm_i8x16_splat(8);
  const int G = Kp >> 5;
  for (int n = n0; n < n1; n++) {
    const u8 *wr = w + (long)n * (Kp >> 1);
    const float *sr = scales + (long)n * scaleCols;
    for (int m = 0; m < M; m++) {
      const short *xa = xq + (long)m * Kp;
      const float *sa = xs + (long)m * G;
      v128_t acc = wasm_f32x4_splat(0);
      for (int g = 0; g < G; g++) {
        v128_t b = wasm_v128_load(wr + g * 16);
        v128_t even = wasm_i8x16_sub(wasm_v128_and(b, mask), eight);
        v128_t odd = wasm_i8x16_sub(wasm_u8x16_shr(b, 4), eight);
        v128_t part = wasm_i32x4_add(dot16_i8i16(even, xa + g * 32), dot16_i8i16(odd, xa + g * 32 + 16));
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(part), wasm_f32x4_splat(sr[g] * sa[g])));
      }
      y[(long)m * N + n] = hsum(acc);
    }
  }
}

/* ----------------------------------------------------------------------------- elementwise, norms */

/* y[r, yOff + i] = x[r, xOff + i] · rsqrt(mean(x²) + eps) · w[i] for i < dim (in place when x == y). */
EXPORT(rmsnorm)
void rmsnorm(const float *x, const float *w, float *y, int rows, int dim, int xStride, int yStride, float eps) {
  const int d4 = dim & ~3;
  for (int r = 0; r < rows; r++) {
    const float *xr = x + (long)r * xStride;
    float *yr = y + (long)r * yStride;
    v128_t s = wasm_f32x4_splat(0);
    for (int i = 0; i < d4; i += 4) { v128_t v = wasm_v128_load(xr + i); s = wasm_f32x4_add(s, wasm_f32x4_mul(v, v)); }
    float ss = hsum(s);
    for (int i = d4; i < dim; i++) ss += xr[i] * xr[i];
    float inv = 1.0f / __builtin_sqrtf(ss / (float)dim + eps);
    v128_t vi = wasm_f32x4_splat(inv);
    for (int i = 0; i < d4; i += 4) wasm_v128_store(yr + i, wasm_f32x4_mul(wasm_f32x4_mul(wasm_v128_load(xr + i), vi), wasm_v128_load(w + i)));
    for (int i = d4; i < dim; i++) yr[i] = xr[i] * inv * w[i];
  }
}

/* h += r (n elements). */
EXPORT(add_inplace)
void add_inplace(float *h, const float *r, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) wasm_v128_store(h + i, wasm_f32x4_add(wasm_v128_load(h + i), wasm_v128_load(r + i)));
  for (; i < n; i++) h[i] += r[i];
}

/* out += a·x (n elements). */
EXPORT(axpy)
void axpy(float *out, const float *x, float a, int n) {
  v128_t va = wasm_f32x4_splat(a);
  int i = 0;
  for (; i + 4 <= n; i += 4) wasm_v128_store(out + i, wasm_f32x4_add(wasm_v128_load(out + i), wasm_f32x4_mul(va, wasm_v128_load(x + i))));
  for (; i < n; i++) out[i] += a * x[i];
}

/* SwiGLU on a fused [rows, 2I] gate|up product: h[r, i] = silu(gu[r, i]) · gu[r, I + i]. */
EXPORT(silu_mul_fused)
void silu_mul_fused(const float *gu, float *h, int rows, int I) {
  for (int r = 0; r < rows; r++) {
    const float *g = gu + (long)r * 2 * I, *u = g + I;
    float *o = h + (long)r * I;
    for (int i = 0; i < I; i++) o[i] = silu(g[i]) * u[i];
  }
}

/* h[i] = silu(g[i]) · u[i] (n elements; separate gate and up products, the dense MLP's). */
EXPORT(silu_mul)
void silu_mul(const float *g, const float *u, float *h, int n) {
  for (int i = 0; i < n; i++) h[i] = silu(g[i]) * u[i];
}

/*
 * Interleaved-pair RoPE in place (kernels/rope.ref.ts): row r is at position pos0 + r; cs holds
 * [position][ropeDim/2] (cos, sin) pairs computed on the host exactly as the reference does.
 */
EXPORT(rope)
void rope(float *x, int rows, int heads, int rowStride, int headStride, int offset, int ropeDim, const float *cs, int pos0) {
  const int half = ropeDim >> 1;
  for (int r = 0; r < rows; r++) {
    const float *c = cs + (long)(pos0 + r) * ropeDim;
    for (int h = 0; h < heads; h++) {
      float *b = x + (long)r * rowStride + h * headStride + offset;
      for (int i = 0; i < half; i++) {
        float co = c[2 * i], si = c[2 * i + 1], u = b[2 * i], v = b[2 * i + 1];
        b[2 * i] = u * co - v * si;
        b[2 * i + 1] = u * si + v * co;
      }
    }
  }
}

/* ----------------------------------------------------------------------------------------- MLA */

static inline float dotf(const float *a, const float *b, int n) {
  v128_t s = wasm_f32x4_splat(0);
  int i = 0;
  for (; i + 4 <= n; i += 4) s = wasm_f32x4_add(s, wasm_f32x4_mul(wasm_v128_load(a + i), wasm_v128_load(b + i)));
  float t = hsum(s);
  for (; i < n; i++) t += a[i] * b[i];
  return t;
}

/*
 * Multi-head Latent Attention in the absorbed form (kernels/mla.ref.ts, mode 'absorb') over the latent
 * cache, for queries s in [s0, s1) at positions past + s, heads [h0, h1):
 *   q     [S, H·(nope+rope)]   per head [q_nope | q_pe], q_pe roped
 *   kvB   [H·(nope+v), r]      per head rows [W_UK (nope rows) | W_UV (v rows)]
 *   lat   [T, r], pe [T, rope] the cache (T ≥ past + S)
 *   out   [S, H·v]
 * scratch: r + rope + r + (past + S) floats.
 */
EXPORT(mla_attention)
void mla_attention(const float *q, const float *kvB, const float *lat, const float *pe, float *out, float *scratch,
                   int S, int H, int nope, int rope, int dv, int r, int past, float scale, int s0, int s1, int h0, int h1) {
  float *qa = scratch, *olat = scratch + r + rope, *p = olat + r;
  const int dq = nope + rope;
  for (int s = s0; s < s1; s++) {
    const int T = past + s + 1;
    for (int h = h0; h < h1; h++) {
      const float *qh = q + (long)s * H * dq + h * dq;
      /* q̃ = W_UK,hᵀ · q_nope (accumulated row by row: SIMD over r). */
      for (int j = 0; j < r; j++) qa[j] = 0;
      for (int n = 0; n < nope; n++) {
        const float *wr = kvB + (long)(h * (nope + dv) + n) * r;
        float a = qh[n];
        int j = 0;
        v128_t va = wasm_f32x4_splat(a);
        for (; j + 4 <= r; j += 4) wasm_v128_store(qa + j, wasm_f32x4_add(wasm_v128_load(qa + j), wasm_f32x4_mul(va, wasm_v128_load(wr + j))));
        for (; j < r; j++) qa[j] += a * wr[j];
      }
      for (int i = 0; i < rope; i++) qa[r + i] = qh[nope + i];
      float mx = -__builtin_inff();
      for (int t = 0; t < T; t++) {
        float sc = (dotf(qa, lat + (long)t * r, r) + dotf(qa + r, pe + (long)t * rope, rope)) * scale;
        p[t] = sc;
        if (sc > mx) mx = sc;
      }
      float sum = 0;
      for (int t = 0; t < T; t++) { float e = expf_(p[t] - mx); p[t] = e; sum += e; }
      float inv = 1.0f / sum;
      for (int j = 0; j < r; j++) olat[j] = 0;
      for (int t = 0; t < T; t++) {
        const float *lr = lat + (long)t * r;
        v128_t pt = wasm_f32x4_splat(p[t] * inv);
        int j = 0;
        for (; j + 4 <= r; j += 4) wasm_v128_store(olat + j, wasm_f32x4_add(wasm_v128_load(olat + j), wasm_f32x4_mul(pt, wasm_v128_load(lr + j))));
        for (; j < r; j++) olat[j] += p[t] * inv * lr[j];
      }
      float *o = out + (long)s * H * dv + h * dv;
      for (int i = 0; i < dv; i++) o[i] = dotf(kvB + (long)(h * (nope + dv) + nope + i) * r, olat, r);
    }
  }
}

/* ----------------------------------------------------------------------------------- MoE routing */

static inline int beats(float va, int a, float vb, int b) { return va > vb || (va == vb && a < b); }

/*
 * The DeepSeek router on logits [T, E] (kernels/moe.ref.ts moeGateRef): sigmoid (scoring 0) or softmax
 * (1) scores s; selection c = s + bias (hasBias); groups of E/nGroup experts scored by the sum of their
 * top-2 c (with a bias) or their max; the best topkGroup groups stay; ids = top-K of c (ties → lower
 * index); weights = s[ids], renormalised when norm, × scaling. scratch: 2E + nGroup floats.
 */
EXPORT(moe_route)
void moe_route(const float *logits, const float *bias, int T, int E, int K, int nGroup, int topkGroup, int scoring, int norm, float scaling,
               int *ids, float *weights, float *scratch) {
  float *s = scratch, *c = scratch + E, *gsc = scratch + 2 * E;
  const int gs = E / nGroup;
  const float NEG = -__builtin_inff();
  for (int t = 0; t < T; t++) {
    const float *l = logits + (long)t * E;
    if (scoring == 0) {
      for (int e = 0; e < E; e++) s[e] = 1.0f / (1.0f + expf_(-l[e]));
    } else {
      float m = NEG, z = 0;
      for (int e = 0; e < E; e++) if (l[e] > m) m = l[e];
      for (int e = 0; e < E; e++) { s[e] = expf_(l[e] - m); z += s[e]; }
      for (int e = 0; e < E; e++) s[e] /= z;
    }
    for (int e = 0; e < E; e++) c[e] = bias ? s[e] + bias[e] : s[e];
    if (nGroup > 1 && topkGroup < nGroup) {
      for (int g = 0; g < nGroup; g++) {
        const float *cg = c + g * gs;
        if (bias) {
          int b1 = 0;
          for (int i = 1; i < gs; i++) if (beats(cg[i], i, cg[b1], b1)) b1 = i;
          float v = cg[b1];
          if (gs > 1) {
            int b2 = b1 == 0 ? 1 : 0;
            for (int i = 0; i < gs; i++) if (i != b1 && beats(cg[i], i, cg[b2], b2)) b2 = i;
            v += cg[b2];
          }
          gsc[g] = v;
        } else {
          float v = cg[0];
          for (int i = 1; i < gs; i++) if (cg[i] > v) v = cg[i];
          gsc[g] = v;
        }
      }
      /* Keep the topkGroup best groups: pick them one by one, marking picked ones with NaN-free −∞ after. */
      unsigned long long keep = 0;
      for (int j = 0; j < topkGroup; j++) {
        int b = -1;
        for (int g = 0; g < nGroup; g++) if (!((keep >> g) & 1ULL) && (b < 0 || beats(gsc[g], g, gsc[b], b))) b = g;
        keep |= 1ULL << b;
      }
      for (int e = 0; e < E; e++) if (!((keep >> (e / gs)) & 1ULL)) c[e] = NEG;
    }
    int *it = ids + (long)t * K;
    float *wt = weights + (long)t * K;
    float sum = 0;
    for (int j = 0; j < K; j++) {
      int b = -1;
      for (int e = 0; e < E; e++) {
        int taken = 0;
        for (int i = 0; i < j; i++) if (it[i] == e) { taken = 1; break; }
        if (!taken && (b < 0 || beats(c[e], e, c[b], b))) b = e;
      }
      it[j] = b;
      wt[j] = s[b];
      sum += s[b];
    }
    float f = norm ? scaling / (sum + 1e-20f) : scaling;
    for (int j = 0; j < K; j++) wt[j] *= f;
  }
}

/* ------------------------------------------------------------------------------ structured sparsity */

/*
 * Sparse weights (src/sparse/formats.ts) keep 2 values per group of GW columns. SparseByteNN's lesson for
 * CPUs: decode indices outside the inner loop and keep SIMD lanes full. Here:
 *   - the loader turns each (row, group)'s two 2-bit codes into one pair index p ∈ 0..5 (one byte:
 *     (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)), so the inner loop does no bit twiddling;
 *   - per input row x, a pair table holds, for every group of 4 candidate columns, its 6 ordered pairs
 *     (x[a], x[b]) — 12 floats per group, built once and shared by all N rows (V:2:M first gathers the
 *     block's 4 selected columns per group, once per block of V rows, so it is 2:4 over those);
 *   - the inner loop then takes 4 kept values (two groups) per step: two 8-byte loads from the table
 *     fill one f32x4 lane-for-lane with the values' x, one multiply-add with 4 contiguous kept values.
 * Kept values are f32 [N, 2G]; pidx u8 [N, G]; V:2:M columns u8 [ceil(N/V), G, 4].
 */
static const u8 PAIR_A[6] = { 0, 0, 0, 1, 1, 2 };
static const u8 PAIR_B[6] = { 1, 2, 3, 2, 3, 3 };

/* tab [G, 6, 2] from x4 [G, 4]. */
static void pair_table(const float *x4, float *tab, int G) {
  for (int g = 0; g < G; g++) {
    const float *s = x4 + g * 4;
    float *t = tab + g * 12;
    for (int p = 0; p < 6; p++) { t[2 * p] = s[PAIR_A[p]]; t[2 * p + 1] = s[PAIR_B[p]]; }
  }
}

/* Σ over groups of row (values vr, pair indices pr) against the pair table. */
static inline float sparse_row_dot(const float *tab, const float *vr, const u8 *pr, int G) {
  v128_t a0 = wasm_f32x4_splat(0), a1 = a0;
  int g = 0;
  for (; g + 4 <= G; g += 4) {
    v128_t t0 = wasm_v128_load64_zero(tab + g * 12 + pr[g] * 2);
    t0 = wasm_v128_load64_lane(tab + (g + 1) * 12 + pr[g + 1] * 2, t0, 1);
    v128_t t1 = wasm_v128_load64_zero(tab + (g + 2) * 12 + pr[g + 2] * 2);
    t1 = wasm_v128_load64_lane(tab + (g + 3) * 12 + pr[g + 3] * 2, t1, 1);
    a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(t0, wasm_v128_load(vr + 2 * g)));
    a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(t1, wasm_v128_load(vr + 2 * g + 4)));
  }
  float s = hsum(wasm_f32x4_add(a0, a1));
  for (; g < G; g++) { const float *t = tab + g * 12 + pr[g] * 2; s += t[0] * vr[2 * g] + t[1] * vr[2 * g + 1]; }
  return s;
}

/* Two input rows against one weight row: the kept values and pair indices are loaded once for both. */
static inline void sparse_row_dot2(const float *ta, const float *tb, const float *vr, const u8 *pr, int G, float *ya, float *yb) {
  v128_t a = wasm_f32x4_splat(0), b = a;
  int g = 0;
  for (; g + 2 <= G; g += 2) {
    const int o0 = g * 12 + pr[g] * 2, o1 = (g + 1) * 12 + pr[g + 1] * 2;
    v128_t v = wasm_v128_load(vr + 2 * g);
    a = wasm_f32x4_add(a, wasm_f32x4_mul(wasm_v128_load64_lane(ta + o1, wasm_v128_load64_zero(ta + o0), 1), v));
    b = wasm_f32x4_add(b, wasm_f32x4_mul(wasm_v128_load64_lane(tb + o1, wasm_v128_load64_zero(tb + o0), 1), v));
  }
  float sa = hsum(a), sb = hsum(b);
  for (; g < G; g++) {
    const int o = g * 12 + pr[g] * 2;
    sa += ta[o] * vr[2 * g] + ta[o + 1] * vr[2 * g + 1];
    sb += tb[o] * vr[2 * g] + tb[o + 1] * vr[2 * g + 1];
  }
  *ya = sa; *yb = sb;
}

/* 2:4: xp [M, 4G] (zero-padded rows), tab scratch [24G] (two input rows at a time). Rows [n0, n1) of y [M, N]. */
EXPORT(sparse24_matmul)
void sparse24_matmul(const float *xp, const float *values, const u8 *pidx, float *y, float *tab, int M, int N, int G, int n0, int n1) {
  int m = 0;
  for (; m + 2 <= M; m += 2) {
    float *tb = tab + 12 * G;
    pair_table(xp + (long)m * 4 * G, tab, G);
    pair_table(xp + (long)(m + 1) * 4 * G, tb, G);
    for (int n = n0; n < n1; n++) sparse_row_dot2(tab, tb, values + (long)n * 2 * G, pidx + (long)n * G, G, y + (long)m * N + n, y + (long)(m + 1) * N + n);
  }
  for (; m < M; m++) {
    pair_table(xp + (long)m * 4 * G, tab, G);
    for (int n = n0; n < n1; n++) y[(long)m * N + n] = sparse_row_dot(tab, values + (long)n * 2 * G, pidx + (long)n * G, G);
  }
}

/* V:2:M: xp [M, Mw·G] (zero-padded rows), cols [ceil(N/V), G, 4], scratch [32G] (two input rows at a time). */
EXPORT(vnm_matmul)
void vnm_matmul(const float *xp, const float *values, const u8 *pidx, const u8 *cols, float *y, float *scratch, int M, int N, int G, int V, int Mw, int n0, int n1) {
  float *x4a = scratch, *taba = scratch + 4 * G, *x4b = scratch + 16 * G, *tabb = scratch + 20 * G;
  int m = 0;
  for (; m < M; m += 2) {
    const int two = m + 1 < M;
    const float *xa = xp + (long)m * Mw * G, *xb = xa + Mw * G;
    for (int b0 = n0 - n0 % V; b0 < n1; b0 += V) {
      const u8 *cb = cols + (long)(b0 / V) * G * 4;
      for (int g = 0; g < G; g++) for (int i = 0; i < 4; i++) x4a[g * 4 + i] = xa[g * Mw + cb[g * 4 + i]];
      pair_table(x4a, taba, G);
      if (two) {
        for (int g = 0; g < G; g++) for (int i = 0; i < 4; i++) x4b[g * 4 + i] = xb[g * Mw + cb[g * 4 + i]];
        pair_table(x4b, tabb, G);
      }
      int r0 = b0 > n0 ? b0 : n0, r1 = b0 + V < n1 ? b0 + V : n1;
      for (int n = r0; n < r1; n++) {
        const float *vr = values + (long)n * 2 * G;
        const u8 *pr = pidx + (long)n * G;
        if (two) sparse_row_dot2(taba, tabb, vr, pr, G, y + (long)m * N + n, y + (long)(m + 1) * N + n);
        else y[(long)m * N + n] = sparse_row_dot(taba, vr, pr, G);
      }
    }
  }
}

/* ------------------------------------------------------------------------------------ GGUF blocks */

#include "gguf.c"

/* The Llama-style families' kernels (GQA attention, half-split RoPE, biases, gates): their own file, same module. */
#include "kernels-gqa.c"

/* q8 / q4 quantisation at load from a checkpoint's BF16 / F16 / F32 bytes (weight-pack.ts' layout): its own file, same module. */
#include "weight-pack.c"
