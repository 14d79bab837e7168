// Engine.plan: the plan a load is checked against, from config.json and the headers only. For the
// bundled model it is the plan the load then reports; for DeepSeek-V3 it rejects with the load's typed
// limit error after a few header bytes per shard; a bad prefillChunk is the load's ArgumentError.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { createNodeEngine } from '../../src/node';
import { serveSyntheticRepo } from '../../src/bench/synthetic-server';
import { ArgumentError, LimitExceededError } from '../../src/errors';

const BUNDLED = fileURLToPath(new URL('../../public/models/webmoe-tiny/', import.meta.url));

describe('engine.plan', () => {
  it('the bundled model: the plan equals the one its load is checked against, and nothing is loaded', async () => {
    const engine = createNodeEngine();
    try {
      const options = { weights: 'q8' as const, contextLength: 200, prefillChunk: 64 };
      const plan = await engine.plan(BUNDLED, options);
      expect((await engine.stats()).loaded).toBe(false);
      expect(plan.prefillTokens).toBe(64);
      expect(plan.contextLength).toBe(200);
      expect(plan.storage.weights).toBe('q8');
      expect(plan.gpuBytes).toBe(plan.weights.bytes + plan.kvCache.bytes + plan.activations.bytes + plan.runtime.bytes);
      const info = await engine.load(BUNDLED, options);
      expect(info.memoryPlan).toEqual(plan);
      await expect(engine.plan(BUNDLED, { prefillChunk: 0 })).rejects.toBeInstanceOf(ArgumentError);
    } finally {
      await engine.unload();
    }
  });

  it('DeepSeek-V3 (671B): rejects with the typed limit error and its hint, after the headers only', async () => {
    const s = await serveSyntheticRepo(JSON.parse(readFileSync(new URL('../data/configs/DeepSeek-V3/config.json', import.meta.url), 'utf8')));
    const engine = createNodeEngine();
    try {
      let err: unknown;
      try { await engine.plan(s.url, { weights: 'q4' }); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(LimitExceededError);
      expect((err as Error).message).toMatch(/GPU memory = \d+, but the device grants \d+/);
      expect((err as Error).message).toMatch(/What fits|createRemoteEngine/);
      expect(s.stats.bytesSent).toBeLessThan(s.repo.tensorBytes / 1000);
    } finally {
      await engine.unload();
      await s.close();
    }
  });
});
