// Multi-Token Prediction on the WASM engine (issue #23; the GPU and CPU-reference versions:
// test/gpu/mtp.test.ts): the MTP layer of the DeepSeek-V3 release-layout fixture computes model.py's MTP
// logits (1e-4, as on the GPU: model.py is float32 and the fixture's routing margins are ≥ 5.6e-3), and
// self-speculative decoding (a verify step of S = 2 rows, rejected rows dropped from both latent caches)
// gives token for token the output of plain decoding: greedy and sampled with the same seed, several
// prompts, multi-turn cache reuse; on the bundled model with its trained MTP layer, in f32 and in q8
// storage, drafts are both accepted and rejected. (GGUF files carry no MTP layer: the deepseek2 layout
// webmoe writes and reads has none, model/gguf-deepseek2.ts.)
import { describe, it, expect, vi } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createEngine, type WebMoeEngine } from '../../src/engine/engine';
import { GpuUnavailableError } from '../../src/errors';
import { memoryModel } from '../../src/loader/model-source';
import { directoryModel } from '../../src/loader/node-source';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import type { GenerateOptions } from '../../src/engine/types';

vi.setConfig({ testTimeout: 600_000 });

const DIR = join(import.meta.dirname, '..', 'fixtures', 'deepseek-v3-mtp-tiny');
const BUNDLED = join(import.meta.dirname, '..', '..', 'public', 'models', 'webmoe-tiny');
const file = (n: string) => new Uint8Array(readFileSync(join(DIR, n)));
const f32 = (n: string) => { const b = file(n); return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4); };
const tokens: number[] = JSON.parse(readFileSync(join(DIR, 'tokens.json'), 'utf8')).tokens;
const mtpModel = () => memoryModel({
  'config.json': readFileSync(join(DIR, 'config.json'), 'utf8'),
  'model.safetensors': file('model.safetensors'),
  'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()),
});
const wasmEngine = () => createEngine({}, { acquire: async () => { throw new GpuUnavailableError('no WebGPU in this test'); }, resolve: () => { throw new Error('tests pass ModelSources'); } });

async function collect(e: WebMoeEngine, prompt: string, o: GenerateOptions) {
  const it = e.generate(prompt, o);
  let r = await it.next();
  while (!r.done) r = await it.next();
  return r.value;
}

function expectWithin(got: Float32Array, want: Float32Array, atol: number, what: string) {
  expect(got.length, what).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Number.isNaN(got[i]) ? Infinity : Math.abs(got[i] - want[i]));
  expect(worst, what).toBeLessThanOrEqual(atol);
}

describe('WASM: the MTP layer vs model.py (random-weight fixture with the release layout)', () => {
  it('main logits and MTP logits within 1e-4; info reports the MTP layer', async () => {
    const e = wasmEngine();
    const info = await e.load(mtpModel(), { device: 'wasm', weights: 'f32' });
    expect(info.mtpLayers).toBe(1);
    expectWithin(await e.runner.logits(tokens, true), f32('logits.f32.bin'), 1e-4, 'main logits');
    e.runner.truncate(0);
    const mtp = await e.runner.mtpLogits!(tokens);
    expect(mtp.length).toBe((tokens.length - 1) * 256);
    expectWithin(mtp, f32('mtp_logits.f32.bin'), 1e-4, 'MTP logits');
    await e.unload();
  });
});

describe('WASM: self-speculative decoding gives the tokens of plain decoding', () => {
  it('greedy and sampled (temperature, top-k, top-p, repetition penalty), several prompts, multi-turn cache reuse, 1 and 2 threads', async () => {
    for (const threads of [1, 2]) {
      const e = wasmEngine();
      await e.load(mtpModel(), { device: 'wasm', weights: 'f32', threads });
      const n = 24;
      const settings: GenerateOptions[] = [
        { temperature: 0, maxTokens: n },
        { temperature: 0.9, topK: 40, topP: 0.95, repetitionPenalty: 1.2, seed: 7, maxTokens: n },
        { temperature: 1.5, seed: 3, maxTokens: n - 7 },
      ];
      let drafted = 0;
      for (const p of ['The cat', 'xy', 'A longer prompt with several words in it']) {
        for (const s of settings) {
          const off = await collect(e, p, { ...s, speculative: 'off' });
          const on = await collect(e, p, { ...s, speculative: 'mtp' });
          expect(on.tokens, `${threads} threads: ${p} ${JSON.stringify(s)}`).toEqual(off.tokens);
          expect(on.finishReason).toBe(off.finishReason);
          expect(on.speculation!.mode).toBe('mtp');
          drafted += on.speculation!.drafted;
        }
      }
      expect(drafted).toBeGreaterThan(10);
      // Continuing a conversation reuses the cached prefix; speculation resynchronises its own cache.
      const a = await collect(e, 'The cat sat', { temperature: 0, maxTokens: 10, speculative: 'mtp' });
      const b = await collect(e, 'The cat sat' + a.text + ' and', { temperature: 0, maxTokens: 10, speculative: 'mtp' });
      expect(b.reusedTokens).toBeGreaterThan(3);
      const fresh = wasmEngine();
      await fresh.load(mtpModel(), { device: 'wasm', weights: 'f32', threads: 1 });
      const want = await collect(fresh, 'The cat sat' + a.text + ' and', { temperature: 0, maxTokens: 10, speculative: 'off' });
      expect(b.tokens).toEqual(want.tokens);
      await fresh.unload();
      await e.unload();
    }
  });

  it('a prompt longer than the prefill chunk: the MTP cache is filled chunk by chunk', async () => {
    const e = wasmEngine();
    await e.load(mtpModel(), { device: 'wasm', weights: 'f32', prefillChunk: 5 });
    const p = 'A longer prompt with several words in it, longer than five tokens';
    for (const s of [{ temperature: 0 }, { temperature: 0.9, seed: 5 }] as GenerateOptions[]) {
      const off = await collect(e, p, { ...s, maxTokens: 16, speculative: 'off' });
      const on = await collect(e, p, { ...s, maxTokens: 16, speculative: 'mtp' });
      expect(on.tokens).toEqual(off.tokens);
    }
    await e.unload();
  });
});

describe('WASM: the bundled model (webmoe-tiny) with its trained MTP layer', () => {
  const prompt = 'The jury said it did find that the city executive committee, which had over-all charge of the election,';
  for (const weights of ['f32', 'q8'] as const) {
    it(`${weights}: speculative = plain tokens, greedy and sampled; drafts are accepted and rejected`, async () => {
      const e = wasmEngine();
      const info = await e.load(directoryModel(BUNDLED), { device: 'wasm', weights });
      expect(info.mtpLayers).toBe(1);
      expect(info.weightStorage).toBe(weights);
      let accepted = 0, rejected = 0;
      for (const s of [{ temperature: 0 }, { temperature: 0.8, topK: 40, topP: 0.95, repetitionPenalty: 1.1, seed: 11 }] as GenerateOptions[]) {
        const off = await collect(e, prompt, { ...s, maxTokens: 32, stopAtEos: false, speculative: 'off' });
        const on = await collect(e, prompt, { ...s, maxTokens: 32, stopAtEos: false, speculative: 'mtp' });
        expect(on.tokens).toEqual(off.tokens);
        accepted += on.speculation!.accepted;
        rejected += on.speculation!.drafted - on.speculation!.accepted;
        expect(on.speculation!.tokensPerForward).toBeGreaterThan(1);
      }
      expect(accepted).toBeGreaterThan(0);
      expect(rejected).toBeGreaterThan(0);
      await e.unload();
    });
  }
});
