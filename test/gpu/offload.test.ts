// Expert offload (LoadOptions.gpuMemoryBudget) on the bundled model: with the routed experts in a GPU
// expert cache smaller than a layer's experts, the logits and greedy tokens equal full residency's
// exactly (each token's experts run on the same kernels in the same mode on the same bytes; only their
// slots differ), for prefill, decode and prefill-then-decode; cold experts in host memory and re-read
// from the source; GPU bytes stay flat while the cache thrashes; bad budgets get typed errors.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Gpu } from '../../src/gpu/device';
import { testGpu } from '../helpers/gpu';
import { gpuEngine } from '../helpers/models';
import { directoryModel } from '../../src/loader/node-source';
import type { LoadOptions } from '../../src/engine/types';
import type { MemoryPlan } from '../../src/model/memory-plan';
import { GpuBudgetError, LimitExceededError } from '../../src/errors';

const ROOT = join(import.meta.dirname, '..', '..');
const MODEL = join(ROOT, 'public', 'models', 'webmoe-tiny');
const { tokens } = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'webmoe-tiny-ref', 'tokens.json'), 'utf8')) as { tokens: number[] };
const PROMPT = 52;
const BASE: LoadOptions = { weights: 'f32', contextLength: 128 };
const greedy = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 1 };

let gpu: Gpu;
let full: MemoryPlan;
/** Full residency's outputs: every prefill row, then the prefix's last row and each decode row after it. */
let want: { prefill: Float32Array; prefix: Float32Array; decode: Float32Array[]; greedy: number[] };

async function outputs(opts: LoadOptions) {
  const e = gpuEngine(gpu);
  const info = await e.load(directoryModel(MODEL), { ...BASE, ...opts });
  try {
    const prefill = await gpu.checked(() => e.runner.logits(tokens, true));
    e.runner.truncate(0);
    const prefix = await gpu.checked(() => e.runner.logits(tokens.slice(0, PROMPT), false));
    const decode: Float32Array[] = [];
    for (let i = PROMPT; i < tokens.length; i++) decode.push(await gpu.checked(() => e.runner.logits([tokens[i]], false)));
    // Greedy decoding through the sampler (prefill then single-token steps).
    e.runner.truncate(0);
    const out: number[] = [];
    let next = tokens.slice(0, 12), history = next.slice();
    for (let s = 0; s < 12; s++) {
      const r = await gpu.checked(() => e.runner.step(next, greedy, s, history, false));
      out.push(r.token);
      next = [r.token];
      history = [...history, r.token];
    }
    const counters = e.runner.counters().offload;
    // The engine's figures of a generation.
    e.runner.truncate(0);
    // (Plain decoding, so each step is one token: the round-trip count below is per step.)
    const plain = await collect(e.generate('The old man', { maxTokens: 6, temperature: 0, speculative: 'off' }));
    const stats = await e.stats();
    // The bundled model has an MTP layer: self-speculative decoding over the expert cache gives the same tokens.
    e.runner.truncate(0);
    const speculative = await collect(e.generate('The old man', { maxTokens: 6, temperature: 0, speculative: 'mtp' }));
    expect(speculative).toEqual(plain);
    return { info, prefill, prefix, decode, greedy: out, counters, stats, gpuBytes: gpu.buffers.bytesAllocated, engine: e };
  } catch (err) {
    await e.unload();
    throw err;
  }
}

/** The token ids of a generation. */
async function collect(it: AsyncGenerator<{ token: number }, unknown>): Promise<number[]> {
  const out: number[] = [];
  for await (const c of it) out.push(c.token);
  return out;
}

const maxDiff = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

beforeAll(async () => {
  gpu = await testGpu();
  const r = await outputs({});
  full = r.info.memoryPlan!;
  expect(full.offload).toBeNull();
  want = r;
  await r.engine.unload();
}, 120_000);

/** A budget that keeps `share` of the routed experts' bytes (the rest of the plan resident). */
const budgetFor = (share: number) => full.gpuBytes - Math.floor((1 - share) * (full.weights.byRole.routed_experts ?? 0));

describe('expert offload: outputs equal full residency', () => {
  const cases: [string, () => number, LoadOptions][] = [
    // The bundled model routes 4 of 16 experts: 25% of the expert bytes plus the cache's own tables and
    // scratch is its minimum budget; 30% leaves room for the same 4 slots with the budget's slack.
    ['the minimum budget, cold experts re-read from the source', () => minimum, { expertSource: 'source' }],
    ['30% of the expert bytes, cold experts on the host', () => budgetFor(0.3), { expertSource: 'host' }],
    ['50% of the expert bytes, next-gate prefetch, load eviction', () => budgetFor(0.5), { expertPrefetch: 'next-gate', expertEviction: 'load' }],
  ];
  let minimum = 0;
  beforeAll(async () => {
    // The minimum, as the typed error of a budget below it names it.
    const e = gpuEngine(gpu);
    const err = await e.plan!(directoryModel(MODEL), { ...BASE, gpuMemoryBudget: 1 << 20 }).catch((x) => x);
    expect(err).toBeInstanceOf(GpuBudgetError);
    minimum = (err as GpuBudgetError).details!.minimumBytes as number;
    expect(minimum).toBeGreaterThan(1 << 20);
    expect(err.message).toMatch(/the minimum is [\d.]+ MiB/);
  });

  it.each(cases)('%s', async (_, budget, opts) => {
    const r = await outputs({ gpuMemoryBudget: budget(), ...opts });
    try {
      const o = r.info.memoryPlan!.offload!;
      const K = r.info.expertsPerToken, E = r.info.experts;
      expect(o.capacity).toBeGreaterThanOrEqual(K);
      expect(o.capacity).toBeLessThan(E);
      expect(r.info.memoryPlan!.gpuBytes).toBeLessThanOrEqual(budget());
      console.info(`offload ${_}: capacity ${o.capacity}/${E}, plan ${r.info.memoryPlan!.gpuBytes} B ≤ budget ${budget()} B; allocated ${r.gpuBytes} B; stats ${JSON.stringify(r.stats.offload)}`);
      expect(maxDiff(r.prefill, want.prefill)).toBe(0);
      expect(maxDiff(r.prefix, want.prefix)).toBe(0);
      r.decode.forEach((row, i) => expect(maxDiff(row, want.decode[i]), `decode row ${i}`).toBe(0));
      expect(r.greedy).toEqual(want.greedy);
      const s = r.stats.offload!;
      expect(s.capacity).toBe(o.capacity);
      expect(s.source).toBe(opts.expertSource ?? 'host');
      const c = r.counters!;
      expect(c.hits).toBeGreaterThan(0);
      expect(c.hits).toBeLessThan(c.lookups);
      expect(c.bytesUploaded).toBeGreaterThan(0);
      expect(s.hitRate).toBeGreaterThan(0);
      expect(s.hitRate).toBeLessThanOrEqual(1);
      // One routing readback per MoE layer per step, plus the token id.
      expect(s.roundTripsPerToken).toBe(r.info.moeLayers.length + 1);
      // What the load allocated stays within the plan (and so within the budget).
      expect(r.gpuBytes).toBeLessThanOrEqual(r.info.memoryPlan!.gpuBytes * 1.05);
    } finally {
      await r.engine.unload();
    }
  }, 120_000);
});

describe('expert offload: budgets', () => {
  it('a budget the full plan fits keeps everything resident', async () => {
    const e = gpuEngine(gpu);
    const plan = await e.plan!(directoryModel(MODEL), { ...BASE, gpuMemoryBudget: full.gpuBytes });
    expect(plan.offload).toBeNull();
  });

  it('a budget above the device is a LimitExceededError; not a number is an ArgumentError', async () => {
    const e = gpuEngine(gpu);
    const above = await e.load(directoryModel(MODEL), { ...BASE, gpuMemoryBudget: 2 ** 60 }).catch((x) => x);
    expect(above).toBeInstanceOf(LimitExceededError);
    expect(above.message).toMatch(/GPU budget/);
    for (const bad of [0, -5, Number.NaN]) {
      const err = await e.plan!(directoryModel(MODEL), { ...BASE, gpuMemoryBudget: bad }).catch((x) => x);
      expect(err.code).toBe('BAD_ARGUMENT');
    }
    const policy = await e.load(directoryModel(MODEL), { ...BASE, gpuMemoryBudget: budgetFor(0.5), expertEviction: 'random' as never }).catch((x) => x);
    expect(policy.code).toBe('BAD_ARGUMENT');
    expect(gpu.buffers.bytesAllocated).toBeLessThan(full.gpuBytes); // the failed load freed what it took
  });

  it('GPU bytes stay flat over a long thrashing run at the minimum budget', async () => {
    const e = gpuEngine(gpu);
    const err = await e.plan!(directoryModel(MODEL), { ...BASE, gpuMemoryBudget: 1 << 20 }).catch((x) => x);
    await e.load(directoryModel(MODEL), { ...BASE, gpuMemoryBudget: (err as GpuBudgetError).details!.minimumBytes as number });
    try {
      const rounds: number[] = [];
      // Each of 3 rounds runs the same three prompts with their decode steps: other experts per prompt, so
      // every round evicts and uploads in every layer; after the first round (which sizes the
      // temporaries' pool) the GPU bytes must not move.
      for (let round = 0; round < 3; round++) {
        for (let p = 0; p < 3; p++) {
          e.runner.truncate(0);
          await gpu.checked(() => e.runner.logits(tokens.slice(p * 8, p * 8 + 24), false));
          for (let i = 0; i < 4; i++) await gpu.checked(() => e.runner.logits([tokens[(p * 13 + i * 7) % tokens.length]], false));
        }
        rounds.push(gpu.buffers.bytesAllocated);
      }
      const c = e.runner.counters().offload!;
      expect(c.uploads).toBeGreaterThan(40); // it did thrash
      console.info(`thrash: GPU bytes per round ${rounds.join(', ')}; ${c.uploads} uploads, ${c.bytesUploaded} B`);
      expect(new Set(rounds).size).toBe(1);
    } finally {
      await e.unload();
    }
  }, 120_000);
});
