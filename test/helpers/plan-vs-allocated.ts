/**
 * Plan vs allocated for a model (test/gpu/memory-plan.test.ts, test/large/): load it, run a prefill of the
 * plan's `prefillTokens` and decode steps with the KV cache at full context, and return the bytes the GPU
 * layer allocated beside the plan.
 */
import { expect } from 'vitest';
import { GpuModelLoader, type AcquireGpu } from '../../src/model/assemble';
import { openCheckpoint } from '../../src/model/checkpoint';
import type { GpuRunner } from '../../src/model/gpu-runner';
import type { Gpu } from '../../src/gpu/device';
import type { ModelSource } from '../../src/loader/model-source';

const greedy = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 1 };

export async function planVsAllocated(source: ModelSource, weights: 'f32' | 'f16' | 'q8' | 'q4', contextLength: number, kvCache?: 'f16' | 'f32') {
  let gpu: Gpu | null = null;
  const acquire: AcquireGpu = async (o, log) => {
    const { acquireNodeGpu } = await import(/* @vite-ignore */ '../../src/node');
    gpu = (await acquireNodeGpu({ ...o, log })) as Gpu;
    return gpu;
  };
  const ckpt = await openCheckpoint(source, { validateTokenizer: false });
  const m = await new GpuModelLoader(acquire).load(ckpt, 'plan', { weights, contextLength, kvCache });
  const g = gpu! as Gpu;
  const runner = m.runner as GpuRunner;
  try {
    const weightsAllocated = runner.be.weightBytes;
    // A prompt of the plan's prefill size (min(512, context)), then decode steps with the cache at full context.
    const prompt = Array.from({ length: m.plan.prefillTokens }, (_, i) => (i * 7 + 3) % ckpt.config.vocabSize);
    let t = (await runner.step(prompt, greedy, 0, prompt, false)).token;
    runner.be.cache.ensureCapacity(contextLength);
    runner.truncate(Math.min(prompt.length, contextLength - 3)); // room for the decode steps
    for (let s = 1; s <= 2; s++) t = (await runner.step([t], greedy, s, [...prompt, t], false)).token;
    const p = m.plan;
    const total = g.buffers.bytesAllocated;
    console.info(`plan vs allocated (${weights}, context ${contextLength}): total ${p.gpuBytes} / ${total} (${((p.gpuBytes / total - 1) * 100).toFixed(2)}%), weights ${p.weights.bytes} / ${weightsAllocated}`);
    return {
      plan: p,
      weights: weightsAllocated,
      kv: runner.be.cache.bytesAllocated(),
      total: g.buffers.bytesAllocated,
      temps: [...(g.temps as unknown as { free: Map<number, GPUBuffer[]> }).free.values()].reduce((a, l) => a + l.reduce((b, x) => b + x.size, 0), 0),
    };
  } finally {
    runner.destroy();
    await ckpt.close();
  }
}

export function expectWithin(actual: number, planned: number, rel: number, what: string) {
  expect(Math.abs(planned - actual) / actual, `${what}: planned ${planned}, allocated ${actual}`).toBeLessThanOrEqual(rel);
}

