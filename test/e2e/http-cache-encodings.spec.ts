import { test, expect, type Page } from '@playwright/test';
import { createServer, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

// The old "all-zero logits" failure (issue 21), reproduced deterministically with a test server that
// answers the way `vite preview` did: a weak ETag on every answer, 304 to a matching If-None-Match,
// and a gzip body (Content-Encoding: gzip, no Content-Length) whenever the request accepts gzip, 206
// answers included. Chromium asks for Range requests with Accept-Encoding: identity but revalidates
// and completes cache entries with gzip accepted, so its HTTP cache holds one entry made of identity
// and gzip pieces under one validator.
//
// 1. The weight loader's request sequence with the HTTP cache in play (probe Range 0–1 MiB, full GET,
//    Range reads), sent by hand: on the first pass in a fresh browser context the full GET answers
//    200 with only the first MiB (Chromium served the cached probe and appended the gzip 206 it asked
//    for, as a short body without an error). Deterministic in this setup (every run so far); asserted,
//    so a Chromium that stops corrupting shows up here rather than silently weakening the test.
// 2. The same sequence with cache: 'no-store' gets every byte right.
// 3. The runtime's own loader (src/loader/source.ts urlSource with the Cache API weight cache, bundled
//    with esbuild) reading the same file the way a model load does: every read equals the file, and
//    every request it sent bypassed the HTTP cache (Chromium sends no-store fetches with
//    Cache-Control: no-cache and no validators). With cache: 'no-store' taken out of source.ts this
//    test fails: the reads still return the right bytes (the loader sees the short full body and reads
//    on by Range), but the weight cache is never filled (the warm source reads 'sequential', not
//    'cached'), and the requests carry the HTTP cache's validators.
// Not reproduced here: the original's 206 answers with the right Content-Range but wrong bytes (seen
// after the benchmark page against vite preview, timing-dependent); this server's sequence gives the
// short body deterministically, which is the part the loader's requests can be checked against.
const SIZE = 3 << 20;
const MIB = 1 << 20;
const ETAG = 'W/"3145728-1700000000000"';

// Compressible but position-dependent bytes: a wrong slice never matches.
const data = new Uint8Array(SIZE);
{
  let s = 1;
  for (let i = 0; i < SIZE; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; data[i] = i % 64 < 48 ? (i >> 6) & 0xff : s >>> 24; }
}
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

interface Logged { path: string; range: string; acceptEncoding: string; cacheControl: string; validators: boolean; status: number; gzip: boolean }
let server: Server;
let origin = '';
let loaderJs = '';
const log: Logged[] = [];

test.beforeAll(async () => {
  const bundle = await build({
    stdin: { contents: "export { urlSource } from './src/loader/source'; export { browserWeightCache } from './src/loader/cache';", resolveDir: process.cwd(), loader: 'ts' },
    bundle: true, format: 'esm', write: false, platform: 'browser', logLevel: 'silent',
  });
  loaderJs = bundle.outputFiles[0].text;
  server = createServer((req, res) => {
    const path = req.url ?? '/';
    if (path === '/') { res.setHeader('Content-Type', 'text/html'); res.end('<!doctype html><title>cache test</title>'); return; }
    if (path === '/loader.js') { res.setHeader('Content-Type', 'text/javascript'); res.end(loaderJs); return; }
    if (!path.startsWith('/w.bin')) { res.statusCode = 404; res.end(); return; }
    const entry: Logged = {
      path, range: req.headers.range ?? '', acceptEncoding: String(req.headers['accept-encoding'] ?? ''), cacheControl: String(req.headers['cache-control'] ?? ''),
      validators: !!(req.headers['if-none-match'] || req.headers['if-range'] || req.headers['if-modified-since']), status: 200, gzip: false,
    };
    log.push(entry);
    res.setHeader('ETag', ETAG);
    res.setHeader('Last-Modified', new Date(1_700_000_000_000).toUTCString());
    res.setHeader('Accept-Ranges', 'bytes');
    res.setHeader('Content-Type', 'application/octet-stream');
    res.setHeader('Vary', 'Accept-Encoding');
    if (req.headers['if-none-match'] === ETAG) { res.statusCode = entry.status = 304; res.end(); return; }
    let body: Uint8Array = data;
    const m = /^bytes=(\d+)-(\d*)$/.exec(entry.range);
    if (m) {
      const a = Number(m[1]), b = m[2] ? Math.min(Number(m[2]), SIZE - 1) : SIZE - 1;
      body = data.subarray(a, b + 1);
      res.statusCode = entry.status = 206;
      res.setHeader('Content-Range', `bytes ${a}-${b}/${SIZE}`);
    }
    if (/\bgzip\b/.test(entry.acceptEncoding)) { entry.gzip = true; res.setHeader('Content-Encoding', 'gzip'); body = gzipSync(body); }
    else res.setHeader('Content-Length', body.length);
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  origin = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
});

test.afterAll(async () => { await new Promise((r) => server?.close(r)); });

/** The loader's sequence by hand: probe Range, full GET, two Range reads; SHA-256 and length of each body. */
async function sequenceByHand(page: Page, path: string, noStore: boolean) {
  return page.evaluate(async ({ path, noStore, MIB }) => {
    const hex = async (b: Uint8Array) => [...new Uint8Array(await crypto.subtle.digest('SHA-256', b as Uint8Array<ArrayBuffer>))].map((x) => x.toString(16).padStart(2, '0')).join('');
    const get = async (range?: string) => {
      const res = await fetch(path, { ...(noStore ? { cache: 'no-store' as RequestCache } : {}), headers: range ? { Range: range } : {} });
      const b = new Uint8Array(await res.arrayBuffer());
      return { status: res.status, length: b.length, sha: await hex(b) };
    };
    return {
      probe: await get(`bytes=0-${MIB - 1}`),
      full: await get(),
      range1: await get(`bytes=${MIB}-${2 * MIB - 1}`),
      range2: await get(`bytes=${2 * MIB}-${3 * MIB - 1}`),
    };
  }, { path, noStore, MIB });
}

const want = () => ({
  probe: { status: 206, length: MIB, sha: sha(data.subarray(0, MIB)) },
  full: { status: 200, length: SIZE, sha: sha(data) },
  range1: { status: 206, length: MIB, sha: sha(data.subarray(MIB, 2 * MIB)) },
  range2: { status: 206, length: MIB, sha: sha(data.subarray(2 * MIB)) },
});

test('the loader\'s probe / full GET / Range sequence through the HTTP cache gets a short body from a gzip-mixing server (the old failure)', async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${origin}/`);
  log.length = 0;
  const got = await sequenceByHand(page, '/w.bin?http-cache', false);
  const full = got.full;
  // The full GET: status 200, no error, but only the first MiB (the cached probe) and not the file.
  expect(full.status).toBe(200);
  expect(full.length, `full GET body length (server log: ${JSON.stringify(log)})`).toBe(MIB);
  expect(full.sha).not.toBe(sha(data));
  // How the cache got there: it revalidated the probe with gzip accepted (304), then asked for the rest
  // of the file with gzip accepted and got a gzip 206.
  expect(log.some((l) => l.range === `bytes=${MIB}-${SIZE - 1}` && l.gzip && l.status === 206), JSON.stringify(log)).toBe(true);
  await context.close();
});

test('the same sequence with cache: no-store gets every byte right', async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${origin}/`);
  log.length = 0;
  expect(await sequenceByHand(page, '/w.bin?no-store', true)).toEqual(want());
  // Twice in one context: nothing was cached that a second pass could read.
  expect(await sequenceByHand(page, '/w.bin?no-store', true)).toEqual(want());
  expect(log.filter((l) => l.cacheControl !== 'no-cache' || l.validators)).toEqual([]);
  await context.close();
});

test('the runtime\'s loader (urlSource + the Cache API weight cache) reads the file intact from that server', async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${origin}/`);
  log.length = 0;
  const got = await page.evaluate(async ({ MIB, SIZE }) => {
    const { urlSource, browserWeightCache } = await import('/loader.js' as string);
    const hex = async (b: Uint8Array) => [...new Uint8Array(await crypto.subtle.digest('SHA-256', b as Uint8Array<ArrayBuffer>))].map((x) => x.toString(16).padStart(2, '0')).join('');
    const out: Record<string, string | number> = {};
    // A cold load: the probe (the header), reads past it (the full GET filling the weight cache), close().
    const cache = browserWeightCache({ name: 'http-cache-encodings-test' });
    const cold = urlSource('/w.bin?runtime', { cache });
    out.size = await cold.size();
    out.header = await hex(await cold.read(0, 8));
    out.cold1 = await hex(await cold.read(MIB, MIB));
    out.cold2 = await hex(await cold.read(2 * MIB, MIB));
    out.cold0 = await hex(await cold.read(0, MIB));
    await cold.close?.();
    await cold.cacheWrite;
    // Without a cache: Range reads only.
    const ranged = urlSource('/w.bin?runtime', { cache: false });
    out.range1 = await hex(await ranged.read(MIB, MIB));
    out.range2 = await hex(await ranged.read(2 * MIB, SIZE - 2 * MIB));
    // A warm load: from the weight cache (one HEAD revalidation).
    const warm = urlSource('/w.bin?runtime', { cache });
    out.warm = await hex(await warm.read(0, SIZE));
    out.warmMode = warm.mode;
    await warm.close?.();
    return out;
  }, { MIB, SIZE });
  expect(got).toEqual({
    size: SIZE,
    header: sha(data.subarray(0, 8)),
    cold1: sha(data.subarray(MIB, 2 * MIB)), cold2: sha(data.subarray(2 * MIB)), cold0: sha(data.subarray(0, MIB)),
    range1: sha(data.subarray(MIB, 2 * MIB)), range2: sha(data.subarray(2 * MIB)),
    warm: sha(data), warmMode: 'cached',
  });
  // It went through the mixing server: the full GET came gzip-encoded; and every request bypassed the HTTP cache.
  expect(log.some((l) => l.gzip && l.status === 200), JSON.stringify(log)).toBe(true);
  expect(log.filter((l) => l.cacheControl !== 'no-cache' || l.validators), JSON.stringify(log)).toEqual([]);
  await context.close();
});
