import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../src/model/checkpoint';
import { urlModel } from '../../src/loader/model-source';
import { memoryWeightCache } from '../../src/loader/cache';
import { fixtureFile, fixtureJson } from '../helpers/fixture';

// Issue 21's "all-zero logits": Chromium's HTTP cache, given a server that gzips full GETs (and 206
// answers) under the same weak ETag as identity ranges (vite preview), answered the loader's Range
// read of the weights with wrong bytes past the cached probe and no error (test/e2e/weights-intact.spec.ts).
// The loader keeps the HTTP cache out: every request for a weight file is sent with cache: 'no-store'.
// Here a recording fetch serves the fixture over "HTTP" (Range → 206, else 200, strong ETag).

const FILES: Record<string, Uint8Array> = {
  'config.json': new TextEncoder().encode(JSON.stringify(fixtureJson('config.json'))),
  'model.safetensors': fixtureFile('model.safetensors'),
};

function server(log: { path: string; init: RequestInit }[]): typeof fetch {
  return async (input, init = {}) => {
    const path = new URL(String(input)).pathname.split('/').pop()!;
    log.push({ path, init });
    const body = FILES[path];
    if (!body) return new Response('not found', { status: 404 });
    const headers: Record<string, string> = { etag: '"v1"', 'accept-ranges': 'bytes' };
    const range = (init.headers as Record<string, string> | undefined)?.Range;
    const m = range ? /bytes=(\d+)-(\d+)?/.exec(range) : null;
    if (init.method === 'HEAD') return new Response(null, { status: 200, headers: { ...headers, 'content-length': String(body.length) } });
    if (m) {
      const a = Number(m[1]), b = Math.min(m[2] === undefined ? body.length - 1 : Number(m[2]), body.length - 1);
      return new Response(body.slice(a, b + 1), { status: 206, headers: { ...headers, 'content-range': `bytes ${a}-${b}/${body.length}`, 'content-length': String(b - a + 1) } });
    }
    return new Response(body.slice(), { status: 200, headers: { ...headers, 'content-length': String(body.length) } });
  };
}

async function streamAll(model: ReturnType<typeof urlModel>) {
  const ck = await openCheckpoint(model);
  let bytes = 0;
  await ck.stream(null, (_, t) => { bytes += t.data.byteLength; });
  await ck.close();
  return bytes;
}

describe('weight downloads bypass the HTTP cache', () => {
  it("sends every weight-file request (probe, full GET, ranges, HEAD revalidation) with cache: 'no-store'", async () => {
    const log: { path: string; init: RequestInit }[] = [];
    const cache = memoryWeightCache();
    const opts = { fetch: server(log), cache, probeBytes: 1024 };
    expect(await streamAll(urlModel('http://test.invalid/m/', opts))).toBeGreaterThan(0);
    // A second load from the weight cache asks upstream whether the file changed (HEAD, by ETag).
    expect(await streamAll(urlModel('http://test.invalid/m/', opts))).toBeGreaterThan(0);
    const weights = log.filter((l) => l.path === 'model.safetensors');
    expect(weights.some((l) => (l.init.headers as Record<string, string> | undefined)?.Range)).toBe(true);
    expect(weights.some((l) => l.init.method === 'HEAD')).toBe(true);
    expect(weights.filter((l) => l.init.cache !== 'no-store').map((l) => `${l.init.method ?? 'GET'} ${JSON.stringify(l.init.headers ?? {})}`)).toEqual([]);
  });
});
