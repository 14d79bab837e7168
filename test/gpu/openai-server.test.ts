// `webmoe serve` (started in-process on an ephemeral port, GPU engine on the bundled model) through the
// official `openai` client, and createRemoteEngine against the same server. The README's "OpenAI-compatible
// API" snippets are the code between `README:begin` / `README:end` markers here (checked verbatim).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI, { APIError } from 'openai';
import { createNodeEngine } from '../../src/node';
import { startServer, type RunningServer } from '../../src/server/serve';
import { createRemoteEngine } from '../../src/engine/remote';
import type { WebMoeEngine } from '../../src/engine/engine';
import type { Engine } from '../../src/engine/types';

const ROOT = join(import.meta.dirname, '..', '..');
const MODEL = join(ROOT, 'public', 'models', 'webmoe-tiny');
const messages = [{ role: 'user' as const, content: 'Hello!' }];

let engine: WebMoeEngine;
let server: RunningServer;
let baseURL: string;
let client: OpenAI;
let modelId: string;

const isObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
const list0Id = (page: { data: { id: string }[] }) => page.data[0].id;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  engine = createNodeEngine();
  server = await startServer({ engine, port: 0, maxQueue: 1 });
  baseURL = `${server.url}/v1`;
  // No retries: the tests look at every status the server sends.
  client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await server?.close();
  await engine?.unload();
});

describe('webmoe serve through the openai client', () => {
  it('answers 503 (NOT_LOADED) while the model loads, then lists it', async () => {
    const early = await client.models.list().then(() => null, (e) => e);
    expect(early).toBeInstanceOf(APIError);
    expect(early.status).toBe(503);
    expect(early.code).toBe('NOT_LOADED');
    // A remote engine's load() waits out the 503 (here until its signal gives up).
    await expect(createRemoteEngine({ baseURL }).load('', { signal: AbortSignal.timeout(700) })).rejects.toMatchObject({ code: 'ABORTED' });
    const info = await engine.load(MODEL);
    server.ready(info);
    modelId = list0Id(await client.models.list());
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual(['webmoe-tiny']);
    expect(list.data[0].owned_by).toBe('webmoe');
  });

  it('chat: non-streaming and streaming (README snippet)', async () => {
    // README:begin serve-client
    const client = new OpenAI({ baseURL, apiKey: 'unused' });   // baseURL: 'http://127.0.0.1:8000/v1'
    const reply = await client.chat.completions.create({ model: 'webmoe-tiny', messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 8, seed: 1 });
    console.log(reply.choices[0].message.content, reply.usage);

    const stream = await client.chat.completions.create({ model: 'webmoe-tiny', messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 8, stream: true });
    for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta.content ?? '');
    // README:end
    expect(modelId).toBe('webmoe-tiny');
    expect(reply.object).toBe('chat.completion');
    expect(reply.choices[0].message.role).toBe('assistant');
    expect(reply.usage!.completion_tokens).toBeGreaterThan(0);
    expect(reply.usage!.completion_tokens).toBeLessThanOrEqual(8);
    const extra = (reply.usage as unknown as { extra: Record<string, number> }).extra;
    expect(extra.decode_tokens_per_s).toBeGreaterThan(0);
    expect(extra.time_to_first_token_s).toBeGreaterThan(0);

    // The same seed through the stream gives the same text; usage comes last when asked for.
    const again = await client.chat.completions.create({ model: modelId, messages, max_tokens: 8, seed: 1, stream: true, stream_options: { include_usage: true } });
    let text = '', finish = null, usage = null, first = null;
    for await (const chunk of again) {
      first ??= chunk.choices[0]?.delta;
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    expect(first).toEqual({ role: 'assistant', content: '' });
    expect(text).toBe(reply.choices[0].message.content);
    expect(finish).toBe(reply.choices[0].finish_reason);
    expect(usage!.completion_tokens).toBe(reply.usage!.completion_tokens);
  });

  it('engine.chat.completions.create on the in-process engine (README snippet)', async () => {
    // README:begin engine
    const reply = await engine.chat.completions.create({
      messages: [{ role: 'user', content: 'Hello!' }],
      max_tokens: 16, seed: 1,
      response_format: { type: 'json_object' },                // constrained: always parses
    });
    console.log(JSON.parse(reply.choices[0].message.content), reply.usage);   // usage.extra: TTFT, tok/s

    const stream = await engine.chat.completions.create({
      messages: [{ role: 'user', content: 'Hello!' }],
      max_tokens: 8, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    // README:end
    expect(isObject(JSON.parse(reply.choices[0].message.content))).toBe(true);
    expect(reply.model).toBe(modelId);
    expect(text.length).toBeGreaterThan(0);
  });

  it('completions with a stop string, and logprobs', async () => {
    const free = await client.completions.create({ model: modelId, prompt: 'The city', max_tokens: 10, temperature: 0 });
    const text = free.choices[0].text;
    expect(text.length).toBeGreaterThan(6);
    const stop = text.slice(4, 7);
    const stopped = await client.completions.create({ model: modelId, prompt: 'The city', max_tokens: 10, temperature: 0, stop: [stop] });
    expect(stopped.choices[0].text).toBe(text.slice(0, text.indexOf(stop)));
    expect(stopped.choices[0].finish_reason).toBe('stop');

    const lp = await client.chat.completions.create({ model: modelId, messages, max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
    const content = lp.choices[0].logprobs!.content!;
    expect(content.length).toBe(lp.usage!.completion_tokens);
    for (const t of content) {
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(t.top_logprobs.map((a) => a.token)[0]).toBe(t.token); // greedy: the most likely token
    }
  });

  it('JSON mode output parses to an object for several seeds', async () => {
    for (const seed of [1, 2, 3]) {
      const r = await client.chat.completions.create({ model: modelId, messages, max_tokens: 12, seed, temperature: 1, response_format: { type: 'json_object' } });
      expect(isObject(JSON.parse(r.choices[0].message.content!)), r.choices[0].message.content!).toBe(true);
    }
  });

  it('bad requests: 400 with the typed code; 404 for an unknown model or route', async () => {
    const bad = await client.chat.completions.create({ model: modelId, messages: [{ role: 'robot' as never, content: 'x' }] }).catch((e) => e);
    expect(bad).toBeInstanceOf(APIError);
    expect([bad.status, bad.code, bad.type]).toEqual([400, 'BAD_ARGUMENT', 'invalid_request_error']);
    const n2 = await client.chat.completions.create({ model: modelId, messages, n: 2 }).catch((e) => e);
    expect([n2.status, n2.code]).toEqual([400, 'BAD_ARGUMENT']);
    const unknown = await client.chat.completions.create({ model: 'gpt-4o', messages }).catch((e) => e);
    expect([unknown.status, unknown.code]).toEqual([404, 'NOT_FOUND']);
    const route = await fetch(`${baseURL}/embeddings`, { method: 'POST', body: '{}' });
    expect(route.status).toBe(404);
    expect((await route.json()).error.code).toBe('NOT_FOUND');
    const notJson = await fetch(`${baseURL}/chat/completions`, { method: 'POST', body: '{nope' });
    expect(notJson.status).toBe(400);
  });

  it('a client abort mid-stream cancels the generation; the server keeps serving', async () => {
    const ac = new AbortController();
    const stream = await client.chat.completions.create({ model: modelId, messages, max_tokens: 200, temperature: 0, stream: true }, { signal: ac.signal });
    let pieces = 0;
    try {
      for await (const chunk of stream) if (chunk.choices[0]?.delta.content && ++pieces === 3) ac.abort();
    } catch (e) {
      expect((e as Error).name).toMatch(/Abort/); // the client ends the stream or throws its abort error
    }
    expect(pieces).toBe(3);
    const prompt = engine.codec.encodeChat(messages).length;
    // The generation stops: the KV cache stops growing well short of the 200 tokens asked for.
    let cached = -1;
    for (let i = 0; i < 20; i++) {
      await sleep(300);
      const now = (await engine.stats()).cachedTokens;
      if (now === cached) break;
      cached = now;
    }
    expect(cached).toBeLessThan(prompt + 100);
    const after = await client.chat.completions.create({ model: modelId, messages, max_tokens: 2 });
    expect(after.choices[0].message.content!.length).toBeGreaterThan(0);
  });

  it('queues concurrent requests one at a time; beyond the queue bound: 429 (BUSY)', async () => {
    // maxQueue 1: A runs, B waits, C is refused.
    const order: string[] = [];
    const a = (await client.chat.completions.create({ model: modelId, messages, max_tokens: 24, temperature: 0, stream: true }))[Symbol.asyncIterator]();
    await a.next(); // A's first event: A holds the generation slot
    const aDone = (async () => { while (!(await a.next()).done) { /* drain */ } order.push('a'); })();
    const b = client.chat.completions.create({ model: modelId, messages, max_tokens: 2 }).then((r) => { order.push('b'); return r; });
    await sleep(300);
    const c = await client.chat.completions.create({ model: modelId, messages, max_tokens: 2 }).catch((e) => e);
    expect([c.status, c.code]).toEqual([429, 'BUSY']);
    await Promise.all([aDone, b]);
    expect(order).toEqual(['a', 'b']);
  });
});

describe('createRemoteEngine against webmoe serve', () => {
  let remote: Engine;

  it('loads by checking /v1/models and streams chat (README snippet)', async () => {
    // README:begin remote
    const remote = createRemoteEngine({ baseURL, apiKey: 'unused', model: 'webmoe-tiny' });
    const info = await remote.load('webmoe-tiny');            // checks GET /v1/models
    let text = '';
    for await (const chunk of remote.chat([{ role: 'user', content: 'Hello!' }], { maxTokens: 8, seed: 1 })) text += chunk.text;
    console.log(info.name, text, await remote.stats());       // tok/s and TTFT from the server's usage.extra
    // README:end
    expect(info.layers).toBe(4);
    const local = await client.chat.completions.create({ model: modelId, messages, max_tokens: 8, seed: 1 });
    expect(text).toBe(local.choices[0].message.content);
    const s = await remote.stats();
    expect(s.loaded).toBe(true);
    expect(s.decodeTokPerS).toBeGreaterThan(0);
  });

  it('abort ends the remote generation with finishReason aborted; server errors surface as typed errors', async () => {
    remote = createRemoteEngine({ baseURL });
    await remote.load('');
    const it = remote.chat(messages, { maxTokens: 200, temperature: 0 });
    let n = 0;
    let r = await it.next();
    for (; !r.done; r = await it.next()) if (++n === 2) remote.abort();
    expect(r.value.finishReason).toBe('aborted');
    expect(n).toBeLessThan(20);

    await expect(remote.chat(messages, { temperature: 5 }).next()).rejects.toMatchObject({ name: 'ArgumentError', code: 'BAD_ARGUMENT' });
    await expect(createRemoteEngine({ baseURL }).load('no-such-model')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    // The OpenAI layer on the remote engine, in JSON mode (the server constrains the sampling).
    const j = await remote.chat.completions.create({ messages, max_tokens: 10, seed: 4, response_format: { type: 'json_object' } });
    expect(isObject(JSON.parse(j.choices[0].message.content))).toBe(true);
  });
});

describe('README', () => {
  it("the README's OpenAI snippets are the code these tests run", () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const source = readFileSync(import.meta.filename, 'utf8');
    const snippets = [...source.matchAll(/\/\/ README:begin (\S+)\n([\s\S]*?)\n\s*\/\/ README:end/g)];
    expect(snippets.map((m) => m[1])).toEqual(['serve-client', 'engine', 'remote']);
    for (const [, name, body] of snippets) {
      const dedented = body.split('\n').map((l) => l.replace(/^ {4}/, '')).join('\n');
      expect(readme.includes(dedented), `README lacks snippet ${name}:\n${dedented}`).toBe(true);
    }
  });
});
