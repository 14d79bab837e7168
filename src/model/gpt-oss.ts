/**
 * GPT-OSS (model_type gpt_oss; openai/gpt-oss-20b, -120b), top to bottom as HF modeling_gpt_oss.py and
 * the model card compute it:
 *
 *   h = Embed(tokens)
 *   for each layer i:
 *     x = RMSNorm(h)
 *     q, k, v = W_q·x + b_q, W_k·x + b_k, W_v·x + b_v         GQA: 64 query heads share 8 K/V heads of 64
 *     q, k = RoPE(q), RoPE(k)                                   YaRN (truncate false), halves rotation
 *     h += W_o · Attn_i(q, k, v) + b_o
 *          Attn_i = softmax over [c²·q·kᵀ/√d, sink_h] with the sink column dropped, causal; on
 *          layer_types[i] = sliding_attention only the last sliding_window positions (128)
 *     x = RMSNorm(h)
 *     h += Σ_top-4 softmax(W_r·x + b_r over the 4 chosen)_j · Expert_j(x)
 *          Expert(x) = W_down·((up + 1)·gate·σ(1.702·gate)) + b_down, gate ≤ limit, |up| ≤ limit (7),
 *          [gate|up] = W_gate_up·x + b_gate_up (MXFP4 weights)
 *   logits = LMHead(RMSNorm(h))
 *
 * c = 0.1·ln(factor) + 1 is YaRN's attention factor, by which HF multiplies cos and sin: every q·k
 * carries c², folded here into the softmax scale (the sinks are not scaled).
 */
import type { Backend, ForwardOptions, ModelWeights } from './deepseek';
import type { ModelConfig } from './config';
import { yarnConcentration } from '../kernels/rope-params';
import { gqaShape, head, residualFeedForward, ropeQk, slidingWindowOf } from './decoder-blocks';
import type { Steps } from './steps';

export function* forwardSteps<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>): Steps<T> {
  const eps = cfg.rmsNormEps;
  const scale = yarnConcentration(cfg.ropeScaling) ** 2 / Math.sqrt(cfg.headDim);
  const h = be.embed(w.embed, tokens, cfg.hiddenSize);
  opts.onActivation?.('embed', h);
  for (let i = 0; i < cfg.numLayers; i++) {
    const L = w.layers[i], a = L.attn;
    const x = be.rmsNorm(h, L.inputNorm, eps);
    const q = be.linear(x, a.q!), k = be.linear(x, a.k!), v = be.linear(x, a.v!);
    be.addBias(q, a.qBias!); be.addBias(k, a.kBias!); be.addBias(v, a.vBias!);
    ropeQk(be, cfg, q, k, opts.past);
    const attn = be.linear(be.attention(i, q, k, v, gqaShape(cfg), opts.past, scale, { window: slidingWindowOf(cfg, i), sinks: a.sinks! }), a.o);
    be.addBias(attn, a.oBias!);
    yield* residualFeedForward(be, cfg, i, L, h, attn, opts);
  }
  return head(be, cfg, w, h, opts);
}
