/**
 * Sampling a logits row on the CPU, for the steps the GPU sampler cannot take: a row masked by a
 * grammar (JSON mode) or one whose log-probabilities are wanted. It runs the GPU sampler's own CPU
 * reference (same algorithm, same random stream), so an unmasked CPU step draws the token the GPU
 * would have drawn for the same seed and step.
 */
import { sampleRef } from '../kernels/sample.ref';
import type { SamplingParams } from './runner';

/** The token the GPU sampler would draw from `logits` at `step` (`history` for the repetition penalty). */
export function sampleRowOnCpu(logits: Float32Array, params: SamplingParams, step: number, history?: number[]): number {
  return sampleRef(logits, params, step, history);
}
