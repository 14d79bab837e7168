/**
 * Weight cache: downloaded model files kept by URL so a second load does not download again.
 * In the browser this is the Cache API (persistent, disk-backed: a cached file is read back through
 * Blob.slice without loading it whole into memory). Entries are written only when complete: a
 * download that fails, is aborted or ends short stores nothing.
 */
import { FormatError } from '../errors';

export interface WeightCacheEntry {
  url: string;
  bytes: number;
}

export interface WeightCache {
  /** The complete cached file, or null. */
  match(url: string): Promise<Blob | null>;
  /** Stores a file; a stream body must deliver exactly `bytes` bytes or nothing is stored. */
  put(url: string, body: Uint8Array | ReadableStream<Uint8Array>, bytes?: number): Promise<void>;
  list(): Promise<WeightCacheEntry[]>;
  delete(url: string): Promise<boolean>;
  clear(): Promise<void>;
}

const BYTES_HEADER = 'x-webmoe-bytes';

/** Passes a stream through, erroring it if it does not carry exactly `bytes` bytes. */
function exactLength(body: ReadableStream<Uint8Array>, bytes: number, url: string): ReadableStream<Uint8Array> {
  let n = 0;
  return body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        n += chunk.length;
        if (n > bytes) ctl.error(new FormatError(`${url}: download longer than ${bytes} bytes`));
        else ctl.enqueue(chunk);
      },
      flush(ctl) {
        if (n !== bytes) ctl.error(new FormatError(`${url}: download ended after ${n} of ${bytes} bytes`));
      },
    }),
  );
}

/** Cache API weight cache (browser, or any CacheStorage implementation passed in). */
export function browserWeightCache(opts: { name?: string; caches?: CacheStorage } = {}): WeightCache {
  const name = opts.name ?? 'webmoe-weights';
  const storage = () => {
    const c = opts.caches ?? (globalThis as { caches?: CacheStorage }).caches;
    if (!c) throw new FormatError('The Cache API is not available here');
    return c;
  };
  const open = () => storage().open(name);
  return {
    async match(url) {
      const res = await (await open()).match(url);
      if (!res) return null;
      const blob = await res.blob();
      const want = res.headers.get(BYTES_HEADER);
      if (want !== null && Number(want) !== blob.size) {
        await (await open()).delete(url);
        return null;
      }
      return blob;
    },
    async put(url, body, bytes) {
      const size = bytes ?? (body instanceof Uint8Array ? body.length : undefined);
      if (size === undefined) throw new FormatError(`${url}: cache put of a stream needs its length`);
      const payload: BodyInit = body instanceof Uint8Array ? new Blob([body as Uint8Array<ArrayBuffer>]) : exactLength(body, size, url);
      const res = new Response(payload, { headers: { 'content-type': 'application/octet-stream', 'content-length': String(size), [BYTES_HEADER]: String(size) } });
      await (await open()).put(url, res);
    },
    async list() {
      const c = await open();
      const out: WeightCacheEntry[] = [];
      for (const req of await c.keys()) {
        const res = await c.match(req);
        out.push({ url: req.url, bytes: Number(res?.headers.get(BYTES_HEADER) ?? res?.headers.get('content-length') ?? 0) });
      }
      return out;
    },
    async delete(url) {
      return (await open()).delete(url);
    },
    async clear() {
      await storage().delete(name);
    },
  };
}

/** In-memory cache (Node, tests): same contract as the browser cache. */
export function memoryWeightCache(): WeightCache & { readonly entries: Map<string, Uint8Array> } {
  const entries = new Map<string, Uint8Array>();
  return {
    entries,
    async match(url) {
      const b = entries.get(url);
      return b ? new Blob([b as Uint8Array<ArrayBuffer>]) : null;
    },
    async put(url, body, bytes) {
      if (body instanceof Uint8Array) {
        entries.set(url, body.slice());
        return;
      }
      if (bytes === undefined) throw new FormatError(`${url}: cache put of a stream needs its length`);
      const buf = new Uint8Array(await new Response(exactLength(body, bytes, url)).arrayBuffer());
      entries.set(url, buf);
    },
    async list() {
      return [...entries].map(([url, b]) => ({ url, bytes: b.length }));
    },
    async delete(url) {
      return entries.delete(url);
    },
    async clear() {
      entries.clear();
    },
  };
}

/** The browser cache when the Cache API exists (browser page or worker), otherwise null. */
export function defaultWeightCache(): WeightCache | null {
  return typeof (globalThis as { caches?: unknown }).caches === 'object' ? browserWeightCache() : null;
}
