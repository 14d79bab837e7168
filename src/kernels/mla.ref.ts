/**
 * CPU references for Multi-head Latent Attention (DeepSeek-V2/V3), both paths, float64 accumulation.
 *
 * Conventions (fixtures/deepseek-v3-tiny/README.md):
 *   q     [S, H·(nope+rope)]   per head [q_nope | q_pe], q_pe already roped
 *   latent[T, kvLora]          RMSNorm(c_KV) of every cached token (the latent cache, T = past + S)
 *   kPe   [T, rope]            roped k_pe of every cached token, shared by all heads
 *   kvB   [H·(nope+v), kvLora] per head rows [W_UK (nope rows) | W_UV (v rows)]
 *   out   [S, H·v]
 * Causal: key t visible to query s iff t ≤ past + s. `scale` is the caller's softmax scale (YaRN mscale
 * included); the absorbed path uses the same scale although its dot product is kvLora+rope long.
 */
import { attentionRef } from './attention.ref';
import type { MlaDims } from './mla';


export interface MlaRefArgs {
  dims: MlaDims;
  q: Float32Array;
  latent: Float32Array;
  kPe: Float32Array;
  kvB: Float32Array;
  past: number;
  S: number;
  scale: number;
  mode?: 'naive' | 'absorb';
}

/** Expanded keys/values: K [T, H, nope+rope] = [W_UK,h·c | k_pe], V [T, H, v] = W_UV,h·c. */
export function mlaExpandKvRef(d: MlaDims, latent: Float32Array, kPe: Float32Array, kvB: Float32Array, T: number) {
  const { heads: H, qkNope: nope, qkRope: rope, vHead: dv, kvLora: r } = d;
  const dk = nope + rope;
  const k = new Float32Array(T * H * dk);
  const v = new Float32Array(T * H * dv);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < nope + dv; n++) {
        const wb = (h * (nope + dv) + n) * r;
        let s = 0;
        for (let j = 0; j < r; j++) s += kvB[wb + j] * latent[t * r + j];
        if (n < nope) k[(t * H + h) * dk + n] = s;
        else v[(t * H + h) * dv + n - nope] = s;
      }
      for (let i = 0; i < rope; i++) k[(t * H + h) * dk + nope + i] = kPe[t * rope + i];
    }
  }
  return { k, v };
}

/** Absorbed queries q̃ [S, H, kvLora+rope] = [W_UK,hᵀ·q_nope,h | q_pe,h]. */
export function mlaAbsorbQRef(d: MlaDims, q: Float32Array, kvB: Float32Array, S: number): Float32Array {
  const { heads: H, qkNope: nope, qkRope: rope, vHead: dv, kvLora: r } = d;
  const dq = nope + rope, da = r + rope;
  const out = new Float32Array(S * H * da);
  for (let s = 0; s < S; s++) {
    for (let h = 0; h < H; h++) {
      const qb = (s * H + h) * dq, ob = (s * H + h) * da;
      for (let j = 0; j < r; j++) {
        let acc = 0;
        for (let n = 0; n < nope; n++) acc += kvB[(h * (nope + dv) + n) * r + j] * q[qb + n];
        out[ob + j] = acc;
      }
      for (let i = 0; i < rope; i++) out[ob + r + i] = q[qb + nope + i];
    }
  }
  return out;
}

/** o_h = W_UV,h · o_lat,h: [S, H, kvLora] → [S, H·v]. */
export function mlaUpVRef(d: MlaDims, oLat: Float32Array, kvB: Float32Array, S: number): Float32Array {
  const { heads: H, qkNope: nope, vHead: dv, kvLora: r } = d;
  const out = new Float32Array(S * H * dv);
  for (let s = 0; s < S; s++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < dv; i++) {
        const wb = (h * (nope + dv) + nope + i) * r;
        let acc = 0;
        for (let j = 0; j < r; j++) acc += kvB[wb + j] * oLat[(s * H + h) * r + j];
        out[(s * H + h) * dv + i] = acc;
      }
    }
  }
  return out;
}

/** One MLA attention block for S queries at positions [past, past+S) over the T = past+S cached tokens. */
export function mlaAttentionRef(a: MlaRefArgs): Float32Array {
  const d = a.dims;
  const T = a.past + a.S;
  const { heads: H, qkNope: nope, qkRope: rope, vHead: dv, kvLora: r } = d;
  if (a.latent.length < T * r || a.kPe.length < T * rope) throw new Error(`mlaAttentionRef: latent/kPe hold fewer than past+S = ${T} rows`);
  if ((a.mode ?? 'naive') === 'naive') {
    const { k, v } = mlaExpandKvRef(d, a.latent, a.kPe, a.kvB, T);
    return attentionRef(a.q, k, v, { S: a.S, T, past: a.past, heads: H, kvHeads: H, dQk: nope + rope, dV: dv, scale: a.scale, causal: true });
  }
  // Absorbed: MQA with one KV head, K = [latent | pe] (kvLora+rope), V = latent.
  const qa = mlaAbsorbQRef(d, a.q, a.kvB, a.S);
  const kv = new Float32Array(T * (r + rope));
  for (let t = 0; t < T; t++) {
    kv.set(a.latent.subarray(t * r, (t + 1) * r), t * (r + rope));
    kv.set(a.kPe.subarray(t * rope, (t + 1) * rope), t * (r + rope) + r);
  }
  const oLat = attentionRef(qa, kv, kv, { S: a.S, T, past: a.past, heads: H, kvHeads: 1, dQk: r + rope, dV: r, scale: a.scale, causal: true, kStride: r + rope, vStride: r + rope });
  return mlaUpVRef(d, oLat, a.kvB, a.S);
}

/**
 * The absorbed attention core (what mla_decode computes): qa [S, H, kvLora+rope] against cache rows
 * [T = past+S, rowStride] of [latent | pe] (V = the latent part), causal (row (s, h) sees t ≤ past + s),
 * softmax scale `scale`; returns o_lat [S, H, kvLora]. Float64 accumulation.
 */
export function mlaDecodeRef(a: { H: number; kvLora: number; rope: number; S: number; past: number; qa: Float32Array; rows: Float32Array; rowStride: number; scale: number }): Float32Array {
  const { H, kvLora: r, rope, S, past } = a;
  const dk = r + rope, T = past + S;
  if (a.rows.length < (T - 1) * a.rowStride + dk) throw new Error(`mlaDecodeRef: rows hold fewer than past+S = ${T} cache rows`);
  const out = new Float32Array(S * H * r);
  const w = new Float64Array(T);
  const acc = new Float64Array(r);
  for (let s = 0; s < S; s++) {
    for (let h = 0; h < H; h++) {
      const qb = (s * H + h) * dk, lim = past + s;
      let mx = -Infinity;
      for (let t = 0; t <= lim; t++) {
        let dot = 0;
        for (let d = 0; d < dk; d++) dot += a.qa[qb + d] * a.rows[t * a.rowStride + d];
        w[t] = dot * a.scale;
        mx = Math.max(mx, w[t]);
      }
      let sum = 0;
      acc.fill(0);
      for (let t = 0; t <= lim; t++) {
        const p = Math.exp(w[t] - mx);
        sum += p;
        for (let c = 0; c < r; c++) acc[c] += p * a.rows[t * a.rowStride + c];
      }
      for (let c = 0; c < r; c++) out[(s * H + h) * r + c] = acc[c] / sum;
    }
  }
  return out;
}
