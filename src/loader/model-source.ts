/**
 * Model sources: where a checkpoint's files come from (a base URL, a local folder picked in the
 * browser, a FileSystemDirectoryHandle, in-memory files for tests; Node directories are in
 * node-source.ts). Each gives the small JSON files as text and the weight files as ByteSources.
 */
import { FormatError, TruncatedDownloadError, WebMoeError } from '../errors';
import { defaultWeightCache, type StorageLike, type WeightCache } from './cache';
import { blobSource, bytesSource, type ByteSource, type LoadNotice, urlSource } from './source';

export interface ModelSource {
  readonly description: string;
  /** File names, when the source can enumerate them. */
  list?(): Promise<string[]>;
  /** A text file, or null when absent. */
  text(name: string): Promise<string | null>;
  /** A binary file, or null when absent. */
  open(name: string): Promise<ByteSource | null>;
  /**
   * The file the user named, when the reference was a file rather than a folder (`…/model.gguf`, a
   * picked .gguf, `…/config.json`): model/checkpoint.ts loads what it names instead of guessing from
   * the folder's contents.
   */
  readonly named?: string;
}

/** A GGUF file name (llama.cpp's extension; split files end in `-0000k-of-0000N.gguf`). */
export const isGgufName = (name: string) => /\.gguf$/i.test(name);

/** File names inside a model are plain relative paths: no absolute paths, no '..', no backslashes. */
export function checkFileName(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 1024 || name.startsWith('/') || name.includes('\\') || name.split('/').some((p) => p === '..' || p === '.' || p === '') || /[\u0000-\u001f]/.test(name)) {
    throw new FormatError(`invalid file name ${JSON.stringify(name)} in the model (must be a plain relative path)`, { file: name });
  }
}

function decodeUtf8(bytes: Uint8Array, name: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new FormatError(`${name}: not valid UTF-8`, { file: name });
  }
}

/**
 * Files under a base URL (e.g. `https://huggingface.co/org/model/resolve/main/`). Weight files are
 * cached in the browser's weight cache unless `cache: false`; text files are small and fetched again.
 */
export function urlModel(
  baseUrl: string,
  opts: {
    fetch?: typeof fetch; cache?: WeightCache | false; headers?: Record<string, string>; onDownload?: (bytes: number) => void; probeBytes?: number;
    /** Cache notices (see UrlSourceOptions.onNotice); each distinct one is reported once per model source. */
    onNotice?: (notice: LoadNotice) => void;
    storage?: StorageLike | null;
    /** Range reads broken in transit are retried (see UrlSourceOptions.rangeRetries / retryDelayMs). */
    rangeRetries?: number;
    retryDelayMs?: number;
  } = {},
): ModelSource {
  // A URL naming a .gguf file (query and fragment aside) is that file in its folder: its split
  // siblings, if any, are fetched from the same folder.
  const fileUrl = ggufUrlParts(baseUrl);
  const base = fileUrl ? fileUrl.base : baseUrl.endsWith('/') ? baseUrl : baseUrl + '/';
  const doFetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
  const cache = opts.cache === false ? null : opts.cache ?? defaultWeightCache();
  // Persistence is asked for once per file being cached; the user hears each distinct answer once.
  const told = new Set<string>();
  const onNotice = opts.onNotice && ((n: LoadNotice) => {
    const key = n.kind === 'cache-persist' ? n.kind : `${n.kind} ${n.message}`;
    if (told.has(key)) return;
    told.add(key);
    opts.onNotice!(n);
  });
  const url = (name: string) => {
    checkFileName(name);
    return new URL(name.split('/').map(encodeURIComponent).join('/'), base).toString();
  };
  return {
    description: fileUrl ? fileUrl.base + fileUrl.file : base,
    named: fileUrl?.file,
    async text(name) {
      let res: Response;
      try {
        res = await doFetch(url(name), { headers: opts.headers });
      } catch (e) {
        if (e instanceof WebMoeError) throw e;
        throw new WebMoeError('NETWORK', `${url(name)}: request failed (${(e as Error).message})`, { url: url(name) });
      }
      if (res.status === 404) {
        res.body?.cancel().catch(() => {});
        return null;
      }
      if (!res.ok) throw new WebMoeError('NETWORK', `${url(name)}: HTTP ${res.status} ${res.statusText}`, { url: url(name), status: res.status });
      // Single-page-app servers (Vite's dev server and preview among them) answer a missing file with
      // their index.html and status 200: an HTML page where a model file was asked for means "absent".
      if (!name.endsWith('.html') && (res.headers.get('content-type') ?? '').includes('text/html')) {
        res.body?.cancel().catch(() => {});
        return null;
      }
      const declared = res.headers.get('content-length');
      const encoded = (res.headers.get('content-encoding') ?? 'identity') !== 'identity';
      let body: Uint8Array;
      try {
        body = new Uint8Array(await res.arrayBuffer());
      } catch (e) {
        if (declared !== null && !encoded) throw new TruncatedDownloadError(url(name), 0, Number(declared), `the download failed (${(e as Error).message})`);
        throw new WebMoeError('NETWORK', `${url(name)}: download failed (${(e as Error).message})`, { url: url(name) });
      }
      // A body shorter than its Content-Length is a cut connection, not a file (nothing is parsed from it).
      if (declared !== null && !encoded && /^\d+$/.test(declared) && body.length !== Number(declared)) throw new TruncatedDownloadError(url(name), body.length, Number(declared), 'the response ended');
      return decodeUtf8(body, name);
    },
    async open(name) {
      const src = urlSource(url(name), { fetch: doFetch, cache: cache ?? false, headers: opts.headers, onDownload: opts.onDownload, probeBytes: opts.probeBytes, onNotice, storage: opts.storage, rangeRetries: opts.rangeRetries, retryDelayMs: opts.retryDelayMs });
      return (await src.exists()) ? src : null;
    },
  };
}

/** `https://host/dir/x.gguf?download=1` → { base: 'https://host/dir/', file: 'x.gguf' }; null for other URLs. */
function ggufUrlParts(url: string): { base: string; file: string } | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null; // not an absolute URL: fails where the folder URL would, with the same message
  }
  if (!isGgufName(u.pathname)) return null;
  const cut = u.pathname.lastIndexOf('/') + 1;
  const file = decodeURIComponent(u.pathname.slice(cut));
  u.pathname = u.pathname.slice(0, cut);
  u.search = '';
  u.hash = '';
  return { base: u.toString(), file };
}

/**
 * Files from `<input type=file webkitdirectory>` or drag and drop. Matched by path relative to the
 * picked folder; when the folder holds subfolders, the shallowest file of a name wins.
 */
export function fileListModel(files: ArrayLike<File>): ModelSource {
  const byName = new Map<string, File>();
  const depth = (f: File) => ((f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name).split('/').length;
  const sorted = Array.from(files).sort((a, b) => depth(a) - depth(b));
  for (const f of sorted) {
    const rel = (f as File & { webkitRelativePath?: string }).webkitRelativePath;
    // Path below the picked folder ('model/sub/x' → 'sub/x'), and the bare name as a fallback key.
    const below = rel ? rel.split('/').slice(1).join('/') : f.name;
    if (below && !byName.has(below)) byName.set(below, f);
    if (!byName.has(f.name)) byName.set(f.name, f);
  }
  const first = sorted[0] as (File & { webkitRelativePath?: string }) | undefined;
  // Files picked one by one (no folder): one .gguf, or the splits of one, name the model.
  const loose = sorted.length > 0 && sorted.every((f) => !(f as File & { webkitRelativePath?: string }).webkitRelativePath);
  const ggufs = loose ? sorted.map((f) => f.name).filter(isGgufName).sort() : [];
  return {
    description: first?.webkitRelativePath ? first.webkitRelativePath.split('/')[0] : sorted.length === 1 ? sorted[0].name : `${byName.size} local files`,
    named: ggufs.length === sorted.length && ggufs.length > 0 ? ggufs[0] : undefined,
    async list() {
      return [...byName.keys()];
    },
    async text(name) {
      checkFileName(name);
      const f = byName.get(name);
      return f ? decodeUtf8(new Uint8Array(await f.arrayBuffer()), name) : null;
    },
    async open(name) {
      checkFileName(name);
      const f = byName.get(name);
      return f ? blobSource(f, name) : null;
    },
  };
}

/** A folder from showDirectoryPicker() (File System Access API) or an OPFS directory. */
export function directoryHandleModel(handle: FileSystemDirectoryHandle): ModelSource {
  const fileOf = async (name: string): Promise<File | null> => {
    checkFileName(name);
    const parts = name.split('/');
    try {
      let dir = handle;
      for (const p of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(p);
      return await (await dir.getFileHandle(parts[parts.length - 1])).getFile();
    } catch (e) {
      const n = (e as Error)?.name;
      if (n === 'NotFoundError' || n === 'TypeMismatchError') return null;
      throw new WebMoeError('NOT_FOUND', `${handle.name}/${name}: ${(e as Error).message}`, { file: name });
    }
  };
  return {
    description: handle.name,
    async list() {
      const out: string[] = [];
      for await (const [n, h] of (handle as unknown as AsyncIterable<[string, FileSystemHandle]>)) if (h.kind === 'file') out.push(n);
      return out;
    },
    async text(name) {
      const f = await fileOf(name);
      return f ? decodeUtf8(new Uint8Array(await f.arrayBuffer()), name) : null;
    },
    async open(name) {
      const f = await fileOf(name);
      return f ? blobSource(f, name) : null;
    },
  };
}

/** In-memory files (tests, generated models). */
export function memoryModel(files: Record<string, Uint8Array | string>, description = 'memory'): ModelSource {
  const enc = new TextEncoder();
  return {
    description,
    async list() {
      return Object.keys(files);
    },
    async text(name) {
      checkFileName(name);
      if (!Object.prototype.hasOwnProperty.call(files, name)) return null;
      const f = files[name];
      return typeof f === 'string' ? f : decodeUtf8(f, name);
    },
    async open(name) {
      checkFileName(name);
      if (!Object.prototype.hasOwnProperty.call(files, name)) return null;
      const f = files[name];
      return bytesSource(name, typeof f === 'string' ? enc.encode(f) : f);
    },
  };
}
