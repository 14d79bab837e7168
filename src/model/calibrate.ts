/**
 * Bias calibration on a loaded model (DeepSeek-V3's auxiliary-loss-free balancing, run offline): each
 * batch of text is routed through the real model on the GPU with trial biases, the gate kernels' load
 * counters give the per-expert counts, and calibrateBias moves the biases towards balance. The result
 * is a safetensors file of `e_score_correction_bias` tensors that loads over the checkpoint
 * (LoadOptions.overlay). The loaded model's own biases are restored afterwards.
 */
import { GpuRunner } from './gpu-runner';
import type { ModelRunner } from './runner';
import { calibrateBias, biasesToSafetensors, type BiasRunner, type CalibrateResult } from './moe-calibrate';
import { UnsupportedError, ArgumentError } from '../errors';

function modelBiasRunner(runner: GpuRunner): { bias: BiasRunner; initial: Map<number, Float32Array>; restore(): void } {
  const cfg = runner.cfg;
  const gpu = runner.be.gpu;
  const layers: number[] = [];
  const buffers = new Map<number, GPUBuffer>();
  runner.weights.layers.forEach((L, i) => {
    if (!L.moe) return;
    if (!L.moe.bias) throw new UnsupportedError(`layer ${i} has no e_score_correction_bias: bias balancing applies to noaux_tc (sigmoid + bias) routers`);
    layers.push(i);
    buffers.set(i, L.moe.bias);
  });
  if (!layers.length) throw new UnsupportedError('the model has no MoE layers');
  const original = new Map<number, Float32Array>();
  const bias: BiasRunner = {
    layers,
    experts: cfg.nRoutedExperts,
    topK: cfg.numExpertsPerTok,
    async route(tokens, biases) {
      for (const [l, b] of biases) gpu.buffers.write(buffers.get(l)!, b);
      runner.truncate(0);
      runner.resetExpertLoad();
      await runner.logits(tokens, false);
      runner.truncate(0);
      const load = await runner.expertLoad();
      return new Map(load.map((x) => [x.layer, x.counts]));
    },
  };
  return {
    bias,
    initial: original,
    restore() { for (const [l, b] of original) gpu.buffers.write(buffers.get(l)!, b); },
  };
}

export interface CalibrationReport extends CalibrateResult { file: Uint8Array }

export interface CalibrationOptions { steps: number; gamma: number }

/** Calibrates a loaded model's gate biases on `batches` of token ids; its own biases are restored after. */
export async function calibrateRunner(runner: ModelRunner, batches: number[][], opts: CalibrationOptions): Promise<CalibrationReport> {
  if (!(runner instanceof GpuRunner)) throw new ArgumentError('calibration runs on the GPU engine');
  if (batches.some((b) => b.length === 0 || b.length > runner.capacity)) throw new ArgumentError(`every batch must have 1..${runner.capacity} tokens`);
  const m = modelBiasRunner(runner);
  for (const l of m.bias.layers) {
    const buf = runner.weights.layers[l].moe!.bias!;
    m.initial.set(l, await runner.be.gpu.buffers.readF32(buf, 0, runner.cfg.nRoutedExperts));
  }
  try {
    const r = await calibrateBias(m.bias, batches, { ...opts, initialBias: m.initial });
    return { ...r, file: biasesToSafetensors(r.biases, { gamma: String(opts.gamma), steps: String(opts.steps) }) };
  } finally {
    m.restore();
    runner.truncate(0);
    runner.resetExpertLoad();
  }
}
