// The README's "Using the runtime" snippets that run in a browser page, verbatim between the markers
// (test/unit/readme-snippets.test.ts checks that every snippet of that section is the code of a test):
// the worker engine with the OpenAI-shaped API and the streaming core, and the service-worker engine
// (its script is src/pages/sw.ts, served at /sw.js by scripts/sw-at-root.mjs).
import { describe, it, expect } from 'vitest';
import { createWorkerEngine, createServiceWorkerEngine } from '../../src/index';

describe('README: using the runtime in a page', () => {
  it('the worker engine: OpenAI-shaped API, then the streaming core', async () => {
    const output = document.createElement('pre');
    const progress: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => progress.push(a.map(String).join(' '));
    try {
      // README:begin worker
      const engine = createWorkerEngine();                  // a module Worker: the page stays responsive
      await engine.load('/models/webmoe-tiny/', {           // a base URL, or File[] / a directory handle
        weights: 'auto',                                    // a quantised GGUF's blocks (gguf), f16/bf16 for F16/BF16 checkpoints, else f32; or f16 | bf16 | q8 | q4 | gguf
        onProgress: (p) => console.log(p.phase, p.bytesLoaded, '/', p.bytesTotal, p.notice?.message ?? ''),
      });
      const reply = await engine.chat.completions.create({
        messages: [{ role: 'user', content: 'Hello!' }],
        max_tokens: 16, temperature: 0.7, seed: 1,
      });
      console.log(reply.choices[0].message.content, reply.usage);   // usage.extra: TTFT, tok/s

      const stream = await engine.chat.completions.create({
        messages: [{ role: 'user', content: 'Hello!' }],
        max_tokens: 8, stream: true,
      });
      for await (const chunk of stream) output.textContent += chunk.choices[0]?.delta.content ?? '';
      // README:end
      expect(progress.some((l) => l.startsWith('weights'))).toBe(true);
      // The page asked for persistent storage for the cache (windows only have persist()) and reported the answer.
      expect(progress.some((l) => l.includes('persistent storage')), progress.join('\n')).toBe(true);
      expect(reply.object).toBe('chat.completion');
      expect(reply.usage.completion_tokens).toBeGreaterThan(0);
      expect(reply.usage.extra.decode_tokens_per_s).toBeGreaterThan(0);
      expect(output.textContent!.length).toBeGreaterThan(0);

      // README:begin core
      for await (const chunk of engine.chat([{ role: 'user', content: 'Hello!' }], { temperature: 0.7, maxTokens: 16, seed: 1 })) {
        output.textContent += chunk.text;                   // chunk.token, chunk.experts (routing: true)
      }
      console.log(await engine.stats());                    // tok/s, TTFT, KV bytes (latent vs MHA), expert load + MaxVio
      // README:end
      const s = await engine.stats();
      expect(s.decodeTokPerS).toBeGreaterThan(0);
      expect(s.kvBytesPerToken).toBeLessThan(s.mhaKvBytesPerToken);
      // The streaming core and the OpenAI layer agree on the same seed.
      let again = '';
      for await (const chunk of engine.chat([{ role: 'user', content: 'Hello!' }], { temperature: 0.7, maxTokens: 16, seed: 1 })) again += chunk.text;
      expect(again).toBe(reply.choices[0].message.content);
      engine.terminate();
    } finally {
      console.log = log;
    }
  });

  it('the service-worker engine: the model stays loaded for the next page', async () => {
    // README:begin page.js
    // page.js
    const engine = createServiceWorkerEngine({ scriptURL: '/sw.js' });   // registers it (a module script)
    await engine.load('/models/webmoe-tiny/');            // a page that finds the model loaded gets it at once
    const reply = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hello!' }], max_tokens: 8 });
    console.log(reply.choices[0].message.content, await engine.status());   // { instance, loadCount, … }
    // README:end
    expect(reply.usage.completion_tokens).toBeGreaterThan(0);
    const before = await engine.status();
    expect(before.loadCount).toBe(1);
    expect(before.webgpu).toBe(true);
    // A second client (as the next page would be) gets the loaded model: no second load.
    const next = createServiceWorkerEngine({ scriptURL: '/sw.js' });
    await next.load('/models/webmoe-tiny/');
    expect(await next.status()).toMatchObject({ instance: before.instance, loadCount: 1 });

    // Aborting one client's generation ends it as 'aborted' and leaves the other's alone.
    const long = next.chat([{ role: 'user', content: 'Hello!' }], { maxTokens: 400, temperature: 0 });
    const other = engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 });
    let n = 0, r = await long.next();
    for (; !r.done; r = await long.next()) if (++n === 2) next.abort();
    expect(r.value.finishReason).toBe('aborted');
    expect((await other).usage.completion_tokens).toBeGreaterThan(0);
    // Typed errors cross the service worker boundary.
    await expect(engine.chat.completions.create({ messages: [{ role: 'user', content: 'x' }], temperature: -1 })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect((async () => { for await (const _ of engine.generate('x', { temperature: -1 })) void _; })()).rejects.toMatchObject({ code: 'BAD_ARGUMENT', name: 'ArgumentError' });
    // A different model (other load options) replaces it; the first client then loads its own again.
    await next.load('/models/webmoe-tiny/', { contextLength: 64 });
    expect((await next.status()).loadCount).toBe(2);
    const notices: string[] = [];
    await engine.load('/models/webmoe-tiny/', { onProgress: (p) => p.notice && notices.push(p.notice.kind) });
    expect((await engine.status()).loadCount).toBe(3);
    await next.load('/models/webmoe-tiny/', { contextLength: 64 });
    // The first client's next call finds another model loaded: it loads its own again and says so.
    const after = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
    expect(after.usage.completion_tokens).toBeGreaterThan(0);
    expect(notices.filter((k) => k !== 'cache-persist')).toEqual(['service-worker-reload']);
    expect((await engine.status()).loadCount).toBe(5);
    next.close();
    await engine.unload();
    engine.close();
  });
});
