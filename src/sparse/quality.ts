/**
 * Quality of a sparsified model against its dense original: logit deviation statistics over [S, V]
 * logits and perplexity from next-token logits. Pure functions; the end-to-end runs (dense vs 2:4 vs
 * 64:2:5 vs 64:2:8 on the bundled model) feed them.
 */
import { ShapeError } from '../errors';

export interface LogitDeviation {
  positions: number;
  /** max |Δ| over all logits. */
  maxAbs: number;
  /** mean |Δ|. */
  meanAbs: number;
  /** sqrt(mean Δ²). */
  rms: number;
  /** rms(Δ) / rms(reference logits − their per-position mean): deviation relative to the logit spread. */
  relRms: number;
  /** Fraction of positions whose arg-max token is unchanged. */
  top1Agreement: number;
  /** Mean KL(p_ref ‖ p_test) over positions, in nats. */
  meanKl: number;
  /** Largest per-position KL. */
  maxKl: number;
}

function logSoftmax(row: Float32Array | Float64Array): Float64Array {
  let mx = -Infinity;
  for (let i = 0; i < row.length; i++) mx = Math.max(mx, row[i]);
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i] - mx);
  const lse = mx + Math.log(s);
  const out = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = row[i] - lse;
  return out;
}

const argmax = (a: ArrayLike<number>) => {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i;
  return b;
};

/** Deviation of `test` logits from `ref` logits, both row-major [S, vocab]. */
export function logitDeviation(ref: Float32Array, test: Float32Array, vocab: number): LogitDeviation {
  if (ref.length !== test.length || ref.length % vocab !== 0 || ref.length === 0) throw new ShapeError(`logitDeviation: ${ref.length} and ${test.length} logits for vocab ${vocab}`);
  const S = ref.length / vocab;
  let maxAbs = 0, sumAbs = 0, sum2 = 0, spread2 = 0, agree = 0, klSum = 0, maxKl = 0;
  for (let s = 0; s < S; s++) {
    const r = ref.subarray(s * vocab, (s + 1) * vocab), t = test.subarray(s * vocab, (s + 1) * vocab);
    let mean = 0;
    for (let i = 0; i < vocab; i++) mean += r[i];
    mean /= vocab;
    for (let i = 0; i < vocab; i++) {
      const d = Math.abs(t[i] - r[i]);
      maxAbs = Math.max(maxAbs, d);
      sumAbs += d;
      sum2 += d * d;
      spread2 += (r[i] - mean) ** 2;
    }
    if (argmax(r) === argmax(t)) agree++;
    const lr = logSoftmax(r), lt = logSoftmax(t);
    let kl = 0;
    for (let i = 0; i < vocab; i++) kl += Math.exp(lr[i]) * (lr[i] - lt[i]);
    kl = Math.max(0, kl);
    klSum += kl;
    maxKl = Math.max(maxKl, kl);
  }
  const n = S * vocab;
  return {
    positions: S, maxAbs, meanAbs: sumAbs / n, rms: Math.sqrt(sum2 / n),
    relRms: spread2 > 0 ? Math.sqrt(sum2 / spread2) : 0,
    top1Agreement: agree / S, meanKl: klSum / S, maxKl,
  };
}

/**
 * Perplexity of next-token predictions: logits [S, vocab] where row j predicts `targets[j]`
 * (targets = tokens shifted by one; pass S−1 rows for S tokens). Returns exp(mean NLL) and the NLL.
 */
export function perplexity(logits: Float32Array, targets: ArrayLike<number>, vocab: number): { ppl: number; nll: number; count: number } {
  const S = targets.length;
  if (logits.length < S * vocab) throw new ShapeError(`perplexity: ${logits.length} logits for ${S} targets × vocab ${vocab}`);
  let nll = 0;
  for (let s = 0; s < S; s++) {
    const t = targets[s];
    if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new ShapeError(`perplexity: target ${t} at ${s} is outside the vocabulary`);
    nll -= logSoftmax(logits.subarray(s * vocab, (s + 1) * vocab))[t];
  }
  return { ppl: Math.exp(nll / S), nll: nll / S, count: S };
}

/** Relative perplexity change (sparse / dense − 1). */
export const perplexityChange = (dense: number, sparse: number) => sparse / dense - 1;
