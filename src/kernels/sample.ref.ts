/**
 * Token sampling, the exact algorithm the GPU kernel (shaders/sample.wgsl) runs, written plainly.
 *
 *  1. Repetition penalty (HF): for each distinct id in the history, l = l > 0 ? l·(1/rp) : l·rp (f32).
 *  2. Greedy when temperature ≤ 0 or topK = 1: the largest logit, ties → lowest index (NaN never wins).
 *  3. z = l·(1/T) (f32), M = max z, integer weights W_i = floor(exp(z_i − M)·2^20) (the largest is 2^20;
 *     tokens below e^−13.9 of the top get 0 and are never drawn).
 *  4. Top-k (0 < topK < V): τk = the topK-th largest z; keep z ≥ τk (ties with τk are all kept).
 *  5. Top-p (topP < 1): S1 = Σ kept W, need = max(1, floor(S1·P32 / 2^32)) with P32 = floor(topP·2^32);
 *     τp = the largest z whose kept tokens with z' ≥ z carry ≥ need; keep z ≥ τp (ties kept).
 *  6. u = pcg(pcg(seed) + step) (32 bits); t = floor(S2·u / 2^32) with S2 = Σ kept W; the token is the
 *     first kept index (in index order) where the running Σ W exceeds t.
 *
 * Keys: z compared through its order-preserving u32 (sortable bits, NaN → 0, below −∞). All sums are
 * exact integers, so the GPU and this reference agree whenever their exp() round to the same W (they can
 * differ by one unit for a few tokens; the drawn token then changes only if t lands on that unit).
 * Sampling in index order (not sorted order) gives the same distribution as the sorted inverse CDF.
 */
import { isGreedy, topPFixed, type SamplingParams } from './sample-params';

export type { SamplingParams };

export const MASS_BITS = 20;
const MASS_ONE = 2 ** MASS_BITS;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Order-preserving u32 of an f32 (NaN → 0). */
export function sortableKey(v: number): number {
  if (Number.isNaN(v)) return 0;
  f32[0] = v;
  const b = u32[0];
  return (b & 0x80000000 ? ~b : b | 0x80000000) >>> 0;
}
export function keyToF32(k: number): number {
  u32[0] = k & 0x80000000 ? (k & 0x7fffffff) >>> 0 : ~k >>> 0;
  return f32[0];
}

/** PCG hash (O'Neill's RXS-M-XS output on one LCG step). */
export function pcg(x: number): number {
  const state = (Math.imul(x >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** The 32-bit uniform of draw `step` for `seed`. */
export function sampleUniform(seed: number, step: number): number {
  return pcg((pcg(seed >>> 0) + (step >>> 0)) >>> 0);
}

/** Logits after the repetition penalty and temperature, as the sampler sees them. */
export function penalisedScaled(logits: Float32Array, params: SamplingParams, history?: number[]): Float32Array {
  const z = Float32Array.from(logits);
  const rp = params.repetitionPenalty;
  if (history && rp !== 1) {
    const inv = Math.fround(1 / rp);
    for (const id of new Set(history)) {
      if (id < 0 || id >= z.length) continue;
      const l = logits[id];
      z[id] = l > 0 ? Math.fround(l * inv) : Math.fround(l * rp);
    }
  }
  if (!isGreedy(params)) {
    const invT = Math.fround(1 / params.temperature);
    for (let i = 0; i < z.length; i++) z[i] = Math.fround(z[i] * invT);
  }
  return z;
}

/** The kept set (flags) and integer weights of steps 3–5. */
export function keptDistribution(logits: Float32Array, params: SamplingParams, history?: number[]): { kept: Uint8Array; W: Float64Array; z: Float32Array } {
  const z = penalisedScaled(logits, params, history);
  const V = z.length;
  const keys = new Uint32Array(V);
  let maxKey = 0;
  for (let i = 0; i < V; i++) { keys[i] = sortableKey(z[i]); if (keys[i] > maxKey) maxKey = keys[i]; }
  const M = keyToF32(maxKey);
  const W = new Float64Array(V);
  for (let i = 0; i < V; i++) W[i] = keys[i] === 0 ? 0 : Math.floor(Math.fround(Math.exp(Math.fround(z[i] - M))) * MASS_ONE);
  const order = Array.from(keys.keys()).sort((a, b) => keys[b] - keys[a] || a - b);
  let tauK = 0;
  if (params.topK > 0 && params.topK < V) tauK = keys[order[params.topK - 1]];
  let tauP = 0;
  if (params.topP < 1) {
    let S1 = 0n;
    for (let i = 0; i < V; i++) if (keys[i] >= tauK) S1 += BigInt(W[i]);
    let need = (S1 * BigInt(topPFixed(params.topP))) >> 32n;
    if (need < 1n) need = 1n;
    let cum = 0n;
    for (const i of order) {
      if (keys[i] < tauK) break;
      cum += BigInt(W[i]);
      if (cum >= need) { tauP = keys[i]; break; }
    }
  }
  const kept = new Uint8Array(V);
  for (let i = 0; i < V; i++) kept[i] = keys[i] >= tauK && keys[i] >= tauP ? 1 : 0;
  return { kept, W, z };
}

/** The token the GPU sampler draws for (logits, params, step, history). */
export function sampleRef(logits: Float32Array, params: SamplingParams, step: number, history?: number[]): number {
  if (isGreedy(params)) {
    const z = penalisedScaled(logits, params, history);
    let best = 0;
    for (let i = 1; i < z.length; i++) if (sortableKey(z[i]) > sortableKey(z[best])) best = i;
    return best;
  }
  const { kept, W } = keptDistribution(logits, params, history);
  let S2 = 0n;
  for (let i = 0; i < W.length; i++) if (kept[i]) S2 += BigInt(W[i]);
  const t = (S2 * BigInt(sampleUniform(params.seed, step))) >> 32n;
  let cum = 0n, last = 0;
  for (let i = 0; i < W.length; i++) {
    if (!kept[i]) continue;
    cum += BigInt(W[i]);
    last = i;
    if (cum > t) return i;
  }
  return last;
}

/** The probabilities sampleRef draws from (kept W / Σ kept W): for statistical tests. */
export function sampleDistribution(logits: Float32Array, params: SamplingParams, history?: number[]): Float64Array {
  const p = new Float64Array(logits.length);
  if (isGreedy(params)) { p[sampleRef(logits, params, 0, history)] = 1; return p; }
  const { kept, W } = keptDistribution(logits, params, history);
  let s = 0;
  for (let i = 0; i < W.length; i++) if (kept[i]) s += W[i];
  for (let i = 0; i < W.length; i++) p[i] = kept[i] ? W[i] / s : 0;
  return p;
}
