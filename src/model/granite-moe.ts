/**
 * Granite-MoE (model_type granitemoe; granite-3.0/3.1 1b-a400m, 3b-a800m), top to bottom as HF
 * modeling_granitemoe.py computes it. μP-style multipliers from config.json scale the embedding, the
 * attention scores, every residual branch and the logits:
 *
 *   h = embedding_multiplier · Embed(tokens)
 *   for each layer:
 *     x = RMSNorm(h)
 *     q, k, v = W_q·x, W_k·x, W_v·x                                GQA
 *     q, k = RoPE(q), RoPE(k)                                       rotate_half
 *     h += residual_multiplier · W_o · softmax(attention_multiplier · q·kᵀ, causal) · v
 *     x = RMSNorm(h)
 *     h += residual_multiplier · Σ_top-k softmax(top-k of W_router·x)_j · Expert_j(x)
 *                                        experts stored stacked: input_linear [E, 2I, D] = [gate; up], output_linear [E, D, I]
 *   logits = LMHead(RMSNorm(h)) / logits_scaling                   head tied to the embedding in the published models
 */
import type { Backend, ForwardOptions, ModelWeights } from './deepseek';
import type { ModelConfig } from './config';
import { endLayer, feedForward, gqaShape, head, ropeQk } from './decoder-blocks';
import type { Steps } from './steps';

/** The forward pass as steps (architectures.ts drives them): it pauses only inside the MoE feed-forward. */
export function* forwardSteps<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>): Steps<T> {
  const eps = cfg.rmsNormEps, m = cfg.multipliers;
  const h = be.embed(w.embed, tokens, cfg.hiddenSize);
  be.scale(h, m.embedding);
  opts.onActivation?.('embed', h);
  for (let i = 0; i < cfg.numLayers; i++) {
    const L = w.layers[i], a = L.attn;
    const x = be.rmsNorm(h, L.inputNorm, eps);
    const q = be.linear(x, a.q!), k = be.linear(x, a.k!), v = be.linear(x, a.v!);
    ropeQk(be, cfg, q, k, opts.past);
    const attn = be.linear(be.attention(i, q, k, v, gqaShape(cfg), opts.past, m.attention!), a.o);
    be.scale(attn, m.residual);
    opts.onActivation?.(`layers.${i}.attn_out`, attn);
    be.addInPlace(h, attn);
    const ffnIn = be.rmsNorm(h, L.postNorm, eps);
    opts.onActivation?.(`layers.${i}.ffn_in`, ffnIn);
    const ffn = yield* feedForward(be, cfg, i, L, ffnIn);
    be.scale(ffn, m.residual);
    opts.onActivation?.(`layers.${i}.ffn_out`, ffn);
    be.addInPlace(h, ffn);
    endLayer(be, i, h, opts);
  }
  const logits = head(be, cfg, w, h, opts);
  if (!opts.cacheOnly) be.scale(logits, 1 / m.logitsScaling);
  return logits;
}
