// The worker engine in Chromium: a module Worker running the engine on WebGPU, driven through comlink.
import { describe, it, expect } from 'vitest';
import { createWorkerEngine } from '../../src/engine/worker-client';
import type { Engine } from '../../src/engine/types';
import { memoryModel } from '../../src/loader/model-source';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';

async function fixtureFiles(): Promise<File[]> {
  const base = '/test/fixtures/deepseek-v3-tiny/';
  const get = async (n: string) => new File([await (await fetch(base + n)).arrayBuffer()], n);
  return [await get('config.json'), await get('model.safetensors'), new File([JSON.stringify(byteLevelTokenizerJson())], 'tokenizer.json')];
}

describe('createWorkerEngine in Chromium', () => {
  it('loads from files, streams tokens, reports stats, passes typed errors, and dies cleanly', async () => {
    const engine: Engine & { terminate(): void } = createWorkerEngine(); // the same Engine interface as createEngine's
    // A ModelSource object cannot cross to the worker: a typed error, not a clone failure.
    await expect(engine.load(memoryModel({ 'config.json': '{}' }))).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    // The plan crosses too (headers only, nothing loaded), and is the one the load is checked against.
    const plan = await engine.plan!(await fixtureFiles(), { weights: 'f32' });
    expect(plan.gpuBytes).toBe(plan.weights.bytes + plan.kvCache.bytes + plan.activations.bytes + plan.runtime.bytes);
    await expect(engine.plan!(await fixtureFiles(), { prefillChunk: 0 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT', name: 'ArgumentError' });
    const progress: string[] = [];
    const info = await engine.load(await fixtureFiles(), { weights: 'f32', onProgress: (p) => progress.push(p.phase) });
    expect(info.layers).toBe(3);
    expect(info.memoryPlan).toEqual(plan);
    expect(progress).toContain('weights');

    const chunks: number[] = [];
    const it = engine.generate('Hi', { temperature: 0, maxTokens: 8, stopAtEos: false, routing: true });
    let r;
    for (;;) {
      r = await it.next();
      if (r.done) break;
      chunks.push(r.value.token);
      expect(Object.keys(r.value.experts ?? {})).toEqual(['1', '2']);
    }
    expect(chunks).toHaveLength(8);
    expect(r.value.tokens).toEqual(chunks);

    const s = await engine.stats();
    expect(s.kvBytesPerToken).toBeGreaterThan(0);
    expect(s.mhaKvBytesPerToken).toBeGreaterThan(s.kvBytesPerToken);
    expect(s.expertLoad.map((l) => l.layer)).toEqual([1, 2]);
    expect(s.readbacksPerToken).toBeLessThanOrEqual(1 + 2); // token id + routing ids (asked for)

    // Errors keep their name and code across the boundary.
    await expect((async () => { for await (const _ of engine.generate('x', { temperature: -1 })) void _; })()).rejects.toMatchObject({ code: 'BAD_ARGUMENT', name: 'ArgumentError' });

    // Terminating rejects pending calls with a typed error.
    const pending = engine.stats();
    engine.terminate();
    await expect(pending).rejects.toMatchObject({ code: 'WORKER_CRASHED' });
    await expect(engine.stats()).rejects.toMatchObject({ code: 'WORKER_CRASHED' });

    // A new engine works after that.
    const again = createWorkerEngine();
    await again.load(await fixtureFiles(), { weights: 'f32' });
    expect((await again.stats()).loaded).toBe(true);
    again.terminate();
  });
});
