// Expert offload (LoadOptions.gpuMemoryBudget) on the Llama-style families' fixtures
// (tools/families/make_fixtures.py): their forwards are steps too (decoder-blocks.ts feedForward), so
// with the routed experts in a GPU expert cache smaller than a layer's experts the logits and greedy
// tokens equal full residency's exactly, in prefill, decode and prefill-then-decode, as
// test/gpu/offload.test.ts checks on the bundled DeepSeek model. The fixtures cover what differs per
// family: Qwen2-MoE's resident shared expert behind its sigmoid gate, the softmax routings (renormalised
// over the top-k or not), Granite's stacked experts split per expert at load and re-read from the source
// by slicing the stacked tensors, Mixtral's w1/w3/w2 expert names, OLMoE's 64-expert-style routing, GPT-OSS's
// MXFP4 experts with their biases (the whole layer re-read from the source on a miss) and its router bias.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Gpu } from '../../src/gpu/device';
import { testGpu } from '../helpers/gpu';
import { gpuEngine } from '../helpers/models';
import { memoryModel } from '../../src/loader/model-source';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import type { LoadOptions } from '../../src/engine/types';
import { GpuBudgetError } from '../../src/errors';
import { FAMILY_FIXTURES, familyDir, familyFixture, gptOssDequantisedFiles, gptOssWideFiles, type FamilyFixture } from '../helpers/families';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createNodeEngine } from '../../src/node';
import { openCheckpoint } from '../../src/model/checkpoint';
import { checkpointToGguf } from '../../src/model/gguf-convert';

const BASE: LoadOptions = { weights: 'f32', kvCache: 'f32', contextLength: 64 };
const greedy = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 1 };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

const source = (f: FamilyFixture) => memoryModel({
  'config.json': readFileSync(join(familyDir(f), 'config.json'), 'utf8'),
  'model.safetensors': new Uint8Array(readFileSync(join(familyDir(f), 'model.safetensors'))),
  'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()),
});

/** Every prefill row; the prefix's last row and each decode row after it; token-by-token rows from an empty cache; greedy tokens. */
async function outputs(family: FamilyFixture, opts: LoadOptions) {
  return outputsOf(source(family), family, opts);
}

/** outputs() of any model source, on the prompt of `family`'s fixture. */
async function outputsOf(src: ReturnType<typeof memoryModel>, family: FamilyFixture, opts: LoadOptions) {
  const { tokens, prefill_split: p } = familyFixture(family).ref;
  const e = gpuEngine(gpu);
  const info = await e.load(src, { ...BASE, ...opts });
  try {
    const prefill = await gpu.checked(() => e.runner.logits(tokens, true));
    e.runner.truncate(0);
    const decode: Float32Array[] = [];
    for (const t of tokens) decode.push(await gpu.checked(() => e.runner.logits([t], false)));
    e.runner.truncate(0);
    const prefixThenDecode = [await gpu.checked(() => e.runner.logits(tokens.slice(0, p), false))];
    for (let i = p; i < tokens.length; i++) prefixThenDecode.push(await gpu.checked(() => e.runner.logits([tokens[i]], false)));
    e.runner.truncate(0);
    const out: number[] = [];
    let next = tokens.slice(0, 6), history = next.slice();
    for (let s = 0; s < 10; s++) {
      const r = await gpu.checked(() => e.runner.step(next, greedy, s, history, false));
      out.push(r.token);
      next = [r.token];
      history = [...history, r.token];
    }
    return { info, prefill, decode, prefixThenDecode, greedy: out, counters: e.runner.counters().offload };
  } finally {
    await e.unload();
  }
}

const maxDiff = (a: Float32Array, b: Float32Array) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

// GPT-OSS's MXFP4 experts go through the same slots with their biases (kernels/moe-slots.ts
// packMxfp4Experts): a slot holds the bytes full residency gives that expert. An unquantised GPT-OSS
// checkpoint is not offloaded: the plan says so with a typed error.
it('gpt_oss unquantised: a GPU budget below the full plan is UNSUPPORTED, naming what works', async () => {
  const src = memoryModel({ ...(await gptOssDequantisedFiles()), 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) });
  const err = await gpuEngine(gpu).plan!(src, { ...BASE, gpuMemoryBudget: 1 << 10 }).catch((x) => x);
  expect(err).toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/MXFP4.*without a GPU budget/) });
});

describe.each(FAMILY_FIXTURES.filter((f) => f !== 'gpt_oss'))('%s: expert offload equals full residency', (family) => {
  let want: Awaited<ReturnType<typeof outputs>>;
  let minimum = 0, half = 0;
  beforeAll(async () => {
    want = await outputs(family, {});
    const plan = want.info.memoryPlan!;
    expect(plan.offload).toBeNull();
    // Full residency itself is the PyTorch reference (test/gpu/families.test.ts checks it more closely).
    expect(maxDiff(want.prefill, familyFixture(family).logits)).toBeLessThan(1e-4);
    // The minimum, as the typed error of a budget below it names it.
    const err = await gpuEngine(gpu).plan!(source(family), { ...BASE, gpuMemoryBudget: 1 << 10 }).catch((x) => x);
    expect(err).toBeInstanceOf(GpuBudgetError);
    minimum = (err as GpuBudgetError).details!.minimumBytes as number;
    // Half of each layer's experts resident, and at least one slot more than the top-k (Qwen2-MoE's and
    // OLMoE's fixtures route 4 of 8): the minimum plus those slots (the fixtures' experts are so small
    // that "50% of the expert bytes" would fall below the cache's fixed tables and scratch), plus 1 KiB
    // for the scratch that grows with the slots.
    const o = (await gpuEngine(gpu).plan!(source(family), { ...BASE, gpuMemoryBudget: minimum })).offload!;
    const K = want.info.expertsPerToken, E = want.info.experts;
    half = minimum + (Math.max(Math.ceil(E / 2), K + 1) - K) * o.moeLayers * o.expertBytes + 1024;
    expect(half).toBeLessThan(plan.gpuBytes);
  }, 60_000);

  const cases: [string, () => number, LoadOptions][] = [
    ['the minimum budget, cold experts re-read from the source', () => minimum, { expertSource: 'source' }],
    ['half of the experts, cold experts on the host, next-gate prefetch', () => half, { expertSource: 'host', expertPrefetch: 'next-gate' }],
  ];
  it.each(cases)('%s: logits and greedy tokens identical', async (_, budget, opts) => {
    const r = await outputs(family, { gpuMemoryBudget: budget(), ...opts });
    const o = r.info.memoryPlan!.offload!;
    expect(o).not.toBeNull();
    expect(o.capacity).toBe(budget() === minimum ? r.info.expertsPerToken : Math.max(Math.ceil(r.info.experts / 2), r.info.expertsPerToken + 1));
    expect(o.capacity).toBeLessThan(r.info.experts);
    expect(r.info.memoryPlan!.gpuBytes).toBeLessThanOrEqual(budget());
    const c = r.counters!;
    console.info(`offload ${family} ${_}: capacity ${o.capacity}/${r.info.experts}, ${c.uploads} uploads, ${c.hits}/${c.lookups} hits`);
    expect(c.bytesUploaded).toBeGreaterThan(0);
    expect(c.hits).toBeLessThan(c.lookups);
    expect(maxDiff(r.prefill, want.prefill), 'prefill').toBe(0);
    r.decode.forEach((row, i) => expect(maxDiff(row, want.decode[i]), `decode row ${i}`).toBe(0));
    r.prefixThenDecode.forEach((row, i) => expect(maxDiff(row, want.prefixThenDecode[i]), `prefill then decode row ${i}`).toBe(0));
    expect(r.greedy).toEqual(want.greedy);
  }, 60_000);
});

// GPT-OSS: the fixture widened to 32 experts (gptOssWideFiles: its 8 experts weigh less than the cache's
// scratch), MXFP4 experts with biases in the slots, the router bias in the gate and the next-gate prefetch.
describe('gpt_oss (32 MXFP4 experts): expert offload equals full residency', () => {
  let files: Awaited<ReturnType<typeof gptOssWideFiles>>;
  const src = () => memoryModel({ ...files, 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) });
  let want: Awaited<ReturnType<typeof outputsOf>>;
  let minimum = 0, half = 0;
  beforeAll(async () => {
    files = await gptOssWideFiles(32);
    want = await outputsOf(src(), 'gpt_oss', {});
    expect(want.info.memoryPlan!.offload).toBeNull();
    expect(want.info.expertStorage).toBe('mxfp4');
    const err = await gpuEngine(gpu).plan!(src(), { ...BASE, gpuMemoryBudget: 1 << 10 }).catch((x) => x);
    expect(err).toBeInstanceOf(GpuBudgetError);
    minimum = (err as GpuBudgetError).details!.minimumBytes as number;
    const o = (await gpuEngine(gpu).plan!(src(), { ...BASE, gpuMemoryBudget: minimum })).offload!;
    half = minimum + (16 - 4) * o.moeLayers * o.expertBytes + 1024;
    expect(half).toBeLessThan(want.info.memoryPlan!.gpuBytes);
  }, 120_000);
  const cases: [string, () => number, number, LoadOptions][] = [
    ['the minimum budget (4 of 32 slots), cold experts re-read from the source', () => minimum, 4, { expertSource: 'source' }],
    ['half of the experts (16 of 32), cold experts on the host, next-gate prefetch', () => half, 16, { expertSource: 'host', expertPrefetch: 'next-gate' }],
  ];
  it.each(cases)('%s: logits and greedy tokens identical', async (_, budget, capacity, opts) => {
    const r = await outputsOf(src(), 'gpt_oss', { gpuMemoryBudget: budget(), ...opts });
    const o = r.info.memoryPlan!.offload!;
    expect([o.capacity, r.info.expertStorage]).toEqual([capacity, 'mxfp4']);
    expect(r.info.memoryPlan!.gpuBytes).toBeLessThanOrEqual(budget());
    const c = r.counters!;
    console.info(`offload gpt_oss ${_}: capacity ${o.capacity}/32, ${c.uploads} uploads, ${c.hits}/${c.lookups} hits`);
    expect(c.bytesUploaded).toBeGreaterThan(0);
    expect(c.hits).toBeLessThan(c.lookups);
    expect(maxDiff(r.prefill, want.prefill), 'prefill').toBe(0);
    r.decode.forEach((row, i) => expect(maxDiff(row, want.decode[i]), `decode row ${i}`).toBe(0));
    r.prefixThenDecode.forEach((row, i) => expect(maxDiff(row, want.prefixThenDecode[i]), `prefill then decode row ${i}`).toBe(0));
    expect(r.greedy).toEqual(want.greedy);
  }, 120_000);
});

// GPT-OSS from its GGUF (llama.cpp's gpt-oss layout, experts MXFP4 blocks): the reader hands back HF's
// blocks, so the slots and a miss's re-read (the layer's ffn_*_exps through the reader) are the same bytes.
it('gpt_oss (32 MXFP4 experts) as a Q8_0 GGUF offloaded, experts re-read from the file: logits equal full residency on the same file', async () => {
  const { ref } = familyFixture('gpt_oss');
  const tokenizer = { ...byteLevelTokenizerJson(), pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true } };
  const st = await openCheckpoint(memoryModel({ ...(await gptOssWideFiles(32)), 'tokenizer.json': JSON.stringify(tokenizer) }));
  const dir = mkdtempSync(join(tmpdir(), 'webmoe-gptoss-offload-'));
  const path = join(dir, 'gpt_oss-wide-q8_0.gguf');
  writeFileSync(path, (await checkpointToGguf(st, 'q8_0')).file);
  const run = async (opts: LoadOptions) => {
    const engine = createNodeEngine();
    try {
      const info = await engine.load(path, { weights: 'f32', kvCache: 'f32', contextLength: 64, requireTokenizer: false, ...opts });
      const prefill = await engine.runner.logits(ref.tokens, true);
      engine.runner.truncate(0);
      const decode = [];
      for (const t of ref.tokens) decode.push(await engine.runner.logits([t], false));
      return { info, prefill, decode, counters: engine.runner.counters().offload };
    } finally {
      await engine.unload();
    }
  };
  try {
    const full = await run({});
    expect(full.info.expertStorage).toBe('mxfp4');
    const err = await run({ gpuMemoryBudget: 1 << 10 }).catch((x) => x);
    expect(err).toBeInstanceOf(GpuBudgetError);
    const r = await run({ gpuMemoryBudget: (err as GpuBudgetError).details!.minimumBytes as number, expertSource: 'source' });
    expect(r.info.memoryPlan!.offload!.capacity).toBe(4);
    expect(r.counters!.bytesUploaded).toBeGreaterThan(0);
    expect(maxDiff(r.prefill, full.prefill), 'prefill').toBe(0);
    r.decode.forEach((row, i) => expect(maxDiff(row, full.decode[i]), `decode row ${i}`).toBe(0));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);

// A family GGUF (webmoe's Q8_0 converter, llama.cpp's layout) loaded with weights 'f32' (at q8 the
// fixtures' experts are so small that the full plan is below the offload minimum): its stacked
// ffn_*_exps blocks are decoded into the expert cache's slots, and a miss re-reads the expert through the
// GGUF checkpoint's HF names (Mixtral's w1/w3/w2 per expert, Granite's restacked input/output_linear).
describe.each(['mixtral', 'granitemoe'] as const)('%s: a Q8_0 GGUF offloaded, experts re-read from the file', (family) => {
  it('prefill and decode logits equal full residency on the same file', async () => {
    const { ref } = familyFixture(family);
    const tokenizer = { ...byteLevelTokenizerJson(), pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true } };
    const st = await openCheckpoint(memoryModel({
      'config.json': readFileSync(join(familyDir(family), 'config.json'), 'utf8'),
      'model.safetensors': new Uint8Array(readFileSync(join(familyDir(family), 'model.safetensors'))),
      'tokenizer.json': JSON.stringify(tokenizer),
    }));
    const dir = mkdtempSync(join(tmpdir(), 'webmoe-family-offload-'));
    const path = join(dir, `${family}-q8_0.gguf`);
    writeFileSync(path, (await checkpointToGguf(st, 'q8_0')).file);
    const run = async (opts: LoadOptions) => {
      const engine = createNodeEngine();
      try {
        const info = await engine.load(path, { weights: 'f32', kvCache: 'f32', contextLength: 64, requireTokenizer: false, ...opts });
        const prefill = await engine.runner.logits(ref.tokens, true);
        engine.runner.truncate(0);
        const decode = [];
        for (const t of ref.tokens) decode.push(await engine.runner.logits([t], false));
        return { info, prefill, decode, counters: engine.runner.counters().offload };
      } finally {
        await engine.unload();
      }
    };
    try {
      const full = await run({});
      const err = await run({ gpuMemoryBudget: 1 << 10 }).catch((x) => x);
      expect(err).toBeInstanceOf(GpuBudgetError);
      const r = await run({ gpuMemoryBudget: (err as GpuBudgetError).details!.minimumBytes as number, expertSource: 'source' });
      expect(r.info.memoryPlan!.offload!.capacity).toBe(r.info.expertsPerToken);
      expect(r.counters!.bytesUploaded).toBeGreaterThan(0);
      expect(maxDiff(r.prefill, full.prefill), 'prefill').toBe(0);
      r.decode.forEach((row, i) => expect(maxDiff(row, full.decode[i]), `decode row ${i}`).toBe(0));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
