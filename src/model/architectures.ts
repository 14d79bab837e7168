/**
 * The architecture registry: each family's forward pass as steps (its architecture file), looked up by
 * the config's family (config.ts FAMILIES maps model_type → family), and the two drivers. Runners call
 * `forward` (backends that never pause: CPU, WASM) or `forwardAsync` (the GPU: with expert offload the
 * forward pauses in every MoE layer while the routing is read back and the chosen experts uploaded).
 */
import type { Family, ModelConfig } from './config';
import { forwardSteps as deepseek, type Backend, type ForwardOptions, type ModelWeights } from './deepseek';
import { forwardSteps as qwen2Moe } from './qwen2-moe';
import { forwardSteps as qwen3Moe } from './qwen3-moe';
import { forwardSteps as olmoe } from './olmoe';
import { forwardSteps as mixtral } from './mixtral';
import { forwardSteps as graniteMoe } from './granite-moe';
import { forwardSteps as gptOss } from './gpt-oss';
import { runSteps, runStepsAsync, type Steps } from './steps';

type ForwardSteps = <T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>) => Steps<T>;

export const ARCHITECTURES: Readonly<Record<Family, ForwardSteps>> = {
  deepseek, qwen2_moe: qwen2Moe, qwen3_moe: qwen3Moe, olmoe, mixtral, granitemoe: graniteMoe, gpt_oss: gptOss,
};

/** The config's forward pass over `tokens` at positions [past, past + S) as steps; returns logits [S or 1, vocab]. */
export function forwardSteps<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>): Steps<T> {
  return ARCHITECTURES[cfg.family](be, cfg, w, tokens, opts);
}

/** One forward pass on a backend that never pauses (throws if it does: use forwardAsync). */
export function forward<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>): T {
  return runSteps(forwardSteps(be, cfg, w, tokens, opts), 'forward');
}

/** One forward pass, awaiting each pause of the backend's MoE steps (expert offload). */
export function forwardAsync<T, W, E>(be: Backend<T, W, E>, cfg: ModelConfig, w: ModelWeights<W, E>, tokens: ArrayLike<number>, opts: ForwardOptions<T>): Promise<T> {
  return runStepsAsync(forwardSteps(be, cfg, w, tokens, opts));
}
