/**
 * The memory plan against the GPU layer's own accounting (BufferManager.bytesAllocated, every buffer
 * webmoe allocates): load a model, run a prefill of the plan's `prefillTokens` and a decode step with
 * the KV cache at full context, and compare the bytes allocated with the plan, part by part and in all.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { directoryModel } from '../../src/loader/node-source';
import { urlModel } from '../../src/loader/model-source';
import { serveSyntheticRepo } from '../../src/bench/synthetic-server';
import { createNodeEngine } from '../../src/node';
import { LimitExceededError } from '../../src/errors';

import { expectWithin, planVsAllocated } from '../helpers/plan-vs-allocated';

describe('memory plan vs bytes allocated', () => {
  it('the fixture (f32, context 256): weights, KV and the total within 5%', async () => {
    const r = await planVsAllocated(directoryModel(new URL('../fixtures/deepseek-v3-tiny/', import.meta.url).pathname), 'f32', 256);
    expectWithin(r.weights, r.plan.weights.bytes, 0.01, 'weights');
    expect(r.kv).toBe(r.plan.kvCache.bytes);
    expectWithin(r.temps, r.plan.activations.bytes, 0.05, 'activations (temp pool)');
    expectWithin(r.total, r.plan.gpuBytes, 0.05, 'total');
  });

  it('the fixture with an f16 KV cache (context 256): 2 bytes per element, half the f32 cache; totals within 5%', async () => {
    const r = await planVsAllocated(directoryModel(new URL('../fixtures/deepseek-v3-tiny/', import.meta.url).pathname), 'f32', 256, 'f16');
    expect(r.plan.storage.kvCache).toBe('f16');
    expect(r.plan.kvCache.bytes).toBe(r.kv);
    expect(r.kv).toBe(r.plan.kvCache.bytesPerToken * 256);
    expectWithin(r.weights, r.plan.weights.bytes, 0.01, 'weights');
    expectWithin(r.temps, r.plan.activations.bytes, 0.05, 'activations (temp pool)');
    expectWithin(r.total, r.plan.gpuBytes, 0.05, 'total');
    const f32 = await planVsAllocated(directoryModel(new URL('../fixtures/deepseek-v3-tiny/', import.meta.url).pathname), 'f32', 256, 'f32');
    expect(f32.plan.storage.kvCache).toBe('f32');
    expect(r.kv * 2).toBe(f32.kv);
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
