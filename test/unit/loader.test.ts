import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, FormatError, LimitExceededError, ShapeError, WebMoeError } from '../../src/errors';
import { parseSafetensors, toFloat32, writeSafetensors, type TensorToWrite } from '../../src/formats/safetensors';
import { browserWeightCache, memoryWeightCache, type WeightCache } from '../../src/loader/cache';
import { openCheckpoint, type Checkpoint, type LoadProgress } from '../../src/model/checkpoint';
import { memoryModel, urlModel, fileListModel, type ModelSource } from '../../src/loader/model-source';
import { directoryModel } from '../../src/loader/node-source';
import { urlSource } from '../../src/loader/source';
import { loadTokenizer } from '../../src/loader/tokenizer-file';
import { parseConfig } from '../../src/model/config';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/util/half';
import {
  FIXTURE_DIR, SMALL_MERGES, TOKENIZER_CONFIG, convertFixture, countingModel, fixtureConfigText, fixtureFile, fixtureTensors,
  makeTokenizerJson, quantiseFp8, shard,
} from './loader-helpers';

const fixtureModelFiles = (): Record<string, Uint8Array | string> => ({
  'config.json': fixtureConfigText(),
  'model.safetensors': fixtureFile('model.safetensors'),
  'tokenizer.json': JSON.stringify(makeTokenizerJson()),
  'tokenizer_config.json': JSON.stringify(TOKENIZER_CONFIG),
});

/** Streams everything; returns name → bytes (copied) and the progress events. */
async function streamAll(ck: Checkpoint, names: string[] | null = null, opts: { signal?: AbortSignal; onTensor?: (n: string) => void } = {}) {
  const got = new Map<string, Uint8Array>();
  const events: LoadProgress[] = [];
  await ck.stream(names, (n, t) => { got.set(n, t.data.slice()); opts.onTensor?.(n); }, { onProgress: (p) => events.push(p), signal: opts.signal });
  return { got, events };
}

function expectMonotonic(events: LoadProgress[]) {
  expect(events.length).toBeGreaterThan(1);
  for (let i = 1; i < events.length; i++) {
    expect(events[i].bytesLoaded).toBeGreaterThanOrEqual(events[i - 1].bytesLoaded);
    expect(events[i].tensorsLoaded).toBeGreaterThanOrEqual(events[i - 1].tensorsLoaded);
    expect(events[i].bytesLoaded).toBeLessThanOrEqual(events[i].bytesTotal);
  }
  const last = events[events.length - 1];
  expect(last.phase).toBe('done');
  expect(last.bytesLoaded).toBe(last.bytesTotal);
  expect(last.tensorsLoaded).toBe(last.tensorsTotal);
}

async function rejectsWith<T extends Error>(p: Promise<unknown>, cls: new (...a: any[]) => T, ...fragments: string[]): Promise<T> {
  let err: unknown = null;
  try { await p; } catch (e) { err = e; }
  expect(err, `expected ${cls.name}`).toBeInstanceOf(cls);
  for (const f of fragments) expect((err as Error).message).toContain(f);
  return err as T;
}

describe('openCheckpoint on the fixture', () => {
  it('directory model: tensor table, config, tokenizer; stream delivers every tensor byte-exact, each byte read once', async () => {
    const whole = parseSafetensors(fixtureFile('model.safetensors'));
    const src = countingModel(directoryModel(new URL('.', FIXTURE_DIR).pathname));
    const ck = await openCheckpoint(src);
    expect(ck.config.hiddenSize).toBe(64);
    expect(ck.tensors.size).toBe(whole.header.tensors.size);
    expect(ck.tokenizer).toBeNull(); // the fixture has no tokenizer.json
    const { got, events } = await streamAll(ck);
    expectMonotonic(events);
    expect(got.size).toBe(whole.header.tensors.size);
    for (const [name, bytes] of got) expect(Buffer.compare(bytes, whole.tensor(name).data), name).toBe(0);
    // header (8 + N) + every tensor once = the file size exactly.
    expect(src.bytesRead.get('model.safetensors')).toBe(fixtureFile('model.safetensors').length);
    expect(ck.nonFinite).toEqual([]);
    await ck.close();
  });

  it('memory model with tokenizer files: tokenizer built and usable, readF32, subset streaming in file order', async () => {
    const ck = await openCheckpoint(memoryModel(fixtureModelFiles()));
    expect(ck.tokenizer).not.toBeNull();
    const ids = ck.tokenizer!.encode('Hi 42').ids;
    expect(ck.tokenizer!.decode(ids)).toBe('Hi 42');
    expect(ck.tokenizerConfig).toEqual(TOKENIZER_CONFIG);
    const whole = parseSafetensors(fixtureFile('model.safetensors'));
    const f = await ck.readF32('model.layers.1.mlp.gate.e_score_correction_bias');
    expect(Array.from(f)).toEqual(Array.from(toFloat32('F32', whole.tensor('model.layers.1.mlp.gate.e_score_correction_bias').data)));
    const want = ['model.norm.weight', 'model.layers.2.mlp.experts.3.up_proj.weight', 'model.embed_tokens.weight'];
    const order: string[] = [];
    await ck.stream(want, (n) => { order.push(n); });
    const fileOrder = [...whole.header.tensors.keys()].filter((n) => want.includes(n));
    expect(order).toEqual(fileOrder);
    await rejectsWith(ck.stream(['nope'], () => {}), WebMoeError, 'nope');
  });

  it('reports what is missing: config.json, weights, and a config that contradicts the tensors', async () => {
    const files = fixtureModelFiles();
    const { 'config.json': _c, ...noConfig } = files;
    expect((await rejectsWith(openCheckpoint(memoryModel(noConfig)), WebMoeError, 'config.json')).code).toBe('NOT_FOUND');
    const { 'model.safetensors': _m, ...noWeights } = files;
    expect((await rejectsWith(openCheckpoint(memoryModel(noWeights)), WebMoeError, 'model.safetensors')).code).toBe('NOT_FOUND');
    const cfg = JSON.parse(fixtureConfigText());
    await rejectsWith(openCheckpoint(memoryModel({ ...files, 'config.json': JSON.stringify({ ...cfg, kv_lora_rank: 16 }) })), ShapeError, 'kv_a_proj_with_mqa', 'kv_lora_rank');
    await rejectsWith(openCheckpoint(memoryModel({ ...files, 'config.json': '{"model_type": "deepseek_v3",' })), FormatError, 'config.json');
    await rejectsWith(openCheckpoint(memoryModel({ ...files, 'tokenizer.json': '{}' })), FormatError, 'tokenizer.json');
    await rejectsWith(openCheckpoint(memoryModel({ ...files, 'tokenizer.json': JSON.stringify(makeTokenizerJson({ nBytes: 256 })) })), FormatError, 'vocab');
  });

  it('NaN/Inf in weights: loaded, but reported with counts', async () => {
    const tensors = convertFixture('F32');
    const w = new Float32Array(tensors['model.layers.0.mlp.up_proj.weight'].data as Float32Array);
    w[3] = NaN; w[10] = Infinity; w[11] = -Infinity;
    tensors['model.layers.0.mlp.up_proj.weight'] = { ...tensors['model.layers.0.mlp.up_proj.weight'], data: w };
    const ck = await openCheckpoint(memoryModel({ ...fixtureModelFiles(), 'model.safetensors': writeSafetensors(tensors) }));
    const { got } = await streamAll(ck);
    expect(got.size).toBe(ck.tensors.size);
    expect(ck.nonFinite).toEqual([{ name: 'model.layers.0.mlp.up_proj.weight', count: 3 }]);
  });
});

describe('shards, dtypes, overlay', () => {
  it('two shards + index.json: same tensors as the single file, streamed shard by shard', async () => {
    const tensors = convertFixture('F32');
    const files = { ...fixtureModelFiles(), ...shard(tensors, 2) };
    delete files['model.safetensors'];
    const src = countingModel(memoryModel(files));
    const ck = await openCheckpoint(src);
    expect(ck.files).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    const { got, events } = await streamAll(ck);
    expectMonotonic(events);
    for (const [name, t] of Object.entries(tensors)) expect(Buffer.compare(got.get(name)!, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)), name).toBe(0);
    for (const f of ck.files) expect(src.bytesRead.get(f)).toBe((files[f] as Uint8Array).length);
    // Index problems.
    const index = JSON.parse(files['model.safetensors.index.json'] as string);
    const moved = { ...index, weight_map: { ...index.weight_map, 'model.norm.weight': 'model-00001-of-00002.safetensors' } };
    await rejectsWith(openCheckpoint(memoryModel({ ...files, 'model.safetensors.index.json': JSON.stringify(moved) })), FormatError, 'model.norm.weight');
    const { 'model-00002-of-00002.safetensors': _s, ...missing } = files;
    await rejectsWith(openCheckpoint(memoryModel(missing)), WebMoeError, 'model-00002-of-00002.safetensors');
    const evil = { ...index, weight_map: { ...index.weight_map, 'model.norm.weight': '../../etc/passwd' } };
    await rejectsWith(openCheckpoint(memoryModel({ ...files, 'model.safetensors.index.json': JSON.stringify(evil) })), FormatError, 'file name');
    // A tensor present in both shards.
    const dup = { ...files, 'model-00002-of-00002.safetensors': writeSafetensors({ ...Object.fromEntries(Object.entries(tensors).slice(45)), 'model.embed_tokens.weight': tensors['model.embed_tokens.weight'] }) };
    await rejectsWith(openCheckpoint(memoryModel(dup)), FormatError, 'model.embed_tokens.weight');
  });

  it('BF16 and F16 checkpoints: readF32 and streamed bytes are the rounded fixture values', async () => {
    const orig = new Map(fixtureTensors().map((t) => [t.name, t.f32]));
    for (const dt of ['BF16', 'F16'] as const) {
      const ck = await openCheckpoint(memoryModel({ ...fixtureModelFiles(), 'model.safetensors': writeSafetensors(convertFixture(dt)) }));
      for (const name of ['model.embed_tokens.weight', 'model.layers.1.self_attn.kv_b_proj.weight', 'model.layers.2.mlp.gate.e_score_correction_bias']) {
        const f = await ck.readF32(name);
        const o = orig.get(name)!;
        for (let i = 0; i < o.length; i++) expect(f[i]).toBe(dt === 'BF16' ? bf16ToF32(f32ToBf16(o[i])) : f16ToF32(f32ToF16(o[i])));
      }
      const { got } = await streamAll(ck, ['model.norm.weight']);
      expect(got.get('model.norm.weight')!.length).toBe(64 * 2);
    }
  });

  it('FP8 e4m3 checkpoint with ragged block scales: validated, readF32 dequantises with weight_scale_inv', async () => {
    const block: [number, number] = [16, 16];
    const cfg = { ...JSON.parse(fixtureConfigText()), quantization_config: { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: block } };
    const tensors = convertFixture('FP8', block);
    const files = { ...fixtureModelFiles(), 'config.json': JSON.stringify(cfg), 'model.safetensors': writeSafetensors(tensors) };
    const ck = await openCheckpoint(memoryModel(files));
    const orig = new Map(fixtureTensors().map((t) => [t.name, t]));
    // kv_a_proj_with_mqa is [40, 64]: 40 rows = 2 full blocks + a ragged one.
    for (const name of ['model.layers.0.self_attn.kv_a_proj_with_mqa.weight', 'model.layers.2.mlp.experts.7.down_proj.weight']) {
      const t = orig.get(name)!;
      const q = quantiseFp8(t.f32, t.shape as [number, number], block);
      const f = await ck.readF32(name);
      const cols = t.shape[1];
      let maxRel = 0;
      for (let i = 0; i < t.shape[0]; i++) for (let j = 0; j < cols; j++) {
        expect(f[i * cols + j]).toBe(q.dequant(i, j));
        maxRel = Math.max(maxRel, Math.abs(f[i * cols + j] - t.f32[i * cols + j]) / Math.max(Math.abs(t.f32[i * cols + j]), 1e-3));
      }
      expect(maxRel).toBeLessThan(0.07); // e4m3: 3 mantissa bits → ≤ 1/16 relative rounding error (+ subnormal slack)
    }
    // Without its scale the FP8 weight is rejected before anything is read.
    const noScale = { ...tensors };
    delete noScale['model.layers.0.self_attn.o_proj.weight_scale_inv'];
    await rejectsWith(openCheckpoint(memoryModel({ ...files, 'model.safetensors': writeSafetensors(noScale) })), FormatError, 'o_proj.weight_scale_inv');
  });

  it('overlay: tensors from a second source replace same-named ones; shape mismatch is a ShapeError', async () => {
    const bias = new Float32Array(8).map((_, i) => i * 0.25);
    const overlay = memoryModel({ 'calibrated-bias.safetensors': writeSafetensors({ 'model.layers.1.mlp.gate.e_score_correction_bias': { dtype: 'F32', shape: [8], data: bias } }) });
    const ck = await openCheckpoint(memoryModel(fixtureModelFiles()), { overlay });
    expect(ck.tensors.get('model.layers.1.mlp.gate.e_score_correction_bias')!.file).toBe('overlay:calibrated-bias.safetensors');
    const { got } = await streamAll(ck);
    expect(Array.from(new Float32Array(got.get('model.layers.1.mlp.gate.e_score_correction_bias')!.buffer))).toEqual(Array.from(bias));
    expect(Array.from(await ck.readF32('model.layers.1.mlp.gate.e_score_correction_bias'))).toEqual(Array.from(bias));
    const bad = memoryModel({ 'x.safetensors': writeSafetensors({ 'model.layers.1.mlp.gate.e_score_correction_bias': { dtype: 'F32', shape: [4], data: bias.subarray(0, 4) } }) });
    await rejectsWith(openCheckpoint(memoryModel(fixtureModelFiles()), { overlay: bad }), ShapeError, 'e_score_correction_bias');
  });

  it('fileListModel (picked folder / drag and drop): File objects with relative paths', async () => {
    const files = fixtureModelFiles();
    const list = Object.entries(files).map(([n, d]) => {
      const f = new File([d as BlobPart], n);
      Object.defineProperty(f, 'webkitRelativePath', { value: `tiny/${n}` });
      return f;
    });
    const decoy = new File(['{}'], 'config.json');
    Object.defineProperty(decoy, 'webkitRelativePath', { value: 'tiny/sub/config.json' });
    const ck = await openCheckpoint(fileListModel([decoy, ...list]));
    expect(ck.config.numLayers).toBe(3);
    const { got } = await streamAll(ck);
    expect(got.size).toBe(91);
  });
});

describe('abort', () => {
  it('aborting mid-stream rejects with AbortError, and the checkpoint can be streamed again', async () => {
    const ck = await openCheckpoint(memoryModel(fixtureModelFiles()));
    const ac = new AbortController();
    let n = 0;
    const err = await rejectsWith(ck.stream(null, () => { if (++n === 20) ac.abort(); }, { signal: ac.signal }), AbortError);
    expect(err.code).toBe('ABORTED');
    expect(n).toBe(20); // nothing delivered after the abort
    const { got } = await streamAll(ck);
    expect(got.size).toBe(91);
  });
  it('an already-aborted signal stops openCheckpoint', async () => {
    const ac = new AbortController();
    ac.abort();
    await rejectsWith(openCheckpoint(memoryModel(fixtureModelFiles()), { signal: ac.signal }), AbortError);
  });
});

describe('read ahead and borrowed buffers', () => {
  /** The fixture behind byte sources that copy like a download (fill `into` when given), logging reads and their signals. */
  function downloadLikeModel(files: Record<string, Uint8Array | string>, log: string[], signals: AbortSignal[], delayMs = 0): ModelSource {
    const mem = memoryModel(files);
    return {
      description: 'download-like',
      text: (n) => mem.text(n),
      async open(name) {
        const s = await mem.open(name);
        if (!s) return null;
        return {
          name: s.name,
          size: () => s.size(),
          read: async (o: number, l: number, sig?: AbortSignal, into?: Uint8Array) => {
            log.push(`read ${o}`);
            if (sig) signals.push(sig);
            if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
            if (sig?.aborted) throw new AbortError('aborted');
            const view = await s.read(o, l);
            const out = into && into.length >= l ? into.subarray(0, l) : new Uint8Array(l);
            out.set(view);
            return out;
          },
        };
      },
    };
  }

  it('reads the next chunk while the current one is handed out, reuses two buffers, and counts them', async () => {
    const files = fixtureModelFiles();
    const log: string[] = [];
    const ck = await openCheckpoint(downloadLikeModel(files, log, []), { chunkBytes: 4096, validateTokenizer: false });
    const largest = Math.max(...[...ck.tensors.values()].map((t) => t.end - t.begin));
    const want = (await streamAll(ck)).got; // owned bytes, the reference
    log.length = 0;
    const got = new Map<string, Uint8Array>();
    const buffers = new Set<ArrayBufferLike>();
    const readBuffers = { bytes: 0, peakBytes: 0 };
    let maxSeen = 0;
    await ck.stream(null, (n, t) => {
      log.push(`tensor ${n}`);
      got.set(n, t.data.slice());
      buffers.add(t.data.buffer);
      maxSeen = Math.max(maxSeen, readBuffers.bytes);
    }, { borrow: true, readBuffers });
    expect([...got.keys()]).toEqual([...want.keys()]);
    for (const [n, b] of want) expect(Buffer.compare(got.get(n)!, b), n).toBe(0); // (toEqual on 0.9 MB of bytes is slow)
    // Read ahead: the second chunk is asked for before the first chunk's tensors are handed out, and
    // from then on one read per chunk handed out (one chunk ahead, never more).
    const reads = log.map((e, i) => (e.startsWith('read') ? i : -1)).filter((i) => i >= 0);
    expect(reads.length).toBeGreaterThan(5);
    expect(reads.slice(0, 2)).toEqual([0, 1]);
    for (let r = 2; r < reads.length; r++) expect(log[reads[r] - 1], `before ${log[reads[r]]}`).toMatch(/^tensor/);
    // Two buffers at a time (a third only when a tensor outgrew a free one), counted while alive.
    expect(buffers.size).toBeLessThan(reads.length / 2);
    expect(readBuffers.peakBytes).toBeLessThanOrEqual(2 * Math.max(4096, largest));
    expect(maxSeen).toBeGreaterThan(0);
    expect(readBuffers.bytes).toBe(0);
    await ck.close();
  });

  it('an error in onTensor stops the stream with that error and cancels the read ahead', async () => {
    const log: string[] = [];
    const signals: AbortSignal[] = [];
    const ck = await openCheckpoint(downloadLikeModel(fixtureModelFiles(), log, signals, 2), { chunkBytes: 4096, validateTokenizer: false });
    const readBuffers = { bytes: 0, peakBytes: 0 };
    let n = 0;
    await rejectsWith(ck.stream(null, () => { if (++n === 10) throw new ShapeError('stop here'); }, { borrow: true, readBuffers }), ShapeError, 'stop here');
    expect(n).toBe(10);
    expect(signals[signals.length - 1].aborted).toBe(true); // the read in flight was cancelled
    expect(readBuffers.bytes).toBe(0);
    // The user's abort still surfaces as AbortError, with read ahead in flight.
    const ac = new AbortController();
    let m = 0;
    await rejectsWith(ck.stream(null, () => { if (++m === 7) ac.abort(); }, { borrow: true, signal: ac.signal }), AbortError);
    expect(m).toBe(7);
    await ck.close();
  });
});

// ---- HTTP ----------------------------------------------------------------------------------------

interface ServerOpts { ignoreRange?: boolean; delayMs?: number; extraBytes?: boolean; truncate?: boolean; /** Cut this many full GETs of .safetensors files short. */ cutWeightGets?: number;
  /** Cut this many Range answers (past the probe) of .safetensors files after half their bytes. */ cutRanges?: number;
  /** Drop this many Range answers (past the probe) of .safetensors files right after their headers. */ dropRanges?: number;
  /** Answer this many Range requests (past the probe) of .safetensors files with HTTP 503. */ busyRanges?: number }
interface Logged { path: string; range: string | null; status: number }

function startServer(files: Record<string, Uint8Array | string>, opts: ServerOpts = {}): Promise<{ url: string; log: Logged[]; server: Server; set: (o: ServerOpts) => void }> {
  const log: Logged[] = [];
  let o = opts;
  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname.slice(1));
    const f = files[path];
    const entry: Logged = { path, range: req.headers.range ?? null, status: 0 };
    log.push(entry);
    if (f === undefined) { entry.status = 404; res.writeHead(404).end(); return; }
    const body = typeof f === 'string' ? Buffer.from(f) : Buffer.from(f.buffer, f.byteOffset, f.byteLength);
    const m = req.headers.range ? /^bytes=(\d+)-(\d+)$/.exec(req.headers.range) : null;
    if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
    if (m && !o.ignoreRange) {
      const a = Number(m[1]), b = Math.min(Number(m[2]), body.length - 1);
      if (a >= body.length) { entry.status = 416; res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end(); return; }
      let part = body.subarray(a, b + 1);
      if (o.extraBytes) part = Buffer.concat([part, Buffer.alloc(16)]);
      const weightRange = path.endsWith('.safetensors') && a > 0;
      if (o.busyRanges && weightRange) { o.busyRanges--; entry.status = 503; res.writeHead(503).end(); return; }
      entry.status = 206;
      res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${body.length}`, 'content-length': String(part.length), 'accept-ranges': 'bytes' });
      if (o.dropRanges && weightRange) { o.dropRanges--; res.flushHeaders(); setTimeout(() => res.destroy(), 5); return; }
      if (o.cutRanges && weightRange && part.length > 1) {
        o.cutRanges--;
        res.write(part.subarray(0, part.length >> 1), () => setTimeout(() => res.destroy(), 5));
        return;
      }
      res.end(part);
      return;
    }
    entry.status = 200;
    res.writeHead(200, { 'content-length': String(body.length) });
    if (o.truncate) { res.write(body.subarray(0, body.length >> 1)); res.destroy(); return; }
    if (o.cutWeightGets && path.endsWith('.safetensors')) {
      o.cutWeightGets--;
      res.write(body.subarray(0, body.length >> 1), () => setTimeout(() => res.destroy(), 5));
      return;
    }
    // Send in pieces so a slow consumer / abort can interrupt the transfer.
    for (let i = 0; i < body.length; i += 65536) {
      if (!res.write(body.subarray(i, i + 65536))) await new Promise((r) => res.once('drain', r));
      if (o.delayMs) await new Promise((r) => setTimeout(r, 1));
    }
    res.end();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, log, server, set: (n) => { o = n; } })));
}

/** A minimal CacheStorage over Map<url, Response> (Node has no Cache API) to exercise browserWeightCache. */
function fakeCacheStorage(): CacheStorage {
  const stores = new Map<string, Map<string, { body: Uint8Array; headers: Headers }>>();
  const cache = (store: Map<string, { body: Uint8Array; headers: Headers }>): Cache => ({
    async match(req: RequestInfo | URL) {
      const e = store.get(String(req instanceof Request ? req.url : req));
      return e ? new Response(e.body as BodyInit, { headers: e.headers }) : undefined;
    },
    async put(req: RequestInfo | URL, res: Response) {
      const body = new Uint8Array(await res.arrayBuffer()); // rejects if the stream errors: nothing stored
      store.set(String(req instanceof Request ? req.url : req), { body, headers: res.headers });
    },
    async keys() { return [...store.keys()].map((u) => new Request(u)); },
    async delete(req: RequestInfo | URL) { return store.delete(String(req instanceof Request ? req.url : req)); },
  } as unknown as Cache);
  return {
    async open(name: string) { if (!stores.has(name)) stores.set(name, new Map()); return cache(stores.get(name)!); },
    async delete(name: string) { return stores.delete(name); },
    async has(name: string) { return stores.has(name); },
    async keys() { return [...stores.keys()]; },
    async match() { return undefined; },
  } as CacheStorage;
}

/** A cache whose puts can be awaited (the download fills the cache in the background). */
function trackedCache(inner: WeightCache): WeightCache & { settled(): Promise<void> } {
  const pending: Promise<unknown>[] = [];
  return {
    ...inner,
    put(url, body, bytes) { const p = inner.put(url, body, bytes); pending.push(p.catch(() => {})); return p; },
    async settled() { await Promise.all(pending); },
  };
}

describe('HTTP loading (node:http on 127.0.0.1)', () => {
  let srv: Awaited<ReturnType<typeof startServer>>;
  const files = { ...fixtureModelFiles(), ...shard(convertFixture('BF16'), 2) };
  delete (files as Record<string, unknown>)['model.safetensors'];
  const shardNames = Object.keys(files).filter((f) => f.endsWith('.safetensors'));
  beforeAll(async () => { srv = await startServer(files); });
  afterAll(() => new Promise<void>((r) => srv.server.close(() => r())));
  const expected = parseSafetensors(files[shardNames[0]] as Uint8Array);

  it('Range requests: small probe, then 206 partial reads; bytes identical to the shards', async () => {
    srv.set({});
    srv.log.length = 0;
    const ck = await openCheckpoint(urlModel(srv.url, { cache: false, probeBytes: 4096 }));
    const { got, events } = await streamAll(ck);
    expectMonotonic(events);
    for (const [name] of expected.header.tensors) expect(Buffer.compare(got.get(name)!, expected.tensor(name).data)).toBe(0);
    const weightReqs = srv.log.filter((l) => l.path.endsWith('.safetensors'));
    expect(weightReqs.every((l) => l.range !== null && l.status === 206)).toBe(true);
    expect(weightReqs.length).toBeGreaterThan(2);
    expect(srv.log.find((l) => l.path === 'generation_config.json')?.status).toBe(404); // absent file → null, not an error
  });

  it('a server that ignores Range: one full GET per shard, streamed forward', async () => {
    srv.set({ ignoreRange: true });
    srv.log.length = 0;
    const ck = await openCheckpoint(urlModel(srv.url, { cache: false, probeBytes: 4096 }));
    const { got } = await streamAll(ck);
    for (const [name] of expected.header.tensors) expect(Buffer.compare(got.get(name)!, expected.tensor(name).data)).toBe(0);
    for (const s of shardNames) expect(srv.log.filter((l) => l.path === s).length, s).toBe(1);
    // A backward read after streaming asks again (and still gets the right bytes).
    const f = await ck.readF32('model.embed_tokens.weight');
    expect(f.length).toBe(256 * 64);
  });

  it('weight cache: the second load does not download the weights again; list/delete/clear', async () => {
    srv.set({});
    for (const [inner, probeBytes] of [[memoryWeightCache(), 4096], [browserWeightCache({ caches: fakeCacheStorage() }), 4096], [memoryWeightCache(), undefined]] as const) {
      const cache = trackedCache(inner);
      srv.log.length = 0;
      const ck1 = await openCheckpoint(urlModel(srv.url, { cache, probeBytes }));
      await streamAll(ck1);
      await cache.settled();
      // Per shard: the header probe (a Range request), then one full GET written into the cache as it is read.
      // (With the default 1 MiB probe, the probe is the whole small shard and is cached as is.)
      for (const s of shardNames) {
        expect(srv.log.filter((l) => l.path === s && l.range === null).map((l) => l.status), s).toEqual(probeBytes ? [200] : []);
        expect(srv.log.filter((l) => l.path === s && l.range !== null).length, s).toBe(1);
      }
      const listed = await cache.list();
      expect(listed.map((e) => e.url).sort()).toEqual(shardNames.map((s) => srv.url + s).sort());
      for (const e of listed) expect(e.bytes).toBe((files[e.url.slice(srv.url.length) as keyof typeof files] as Uint8Array).length);
      srv.log.length = 0;
      const ck2 = await openCheckpoint(urlModel(srv.url, { cache, probeBytes }));
      const { got } = await streamAll(ck2);
      for (const [name] of expected.header.tensors) expect(Buffer.compare(got.get(name)!, expected.tensor(name).data)).toBe(0);
      expect(srv.log.filter((l) => l.path.endsWith('.safetensors'))).toEqual([]);
      expect(await cache.delete(srv.url + shardNames[0])).toBe(true);
      expect((await cache.list()).length).toBe(shardNames.length - 1);
      await cache.clear();
      expect(await cache.list()).toEqual([]);
    }
  });

  it('an interrupted download stores nothing in the cache, and fails with a typed error', async () => {
    srv.set({ truncate: true });
    const cache = trackedCache(memoryWeightCache());
    const err = await rejectsWith(openCheckpoint(urlModel(srv.url, { cache })).then(streamAll), WebMoeError);
    expect(['NETWORK', 'TRUNCATED', 'BAD_FORMAT'], err.message).toContain(err.code); // config.json's fetch itself may fail first
    await cache.settled();
    expect(await cache.list()).toEqual([]);
    srv.set({});
  });

  it('a full download that stops short is asked for again (Range reads, or a new full GET) and the load completes; nothing partial is cached', async () => {
    for (const ignoreRange of [false, true]) {
      srv.set({ ignoreRange, cutWeightGets: 1 });
      srv.log.length = 0;
      const cache = trackedCache(memoryWeightCache());
      const ck = await openCheckpoint(urlModel(srv.url, { cache, probeBytes: 4096 }));
      const { got } = await streamAll(ck);
      for (const [name] of expected.header.tensors) expect(Buffer.compare(got.get(name)!, expected.tensor(name).data), name).toBe(0);
      await cache.settled();
      // The cut shard is not in the cache (its download never completed); the other one is when Range works.
      const cut = srv.log.find((l) => l.path.endsWith('.safetensors') && l.status === 200)!.path;
      const listed = (await cache.list()).map((e) => e.url);
      expect(listed).not.toContain(srv.url + cut);
      for (const e of await cache.list()) expect(e.bytes).toBe((files[e.url.slice(srv.url.length) as keyof typeof files] as Uint8Array).length);
      if (!ignoreRange) expect(srv.log.some((l) => l.path === cut && l.status === 206 && l.range !== 'bytes=0-4095')).toBe(true);
    }
    // A server that always drops the connection: a few reconnects, then a typed TRUNCATED error.
    srv.set({ ignoreRange: true, cutWeightGets: 100 });
    srv.log.length = 0;
    const ck = await openCheckpoint(urlModel(srv.url, { cache: false, probeBytes: 4096 }));
    const err = await rejectsWith(streamAll(ck), WebMoeError);
    expect(err.code).toBe('TRUNCATED');
    expect(err.message).toMatch(/after \d+ of \d+ bytes/);
    expect(srv.log.filter((l) => l.path.endsWith('.safetensors') && l.range === null).length).toBeLessThanOrEqual(1 + 1 + 3);
    srv.set({});
  });

  it('Range reads broken in transit resume after the bytes received; 503s are asked again; a hopeless server ends in TRUNCATED', async () => {
    srv.set({ cutRanges: 3, busyRanges: 2 });
    srv.log.length = 0;
    const ck = await openCheckpoint(urlModel(srv.url, { cache: false, probeBytes: 4096, retryDelayMs: 1 }));
    const { got } = await streamAll(ck);
    for (const [name] of expected.header.tensors) expect(Buffer.compare(got.get(name)!, expected.tensor(name).data), name).toBe(0);
    const weights = srv.log.filter((l) => l.path.endsWith('.safetensors'));
    expect(weights.filter((l) => l.status === 503).length).toBe(2);
    // A resumed request starts inside the range the cut one asked for, not at its start.
    const ranges = weights.filter((l) => l.status === 206 && l.range).map((l) => /bytes=(\d+)-(\d+)/.exec(l.range!)!.slice(1).map(Number));
    const resumed = ranges.filter(([a, b]) => ranges.some(([c, d]) => c < a && d === b));
    expect(resumed.length).toBe(3);

    // A connection that keeps breaking but brings bytes each time is followed to the end.
    srv.set({ cutRanges: 1000 });
    const whole = files[shardNames[0]] as Uint8Array;
    const moving = urlSource(srv.url + shardNames[0], { probeBytes: 64, retryDelayMs: 1, rangeRetries: 1 });
    expect(Buffer.compare(await moving.read(100, 4000), whole.subarray(100, 4100))).toBe(0);
    // One that brings nothing gives up after the retries, with a typed error.
    srv.set({ dropRanges: 1000 });
    srv.log.length = 0;
    const src = urlSource(srv.url + shardNames[0], { probeBytes: 64, retryDelayMs: 1, rangeRetries: 2 });
    const err = await rejectsWith(src.read(100, 4000), WebMoeError);
    expect(err.code).toBe('TRUNCATED');
    expect(err.message).toMatch(/2 retries without progress/);
    expect(srv.log.filter((l) => l.range !== 'bytes=0-63').length).toBe(3);
    srv.set({});
  });

  it('every weight request bypasses the HTTP cache (cache: no-store; Chromium corrupted cached range reads, issue 21)', async () => {
    const inits: RequestInit[] = [];
    // The weight files' requests (config and tokenizer are small text files fetched whole).
    const recording: typeof fetch = (input, init) => { if (String(input).endsWith('.safetensors')) inits.push(init ?? {}); return fetch(input, init); };
    const cache = memoryWeightCache();
    const ck = await openCheckpoint(urlModel(srv.url, { fetch: recording, cache, probeBytes: 1024 }));
    await streamAll(ck);
    await ck.close();
    // A second source on the cached copy (a HEAD asks upstream whether it changed, when the server sends validators).
    const again = await openCheckpoint(urlModel(srv.url, { fetch: recording, cache, probeBytes: 1024 }));
    await streamAll(again);
    await again.close();
    expect(inits.length).toBeGreaterThan(2);
    expect(inits.filter((i) => i.cache !== 'no-store').map((i) => `${i.method ?? 'GET'} ${JSON.stringify(i.headers ?? {})}`)).toEqual([]);
  });

  it('a server sending more bytes than asked is cut off with a typed error', async () => {
    srv.set({ extraBytes: true });
    const src = urlSource(srv.url + shardNames[0], { probeBytes: 64 });
    await rejectsWith(src.read(100, 50), WebMoeError);
    srv.set({});
  });

  it('abort during a slow HTTP load rejects with AbortError; the next load works', async () => {
    srv.set({ delayMs: 30 });
    const ac = new AbortController();
    const ck = await openCheckpoint(urlModel(srv.url, { cache: false, probeBytes: 1024 }));
    setTimeout(() => ac.abort(), 60);
    await rejectsWith(streamAll(ck, null, { signal: ac.signal }), AbortError);
    srv.set({});
    const { got } = await streamAll(ck);
    expect(got.size).toBe(91);
  });
});

describe('tokenizer wrapper', () => {
  it('builds a working tokenizer; broken files become FormatError', () => {
    const t = loadTokenizer(makeTokenizerJson({ nBytes: 256, merges: SMALL_MERGES }), TOKENIZER_CONFIG);
    const e = t.encode(' the other');
    expect(e.tokens).toContain('Ġthe');
    expect(t.decode(e.ids)).toBe(' the other');
    for (const bad of [null, [], 'x', {}, { model: {} }, { ...makeTokenizerJson(), model: { type: 'Nope' } }, { ...makeTokenizerJson(), pre_tokenizer: { type: 'Split', pattern: { Regex: '(' }, behavior: 'Isolated' } }]) {
      expect(() => loadTokenizer(bad, TOKENIZER_CONFIG), JSON.stringify(bad)?.slice(0, 80)).toThrow(FormatError);
    }
  });
});
