/**
 * OLMoE (model_type olmoe; OLMoE-1B-7B-0924), top to bottom as HF modeling_olmoe.py computes it:
 *
 *   h = Embed(tokens)
 *   for each layer:
 *     x = RMSNorm(h)
 *     q, k, v = W_q·x, W_k·x, W_v·x
 *     q, k = RMSNorm(q), RMSNorm(k)                         q_norm / k_norm over the whole projection
 *                                                           ([heads·head_dim], not per head as Qwen3)
 *     q, k = RoPE(q), RoPE(k)                               rotate_half
 *     h += W_o · softmax(q·kᵀ/√head_dim, causal) · v
 *     x = RMSNorm(h)
 *     h += Σ_top-k softmax(W_router·x)_j · Expert_j(x)      64 experts top-8, softmax over all experts,
 *                                                           not renormalised (norm_topk_prob false)
 *   logits = LMHead(RMSNorm(h))
 */
import type { Backend, ForwardOptions, ModelWeights } from './deepseek';
import type { ModelConfig } from './config';
import { gqaShape, head, residualFeedForward, ropeQk } from './decoder-blocks';
import type { Steps } from './steps';

/** The forward pass as steps (architectures.ts drives them): it pauses only inside the MoE feed-forward. */
export function* forwardSteps<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>): Steps<T> {
  const eps = cfg.rmsNormEps;
  const h = be.embed(w.embed, tokens, cfg.hiddenSize);
  opts.onActivation?.('embed', h);
  for (let i = 0; i < cfg.numLayers; i++) {
    const L = w.layers[i], a = L.attn;
    const x = be.rmsNorm(h, L.inputNorm, eps);
    const q = be.rmsNorm(be.linear(x, a.q!), a.qNorm!, eps);
    const k = be.rmsNorm(be.linear(x, a.k!), a.kNorm!, eps);
    const v = be.linear(x, a.v!);
    ropeQk(be, cfg, q, k, opts.past);
    const attn = be.linear(be.attention(i, q, k, v, gqaShape(cfg), opts.past, 1 / Math.sqrt(cfg.headDim)), a.o);
    yield* residualFeedForward(be, cfg, i, L, h, attn, opts);
  }
  return head(be, cfg, w, h, opts);
}
