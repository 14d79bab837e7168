/**
 * CPU references for scaled dot-product attention (float64 accumulation). No GPU imports: also used by
 * the CPU reference model.
 *
 * Layout (elements; every stride/offset optional, defaults = dense rows):
 *   q   [S, qStride]: head h of query s at  s·qStride + qOffset + h·qHeadStride, dQk values
 *   k   [T, kStride]: kv head g of key t at t·kStride + kOffset + g·kHeadStride, dQk values
 *   v   [T, vStride]: kv head g of key t at t·vStride + vOffset + g·vHeadStride, dV values
 *   out [S, heads·dV] dense.
 * Head h uses kv head ⌊h / (heads/kvHeads)⌋ (GQA/MQA). Causal: key t is visible to query s iff
 * t ≤ past + s; with a sliding window W also t > past + s − W. Sinks (GPT-OSS): head h's logit
 * sinks[h] joins the softmax denominator and carries no value, as HF's eager_attention_forward
 * (softmax over [scores, sink], sink column dropped).
 */
import type { AttentionShape } from './attention';

export type { AttentionShape };

/** Resolved addressing: strides/offsets filled with their dense defaults. */
export function attentionLayout(a: AttentionShape) {
  const qHeadStride = a.qHeadStride ?? a.dQk;
  const kHeadStride = a.kHeadStride ?? a.dQk;
  const vHeadStride = a.vHeadStride ?? a.dV;
  return {
    qStride: a.qStride ?? a.heads * qHeadStride, qOffset: a.qOffset ?? 0, qHeadStride,
    kStride: a.kStride ?? a.kvHeads * kHeadStride, kOffset: a.kOffset ?? 0, kHeadStride,
    vStride: a.vStride ?? a.kvHeads * vHeadStride, vOffset: a.vOffset ?? 0, vHeadStride,
  };
}

/** Number of keys query s may see: keys [firstVisibleKey, visibleKeys). */
export const visibleKeys = (a: Pick<AttentionShape, 'T' | 'past' | 'causal'>, s: number) => (a.causal ? Math.min(a.T, a.past + s + 1) : a.T);
/** First key query s sees: its sliding-window start (0 without a window). */
export const firstVisibleKey = (a: Pick<AttentionShape, 'past' | 'window'>, s: number) => (a.window ? Math.max(0, a.past + s + 1 - a.window) : 0);

/** Materialised softmax(scale·QKᵀ + mask)·V, the plain definition; `sinks` [heads] join the denominator. */
export function attentionRef(q: Float32Array, k: Float32Array, v: Float32Array, a: AttentionShape, sinks?: Float32Array): Float32Array {
  const L = attentionLayout(a);
  const gs = a.heads / a.kvHeads;
  const out = new Float32Array(a.S * a.heads * a.dV);
  const p = new Float64Array(a.T);
  for (let s = 0; s < a.S; s++) {
    const n = visibleKeys(a, s), t0 = firstVisibleKey(a, s);
    for (let h = 0; h < a.heads; h++) {
      const g = Math.floor(h / gs);
      const qb = s * L.qStride + L.qOffset + h * L.qHeadStride;
      let mx = sinks ? sinks[h] : -Infinity;
      for (let t = t0; t < n; t++) {
        const kb = t * L.kStride + L.kOffset + g * L.kHeadStride;
        let d = 0;
        for (let i = 0; i < a.dQk; i++) d += q[qb + i] * k[kb + i];
        p[t] = d * a.scale;
        mx = Math.max(mx, p[t]);
      }
      let sum = sinks ? Math.exp(sinks[h] - mx) : 0;
      for (let t = t0; t < n; t++) sum += p[t] = Math.exp(p[t] - mx);
      const ob = (s * a.heads + h) * a.dV;
      for (let c = 0; c < a.dV; c++) {
        let o = 0;
        for (let t = t0; t < n; t++) o += p[t] * v[t * L.vStride + L.vOffset + g * L.vHeadStride + c];
        out[ob + c] = o / sum;
      }
    }
  }
  return out;
}

/**
 * The algorithm the GPU kernels run, in plain TS: keys in tiles of `tile` with the online-softmax
 * recurrence (running max m, running sum l, rescaled accumulator), split into `splits` key ranges that
 * are merged by the log-sum-exp combine. Scores live in the log2 domain (scale·log2 e folded in).
 * Equal to attentionRef up to rounding; the unit tests check exactly that.
 */
export function attentionOnlineRef(q: Float32Array, k: Float32Array, v: Float32Array, a: AttentionShape, tile = 32, splits = 1, sinks?: Float32Array): Float32Array {
  const L = attentionLayout(a);
  const gs = a.heads / a.kvHeads;
  const out = new Float32Array(a.S * a.heads * a.dV);
  const scaleLog2 = a.scale * Math.LOG2E;
  for (let s = 0; s < a.S; s++) {
    const end = visibleKeys(a, s);
    // The kernels split [window start, T) of a row tile; here every row is its own tile.
    const lo = firstVisibleKey(a, s);
    const chunk = Math.ceil(Math.ceil((a.T - lo) / splits) / tile) * tile;
    for (let h = 0; h < a.heads; h++) {
      const g = Math.floor(h / gs);
      const qb = s * L.qStride + L.qOffset + h * L.qHeadStride;
      const parts: { m: number; l: number; o: Float64Array }[] = [];
      for (let sp = 0; sp < splits; sp++) {
        const k0 = lo + sp * chunk, k1 = Math.min(end, k0 + chunk);
        let m = -Infinity, l = 0;
        const o = new Float64Array(a.dV);
        for (let t0 = k0; t0 < k1; t0 += tile) {
          const t1 = Math.min(k1, t0 + tile);
          const sc: number[] = [];
          for (let t = t0; t < t1; t++) {
            let d = 0;
            const kb = t * L.kStride + L.kOffset + g * L.kHeadStride;
            for (let i = 0; i < a.dQk; i++) d += q[qb + i] * k[kb + i];
            sc.push(d * scaleLog2);
          }
          const mNew = Math.max(m, ...sc);
          const alpha = (2 ** (m - mNew));
          l *= alpha;
          for (let c = 0; c < a.dV; c++) o[c] *= alpha;
          sc.forEach((x, j) => {
            const p = (2 ** (x - mNew));
            l += p;
            const vb = (t0 + j) * L.vStride + L.vOffset + g * L.vHeadStride;
            for (let c = 0; c < a.dV; c++) o[c] += p * v[vb + c];
          });
          m = mNew;
        }
        parts.push({ m, l, o });
      }
      // LSE combine: weights 2^(m_c − M); empty splits (m = −∞, l = 0) contribute nothing; the sink
      // joins the denominator once, after the splits are merged.
      const M = Math.max(...parts.map((x) => x.m));
      let den = sinks ? 2 ** (sinks[h] * Math.LOG2E - M) : 0;
      const num = new Float64Array(a.dV);
      for (const x of parts) {
        if (x.m === -Infinity) continue;
        const w = (2 ** (x.m - M));
        den += w * x.l;
        for (let c = 0; c < a.dV; c++) num[c] += w * x.o[c];
      }
      const ob = (s * a.heads + h) * a.dV;
      for (let c = 0; c < a.dV; c++) out[ob + c] = num[c] / den;
    }
  }
  return out;
}
