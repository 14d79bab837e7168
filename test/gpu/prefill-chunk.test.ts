// Chunked prefill (LoadOptions.prefillChunk): a prompt run in chunks of 1, 3, 7 tokens or in one forward
// gives the same logits as the references, in prefill and in the decode steps after it, within the
// tolerances of the model tests (fixture 1e-4: model.test.ts; bundled model 1e-3 vs PyTorch:
// bundled-model.test.ts); the temporary pool (the GPU layer's own buffers) stays within the memory plan
// computed for that chunk; a chunk that is not a positive integer is an ArgumentError.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose } from '../helpers/gpu';
import { fixtureLogits, fixtureTokens } from '../helpers/fixture';
import { fixtureModel, gpuEngine } from '../helpers/models';
import { directoryModel } from '../../src/loader/node-source';
import type { ModelSource } from '../../src/loader/model-source';
import { ArgumentError, LimitExceededError } from '../../src/errors';

const ROOT = join(import.meta.dirname, '..', '..');
const REF = join(ROOT, 'test', 'fixtures', 'webmoe-tiny-ref');
const bundledModel = () => directoryModel(join(ROOT, 'public', 'models', 'webmoe-tiny'));
const bundledRef = () => {
  const b = readFileSync(join(REF, 'logits_prefill.f32.bin'));
  return { tokens: JSON.parse(readFileSync(join(REF, 'tokens.json'), 'utf8')).tokens as number[], logits: new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4) };
};

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

const greedy = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 1 };
/** Bytes the temporary pool holds (it only grows: per size class, the most any submit used). */
const poolBytes = () => [...(gpu.temps as unknown as { free: Map<number, GPUBuffer[]> }).free.values()].reduce((a, l) => a + l.reduce((b, x) => b + x.size, 0), 0);
const argmax = (x: Float32Array) => x.reduce((best, v, i) => (v > x[best] ? i : best), 0);

interface Case {
  name: string;
  model: () => ModelSource;
  /** Every position's reference logits for `tokens` (rows of V), prefill then decode computing the same rows. */
  ref: () => { tokens: number[]; logits: Float32Array };
  prompt: number;
  tol: { atol: number; rtol: number };
}

const cases: Case[] = [
  {
    name: 'fixture', model: fixtureModel, tol: { atol: 1e-4, rtol: 0 },
    // The fixture's hybrid run is a prefill of the first `split` tokens, then one token per step.
    ref: () => ({ tokens: fixtureTokens().tokens, logits: fixtureLogits('logits_hybrid_absorb.f32.bin') }),
    prompt: fixtureTokens().prefill_split,
  },
  { name: 'bundled model', model: bundledModel, tol: { atol: 1e-3, rtol: 0 }, ref: bundledRef, prompt: 56 },
];

describe.each(cases)('chunked prefill: $name', ({ model, ref, prompt: fullPrompt, tol }) => {
  it.each([1, 3, 7, 512])('chunks of %i tokens: prefill and the decode steps after it match the reference; temporaries within the plan', async (chunk) => {
    const { tokens, logits: want } = ref();
    // Whole chunks (the plan sizes full chunks at every start; a shorter last chunk may add small
    // size classes): the largest multiple of the chunk, or the whole prompt when the chunk is longer.
    const prompt = chunk >= fullPrompt ? fullPrompt : Math.floor(fullPrompt / chunk) * chunk;
    const e = gpuEngine(gpu);
    try {
    const info = await e.load(model(), { weights: 'f32', contextLength: 128, prefillChunk: chunk });
    const plan = info.memoryPlan!;
    expect(plan.prefillTokens).toBe(Math.min(chunk, 128));
    const V = e.runner.cfg.vocabSize;
    const row = (i: number) => want.subarray(i * V, (i + 1) * V);
    expect(poolBytes()).toBe(0); // the previous engine's unload destroyed the pool
    // Prefill: only the last row comes back.
    const last = await gpu.checked(() => e.runner.logits(tokens.slice(0, prompt), false));
    expect(last.length).toBe(V);
    expect(e.runner.cachedTokens).toBe(prompt);
    expectClose(last, row(prompt - 1), tol, `prefill of ${prompt} in chunks of ${chunk}`);
    const afterPrefill = poolBytes();
    // Then decode: each row equals the reference row of the same position.
    for (let i = prompt; i < tokens.length; i++) {
      expectClose(await gpu.checked(() => e.runner.logits([tokens[i]], false)), row(i), tol, `decode at ${i} after chunks of ${chunk}`);
    }
    // The sampling step chunks the same way: its greedy token is the reference row's argmax.
    e.runner.truncate(0);
    const step = await gpu.checked(() => e.runner.step(tokens.slice(0, prompt), greedy, 0, tokens.slice(0, prompt), false));
    expect(step.token).toBe(argmax(row(prompt - 1)));
    const peak = poolBytes();
    console.info(`${chunk}-token chunks: temp pool ${afterPrefill} B after prefill, ${peak} B after decode; plan activations ${plan.activations.bytes} B (prefill ${plan.activations.prefillBytes} B)`);
    expect(afterPrefill).toBeGreaterThan(0);
    expect(afterPrefill).toBeLessThanOrEqual(plan.activations.prefillBytes);
    expect(peak).toBeLessThanOrEqual(plan.activations.bytes);
    } finally {
      await e.unload();
    }
  });
});

describe('chunked prefill bounds the temporaries', () => {
  it('a prompt in 4-token chunks holds fewer temporary bytes than the same prompt in one forward', async () => {
    const { tokens } = bundledRef();
    const peakOf = async (chunk: number) => {
      const e = gpuEngine(gpu);
      await e.load(bundledModel(), { weights: 'f32', contextLength: 128, prefillChunk: chunk });
      await gpu.checked(() => e.runner.logits(tokens, false));
      const bytes = poolBytes();
      await e.unload();
      return bytes;
    };
    const chunked = await peakOf(4), whole = await peakOf(64);
    console.info(`bundled model, 64-token prompt: temp pool ${chunked} B in 4-token chunks, ${whole} B in one forward`);
    expect(chunked).toBeLessThan(whole);
  });
});

describe('the default chunk is sized from the device', () => {
  // On a device whose storage bindings hold 128 KiB, a 128-token chunk of the bundled model (q8, context
  // 128) needs a 256 KiB temporary: the plan halves the default chunk until every temporary fits (32
  // tokens here), and the runner prefills in those chunks with the logits of an explicit 32-token chunk
  // on an unconstrained device. Asking for the 128-token chunk on the small device is a limit error.
  it('picks the largest chunk whose temporaries fit the binding limit; logits equal that explicit chunk', async () => {
    const { tokens } = bundledRef();
    const prompt = tokens.slice(0, 56);
    const small = await testGpu({ limitOverrides: { maxStorageBufferBindingSize: 128 << 10 } });
    const onSmall = gpuEngine(small);
    try {
      const info = await onSmall.load(bundledModel(), { weights: 'q8', contextLength: 128 });
      expect(info.memoryPlan!.prefillTokens).toBe(32);
      expect(info.memoryPlan!.activations.largestBytes).toBeLessThanOrEqual(128 << 10);
      const got = await small.checked(() => onSmall.runner.logits(prompt, false));
      const e = gpuEngine(gpu);
      try {
        await e.load(bundledModel(), { weights: 'q8', contextLength: 128, prefillChunk: 32 });
        expectClose(got, await gpu.checked(() => e.runner.logits(prompt, false)), { atol: 1e-5, rtol: 0 }, 'device-sized chunk vs explicit 32-token chunk');
      } finally {
        await e.unload();
      }
      await expect(onSmall.load(bundledModel(), { weights: 'q8', contextLength: 128, prefillChunk: 128 })).rejects.toBeInstanceOf(LimitExceededError);
    } finally {
      await onSmall.unload();
      small.destroy();
    }
  });
});

describe('prefillChunk validation', () => {
  it.each([0, -4, 2.5, Number.NaN])('prefillChunk %s is an ArgumentError', async (bad) => {
    const e = gpuEngine(gpu);
    await expect(e.load(fixtureModel(), { weights: 'f32', prefillChunk: bad })).rejects.toBeInstanceOf(ArgumentError);
    await expect(e.load(fixtureModel(), { weights: 'f32', prefillChunk: bad })).rejects.toThrow(/prefillChunk must be a positive integer/);
  });
});
