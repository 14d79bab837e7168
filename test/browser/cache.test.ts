// Weight caching in a real browser: a second load of the same URL reads the Cache API, not the network;
// the cache lists and clears.
import { describe, it, expect } from 'vitest';
import { urlModel } from '../../src/loader/model-source';
import { browserWeightCache } from '../../src/loader/cache';
import { openCheckpoint } from '../../src/model/checkpoint';

describe('browser weight cache', () => {
  it('a second load does not download the weights again', async () => {
    const cache = browserWeightCache({ name: 'webmoe-test-cache' });
    await cache.clear();
    const weightBytes: number[] = [];
    const countingFetch: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (String(input).endsWith('.safetensors')) {
        const body = new Uint8Array(await res.arrayBuffer());
        weightBytes.push(body.byteLength);
        return new Response(body, { status: res.status, headers: res.headers });
      }
      return res;
    };
    const base = new URL('/models/webmoe-tiny/', location.href).toString(); // the bundled model, served from public/
    const load = async () => {
      const ckpt = await openCheckpoint(urlModel(base, { fetch: countingFetch, cache }));
      let n = 0;
      await ckpt.stream(null, () => { n++; });
      return n;
    };
    const first = await load();
    const downloaded = weightBytes.reduce((a, b) => a + b, 0);
    expect(first).toBeGreaterThan(50);
    expect(downloaded).toBeGreaterThan(1_000_000);
    weightBytes.length = 0;
    expect(await load()).toBe(first);
    expect(weightBytes.reduce((a, b) => a + b, 0)).toBe(0);
    const listed = await cache.list();
    const entry = listed.find((e) => e.url.endsWith('model.safetensors'));
    expect(entry && entry.bytes >= 1_000_000).toBe(true);
    await cache.clear();
    expect(await cache.list()).toEqual([]);
  });
});
