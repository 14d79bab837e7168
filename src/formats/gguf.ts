/**
 * GGUF (llama.cpp's model file, versions 2 and 3), read from any random-access byte source:
 *
 *   "GGUF" u32 version, u64 tensor_count, u64 kv_count,
 *   kv_count × { string key, u32 value_type, value },
 *   tensor_count × { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset },
 *   padding to `general.alignment` (default 32), then the tensor data (offsets relative to its start).
 *
 * A string is a u64 byte length and UTF-8 bytes; an array is u32 element type, u64 count, elements.
 * Everything is little-endian. The reader only pulls the bytes it parses (in windows of at most
 * WINDOW bytes), so metadata arrives over HTTP range requests without reading tensor data, and every
 * length, count, offset and type is checked against the file before anything is allocated: hostile
 * files end in a FormatError (BAD_FORMAT) naming the field, never in a hang or a giant allocation.
 * Why not `@huggingface/gguf`: docs/gguf.md.
 */
import { FormatError, UnsupportedError } from '../errors';
import { ggmlType, type GgmlTypeInfo } from './gguf-blocks';

/** What the reader needs of a byte source (src/loader/source.ts ByteSource fits it). */
export interface RangeReader {
  readonly name: string;
  size(): Promise<number>;
  /** Exactly `length` bytes at `offset`. */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array>;
}

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS. */
export const GGUF_MAX_DIMS = 4;

export const GGUF_VALUE_TYPE = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;
export type GgufValueTypeName = keyof typeof GGUF_VALUE_TYPE;
const VALUE_TYPE_NAMES = Object.keys(GGUF_VALUE_TYPE) as GgufValueTypeName[];
/** Bytes of a fixed-size value, by type id (strings and arrays are variable). */
const FIXED_BYTES = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];

/**
 * Arrays keep their element type: numbers as typed arrays (u64/i64 as BigUint64Array/BigInt64Array,
 * bools as a Uint8Array of 0/1), strings as string[], nested arrays as GgufArray[].
 */
export interface GgufArray {
  type: GgufValueTypeName;
  values: Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array | BigUint64Array | BigInt64Array | string[] | GgufArray[];
}
/** u64/i64 scalars are numbers when they are safe integers, bigints otherwise. */
export type GgufScalar = number | bigint | boolean | string;
export interface GgufKv {
  type: GgufValueTypeName;
  value: GgufScalar | GgufArray;
}

export interface GgufTensorInfo {
  name: string;
  /** ggml order: ne[0] is the innermost (contiguous) dimension, e.g. [K, N] for an [N, K] matrix. */
  ne: number[];
  type: GgmlTypeInfo;
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

export interface GgufHeader {
  version: 2 | 3;
  metadata: Map<string, GgufKv>;
  /** In file order (ascending offset). */
  tensors: Map<string, GgufTensorInfo>;
  alignment: number;
  /** Where the tensor data section starts. */
  dataStart: number;
  fileSize: number;
}

/** Limits that keep a hostile header from asking for huge allocations (real files are far below). */
export const GGUF_LIMITS = {
  /** Bytes of one string (a chat template or a merges line is KBs; 16 MiB is far beyond any). */
  maxString: 16 << 20,
  /** Bytes of the whole header (metadata + tensor infos): a 256k-vocabulary tokenizer is ~10 MB. */
  maxHeader: 512 << 20,
  maxArrayDepth: 3,
};
/** Bytes pulled from the source per window while parsing. */
const WINDOW = 1 << 20;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A forward reader over a byte source: pulls windows as the parser needs them. */
class Cursor {
  private buf: Uint8Array = new Uint8Array(0);
  private bufStart = 0;
  private dv: DataView = new DataView(this.buf.buffer);
  pos = 0;
  constructor(private src: RangeReader, readonly size: number, private file: string, private signal?: AbortSignal) {}

  bad(msg: string, details: Record<string, unknown> = {}): never {
    throw new FormatError(`${this.file}: ${msg}`, { file: this.file, offset: this.pos, ...details });
  }

  /** Makes bytes [pos, pos + n) available; `what` names the field for the error. */
  async need(n: number, what: string): Promise<void> {
    if (!Number.isSafeInteger(n) || n < 0 || this.pos + n > this.size) this.bad(`${what} (${n} bytes at offset ${this.pos}) runs past the end of the ${this.size}-byte file`);
    if (this.pos + n > GGUF_LIMITS.maxHeader) this.bad(`${what}: the header passes ${GGUF_LIMITS.maxHeader} bytes (the reader's limit)`);
    const have = this.bufStart + this.buf.length;
    if (this.pos >= this.bufStart && this.pos + n <= have) return;
    const len = Math.min(this.size - this.pos, Math.max(n, WINDOW));
    const bytes = await this.src.read(this.pos, len, this.signal);
    if (bytes.length !== len) this.bad(`read ${bytes.length} of ${len} bytes`);
    this.buf = bytes;
    this.bufStart = this.pos;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private at(n: number): number {
    const o = this.pos - this.bufStart;
    this.pos += n;
    return o;
  }
  // Fixed-size reads after need(): DataView on the window.
  u8() { return this.dv.getUint8(this.at(1)); }
  i8() { return this.dv.getInt8(this.at(1)); }
  u16() { return this.dv.getUint16(this.at(2), true); }
  i16() { return this.dv.getInt16(this.at(2), true); }
  u32() { return this.dv.getUint32(this.at(4), true); }
  i32() { return this.dv.getInt32(this.at(4), true); }
  f32() { return this.dv.getFloat32(this.at(4), true); }
  f64() { return this.dv.getFloat64(this.at(8), true); }
  u64() { return this.dv.getBigUint64(this.at(8), true); }
  i64() { return this.dv.getBigInt64(this.at(8), true); }
  bytes(n: number): Uint8Array {
    const o = this.at(n);
    return this.buf.subarray(o, o + n);
  }

  async readU32(what: string) { await this.need(4, what); return this.u32(); }
  /** A u64 count or size that must be a safe integer no larger than `max`. */
  async readSize(what: string, max: number): Promise<number> {
    await this.need(8, what);
    const v = this.u64();
    if (v > BigInt(max)) this.bad(`${what} ${v} is out of range (at most ${max} here)`, { value: v.toString() });
    return Number(v);
  }
  async readString(what: string): Promise<string> {
    const n = await this.readSize(`${what} length`, Math.min(GGUF_LIMITS.maxString, this.size - this.pos - 8));
    await this.need(n, what);
    try {
      return utf8.decode(this.bytes(n));
    } catch {
      return this.bad(`${what} is not valid UTF-8`);
    }
  }
}

function valueTypeName(c: Cursor, id: number, what: string): GgufValueTypeName {
  const name = VALUE_TYPE_NAMES[id];
  if (name === undefined || !Number.isInteger(id)) c.bad(`${what}: unknown value type ${id} (GGUF defines 0..12)`, { valueType: id });
  return name;
}

const bigToNum = (v: bigint): number | bigint => (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);

async function readScalar(c: Cursor, t: number, what: string): Promise<GgufScalar> {
  if (t === GGUF_VALUE_TYPE.STRING) return c.readString(what);
  await c.need(FIXED_BYTES[t], what);
  switch (t) {
    case 0: return c.u8();
    case 1: return c.i8();
    case 2: return c.u16();
    case 3: return c.i16();
    case 4: return c.u32();
    case 5: return c.i32();
    case 6: return c.f32();
    case 7: {
      const b = c.u8();
      if (b > 1) c.bad(`${what}: bool byte ${b} is neither 0 nor 1`);
      return b === 1;
    }
    case 10: return bigToNum(c.u64());
    case 11: return bigToNum(c.i64());
    case 12: return c.f64();
    default: return c.bad(`${what}: value type ${t} is not a scalar`);
  }
}

async function readArray(c: Cursor, what: string, depth: number): Promise<GgufArray> {
  if (depth > GGUF_LIMITS.maxArrayDepth) c.bad(`${what}: arrays nested more than ${GGUF_LIMITS.maxArrayDepth} deep`);
  const et = await c.readU32(`${what} element type`);
  const type = valueTypeName(c, et, `${what} element type`);
  // Every element takes at least one byte (a string or array at least 8 / 12): the count must fit in the file.
  const minBytes = et === GGUF_VALUE_TYPE.STRING ? 8 : et === GGUF_VALUE_TYPE.ARRAY ? 12 : FIXED_BYTES[et];
  const n = await c.readSize(`${what} count`, Math.floor((c.size - c.pos - 8) / minBytes));
  if (et === GGUF_VALUE_TYPE.STRING) {
    const values: string[] = new Array(n);
    for (let i = 0; i < n; i++) values[i] = await c.readString(`${what}[${i}]`);
    return { type, values };
  }
  if (et === GGUF_VALUE_TYPE.ARRAY) {
    const values: GgufArray[] = new Array(n);
    for (let i = 0; i < n; i++) values[i] = await readArray(c, `${what}[${i}]`, depth + 1);
    return { type, values };
  }
  const bytes = FIXED_BYTES[et] * n;
  // Copied in windows (a tokenizer's scores array can be larger than one window).
  const raw = new Uint8Array(bytes);
  for (let o = 0; o < bytes;) {
    const take = Math.min(bytes - o, WINDOW);
    await c.need(take, what);
    raw.set(c.bytes(take), o);
    o += take;
  }
  const b = raw.buffer;
  switch (et) {
    case 0: return { type, values: raw };
    case 1: return { type, values: new Int8Array(b) };
    case 2: return { type, values: new Uint16Array(b) };
    case 3: return { type, values: new Int16Array(b) };
    case 4: return { type, values: new Uint32Array(b) };
    case 5: return { type, values: new Int32Array(b) };
    case 6: return { type, values: new Float32Array(b) };
    case 7: {
      for (let i = 0; i < n; i++) if (raw[i] > 1) c.bad(`${what}[${i}]: bool byte ${raw[i]} is neither 0 nor 1`);
      return { type, values: raw };
    }
    case 10: return { type, values: new BigUint64Array(b) };
    case 11: return { type, values: new BigInt64Array(b) };
    case 12: return { type, values: new Float64Array(b) };
    default: return c.bad(`${what}: unknown element type ${et}`);
  }
}

/** Bytes of a tensor of `ne` elements of type `t`, or a FormatError when ne[0] is not whole blocks or it cannot fit. */
function tensorBytes(c: Cursor, name: string, ne: number[], t: GgmlTypeInfo, room: number): number {
  if (ne[0] % t.blockSize !== 0) c.bad(`tensor '${name}': row length ${ne[0]} is not a multiple of ${t.name}'s block of ${t.blockSize}`, { tensor: name });
  let bytes = (ne[0] / t.blockSize) * t.blockBytes;
  for (let i = 1; i < ne.length; i++) {
    bytes *= ne[i];
    if (bytes > room) break;
  }
  if (bytes > room) c.bad(`tensor '${name}': shape [${ne}] of ${t.name} needs more bytes than the file's ${room}-byte data section`, { tensor: name });
  return bytes;
}

/** Parses a GGUF header from `src`. Tensor data is not read; its extent is checked against the file. */
export async function readGgufHeader(src: RangeReader, opts: { signal?: AbortSignal; name?: string } = {}): Promise<GgufHeader> {
  const file = opts.name ?? src.name;
  const size = await src.size();
  const c = new Cursor(src, size, file, opts.signal);
  if (size < 24) c.bad(`${size} bytes is too short for a GGUF file (magic, version and counts take 24)`);
  await c.need(24, 'header');
  const magic = c.u32();
  if (magic !== GGUF_MAGIC) c.bad(`not a GGUF file (magic 0x${magic.toString(16).padStart(8, '0')}, want "GGUF")`);
  const version = c.u32();
  if (version === 1) throw new UnsupportedError(`${file}: GGUF version 1 (32-bit counts, 2023) is not supported; re-convert it with a current llama.cpp`, { file, version });
  if (version !== 2 && version !== 3) c.bad(`unknown GGUF version ${version} (webmoe reads 2 and 3)`, { version });
  // A tensor info takes at least 8 + 4 + 8 + 4 + 8 bytes (empty name, ≥ 1 dim), a KV at least 8 + 4 + 1.
  const nTensors = await c.readSize('tensor count', Math.floor((size - c.pos - 8) / 32));
  const nKv = await c.readSize('metadata count', Math.floor((size - c.pos) / 13));

  const metadata = new Map<string, GgufKv>();
  for (let i = 0; i < nKv; i++) {
    const key = await c.readString(`metadata key ${i}`);
    if (metadata.has(key)) c.bad(`metadata key '${key}' appears twice`, { key });
    const vt = await c.readU32(`metadata '${key}' type`);
    const type = valueTypeName(c, vt, `metadata '${key}'`);
    const value = vt === GGUF_VALUE_TYPE.ARRAY ? await readArray(c, `metadata '${key}'`, 1) : await readScalar(c, vt, `metadata '${key}'`);
    metadata.set(key, { type, value });
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al) {
    // ggml: a u32, a power of two (ggml rejects 0 and non-powers); 1 GiB is beyond any real file.
    if (al.type !== 'UINT32' || typeof al.value !== 'number' || al.value === 0 || (al.value & (al.value - 1)) !== 0 || al.value > 1 << 30) {
      c.bad(`general.alignment must be a u32 power of two, got ${al.type} ${String(al.value)}`);
    }
    alignment = al.value as number;
  }

  const infos: { name: string; ne: number[]; type: GgmlTypeInfo; offset: number }[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = await c.readString(`tensor ${i} name`);
    if (seen.has(name)) c.bad(`tensor '${name}' appears twice`, { tensor: name });
    seen.add(name);
    const nd = await c.readU32(`tensor '${name}' n_dims`);
    if (nd < 1 || nd > GGUF_MAX_DIMS) c.bad(`tensor '${name}': ${nd} dimensions (GGUF allows 1..${GGUF_MAX_DIMS})`, { tensor: name });
    const ne: number[] = [];
    for (let d = 0; d < nd; d++) ne.push(await c.readSize(`tensor '${name}' ne[${d}]`, Number.MAX_SAFE_INTEGER));
    const tid = await c.readU32(`tensor '${name}' type`);
    const type = ggmlType(tid) ?? c.bad(`tensor '${name}': unknown ggml type ${tid}`, { tensor: name, type: tid });
    const offset = await c.readSize(`tensor '${name}' offset`, size);
    if (offset % alignment !== 0) c.bad(`tensor '${name}': data offset ${offset} is not a multiple of the alignment ${alignment}`, { tensor: name });
    infos.push({ name, ne, type, offset });
  }
  const dataStart = Math.ceil(c.pos / alignment) * alignment;
  if (dataStart > size) c.bad(`the data section would start at ${dataStart}, past the end of the ${size}-byte file`);
  const room = size - dataStart;
  const list: GgufTensorInfo[] = infos.map((t) => {
    const bytes = tensorBytes(c, t.name, t.ne, t.type, room);
    if (t.offset + bytes > room) c.bad(`tensor '${t.name}' [${t.offset}, ${t.offset + bytes}) runs past the end of the ${room}-byte data section (truncated file?)`, { tensor: t.name });
    return { name: t.name, ne: t.ne, type: t.type, begin: dataStart + t.offset, end: dataStart + t.offset + bytes };
  });
  // Tensors may be in any order in the infos, but must not overlap.
  list.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < list.length; i++) {
    const p = list[i - 1], t = list[i];
    if (t.begin < p.end) c.bad(`tensor '${t.name}' [${t.begin - dataStart}, ${t.end - dataStart}) overlaps '${p.name}' [${p.begin - dataStart}, ${p.end - dataStart})`, { tensor: t.name, other: p.name });
  }
  return { version: version as 2 | 3, metadata, tensors: new Map(list.map((t) => [t.name, t])), alignment, dataStart, fileSize: size };
}

// ------------------------------------------------------------------------------------------ metadata

/** A metadata value as a JS number (ints, floats), or undefined when absent; a FormatError on a non-number. */
export function metaNumber(h: { metadata: Map<string, GgufKv> }, key: string): number | undefined {
  const kv = h.metadata.get(key);
  if (!kv) return undefined;
  if (typeof kv.value === 'number') return kv.value;
  if (typeof kv.value === 'bigint') throw new FormatError(`GGUF metadata '${key}' = ${kv.value} is too large`, { key });
  throw new FormatError(`GGUF metadata '${key}' must be a number, got ${kv.type}`, { key });
}

export function metaString(h: { metadata: Map<string, GgufKv> }, key: string): string | undefined {
  const kv = h.metadata.get(key);
  if (!kv) return undefined;
  if (typeof kv.value !== 'string') throw new FormatError(`GGUF metadata '${key}' must be a string, got ${kv.type}`, { key });
  return kv.value;
}

export function metaBool(h: { metadata: Map<string, GgufKv> }, key: string): boolean | undefined {
  const kv = h.metadata.get(key);
  if (!kv) return undefined;
  if (typeof kv.value !== 'boolean') throw new FormatError(`GGUF metadata '${key}' must be a bool, got ${kv.type}`, { key });
  return kv.value;
}

export function metaArray(h: { metadata: Map<string, GgufKv> }, key: string): GgufArray | undefined {
  const kv = h.metadata.get(key);
  if (!kv) return undefined;
  if (kv.type !== 'ARRAY') throw new FormatError(`GGUF metadata '${key}' must be an array, got ${kv.type}`, { key });
  return kv.value as GgufArray;
}

// -------------------------------------------------------------------------------------------- splits

/** `<prefix>-00001-of-00003.gguf` (llama.cpp's gguf-split naming): prefix, split number (1-based), count. */
const SPLIT_NAME = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/;

export function parseSplitName(name: string): { prefix: string; no: number; count: number } | null {
  const m = SPLIT_NAME.exec(name);
  if (!m) return null;
  const no = Number(m[2]), count = Number(m[3]);
  if (no < 1 || count < 1 || no > count) return null;
  return { prefix: m[1], no, count };
}

/** The file names of every split of the model whose first (or any) split is `name`; [name] for a single file. */
export function ggufSplitNames(name: string): string[] {
  const s = parseSplitName(name);
  if (!s) return [name];
  return Array.from({ length: s.count }, (_, i) => `${s.prefix}-${String(i + 1).padStart(5, '0')}-of-${String(s.count).padStart(5, '0')}.gguf`);
}

export interface GgufSplitTensor extends GgufTensorInfo {
  /** Index of the file (split) holding the tensor. */
  file: number;
}

export interface GgufModelHeader {
  /** Metadata of the first split (llama.cpp keeps the model's metadata there; later splits hold split.* only). */
  metadata: Map<string, GgufKv>;
  /** Every tensor of every split, in (split, offset) order. */
  tensors: Map<string, GgufSplitTensor>;
  splits: GgufHeader[];
}

/**
 * Reads the headers of a model's splits (or one unsplit file) and checks the split keys: every split has
 * `split.no` = its index, the same `split.count` = the number of files, and the tensor counts add up to
 * `split.tensors.count`. A tensor may be in one split only.
 */
export async function readGgufModel(sources: RangeReader[], opts: { signal?: AbortSignal } = {}): Promise<GgufModelHeader> {
  if (sources.length === 0) throw new FormatError('readGgufModel: no files');
  const splits: GgufHeader[] = [];
  for (const s of sources) splits.push(await readGgufHeader(s, opts));
  const first = splits[0];
  const count = metaNumber(first, 'split.count');
  if (count === undefined && sources.length > 1) throw new FormatError(`${sources[0].name}: ${sources.length} files given, but the first has no split.count`, { file: sources[0].name });
  if (count !== undefined) {
    if (count !== sources.length) throw new FormatError(`${sources[0].name}: split.count is ${count}, but ${sources.length} files were given`, { file: sources[0].name, splitCount: count });
    const total = metaNumber(first, 'split.tensors.count');
    let sum = 0;
    splits.forEach((h, i) => {
      const no = metaNumber(h, 'split.no'), cnt = metaNumber(h, 'split.count');
      if (no !== i || cnt !== count) throw new FormatError(`${sources[i].name}: split.no ${no} / split.count ${cnt}, expected ${i} / ${count} (files out of order or from different models?)`, { file: sources[i].name });
      sum += h.tensors.size;
    });
    if (total !== undefined && total !== sum) throw new FormatError(`${sources[0].name}: split.tensors.count is ${total}, but the splits hold ${sum} tensors`, { file: sources[0].name });
  }
  const tensors = new Map<string, GgufSplitTensor>();
  splits.forEach((h, i) => {
    for (const t of h.tensors.values()) {
      if (tensors.has(t.name)) throw new FormatError(`tensor '${t.name}' is in ${sources[tensors.get(t.name)!.file].name} and ${sources[i].name}`, { tensor: t.name });
      tensors.set(t.name, { ...t, file: i });
    }
  });
  return { metadata: first.metadata, tensors, splits };
}

/** A tensor's raw bytes from its file (exactly end − begin bytes). */
export async function readGgufTensor(sources: RangeReader[], t: GgufSplitTensor | GgufTensorInfo, signal?: AbortSignal): Promise<Uint8Array> {
  const src = sources['file' in t ? t.file : 0];
  const bytes = await src.read(t.begin, t.end - t.begin, signal);
  if (bytes.length !== t.end - t.begin) throw new FormatError(`${src.name}: read ${bytes.length} of ${t.end - t.begin} bytes of '${t.name}'`, { file: src.name, tensor: t.name });
  return bytes;
}
