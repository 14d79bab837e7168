// The WebAssembly engine (device: 'wasm') on the same fixtures as the GPU path (test/gpu/model.test.ts,
// test/gpu/bundled-model.test.ts): the official DeepSeek-V3 fixture within 1e-4 with identical expert
// sets for prefill, token-by-token decode and prefill-then-decode; the bundled model within 1e-3 of
// PyTorch with identical routing at every position, and PyTorch's greedy continuation; the CPU reference
// on configurations the fixture does not cover; the same sampled tokens as the CPU reference (same seed).
import { describe, it, expect, vi } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createEngine, type WebMoeEngine } from '../../src/engine/engine';
import { GpuUnavailableError } from '../../src/errors';
import { fixtureJson, fixtureLogits, fixtureTokens } from '../helpers/fixture';
import { fixtureModel, syntheticModel, cpuEngine } from '../helpers/models';
import { directoryModel } from '../../src/loader/node-source';
import type { ModelSource } from '../../src/loader/model-source';

// Whole-model loads (q8/q4 quantise on the host) take seconds on a shared 2-core machine.
vi.setConfig({ testTimeout: 120_000 });

const ROOT = join(import.meta.dirname, '..', '..');
const MODEL = join(ROOT, 'public', 'models', 'webmoe-tiny');
const REF = join(ROOT, 'test', 'fixtures', 'webmoe-tiny-ref');
const json = (p: string) => JSON.parse(readFileSync(p, 'utf8'));

/** An engine whose WebGPU is absent (as on a machine without it): only device 'wasm' (or 'auto') loads. */
function wasmEngine(): WebMoeEngine {
  return createEngine({}, { acquire: async () => { throw new GpuUnavailableError('no WebGPU in this test'); }, resolve: () => { throw new Error('tests pass ModelSources'); } });
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}

const { tokens, prefill_split: split } = fixtureTokens();
const sets = (rows: number[][]) => rows.map((r) => [...r].sort((a, b) => a - b));

async function chunkedLogits(e: WebMoeEngine, chunks: [number, number][], toks: number[]) {
  const V = e.runner.cfg.vocabSize;
  const out = new Float32Array(toks.length * V);
  const routing = new Map<number, number[][]>();
  for (const [a, b] of chunks) {
    out.set(await e.runner.logits(toks.slice(a, b), true), a * V);
    for (const [layer, rows] of await e.runner.lastRouting()) routing.set(layer, [...(routing.get(layer) ?? []), ...rows]);
  }
  return { out, routing };
}

describe('WASM engine vs the official fixture', () => {
  const n = tokens.length;
  const cases = [
    ['prefill', [[0, n]], 'logits_prefill_absorb.f32.bin', 'prefill_absorb'],
    ['decode', Array.from({ length: n }, (_, i) => [i, i + 1]), 'logits_decode_absorb.f32.bin', 'decode_absorb'],
    ['hybrid', [[0, split], ...Array.from({ length: n - split }, (_, i) => [split + i, split + i + 1])], 'logits_hybrid_absorb.f32.bin', 'hybrid_absorb'],
  ] as const;
  it.each(cases)('%s: logits within 1e-4 and identical expert sets', async (_mode, chunks, file, run) => {
    const e = wasmEngine();
    const info = await e.load(fixtureModel(), { weights: 'f32', device: 'wasm' });
    expect(info.weightStorage).toBe('f32');
    const { out, routing } = await chunkedLogits(e, chunks as unknown as [number, number][], tokens);
    expect(maxAbsDiff(out, fixtureLogits(file))).toBeLessThanOrEqual(1e-4);
    const want = fixtureJson('routing.json').runs[run];
    for (const layer of [1, 2]) expect(sets(routing.get(layer)!)).toEqual(sets(want[layer].indices));
    const stats = await e.stats();
    expect(stats.backend).toBe('wasm');
    expect(stats.backendReason).toMatch(/wasm/);
    await e.unload();
  });
});

/** WASM and CPU reference engines on the same checkpoint: prefill then decode logits. */
async function wasmMatchesCpu(model: () => ModelSource, atol: number, weights: 'f32' | 'f16' | 'bf16' = 'f32') {
  const w = wasmEngine(), c = cpuEngine();
  await w.load(model(), { weights, device: 'wasm' });
  await c.load(model());
  const toks = [5, 77, 200, 13, 99, 250, 3, 42, 128, 64];
  for (const chunk of [[0, 6], [6, 7], [7, 8], [8, 10]] as const) {
    const wl = await w.runner.logits(toks.slice(chunk[0], chunk[1]), true);
    const cl = await c.runner.logits(toks.slice(chunk[0], chunk[1]), true);
    expect(maxAbsDiff(wl, cl), `logits of tokens ${chunk}`).toBeLessThanOrEqual(atol);
  }
  await w.unload();
  await c.unload();
}

describe('WASM engine vs the CPU reference on configurations the fixture does not cover', () => {
  it('q_lora_rank null (plain q_proj)', () => wasmMatchesCpu(() => syntheticModel({ q_lora_rank: null }, { seed: 2 }), 1e-4));
  it('YaRN rope scaling with mscale', () => wasmMatchesCpu(() => syntheticModel({ rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 } }, { seed: 3 }), 1e-4));
  it('several dense layers, then MoE', () => wasmMatchesCpu(() => syntheticModel({ num_hidden_layers: 4, first_k_dense_replace: 2 }, { seed: 4 }), 1e-4));
  it('DeepSeek-V2 routing: softmax, no bias, group max, no renormalisation', () => wasmMatchesCpu(() => syntheticModel({ model_type: 'deepseek_v2', topk_method: 'group_limited_greedy', scoring_func: 'softmax', norm_topk_prob: false, routed_scaling_factor: 16, n_group: 4, topk_group: 2 }, { seed: 5 }), 1e-4));
  // A BF16 / F16 checkpoint held in its own 16-bit storage is exact: the same matrices as the reference's f32.
  it('BF16 checkpoint in bf16 storage', () => wasmMatchesCpu(() => syntheticModel({}, { seed: 6, dtype: 'BF16' }), 1e-4, 'bf16'));
  it('F16 checkpoint in f16 storage', () => wasmMatchesCpu(() => syntheticModel({}, { seed: 7, dtype: 'F16' }), 1e-4, 'f16'));
});

describe('WASM engine: generation', () => {
  it('the same seed gives the same tokens as the CPU reference (greedy and sampled)', async () => {
    const w = wasmEngine(), c = cpuEngine();
    await w.load(fixtureModel(), { weights: 'f32', device: 'wasm' });
    await c.load(fixtureModel());
    for (const o of [{ temperature: 0 }, { temperature: 0.8, topK: 20, topP: 0.9, seed: 7 }, { temperature: 1, repetitionPenalty: 1.3, seed: 11 }]) {
      const collect = async (e: WebMoeEngine) => {
        const it = e.generate('Hello', { ...o, maxTokens: 12, stopAtEos: false });
        for (;;) { const r = await it.next(); if (r.done) return r.value.tokens; }
      };
      const wt = await collect(w), ct = await collect(c);
      expect(wt).toHaveLength(12);
      expect(wt).toEqual(ct);
    }
    await w.unload();
    await c.unload();
  });

  it('device auto without WebGPU picks wasm and says why; a bad device is an ArgumentError', async () => {
    const e = wasmEngine();
    await e.load(fixtureModel(), { device: 'auto' });
    const s = await e.stats();
    expect(s.backend).toBe('wasm');
    expect(s.backendReason).toMatch(/no usable WebGPU/);
    expect(s.device).toMatch(/WebAssembly/);
    await expect(e.load(fixtureModel(), { device: 'cpu' as never })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(wasmEngine().load(fixtureModel(), { device: 'webgpu' })).rejects.toMatchObject({ code: 'GPU_UNAVAILABLE' });
    // The memory plan is WebGPU's: with device wasm it says so instead of asking for a GPU.
    await expect(e.plan(fixtureModel(), { device: 'wasm' })).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    await e.unload();
  });
});

describe('WASM engine: the bundled model vs PyTorch', () => {
  it.each(['f32', 'f16', 'auto'] as const)('prefill logits within 1e-3 and identical expert sets (weights: %s)', async (weights) => {
    const e = wasmEngine();
    const info = await e.load(directoryModel(MODEL), { weights, device: 'wasm' });
    expect(info.weightStorage).toBe(weights === 'auto' ? 'f32' : weights);
    const { tokens: toks } = json(join(REF, 'tokens.json'));
    const logits = await e.runner.logits(toks, true);
    const b = readFileSync(join(REF, 'logits_prefill.f32.bin'));
    const d = maxAbsDiff(logits, new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4));
    console.log(`WASM bundled model (${weights}): max |Δlogits| vs PyTorch = ${d.toExponential(2)}`);
    expect(d).toBeLessThanOrEqual(1e-3);
    const routing = json(join(REF, 'routing.json'));
    const got = await e.runner.lastRouting();
    for (const layer of Object.keys(routing)) expect(sets(got.get(+layer)!)).toEqual(sets(routing[layer].indices));
    await e.unload();
  });

  // Quantised storage is lossy (test/gpu/bundled-model.test.ts holds the GPU to the same bounds).
  it.each([['q8', 0.01, 0.9], ['q4', 0.15, 0.8]] as const)('weights: %s stays close to PyTorch (rel RMS ≤ %f, top-1 agreement ≥ %f)', async (weights, maxRel, minAgree) => {
    const e = wasmEngine();
    await e.load(directoryModel(MODEL), { weights, device: 'wasm' });
    const { tokens: toks } = json(join(REF, 'tokens.json'));
    const got = await e.runner.logits(toks, true);
    const b = readFileSync(join(REF, 'logits_prefill.f32.bin'));
    const want = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    const V = want.length / toks.length;
    let d2 = 0, w2 = 0, agree = 0;
    for (let t = 0; t < toks.length; t++) {
      let ag = 0, aw = 0;
      for (let v = 0; v < V; v++) {
        const i = t * V + v;
        expect(Number.isFinite(got[i])).toBe(true);
        d2 += (got[i] - want[i]) ** 2; w2 += want[i] ** 2;
        if (got[i] > got[t * V + ag]) ag = v;
        if (want[i] > want[t * V + aw]) aw = v;
      }
      if (ag === aw) agree++;
    }
    const rel = Math.sqrt(d2 / w2), frac = agree / toks.length;
    console.log(`WASM bundled model (${weights}): logits rel RMS vs PyTorch ${rel.toFixed(4)}, top-1 agreement ${(100 * frac).toFixed(1)}%`);
    expect(rel).toBeLessThan(maxRel);
    expect(frac).toBeGreaterThanOrEqual(minAgree);
    await e.unload();
  });

  it('1 thread and 3 threads (the worker pool) give the same logits bit for bit; stats name the threads', async () => {
    const { tokens: toks } = json(join(REF, 'tokens.json'));
    const run = async (threads: number) => {
      const e = wasmEngine();
      await e.load(directoryModel(MODEL), { weights: 'f32', device: 'wasm', threads });
      const prefill = await e.runner.logits(toks.slice(0, 40), true);
      const decode = await e.runner.logits(toks.slice(40, 41), true);
      const device = (await e.stats()).device;
      await e.unload();
      return { prefill, decode, device };
    };
    const one = await run(1), three = await run(3);
    expect(one.device).toMatch(/\(1 thread\)/);
    expect(three.device).toMatch(/\(3 threads\)/);
    expect(Array.from(three.prefill)).toEqual(Array.from(one.prefill));
    expect(Array.from(three.decode)).toEqual(Array.from(one.decode));
  });

  it("prefill-then-decode logits within 1e-3 of PyTorch; greedy decoding gives PyTorch's continuation", async () => {
    const e = wasmEngine();
    await e.load(directoryModel(MODEL), { weights: 'f32', device: 'wasm' });
    const { tokens: toks } = json(join(REF, 'tokens.json'));
    const b = readFileSync(join(REF, 'logits_prefill.f32.bin'));
    const want = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    const V = want.length / toks.length;
    const half = Math.floor(toks.length / 2);
    const hybrid = new Float32Array(toks.length * V);
    hybrid.set(await e.runner.logits(toks.slice(0, half), true), 0);
    for (let t = half; t < toks.length; t++) hybrid.set(await e.runner.logits(toks.slice(t, t + 1), true), t * V);
    expect(maxAbsDiff(hybrid, want)).toBeLessThanOrEqual(1e-3);
    e.runner.truncate(0);
    const g = json(join(REF, 'reference.json')).greedy_after_prefill_split;
    const prompt = e.codec.decode(toks.slice(0, g.prompt_len), false);
    const it = e.generate(prompt, { temperature: 0, maxTokens: g.tokens.length, stopAtEos: false });
    let r; for (;;) { r = await it.next(); if (r.done) break; }
    expect(r.value.tokens).toEqual(g.tokens);
    expect(r.value.text).toBe(g.text);
    await e.unload();
  });
});
