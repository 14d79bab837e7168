// Multi-Token Prediction (issue #18): the MTP layer of a DeepSeek-V3 checkpoint loads in the release
// layout and computes what model.py's MTPLayer (vLLM's DeepSeekMultiTokenPredictorLayer, line by line)
// computes; self-speculative decoding gives exactly the tokens of plain decoding, on the GPU runner and
// on the CPU reference runner.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose } from '../helpers/gpu';
import { gpuEngine, cpuEngine } from '../helpers/models';
import { memoryModel } from '../../src/loader/model-source';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import type { WebMoeEngine } from '../../src/engine/engine';
import type { GenerateOptions } from '../../src/engine/types';

const DIR = join(import.meta.dirname, '..', 'fixtures', 'deepseek-v3-mtp-tiny');
const file = (n: string) => new Uint8Array(readFileSync(join(DIR, n)));
const f32 = (n: string) => { const b = file(n); return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4); };
const tokens: number[] = JSON.parse(readFileSync(join(DIR, 'tokens.json'), 'utf8')).tokens;
const mtpModel = () => memoryModel({
  'config.json': readFileSync(join(DIR, 'config.json'), 'utf8'),
  'model.safetensors': file('model.safetensors'),
  'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()),
});

// model.py computes in float32 like the runtime; the routing margins of this fixture are ≥ 5.6e-3
// (reference.json), far above float32 noise, so the expert sets agree and the logits match to rounding.
const TOL = { atol: 1e-4, rtol: 0 };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

async function collect(e: WebMoeEngine, prompt: string, o: GenerateOptions) {
  const it = e.generate(prompt, o);
  let r = await it.next();
  while (!r.done) r = await it.next();
  return r.value;
}

describe('MTP layer vs model.py (random-weight fixture with the release layout)', () => {
  for (const [name, make] of [['GPU', () => gpuEngine(gpu)], ['CPU reference', () => cpuEngine()]] as const) {
    it(`${name}: main logits and MTP logits within 1e-4; info reports the MTP layer`, async () => {
      const e = make();
      const info = await e.load(mtpModel(), { weights: 'f32', kvCache: 'f32' });
      expect(info.mtpLayers).toBe(1);
      const main = await gpu.checked(() => e.runner.logits(tokens, true));
      expectClose(main, f32('logits.f32.bin'), TOL, 'main logits');
      e.runner.truncate(0);
      const mtp = await gpu.checked(() => e.runner.mtpLogits!(tokens));
      expect(mtp.length).toBe((tokens.length - 1) * 256);
      expectClose(mtp, f32('mtp_logits.f32.bin'), TOL, 'MTP logits');
      await e.unload();
    });
  }

  it('the concatenation order matters: swapping the halves of eh_proj changes the MTP logits', async () => {
    // Guards the test itself: [h; e] instead of [e; h] would not pass within 1e-4.
    const st = file('model.safetensors');
    const hdrLen = Number(new DataView(st.buffer, st.byteOffset).getBigUint64(0, true));
    const hdr = JSON.parse(new TextDecoder().decode(st.subarray(8, 8 + hdrLen)));
    const t = hdr['model.layers.3.eh_proj.weight'];
    const swapped = st.slice();
    const w = new Float32Array(swapped.buffer, 8 + hdrLen + t.data_offsets[0], t.shape[0] * t.shape[1]);
    const D = t.shape[0];
    for (let r = 0; r < D; r++) for (let c = 0; c < D; c++) { const a = w[r * 2 * D + c]; w[r * 2 * D + c] = w[r * 2 * D + D + c]; w[r * 2 * D + D + c] = a; }
    const e = cpuEngine();
    await e.load(memoryModel({ 'config.json': readFileSync(join(DIR, 'config.json'), 'utf8'), 'model.safetensors': swapped, 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) }));
    const mtp = await e.runner.mtpLogits!(tokens);
    const ref = f32('mtp_logits.f32.bin');
    let maxDiff = 0;
    for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(mtp[i] - ref[i]));
    expect(maxDiff).toBeGreaterThan(0.1);
  });
});

describe('self-speculative decoding gives the tokens of plain decoding', () => {
  // The GPU case is smaller: on a CPU fallback adapter (SwiftShader) each step costs ~100 ms.
  for (const [name, make, prompts, n] of [
    ['GPU', () => gpuEngine(gpu), ['The cat', 'A longer prompt with several words in it'], 16],
    ['CPU reference', () => cpuEngine(), ['The cat', 'xy', 'A longer prompt with several words in it'], 24],
  ] as const) {
    it(`${name}: greedy and sampled (temperature, top-k, top-p, repetition penalty), several prompts, multi-turn cache reuse`, { timeout: 600_000 }, async () => {
      const e = make();
      await e.load(mtpModel(), { weights: 'f32', kvCache: 'f32' });
      const settings: GenerateOptions[] = [
        { temperature: 0, maxTokens: n },
        { temperature: 0.9, topK: 40, topP: 0.95, repetitionPenalty: 1.2, seed: 7, maxTokens: n },
        { temperature: 1.5, seed: 3, maxTokens: n - 7 },
      ];
      let drafted = 0;
      for (const p of prompts) {
        for (const s of settings) {
          const off = await gpu.checked(() => collect(e, p, { ...s, speculative: 'off' }));
          const on = await gpu.checked(() => collect(e, p, { ...s, speculative: 'mtp' }));
          expect(on.tokens, `${p} ${JSON.stringify(s)}`).toEqual(off.tokens);
          expect(on.finishReason).toBe(off.finishReason);
          expect(on.speculation!.mode).toBe('mtp');
          drafted += on.speculation!.drafted;
          // The engine's stats carry the last generation's figures.
          const st = await e.stats();
          expect(st.speculation.drafted).toBe(on.speculation!.drafted);
          expect(st.speculation.tokensPerForward).toBeCloseTo(1 + on.speculation!.accepted / Math.max(1, on.speculation!.drafted) * (on.speculation!.drafted / Math.max(1, on.tokens.length - 1)), 0);
        }
      }
      expect(drafted).toBeGreaterThan(10);
      // Continuing a conversation reuses the cached prefix; speculation resynchronises its own cache.
      const a = await collect(e, 'The cat sat', { temperature: 0, maxTokens: 10, speculative: 'mtp' });
      const b = await collect(e, 'The cat sat' + a.text + ' and', { temperature: 0, maxTokens: 10, speculative: 'mtp' });
      expect(b.reusedTokens).toBeGreaterThan(3);
      const fresh = make();
      await fresh.load(mtpModel(), { weights: 'f32', kvCache: 'f32' });
      const want = await collect(fresh, 'The cat sat' + a.text + ' and', { temperature: 0, maxTokens: 10, speculative: 'off' });
      expect(b.tokens).toEqual(want.tokens);
      await fresh.unload();
      await e.unload();
    });
  }

  it("speculative 'mtp' without an MTP layer is an ArgumentError naming what works", async () => {
    const e = cpuEngine();
    await e.load(memoryModel({
      'config.json': JSON.stringify({ ...JSON.parse(readFileSync(join(DIR, 'config.json'), 'utf8')), num_nextn_predict_layers: 0 }),
      'model.safetensors': file('model.safetensors'),
      'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()),
    }));
    expect(e.info!.mtpLayers ?? 0).toBe(0);
    await expect(collect(e, 'ab', { maxTokens: 4, speculative: 'mtp' })).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringContaining("use 'off'") });
    const r = await collect(e, 'ab', { maxTokens: 4 });
    expect(r.speculation!.mode).toBe('off');
  });
});

describe('the bundled model (webmoe-tiny) with its trained MTP layer', () => {
  const BUNDLED = join(import.meta.dirname, '..', '..', 'public', 'models', 'webmoe-tiny');
  const prompt = 'The jury said it did find that the city executive committee, which had over-all charge of the election,';

  it('GPU engine: speculative = plain tokens, greedy and sampled; drafts are accepted and rejected', { timeout: 600_000 }, async () => {
    const { directoryModel } = await import('../../src/loader/node-source');
    const e = gpuEngine(gpu);
    const info = await e.load(directoryModel(BUNDLED), { weights: 'f32' });
    expect(info.mtpLayers).toBe(1);
    let accepted = 0, rejected = 0;
    for (const s of [{ temperature: 0 }, { temperature: 0.8, topK: 40, topP: 0.95, repetitionPenalty: 1.1, seed: 11 }] as GenerateOptions[]) {
      const off = await gpu.checked(() => collect(e, prompt, { ...s, maxTokens: 32, stopAtEos: false, speculative: 'off' }));
      const on = await gpu.checked(() => collect(e, prompt, { ...s, maxTokens: 32, stopAtEos: false, speculative: 'mtp' }));
      expect(on.tokens).toEqual(off.tokens);
      accepted += on.speculation!.accepted;
      rejected += on.speculation!.drafted - on.speculation!.accepted;
      expect(on.speculation!.tokensPerForward).toBeGreaterThan(1);
    }
    expect(accepted).toBeGreaterThan(0);
    expect(rejected).toBeGreaterThan(0);
    await e.unload();
  });

  it('CLI (Node engine): generate --speculative mtp prints the same text as off and the MTP summary', { timeout: 600_000 }, async () => {
    const { main } = await import('../../src/cli');
    const run = async (mode: string) => {
      const out: string[] = [], err: string[] = [];
      const code = await main(['generate', '--model', BUNDLED, '--prompt', prompt, '--max-tokens', '16', '--temperature', '0', '--weights', 'f32', '--speculative', mode], { out: (s: string) => out.push(s), err: (s: string) => err.push(s) });
      expect(code, err.join('')).toBe(0);
      return { out: out.join(''), err: err.join('') };
    };
    const off = await run('off'), on = await run('mtp');
    expect(on.out).toBe(off.out);
    expect(on.err).toMatch(/MTP: \d+\/\d+ drafts accepted \(\d+%\), \d\.\d\d tokens\/forward/);
    expect(off.err).not.toMatch(/MTP:/);
  });
});
