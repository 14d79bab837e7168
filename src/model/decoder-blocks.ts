/**
 * Pieces every Llama-style sparse decoder (Qwen2-MoE, Qwen3-MoE, OLMoE, Mixtral, Granite-MoE) shares,
 * so that each family's architecture file shows only what is its own. Backend operations only: the same
 * code drives the GPU kernels and the CPU reference.
 */
import type { Backend, ForwardOptions, GqaShape, LayerWeights, ModelWeights } from './deepseek';
import { isMoeLayer, type ModelConfig } from './config';
import type { Steps } from './steps';

export const gqaShape = (cfg: ModelConfig): GqaShape => ({ heads: cfg.numHeads, kvHeads: cfg.numKvHeads, headDim: cfg.headDim });

/**
 * Layer i's attention extras for a windowed config: its sliding window (0 on full-attention layers and
 * without one), HF's `kv_idx > q_idx − sliding_window` run by the attention kernels at any context length.
 */
export const slidingWindowOf = (cfg: ModelConfig, i: number): number => (cfg.layerTypes?.[i] === 'sliding_attention' ? cfg.slidingWindow ?? 0 : 0);

/** RoPE (HF rotate_half) on every head of q [S, heads·d] and k [S, kvHeads·d], at positions past…past+S−1. */
export function ropeQk<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, q: T, k: T, past: number): void {
  const d = cfg.headDim;
  be.rope(q, cfg.numHeads, d, 0, d, past, 'half');
  be.rope(k, cfg.numKvHeads, d, 0, d, past, 'half');
}

/**
 * The feed-forward of layer i: the sparse MoE block, or a dense SwiGLU MLP where the config puts one. As
 * steps (the caller writes `yield* feedForward(…)`): a backend whose MoE pauses (expert offload,
 * Backend.moeSteps) yields there, the others run straight through.
 */
export function* feedForward<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, i: number, L: LayerWeights<W, E>, x: T): Steps<T> {
  if (!isMoeLayer(cfg, i)) return be.mlp(x, L.mlp!.gate, L.mlp!.up, L.mlp!.down);
  return be.moeSteps ? yield* be.moeSteps(i, x, L.moe!, cfg) : be.moeForward(i, x, L.moe!, cfg);
}

/**
 * The rest of layer i once its attention output is known: h += attn; h += FFN(RMSNorm(h)) (each
 * intermediate reported to onActivation), then the end of the layer.
 */
export function* residualFeedForward<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, i: number, L: LayerWeights<W, E>, h: T, attn: T, opts: ForwardOptions<T>): Steps<void> {
  opts.onActivation?.(`layers.${i}.attn_out`, attn);
  be.addInPlace(h, attn);
  const ffnIn = be.rmsNorm(h, L.postNorm, cfg.rmsNormEps);
  opts.onActivation?.(`layers.${i}.ffn_in`, ffnIn);
  const ffn = yield* feedForward(be, cfg, i, L, ffnIn);
  opts.onActivation?.(`layers.${i}.ffn_out`, ffn);
  be.addInPlace(h, ffn);
  endLayer(be, i, h, opts);
}

/** After the last layer: RMSNorm and the LM head (of the last row only when asked), or the residual stream for a cache-only chunk. */
export function head<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, h: T, opts: ForwardOptions<T>): T {
  if (opts.cacheOnly) return h;
  const normed = be.rmsNorm(opts.lastOnly ? be.lastRow(h) : h, w.norm, cfg.rmsNormEps);
  opts.onActivation?.('final_norm', normed);
  return be.linear(normed, w.lmHead);
}

/** End of layer i: report the residual stream, then let the backend reuse the layer's temporaries. */
export function endLayer<T, W, E>(be: Backend<T, W, E>, i: number, h: T, opts: ForwardOptions<T>): void {
  opts.onActivation?.(`layers.${i}.out`, h);
  // Intermediates handed to onActivation must outlive the layer.
  if (!opts.onActivation) be.endLayer?.();
}
