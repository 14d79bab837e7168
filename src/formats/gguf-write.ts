/**
 * GGUF writer (version 3): metadata in the reader's own value representation (GgufKv, so a read file
 * writes back byte for byte), tensors with raw block bytes (gguf-blocks.ts quantises), data aligned to
 * `general.alignment` (default 32), in the order given. Layout: docs/gguf.md.
 */
import { ShapeError } from '../errors';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_MAX_DIMS, GGUF_VALUE_TYPE, type GgufArray, type GgufKv, type GgufValueTypeName } from './gguf';
import { ggmlTypeByName, type GgmlTypeName } from './gguf-blocks';

/** A tensor's entry in the file's header: what the data will be, before it exists. */
export interface GgufTensorInfoToWrite {
  name: string;
  type: GgmlTypeName;
  /** ggml order (ne[0] innermost): [K, N] for an [N, K] matrix. */
  ne: number[];
}

export interface GgufTensorToWrite extends GgufTensorInfoToWrite {
  data: Uint8Array;
}

export interface GgufToWrite<T extends GgufTensorInfoToWrite = GgufTensorToWrite> {
  /** Written in insertion order. */
  metadata: Map<string, GgufKv> | [string, GgufKv][];
  tensors: T[];
  /** Power of two; also written as general.alignment (u32) when not 32 and not already in the metadata. */
  alignment?: number;
}

/** Where everything of a GGUF file goes, from its metadata and tensor entries alone. */
export interface GgufLayout {
  /** The header (metadata and tensor entries), zero-padded to where the data starts. */
  header: Uint8Array;
  /** Each tensor's data bytes, and its offset from the start of the data section (aligned). */
  sizes: number[];
  offsets: number[];
  fileBytes: number;
}

/** Small constructors for metadata values. */
export const kv = {
  u8: (v: number): GgufKv => ({ type: 'UINT8', value: v }),
  i8: (v: number): GgufKv => ({ type: 'INT8', value: v }),
  u16: (v: number): GgufKv => ({ type: 'UINT16', value: v }),
  i16: (v: number): GgufKv => ({ type: 'INT16', value: v }),
  u32: (v: number): GgufKv => ({ type: 'UINT32', value: v }),
  i32: (v: number): GgufKv => ({ type: 'INT32', value: v }),
  u64: (v: number | bigint): GgufKv => ({ type: 'UINT64', value: v }),
  i64: (v: number | bigint): GgufKv => ({ type: 'INT64', value: v }),
  f32: (v: number): GgufKv => ({ type: 'FLOAT32', value: v }),
  f64: (v: number): GgufKv => ({ type: 'FLOAT64', value: v }),
  bool: (v: boolean): GgufKv => ({ type: 'BOOL', value: v }),
  str: (v: string): GgufKv => ({ type: 'STRING', value: v }),
  strings: (v: string[]): GgufKv => ({ type: 'ARRAY', value: { type: 'STRING', values: v } }),
  i32s: (v: ArrayLike<number>): GgufKv => ({ type: 'ARRAY', value: { type: 'INT32', values: Int32Array.from(v) } }),
  f32s: (v: ArrayLike<number>): GgufKv => ({ type: 'ARRAY', value: { type: 'FLOAT32', values: Float32Array.from(v) } }),
};

/** Growable little-endian byte sink. */
class Sink {
  buf = new Uint8Array(1 << 16);
  dv = new DataView(this.buf.buffer);
  len = 0;
  private room(n: number) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length;
    while (cap < this.len + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.dv = new DataView(b.buffer);
  }
  u8(v: number) { this.room(1); this.dv.setUint8(this.len, v); this.len += 1; }
  i8(v: number) { this.room(1); this.dv.setInt8(this.len, v); this.len += 1; }
  u16(v: number) { this.room(2); this.dv.setUint16(this.len, v, true); this.len += 2; }
  i16(v: number) { this.room(2); this.dv.setInt16(this.len, v, true); this.len += 2; }
  u32(v: number) { this.room(4); this.dv.setUint32(this.len, v, true); this.len += 4; }
  i32(v: number) { this.room(4); this.dv.setInt32(this.len, v, true); this.len += 4; }
  f32(v: number) { this.room(4); this.dv.setFloat32(this.len, v, true); this.len += 4; }
  f64(v: number) { this.room(8); this.dv.setFloat64(this.len, v, true); this.len += 8; }
  u64(v: number | bigint) { this.room(8); this.dv.setBigUint64(this.len, BigInt(v), true); this.len += 8; }
  i64(v: number | bigint) { this.room(8); this.dv.setBigInt64(this.len, BigInt(v), true); this.len += 8; }
  bytes(b: Uint8Array) { this.room(b.length); this.buf.set(b, this.len); this.len += b.length; }
  str(s: string) { const b = new TextEncoder().encode(s); this.u64(b.length); this.bytes(b); }
}

function writeScalar(s: Sink, type: GgufValueTypeName, v: unknown, what: string) {
  const num = () => {
    if (typeof v !== 'number' && typeof v !== 'bigint') throw new ShapeError(`writeGguf: ${what}: ${type} needs a number, got ${typeof v}`);
    return v;
  };
  switch (type) {
    case 'UINT8': s.u8(Number(num())); break;
    case 'INT8': s.i8(Number(num())); break;
    case 'UINT16': s.u16(Number(num())); break;
    case 'INT16': s.i16(Number(num())); break;
    case 'UINT32': s.u32(Number(num())); break;
    case 'INT32': s.i32(Number(num())); break;
    case 'FLOAT32': s.f32(Number(num())); break;
    case 'FLOAT64': s.f64(Number(num())); break;
    case 'UINT64': s.u64(num()); break;
    case 'INT64': s.i64(num()); break;
    case 'BOOL': s.u8(v ? 1 : 0); break;
    case 'STRING':
      if (typeof v !== 'string') throw new ShapeError(`writeGguf: ${what}: STRING needs a string`);
      s.str(v);
      break;
    default: throw new ShapeError(`writeGguf: ${what}: ${type} is not a scalar type`);
  }
}

function writeArray(s: Sink, a: GgufArray, what: string) {
  s.u32(GGUF_VALUE_TYPE[a.type]);
  const vals = a.values as ArrayLike<unknown>;
  s.u64(vals.length);
  for (let i = 0; i < vals.length; i++) {
    if (a.type === 'ARRAY') writeArray(s, vals[i] as GgufArray, `${what}[${i}]`);
    else writeScalar(s, a.type, vals[i], `${what}[${i}]`);
  }
}

/** The header and data layout of a GGUF v3 file (validates names, shapes and types). */
export function ggufLayout(f: GgufToWrite<GgufTensorInfoToWrite>): GgufLayout {
  const alignment = f.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) throw new ShapeError(`writeGguf: alignment ${alignment} is not a power of two`);
  const meta = new Map(f.metadata instanceof Map ? f.metadata : f.metadata);
  if (alignment !== GGUF_DEFAULT_ALIGNMENT && !meta.has('general.alignment')) meta.set('general.alignment', kv.u32(alignment));
  const s = new Sink();
  s.u32(GGUF_MAGIC);
  s.u32(3);
  s.u64(f.tensors.length);
  s.u64(meta.size);
  for (const [key, v] of meta) {
    s.str(key);
    s.u32(GGUF_VALUE_TYPE[v.type]);
    if (v.type === 'ARRAY') writeArray(s, v.value as GgufArray, key);
    else writeScalar(s, v.type, v.value, key);
  }
  const names = new Set<string>();
  let offset = 0;
  const offsets: number[] = [], sizes: number[] = [];
  for (const t of f.tensors) {
    const info = ggmlTypeByName(t.type);
    if (!info) throw new ShapeError(`writeGguf: tensor '${t.name}': unknown type ${t.type}`);
    if (names.has(t.name)) throw new ShapeError(`writeGguf: tensor '${t.name}' given twice`);
    names.add(t.name);
    if (t.ne.length < 1 || t.ne.length > GGUF_MAX_DIMS || t.ne.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new ShapeError(`writeGguf: tensor '${t.name}': bad shape [${t.ne}]`);
    if (t.ne[0] % info.blockSize) throw new ShapeError(`writeGguf: tensor '${t.name}': ne[0] = ${t.ne[0]} is not a multiple of ${t.type}'s block of ${info.blockSize}`);
    const need = (t.ne.reduce((a, d) => a * d, 1) / info.blockSize) * info.blockBytes;
    s.str(t.name);
    s.u32(t.ne.length);
    for (const d of t.ne) s.u64(d);
    s.u32(info.id);
    s.u64(offset);
    offsets.push(offset);
    sizes.push(need);
    offset = Math.ceil((offset + need) / alignment) * alignment;
  }
  const dataStart = Math.ceil(s.len / alignment) * alignment;
  const header = new Uint8Array(dataStart);
  header.set(s.buf.subarray(0, s.len));
  const fileBytes = dataStart + (f.tensors.length ? offsets[offsets.length - 1] + sizes[sizes.length - 1] : 0);
  return { header, sizes, offsets, fileBytes };
}

/** Serialises a GGUF v3 file in memory. */
export function writeGguf(f: GgufToWrite): Uint8Array {
  const l = ggufLayout(f);
  const out = new Uint8Array(l.fileBytes);
  out.set(l.header);
  f.tensors.forEach((t, i) => {
    if (t.data.length !== l.sizes[i]) throw new ShapeError(`writeGguf: tensor '${t.name}': ${t.data.length} bytes, but [${t.ne}] of ${t.type} is ${l.sizes[i]}`);
    out.set(t.data, l.header.length + l.offsets[i]);
  });
  return out;
}

/**
 * Writes a GGUF v3 file piece by piece, in file order: the header, then each tensor's data as
 * `data(i)` yields it (any number of chunks), then the padding to the next tensor. Only the chunk in
 * hand is held, so a file far bigger than memory can be written. A tensor whose chunks do not add up
 * to its size is a ShapeError (thrown before anything past it is written). Returns the file's bytes.
 */
export async function writeGgufStream(f: GgufToWrite<GgufTensorInfoToWrite>, data: (index: number) => AsyncIterable<Uint8Array> | Iterable<Uint8Array>, write: (bytes: Uint8Array) => Promise<void> | void): Promise<number> {
  const l = ggufLayout(f);
  await write(l.header);
  let pos = 0; // within the data section
  for (let i = 0; i < f.tensors.length; i++) {
    if (l.offsets[i] > pos) await write(new Uint8Array(l.offsets[i] - pos));
    pos = l.offsets[i];
    let got = 0;
    for await (const chunk of data(i)) {
      if (got + chunk.length > l.sizes[i]) break;
      await write(chunk);
      got += chunk.length;
    }
    if (got !== l.sizes[i]) {
      const t = f.tensors[i];
      throw new ShapeError(`writeGguf: tensor '${t.name}': data does not add up to the ${l.sizes[i]} bytes [${t.ne}] of ${t.type} takes (${got} written before it stopped or overran)`);
    }
    pos += got;
  }
  return l.fileBytes;
}
