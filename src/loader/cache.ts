/**
 * Weight cache: downloaded model files kept by URL so a second load does not download again.
 * In the browser this is the Cache API (persistent, disk-backed: a cached file is read back through
 * Blob.slice without loading it whole into memory). Entries are written only when complete: a
 * download that fails, is aborted or ends short stores nothing. Each entry keeps the upstream file's
 * validators (ETag, Last-Modified) so a later load can tell whether upstream changed (loader/source.ts).
 */
import { FormatError, QuotaExceededError, WebMoeError } from '../errors';

export interface WeightCacheEntry {
  url: string;
  bytes: number;
}

/** What identifies one version of an upstream file (HTTP validators). */
export interface FileValidators {
  etag?: string;
  lastModified?: string;
}

export interface WeightCache {
  /** The complete cached file, or null. */
  match(url: string): Promise<Blob | null>;
  /** The validators stored with the cached file (null: not cached or stored without any). */
  validators(url: string): Promise<FileValidators | null>;
  /**
   * Stores a file; a stream body must deliver exactly `bytes` bytes or nothing is stored. A full storage
   * quota rejects with QuotaExceededError (QUOTA_EXCEEDED, naming the bytes needed and available).
   */
  put(url: string, body: Uint8Array | ReadableStream<Uint8Array>, bytes?: number, validators?: FileValidators): Promise<void>;
  list(): Promise<WeightCacheEntry[]>;
  delete(url: string): Promise<boolean>;
  clear(): Promise<void>;
}

const BYTES_HEADER = 'x-webmoe-bytes';
const ETAG_HEADER = 'x-webmoe-etag';
const LAST_MODIFIED_HEADER = 'x-webmoe-last-modified';

/** The part of StorageManager the cache uses (navigator.storage; injectable for tests). */
export type StorageLike = Pick<StorageManager, 'estimate'> & Partial<Pick<StorageManager, 'persist' | 'persisted'>>;

const defaultStorage = (): StorageLike | null => (globalThis as { navigator?: { storage?: StorageLike } }).navigator?.storage ?? null;

/** A Cache API / IndexedDB quota failure (DOMException 'QuotaExceededError', or Chrome's message for it). */
export function isQuotaError(e: unknown): boolean {
  if (e instanceof QuotaExceededError) return true;
  const err = e as { name?: unknown; message?: unknown } | null;
  return err?.name === 'QuotaExceededError' || (typeof err?.message === 'string' && /quota/i.test(err.message));
}

/** Bytes the origin may still store (quota − usage), or null when the browser does not say. */
export async function availableStorageBytes(storage: StorageLike | null = defaultStorage()): Promise<number | null> {
  try {
    const e = await storage?.estimate();
    if (!e || typeof e.quota !== 'number') return null;
    return Math.max(0, e.quota - (e.usage ?? 0));
  } catch {
    return null;
  }
}

export interface PersistResult {
  /** Whether the browser keeps this origin's storage under storage pressure. */
  persisted: boolean;
  /** False when the platform has no navigator.storage.persist. */
  supported: boolean;
}

const persistRequests = new WeakMap<object, Promise<PersistResult>>();

/**
 * Asks once per StorageManager (once per page or worker) that the origin's storage be persistent, so a
 * cached model is not evicted when the disk fills; later calls return the first answer.
 */
export function requestPersistentStorage(storage: StorageLike | null = defaultStorage()): Promise<PersistResult> {
  if (!storage?.persist) return Promise.resolve({ persisted: false, supported: false });
  let p = persistRequests.get(storage);
  if (!p) {
    p = (async () => {
      try {
        if (await storage.persisted?.()) return { persisted: true, supported: true };
        return { persisted: await storage.persist!(), supported: true };
      } catch {
        return { persisted: false, supported: true };
      }
    })();
    persistRequests.set(storage, p);
  }
  return p;
}

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

/** Cache API weight cache (browser, or any CacheStorage / StorageManager implementation passed in). */
export function browserWeightCache(opts: { name?: string; caches?: CacheStorage; storage?: StorageLike | null } = {}): WeightCache {
  const name = opts.name ?? 'webmoe-weights';
  const storageManager = opts.storage === undefined ? defaultStorage() : opts.storage;
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
    async validators(url) {
      const res = await (await open()).match(url);
      if (!res) return null;
      res.body?.cancel().catch(() => {});
      const etag = res.headers.get(ETAG_HEADER) ?? undefined, lastModified = res.headers.get(LAST_MODIFIED_HEADER) ?? undefined;
      return etag === undefined && lastModified === undefined ? null : { etag, lastModified };
    },
    async put(url, body, bytes, validators) {
      const size = bytes ?? (body instanceof Uint8Array ? body.length : undefined);
      if (size === undefined) throw new FormatError(`${url}: cache put of a stream needs its length`);
      const payload: BodyInit = body instanceof Uint8Array ? new Blob([body as Uint8Array<ArrayBuffer>]) : exactLength(body, size, url);
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'content-length': String(size), [BYTES_HEADER]: String(size) };
      if (validators?.etag) headers[ETAG_HEADER] = validators.etag;
      if (validators?.lastModified) headers[LAST_MODIFIED_HEADER] = validators.lastModified;
      try {
        await (await open()).put(url, new Response(payload, { headers }));
      } catch (e) {
        if (e instanceof WebMoeError) throw e;
        if (isQuotaError(e)) throw new QuotaExceededError(url, size, await availableStorageBytes(storageManager));
        throw e;
      }
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
  const versions = new Map<string, FileValidators>();
  return {
    entries,
    async match(url) {
      const b = entries.get(url);
      return b ? new Blob([b as Uint8Array<ArrayBuffer>]) : null;
    },
    async validators(url) {
      return entries.has(url) ? versions.get(url) ?? null : null;
    },
    async put(url, body, bytes, validators) {
      const buf = body instanceof Uint8Array ? body.slice() : bytes === undefined ? null : new Uint8Array(await new Response(exactLength(body, bytes, url)).arrayBuffer());
      if (!buf) throw new FormatError(`${url}: cache put of a stream needs its length`);
      entries.set(url, buf);
      if (validators && (validators.etag || validators.lastModified)) versions.set(url, { ...validators });
      else versions.delete(url);
    },
    async list() {
      return [...entries].map(([url, b]) => ({ url, bytes: b.length }));
    },
    async delete(url) {
      versions.delete(url);
      return entries.delete(url);
    },
    async clear() {
      entries.clear();
      versions.clear();
    },
  };
}

/** The browser cache when the Cache API exists (browser page or worker), otherwise null. */
export function defaultWeightCache(): WeightCache | null {
  return typeof (globalThis as { caches?: unknown }).caches === 'object' ? browserWeightCache() : null;
}
