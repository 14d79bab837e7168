/**
 * Mixtral (model_type mixtral; Mixtral-8x7B, 8x22B), top to bottom as HF modeling_mixtral.py computes it:
 *
 *   h = Embed(tokens)
 *   for each layer:
 *     x = RMSNorm(h)
 *     q, k, v = W_q·x, W_k·x, W_v·x                        GQA: 32 query heads share 8 K/V heads
 *     q, k = RoPE(q), RoPE(k)                               rotate_half, rope_theta 1e6
 *     h += W_o · softmax(q·kᵀ/√head_dim, causal) · v        sliding_window set: only the last sliding_window keys
 *     x = RMSNorm(h)
 *     h += Σ_top-2 softmax(W_gate·x over the 2 chosen)_j · Expert_j(x)     experts w1 (gate), w3 (up), w2 (down)
 *   logits = LMHead(RMSNorm(h))
 *
 * The router's softmax over all 8 logits renormalised over the top 2 equals the softmax over the two
 * chosen logits. Sliding-window attention (sliding_window, null in Mixtral-8x7B-v0.1's config) masks as
 * HF's create_sliding_window_causal_mask does on every layer: key t is visible to query s iff
 * s − sliding_window < t ≤ s.
 */
import type { Backend, ForwardOptions, ModelWeights } from './deepseek';
import type { ModelConfig } from './config';
import { gqaShape, head, residualFeedForward, ropeQk, slidingWindowOf } from './decoder-blocks';
import type { Steps } from './steps';

/** The forward pass as steps (architectures.ts drives them): it pauses only inside the MoE feed-forward. */
export function* forwardSteps<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>): Steps<T> {
  const eps = cfg.rmsNormEps;
  const h = be.embed(w.embed, tokens, cfg.hiddenSize);
  opts.onActivation?.('embed', h);
  for (let i = 0; i < cfg.numLayers; i++) {
    const L = w.layers[i], a = L.attn;
    const x = be.rmsNorm(h, L.inputNorm, eps);
    const q = be.linear(x, a.q!), k = be.linear(x, a.k!), v = be.linear(x, a.v!);
    ropeQk(be, cfg, q, k, opts.past);
    const attn = be.linear(be.attention(i, q, k, v, gqaShape(cfg), opts.past, 1 / Math.sqrt(cfg.headDim), { window: slidingWindowOf(cfg, i) }), a.o);
    yield* residualFeedForward(be, cfg, i, L, h, attn, opts);
  }
  return head(be, cfg, w, h, opts);
}
