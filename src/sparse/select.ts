/**
 * Choosing V and M for a byte budget: the heuristic of the V:N:M paper (2410.16135, "Beyond 2:4") with
 * WebGPU's cost in place of its tensor-core speed-up.
 *
 * The paper ranks (V, M) by **mask diversity**, the number of masks the pattern allows, and picks the most
 * diverse pattern that meets a speed-up target. A V×M block of a V:2:M pattern has C(M, 4) choices of its
 * 4 shared columns and C(4, 2) = 6 choices of each row's 2 kept among them, so C(M, 4)·6^V masks over V·M
 * weights; per weight, log K(V, M) = (ln C(M, 4) + V ln 6) / (V·M). (2:4 is V:2:4 with the 4 columns
 * fixed: ln 6 / 4.) The ordering depends on V and M only, not on a matrix's shape — the paper's own
 * observation — so one choice serves every matrix of a model, which is also what the runtime needs (a
 * layer's stacked experts share one pattern, and a pre-pruned checkpoint holds one).
 *
 * The constraint: the paper measures a sparse GEMM's speed-up on sparse tensor cores, which WebGPU does not
 * have; here decode is a bandwidth-bound GEMV, so the cost is the bytes the kernels read. The budget
 * `targetRatio` is the largest allowed ratio of the packed bytes (f32 values + 4-bit codes + the V-row
 * blocks' column bytes, with every padding word, src/sparse/formats.ts) to the dense f32 bytes, summed
 * over the matrices the option prunes. E.g. 2:4 reads 0.53, 64:2:5 0.44, 16:2:8 0.27 of the dense bytes
 * on the bundled model's experts.
 */
import { ArgumentError } from '../errors';
import { metaStrideOf } from './formats';

export interface PatternChoice { format: '2:4' | 'vnm'; v?: number; m?: number }

/** V candidates: powers of two ≥ 16 (the paper's set), M from 5 up to 16 (87.5 % sparse). */
export const AUTO_V = [16, 32, 64, 128] as const;
export const AUTO_M = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16] as const;

const lnChoose = (n: number, k: number) => {
  let s = 0;
  for (let i = 0; i < k; i++) s += Math.log(n - i) - Math.log(i + 1);
  return s;
};

/** Natural log of the mask diversity per weight, log K(V, M) (2:4: ln 6 / 4). */
export function logMaskDiversity(c: PatternChoice): number {
  if (c.format === '2:4') return Math.log(6) / 4;
  const V = c.v ?? 64, M = c.m ?? 8;
  return (lnChoose(M, 4) + V * Math.log(6)) / (V * M);
}

/** Exact bytes of one [N, K] matrix packed to the pattern with f32 values (formats.ts layout). */
export function packedBytes(N: number, K: number, c: PatternChoice): number {
  const GW = c.format === '2:4' ? 4 : c.m ?? 8;
  const G = Math.ceil(K / GW);
  const values = N * 2 * G * 4, meta = N * metaStrideOf(G) * 4;
  return values + meta + (c.format === '2:4' ? 0 : Math.ceil(N / (c.v ?? 64)) * G * 4);
}

export interface PatternCandidate extends PatternChoice {
  /** Packed bytes / dense f32 bytes over all the matrices. */
  ratio: number;
  logDiversity: number;
}

export interface PatternSelection {
  choice: PatternChoice;
  ratio: number;
  logDiversity: number;
  /** Every candidate that met the constraints, most diverse first. */
  feasible: PatternCandidate[];
}

/** A short label: "2:4", "16:2:5". */
export const patternLabel = (c: PatternChoice) => (c.format === '2:4' ? '2:4' : `${c.v ?? 64}:2:${c.m ?? 8}`);

/**
 * The most mask-diverse pattern whose packed bytes over `shapes` are at most `targetRatio` of the dense
 * f32 bytes. `vDivides`: V must divide each of these (the runtime's stacked expert rows: V | moe
 * intermediate size and V | hidden size, so a V-row block never straddles gate/up or two experts).
 * Ties in diversity go to the smaller ratio. Throws ArgumentError when nothing fits, naming what would.
 */
export function selectPattern(shapes: Array<{ N: number; K: number }>, targetRatio: number, opts: { vDivides?: number[]; candidates?: PatternChoice[] } = {}): PatternSelection {
  if (!(targetRatio > 0 && targetRatio <= 1)) throw new ArgumentError(`target ratio must be in (0, 1] (packed bytes / dense f32 bytes), got ${targetRatio}`);
  if (!shapes.length) throw new ArgumentError('selectPattern: no matrices to prune');
  const dense = shapes.reduce((s, { N, K }) => s + N * K * 4, 0);
  const all: PatternChoice[] = opts.candidates ?? [{ format: '2:4' }, ...AUTO_V.flatMap((v) => AUTO_M.map((m) => ({ format: 'vnm' as const, v, m })))];
  const allowed = all.filter((c) => c.format === '2:4' || (opts.vDivides ?? []).every((d) => d % (c.v ?? 64) === 0));
  const scored = allowed.map((c) => ({ ...c, ratio: shapes.reduce((s, { N, K }) => s + packedBytes(N, K, c), 0) / dense, logDiversity: logMaskDiversity(c) }));
  const feasible = scored.filter((c) => c.ratio <= targetRatio).sort((a, b) => b.logDiversity - a.logDiversity || a.ratio - b.ratio);
  if (!feasible.length) {
    const least = scored.reduce((a, b) => (b.ratio < a.ratio ? b : a), scored[0]);
    throw new ArgumentError(`no 2:4 or V:2:M pattern packs these matrices into ${targetRatio} of their dense f32 bytes; the smallest is ${patternLabel(least)} at ${least.ratio.toFixed(4)}${opts.vDivides?.length ? ` (V must divide ${opts.vDivides.join(' and ')})` : ''}`);
  }
  const best = feasible[0];
  const choice: PatternChoice = best.format === '2:4' ? { format: '2:4' } : { format: 'vnm', v: best.v, m: best.m };
  return { choice, ratio: best.ratio, logDiversity: best.logDiversity, feasible };
}
