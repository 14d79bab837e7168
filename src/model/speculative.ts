/**
 * Bookkeeping of self-speculative decoding with a Multi-Token Prediction module (issue #18), shared by
 * the GPU and the CPU runner; the runners do the arithmetic.
 *
 * The MTP module's cache row i is computed from the main model's hidden state at position i and the
 * embedding of the token at position i + 1, so it trails the main cache, and its last row depends on a
 * token not in the main cache yet (`next`: the token sampled last, which the engine feeds next). A step:
 *
 *  - plain (no usable draft): the main model runs the pending tokens, samples a; the MTP module runs the
 *    same positions (embeddings of the tokens one ahead, a last) and drafts d, the token after a;
 *  - verify (pending = [a], draft d valid): the main model runs [a, d] in one forward and samples x
 *    (step s) from row 0 and y (step s + 1) from row 1; the MTP module runs both positions with the
 *    embeddings of [x, y]. x = d: both tokens stand (x, y), the draft for after y is the MTP's row 1.
 *    x ≠ d: row 1 of both caches is dropped (it was computed from d), x stands, the draft for after x is
 *    the MTP's row 0 (computed from x itself, so it is valid).
 *
 * The draft is the MTP module's argmax, a deterministic proposal: the speculative rejection rule
 * (accept d with probability min(1, p(d)/q(d)), else resample from max(0, p − q)) with q = δ_d is
 * exactly "sample x ~ p, accept iff x = d". So x is drawn as a plain step draws it (same sampler,
 * same step number, same history): greedy and sampled outputs are token-for-token those of plain
 * decoding with the same seed, and the output distribution is unchanged.
 */

/** What the runner should compute for a speculative step. */
export interface SpecPlan {
  /** Truncate the main cache to this many tokens first (re-feeding what the MTP cache lacks). */
  rewindTo: number;
  /** Tokens to run through the main model, at positions [rewindTo, rewindTo + feed.length). */
  feed: number[];
  /** Verify this draft: feed = [a] and the main forward runs [a, draft]. null: a plain step. */
  draft: number | null;
}

export class MtpState {
  /** Token ids in the main cache, in order. */
  ids: number[] = [];
  /** Rows in the MTP module's cache (positions [0, mtpLen)). */
  mtpLen = 0;
  /** The token the MTP cache's last row assumed at position mtpLen. */
  next = -1;
  /** The MTP module's draft for the token after `next`, valid while the caches are as they were. */
  private draft: number | null = null;

  /** Counters for telemetry: steps that verified a draft, drafts accepted. */
  drafted = 0;
  accepted = 0;

  /** The main cache was truncated to n tokens. */
  truncate(n: number): void {
    if (n < this.mtpLen) {
      this.next = this.ids[n];
      this.mtpLen = n;
      this.draft = null;
    }
    if (n < this.ids.length) this.ids.length = n;
  }

  /** Main-cache tokens appended outside speculative steps (plain steps, logits). */
  appended(tokens: number[]): void {
    this.ids.push(...tokens);
  }

  /** MTP rows that are still valid given that `feed` follows the main cache. */
  private validRows(feed: number[]): number {
    let v = this.mtpLen;
    const at = v < this.ids.length ? this.ids[v] : feed[v - this.ids.length];
    if (v > 0 && at !== this.next) v--;
    return v;
  }

  /** The step to compute for `feed` pending after the main cache, with `capacity` slots in the caches. */
  plan(feed: number[], capacity: number): SpecPlan {
    const v = this.validRows(feed);
    if (v < this.ids.length) {
      this.draft = null;
      return { rewindTo: v, feed: this.ids.slice(v).concat(feed), draft: null };
    }
    const n = this.ids.length;
    const draft = v === n && this.draft !== null && feed.length === 1 && feed[0] === this.next && n + 2 <= capacity ? this.draft : null;
    return { rewindTo: n, feed, draft };
  }

  /** Record the outcome of a plain step: `feed` went into both caches, `sampled` was drawn, `draft` proposed after it. */
  afterPlain(plan: SpecPlan, sampled: number, draft: number): void {
    this.ids.length = plan.rewindTo;
    this.ids.push(...plan.feed);
    this.mtpLen = this.ids.length;
    this.next = sampled;
    this.draft = draft;
  }

  /**
   * Record a verify step. x, y: the main model's tokens from rows 0 and 1; dx, dy: the MTP drafts from
   * rows 0 and 1. Returns the tokens that stand and how many cache rows to keep.
   */
  afterVerify(plan: SpecPlan, x: number, y: number, dx: number, dy: number): { tokens: number[]; keep: number } {
    const d = plan.draft!;
    this.drafted++;
    this.ids.push(plan.feed[0]);
    if (x === d) {
      this.accepted++;
      this.ids.push(d);
      this.mtpLen = this.ids.length;
      this.next = y;
      this.draft = dy;
      return { tokens: [x, y], keep: this.ids.length };
    }
    this.mtpLen = this.ids.length;
    this.next = x;
    this.draft = dx;
    return { tokens: [x], keep: this.ids.length };
  }

  /** Forget everything (the caches were reset). */
  reset(): void {
    this.ids = [];
    this.mtpLen = 0;
    this.next = -1;
    this.draft = null;
  }
}

/** Index of the largest value (the first on ties, as the greedy sampler picks). */
export function argmax(row: ArrayLike<number>, offset = 0, n = row.length - offset): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (row[offset + i] > row[offset + best]) best = i;
  return best;
}
