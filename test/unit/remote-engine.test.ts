// createRemoteEngine's protocol handling with a scripted fetch (no server): server-sent events split at
// arbitrary byte boundaries (inside a UTF-8 character, between \r and \n), usage → stats, OpenAI's and
// vLLM's error shapes → typed errors, a network failure → NETWORK. The real server: test/gpu/openai-server.
import { describe, it, expect } from 'vitest';
import { createRemoteEngine } from '../../src/engine/remote';

const utf8 = new TextEncoder();

/** A fetch that answers every request with `status` and `body`, delivered in pieces of `step` bytes. */
function scripted(status: number, body: string, step = 3, contentType = 'text/event-stream') {
  const requests: { url: string; body: any }[] = [];
  const fetch = async (url: string | URL | Request, init?: RequestInit) => {
    requests.push({ url: String(url), body: init?.body ? JSON.parse(String(init.body)) : undefined });
    const bytes = utf8.encode(body);
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < bytes.length; i += step) c.enqueue(bytes.slice(i, i + step));
        c.close();
      },
    });
    return new Response(stream, { status, headers: { 'Content-Type': contentType } });
  };
  return { fetch: fetch as typeof globalThis.fetch, requests };
}

const event = (o: unknown) => `data: ${JSON.stringify(o)}\r\n\r\n`;
const chunk = (content: string, finish: string | null = null) => ({ choices: [{ index: 0, delta: { content }, finish_reason: finish }] });

describe('createRemoteEngine (scripted server)', () => {
  it('streams deltas split anywhere, sends OpenAI fields, and takes stats from usage.extra', async () => {
    const usage = { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8, extra: { time_to_first_token_s: 0.25, prefill_tokens_per_s: 20, decode_tokens_per_s: 9, reused_prompt_tokens: 2 } };
    const body = event({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] })
      + event(chunk('Grüß')) + event(chunk(' dich')) + event(chunk('', 'length')) + event({ choices: [], usage }) + 'data: [DONE]\r\n\r\n';
    for (const step of [1, 2, 5, 1000]) {
      const s = scripted(200, body, step);
      const remote = createRemoteEngine({ baseURL: 'http://server/v1/', model: 'm', fetch: s.fetch });
      const it = remote.chat([{ role: 'user', content: 'hi' }], { maxTokens: 3, temperature: 0.5, stop: ['x'], responseFormat: 'json_object' });
      const texts: string[] = [];
      let r = await it.next();
      for (; !r.done; r = await it.next()) texts.push(r.value.text);
      expect(texts).toEqual(['Grüß', ' dich']);
      expect(r.value).toMatchObject({ text: 'Grüß dich', finishReason: 'length', promptTokens: 5, completionTokens: 3, reusedTokens: 2, timeToFirstTokenMs: 250 });
      expect(s.requests[0].url).toBe('http://server/v1/chat/completions');
      expect(s.requests[0].body).toMatchObject({ model: 'm', stream: true, max_tokens: 3, temperature: 0.5, stop: ['x'], response_format: { type: 'json_object' } });
      expect(await remote.stats()).toMatchObject({ decodeTokPerS: 9, prefillTokPerS: 20, timeToFirstTokenMs: 250 });
    }
  });

  it.each([
    ['OpenAI shape with a webmoe code', 400, { error: { message: 'bad role', type: 'invalid_request_error', code: 'BAD_ARGUMENT' } }, { name: 'ArgumentError', code: 'BAD_ARGUMENT' }],
    ["vLLM's flat shape", 400, { object: 'error', message: 'bad', type: 'BadRequestError', code: 400 }, { code: 'BAD_ARGUMENT' }],
    ['queue full', 429, { error: { message: 'busy', code: 'BUSY' } }, { code: 'BUSY' }],
    ['loading', 503, { error: { message: 'loading', code: 'NOT_LOADED' } }, { code: 'NOT_LOADED' }],
    ['a server error without a body', 502, '', { code: 'NETWORK' }],
  ])('%s → a typed error', async (_what, status, body, want) => {
    const s = scripted(status, typeof body === 'string' ? body : JSON.stringify(body), 1000, 'application/json');
    const remote = createRemoteEngine({ baseURL: 'http://server/v1', model: 'm', fetch: s.fetch });
    await expect(remote.generate('x').next()).rejects.toMatchObject(want);
  });

  it('an error event mid-stream, a failed connection and a missing model are typed', async () => {
    const mid = scripted(200, event(chunk('a')) + event({ error: { message: 'device lost', code: 'DEVICE_LOST' } }));
    const it = createRemoteEngine({ baseURL: 'http://server/v1', model: 'm', fetch: mid.fetch }).chat([{ role: 'user', content: 'x' }]);
    expect((await it.next()).value).toMatchObject({ text: 'a' });
    await expect(it.next()).rejects.toMatchObject({ code: 'DEVICE_LOST' });

    const down = createRemoteEngine({ baseURL: 'http://server/v1', model: 'm', fetch: (async () => { throw new TypeError('fetch failed'); }) as never });
    await expect(down.generate('x').next()).rejects.toMatchObject({ code: 'NETWORK' });
    expect(() => createRemoteEngine({ baseURL: 'server:8000' })).toThrow(/baseURL/);
    await expect(createRemoteEngine({ baseURL: 'http://server/v1' }).generate('x').next()).rejects.toMatchObject({ code: 'NOT_LOADED' });
  });
});
