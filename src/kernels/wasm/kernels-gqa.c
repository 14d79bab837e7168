/*
 * The Llama-style families' kernels (Qwen2-MoE, Qwen3-MoE, OLMoE, Mixtral, Granite-MoE, GPT-OSS):
 * grouped-query attention over a per-kv-head K/V cache (causal, optional sliding window and attention
 * sinks), half-split RoPE (HF rotate_half), projection biases, multipliers, the shared expert's sigmoid
 * gate and GPT-OSS's clamped SwiGLU. Part of the same module: kernels.c includes this file at its end
 * (one translation unit, so expf_, hsum and dotf are shared), and the same rules hold: no libc, no stack.
 * CPU references: kernels/attention.ref.ts, rope.ref.ts, elementwise.ref.ts, moe.ref.ts
 * (test/unit/wasm-kernels-gqa.test.ts).
 */

/*
 * Half-split RoPE in place (kernels/rope.ref.ts style 'half'): pair i is (i, i + ropeDim/2); cs holds
 * [position][ropeDim/2] (cos, sin) pairs as for rope(). Four pairs per step: the (cos, sin) pairs are
 * de-interleaved by two shuffles.
 */
EXPORT(rope_half)
void rope_half(float *x, int rows, int heads, int rowStride, int headStride, int offset, int ropeDim, const float *cs, int pos0) {
  const int half = ropeDim >> 1, h4 = half & ~3;
  for (int r = 0; r < rows; r++) {
    const float *c = cs + (long)(pos0 + r) * ropeDim;
    for (int h = 0; h < heads; h++) {
      float *a = x + (long)r * rowStride + h * headStride + offset, *b = a + half;
      int i = 0;
      for (; i < h4; i += 4) {
        v128_t p0 = wasm_v128_load(c + 2 * i), p1 = wasm_v128_load(c + 2 * i + 4);
        v128_t co = wasm_i32x4_shuffle(p0, p1, 0, 2, 4, 6), si = wasm_i32x4_shuffle(p0, p1, 1, 3, 5, 7);
        v128_t u = wasm_v128_load(a + i), v = wasm_v128_load(b + i);
        wasm_v128_store(a + i, wasm_f32x4_sub(wasm_f32x4_mul(u, co), wasm_f32x4_mul(v, si)));
        wasm_v128_store(b + i, wasm_f32x4_add(wasm_f32x4_mul(u, si), wasm_f32x4_mul(v, co)));
      }
      for (; i < half; i++) {
        float co = c[2 * i], si = c[2 * i + 1], u = a[i], v = b[i];
        a[i] = u * co - v * si;
        b[i] = u * si + v * co;
      }
    }
  }
}

/* x[r, :] += b for every row r of x [rows, cols] (a projection's bias). */
EXPORT(add_bias_rows)
void add_bias_rows(float *x, const float *b, int rows, int cols) {
  const int c4 = cols & ~3;
  for (int r = 0; r < rows; r++) {
    float *xr = x + (long)r * cols;
    int i = 0;
    for (; i < c4; i += 4) wasm_v128_store(xr + i, wasm_f32x4_add(wasm_v128_load(xr + i), wasm_v128_load(b + i)));
    for (; i < cols; i++) xr[i] += b[i];
  }
}

/* x *= s (n elements; Granite's multipliers). */
EXPORT(scale_inplace)
void scale_inplace(float *x, float s, int n) {
  v128_t vs = wasm_f32x4_splat(s);
  int i = 0;
  for (; i + 4 <= n; i += 4) wasm_v128_store(x + i, wasm_f32x4_mul(wasm_v128_load(x + i), vs));
  for (; i < n; i++) x[i] *= s;
}

/* y[r, :] *= sigmoid(g[r]) for y [rows, cols] (Qwen2-MoE's shared_expert_gate; elementwise.ref.ts sigmoidGateRowsRef). */
EXPORT(sigmoid_gate_rows)
void sigmoid_gate_rows(float *y, const float *g, int rows, int cols) {
  for (int r = 0; r < rows; r++) scale_inplace(y + (long)r * cols, 1.0f / (1.0f + expf_(-g[r])), cols);
}

/*
 * GPT-OSS's clamped SwiGLU (moe.ref.ts gptOssExpertRef) on a fused [rows, 2I] gate|up product (biases
 * already added): g = min(gate, limit), u = clamp(up, −limit, limit), h = g·sigmoid(alpha·g)·(u + 1).
 */
EXPORT(swiglu_oai_fused)
void swiglu_oai_fused(const float *gu, float *h, int rows, int I, float alpha, float limit) {
  for (int r = 0; r < rows; r++) {
    const float *g = gu + (long)r * 2 * I, *u = g + I;
    float *o = h + (long)r * I;
    for (int i = 0; i < I; i++) {
      float gi = g[i] < limit ? g[i] : limit;
      float ui = u[i] < -limit ? -limit : u[i] > limit ? limit : u[i];
      o[i] = gi / (1.0f + expf_(-alpha * gi)) * (ui + 1.0f);
    }
  }
}

/*
 * Grouped-query attention (kernels/attention.ref.ts attentionRef) for queries s in [s0, s1) at positions
 * past + s, heads [h0, h1), over the per-kv-head cache:
 *   q    [S, H·d]       roped
 *   kc   [T, KVH·d]     keys (roped), vc [T, KVH·d] values, T ≥ past + S
 *   out  [S, H·d]
 * Head h reads kv head h / (H/KVH). Query s sees keys [max(0, pos + 1 − window), pos] (window 0: from 0).
 * sinks (0: none) [H]: head h's sink logit joins the softmax's max and denominator and carries no value.
 * scratch: past + S floats (the probabilities of one query and head).
 */
EXPORT(gqa_attention)
void gqa_attention(const float *q, const float *kc, const float *vc, const float *sinks, float *out, float *scratch,
                   int S, int H, int KVH, int d, int past, float scale, int window, int s0, int s1, int h0, int h1) {
  float *p = scratch;
  const int group = H / KVH, kvw = KVH * d, d4 = d & ~3;
  for (int s = s0; s < s1; s++) {
    const int pos = past + s;
    const int t0 = window > 0 && pos + 1 - window > 0 ? pos + 1 - window : 0;
    for (int h = h0; h < h1; h++) {
      const int g = h / group;
      const float *qh = q + (long)s * H * d + h * d;
      const float *kg = kc + g * d, *vg = vc + g * d;
      float mx = sinks ? sinks[h] : -__builtin_inff();
      int t = t0;
      /* Four keys per step, each load of q shared by four accumulators (same sums as dotf, key by key);
         the last keys one by one. */
      for (; t + 4 <= pos + 1; t += 4) {
        const float *k0 = kg + (long)t * kvw, *k1 = k0 + kvw, *k2 = k1 + kvw, *k3 = k2 + kvw;
        v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i < d4; i += 4) {
          v128_t qv = wasm_v128_load(qh + i);
          a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(qv, wasm_v128_load(k0 + i)));
          a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(qv, wasm_v128_load(k1 + i)));
          a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(qv, wasm_v128_load(k2 + i)));
          a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(qv, wasm_v128_load(k3 + i)));
        }
        float s4[4] = { hsum(a0), hsum(a1), hsum(a2), hsum(a3) };
        for (; i < d; i++) { s4[0] += qh[i] * k0[i]; s4[1] += qh[i] * k1[i]; s4[2] += qh[i] * k2[i]; s4[3] += qh[i] * k3[i]; }
        for (int j = 0; j < 4; j++) {
          float sc = s4[j] * scale;
          p[t + j] = sc;
          if (sc > mx) mx = sc;
        }
      }
      for (; t <= pos; t++) {
        float sc = dotf(qh, kg + (long)t * kvw, d) * scale;
        p[t] = sc;
        if (sc > mx) mx = sc;
      }
      float sum = sinks ? expf_(sinks[h] - mx) : 0;
      for (int t = t0; t <= pos; t++) { float e = expf_(p[t] - mx); p[t] = e; sum += e; }
      float inv = 1.0f / sum;
      float *o = out + (long)s * H * d + h * d;
      for (int i = 0; i < d; i++) o[i] = 0;
      /* Four values per pass over o: o += (p₀v₀ + p₁v₁) + (p₂v₂ + p₃v₃) (a quarter of the loads and stores of o). */
      for (t = t0; t + 4 <= pos + 1; t += 4) {
        const float *v0 = vg + (long)t * kvw, *v1 = v0 + kvw, *v2 = v1 + kvw, *v3 = v2 + kvw;
        const float q0 = p[t] * inv, q1 = p[t + 1] * inv, q2 = p[t + 2] * inv, q3 = p[t + 3] * inv;
        v128_t c0 = wasm_f32x4_splat(q0), c1 = wasm_f32x4_splat(q1), c2 = wasm_f32x4_splat(q2), c3 = wasm_f32x4_splat(q3);
        int i = 0;
        for (; i < d4; i += 4) {
          v128_t a = wasm_f32x4_add(wasm_f32x4_mul(c0, wasm_v128_load(v0 + i)), wasm_f32x4_mul(c1, wasm_v128_load(v1 + i)));
          v128_t b = wasm_f32x4_add(wasm_f32x4_mul(c2, wasm_v128_load(v2 + i)), wasm_f32x4_mul(c3, wasm_v128_load(v3 + i)));
          wasm_v128_store(o + i, wasm_f32x4_add(wasm_v128_load(o + i), wasm_f32x4_add(a, b)));
        }
        for (; i < d; i++) o[i] += (q0 * v0[i] + q1 * v1[i]) + (q2 * v2[i] + q3 * v3[i]);
      }
      for (; t <= pos; t++) {
        const float *vr = vg + (long)t * kvw;
        v128_t pt = wasm_f32x4_splat(p[t] * inv);
        int i = 0;
        for (; i < d4; i += 4) wasm_v128_store(o + i, wasm_f32x4_add(wasm_v128_load(o + i), wasm_f32x4_mul(pt, wasm_v128_load(vr + i))));
        for (; i < d; i++) o[i] += p[t] * inv * vr[i];
      }
    }
  }
}
