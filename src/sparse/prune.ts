/**
 * Pruners to the 2:4 and V:2:M patterns (layouts in src/sparse/formats.ts).
 *
 * Importance of weight W[n, k]: |W[n, k]| by default; with calibration activation norms a[k] = ‖x_k‖
 * (one per input column, length K) it is |W[n, k]|·a[k] (Wanda-style); a full [N, K] score array is
 * also accepted.
 *
 * - 2:4: each row keeps the 2 most important of every 4 consecutive columns.
 * - V:2:M: for each block of V rows × M columns, choose the 4 columns shared by the block —
 *   exhaustively over all C(M, 4) sets scored by Σ_rows (sum of the row's top-2 importances among the
 *   4) when M ≤ 8 [VENOM], by column L1 importance (Σ_rows importance) beyond [2410.16135] — then each
 *   row keeps its top-2 of those 4.
 * Ties go to the lower column. Both report the fraction of weight norm kept.
 */
import { ShapeError } from '../errors';
import { checkVnm } from './formats';

export interface PruneStats {
  /** ‖W_pruned‖_F / ‖W‖_F (1 for an all-zero matrix). */
  keptNormFraction: number;
  /** Σ|W_pruned| / Σ|W|. */
  keptL1Fraction: number;
}

export interface Prune24Result extends PruneStats { pruned: Float32Array }
export interface PruneVnmResult extends PruneStats {
  pruned: Float32Array;
  /** [ceil(N/V), ceil(K/M)] the 4 kept column offsets per (block, group), 8 bits each, ascending (as formats.ts). */
  columns: Uint32Array;
}

/** Importance lookup: |w|, |w|·a[k] for column norms (length K), or a full [N, K] score array. */
function scorer(w: Float32Array, N: number, K: number, importance?: Float32Array): (n: number, k: number) => number {
  if (!importance) return (n, k) => Math.abs(w[n * K + k]);
  if (importance.length === K) return (n, k) => Math.abs(w[n * K + k]) * importance[k];
  if (importance.length === N * K) return (n, k) => importance[n * K + k];
  throw new ShapeError(`prune: importance has ${importance.length} entries; expected K = ${K} (activation norms) or N·K = ${N * K}`);
}

export function pruneStats(w: Float32Array, pruned: Float32Array): PruneStats {
  let s2 = 0, k2 = 0, s1 = 0, k1 = 0;
  for (let i = 0; i < w.length; i++) {
    s2 += w[i] * w[i];
    s1 += Math.abs(w[i]);
    k2 += pruned[i] * pruned[i];
    k1 += Math.abs(pruned[i]);
  }
  return { keptNormFraction: s2 > 0 ? Math.sqrt(k2 / s2) : 1, keptL1Fraction: s1 > 0 ? k1 / s1 : 1 };
}

function checkW(what: string, w: Float32Array, N: number, K: number) {
  if (!Number.isInteger(N) || N < 1 || !Number.isInteger(K) || K < 1) throw new ShapeError(`${what}: N and K must be positive integers, got ${N}×${K}`);
  if (w.length !== N * K) throw new ShapeError(`${what}: w has ${w.length} values, expected ${N}·${K}`);
}

/** Indices of the two largest scores (lower index wins ties), returned ascending. */
function top2(scores: number[], idx: number[]): [number, number] {
  let a = -1, b = -1;
  for (const i of idx) {
    if (a < 0 || scores[i] > scores[a]) { b = a; a = i; }
    else if (b < 0 || scores[i] > scores[b]) b = i;
  }
  return a < b ? [a, b] : [b, a];
}

/** Magnitude (or importance) 2:4 pruning along K. */
export function prune24(w: Float32Array, N: number, K: number, importance?: Float32Array): Prune24Result {
  checkW('prune24', w, N, K);
  const score = scorer(w, N, K, importance);
  const pruned = new Float32Array(N * K);
  const s = [0, 0, 0, 0];
  for (let n = 0; n < N; n++) {
    for (let k0 = 0; k0 < K; k0 += 4) {
      const real = Math.min(4, K - k0);
      if (real <= 2) {
        for (let c = 0; c < real; c++) pruned[n * K + k0 + c] = w[n * K + k0 + c];
        continue;
      }
      const idx: number[] = [];
      for (let c = 0; c < real; c++) { s[c] = score(n, k0 + c); idx.push(c); }
      const [a, b] = top2(s, idx);
      pruned[n * K + k0 + a] = w[n * K + k0 + a];
      pruned[n * K + k0 + b] = w[n * K + k0 + b];
    }
  }
  return { pruned, ...pruneStats(w, pruned) };
}

/** All 4-subsets of {0..r-1}, ascending. */
const subsetCache = new Map<number, number[][]>();
export function subsets4(r: number): number[][] {
  let out = subsetCache.get(r);
  if (!out) {
    out = [];
    for (let a = 0; a < r; a++) for (let b = a + 1; b < r; b++) for (let c = b + 1; c < r; c++) for (let d = c + 1; d < r; d++) out.push([a, b, c, d]);
    subsetCache.set(r, out);
  }
  return out;
}

/** Sum of the two largest of four numbers. */
function top2Sum(a: number, b: number, c: number, d: number): number {
  const hi1 = Math.max(a, b), lo1 = Math.min(a, b), hi2 = Math.max(c, d), lo2 = Math.min(c, d);
  return Math.max(hi1, hi2) + Math.max(Math.min(hi1, hi2), Math.max(lo1, lo2));
}

/** V:2:M pruning (N = 2 of the block's 4 shared columns per row). */
export function pruneVnm(w: Float32Array, N: number, K: number, V: number, M: number, importance?: Float32Array): PruneVnmResult {
  checkW('pruneVnm', w, N, K);
  checkVnm('pruneVnm', V, M);
  const score = scorer(w, N, K, importance);
  const G = Math.ceil(K / M), NB = Math.ceil(N / V);
  const pruned = new Float32Array(N * K), columns = new Uint32Array(NB * G);
  const blockScores = new Float64Array(V * M);
  const s = [0, 0, 0, 0];
  for (let b = 0; b < NB; b++) {
    const r0 = b * V, rows = Math.min(N, r0 + V) - r0;
    for (let g = 0; g < G; g++) {
      const k0 = g * M, real = Math.min(M, K - k0);
      for (let r = 0; r < rows; r++) for (let c = 0; c < real; c++) blockScores[r * M + c] = score(r0 + r, k0 + c);
      let sel: number[];
      if (real <= 4) {
        sel = [];
        for (let c = 0; sel.length < 4; c++) sel.push(c); // every real column, then padding columns
      } else if (M <= 8) {
        let best = -1;
        sel = [0, 1, 2, 3];
        for (const set of subsets4(real)) {
          let t = 0;
          for (let r = 0; r < rows; r++) {
            const o = r * M;
            t += top2Sum(blockScores[o + set[0]], blockScores[o + set[1]], blockScores[o + set[2]], blockScores[o + set[3]]);
          }
          if (t > best) { best = t; sel = set; }
        }
      } else {
        const l1: number[] = [];
        for (let c = 0; c < real; c++) {
          let t = 0;
          for (let r = 0; r < rows; r++) t += blockScores[r * M + c];
          l1.push(t);
        }
        sel = [...Array(real).keys()].sort((x, y) => l1[y] - l1[x] || x - y).slice(0, 4).sort((x, y) => x - y);
      }
      columns[b * G + g] = (sel[0] | (sel[1] << 8) | (sel[2] << 16) | (sel[3] << 24)) >>> 0;
      const realSel = sel.filter((c) => c < real);
      for (let r = 0; r < rows; r++) {
        const n = r0 + r;
        let keep: number[];
        if (realSel.length <= 2) keep = realSel;
        else {
          for (let i = 0; i < realSel.length; i++) s[i] = blockScores[r * M + realSel[i]];
          const [a, c] = top2(s, [...realSel.keys()]);
          keep = [realSel[a], realSel[c]];
        }
        for (const c of keep) pruned[n * K + k0 + c] = w[n * K + k0 + c];
      }
    }
  }
  return { pruned, columns, ...pruneStats(w, pruned) };
}

export interface PatternOptions {
  format: '2:4' | 'vnm';
  v?: number;
  m?: number;
  importance?: Float32Array;
}

/**
 * Prunes a stack of E matrices [E, rows, cols] (e.g. the runtime's MoE expert weights [E, 2I, D] or
 * [E, D, I]) to the pattern, each matrix independently, keeping the dense layout: the expert kernels
 * then run the pruned weights unchanged (accuracy of the sparse model, dense speed). `importance`,
 * when given, is per matrix: cols entries (shared activation norms) or E·rows·cols scores.
 */
export function pruneStacked(w: Float32Array, E: number, rows: number, cols: number, opts: PatternOptions): { pruned: Float32Array } & PruneStats {
  if (w.length !== E * rows * cols) throw new ShapeError(`pruneStacked: w has ${w.length} values, expected ${E}·${rows}·${cols}`);
  const out = new Float32Array(w.length);
  const per = rows * cols;
  for (let e = 0; e < E; e++) {
    const we = w.subarray(e * per, (e + 1) * per);
    const imp = opts.importance && opts.importance.length === E * per ? opts.importance.subarray(e * per, (e + 1) * per) : opts.importance;
    const r = opts.format === '2:4' ? prune24(we, rows, cols, imp) : pruneVnm(we, rows, cols, opts.v ?? 64, opts.m ?? 8, imp);
    out.set(r.pruned, e * per);
  }
  return { pruned: out, ...pruneStats(w, out) };
}
