/**
 * A Hugging Face checkpoint for any DeepSeek config.json, served over HTTP without a byte on disk: the
 * repository layout real models have (config.json, model.safetensors.index.json, shards named
 * `model-0000k-of-0000n.safetensors` of at most `shardBytes`), with correct safetensors headers for
 * every tensor of the architecture (the tensor table of src/model/tensors.ts), and tensor bytes made
 * on the fly, deterministically, from (seed, tensor, element index): matrices as a per-tensor rotation of
 * one of a few shared tables of values (fast: the server runs in the loader's process in tests and
 * benchmarks), the small tensors from a hash per element. So the loader, the memory plan and
 * the streaming path run at real dimensions (DeepSeek-V2-Lite's 31 GB, DeepSeek-V3's 671B) in tests and
 * benchmarks, and any byte range reads the same in every run.
 *
 * Values: small-magnitude random numbers built straight from bits (a random sign, an exponent in a
 * narrow band, random mantissa bits; no NaN, no Inf): matrices |w| ∈ [2^-8, 2^-5) (about
 * 1/√hidden), norm weights in [1, 1.06), biases |b| ∈ [2^-6, 2^-4). Storage follows the config like the
 * published checkpoints: BF16 (or `dtype`), routers and e_score_correction_bias in F32; with
 * `quantization_config.quant_method: fp8` every linear projection (not the router, embedding or head) is
 * F8_E4M3 with an F32 `weight_scale_inv` of [ceil(N/128), ceil(K/128)] blocks (powers of two).
 * Multi-token-prediction layers are left out (the runtime does not read them).
 *
 * The server answers GET (whole file, or one `Range: bytes=a-b` / `a-` / `-n` → 206 with Content-Range),
 * HEAD, 404 and 416, sends Content-Length, streams large bodies chunk by chunk under backpressure, and
 * counts the bytes it sent per file (tests check that `webmoe info` reads only config and headers).
 * Node only (node:http); the layout functions work anywhere.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseConfig, scaleInvName, fp8BlockSize, type ModelConfig } from '../model/config';
import { modelTensors } from '../model/tensors';
import { DTYPE_BYTES, type SafetensorsDtype } from '../formats/safetensors';
import { ArgumentError } from '../errors';

export interface SyntheticRepoOptions {
  /** Seed of every tensor's bytes (default 1). */
  seed?: number;
  /** Storage of weights that are not FP8, routers or biases (default: the config's torch_dtype, BF16 if absent or other). */
  dtype?: 'BF16' | 'F16' | 'F32';
  /** FP8 projections with weight_scale_inv (default: when the config's quantization_config is fp8). */
  fp8?: boolean;
  /** Largest shard (default 5 GB, Hugging Face's default max_shard_size). */
  shardBytes?: number;
  /** More files to serve as they are (e.g. a tokenizer.json). */
  extraFiles?: Record<string, string | Uint8Array>;
}

/** One tensor of a shard: name, dtype, shape, absolute byte range in the shard, and how its bytes are made. */
export interface SyntheticTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
  kind: 'matrix' | 'norm' | 'bias' | 'scale';
  /** Per-tensor seed. */
  key: number;
}

export interface SyntheticFile {
  name: string;
  size: number;
  /** Bytes [offset, offset + length) of the file. */
  read(offset: number, length: number): Uint8Array;
  /**
   * The same bytes as read(), as consecutive pieces, some of them views of the server's own tables:
   * the server sends those without allocating or copying. Never to be written to.
   */
  parts?(offset: number, length: number): Uint8Array[];
}

export interface SyntheticRepo {
  config: ModelConfig;
  files: Map<string, SyntheticFile>;
  shards: string[];
  /** Every tensor's bytes, summed (what a full download would move). */
  tensorBytes: number;
}

const enc = new TextEncoder();

/** A 32-bit mix (murmur3's finaliser) of two words. */
export function mix(a: number, b: number): number {
  let h = (a ^ Math.imul(b, 0x9e3779b1)) >>> 0;
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function hashString(s: string, seed: number): number {
  let h = seed >>> 0;
  for (let i = 0; i < s.length; i++) h = mix(h, s.charCodeAt(i));
  return h;
}

/**
 * Element bits of a tensor from a 32-bit hash: sign, an exponent in a band below the kind's top, and
 * mantissa bits. The band is [top - 3, top], so values are ±2^e·(1 + m) with e in four steps.
 */
export function elementBits(t: SyntheticTensor, h: number): number {
  const sign = h >>> 31, band = (h >>> 29) & 3;
  switch (t.dtype) {
    case 'BF16': {
      if (t.kind === 'norm') return 0x3f80 | (h & 0x07); // 1 + m·2^-7, m < 8
      const e = t.kind === 'bias' ? -4 - band : -5 - band; // matrices |w| ∈ [2^-8, 2^-4)
      return (sign << 15) | ((127 + e) << 7) | (h & 0x7f);
    }
    case 'F16': {
      if (t.kind === 'norm') return 0x3c00 | (h & 0x3f);
      const e = t.kind === 'bias' ? -4 - band : -5 - band;
      return (sign << 15) | ((15 + e) << 10) | (h & 0x3ff);
    }
    case 'F32': {
      if (t.kind === 'scale') return (127 - 6 - band) << 23; // powers of two 2^-9..2^-6
      if (t.kind === 'norm') return (0x3f800000 | (h & 0x7ffff)) >>> 0;
      const e = t.kind === 'bias' ? -4 - band : -5 - band;
      return ((sign << 31) | ((127 + e) << 23) | (h & 0x7fffff)) >>> 0;
    }
    case 'F8_E4M3': return (sign << 7) | ((4 + band) << 3) | (h & 0x7); // |q| ∈ [2^-3, 2^1): no NaN (0x7f)
    // GPT-OSS MXFP4: block bytes are any two FP4 nibbles; E8M0 scales 2^-9..2^-6 (never 255, NaN).
    case 'U8': return t.kind === 'scale' ? 127 - 6 - band : h & 0xff;
    default: throw new ArgumentError(`synthetic tensor ${t.name}: dtype ${t.dtype} is not generated`);
  }
}

/**
 * Matrices (the bulk of every checkpoint) are not hashed element by element, which made the server the
 * load's bottleneck (≈0.5 GB/s on this machine, in the loader's own process): element e of a matrix is
 * entry (e + offset) mod PATTERN_LENGTH of one of PATTERN_TABLES tables of values (elementBits of a hash
 * per entry, then the table's mask over the sign and mantissa bits). The table and the offset come from
 * the tensor's key (name and seed), so tensors differ, and the prime table length keeps rows of any
 * power-of-two width from repeating. The exponent is the hash's, so values keep the kind's band. Reading
 * is a copy out of a table (no per-element work at all: even an XOR pass halved the rate).
 */
export const PATTERN_LENGTH = 65521;
const PATTERN_TABLES = 8;

/** Bits of a matrix element a table's mask may flip (sign and mantissa; never the exponent). */
const FREE_BITS: Partial<Record<SafetensorsDtype, number>> = { BF16: 0x807f, F16: 0x83ff, F32: 0x807fffff, F8_E4M3: 0x87, U8: 0xff };

/** Whether tensor t's bytes come from the pattern tables (matrices of the dtypes above). */
const patterned = (t: SyntheticTensor) => t.kind === 'matrix' && FREE_BITS[t.dtype] !== undefined;

/** Which table tensor t reads and where in it element 0 is. */
export function patternParams(t: SyntheticTensor): { table: number; offset: number } {
  return { table: mix(t.key, 0x51ed) % PATTERN_TABLES, offset: t.key % PATTERN_LENGTH };
}

const tableEntryBits = (dtype: SafetensorsDtype, table: number, j: number): number => {
  const probe: SyntheticTensor = { name: '', dtype, shape: [], begin: 0, end: 0, kind: 'matrix', key: 0 };
  return (elementBits(probe, mix(0x2545f491, j)) ^ (mix(0x7ab1e, table) & FREE_BITS[dtype]!)) >>> 0;
};

/** The value of matrix element e by its definition (the table lookup, written out per element): for tests. */
export function patternElementBits(t: SyntheticTensor, e: number): number {
  const { table, offset } = patternParams(t);
  return tableEntryBits(t.dtype, table, (e + offset) % PATTERN_LENGTH);
}

/**
 * Per dtype: the tables' bytes (PATTERN_LENGTH matrix elements each), stored twice over, so that any
 * window of up to one table is one contiguous view; made on first use.
 */
const patternTables = new Map<SafetensorsDtype, Uint8Array[]>();
function patternTable(dtype: SafetensorsDtype, table: number): Uint8Array {
  let tables = patternTables.get(dtype);
  if (!tables) {
    const size = DTYPE_BYTES[dtype];
    tables = [];
    for (let k = 0; k < PATTERN_TABLES; k++) {
      const tb = new Uint8Array(2 * PATTERN_LENGTH * size);
      const dv = new DataView(tb.buffer);
      for (let j = 0; j < PATTERN_LENGTH; j++) {
        const v = tableEntryBits(dtype, k, j);
        if (size === 4) dv.setUint32(j * 4, v, true); else if (size === 2) dv.setUint16(j * 2, v, true); else tb[j] = v;
      }
      tb.copyWithin(PATTERN_LENGTH * size, 0, PATTERN_LENGTH * size);
      tables.push(tb);
    }
    patternTables.set(dtype, tables);
  }
  return tables[table];
}

/**
 * Bytes [from, from + length) of a patterned matrix as views of its table (each at most one table long):
 * byte b of the tensor is table byte (b + offset·size) mod the table's length.
 */
function patternViews(t: SyntheticTensor, from: number, length: number): Uint8Array[] {
  const { table, offset } = patternParams(t);
  const tb = patternTable(t.dtype, table), period = tb.length / 2;
  const views: Uint8Array[] = [];
  let src = (from + offset * DTYPE_BYTES[t.dtype]) % period;
  for (let done = 0; done < length; ) {
    const n = Math.min(length - done, period);
    views.push(tb.subarray(src, src + n));
    done += n;
    src = (src + n) % period;
  }
  return views;
}

function patternBytes(t: SyntheticTensor, from: number, out: Uint8Array): void {
  let at = 0;
  for (const v of patternViews(t, from, out.length)) { out.set(v, at); at += v.length; }
}

/** Bytes [from, from + out.length) of tensor t's data (relative to its start). */
export function tensorBytes(t: SyntheticTensor, from: number, out: Uint8Array): void {
  if (patterned(t)) { patternBytes(t, from, out); return; }
  // Norms, biases and scales (small): element by element from a hash.
  const size = DTYPE_BYTES[t.dtype];
  const e0 = Math.floor(from / size), e1 = Math.ceil((from + out.length) / size);
  const skip = from - e0 * size;
  const n = e1 - e0;
  // Elements through a typed view (little-endian hosts, as every WebGPU host is), then the bytes asked for.
  const tmp = new Uint8Array(n * size);
  if (size === 2) { const v = new Uint16Array(tmp.buffer); for (let i = 0; i < n; i++) v[i] = elementBits(t, mix(t.key, e0 + i)); }
  else if (size === 4) { const v = new Uint32Array(tmp.buffer); for (let i = 0; i < n; i++) v[i] = elementBits(t, mix(t.key, e0 + i)); }
  else for (let i = 0; i < n; i++) tmp[i] = elementBits(t, mix(t.key, e0 + i));
  out.set(tmp.subarray(skip, skip + out.length));
}

/** Shard file name the way `transformers` writes them: model-00001-of-00004.safetensors. */
export const shardName = (k: number, n: number) => `model-${String(k).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;

/** The repository layout of a synthetic checkpoint for `config` (nothing generated until read). */
export function syntheticRepo(configJson: Record<string, unknown>, opts: SyntheticRepoOptions = {}): SyntheticRepo {
  const cfg = parseConfig(configJson);
  const seed = opts.seed ?? 1;
  const torchDtype = configJson.torch_dtype;
  const dtype = opts.dtype ?? (torchDtype === 'float16' ? 'F16' : torchDtype === 'float32' ? 'F32' : 'BF16');
  const fp8 = opts.fp8 ?? cfg.quantization?.method === 'fp8';
  const shardBytes = opts.shardBytes ?? 5e9;
  if (!(shardBytes > 0)) throw new ArgumentError(`shardBytes must be > 0, got ${shardBytes}`);
  const [bn, bk] = fp8BlockSize(cfg);

  // Tensors in model order, each FP8 weight followed by its scale.
  type Entry = Omit<SyntheticTensor, 'begin' | 'end'> & { bytes: number };
  const entries: Entry[] = [];
  const add = (name: string, dt: SafetensorsDtype, shape: number[], kind: SyntheticTensor['kind']) =>
    entries.push({ name, dtype: dt, shape, kind, key: hashString(name, seed), bytes: shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dt] });
  for (const t of modelTensors(cfg)) {
    const role = t.spec.role;
    if (t.spec.ossExperts === 'blocks' || t.spec.ossExperts === 'scales') add(t.name, 'U8', t.shape, t.spec.ossExperts === 'scales' ? 'scale' : 'matrix');
    else if (t.spec.ossExperts === 'values' && t.shape.length === 3) add(t.name, dtype, t.shape, 'matrix');
    else if (t.kind === 'vector' && (role.endsWith('bias') || role === 'sinks')) add(t.name, role === 'router_bias' ? 'F32' : dtype, t.shape, 'bias');
    else if (t.kind === 'vector') add(t.name, role === 'router_bias' ? 'F32' : dtype, t.shape, role === 'router_bias' ? 'bias' : 'norm');
    else if (role === 'router') add(t.name, 'F32', t.shape, 'matrix');
    else if (fp8 && t.kind === 'matrix') {
      add(t.name, 'F8_E4M3', t.shape, 'matrix');
      add(scaleInvName(t.name), 'F32', [Math.ceil(t.shape[0] / bn), Math.ceil(t.shape[1] / bk)], 'scale');
    } else add(t.name, dtype, t.shape, 'matrix');
  }

  // Shards: consecutive tensors up to shardBytes of data each (a bigger tensor gets a shard of its own).
  const groups: Entry[][] = [[]];
  let inShard = 0;
  for (const e of entries) {
    if (inShard > 0 && inShard + e.bytes > shardBytes) { groups.push([]); inShard = 0; }
    groups[groups.length - 1].push(e);
    inShard += e.bytes;
  }
  const n = groups.length;
  const files = new Map<string, SyntheticFile>();
  const weightMap: Record<string, string> = {};
  const shards: string[] = [];
  let total = 0;
  groups.forEach((g, i) => {
    const name = shardName(i + 1, n);
    shards.push(name);
    const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
    let off = 0;
    for (const e of g) {
      header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + e.bytes] };
      off += e.bytes;
      weightMap[e.name] = name;
    }
    // The JSON is padded with spaces to a multiple of 8 bytes, as the reference writer does.
    let json = enc.encode(JSON.stringify(header));
    const padded = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
    padded.set(json);
    json = padded;
    const prefix = new Uint8Array(8 + json.length);
    new DataView(prefix.buffer).setUint32(0, json.length, true);
    prefix.set(json, 8);
    const tensors: SyntheticTensor[] = [];
    let pos = prefix.length;
    for (const e of g) {
      tensors.push({ name: e.name, dtype: e.dtype, shape: e.shape, kind: e.kind, key: e.key, begin: pos, end: pos + e.bytes });
      pos += e.bytes;
    }
    total += off;
    files.set(name, { name, size: pos, read: (offset, length) => readShard(prefix, tensors, offset, length), parts: (offset, length) => shardParts(prefix, tensors, offset, length) });
  });
  const text = (name: string, s: string | Uint8Array) => {
    const bytes = typeof s === 'string' ? enc.encode(s) : s;
    files.set(name, { name, size: bytes.length, read: (o, l) => bytes.slice(o, o + l) });
  };
  text('config.json', JSON.stringify(configJson, null, 2));
  text('model.safetensors.index.json', JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  for (const [name, body] of Object.entries(opts.extraFiles ?? {})) text(name, body);
  return { config: cfg, files, shards, tensorBytes: total };
}

function readShard(prefix: Uint8Array, tensors: SyntheticTensor[], offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  const end = offset + length;
  if (offset < prefix.length) out.set(prefix.subarray(offset, Math.min(end, prefix.length)));
  for (const [t, a, b] of tensorsIn(tensors, offset, end)) tensorBytes(t, a - t.begin, out.subarray(a - offset, b - offset));
  return out;
}

/** The shard's tensors overlapping [offset, end), each with the overlap [a, b) in shard offsets. */
function* tensorsIn(tensors: SyntheticTensor[], offset: number, end: number): Generator<[SyntheticTensor, number, number]> {
  // First tensor that ends after `offset` (binary search: V3's shards hold thousands).
  let lo = 0, hi = tensors.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (tensors[mid].end <= offset) lo = mid + 1; else hi = mid; }
  for (let i = lo; i < tensors.length && tensors[i].begin < end; i++) {
    const t = tensors[i];
    yield [t, Math.max(offset, t.begin), Math.min(end, t.end)];
  }
}

/** readShard's bytes as pieces: the header's bytes, table views for matrices, new arrays for the small tensors. */
function shardParts(prefix: Uint8Array, tensors: SyntheticTensor[], offset: number, length: number): Uint8Array[] {
  const parts: Uint8Array[] = [];
  const end = offset + length;
  if (offset < prefix.length) parts.push(prefix.subarray(offset, Math.min(end, prefix.length)));
  for (const [t, a, b] of tensorsIn(tensors, offset, end)) {
    if (patterned(t)) parts.push(...patternViews(t, a - t.begin, b - a));
    else { const out = new Uint8Array(b - a); tensorBytes(t, a - t.begin, out); parts.push(out); }
  }
  return parts;
}

export interface SyntheticServer {
  /** Base URL of the repository, ending in '/'. */
  url: string;
  repo: SyntheticRepo;
  /** Bytes of bodies sent, per file and in total, and the requests seen (method, file, range header). */
  stats: { bytesSent: number; byFile: Map<string, number>; requests: { method: string; file: string; range: string | null }[] };
  resetStats(): void;
  close(): Promise<void>;
}

/** Largest body chunk generated at once (bounds the server's memory for multi-GB downloads). */
const CHUNK = 1 << 20;

/** Serves `syntheticRepo(config, opts)` on 127.0.0.1 (port 0: any free port). */
export async function serveSyntheticRepo(configJson: Record<string, unknown>, opts: SyntheticRepoOptions & { port?: number; host?: string } = {}): Promise<SyntheticServer> {
  const repo = syntheticRepo(configJson, opts);
  const stats: SyntheticServer['stats'] = { bytesSent: 0, byFile: new Map(), requests: [] };
  const server = createServer((req, res) => handle(repo, stats, req, res));
  // Node closes idle keep-alive sockets after 5 s by default; a loader busy quantising a layer for
  // longer then reuses a socket the server just closed and its next range request fails. CDNs keep
  // them far longer: so does this server.
  server.keepAliveTimeout = 10 * 60_000;
  server.headersTimeout = 10 * 60_000 + 1000;
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host}:${port}/`,
    repo,
    stats,
    resetStats() { stats.bytesSent = 0; stats.byFile.clear(); stats.requests.length = 0; },
    close: () => new Promise<void>((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); }),
  };
}

/** [start, end] (inclusive) of a single-range `Range` header, null when absent, 'bad' when unsatisfiable or malformed. */
export function parseRange(header: string | undefined, size: number): [number, number] | null | 'bad' {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return 'bad';
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return 'bad';
    return [Math.max(0, size - n), size - 1];
  }
  const a = Number(m[1]);
  const b = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (a >= size || b < a) return 'bad';
  return [a, b];
}

function handle(repo: SyntheticRepo, stats: SyntheticServer['stats'], req: IncomingMessage, res: ServerResponse): void {
  const name = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname.split('/').pop() ?? '');
  const range = req.headers.range ?? null;
  stats.requests.push({ method: req.method ?? '', file: name, range });
  const file = repo.files.get(name);
  if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { Allow: 'GET, HEAD' }).end(); return; }
  if (!file) { res.writeHead(404, { 'Content-Type': 'text/plain' }).end(`${name}: not found\n`); return; }
  const type = name.endsWith('.json') ? 'application/json' : 'application/octet-stream';
  const r = parseRange(range ?? undefined, file.size);
  if (r === 'bad') { res.writeHead(416, { 'Content-Range': `bytes */${file.size}` }).end(); return; }
  const [a, b] = r ?? [0, file.size - 1];
  const length = file.size === 0 ? 0 : b - a + 1;
  res.writeHead(r ? 206 : 200, {
    'Content-Type': type, 'Content-Length': String(length), 'Accept-Ranges': 'bytes',
    ...(r ? { 'Content-Range': `bytes ${a}-${b}/${file.size}` } : {}),
  });
  if (req.method === 'HEAD' || length === 0) { res.end(); return; }
  let pos = a;
  const end = a + length;
  const count = (n: number) => { stats.bytesSent += n; stats.byFile.set(name, (stats.byFile.get(name) ?? 0) + n); };
  // Generate chunk by chunk, pausing while the socket's buffer is full. Matrix bytes go out as views
  // of the pattern tables (no allocation, no copy: the tables never change).
  const pump = () => {
    while (pos < end) {
      const n = Math.min(CHUNK, end - pos);
      const parts = file.parts ? file.parts(pos, n) : [file.read(pos, n)];
      pos += n;
      count(n);
      let room = true;
      for (const p of parts) room = res.write(p);
      if (!room) { res.once('drain', pump); return; }
    }
    res.end();
  };
  res.on('close', () => { pos = end; });
  pump();
}
