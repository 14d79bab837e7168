/**
 * CPU references for the MoE layer: router (gate), expert MLPs, shared expert, the token→expert
 * permutation used by the grouped (prefill) path, and the whole layer. Plain TypeScript, float64
 * accumulation, no GPU imports: the CPU reference model uses these too.
 *
 * Router conventions (DeepSeek-V3 `Gate.forward`, fixtures/deepseek-v3-tiny/README.md "Router"):
 *   s = sigmoid(logits) | softmax(logits)         unbiased scores, recomputed from the logits
 *   c = s + bias                                   selection only (bias = e_score_correction_bias)
 *   groups of E/n_group contiguous experts: score = sum of the top-2 c (with a bias) or max c (without);
 *   keep the top topk_group groups, the others' c = −∞; ids = top-K of c (descending, ties → lower index)
 *   w = s[ids], / Σ w (+1e-20) when normTopkProb, × routedScalingFactor.
 * Plain softmax top-K routers (Mixtral, Qwen-MoE, OLMoE) are n_group 1, no bias, softmax scoring, with
 * (Mixtral, Qwen3) or without (OLMoE, Qwen1.5) renormalisation.
 */
import { checkRouting, type MoeRouting } from './moe-routing';

export type { MoeRouting };



/** Router logits [T, E] = x [T, D] · gateW [E, D]ᵀ (float64 accumulation). */
export function routerLogitsRef(x: Float32Array, gateW: Float32Array, T: number, D: number, E: number): Float32Array {
  const out = new Float32Array(T * E);
  for (let t = 0; t < T; t++) {
    for (let e = 0; e < E; e++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += x[t * D + d] * gateW[e * D + d];
      out[t * E + e] = s;
    }
  }
  return out;
}

/** Order of a before b: larger first, equal values → lower index first. */
const beats = (va: number, a: number, vb: number, b: number) => va > vb || (va === vb && a < b);

/** Indices of the k largest values (descending; ties → lower index first). */
export function topKIndices(v: ArrayLike<number>, k: number): number[] {
  const idx = Array.from({ length: v.length }, (_, i) => i);
  idx.sort((a, b) => (beats(v[a], a, v[b], b) ? -1 : beats(v[b], b, v[a], a) ? 1 : 0));
  return idx.slice(0, k);
}

export interface GateRefResult {
  /** [T][K] chosen experts in descending selection score */
  ids: number[][];
  /** [T][K] final multipliers (incl. routed scaling) */
  weights: number[][];
  /** [T, E] unbiased scores */
  scores: Float32Array;
  /** [T][E] selection scores after the group mask (−∞ for masked experts) */
  selection: number[][];
}

/** The router on precomputed logits [T, E]. */
export function moeGateRef(logits: Float32Array, bias: Float32Array | null, routing: MoeRouting, T: number): GateRefResult {
  const err = checkRouting(routing);
  if (err) throw new Error(`moeGateRef: ${err}`);
  const E = routing.experts, K = routing.topK;
  if (routing.hasBias && (!bias || bias.length < E)) throw new Error('moeGateRef: routing.hasBias but no bias [E]');
  const gs = E / routing.nGroup;
  const ids: number[][] = [], weights: number[][] = [], selection: number[][] = [];
  const scores = new Float32Array(T * E);
  for (let t = 0; t < T; t++) {
    const l = logits.subarray(t * E, (t + 1) * E);
    const s = new Array<number>(E);
    if (routing.scoring === 'sigmoid') {
      for (let e = 0; e < E; e++) s[e] = 1 / (1 + Math.exp(-l[e]));
    } else {
      let m = -Infinity;
      for (let e = 0; e < E; e++) m = Math.max(m, l[e]);
      let z = 0;
      for (let e = 0; e < E; e++) z += Math.exp(l[e] - m);
      for (let e = 0; e < E; e++) s[e] = Math.exp(l[e] - m) / z;
    }
    for (let e = 0; e < E; e++) scores[t * E + e] = s[e];
    const c = s.map((v, e) => (routing.hasBias ? v + bias![e] : v));
    if (routing.nGroup > 1 && routing.topkGroup < routing.nGroup) {
      const g = new Array<number>(routing.nGroup);
      for (let gi = 0; gi < routing.nGroup; gi++) {
        const part = c.slice(gi * gs, (gi + 1) * gs);
        if (routing.hasBias) {
          const top = topKIndices(part, Math.min(2, gs));
          g[gi] = top.reduce((a, i) => a + part[i], 0);
        } else {
          g[gi] = Math.max(...part);
        }
      }
      const keep = new Set(topKIndices(g, routing.topkGroup));
      for (let e = 0; e < E; e++) if (!keep.has(Math.floor(e / gs))) c[e] = -Infinity;
    }
    const chosen = topKIndices(c, K);
    let w = chosen.map((e) => s[e]);
    if (routing.normTopkProb) {
      const sum = w.reduce((a, b) => a + b, 0) + 1e-20;
      w = w.map((v) => v / sum);
    }
    ids.push(chosen);
    weights.push(w.map((v) => v * routing.routedScalingFactor));
    selection.push(c);
  }
  return { ids, weights, scores, selection };
}

/** One SwiGLU expert: down(silu(gate·x) ⊙ up·x) for one row x [D]; gate/up [I, D], down [D, I] (HF layout). */
export function expertMlpRef(x: ArrayLike<number>, gate: Float32Array, up: Float32Array, down: Float32Array, D: number, I: number): Float64Array {
  const h = new Float64Array(I);
  for (let i = 0; i < I; i++) {
    let g = 0, u = 0;
    for (let d = 0; d < D; d++) {
      g += gate[i * D + d] * x[d];
      u += up[i * D + d] * x[d];
    }
    h[i] = (g / (1 + Math.exp(-g))) * u;
  }
  const y = new Float64Array(D);
  for (let d = 0; d < D; d++) {
    let s = 0;
    for (let i = 0; i < I; i++) s += down[d * I + i] * h[i];
    y[d] = s;
  }
  return y;
}

export interface ExpertWeightsRef { gate: Float32Array; up: Float32Array; down: Float32Array }

/**
 * out[t] = Σ_j w[t][j]·E_{ids[t][j]}(x[t]) + shared[t] (shared [T, D] or null): the result of every
 * moeExperts path (decode, batched, grouped); the sorted order they may run in is moePermutationRef's.
 */
export function moeExpertsRef(x: Float32Array, T: number, D: number, I: number, experts: ExpertWeightsRef[], ids: number[][], weights: number[][], shared: Float32Array | null): Float32Array {
  const out = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    const xt = x.subarray(t * D, (t + 1) * D);
    const acc = new Float64Array(D);
    ids[t].forEach((e, j) => {
      const y = expertMlpRef(xt, experts[e].gate, experts[e].up, experts[e].down, D, I);
      for (let d = 0; d < D; d++) acc[d] += weights[t][j] * y[d];
    });
    for (let d = 0; d < D; d++) out[t * D + d] = acc[d] + (shared ? shared[t * D + d] : 0);
  }
  return out;
}

/** The shared expert(s) as one SwiGLU MLP of width Is = gate.length / D, for T rows. */
export function sharedExpertRef(x: Float32Array, T: number, D: number, w: ExpertWeightsRef): Float32Array {
  const Is = w.gate.length / D;
  const out = new Float32Array(T * D);
  for (let t = 0; t < T; t++) out.set(expertMlpRef(x.subarray(t * D, (t + 1) * D), w.gate, w.up, w.down, D, Is), t * D);
  return out;
}

/** The whole MoE layer: router → routed experts (weighted) + shared experts (unscaled). */
export function moeLayerRef(
  x: Float32Array, T: number, D: number,
  w: { gate: Float32Array; bias: Float32Array | null; experts: ExpertWeightsRef[]; shared: ExpertWeightsRef | null },
  I: number, routing: MoeRouting,
): { out: Float32Array; ids: number[][]; weights: number[][]; scores: Float32Array } {
  const logits = routerLogitsRef(x, w.gate, T, D, routing.experts);
  const g = moeGateRef(logits, w.bias, routing, T);
  const shared = w.shared ? sharedExpertRef(x, T, D, w.shared) : null;
  const out = moeExpertsRef(x, T, D, I, w.experts, g.ids, g.weights, shared);
  return { out, ids: g.ids, weights: g.weights, scores: g.scores };
}

export interface PermutationRef {
  /** [N] sorted position → entry (t·K + j), stable: entries of one expert keep token order */
  perm: Uint32Array;
  /** [N] entry → sorted position */
  inv: Uint32Array;
  /** [E+1] segment starts of each expert in sorted order */
  offsets: Uint32Array;
  /** [E+1] first row tile of each expert when each segment is split into tiles of `tileRows` */
  tileStart: Uint32Array;
}

/** The grouped path's token permutation: entries (t, j) sorted by expert id, stable. */
export function moePermutationRef(ids: ArrayLike<number>, E: number, tileRows: number): PermutationRef {
  const N = ids.length;
  const counts = new Uint32Array(E);
  for (let i = 0; i < N; i++) counts[ids[i]]++;
  const offsets = new Uint32Array(E + 1), tileStart = new Uint32Array(E + 1);
  for (let e = 0; e < E; e++) {
    offsets[e + 1] = offsets[e] + counts[e];
    tileStart[e + 1] = tileStart[e] + Math.ceil(counts[e] / tileRows);
  }
  const cur = offsets.slice(0, E);
  const perm = new Uint32Array(N), inv = new Uint32Array(N);
  for (let i = 0; i < N; i++) {
    const pos = cur[ids[i]]++;
    perm[pos] = i;
    inv[i] = pos;
  }
  return { perm, inv, offsets, tileStart };
}

/** Tokens per expert for a routing result. */
export function expertCountsRef(ids: number[][], E: number): number[] {
  const c = new Array<number>(E).fill(0);
  for (const row of ids) for (const e of row) c[e]++;
  return c;
}

/**
 * group_remap of moe_dispatch.wgsl: the entries of experts [e0, e1) renumbered from 0, the others at
 * expert 0 with weight 0 (routed experts held as several stacks, one pass per stack).
 */
export function groupRemapRef(ids: ArrayLike<number>, weights: ArrayLike<number>, e0: number, e1: number): { ids: Uint32Array; weights: Float32Array } {
  const n = ids.length;
  const outIds = new Uint32Array(n), outW = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const inside = ids[i] >= e0 && ids[i] < e1;
    outIds[i] = inside ? ids[i] - e0 : 0;
    outW[i] = inside ? weights[i] : 0;
  }
  return { ids: outIds, weights: outW };
}

/** GPT-OSS's clamped SwiGLU constants (HF GptOssExperts alpha, config swiglu_limit). */
export const GPT_OSS_SWIGLU = { alpha: 1.702, limit: 7.0 } as const;

/**
 * GPT-OSS router (HF GptOssTopKRouter): logits = x·Wᵀ + b, top-k of the logits (descending, ties →
 * lower index), softmax over the k selected logits.
 */
export function gptOssRouterRef(x: Float32Array, W: Float32Array, b: Float32Array, T: number, D: number, E: number, K: number): { ids: number[][]; weights: number[][] } {
  const logits = routerLogitsRef(x, W, T, D, E);
  const ids: number[][] = [], weights: number[][] = [];
  for (let t = 0; t < T; t++) {
    const l = Array.from(logits.subarray(t * E, (t + 1) * E), (v, e) => v + b[e]);
    const top = topKIndices(l, K);
    const m = l[top[0]];
    const ex = top.map((e) => Math.exp(l[e] - m));
    const z = ex.reduce((a, c) => a + c, 0);
    ids.push(top);
    weights.push(ex.map((v) => v / z));
  }
  return { ids, weights };
}

/**
 * One GPT-OSS expert for one row x [D], as HF GptOssExperts (and the official swiglu) in the HF layout:
 * gateUp [2I, D] with gate rows even and up rows odd (gate_up_proj transposed: column 2i is gate i,
 * 2i+1 up i), gateUpBias [2I] interleaved the same way, down [D, I], downBias [D]:
 *   gate = min(g, limit), up = clamp(u, −limit, limit), h = gate·sigmoid(alpha·gate)·(up + 1),
 *   y = down·h + downBias.
 */
export function gptOssExpertRef(x: ArrayLike<number>, gateUp: Float32Array, gateUpBias: Float32Array, down: Float32Array, downBias: Float32Array, D: number, I: number, act: { alpha: number; limit: number } = GPT_OSS_SWIGLU): Float64Array {
  const h = new Float64Array(I);
  for (let i = 0; i < I; i++) {
    let g = gateUpBias[2 * i], u = gateUpBias[2 * i + 1];
    for (let d = 0; d < D; d++) {
      g += gateUp[2 * i * D + d] * x[d];
      u += gateUp[(2 * i + 1) * D + d] * x[d];
    }
    g = Math.min(g, act.limit);
    u = Math.min(Math.max(u, -act.limit), act.limit);
    h[i] = (g / (1 + Math.exp(-act.alpha * g))) * (u + 1);
  }
  const y = new Float64Array(D);
  for (let d = 0; d < D; d++) {
    let s = downBias[d];
    for (let i = 0; i < I; i++) s += down[d * I + i] * h[i];
    y[d] = s;
  }
  return y;
}

/** out[t] = Σ_j w[t][j]·GptOssExpert_{ids[t][j]}(x[t]) over HF-layout experts (see gptOssExpertRef). */
export function gptOssExpertsRef(
  x: Float32Array, T: number, D: number, I: number,
  experts: { gateUp: Float32Array; gateUpBias: Float32Array; down: Float32Array; downBias: Float32Array }[],
  ids: number[][], weights: number[][], act: { alpha: number; limit: number } = GPT_OSS_SWIGLU,
): Float32Array {
  const out = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    const acc = new Float64Array(D);
    ids[t].forEach((e, j) => {
      const ex = experts[e];
      const y = gptOssExpertRef(x.subarray(t * D, (t + 1) * D), ex.gateUp, ex.gateUpBias, ex.down, ex.downBias, D, I, act);
      for (let d = 0; d < D; d++) acc[d] += weights[t][j] * y[d];
    });
    out.set(acc, t * D);
  }
  return out;
}
