/**
 * The memory plan against the GPU layer's own accounting (BufferManager.bytesAllocated, every buffer
 * webmoe allocates): load a model, run a prefill of the plan's `prefillTokens` and a decode step with
 * the KV cache at full context, and compare the bytes allocated with the plan, part by part and in all.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GpuModelLoader, type AcquireGpu } from '../../src/model/assemble';
import { openCheckpoint } from '../../src/model/checkpoint';
import { directoryModel } from '../../src/loader/node-source';
import { urlModel } from '../../src/loader/model-source';
import type { GpuRunner } from '../../src/model/gpu-runner';
import type { Gpu } from '../../src/gpu/device';
import type { ModelSource } from '../../src/loader/model-source';
import { serveSyntheticRepo } from '../../src/bench/synthetic-server';
import { createNodeEngine } from '../../src/node';
import { LimitExceededError } from '../../src/errors';

const greedy = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 1 };

async function planVsAllocated(source: ModelSource, weights: 'f32' | 'f16' | 'q8' | 'q4', contextLength: number) {
  let gpu: Gpu | null = null;
  const acquire: AcquireGpu = async (o, log) => {
    const { acquireNodeGpu } = await import(/* @vite-ignore */ '../../src/node');
    gpu = (await acquireNodeGpu({ ...o, log })) as Gpu;
    return gpu;
  };
  const ckpt = await openCheckpoint(source, { validateTokenizer: false });
  const m = await new GpuModelLoader(acquire).load(ckpt, 'plan', { weights, contextLength });
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

function expectWithin(actual: number, planned: number, rel: number, what: string) {
  expect(Math.abs(planned - actual) / actual, `${what}: planned ${planned}, allocated ${actual}`).toBeLessThanOrEqual(rel);
}

describe('memory plan vs bytes allocated', () => {
  it('the fixture (f32, context 256): weights, KV and the total within 5%', async () => {
    const r = await planVsAllocated(directoryModel(new URL('../fixtures/deepseek-v3-tiny/', import.meta.url).pathname), 'f32', 256);
    expectWithin(r.weights, r.plan.weights.bytes, 0.01, 'weights');
    expect(r.kv).toBe(r.plan.kvCache.bytes);
    expectWithin(r.temps, r.plan.activations.bytes, 0.05, 'activations (temp pool)');
    expectWithin(r.total, r.plan.gpuBytes, 0.05, 'total');
  });

  it('the bundled model (q8, context 256)', async () => {
    const r = await planVsAllocated(directoryModel(new URL('../../public/models/webmoe-tiny/', import.meta.url).pathname), 'q8', 256);
    expectWithin(r.weights, r.plan.weights.bytes, 0.01, 'weights');
    expect(r.kv).toBe(r.plan.kvCache.bytes);
    expectWithin(r.temps, r.plan.activations.bytes, 0.05, 'activations (temp pool)');
    expectWithin(r.total, r.plan.gpuBytes, 0.05, 'total');
  });

  it('a synthetic BF16 checkpoint over HTTP (q4, vec4 widths, 3 layers, context 256)', async () => {
    const cfg = JSON.parse(readFileSync(new URL('../data/configs/DeepSeek-V2-Lite/config.json', import.meta.url), 'utf8'));
    // V2-Lite's layout (q_lora null, 2 shared experts, one dense layer, softmax routing) at a quarter width.
    const small = { ...cfg, num_hidden_layers: 3, hidden_size: 512, intermediate_size: 1536, moe_intermediate_size: 352, n_routed_experts: 16, vocab_size: 4096, num_attention_heads: 4, bos_token_id: 0, eos_token_id: 1 };
    const s = await serveSyntheticRepo(small, { shardBytes: 16 << 20 });
    try {
      const r = await planVsAllocated(urlModel(s.url, { cache: false }), 'q4', 256);
      expect(r.plan.storage).toMatchObject({ weights: 'q4', experts: 'q4', embedding: 'f16' });
      expectWithin(r.weights, r.plan.weights.bytes, 0.01, 'weights');
      expect(r.kv).toBe(r.plan.kvCache.bytes);
      expectWithin(r.temps, r.plan.activations.bytes, 0.05, 'activations (temp pool)');
      expectWithin(r.total, r.plan.gpuBytes, 0.05, 'total');
    } finally {
      await s.close();
    }
  });

  // 5.5 minutes and 4.6 GB of process memory on the 2-core SwiftShader machine (quantising 1.3 GB of
  // weights on the CPU, a 256-token prefill at full width): opt-in, reported as skipped otherwise.
  // Measured: planned 1,359,199,288 B, allocated 1,359,068,152 B (+0.01%), weights equal to the byte.
  it.runIf(!!process.env.WEBMOE_LARGE)("DeepSeek-V2-Lite's real widths, 3 layers (BF16 over HTTP, q4, context 256; WEBMOE_LARGE=1): 64 experts × 1408, hidden 2048, vocab 102400", async () => {
    const cfg = JSON.parse(readFileSync(new URL('../data/configs/DeepSeek-V2-Lite/config.json', import.meta.url), 'utf8'));
    const s = await serveSyntheticRepo({ ...cfg, num_hidden_layers: 3 });
    try {
      const r = await planVsAllocated(urlModel(s.url, { cache: false }), 'q4', 256);
      expect(r.plan.expertStacks).toEqual([64]);
      expectWithin(r.weights, r.plan.weights.bytes, 0.01, 'weights');
      expect(r.kv).toBe(r.plan.kvCache.bytes);
      expectWithin(r.temps, r.plan.activations.bytes, 0.05, 'activations (temp pool)');
      expectWithin(r.total, r.plan.gpuBytes, 0.05, 'total');
    } finally {
      await s.close();
    }
  }, 600_000);

  it('DeepSeek-V3 (671B) fails early with the typed limit error, after reading config.json and the shard headers only', async () => {
    const s = await serveSyntheticRepo(JSON.parse(readFileSync(new URL('../data/configs/DeepSeek-V3/config.json', import.meta.url), 'utf8')));
    const engine = createNodeEngine();
    try {
      let err: unknown;
      try { await engine.load(s.url, { weights: 'q4', requireTokenizer: false }); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(LimitExceededError);
      // The expert stacks fit the binding limits; the 421 GB plan does not fit the memory of this CPU
      // adapter (system memory, gpu.memoryHint), and no storage or context would.
      expect((err as Error).message).toMatch(/GPU memory = \d+, but the device grants \d+ \(short by \d+\)/);
      expect((err as Error).message).toMatch(/createRemoteEngine/);
      // Per shard: the URL loader's first range request (1 MiB probe) and the rest of a longer header.
      for (const name of s.repo.shards) {
        const f = s.repo.files.get(name)!;
        const headerEnd = 8 + new DataView(f.read(0, 8).buffer).getUint32(0, true);
        expect(s.stats.byFile.get(name) ?? 0, name).toBeLessThanOrEqual(Math.max(1 << 20, headerEnd) + headerEnd);
      }
      expect(s.stats.bytesSent).toBeLessThan(s.repo.tensorBytes / 1000);
      expect((await engine.stats()).loaded).toBe(false);
    } finally {
      await engine.unload();
      await s.close();
    }
  });
});
