/**
 * Production rotary parameters (inverse frequencies, YaRN correction and softmax scale) for rotary position embedding as DeepSeek-V3 applies it (inference/model.py `precompute_freqs_cis`,
 * `apply_rotary_emb`): adjacent pairs (x[2i], x[2i+1]) of the rope slice are rotated by the angle
 * pos·inv_freq[i], positions 0-based. YaRN (rope_scaling.type == 'yarn') blends the frequencies
 * between interpolated (÷factor) and original with a linear ramp over the pair index, and scales the
 * attention softmax by mscale². The caller decides whether YaRN applies (the official code applies it
 * only when the context is longer than original_max_position_embeddings) by passing `scaling` or null.
 *
 * GPT-OSS (openai/gpt-oss torch/model.py RotaryEmbedding, HF rope_scaling {rope_type: yarn, factor 32,
 * beta_fast 32, beta_slow 1, original_max_position_embeddings 4096, truncate: false}, rope_theta 150000,
 * head_dim 64): the same blend with the ramp bounds NOT rounded (`truncate: false`: low ≈ 8.09,
 * high ≈ 17.40 instead of 8 and 18), applied at every length; cos and sin are multiplied by the
 * concentration 0.1·ln(factor) + 1 (yarnConcentration), which scales every q·k by its square: fold it into
 * the softmax scale (head_dim^-0.5 · c², the sinks unscaled). Its rotation is NeoX-style (halves: x[i]
 * with x[i + d/2]): rope.ts `style: 'half'` (the rotate_half entry point).
 */

/** YaRN parameters, as parsed from config.json's rope_scaling. */
export interface YarnScaling {
  type: 'yarn';
  factor: number;
  originalMaxPositionEmbeddings: number;
  betaFast: number;
  betaSlow: number;
  mscale: number;
  mscaleAllDim: number;
  /** HF rope_scaling.truncate (default true): round the ramp bounds to whole pair indices (floor / ceil). GPT-OSS: false. */
  truncate?: boolean;
}

/** dim·ln(L / (2π·rotations)) / (2 ln θ): the pair index whose wavelength makes `rotations` turns over L. */
function correctionDim(rotations: number, dim: number, theta: number, maxPos: number): number {
  return (dim * Math.log(maxPos / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
}

/** YaRN's [low, high] pair-index range (official `find_correction_range`; unrounded when `truncate` is false). */
export function yarnCorrectionRange(dim: number, theta: number, s: YarnScaling): [number, number] {
  let low = correctionDim(s.betaFast, dim, theta, s.originalMaxPositionEmbeddings);
  let high = correctionDim(s.betaSlow, dim, theta, s.originalMaxPositionEmbeddings);
  if (s.truncate !== false) { low = Math.floor(low); high = Math.ceil(high); }
  return [Math.max(low, 0), Math.min(high, dim - 1)];
}

/**
 * inv_freq[i] = θ^(-2i/d) for i < d/2 (rounded to float32 as torch computes it), YaRN-corrected when
 * `scaling` is given: ramp[i] = clamp((i−low)/(high−low), 0, 1) (high += 0.001 when equal),
 * inv_freq = inv_freq/factor·ramp + inv_freq·(1−ramp).
 */
export function ropeInvFreq(ropeDim: number, theta: number, scaling: YarnScaling | null): Float32Array {
  if (!Number.isInteger(ropeDim) || ropeDim <= 0 || ropeDim % 2) throw new RangeError(`ropeInvFreq: rope dim must be a positive even integer, got ${ropeDim}`);
  const half = ropeDim / 2;
  const f = new Float32Array(half);
  // torch: 1 / base ** (arange(0, dim, 2, float32) / dim): the exponent and power in float32.
  for (let i = 0; i < half; i++) f[i] = 1 / Math.fround(theta ** Math.fround((2 * i) / ropeDim));
  if (!scaling || scaling.type !== 'yarn') return f;
  const [low, hi0] = yarnCorrectionRange(ropeDim, theta, scaling);
  const high = low === hi0 ? hi0 + 0.001 : hi0;
  for (let i = 0; i < half; i++) {
    const ramp = Math.min(1, Math.max(0, Math.fround((i - low) / (high - low))));
    f[i] = (f[i] / scaling.factor) * ramp + f[i] * (1 - ramp);
  }
  return f;
}

/** YaRN's attention-magnitude factor: 0.1·m·ln(factor) + 1, or 1 when factor ≤ 1. */
export function yarnMscale(factor: number, mscale: number): number {
  return factor <= 1 ? 1 : 0.1 * mscale * Math.log(factor) + 1;
}

/** Softmax scale (nope+rope)^-0.5, times mscale(factor, mscale_all_dim)² under YaRN. */
export function yarnSoftmaxScale(qkHeadDim: number, scaling: YarnScaling | null): number {
  const base = qkHeadDim ** -0.5;
  if (!scaling || scaling.type !== 'yarn') return base;
  const m = yarnMscale(scaling.factor, scaling.mscaleAllDim);
  return base * m * m;
}

/**
 * YaRN's attention concentration for GPT-OSS (official `concentration`, HF `attention_factor` when
 * rope_scaling has no mscale): 0.1·ln(factor) + 1, or 1 when factor ≤ 1. It multiplies cos and sin, so
 * q·k by its square.
 */
export function yarnConcentration(s: YarnScaling | null): number {
  return s && s.type === 'yarn' ? yarnMscale(s.factor, 1) : 1;
}
