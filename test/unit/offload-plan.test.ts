// Expert offload in the memory plan (planMemory's gpuBudget) and the token runs of a prefill, without a
// GPU: the cache's capacity is the largest that fits, the minimum is top-k slots per MoE layer plus what
// stays resident, budgets below it are GpuBudgetErrors naming it.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GpuBudgetError } from '../../src/errors';
import { parseConfig } from '../../src/model/config';
import { planMemory } from '../../src/model/memory-plan';
import { expertCounts, tokenRuns } from '../../src/model/expert-cache';

const realConfig = (model: string) => parseConfig(JSON.parse(readFileSync(new URL(`../data/configs/${model}/config.json`, import.meta.url), 'utf8')));

describe('memory plan with a GPU budget', () => {
  const cfg = realConfig('DeepSeek-V2-Lite');
  const opts = { weights: 'q4' as const, contextLength: 4096 };
  const full = planMemory(cfg, null, opts);

  it('a budget the plan fits changes nothing; one it does not gets the largest cache that fits', () => {
    expect(planMemory(cfg, null, { ...opts, gpuBudget: full.gpuBytes }).offload).toBeNull();
    for (const gib of [8, 4, 3]) {
      const budget = gib * 2 ** 30;
      const p = planMemory(cfg, null, { ...opts, gpuBudget: budget });
      const o = p.offload!;
      expect(p.gpuBytes).toBeLessThanOrEqual(budget);
      expect(o.capacity).toBeGreaterThanOrEqual(cfg.numExpertsPerTok);
      expect(o.capacity).toBeLessThan(cfg.nRoutedExperts);
      expect(o.cacheBytes).toBe(p.weights.byRole.routed_experts);
      expect(o.cacheBytes).toBe(o.capacity * o.expertBytes * o.moeLayers);
      // One slot more would not fit.
      const more = planMemory(cfg, null, { ...opts, gpuBudget: p.gpuBytes + o.expertBytes * o.moeLayers - 1 });
      expect(more.offload!.capacity).toBe(o.capacity);
      console.info(`V2-Lite q4 at ${gib} GiB: ${o.capacity}/${o.experts} experts per layer, plan ${(p.gpuBytes / 2 ** 30).toFixed(2)} GiB, minimum ${(o.minimumBytes / 2 ** 30).toFixed(2)} GiB`);
    }
  });

  it('below the minimum: GpuBudgetError naming the minimum in MiB; the minimum itself runs top-k slots', () => {
    const min = planMemory(cfg, null, { ...opts, gpuBudget: 3 * 2 ** 30 }).offload!.minimumBytes;
    const at = planMemory(cfg, null, { ...opts, gpuBudget: min });
    expect(at.offload!.capacity).toBe(cfg.numExpertsPerTok);
    let err: unknown;
    try { planMemory(cfg, null, { ...opts, gpuBudget: min - 1 }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(GpuBudgetError);
    expect((err as GpuBudgetError).details!.minimumBytes).toBe(min);
    expect((err as Error).message).toContain(`the minimum is ${(min / 2 ** 20).toFixed(1)} MiB`);
    expect(() => planMemory(cfg, null, { ...opts, gpuBudget: -1 })).toThrow(/gpuMemoryBudget must be a positive number/);
  });
});

// The plan is the same for every family (slots of experts per MoE layer; the Llama-style forwards pause
// in their MoE layers as DeepSeek's does: test/gpu/family-offload.test.ts runs them).
describe.each(['Qwen1.5-MoE-A2.7B', 'Qwen3-30B-A3B', 'OLMoE-1B-7B-0924', 'Mixtral-8x7B-v0.1', 'granite-3.1-3b-a800m'])('%s: a GPU budget between the minimum and the full plan', (model) => {
  it('gets the largest expert cache that fits, with the shared experts resident', () => {
    const cfg = realConfig(model);
    const opts = { weights: 'q4' as const, contextLength: 4096 };
    const full = planMemory(cfg, null, opts);
    let err: unknown;
    try { planMemory(cfg, null, { ...opts, gpuBudget: 2 ** 20 }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(GpuBudgetError);
    const min = (err as GpuBudgetError).details!.minimumBytes as number;
    const budget = Math.floor((min + full.gpuBytes) / 2);
    const p = planMemory(cfg, null, { ...opts, gpuBudget: budget });
    const o = p.offload!;
    expect(p.gpuBytes).toBeLessThanOrEqual(budget);
    expect(o.capacity).toBeGreaterThan(cfg.numExpertsPerTok);
    expect(o.capacity).toBeLessThan(cfg.nRoutedExperts);
    expect(o.cacheBytes).toBe(o.capacity * o.expertBytes * o.moeLayers);
    // Everything but the routed experts stays as the full plan has it (Qwen2-MoE's shared experts among them).
    expect(p.weights.bytes - p.weights.byRole.routed_experts).toBe(full.weights.bytes - full.weights.byRole.routed_experts);
    const gib = (n: number) => (n / 2 ** 30).toFixed(2);
    console.info(`${model} q4, 4096 tokens: full ${gib(full.gpuBytes)} GiB, minimum ${gib(min)} GiB; at ${gib(budget)} GiB ${o.capacity}/${o.experts} experts per layer`);
  });
});

describe('a model whose experts weigh less than the cache around them', () => {
  it('below the full plan: GpuBudgetError naming the full plan as the minimum', () => {
    // The Mixtral fixture (8 experts of 16×32) at q8: its experts take less than the slot tables and
    // scratch top-2 slots per layer would add.
    const cfg = parseConfig(JSON.parse(readFileSync(new URL('../fixtures/families/mixtral/config.json', import.meta.url), 'utf8')));
    const opts = { weights: 'q8' as const, contextLength: 64 };
    const full = planMemory(cfg, null, opts);
    let err: unknown;
    try { planMemory(cfg, null, { ...opts, gpuBudget: full.gpuBytes - 1 }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(GpuBudgetError);
    expect((err as GpuBudgetError).details!.minimumBytes).toBe(full.gpuBytes);
    expect((err as Error).message).toMatch(/expert offload would not save memory/);
    expect(planMemory(cfg, null, { ...opts, gpuBudget: full.gpuBytes }).offload).toBeNull();
  });
});

describe('token runs of a prefill', () => {
  it('each run fits the slots, covers its tokens in order, and a run ends only when the next token would not fit', () => {
    const K = 3, T = 50, E = 20, C = 5;
    let seed = 7;
    const r = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const ids = new Uint32Array(T * K);
    for (let t = 0; t < T; t++) {
      const pick = new Set<number>();
      while (pick.size < K) pick.add(Math.floor(r() * E));
      [...pick].forEach((e, j) => { ids[t * K + j] = e; });
    }
    const runs = tokenRuns(ids, T, K, C);
    expect(runs[0].t0).toBe(0);
    expect(runs.at(-1)!.t1).toBe(T);
    runs.forEach((run, i) => {
      if (i) expect(run.t0).toBe(runs[i - 1].t1);
      const want = new Set<number>();
      for (let t = run.t0; t < run.t1; t++) for (let j = 0; j < K; j++) want.add(ids[t * K + j]);
      expect(new Set(run.experts)).toEqual(want);
      expect(run.experts.length).toBeLessThanOrEqual(C);
      if (i < runs.length - 1) {
        for (let j = 0; j < K; j++) want.add(ids[run.t1 * K + j]);
        expect(want.size).toBeGreaterThan(C);
      }
    });
    expect(tokenRuns(ids, T, K, E)).toHaveLength(1);
    expect([...expertCounts([4, 2, 4, 4, 2, 9])]).toEqual([[4, 3], [2, 2], [9, 1]]);
  });
});
