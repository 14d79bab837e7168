// The OpenAI layer on the worker engine: the same chat.completions API as the in-thread engine, with
// JSON mode and logprobs crossing the Worker boundary as plain options and chunk fields.
import { describe, it, expect } from 'vitest';
import { createWorkerEngine } from '../../src/engine/worker-client';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';

async function fixtureFiles(): Promise<File[]> {
  const base = '/test/fixtures/deepseek-v3-tiny/';
  const get = async (n: string) => new File([await (await fetch(base + n)).arrayBuffer()], n);
  return [await get('config.json'), await get('model.safetensors'), new File([JSON.stringify(byteLevelTokenizerJson())], 'tokenizer.json')];
}

describe('createWorkerEngine: chat.completions.create', () => {
  it('answers in OpenAI shapes, with logprobs and JSON mode, and rejects bad requests with BAD_ARGUMENT', async () => {
    const engine = createWorkerEngine();
    try {
      await engine.load(await fixtureFiles(), { weights: 'f32' });
      const messages = [{ role: 'user' as const, content: 'Hi' }];
      const r = await engine.chat.completions.create({ messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 });
      expect(r.object).toBe('chat.completion');
      expect(r.usage.completion_tokens).toBeGreaterThan(0);
      expect(r.choices[0].logprobs!.content).toHaveLength(r.usage.completion_tokens);
      expect(r.choices[0].logprobs!.content[0].top_logprobs).toHaveLength(2);

      const s = await engine.chat.completions.create({ messages, max_tokens: 10, seed: 3, temperature: 1, stream: true, response_format: { type: 'json_object' } });
      let text = '';
      for await (const c of s) text += c.choices[0]?.delta.content ?? '';
      const v = JSON.parse(text);
      expect(typeof v === 'object' && v !== null && !Array.isArray(v), text).toBe(true);

      await expect(engine.chat.completions.create({ messages, n: 3 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    } finally {
      engine.terminate();
    }
  });
});
