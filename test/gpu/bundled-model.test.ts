// The bundled trained model (public/models/webmoe-tiny) on the GPU runtime against PyTorch: logits of
// held-out text within 1e-3 (computed by tools/train/make_ref.py from exactly the bundled weights), the
// same experts at every position and MoE layer, and a greedy continuation through the real tokenizer path.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, compare } from '../helpers/gpu';
import { gpuEngine } from '../helpers/models';
import { directoryModel } from '../../src/loader/node-source';

const ROOT = join(import.meta.dirname, '..', '..');
const MODEL = join(ROOT, 'public', 'models', 'webmoe-tiny');
const REF = join(ROOT, 'test', 'fixtures', 'webmoe-tiny-ref');
const json = (p: string) => JSON.parse(readFileSync(p, 'utf8'));

// An f16 KV cache rounds the cached latent rows to f16 (≤ 2^-11 relative per value): the 1e-3 of f32
// storage does not hold for it. Measured (the kvCache f16 test's log): max |Δlogits| 9.69e-3 vs PyTorch
// and vs the f32 cache, prefill and prefill-then-decode alike, on logits of magnitude up to ~12 (the f32
// cache: 2.1e-5). Bound 2e-2, expert sets identical.
const BUNDLED_KV_F16_TOL = { atol: 2e-2, rtol: 0 };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

describe('bundled model vs PyTorch', () => {
  it('the reference was computed from the bundled weights', () => {
    const sha = createHash('sha256').update(readFileSync(join(MODEL, 'model.safetensors'))).digest('hex');
    expect(sha).toBe(json(join(REF, 'reference.json')).model_sha256);
  });

  it.each(['f32', 'f16', 'auto'] as const)('prefill logits within 1e-3 and identical expert sets (weights: %s)', async (weights) => {
    const e = gpuEngine(gpu);
    const info = await e.load(directoryModel(MODEL), { weights });
    // The bundled checkpoint is F16: f16 storage holds it exactly (routed experts too, most of an MoE's
    // bytes); 'auto' picks f16 on GPUs and f32 on a CPU fallback adapter.
    const want = weights === 'auto' ? (gpu.adapter.isFallbackAdapter ? 'f32' : 'f16') : weights;
    expect(info.weightStorage).toBe(want);
    expect(info.expertStorage).toBe(want);
    expect(info.chatTemplate).toBe(true);
    const { tokens } = json(join(REF, 'tokens.json'));
    const logits = await gpu.checked(() => e.runner.logits(tokens, true));
    const b = readFileSync(join(REF, 'logits_prefill.f32.bin'));
    const maxAbs = expectClose(logits, new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4), { atol: 1e-3, rtol: 0 }, 'bundled prefill');
    console.log(`bundled model (${weights}): max |Δlogits| vs PyTorch = ${maxAbs.toExponential(2)}`);
    const routing = json(join(REF, 'routing.json'));
    const got = await e.runner.lastRouting();
    const sets = (rows: number[][]) => rows.map((r) => [...r].sort((x, y) => x - y));
    for (const layer of Object.keys(routing)) expect(sets(got.get(+layer)!)).toEqual(sets(routing[layer].indices));

    await e.unload();
  });

  // Quantised storage is lossy (per-weight rel RMS: q8 0.5%, q4 10%), so it is held to the reference
  // loosely: logits close in relative RMS and the same next token at most positions. kv_b stays f32.
  it.each([['q8', 0.01, 0.9], ['q4', 0.15, 0.8]] as const)('weights: %s stays close to PyTorch (rel RMS ≤ %f, top-1 agreement ≥ %f)', async (weights, maxRel, minAgree) => {
    const e = gpuEngine(gpu);
    const info = await e.load(directoryModel(MODEL), { weights });
    expect(info.weightStorage).toBe(weights);
    expect(info.expertStorage).toBe(weights); // routed experts quantised too
    const { tokens } = json(join(REF, 'tokens.json'));
    const got = await gpu.checked(() => e.runner.logits(tokens, true));
    const b = readFileSync(join(REF, 'logits_prefill.f32.bin'));
    const want = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    const V = want.length / tokens.length;
    let d2 = 0, w2 = 0, agree = 0;
    for (let t = 0; t < tokens.length; t++) {
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
    const rel = Math.sqrt(d2 / w2), frac = agree / tokens.length;
    console.log(`bundled model (${weights}): logits rel RMS vs PyTorch ${rel.toFixed(4)}, top-1 agreement ${(100 * frac).toFixed(1)}%`);
    expect(rel).toBeLessThan(maxRel);
    expect(frac).toBeGreaterThanOrEqual(minAgree);
    await e.unload();
  });

  // kvCache 'f16': the latent cache rows are rounded to f16 when written (a change of the numbers the
  // model attends over, ≤ 2^-11 relative per value). Prefill logits vs PyTorch, and decode after a prefill
  // (cache rows written in both passes) vs the same chunks with an f32 cache; measured values logged.
  it('kvCache f16: prefill logits and prefill-then-decode within 2e-2 of PyTorch and of the f32 cache, identical expert sets', async () => {
    const { tokens } = json(join(REF, 'tokens.json'));
    const b = readFileSync(join(REF, 'logits_prefill.f32.bin'));
    const want = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    const V = want.length / tokens.length;
    const split = Math.floor(tokens.length / 2);
    const run = async (kvCache: 'f16' | 'f32') => {
      const e = gpuEngine(gpu);
      const info = await e.load(directoryModel(MODEL), { weights: 'f32', kvCache });
      expect(info.memoryPlan?.storage.kvCache).toBe(kvCache);
      const prefill = await gpu.checked(() => e.runner.logits(tokens, true));
      const routing = await e.runner.lastRouting();
      e.runner.truncate(0);
      const hybrid = new Float32Array(tokens.length * V);
      hybrid.set(await gpu.checked(() => e.runner.logits(tokens.slice(0, split), true)), 0);
      for (let t = split; t < tokens.length; t++) hybrid.set(await gpu.checked(() => e.runner.logits(tokens.slice(t, t + 1), true)), t * V);
      await e.unload();
      return { prefill, hybrid, routing };
    };
    const f16 = await run('f16'), f32 = await run('f32');
    const d = (x: Float32Array, y: Float32Array) => compare(x, y, BUNDLED_KV_F16_TOL).maxAbs.toExponential(2);
    console.log(`bundled model (kv f16): max |Δlogits| vs PyTorch: prefill ${d(f16.prefill, want)}, prefill-then-decode ${d(f16.hybrid, want)}; vs f32 cache: prefill ${d(f16.prefill, f32.prefill)}, prefill-then-decode ${d(f16.hybrid, f32.hybrid)}; f32 cache vs PyTorch ${d(f32.prefill, want)}`);
    expectClose(f16.prefill, want, BUNDLED_KV_F16_TOL, 'bundled prefill, kv f16');
    expectClose(f16.hybrid, want, BUNDLED_KV_F16_TOL, 'bundled prefill-then-decode, kv f16 vs PyTorch');
    expectClose(f16.prefill, f32.prefill, BUNDLED_KV_F16_TOL, 'bundled prefill, kv f16 vs f32');
    expectClose(f16.hybrid, f32.hybrid, BUNDLED_KV_F16_TOL, 'bundled prefill-then-decode, kv f16 vs f32');
    const routing = json(join(REF, 'routing.json'));
    const sets = (rows: number[][]) => rows.map((r) => [...r].sort((x, y) => x - y));
    for (const layer of Object.keys(routing)) expect(sets(f16.routing.get(+layer)!)).toEqual(sets(routing[layer].indices));
  });

  it('greedy decoding after a prefill gives PyTorch\'s continuation, through the tokenizer path', async () => {
    const e = gpuEngine(gpu);
    await e.load(directoryModel(MODEL), { weights: 'f32' });
    const { tokens } = json(join(REF, 'tokens.json'));
    const g = json(join(REF, 'reference.json')).greedy_after_prefill_split;
    // Feed the first prompt_len ids as text (decode → encode must reproduce them), then decode greedily.
    const prompt = e.codec.decode(tokens.slice(0, g.prompt_len), false);
    expect(e.codec.encode(prompt, false)).toEqual(tokens.slice(0, g.prompt_len));
    const it = e.generate(prompt, { temperature: 0, maxTokens: g.tokens.length, stopAtEos: false });
    let r; for (;;) { r = await it.next(); if (r.done) break; }
    expect(r.value.tokens).toEqual(g.tokens);
    expect(r.value.text).toBe(g.text);
    await e.unload();
  });
});

// The model was trained on `<|bos|> text <|eos|>` documents and its tokenizer files declare the BOS, so
// a raw prompt must reach the model exactly as one written with <|bos|>, and a chat prompt starts with one.
describe('bundled model: BOS as in training', () => {
  const greedy = async (e: ReturnType<typeof gpuEngine>, prompt: string) => {
    const it = e.generate(prompt, { temperature: 0, maxTokens: 12, stopAtEos: false });
    let r; for (;;) { r = await it.next(); if (r.done) break; }
    return r.value;
  };

  it("generate('The old man') equals generate('<|bos|>The old man') token for token; the chat prompt starts with one BOS", async () => {
    const e = gpuEngine(gpu);
    await e.load(directoryModel(MODEL), { weights: 'f32' });
    const bos = e.codec.bosId!;
    expect(bos).toBe(0);
    const bare = e.codec.encode('The old man', false);
    expect(bare[0]).not.toBe(bos);
    const raw = await greedy(e, 'The old man');
    const written = await greedy(e, '<|bos|>The old man');
    expect(raw.promptTokens).toBe(bare.length + 1);
    expect(written.promptTokens).toBe(bare.length + 1);
    expect(raw.tokens).toHaveLength(12);
    expect(raw.tokens).toEqual(written.tokens);
    expect(raw.text).toBe(written.text);
    // The same continuation as the model's own greedy argmax over [BOS, ...prompt] (no engine in between).
    let ctx = [bos, ...bare];
    const want: number[] = [];
    await e.withRunner(async (r) => {
      r.truncate(0);
      let logits = await r.logits(ctx, false);
      for (let i = 0; i < 12; i++) {
        let best = 0;
        for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
        want.push(best);
        ctx = [...ctx, best];
        logits = await r.logits([best], false);
      }
    });
    expect(raw.tokens).toEqual(want);

    // The model card's samples were generated through this path (npm run card-samples): its first greedy
    // sample is what the runtime produces now.
    const card = readFileSync(join(MODEL, 'README.md'), 'utf8');
    const sample = /\*\*Prompt:\*\* `([^`]+)`\s*\n\s*- greedy: (".*")/.exec(card);
    expect(sample, 'the card has a greedy sample').not.toBeNull();
    const cardGreedy = e.generate(sample![1], { temperature: 0, maxTokens: 40 });
    let g; for (;;) { g = await cardGreedy.next(); if (g.done) break; }
    expect(sample![1] + g.value.text).toBe(JSON.parse(sample![2]));

    const chat = e.codec.encodeChat([{ role: 'user', content: 'Who was there?' }]);
    expect(chat[0]).toBe(bos);
    expect(chat.filter((t) => t === bos)).toHaveLength(1);
    await e.unload();
  });
});
