// Weight caching in a real browser: a second load of the same URL reads the Cache API, not the network;
// the cache lists and clears; cached files are revalidated by ETag, quota errors and truncated downloads
// are typed (the Cache API is Chromium's; upstream is a scripted fetch).
import { describe, it, expect } from 'vitest';
import { urlModel } from '../../src/loader/model-source';
import { browserWeightCache } from '../../src/loader/cache';
import { urlSource, type LoadNotice } from '../../src/loader/source';
import { QuotaExceededError, TruncatedDownloadError } from '../../src/errors';
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

// ---- cache hygiene: revalidation, quota, persistence, truncated downloads -------------------------

/**
 * One upstream file behind a scripted fetch: HEAD, Range (206) and full GETs, with an ETag and
 * Last-Modified that change with its version; `offline` makes every request fail as fetch does, and
 * `truncateTo` sends fewer bytes than the Content-Length it announces.
 */
function upstream(bytes: Uint8Array, etag: string) {
  const s = { bytes, etag, offline: false, truncateTo: -1, ignoreRange: false, log: [] as string[] };
  const fetchFn: typeof fetch = async (_input, init) => {
    const method = init?.method ?? 'GET';
    const range = new Headers(init?.headers).get('range');
    s.log.push(range ? `${method} ${range}` : method);
    if (s.offline) throw new TypeError('Failed to fetch');
    const common = { etag: s.etag, 'last-modified': `Thu, 01 Jan 2026 00:00:0${s.etag.length % 10} GMT`, 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' };
    if (method === 'HEAD') return new Response(null, { status: 200, headers: { ...common, 'content-length': String(s.bytes.length) } });
    const m = range && !s.ignoreRange ? /bytes=(\d+)-(\d+)/.exec(range) : null;
    const [a, b] = m ? [Number(m[1]), Math.min(Number(m[2]), s.bytes.length - 1)] : [0, s.bytes.length - 1];
    const full = s.bytes.slice(a, b + 1);
    const sent = s.truncateTo >= 0 ? full.slice(0, Math.min(s.truncateTo, full.length)) : full;
    // A stream body, so a short one ends early instead of being a different (complete) file.
    const body = new ReadableStream<Uint8Array>({ start(c) { for (let i = 0; i < sent.length; i += 4096) c.enqueue(sent.slice(i, i + 4096)); c.close(); } });
    const headers: Record<string, string> = { ...common, 'content-length': String(full.length) };
    if (m) headers['content-range'] = `bytes ${a}-${b}/${s.bytes.length}`;
    return new Response(body, { status: m ? 206 : 200, headers });
  };
  return Object.assign(s, { fetch: fetchFn });
}

const randomBytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 131 + seed * 17 + (i >> 7)) & 255);
const URL_W = 'https://models.example/org/m/resolve/main/w.safetensors';

async function readAll(src: ReturnType<typeof urlSource>): Promise<Uint8Array> {
  const size = await src.size();
  const out = new Uint8Array(size);
  for (let o = 0; o < size; o += 10_000) out.set(await src.read(o, Math.min(10_000, size - o)), o);
  await src.close?.();
  return out;
}

describe('cache hygiene', () => {
  it('a cached file is revalidated by ETag: unchanged → reused, changed upstream → replaced, offline → the cached copy with a notice', async () => {
    const cache = browserWeightCache({ name: 'webmoe-test-hygiene' });
    await cache.clear();
    const v1 = randomBytes(100_000, 1), v2 = randomBytes(100_000, 2);
    const up = upstream(v1, '"v1"');
    const notices: LoadNotice[] = [];
    const open = () => urlSource(URL_W, { fetch: up.fetch, cache, probeBytes: 64, onNotice: (n) => notices.push(n), storage: null });

    const first = open();
    expect(await readAll(first)).toEqual(v1);
    expect(await first.cacheWrite).toBe(true);
    expect(await cache.validators(URL_W)).toMatchObject({ etag: '"v1"' });

    // Unchanged upstream: one HEAD, no download, the cached copy.
    up.log.length = 0;
    const second = open();
    expect(await readAll(second)).toEqual(v1);
    expect(second.mode).toBe('cached');
    expect(up.log).toEqual(['HEAD']);
    expect(notices).toEqual([]);

    // Upstream changed (same length, new ETag): the cached copy is replaced by the new file.
    up.bytes = v2;
    up.etag = '"v2"';
    up.log.length = 0;
    const third = open();
    expect(await readAll(third)).toEqual(v2);
    expect(await third.cacheWrite).toBe(true);
    expect(up.log[0]).toBe('HEAD');
    expect(up.log).toContain('GET');
    expect(notices.map((n) => n.kind)).toEqual(['cache-replaced']);
    expect(notices[0].message).toContain('"v1" → "v2"');
    expect(new Uint8Array(await (await cache.match(URL_W))!.arrayBuffer())).toEqual(v2);
    expect(await cache.validators(URL_W)).toMatchObject({ etag: '"v2"' });

    // Offline: the cached copy is used, and the user is told it could not be checked.
    notices.length = 0;
    up.offline = true;
    const fourth = open();
    expect(await readAll(fourth)).toEqual(v2);
    expect(notices.map((n) => n.kind)).toEqual(['cache-offline']);
    await cache.clear();
  });

  it('a quota error while caching is typed (bytes needed and available), reaches the user as a notice, and the load still succeeds from the network', async () => {
    const file = randomBytes(200_000, 3);
    // A Cache whose put reads part of the body and then fails as Chrome does when the quota is full.
    const quotaCaches = {
      async open() {
        return {
          async match() { return undefined; },
          async put(_req: RequestInfo, res: Response) {
            const reader = res.body!.getReader();
            await reader.read();
            await reader.cancel();
            throw new DOMException('Quota exceeded.', 'QuotaExceededError');
          },
          async keys() { return []; },
          async delete() { return false; },
        } as unknown as Cache;
      },
      async delete() { return true; },
    } as unknown as CacheStorage;
    let persistAsked = 0;
    const storage = { estimate: async () => ({ quota: 150_000, usage: 100_000 }), persist: async () => { persistAsked++; return false; }, persisted: async () => false };
    const cache = browserWeightCache({ caches: quotaCaches, storage });

    // Direct: the typed error names the bytes.
    const direct = await cache.put(URL_W, file).then(() => null, (e) => e);
    expect(direct).toBeInstanceOf(QuotaExceededError);
    expect(direct).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { needed: 200_000, available: 50_000 } });
    expect(direct.message).toContain('200000 bytes');
    expect(direct.message).toContain('50000 bytes');
    expect(direct.message).toContain('cache: false');

    // In a load: the streaming cache fill fails in the background; the bytes still arrive, the user hears of it.
    const up = upstream(file, '"q"');
    const notices: LoadNotice[] = [];
    const src = urlSource(URL_W, { fetch: up.fetch, cache, probeBytes: 64, onNotice: (n) => notices.push(n), storage });
    expect(await readAll(src)).toEqual(file);
    expect(await src.cacheWrite).toBe(false);
    await new Promise((r) => setTimeout(r, 0));
    const quota = notices.find((n) => n.kind === 'cache-quota');
    expect(quota, JSON.stringify(notices)).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { needed: 200_000, available: 50_000 } });
    expect(quota!.message).toContain('loads from the network');
    // Persistent storage was asked for once, and the answer reported.
    expect(persistAsked).toBe(1);
    expect(notices.find((n) => n.kind === 'cache-persist')).toMatchObject({ details: { persisted: false } });
  });

  it('a truncated download is a typed TRUNCATED error and is never cached', async () => {
    const cache = browserWeightCache({ name: 'webmoe-test-truncated' });
    await cache.clear();
    const file = randomBytes(120_000, 4);
    // A full GET (server ignores Range) that stops at half its Content-Length, every time.
    const up = upstream(file, '"t"');
    up.ignoreRange = true;
    up.truncateTo = 60_000;
    const src = urlSource(URL_W, { fetch: up.fetch, cache, probeBytes: 64, storage: null });
    const err = await readAll(src).then(() => null, (e) => e);
    expect(err).toBeInstanceOf(TruncatedDownloadError);
    expect(err).toMatchObject({ code: 'TRUNCATED', details: { received: 60_000, expected: 120_000 } });
    expect(await src.cacheWrite).toBe(false);
    expect(await cache.match(URL_W)).toBeNull();
    expect(await cache.list()).toEqual([]);

    // A Range answer (206) shorter than its Content-Length, every time: resumed after the bytes received
    // (each answer brings 100 more), then given up after 16 resumes with a typed error.
    const ranged = upstream(file, '"t"');
    const probe = urlSource(URL_W, { fetch: ranged.fetch, cache: false, probeBytes: 64, retryDelayMs: 1 });
    await probe.size();
    ranged.truncateTo = 100;
    await expect(probe.read(1000, 5000)).rejects.toMatchObject({ code: 'TRUNCATED', details: { received: 1700, expected: 5000 } });
    await cache.clear();
  });
});
