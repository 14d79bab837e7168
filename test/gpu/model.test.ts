// The GPU runtime against the official DeepSeek-V3 fixture (logits ≤ 1e-4, identical expert sets, for
// prefill, token-by-token decode and prefill-then-decode), and against the CPU reference path of the same
// code on configurations the fixture does not cover.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, compare } from '../helpers/gpu';
import { fixtureJson, fixtureLogits, fixtureTokens } from '../helpers/fixture';
import { fixtureModel, syntheticModel, gpuEngine, cpuEngine } from '../helpers/models';
import type { WebMoeEngine } from '../../src/engine/engine';
import type { ModelSource } from '../../src/loader/model-source';

const TOL = { atol: 1e-4, rtol: 0 };
let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

const { tokens, prefill_split: split } = fixtureTokens();

/** Logits of `tokens` fed in chunks (e.g. [[0, S]] = prefill; one token per chunk = decode). */
async function chunkedLogits(e: WebMoeEngine, chunks: [number, number][], toks: number[]) {
  const V = e.runner.cfg.vocabSize;
  const out = new Float32Array(toks.length * V);
  const routing = new Map<number, number[][]>();
  for (const [a, b] of chunks) {
    out.set(await gpu.checked(() => e.runner.logits(toks.slice(a, b), true)), a * V);
    for (const [layer, rows] of await e.runner.lastRouting()) routing.set(layer, [...(routing.get(layer) ?? []), ...rows]);
  }
  return { out, routing };
}

const prefillChunks = (n: number): [number, number][] => [[0, n]];
const decodeChunks = (n: number): [number, number][] => Array.from({ length: n }, (_, i) => [i, i + 1]);
const hybridChunks = (n: number, p: number): [number, number][] => [[0, p], ...Array.from({ length: n - p }, (_, i) => [p + i, p + i + 1] as [number, number])];
const sets = (rows: number[][]) => rows.map((r) => [...r].sort((a, b) => a - b));

describe('GPU runtime vs the official fixture', () => {
  const cases = [
    ['prefill', prefillChunks(tokens.length), 'logits_prefill_absorb.f32.bin', 'prefill_absorb'],
    ['decode', decodeChunks(tokens.length), 'logits_decode_absorb.f32.bin', 'decode_absorb'],
    ['hybrid', hybridChunks(tokens.length, split), 'logits_hybrid_absorb.f32.bin', 'hybrid_absorb'],
  ] as const;
  it.each(cases)('%s: logits within 1e-4 and identical expert sets', async (_mode, chunks, file, run) => {
    const e = gpuEngine(gpu);
    await e.load(fixtureModel(), { weights: 'f32' });
    const { out, routing } = await chunkedLogits(e, chunks as [number, number][], tokens);
    expectClose(out, fixtureLogits(file), TOL, file);
    const want = fixtureJson('routing.json').runs[run];
    for (const layer of [1, 2]) expect(sets(routing.get(layer)!)).toEqual(sets(want[layer].indices));
    await e.unload();
  });
});

// An f16 KV cache rounds every latent row to f16 when it is written (relative error ≤ 2^-11 per value,
// ~5e-4): that is a change of the model's numbers, not of the arithmetic, so the fixture's 1e-4 (f32
// everywhere) does not hold for it. Measured on this fixture: max |Δlogits| 2.94e-3 vs the f32 cache
// and vs the fixture, the same for prefill, decode and prefill-then-decode (already at token 0, which
// attends to itself only: the rounding, not an accumulation). The kernels themselves match the reference
// fed with the same rounded rows at f32 tolerance (attention.test.ts, mla.test.ts). Bound: 5e-3, and
// the routed expert sets must stay identical.
const KV_F16_TOL = { atol: 5e-3, rtol: 0 };

describe('an f16 KV cache (kvCache: f16) against the official fixture', () => {
  const cases = [
    ['prefill', prefillChunks(tokens.length), 'logits_prefill_absorb.f32.bin', 'prefill_absorb'],
    ['decode', decodeChunks(tokens.length), 'logits_decode_absorb.f32.bin', 'decode_absorb'],
    ['hybrid', hybridChunks(tokens.length, split), 'logits_hybrid_absorb.f32.bin', 'hybrid_absorb'],
  ] as const;
  it.each(cases)('%s: logits within 5e-3 (f16 rounding of the cache), identical expert sets', async (mode, chunks, file, run) => {
    const e = gpuEngine(gpu);
    const info = await e.load(fixtureModel(), { weights: 'f32', kvCache: 'f16' });
    expect(info.memoryPlan?.storage.kvCache).toBe('f16');
    const { out, routing } = await chunkedLogits(e, chunks as [number, number][], tokens);
    await e.unload();
    const e32 = gpuEngine(gpu);
    await e32.load(fixtureModel(), { weights: 'f32', kvCache: 'f32' });
    const { out: out32 } = await chunkedLogits(e32, chunks as [number, number][], tokens);
    await e32.unload();
    console.log(`kv f16 ${mode}: max |Δlogits| vs f32 cache ${compare(out, out32, TOL).maxAbs.toExponential(2)}, vs fixture ${compare(out, fixtureLogits(file), TOL).maxAbs.toExponential(2)}`);
    const want = fixtureJson('routing.json').runs[run];
    for (const layer of [1, 2]) expect(sets(routing.get(layer)!)).toEqual(sets(want[layer].indices));
    expectClose(out, fixtureLogits(file), KV_F16_TOL, `${file} (kv f16)`);
    expectClose(out, out32, KV_F16_TOL, `${file} kv f16 vs f32`);
    // Not a no-op: the f16 cache changes the logits (the f32 cache matches the fixture within 1e-4).
    expect(compare(out, out32, TOL).maxAbs).toBeGreaterThan(TOL.atol);
  });
});

/** GPU and CPU engines on the same checkpoint: prefill then decode logits, and greedy tokens. */
async function gpuMatchesCpu(model: () => ModelSource, tol: { atol: number; rtol: number }, weights: 'f32' | 'f16' = 'f32') {
  const g = gpuEngine(gpu), c = cpuEngine();
  await g.load(model(), { weights });
  await c.load(model());
  const toks = [5, 77, 200, 13, 99, 250, 3, 42, 128, 64];
  const V = g.runner.cfg.vocabSize;
  for (const chunk of [[0, 6], [6, 7], [7, 8], [8, 10]] as const) {
    const gl = await gpu.checked(() => g.runner.logits(toks.slice(chunk[0], chunk[1]), true));
    const cl = await c.runner.logits(toks.slice(chunk[0], chunk[1]), true);
    expect(gl.length).toBe((chunk[1] - chunk[0]) * V);
    expectClose(gl, cl, tol, `logits of tokens ${chunk}`);
  }
  await g.unload();
  await c.unload();
}

describe('GPU runtime vs the CPU reference on configurations the fixture does not cover', () => {
  it('q_lora_rank null (plain q_proj, as in V2-Lite)', () => gpuMatchesCpu(() => syntheticModel({ q_lora_rank: null }, { seed: 2 }), TOL));
  it('YaRN rope scaling with mscale', () => gpuMatchesCpu(() => syntheticModel({ rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 } }, { seed: 3 }), TOL));
  it('several dense layers, then MoE', () => gpuMatchesCpu(() => syntheticModel({ num_hidden_layers: 4, first_k_dense_replace: 2 }, { seed: 4 }), TOL));
  it('DeepSeek-V2 routing: softmax scores, no bias, group max, no renormalisation', () => gpuMatchesCpu(() => syntheticModel({ model_type: 'deepseek_v2', topk_method: 'group_limited_greedy', scoring_func: 'softmax', norm_topk_prob: false, routed_scaling_factor: 16, n_group: 4, topk_group: 2 }, { seed: 5 }), TOL));
  it('BF16 checkpoint', () => gpuMatchesCpu(() => syntheticModel({}, { seed: 6, dtype: 'BF16' }), TOL));
  it('F16 checkpoint', () => gpuMatchesCpu(() => syntheticModel({}, { seed: 7, dtype: 'F16' }), TOL));
});

describe('generation', () => {
  it('the same seed gives the same tokens on the GPU and the CPU reference (greedy and sampled)', async () => {
    const g = gpuEngine(gpu), c = cpuEngine();
    await g.load(fixtureModel(), { weights: 'f32' });
    await c.load(fixtureModel());
    for (const o of [{ temperature: 0 }, { temperature: 0.8, topK: 20, topP: 0.9, seed: 7 }, { temperature: 1, repetitionPenalty: 1.3, seed: 11 }]) {
      const collect = async (e: WebMoeEngine) => {
        const it = e.generate('Hello', { ...o, maxTokens: 12, stopAtEos: false });
        for (;;) { const r = await it.next(); if (r.done) return r.value.tokens; }
      };
      const gt = await collect(g), ct = await collect(c);
      expect(gt).toHaveLength(12);
      expect(gt).toEqual(ct);
    }
    await g.unload();
    await c.unload();
  });

  it('reuses the KV cache of a shared chat prefix and gives the same continuation as a fresh run', async () => {
    const e = gpuEngine(gpu);
    await e.load(fixtureModel(), { weights: 'f32' });
    const run = async (msgs: { role: 'user' | 'assistant'; content: string }[]) => {
      const it = e.chat(msgs, { temperature: 0, maxTokens: 6, stopAtEos: false });
      for (;;) { const r = await it.next(); if (r.done) return r.value; }
    };
    const first = await run([{ role: 'user', content: 'abc' }]);
    const second = await run([{ role: 'user', content: 'abc' }, { role: 'assistant', content: first.text }, { role: 'user', content: 'def' }]);
    expect(second.reusedTokens).toBeGreaterThan(0);
    const fresh = gpuEngine(gpu);
    await fresh.load(fixtureModel(), { weights: 'f32' });
    const it = fresh.chat([{ role: 'user', content: 'abc' }, { role: 'assistant', content: first.text }, { role: 'user', content: 'def' }], { temperature: 0, maxTokens: 6, stopAtEos: false });
    let r; for (;;) { r = await it.next(); if (r.done) break; }
    expect(second.tokens).toEqual(r.value.tokens);
    await e.unload();
    await fresh.unload();
  });
});
void compare;
