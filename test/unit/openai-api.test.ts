// The OpenAI-shaped layer and JSON mode on the CPU reference engine with the bundled model (the same
// generation logic as the GPU engine; the GPU engine is tested through `webmoe serve` in test/gpu).
import { describe, it, expect, beforeAll } from 'vitest';
import { join } from 'node:path';
import { JsonObjectPrefix } from '../../src/engine/json-grammar';
import { cpuEngine } from '../helpers/models';
import { directoryModel } from '../../src/loader/node-source';
import type { WebMoeEngine } from '../../src/engine/engine';
import type { GenerationChunk } from '../../src/engine/types';

const MODEL = join(import.meta.dirname, '..', '..', 'public', 'models', 'webmoe-tiny');

describe('JSON-object prefix grammar', () => {
  const docs = ['{}', '{"a":1}', '{ "a" : [1, -2.5e+3, true, false, null, {"b":"x\\"\\u00e9"}], "c": {} }', '{"k":"é\\n","n":0.0,"e":1E9}'];

  it('accepts every prefix of valid objects, and each prefix plus its completion parses to an object', () => {
    for (const doc of docs) {
      for (let n = 0; n <= doc.length; n++) {
        const s = new JsonObjectPrefix();
        expect(s.feed(doc.slice(0, n)), `${doc.slice(0, n)}`).toBe(true);
        const closed = doc.slice(0, n) + s.completion();
        const v = JSON.parse(closed);
        expect(typeof v === 'object' && v !== null && !Array.isArray(v), closed).toBe(true);
        // The completion can be written one character at a time: each step shortens it by one.
        const c = s.completion();
        if (c) { expect(s.feed(c[0])).toBe(true); expect(s.completion()).toBe(c.slice(1)); }
      }
      const s = new JsonObjectPrefix();
      s.feed(doc);
      expect(s.done).toBe(true);
    }
  });

  it.each(['[', 'x', '{"a"}', '{,', '{"a":01}', '{"a":tru ', '{"a":1,}', '{} ', '{"a":"\u0001"}', '{"a":  1}', '{"a":1}}'])('refuses %j', (text) => {
    expect(new JsonObjectPrefix().feed(text)).toBe(false);
  });
});

describe('chat.completions.create / completions.create (CPU engine, bundled model)', () => {
  let engine: WebMoeEngine;
  beforeAll(async () => {
    engine = cpuEngine();
    await engine.load(directoryModel(MODEL));
  });
  const messages = [{ role: 'user' as const, content: 'Tell me about the city.' }];

  it('JSON mode: every output parses to an object, for several seeds and budgets (closing forced before max_tokens)', async () => {
    const outputs = new Set<string>();
    for (const [seed, max] of [[1, 40], [2, 40], [3, 9], [4, 2], [5, 24]]) {
      const r = await engine.chat.completions.create({ messages, seed, temperature: 1, max_tokens: max, response_format: { type: 'json_object' } });
      const text = r.choices[0].message.content;
      const v = JSON.parse(text);
      expect(typeof v === 'object' && v !== null && !Array.isArray(v), text).toBe(true);
      expect(r.usage.completion_tokens).toBeLessThanOrEqual(max);
      outputs.add(text);
    }
    expect(outputs.size).toBeGreaterThan(2); // the model writes, the mask only constrains
  });

  it('JSON mode closes the object within the context left, not only within max_tokens', async () => {
    const capacity = engine.runner.capacity;
    let prompt = '';
    while (engine.codec.encode(prompt + ' the').length <= capacity - 1) prompt += ' the';
    expect(engine.codec.encode(prompt).length).toBe(capacity - 1); // one token of room
    const r = await engine.completions.create({ prompt, max_tokens: 8, response_format: { type: 'json_object' } });
    expect(r.choices[0].text).toBe('{}'); // two tokens fit: the step on the last free slot and the one after it
  });

  it('stop strings split across tokens end the text and are never streamed in part', async () => {
    const chunks: GenerationChunk[] = [];
    const free = engine.generate('The city', { temperature: 0, maxTokens: 16, stopAtEos: false });
    for (let r = await free.next(); !r.done; r = await free.next()) chunks.push(r.value);
    // A stop string made of the end of one token and the start of the next.
    const k = chunks.findIndex((c, i) => i > 2 && c.text.length >= 2 && (chunks[i + 1]?.text.length ?? 0) >= 2);
    expect(k).toBeGreaterThan(0);
    const full = chunks.map((c) => c.text).join('');
    const stop = chunks[k].text.slice(-2) + chunks[k + 1].text.slice(0, 2);
    const stream = await engine.completions.create({ prompt: 'The city', temperature: 0, max_tokens: 16, stop: [stop], stream: true });
    let streamed = '', finish: string | null = null;
    for await (const c of stream) { streamed += c.choices[0].text; finish = c.choices[0].finish_reason ?? finish; }
    expect(streamed).toBe(full.slice(0, full.indexOf(stop)));
    expect(finish).toBe('stop');
  });

  it('logprobs: the sampled token and its top alternatives, most likely first; greedy picks the top one', async () => {
    const r = await engine.chat.completions.create({ messages, temperature: 0, max_tokens: 4, logprobs: true, top_logprobs: 3 });
    const lp = r.choices[0].logprobs!.content;
    expect(lp.length).toBe(r.usage.completion_tokens);
    for (const t of lp) {
      expect(t.top_logprobs.length).toBe(3);
      expect(t.top_logprobs[0].logprob).toBeGreaterThanOrEqual(t.top_logprobs[1].logprob);
      expect(t.logprob).toBeCloseTo(t.top_logprobs[0].logprob, 6);
      expect(t.token).toBe(t.top_logprobs[0].token);
      expect(t.top_logprobs.reduce((s, a) => s + Math.exp(a.logprob), 0)).toBeLessThanOrEqual(1 + 1e-6);
    }
    // The CPU sampling path used for logprobs draws what the default path draws for the same seed.
    const plain = await engine.chat.completions.create({ messages, temperature: 0.9, seed: 7, max_tokens: 6 });
    const withLp = await engine.chat.completions.create({ messages, temperature: 0.9, seed: 7, max_tokens: 6, logprobs: true });
    expect(withLp.choices[0].message.content).toBe(plain.choices[0].message.content);
  });

  it('streams role first, content deltas, the finish reason, then usage with speed figures', async () => {
    const s = await engine.chat.completions.create({ messages, seed: 3, max_tokens: 5, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const c of s) chunks.push(c);
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    const final = chunks[chunks.length - 2];
    expect(final.choices[0].finish_reason).toBe('length');
    const usage = chunks[chunks.length - 1].usage!;
    expect(chunks[chunks.length - 1].choices).toEqual([]);
    expect(usage.completion_tokens).toBe(5);
    expect(usage.total_tokens).toBe(usage.prompt_tokens + 5);
    expect(usage.extra.decode_tokens_per_s).toBeGreaterThan(0);
    expect(usage.extra.time_to_first_token_s).toBeGreaterThan(0);
  });

  it.each([
    ['an unknown role', { messages: [{ role: 'robot', content: 'x' }] }],
    ['content of the wrong type', { messages: [{ role: 'user', content: 3 }] }],
    ['n > 1', { messages, n: 2 }],
    ['a temperature that is not a number', { messages, temperature: 'hot' }],
    ['top_logprobs without logprobs', { messages, top_logprobs: 2 }],
    ['json_schema', { messages, response_format: { type: 'json_schema' } }],
  ])('rejects %s with BAD_ARGUMENT (also when streaming)', async (_what, body) => {
    for (const stream of [false, true]) {
      await expect(engine.chat.completions.create({ ...(body as any), stream })).rejects.toMatchObject({ name: 'ArgumentError', code: 'BAD_ARGUMENT' });
    }
  });
});
