/**
 * Byte sources: random-access reads of one file, wherever it lives (memory, a Blob/File, a URL with
 * HTTP Range requests, a Node file in node-source.ts). Every read returns exactly `length` bytes or
 * throws a typed error; nothing ever allocates more than the bytes asked for (a hostile server that
 * sends more is cut off).
 */
import { AbortError, FormatError, TruncatedDownloadError, WebMoeError } from '../errors';
import { requestPersistentStorage, type FileValidators, type StorageLike, type WeightCache } from './cache';

/**
 * A message about a load that does not stop it: the weight cache (a stale copy replaced, offline use of
 * the cached copy, persistent storage granted or not, a quota error that left a file uncached) or a
 * service-worker engine that restarted and loads the model again. LoadProgress.notice carries it.
 */
export interface LoadNotice {
  kind: 'cache-replaced' | 'cache-offline' | 'cache-persist' | 'cache-quota' | 'cache-failed' | 'service-worker-reload';
  message: string;
  /** The file it concerns, when one. */
  url?: string;
  /** The typed error behind it (cache-quota: QUOTA_EXCEEDED with the bytes needed and available). */
  code?: string;
  details?: Record<string, unknown>;
}

export interface ByteSource {
  readonly name: string;
  size(): Promise<number>;
  /**
   * Exactly `length` bytes at `offset`; the returned array is owned by the caller (never reused).
   * `into` (at least `length` bytes) lets the caller reuse its own buffer: a source that can fills it and
   * returns a view of it instead of allocating (a Range download, a file read); one that cannot ignores
   * it. Either way the result may alias `into`.
   */
  read(offset: number, length: number, signal?: AbortSignal, into?: Uint8Array): Promise<Uint8Array>;
  /** Reads are views of bytes the source already holds (nothing is allocated or copied per read). */
  readonly views?: boolean;
  /** Releases open handles / streams (optional; reads after close may reopen). */
  close?(): Promise<void> | void;
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new AbortError(abortMessage(signal));
}

function abortMessage(signal: AbortSignal): string {
  const r = signal.reason;
  if (r instanceof Error && r.name !== 'AbortError') return `Aborted: ${r.message}`;
  return 'The operation was aborted';
}

/** Converts a platform abort (DOMException AbortError) into the typed AbortError; other errors pass through. */
export function asTypedAbort(e: unknown, signal?: AbortSignal): unknown {
  if (e instanceof WebMoeError) return e;
  if (signal?.aborted || (e instanceof Error && e.name === 'AbortError')) return new AbortError(signal ? abortMessage(signal) : 'The operation was aborted');
  return e;
}

export function checkRange(name: string, offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new FormatError(`${name}: invalid read [${offset}, +${length})`, { file: name });
  }
  if (offset + length > size) throw new FormatError(`${name}: read [${offset}, ${offset + length}) runs past the end of the ${size}-byte file (truncated?)`, { file: name, size });
}

/** Bytes already in memory. Reads are views, not copies. */
export function bytesSource(name: string, bytes: Uint8Array): ByteSource {
  return {
    name,
    views: true,
    size: async () => bytes.length,
    read: async (offset, length, signal) => {
      throwIfAborted(signal);
      checkRange(name, offset, length, bytes.length);
      return bytes.subarray(offset, offset + length);
    },
  };
}

/** A Blob or File (file picker, drag and drop, a cached Response's blob). */
export function blobSource(file: Blob & { name?: string }, name = file.name ?? 'blob'): ByteSource {
  return {
    name,
    size: async () => file.size,
    read: async (offset, length, signal) => {
      throwIfAborted(signal);
      checkRange(name, offset, length, file.size);
      let buf: ArrayBuffer;
      try {
        buf = await file.slice(offset, offset + length).arrayBuffer();
      } catch (e) {
        throw new WebMoeError('NOT_FOUND', `${name}: could not read the file (${(e as Error).message})`, { file: name });
      }
      throwIfAborted(signal);
      if (buf.byteLength !== length) throw new FormatError(`${name}: read ${buf.byteLength} of ${length} bytes (file changed?)`, { file: name });
      return new Uint8Array(buf);
    },
  };
}

/**
 * Reads a response body into `out` from `start`; returns the end position. A body longer than `out` is
 * an error (never over-allocates); a body that ends or breaks early returns short (`dropped` says why),
 * so the caller can ask for the rest.
 */
async function readBodyInto(res: Response, out: Uint8Array, start: number, name: string, signal?: AbortSignal): Promise<{ end: number; dropped?: string }> {
  if (!res.body) return out.length === start ? { end: start } : { end: start, dropped: 'empty response body' };
  const reader = res.body.getReader();
  let pos = start;
  try {
    for (;;) {
      throwIfAborted(signal);
      const { done, value } = await reader.read();
      if (done) break;
      if (pos + value.length > out.length) throw new WebMoeError('NETWORK', `${name}: server sent more than the ${out.length - start} bytes asked for`, { file: name });
      out.set(value, pos);
      pos += value.length;
    }
  } catch (e) {
    reader.cancel().catch(() => {});
    const t = asTypedAbort(e, signal);
    if (t instanceof WebMoeError) throw t;
    return { end: pos, dropped: `the download failed (${(e as Error)?.message})` };
  }
  return pos === out.length ? { end: pos } : { end: pos, dropped: 'the response ended' };
}

/** `length` bytes to read into: a view of the caller's `into` when it is big enough, else a new array. */
const outBuffer = (length: number, into?: Uint8Array) => (into && into.length >= length ? into.subarray(0, length) : new Uint8Array(length));

/** Reads a response body into exactly `length` bytes; more or fewer is an error (never over-allocates). */
async function readBodyExactly(res: Response, length: number, name: string, signal?: AbortSignal): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  const r = await readBodyInto(res, out, 0, name, signal);
  if (r.dropped) throw new TruncatedDownloadError(name, r.end, length, r.dropped);
  return out;
}

/**
 * Forward-only reader over one streamed response body: read(offset, length) skips to offset and
 * returns the next `length` bytes. Serves the servers that ignore Range (one full GET) and the
 * cache-filling download. Every chunk that arrives (read or skipped) is also handed to `sink`, at the
 * pace of the reads: nothing is buffered beyond the chunk in hand.
 */
class SequentialBody {
  private reader: ReadableStreamDefaultReader<Uint8Array>;
  private pos = 0;
  private pending: Uint8Array | null = null; // unread tail of the last chunk
  private received = 0;
  failed = false;
  /** Set when the connection closed before `total` bytes: the reader may retry elsewhere. */
  endedEarly = false;
  constructor(body: ReadableStream<Uint8Array>, readonly name: string, private total: number, private sink?: CacheSink) {
    this.reader = body.getReader();
  }
  get position(): number { return this.pos; }
  private async next(signal?: AbortSignal): Promise<Uint8Array | null> {
    let r: ReadableStreamReadResult<Uint8Array>;
    try {
      r = await this.reader.read();
    } catch (e) {
      this.fail(e);
      const t = asTypedAbort(e, signal);
      if (t instanceof AbortError) throw t;
      this.endedEarly = true; // the connection broke (e.g. a length mismatch): retryable
      throw t instanceof WebMoeError ? t : new TruncatedDownloadError(this.name, this.received, this.total, `the download failed (${(e as Error).message})`);
    }
    if (r.done) {
      if (this.received < this.total) {
        // A dropped connection, not the end of the file: the cache entry must not be completed.
        this.endedEarly = true;
        this.fail(new Error('connection closed early'));
      } else this.sink?.end();
      return null;
    }
    this.received += r.value.length;
    this.sink?.push(r.value);
    return r.value;
  }
  async read(offset: number, length: number, signal?: AbortSignal, into?: Uint8Array): Promise<Uint8Array> {
    if (offset < this.pos) throw new Error('SequentialBody: backward read');
    const out = outBuffer(length, into);
    let filled = 0;
    while (filled < length || this.pos < offset) {
      if (signal?.aborted) {
        this.cancel(new AbortError());
        throwIfAborted(signal);
      }
      let chunk = this.pending;
      this.pending = null;
      if (!chunk) {
        chunk = await this.next(signal);
        if (!chunk) {
          this.failed = true;
          if (this.endedEarly) throw new TruncatedDownloadError(this.name, this.received, this.total);
          throw new FormatError(`${this.name}: download ended at byte ${this.pos}, before [${offset}, ${offset + length}) (truncated?)`, { file: this.name });
        }
      }
      if (this.pos < offset) {
        const skip = Math.min(offset - this.pos, chunk.length);
        this.pos += skip;
        if (skip < chunk.length) this.pending = chunk.subarray(skip);
        continue;
      }
      const take = Math.min(length - filled, chunk.length);
      out.set(chunk.subarray(0, take), filled);
      filled += take;
      this.pos += take;
      if (take < chunk.length) this.pending = chunk.subarray(take);
    }
    return out;
  }
  /** Reads the rest of the body into the sink (completing the cache entry). */
  async drain(signal?: AbortSignal): Promise<void> {
    this.pending = null;
    while (await this.next(signal)) throwIfAborted(signal);
  }
  private fail(e: unknown): void {
    this.failed = true;
    this.sink?.fail(e);
  }
  cancel(reason?: unknown): void {
    this.fail(reason ?? new AbortError());
    this.reader.cancel().catch(() => {});
  }
}

/** The writing end of a cache entry being filled by a download. */
interface CacheSink {
  push(chunk: Uint8Array): void;
  end(): void;
  fail(e: unknown): void;
  /** Settles when the cache has stored (true) or dropped (false) the entry. */
  done: Promise<boolean>;
}

/**
 * Feeds a download into cache.put. A put that fails on its own (a full quota, a broken cache) never
 * fails the load, which goes on from the network, but it is reported through `onFailure`; failures the
 * download caused (abort, a short body) are not reported (nothing is cached, by design).
 */
function cacheSink(cache: WeightCache, url: string, size: number, validators: FileValidators, onFailure: (e: unknown) => void): CacheSink {
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  let closed = false, ourFailure = false;
  // The cache may cancel its body (e.g. on a quota error): the download then goes on without it.
  const body = new ReadableStream<Uint8Array>({ start(c) { ctl = c; }, cancel() { closed = true; } });
  const done = cache.put(url, body, size, validators).then(() => true, (e) => {
    closed = true;
    if (!ourFailure) onFailure(e);
    return false;
  });
  return {
    push(chunk) {
      if (closed) return;
      try { ctl.enqueue(chunk.slice()); } catch { closed = true; }
    },
    end() { if (!closed) { closed = true; try { ctl.close(); } catch { /* cancelled by the cache */ } } },
    fail(e) { if (!closed) { closed = true; ourFailure = true; try { ctl.error(e); } catch { /* cancelled */ } } },
    done,
  };
}

/** The validators of a response (what the cache stores to recognise this version of the file). */
function validatorsOf(res: Response): FileValidators {
  return { etag: res.headers.get('etag') ?? undefined, lastModified: res.headers.get('last-modified') ?? undefined };
}

/** Hugging Face URLs that name a commit (`/resolve/<40 hex>/`) never change: no need to ask upstream. */
const IMMUTABLE_REVISION = /\/resolve\/[0-9a-f]{40}\//;

export interface UrlSourceOptions {
  fetch?: typeof fetch;
  /** Browser weight cache: a hit serves reads from the cache; a miss downloads once and fills it. */
  cache?: WeightCache | false;
  /** Extra request headers (e.g. Authorization for gated models). */
  headers?: Record<string, string>;
  /** Bytes fetched by the first request (it also tells whether the server honours Range). Default 1 MiB. */
  probeBytes?: number;
  /** Reported for every byte that arrives over the network (downloads, not cache hits). */
  onDownload?: (bytes: number) => void;
  /** Cache events the user should know about (replaced, offline, persistence, quota); see LoadNotice. */
  onNotice?: (notice: LoadNotice) => void;
  /** navigator.storage (default); persistence is requested from it when a file starts being cached. */
  storage?: StorageLike | null;
  /**
   * Range reads that fail in transit (a dropped connection, a network error, HTTP 429/5xx) are asked
   * for again, resuming after the bytes already received; a read gives up after this many failed
   * attempts in a row that brought no new bytes (or after 16 resumed requests). Default 3.
   */
  rangeRetries?: number;
  /** Wait before the k-th retry of a range read: `retryDelayMs · 4^(k-1)`. Default 250 ms (250, 1000, 4000). */
  retryDelayMs?: number;
}

export interface UrlByteSource extends ByteSource {
  /** False for a 404 (the model source maps that to "file absent"). */
  exists(): Promise<boolean>;
  /** 'absent' | 'cached' | 'range' | 'sequential' (forward-only full body). */
  readonly mode: string;
  /** The latest cache write of this file, if a download filled (or is filling) the cache: settles true when stored. */
  readonly cacheWrite: Promise<boolean> | null;
}

/** Times one file's full-body download may be re-requested after the connection closed early. */
const MAX_RECONNECTS = 3;

/**
 * A file behind a URL. The first request asks for a small Range (the header): a 206 means the server
 * honours Range and later reads are Range requests; a 200 means it ignores Range, and that one full GET
 * is read forward (a backward read asks again). With a cache: a hit reads from the cached blob; on a
 * miss, the first read past the probe starts one full GET that is read forward and, chunk by chunk at
 * the reader's pace, written into the cache; close() completes the entry (reads the rest of the file),
 * and later reads come from the cache. An aborted or failed download stores nothing.
 *
 * A cached copy is revalidated with one HEAD request when it was stored with validators: a different
 * ETag (else Last-Modified) or length upstream replaces it; no answer (offline) uses it with a notice.
 * A cache write that fails (quota) is reported as a notice and the load goes on from the network.
 */
export function urlSource(url: string, opts: UrlSourceOptions = {}): UrlByteSource {
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const name = url;
  const probe = Math.max(8, opts.probeBytes ?? 1 << 20);
  let state: Promise<void> | null = null;
  let mode: 'absent' | 'cached' | 'range' | 'sequential' = 'range';
  let rangeOk = false;
  let size = 0;
  let cached: ByteSource | null = null;
  let probeBytes: Uint8Array | null = null; // bytes [0, probeBytes.length) from the probe
  let seq: SequentialBody | null = null;
  let sink: CacheSink | null = null;
  let cacheTried = false;
  /** The latest cache write this source started (a streamed fill or a whole small file). */
  let lastWrite: Promise<boolean> | null = null;
  let reconnects = 0;
  const notice = (n: LoadNotice) => opts.onNotice?.({ url, ...n });
  const cacheFailed = (e: unknown) => {
    const err = e as WebMoeError;
    if (err?.code === 'QUOTA_EXCEEDED') notice({ kind: 'cache-quota', message: `${err.message}. The model loads from the network without being cached.`, code: err.code, details: err.details });
    else notice({ kind: 'cache-failed', message: `${url}: the file could not be cached (${(e as Error)?.message ?? e}); it loads from the network`, code: err?.code });
  };
  /**
   * A cache fill starts: ask once for persistent storage, and say what the browser answered. (Only
   * windows have persist(); in a Worker the page-side client asks: engine/persist.ts.)
   */
  const startingCacheFill = () => {
    void requestPersistentStorage(opts.storage).then((r) => {
      if (!r.supported) return;
      notice({
        kind: 'cache-persist',
        message: r.persisted
          ? 'persistent storage granted: the browser keeps the cached model when space runs low'
          : 'persistent storage not granted: the browser may evict the cached model when space runs low',
        details: { persisted: r.persisted },
      });
    });
  };
  const putWhole = (bytes: Uint8Array, res: Response): Promise<boolean> => {
    startingCacheFill();
    return opts.cache ? opts.cache.put(url, bytes, bytes.length, validatorsOf(res)).then(() => true, (e) => { cacheFailed(e); return false; }) : Promise.resolve(false);
  };

  /**
   * Whether a cached copy of `cachedSize` bytes is still upstream's version. One HEAD request, made only
   * for copies stored with validators (otherwise there is nothing to compare but the length).
   */
  const stillCurrent = async (cachedSize: number, signal?: AbortSignal): Promise<boolean> => {
    if (!opts.cache || IMMUTABLE_REVISION.test(url)) return true;
    const mine = await opts.cache.validators(url).catch(() => null);
    if (!mine) return true;
    let res: Response;
    try {
      res = await doFetch(url, { method: 'HEAD', headers: opts.headers, signal, cache: 'no-store' });
    } catch (e) {
      const t = asTypedAbort(e, signal);
      if (t instanceof AbortError) throw t;
      notice({ kind: 'cache-offline', message: `${url}: could not ask upstream whether the file changed (${(e as Error)?.message}); using the cached copy` });
      return true;
    }
    res.body?.cancel().catch(() => {});
    if (!res.ok) {
      notice({ kind: 'cache-offline', message: `${url}: upstream answered HTTP ${res.status} when asked whether the file changed; using the cached copy` });
      return true;
    }
    const theirs = validatorsOf(res);
    const length = totalFromHeaders(res);
    let why = '';
    if (mine.etag && theirs.etag) { if (mine.etag !== theirs.etag) why = `ETag ${mine.etag} → ${theirs.etag}`; }
    else if (mine.lastModified && theirs.lastModified && mine.lastModified !== theirs.lastModified) why = `Last-Modified ${mine.lastModified} → ${theirs.lastModified}`;
    if (!why && length !== null && length !== cachedSize) why = `${cachedSize} → ${length} bytes`;
    if (!why) return true;
    await opts.cache.delete(url).catch(() => false);
    notice({ kind: 'cache-replaced', message: `${url}: changed upstream (${why}); the cached copy is replaced` });
    return false;
  };

  const request = async (headers: Record<string, string>, signal?: AbortSignal): Promise<Response> => {
    try {
      // no-store: keep the browser's HTTP cache out of weight downloads. With a server that gzips the
      // full GET (and even 206 answers) under the same weak ETag as the identity probe range (vite
      // preview does), Chromium's cache mixed the encodings in one entry: the full body came back short
      // and the next Range request got 206 with the right Content-Range but wrong bytes past the cached
      // first MiB: garbage weights (NaN logits, greedy token 0) and no error (issue 21;
      // test/e2e/weights-intact.spec.ts). The Cache API copy (loader/cache.ts) is the cache here.
      return await doFetch(url, { headers: { ...opts.headers, ...headers }, signal, cache: 'no-store' });
    } catch (e) {
      const t = asTypedAbort(e, signal);
      if (t instanceof WebMoeError) throw t;
      throw new WebMoeError('NETWORK', `${url}: request failed (${(e as Error).message})`, { url });
    }
  };
  const bad = (res: Response): never => {
    res.body?.cancel().catch(() => {});
    throw new WebMoeError('NETWORK', `${url}: HTTP ${res.status} ${res.statusText}`, { url, status: res.status });
  };
  const totalFromHeaders = (res: Response): number | null => {
    const cr = res.headers.get('content-range');
    const m = cr ? /\/(\d+)\s*$/.exec(cr) : null;
    if (m) return Number(m[1]);
    const cl = res.headers.get('content-length');
    const enc = res.headers.get('content-encoding');
    if (cl !== null && /^\d+$/.test(cl) && (!enc || enc === 'identity')) return Number(cl);
    return null;
  };
  const counted = (body: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> => {
    const report = opts.onDownload;
    return report ? body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({ transform(c, ctl) { report(c.length); ctl.enqueue(c); } })) : body;
  };

  /** Reads a full-body (200) response forward from now on, filling the cache when asked. */
  const startSequential = async (res: Response, withCache: boolean, signal?: AbortSignal): Promise<void> => {
    const total = totalFromHeaders(res);
    if (total === null || !res.body) {
      // No trustworthy length (e.g. compressed): the only safe way is to read it all.
      const buf = new Uint8Array(await res.arrayBuffer().catch((e) => { throw asTypedAbort(e, signal); }));
      opts.onDownload?.(buf.length);
      mode = 'cached';
      size = buf.length;
      cached = bytesSource(name, buf);
      if (withCache && opts.cache) await (lastWrite = putWhole(buf, res));
      return;
    }
    if (mode !== 'range' || probeBytes === null) size = total;
    else if (total !== size) bad(res);
    seq?.cancel();
    if (withCache && opts.cache) startingCacheFill();
    sink = withCache && opts.cache ? cacheSink(opts.cache, url, total, validatorsOf(res), cacheFailed) : null;
    if (sink) lastWrite = sink.done;
    seq = new SequentialBody(counted(res.body), name, total, sink ?? undefined);
    mode = 'sequential';
  };

  const init = (signal?: AbortSignal): Promise<void> => {
    state ??= (async () => {
      if (opts.cache) {
        const hit = await opts.cache.match(url).catch(() => null);
        if (hit && (await stillCurrent(hit.size, signal))) {
          mode = 'cached';
          size = hit.size;
          cached = blobSource(hit, name);
          return;
        }
      }
      const res = await request({ Range: `bytes=0-${probe - 1}` }, signal);
      // 404, or a single-page-app server's index.html standing in for a missing binary file.
      if (res.status === 404 || (res.ok && (res.headers.get('content-type') ?? '').includes('text/html'))) { mode = 'absent'; res.body?.cancel().catch(() => {}); return; }
      if (res.status === 416) { mode = 'range'; rangeOk = true; size = 0; probeBytes = new Uint8Array(0); res.body?.cancel().catch(() => {}); return; }
      if (res.status === 206) {
        const total = totalFromHeaders(res);
        const cr = res.headers.get('content-range') ?? '';
        const m = /bytes\s+(\d+)-(\d+)\//.exec(cr);
        if (total === null || !m || Number(m[1]) !== 0) bad(res);
        size = total!;
        const len = Number(m![2]) + 1;
        if (len > Math.min(probe, size)) throw new WebMoeError('NETWORK', `${url}: server sent range ${cr} for bytes=0-${probe - 1}`, { url });
        probeBytes = await readBodyExactly(res, len, name, signal);
        opts.onDownload?.(len);
        mode = 'range';
        rangeOk = true;
        if (len === size && opts.cache) {
          // The probe was the whole file: cache it as is.
          cacheTried = true;
          lastWrite = putWhole(probeBytes, res);
        }
        return;
      }
      if (res.ok) { cacheTried = true; await startSequential(res, true, signal); return; } // Range ignored: one full GET
      bad(res);
    })();
    state.catch(() => { state = null; }); // a failed/aborted init can be retried
    return state;
  };

  const retries = Math.max(0, opts.rangeRetries ?? 3);
  /** A read that keeps breaking, even with progress each time, gives up after this many resumed requests. */
  const MAX_RESUMES = 16;
  const retryDelay = Math.max(0, opts.retryDelayMs ?? 250);
  /** HTTP statuses worth asking again for: the server is busy or a proxy failed, not the request. */
  const transient = (status: number) => status === 429 || status === 502 || status === 503 || status === 504 || status === 500;
  const pause = (attempt: number, signal?: AbortSignal) => new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, retryDelay * 4 ** (attempt - 1));
    const onAbort = () => { clearTimeout(t); reject(new AbortError(abortMessage(signal!))); };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

  /**
   * Bytes [offset, offset + length) by Range requests; a transfer that breaks resumes from the bytes
   * received. Returns null when the server turns out to ignore Range (a full body is then read forward).
   */
  const rangeRead = async (offset: number, length: number, signal?: AbortSignal, into?: Uint8Array): Promise<Uint8Array | null> => {
    const out = outBuffer(length, into);
    let got = 0;
    // `failures` counts failed attempts in a row that brought no bytes: a transfer that keeps moving
    // (each attempt resuming further on) is never given up, one that stalls is after `retries`.
    let resumes = 0;
    for (let failures = 0; ; ) {
      if (failures > 0) await pause(failures, signal);
      const from = offset + got, to = offset + length - 1;
      let res: Response;
      try {
        res = await request({ Range: `bytes=${from}-${to}` }, signal);
      } catch (e) {
        if (e instanceof WebMoeError && e.code === 'NETWORK' && failures < retries) { failures++; continue; } // fetch itself failed
        throw e;
      }
      if (res.status === 206) {
        const cr = res.headers.get('content-range') ?? '';
        const m = /bytes\s+(\d+)-(\d+)\//.exec(cr);
        if (!m || Number(m[1]) !== from || Number(m[2]) !== to) {
          res.body?.cancel().catch(() => {});
          throw new WebMoeError('NETWORK', `${url}: asked for bytes ${from}-${to}, server sent '${cr}'`, { url });
        }
        const r = await readBodyInto(res, out, got, name, signal);
        opts.onDownload?.(r.end - got);
        const progressed = r.end > got;
        got = r.end;
        if (!r.dropped) return out;
        failures = progressed ? 0 : failures + 1;
        if (failures > retries) throw new TruncatedDownloadError(name, got, length, `${r.dropped} (${retries} retries without progress)`);
        if (++resumes > MAX_RESUMES) throw new TruncatedDownloadError(name, got, length, `${r.dropped} (broken ${resumes} times)`);
        continue;
      }
      if (res.ok && got === 0) {
        // The server ignores Range after all: read this full body forward.
        rangeOk = false;
        await startSequential(res, false, signal);
        return null;
      }
      if (transient(res.status) && failures < retries) { failures++; res.body?.cancel().catch(() => {}); continue; }
      return bad(res);
    }
  };

  return {
    name,
    get mode() { return mode; },
    get cacheWrite() { return lastWrite; },
    async exists(): Promise<boolean> {
      await init();
      return mode !== 'absent';
    },
    async size(): Promise<number> {
      await init();
      if (mode === 'absent') throw new WebMoeError('NOT_FOUND', `${url}: not found (404)`, { url });
      return size;
    },
    async read(offset: number, length: number, signal?: AbortSignal, into?: Uint8Array): Promise<Uint8Array> {
      throwIfAborted(signal);
      await init(signal);
      if (mode === 'absent') throw new WebMoeError('NOT_FOUND', `${url}: not found (404)`, { url });
      checkRange(name, offset, length, size);
      if (mode === 'cached') return cached!.read(offset, length, signal);
      if (probeBytes && offset + length <= probeBytes.length) return probeBytes.slice(offset, offset + length);
      if (length === 0) return new Uint8Array(0);
      if (seq?.failed) { seq = null; sink = null; mode = 'range'; }
      if (!seq && opts.cache && !cacheTried) {
        // Cache miss: one full GET, read forward, written into the cache as it is read.
        cacheTried = true;
        const res = await request({}, signal);
        if (!res.ok) bad(res);
        await startSequential(res, true, signal);
        if ((mode as string) === 'cached') return cached!.read(offset, length, signal);
      }
      if (seq && offset >= seq.position) {
        const s = seq;
        try {
          return await s.read(offset, length, signal, into);
        } catch (e) {
          // A full body that stopped short (server or proxy dropped an idle, slowly read connection):
          // ask again below, a few times per file, rather than fail the whole load.
          if (!s.endedEarly || reconnects >= MAX_RECONNECTS) throw e;
          reconnects++;
          if (seq === s) { seq = null; sink = null; }
        }
      }
      // Backward read (or no full body yet): ask for just these bytes.
      if (rangeOk) {
        const b = await rangeRead(offset, length, signal, into);
        if (b) return b;
      } else {
        const res = await request({}, signal);
        if (!res.ok) bad(res);
        await startSequential(res, false, signal);
        if ((mode as string) === 'cached') return cached!.read(offset, length, signal);
      }
      return seq!.read(offset, length, signal, into);
    },
    async close(): Promise<void> {
      // Complete a cache-filling download (normally only skipped tensors remain), then read from the cache.
      if (mode === 'cached' || mode === 'absent') return;
      const s = seq, k = sink;
      seq = null;
      sink = null;
      if (s && k && !s.failed) {
        try {
          await s.drain();
        } catch {
          s.cancel();
        }
        if ((await k.done) && opts.cache) {
          const hit = await opts.cache.match(url).catch(() => null);
          if (hit) { cached = blobSource(hit, name); mode = 'cached'; return; }
        }
      } else s?.cancel();
      mode = 'range';
      if (!rangeOk) probeBytes = null; // the next read starts a new full GET
    },
  };
}
