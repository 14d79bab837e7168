/**
 * Input-channel permutation before N:M / V:2:M pruning (Apex ASP's channel swap search; the V:N:M paper
 * 2410.16135 permutes input channels too). The patterns group consecutive input columns: which columns
 * share a group decides what the pruner can keep. Reordering the columns of W [N, K] so that large weights
 * are not crowded into the same group raises the magnitude kept, and if the same order is applied to
 * whatever produces the input vector, the layer computes the same function with no run-time gather.
 *
 * Where it folds: the input of an MLP's down_proj is the intermediate activation silu(gate·x) ⊙ (up·x),
 * element-wise per intermediate channel, so permuting down's input columns together with gate's and up's
 * output rows is exact (`permuteMlp`). gate/up read the hidden state (the residual stream, shared by every
 * layer and the norms): their input columns cannot be permuted locally, so their input-blocked pruning is
 * unchanged by this (for 2:4 exactly; for V:2:M the row permutation regroups their V-row blocks, which
 * changes — and can lower — their kept norm a little; `permuteMlp` reports it).
 *
 * Search: first-improvement random channel swaps between two groups (seeded PRNG, a bounded number of
 * trials and an optional time limit), scoring each group by the magnitude the pruner keeps: 2:4 — Σ_rows
 * top-2 of the group's 4 |w|; V:2:M — per V-row block, the 4 columns with the largest block L1 (the
 * 2410.16135 rule; the exhaustive VENOM pick of prune.ts is used when M ≤ 6) then Σ_rows top-2 of those
 * 4. The result is checked with the real pruner: a permutation that does not raise the kept Frobenius
 * norm is dropped for the identity, so permuting never keeps less.
 */
import { ShapeError } from '../errors';
import { checkVnm } from './formats';
import { prune24, pruneVnm, subsets4 } from './prune';
import { mulberry32 } from '../util/random';

export interface PermutePattern { format: '2:4' | 'vnm'; v?: number; m?: number }

export interface PermuteSearchOptions {
  /**
   * Swap trials (deterministic bound); default 8192: on the bundled model's expert down_proj (256×128)
   * 1000 / 4000 / 16000 trials keep 0.9371 / 0.9390 / 0.9393 at 2:4 (0.9306 unpermuted) in 0.05–0.3 s.
   */
  maxTrials?: number;
  /** Wall-clock bound in ms (stops early; results then depend on machine speed). */
  timeLimitMs?: number;
  seed?: number;
  /** Importance: K column norms (|w|·a[k]) or an N·K score array; default |w|. */
  importance?: Float32Array;
}

export interface InputPermutation {
  /** perm[j] = original column placed at position j (length K). */
  perm: Int32Array;
  /** Kept ‖W_pruned‖_F / ‖W‖_F with the pruner of prune.ts, without and with the permutation. */
  keptNormBefore: number;
  keptNormAfter: number;
  trials: number;
  swaps: number;
  /** True when the search result was no better than identity under the real pruner (perm is identity). */
  identity: boolean;
}

function check(w: Float32Array, N: number, K: number) {
  if (!Number.isInteger(N) || N < 1 || !Number.isInteger(K) || K < 1) throw new ShapeError(`permute: N and K must be positive integers, got ${N}×${K}`);
  if (w.length !== N * K) throw new ShapeError(`permute: w has ${w.length} values, expected ${N}·${K}`);
}

function checkPerm(perm: Int32Array, n: number) {
  if (perm.length !== n) throw new ShapeError(`permute: permutation has ${perm.length} entries, expected ${n}`);
  const seen = new Uint8Array(n);
  for (const p of perm) {
    if (!(p >= 0 && p < n) || seen[p]) throw new ShapeError(`permute: not a permutation of 0..${n - 1} (entry ${p})`);
    seen[p] = 1;
  }
}

/** out[:, j] = w[:, perm[j]]. */
export function permuteColumns(w: Float32Array, N: number, K: number, perm: Int32Array): Float32Array {
  check(w, N, K);
  checkPerm(perm, K);
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let j = 0; j < K; j++) out[n * K + j] = w[n * K + perm[j]];
  return out;
}

/** out[i, :] = w[perm[i], :]. */
export function permuteRows(w: Float32Array, N: number, K: number, perm: Int32Array): Float32Array {
  check(w, N, K);
  checkPerm(perm, N);
  const out = new Float32Array(N * K);
  for (let i = 0; i < N; i++) out.set(w.subarray(perm[i] * K, perm[i] * K + K), i * K);
  return out;
}

const pruneKept = (w: Float32Array, N: number, K: number, o: PermutePattern, imp?: Float32Array) =>
  (o.format === '2:4' ? prune24(w, N, K, imp) : pruneVnm(w, N, K, o.v ?? 64, o.m ?? 8, imp)).keptNormFraction;

/** Importance permuted like the columns (K norms or an N·K array). */
function permuteImportance(imp: Float32Array | undefined, N: number, K: number, perm: Int32Array): Float32Array | undefined {
  if (!imp) return undefined;
  if (imp.length === K) return Float32Array.from(perm, (p) => imp[p]);
  return permuteColumns(imp, N, K, perm);
}

/** Sum of the two largest of four. */
function top2Sum(a: number, b: number, c: number, d: number): number {
  const hi1 = Math.max(a, b), lo1 = Math.min(a, b), hi2 = Math.max(c, d), lo2 = Math.min(c, d);
  return Math.max(hi1, hi2) + Math.max(Math.min(hi1, hi2), Math.max(lo1, lo2));
}

/** Searches an input-column permutation of W [N, K] that raises the magnitude the pattern keeps. */
export function searchInputPermutation(w: Float32Array, N: number, K: number, o: PermutePattern, opts: PermuteSearchOptions = {}): InputPermutation {
  check(w, N, K);
  const vnm = o.format === 'vnm';
  const V = vnm ? o.v ?? 64 : N, M = vnm ? o.m ?? 8 : 4;
  if (vnm) checkVnm('permute', V, M);
  const GW = M, G = Math.ceil(K / GW), NB = Math.ceil(N / V);
  const imp = opts.importance;
  if (imp && imp.length !== K && imp.length !== N * K) throw new ShapeError(`permute: importance has ${imp.length} entries; expected K = ${K} or N·K = ${N * K}`);
  // Column-major scores: col[c * N + n] = importance of W[n, c]; a padding slot (-1) scores 0.
  const col = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let c = 0; c < K; c++) {
    const a = Math.abs(w[n * K + c]);
    col[c * N + n] = !imp ? a : imp.length === K ? a * imp[c] : imp[n * K + c];
  }
  const slots = new Int32Array(G * GW).fill(-1);
  for (let c = 0; c < K; c++) slots[c] = c;
  const at = (c: number, n: number) => (c < 0 ? 0 : col[c * N + n]);
  const exactSets = vnm && M <= 6 ? subsets4(M) : null;
  const l1 = new Float64Array(GW);
  const groupScore = (cs: ArrayLike<number>): number => {
    if (!vnm) {
      let t = 0;
      for (let n = 0; n < N; n++) t += top2Sum(at(cs[0], n), at(cs[1], n), at(cs[2], n), at(cs[3], n));
      return t;
    }
    let t = 0;
    for (let b = 0; b < NB; b++) {
      const r0 = b * V, r1 = Math.min(N, r0 + V);
      if (exactSets) {
        let best = 0;
        for (const s of exactSets) {
          let u = 0;
          for (let n = r0; n < r1; n++) u += top2Sum(at(cs[s[0]], n), at(cs[s[1]], n), at(cs[s[2]], n), at(cs[s[3]], n));
          if (u > best) best = u;
        }
        t += best;
        continue;
      }
      for (let j = 0; j < GW; j++) {
        let u = 0;
        const c = cs[j];
        if (c >= 0) for (let n = r0; n < r1; n++) u += col[c * N + n];
        l1[j] = u;
      }
      // the 4 largest block-L1 columns (lower slot wins ties), then each row's top-2 of them
      const pick = [-1, -1, -1, -1];
      for (let j = 0; j < GW; j++) {
        let i = 3;
        if (pick[3] >= 0 && l1[j] <= l1[pick[3]]) continue;
        while (i > 0 && (pick[i - 1] < 0 || l1[j] > l1[pick[i - 1]])) { pick[i] = pick[i - 1]; i--; }
        pick[i] = j;
      }
      const c0 = pick[0] < 0 ? -1 : cs[pick[0]], c1 = pick[1] < 0 ? -1 : cs[pick[1]], c2 = pick[2] < 0 ? -1 : cs[pick[2]], c3 = pick[3] < 0 ? -1 : cs[pick[3]];
      for (let n = r0; n < r1; n++) t += top2Sum(at(c0, n), at(c1, n), at(c2, n), at(c3, n));
    }
    return t;
  };
  const value = new Float64Array(G);
  for (let g = 0; g < G; g++) value[g] = groupScore(slots.subarray(g * GW, g * GW + GW));

  const maxTrials = opts.maxTrials ?? 8192;
  const deadline = opts.timeLimitMs !== undefined ? performance.now() + opts.timeLimitMs : Infinity;
  const rand = mulberry32(opts.seed ?? 0x5eed);
  const ga = new Int32Array(GW), gb = new Int32Array(GW);
  let trials = 0, swaps = 0;
  if (G > 1) {
    for (; trials < maxTrials; trials++) {
      if ((trials & 255) === 0 && performance.now() > deadline) break;
      const a = Math.floor(rand() * K), b = Math.floor(rand() * K);
      const pa = Math.floor(a / GW), pb = Math.floor(b / GW);
      if (pa === pb) continue;
      // a and b index slots 0..K-1, which always hold real columns (padding sits in slots ≥ K)
      ga.set(slots.subarray(pa * GW, pa * GW + GW));
      gb.set(slots.subarray(pb * GW, pb * GW + GW));
      const t = ga[a - pa * GW];
      ga[a - pa * GW] = gb[b - pb * GW];
      gb[b - pb * GW] = t;
      const va = groupScore(ga), vb = groupScore(gb);
      if (va + vb > (value[pa] + value[pb]) * (1 + 1e-9)) {
        slots.set(ga, pa * GW);
        slots.set(gb, pb * GW);
        value[pa] = va;
        value[pb] = vb;
        swaps++;
      }
    }
  }
  const perm = Int32Array.from(slots.subarray(0, K));
  const keptNormBefore = pruneKept(w, N, K, o, imp);
  const keptNormAfter = swaps ? pruneKept(permuteColumns(w, N, K, perm), N, K, o, permuteImportance(imp, N, K, perm)) : keptNormBefore;
  if (keptNormAfter <= keptNormBefore) {
    return { perm: Int32Array.from({ length: K }, (_, i) => i), keptNormBefore, keptNormAfter: keptNormBefore, trials, swaps, identity: true };
  }
  return { perm, keptNormBefore, keptNormAfter, trials, swaps, identity: false };
}

export interface MlpWeights { gate: Float32Array; up: Float32Array; down: Float32Array }
export interface PermutedMlp extends MlpWeights {
  perm: Int32Array;
  /** down_proj kept norm without / with the permutation (the matrix it is searched for). */
  downKeptBefore: number;
  downKeptAfter: number;
  /** gate+up kept norm without / with the permutation (V:2:M row blocks; equal for 2:4). */
  gateUpKeptBefore: number;
  gateUpKeptAfter: number;
}

/**
 * Permutes one gated MLP's intermediate channels (gate [I, D], up [I, D], down [D, I]) for the down
 * projection's pattern, then (V:2:M) orders whole groups for gate/up's row blocks (searchRowBlockOrder):
 * down's columns and gate's and up's rows move together, so the MLP computes the same function.
 * `importance` is down's (I activation norms or D·I scores).
 */
export function permuteMlp(x: MlpWeights, D: number, I: number, o: PermutePattern, opts: PermuteSearchOptions = {}): PermutedMlp {
  if (x.gate.length !== I * D || x.up.length !== I * D || x.down.length !== D * I) throw new ShapeError(`permuteMlp: gate ${x.gate.length}, up ${x.up.length}, down ${x.down.length}; want ${I}×${D}, ${I}×${D}, ${D}×${I}`);
  const r = searchInputPermutation(x.down, D, I, o, opts);
  const rows = searchRowBlockOrder(x.gate, x.up, D, I, r.perm, o);
  const stats = { downKeptBefore: r.keptNormBefore, downKeptAfter: r.keptNormAfter, gateUpKeptBefore: rows.keptBefore, gateUpKeptAfter: rows.keptAfter };
  if (r.identity && rows.identity) return { gate: x.gate, up: x.up, down: x.down, perm: rows.perm, ...stats };
  return { gate: permuteRows(x.gate, I, D, rows.perm), up: permuteRows(x.up, I, D, rows.perm), down: permuteColumns(x.down, D, I, rows.perm), perm: rows.perm, ...stats };
}

export interface RowBlockOrder {
  /** The intermediate order after group swaps (perm[j] = original channel at position j). */
  perm: Int32Array;
  /** ‖[gate; up]_pruned‖_F / ‖[gate; up]‖_F with the pruner of prune.ts, with the input order and after. */
  keptBefore: number;
  keptAfter: number;
  swaps: number;
  identity: boolean;
}

/**
 * Output-channel permutation of gate/up for V:2:M (the paper's P_o, where it folds exactly): the
 * intermediate order also decides which channels share a V-row block of gate_proj and up_proj [I, D]. Given
 * down_proj's order (`perm`, from searchInputPermutation), swapping the contents of two whole M-groups of
 * positions leaves down_proj's groups — and so its pruned values — unchanged, but regroups gate/up's row
 * blocks. First-improvement passes over all group pairs that touch different blocks, scoring a block by
 * the magnitude the pruner keeps (block-L1 top-4 columns per M-group, then each row's top-2: the rule of
 * 2410.16135), then checked with the real pruner: kept norm never drops. `importance`: D activation norms
 * of gate/up's input (|w|·‖x‖), or none (|w|). 2:4 has no row blocks: returns `perm` unchanged.
 */
export function searchRowBlockOrder(gate: Float32Array, up: Float32Array, D: number, I: number, perm: Int32Array, o: PermutePattern, opts: { importance?: Float32Array; maxPasses?: number } = {}): RowBlockOrder {
  check(gate, I, D);
  check(up, I, D);
  checkPerm(perm, I);
  const keptOf = (p: Int32Array) => {
    let k2 = 0, t2 = 0;
    for (const w of [gate, up]) {
      const wp = permuteRows(w, I, D, p);
      const r = o.format === '2:4' ? prune24(wp, I, D, opts.importance) : pruneVnm(wp, I, D, o.v ?? 64, o.m ?? 8, opts.importance);
      let n2 = 0;
      for (const v of w) n2 += v * v;
      t2 += n2;
      k2 += n2 * r.keptNormFraction ** 2;
    }
    return t2 ? Math.sqrt(k2 / t2) : 1;
  };
  const before = keptOf(perm);
  const same = { perm, keptBefore: before, keptAfter: before, swaps: 0, identity: true };
  if (o.format !== 'vnm') return same;
  const V = o.v ?? 64, M = o.m ?? 8;
  checkVnm('permute', V, M);
  const NB = Math.ceil(I / V), groups = Math.floor(I / M); // whole groups only: a partial last group stays
  if (NB < 2 || groups < 2) return same;
  const imp = opts.importance;
  if (imp && imp.length !== D) throw new ShapeError(`permute: gate/up importance has ${imp.length} entries; expected D = ${D}`);
  // score[c * D + k]: importance of channel c's row at input column k, gate and up side by side per row
  const score = [gate, up].map((w) => Float32Array.from(w, (v, i) => Math.abs(v) * (imp ? imp[i % D] : 1)));
  const G = Math.ceil(D / M);
  const l1 = new Float64Array(M);
  const blockScore = (p: Int32Array, b: number): number => {
    const r0 = b * V, r1 = Math.min(I, r0 + V);
    let t = 0;
    for (const s of score) {
      for (let g = 0; g < G; g++) {
        const k0 = g * M, real = Math.min(M, D - k0);
        for (let j = 0; j < real; j++) { let u = 0; for (let r = r0; r < r1; r++) u += s[p[r] * D + k0 + j]; l1[j] = u; }
        const pick = [...Array(real).keys()].sort((x, y) => l1[y] - l1[x] || x - y).slice(0, 4);
        for (let r = r0; r < r1; r++) {
          let a = 0, c = 0;
          for (const j of pick) { const v = s[p[r] * D + k0 + j]; if (v > a) { c = a; a = v; } else if (v > c) c = v; }
          t += a + c;
        }
      }
    }
    return t;
  };
  const cur = Int32Array.from(perm);
  const value = Float64Array.from({ length: NB }, (_, b) => blockScore(cur, b));
  const blocksOf = (g: number) => { const a = Math.floor((g * M) / V), z = Math.floor((g * M + M - 1) / V); return a === z ? [a] : [a, z]; };
  let swaps = 0;
  for (let pass = 0; pass < (opts.maxPasses ?? 3); pass++) {
    let improved = false;
    for (let ga = 0; ga < groups; ga++) {
      for (let gb = ga + 1; gb < groups; gb++) {
        const touched = [...new Set([...blocksOf(ga), ...blocksOf(gb)])];
        if (touched.length < 2) continue; // both groups in one block: swapping regroups nothing
        const swap = () => { for (let j = 0; j < M; j++) { const t = cur[ga * M + j]; cur[ga * M + j] = cur[gb * M + j]; cur[gb * M + j] = t; } };
        swap();
        const next = touched.map((b) => blockScore(cur, b));
        const old = touched.reduce((s, b) => s + value[b], 0), now = next.reduce((s, v) => s + v, 0);
        if (now > old * (1 + 1e-9)) { touched.forEach((b, i) => { value[b] = next[i]; }); swaps++; improved = true; }
        else swap();
      }
    }
    if (!improved) break;
  }
  if (!swaps) return same;
  const after = keptOf(cur);
  return after > before ? { perm: cur, keptBefore: before, keptAfter: after, swaps, identity: false } : same;
}
