// Self-speculative decoding (MTP) in the worker engine: options and speculation figures cross the
// worker boundary, and the tokens equal plain decoding's (docs/mtp.md).
import { describe, it, expect } from 'vitest';
import { createWorkerEngine } from '../../src/engine/worker-client';
import type { GenerateOptions, GenerationResult } from '../../src/engine/types';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';

async function mtpFixtureFiles(): Promise<File[]> {
  const base = '/test/fixtures/deepseek-v3-mtp-tiny/';
  const get = async (n: string) => new File([await (await fetch(base + n)).arrayBuffer()], n);
  return [await get('config.json'), await get('model.safetensors'), new File([JSON.stringify(byteLevelTokenizerJson())], 'tokenizer.json')];
}

describe('MTP speculative decoding in createWorkerEngine', () => {
  it('the same tokens as plain decoding, greedy and sampled; stats().speculation crosses the boundary', async () => {
    const engine = createWorkerEngine();
    try {
      const info = await engine.load(await mtpFixtureFiles(), { weights: 'f32' });
      expect(info.mtpLayers).toBe(1);
      const run = async (o: GenerateOptions): Promise<GenerationResult> => {
        const it = engine.generate('The cat', { maxTokens: 12, stopAtEos: false, ...o });
        for (;;) { const r = await it.next(); if (r.done) return r.value; }
      };
      for (const s of [{ temperature: 0 }, { temperature: 0.9, topK: 40, seed: 5 }]) {
        const off = await run({ ...s, speculative: 'off' });
        const on = await run({ ...s, speculative: 'mtp' });
        expect(on.tokens).toEqual(off.tokens);
        expect(on.speculation).toMatchObject({ mode: 'mtp' });
        expect(on.speculation!.drafted).toBeGreaterThan(0);
        const st = await engine.stats();
        expect(st.speculation).toEqual(on.speculation);
      }
    } finally {
      engine.terminate();
    }
  });
});
