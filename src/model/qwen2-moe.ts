/**
 * Qwen2-MoE (model_type qwen2_moe; Qwen1.5-MoE-A2.7B, Qwen2-57B-A14B), top to bottom as HF
 * modeling_qwen2_moe.py computes it:
 *
 *   h = Embed(tokens)
 *   for each layer:
 *     x = RMSNorm(h)
 *     q, k, v = W_q·x + b_q, W_k·x + b_k, W_v·x + b_v      biased projections, GQA
 *     q, k = RoPE(q), RoPE(k)                               rotate_half
 *     h += W_o · softmax(q·kᵀ/√head_dim, causal) · v       with use_sliding_window, layer_types[i] =
 *                                                           sliding_attention layers see the last sliding_window keys
 *     x = RMSNorm(h)
 *     h += Σ_top-k softmax(W_router·x)_j · Expert_j(x)      60 experts top-4; norm_topk_prob false: the
 *                                                           softmax over all experts is not renormalised
 *          + sigmoid(w_shared_gate·x) · SharedExpert(x)     one wide shared expert behind a scalar gate
 *   logits = LMHead(RMSNorm(h))
 *
 * The routed sum and the gated shared expert are the backend's moeForward (the MoE kernels add the
 * shared expert's rows into the combine; the gate scales them first).
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
    be.addBias(q, a.qBias!);
    be.addBias(k, a.kBias!);
    be.addBias(v, a.vBias!);
    ropeQk(be, cfg, q, k, opts.past);
    const attn = be.linear(be.attention(i, q, k, v, gqaShape(cfg), opts.past, 1 / Math.sqrt(cfg.headDim), { window: slidingWindowOf(cfg, i) }), a.o);
    yield* residualFeedForward(be, cfg, i, L, h, attn, opts);
  }
  return head(be, cfg, w, h, opts);
}
