/**
 * Auxiliary-loss-free bias balancing (DeepSeek-V3 §2.1.2; Wang et al. 2408.15664) as an offline
 * calibration utility: route batches of text through a model, and after each step move every MoE
 * layer's selection bias towards balance, b_i ← b_i + γ·sign(mean load − load_i). The bias only changes
 * which experts are chosen (gating weights use the unbiased scores). Normal inference never runs this:
 * it leaves the checkpoint's bias untouched; the result is exported as a safetensors file that loads
 * over the checkpoint (same tensor names).
 */
import { writeSafetensors } from '../formats/safetensors';
import { ArgumentError } from '../errors';
import { maxVio } from './moe-telemetry';
import { tensorName } from './tensors';

export interface BiasRunner {
  /** MoE layer indices */
  layers: number[];
  experts: number;
  topK: number;
  /** Routes one batch with these per-layer biases; returns per-layer expert counts for this batch. */
  route(tokens: number[], biases: Map<number, Float32Array>): Promise<Map<number, number[]>>;
}

export interface CalibrateOptions {
  /** update steps (one batch each, cycling through `batches`) */
  steps: number;
  /** bias update speed γ (DeepSeek-V3 pre-training: 0.001) */
  gamma: number;
  /** starting biases (usually the checkpoint's e_score_correction_bias; zeros when absent) */
  initialBias: Map<number, Float32Array>;
}

export interface CalibrateResult {
  biases: Map<number, Float32Array>;
  /** MaxVio of the counts summed over all batches, with the initial / final biases */
  maxVioBefore: Map<number, number>;
  maxVioAfter: Map<number, number>;
  /** per step: the batch's MaxVio per layer before that step's update */
  history: { step: number; maxVio: Map<number, number> }[];
}

function copyBiases(runner: BiasRunner, src: Map<number, Float32Array>): Map<number, Float32Array> {
  const out = new Map<number, Float32Array>();
  for (const l of runner.layers) {
    const b = src.get(l);
    if (b && b.length !== runner.experts) throw new ArgumentError(`calibrateBias: initial bias of layer ${l} has ${b.length} entries, want ${runner.experts}`);
    out.set(l, b ? Float32Array.from(b) : new Float32Array(runner.experts));
  }
  return out;
}

/** MaxVio per layer over the counts of all batches routed with `biases`. */
export async function evaluateMaxVio(runner: BiasRunner, batches: number[][], biases: Map<number, Float32Array>): Promise<Map<number, number>> {
  const total = new Map<number, number[]>(runner.layers.map((l) => [l, new Array<number>(runner.experts).fill(0)]));
  for (const b of batches) {
    const counts = await runner.route(b, biases);
    for (const l of runner.layers) {
      const c = counts.get(l);
      if (!c) throw new ArgumentError(`calibrateBias: the runner returned no counts for layer ${l}`);
      c.forEach((v, e) => (total.get(l)![e] += v));
    }
  }
  return new Map(runner.layers.map((l) => [l, maxVio(total.get(l)!)]));
}

export async function calibrateBias(runner: BiasRunner, batches: number[][], opts: CalibrateOptions): Promise<CalibrateResult> {
  if (!batches.length) throw new ArgumentError('calibrateBias: no batches');
  if (!(opts.steps >= 0) || !(opts.gamma > 0)) throw new ArgumentError(`calibrateBias: steps ${opts.steps} must be ≥ 0 and gamma ${opts.gamma} > 0`);
  const biases = copyBiases(runner, opts.initialBias);
  const maxVioBefore = await evaluateMaxVio(runner, batches, biases);
  const history: CalibrateResult['history'] = [];
  for (let step = 0; step < opts.steps; step++) {
    const counts = await runner.route(batches[step % batches.length], biases);
    const vio = new Map<number, number>();
    for (const l of runner.layers) {
      const c = counts.get(l)!;
      vio.set(l, maxVio(c));
      const mean = c.reduce((a, b) => a + b, 0) / c.length;
      const b = biases.get(l)!;
      for (let e = 0; e < runner.experts; e++) b[e] += opts.gamma * Math.sign(mean - c[e]);
    }
    history.push({ step, maxVio: vio });
  }
  const maxVioAfter = await evaluateMaxVio(runner, batches, biases);
  return { biases, maxVioBefore, maxVioAfter, history };
}

/** The biases as `model.layers.N.mlp.gate.e_score_correction_bias` F32 [E] tensors (loads over the checkpoint). */
export function biasesToSafetensors(biases: Map<number, Float32Array>, metadata: Record<string, string> = {}): Uint8Array {
  const tensors: Parameters<typeof writeSafetensors>[0] = {};
  for (const l of [...biases.keys()].sort((a, b) => a - b)) {
    const b = biases.get(l)!;
    tensors[tensorName('router_bias', l)] = { dtype: 'F32', shape: [b.length], data: b };
  }
  return writeSafetensors(tensors, { format: 'pt', producer: 'webmoe calibrateBias', ...metadata });
}
