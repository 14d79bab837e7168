/**
 * The architecture registry: each family's forward pass (its architecture file), looked up by the
 * config's family (config.ts FAMILIES maps model_type → family). Runners call `forward` from here.
 */
import type { Family, ModelConfig } from './config';
import { forward as deepseek, forwardAsync as deepseekAsync, type Backend, type ForwardOptions, type ModelWeights } from './deepseek';
import { forward as qwen2Moe } from './qwen2-moe';
import { forward as qwen3Moe } from './qwen3-moe';
import { forward as olmoe } from './olmoe';
import { forward as mixtral } from './mixtral';
import { forward as graniteMoe } from './granite-moe';
import { forward as gptOss } from './gpt-oss';

type Forward = <T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions) => T;

export const ARCHITECTURES: Readonly<Record<Family, Forward>> = {
  deepseek, qwen2_moe: qwen2Moe, qwen3_moe: qwen3Moe, olmoe, mixtral, granitemoe: graniteMoe, gpt_oss: gptOss,
};

/** One forward pass of the config's architecture over `tokens` at positions [past, past + S). Returns logits [S or 1, vocab]. */
export function forward<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions): T {
  return ARCHITECTURES[cfg.family](be, cfg, w, tokens, opts);
}

/**
 * forward() for backends whose MoE steps may pause (expert offload: the routing is read back per MoE
 * layer). DeepSeek's forward is written as steps; the other families' forwards do not pause yet, so the
 * memory plan refuses to offload their experts (memory-plan.ts).
 */
export function forwardAsync<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions): Promise<T> {
  if (cfg.family === 'deepseek') return deepseekAsync(be, cfg, w, tokens, opts);
  return Promise.resolve().then(() => forward(be, cfg, w, tokens, opts));
}
