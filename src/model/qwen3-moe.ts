/**
 * Qwen3-MoE (model_type qwen3_moe; Qwen3-30B-A3B, Qwen3-235B-A22B), top to bottom as HF
 * modeling_qwen3_moe.py computes it:
 *
 *   h = Embed(tokens)
 *   for each layer:
 *     x = RMSNorm(h)
 *     q, k, v = W_q·x, W_k·x, W_v·x                        GQA: num_key_value_heads K/V heads of head_dim
 *     q, k = RMSNorm_head(q), RMSNorm_head(k)               q_norm / k_norm over each head's head_dim
 *     q, k = RoPE(q), RoPE(k)                               rotate_half
 *     h += W_o · softmax(q·kᵀ/√head_dim, causal) · v       with use_sliding_window: only the last sliding_window keys
 *     x = RMSNorm(h)
 *     h += Σ_top-k softmax(W_router·x)_j / Σ · Expert_j(x)   128 experts top-8, norm_topk_prob, no shared expert
 *   logits = LMHead(RMSNorm(h))
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
    be.rmsNormHeads(q, cfg.numHeads, a.qNorm!, eps);
    be.rmsNormHeads(k, cfg.numKvHeads, a.kNorm!, eps);
    ropeQk(be, cfg, q, k, opts.past);
    const attn = be.linear(be.attention(i, q, k, v, gqaShape(cfg), opts.past, 1 / Math.sqrt(cfg.headDim), { window: slidingWindowOf(cfg, i) }), a.o);
    yield* residualFeedForward(be, cfg, i, L, h, attn, opts);
  }
  return head(be, cfg, w, h, opts);
}
