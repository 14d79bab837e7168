/** Sampling parameters and the two derived values both the GPU sampler (sample.ts) and its CPU reference (sample.ref.ts) use. */

export interface SamplingParams {
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
  seed: number;
}

/** top-p as the kernel's 32-bit fixed-point threshold. */
export const topPFixed = (p: number) => Math.min(2 ** 32 - 1, Math.max(0, Math.floor(p * 2 ** 32)));

/** Greedy when temperature ≤ 0 or topK = 1. */
export const isGreedy = (p: SamplingParams) => !(p.temperature > 0) || p.topK === 1;
