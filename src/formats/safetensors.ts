/**
 * safetensors: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": { k: v } }`, then the data
 * (offsets relative to the byte after the header). The reader is strict, like the reference Rust
 * implementation: the tensors must tile the data section exactly (no overlap, no gap, nothing left
 * over), byte counts must match dtype × shape, and every problem is a FormatError naming the tensor.
 */
import { FormatError, ShapeError, UnsupportedError, WebMoeError } from '../errors';
import { bf16ArrayToF32, f16ArrayToF32, fp8e4m3ArrayToF32 } from '../util/half';
import { parseJsonStrict } from './json-strict';

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'U16' | 'U32' | 'BOOL';

/** Bytes per element. */
export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, U16: 2, U32: 4, BOOL: 1,
};
/** Dtypes the safetensors format defines that webmoe does not read. */
const KNOWN_UNSUPPORTED = new Set(['F8_E5M2', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'U64', 'C64']);

export function isSafetensorsDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** In file order (ascending begin). */
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** N, the JSON length. */
  headerBytes: number;
  /** 8 + N: where tensor data starts. */
  dataStart: number;
  fileSize: number;
}

/** The format's limit on the JSON header (safetensors MAX_HEADER_SIZE). */
export const MAX_HEADER_BYTES = 100_000_000;

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Reads N from the first 8 bytes and checks it against the file size and the format's limit.
 * Returns N. Use it to know how many bytes to fetch before parseSafetensorsHeader.
 */
export function readHeaderLength(first8: Uint8Array, fileSize: number, file = 'safetensors file'): number {
  if (fileSize < 8 || first8.length < 8) throw new FormatError(`${file}: ${fileSize} bytes is too short for a safetensors file (needs an 8-byte header length)`, { file });
  const dv = new DataView(first8.buffer, first8.byteOffset, 8);
  const lo = dv.getUint32(0, true), hi = dv.getUint32(4, true);
  const n = hi * 2 ** 32 + lo;
  if (n > MAX_HEADER_BYTES) throw new FormatError(`${file}: header length ${n} is over the format's limit of ${MAX_HEADER_BYTES} bytes`, { file, headerBytes: n });
  if (8 + n > fileSize) throw new FormatError(`${file}: header length ${n} runs past the end of the ${fileSize}-byte file`, { file, headerBytes: n, fileSize });
  if (n < 2) throw new FormatError(`${file}: header length ${n} is too small for a JSON object`, { file, headerBytes: n });
  return n;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses and validates the header. `prefix` holds at least the first 8 + N bytes of the file. */
export function parseSafetensorsHeader(prefix: Uint8Array, fileSize: number, file = 'safetensors file'): SafetensorsHeader {
  const headerBytes = readHeaderLength(prefix, fileSize, file);
  const dataStart = 8 + headerBytes;
  if (prefix.length < dataStart) throw new FormatError(`${file}: need ${dataStart} header bytes, got ${prefix.length}`, { file });
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(prefix.subarray(8, dataStart));
  } catch {
    throw new FormatError(`${file}: header is not valid UTF-8`, { file });
  }
  if (!text.startsWith('{')) throw new FormatError(`${file}: header does not start with '{'`, { file });
  const json = parseJsonStrict(text, { what: `${file} header`, maxDepth: 8 });
  if (!isPlainObject(json)) throw new FormatError(`${file}: header is not a JSON object`, { file });

  const dataBytes = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const list: TensorInfo[] = [];
  for (const name of Object.keys(json)) {
    const v = json[name];
    if (name === '__metadata__') {
      if (!isPlainObject(v)) throw new FormatError(`${file}: __metadata__ must be an object of strings`, { file });
      metadata = {};
      for (const k of Object.keys(v)) {
        if (typeof v[k] !== 'string') throw new FormatError(`${file}: __metadata__.${k} must be a string, got ${typeof v[k]}`, { file, key: k });
        metadata[k] = v[k] as string;
      }
      continue;
    }
    const bad = (msg: string): never => {
      throw new FormatError(`${file}: tensor '${name}': ${msg}`, { file, tensor: name });
    };
    if (!isPlainObject(v)) bad('entry is not an object');
    const e = v as Record<string, unknown>;
    const dtype = e.dtype;
    if (typeof dtype !== 'string') bad('missing dtype');
    if (!isSafetensorsDtype(dtype)) {
      if (KNOWN_UNSUPPORTED.has(dtype as string)) throw new UnsupportedError(`${file}: tensor '${name}': dtype ${dtype} is not supported`, { file, tensor: name, dtype });
      bad(`unknown dtype ${JSON.stringify(dtype)}`);
    }
    const shape = e.shape;
    if (!Array.isArray(shape)) bad('shape is not an array');
    const sh = shape as unknown[];
    if (sh.length > 8) bad(`shape has ${sh.length} dimensions`);
    for (const d of sh) if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) bad(`invalid dimension ${JSON.stringify(d)} in shape ${JSON.stringify(sh)}`);
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2) bad('data_offsets must be [begin, end]');
    const [b, en] = offs as unknown[];
    if (typeof b !== 'number' || typeof en !== 'number' || !Number.isSafeInteger(b) || !Number.isSafeInteger(en) || b < 0 || en < 0)
      bad(`invalid data_offsets ${JSON.stringify(offs)}`);
    const begin = b as number, end = en as number;
    if (end < begin) bad(`data_offsets [${begin}, ${end}] end before begin`);
    if (end > dataBytes) bad(`data_offsets [${begin}, ${end}] run past the end of the data (${dataBytes} bytes)`);
    // Element count with an early exit so a hostile shape cannot overflow: the bytes must fit in the file.
    let count = 1;
    for (const d of sh as number[]) {
      count *= d;
      if (count * DTYPE_BYTES[dtype as SafetensorsDtype] > dataBytes) bad(`shape ${JSON.stringify(sh)} × ${dtype} needs more bytes than the file's ${dataBytes}-byte data section`);
    }
    const need = count * DTYPE_BYTES[dtype as SafetensorsDtype];
    if (need !== end - begin) bad(`shape ${JSON.stringify(sh)} × ${dtype} is ${need} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    list.push({ name, dtype: dtype as SafetensorsDtype, shape: sh as number[], begin: dataStart + begin, end: dataStart + end });
  }
  // The tensors must tile the data section: sorted by begin, each starts where the last ended.
  list.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = dataStart;
  let prev: TensorInfo | null = null;
  for (const t of list) {
    if (t.begin < pos) throw new FormatError(`${file}: tensor '${t.name}' [${t.begin - dataStart}, ${t.end - dataStart}) overlaps '${prev!.name}' [${prev!.begin - dataStart}, ${prev!.end - dataStart})`, { file, tensor: t.name, other: prev!.name });
    if (t.begin > pos) throw new FormatError(`${file}: gap of ${t.begin - pos} bytes before tensor '${t.name}' (data offset ${t.begin - dataStart})`, { file, tensor: t.name });
    pos = t.end;
    prev = t;
  }
  if (pos !== fileSize) throw new FormatError(`${file}: ${fileSize - pos} bytes after the last tensor are not described by the header`, { file });
  const tensors = new Map<string, TensorInfo>();
  for (const t of list) tensors.set(t.name, t);
  return { tensors, metadata, headerBytes, dataStart, fileSize };
}

export interface TensorView {
  dtype: SafetensorsDtype;
  shape: number[];
  /** The raw little-endian bytes (a view into the file bytes, not a copy). */
  data: Uint8Array;
}

/** A whole file in memory. */
export function parseSafetensors(bytes: Uint8Array, file = 'safetensors file'): { header: SafetensorsHeader; tensor(name: string): TensorView } {
  const header = parseSafetensorsHeader(bytes, bytes.length, file);
  return {
    header,
    tensor(name: string): TensorView {
      const t = header.tensors.get(name);
      if (!t) throw new WebMoeError('NOT_FOUND', `${file}: no tensor '${name}'`, { file, tensor: name });
      return { dtype: t.dtype, shape: t.shape.slice(), data: bytes.subarray(t.begin, t.end) };
    },
  };
}

export interface TensorToWrite {
  dtype: SafetensorsDtype;
  shape: number[];
  data: ArrayBufferView;
}

/** Serialises tensors (in the given order) to a safetensors file; the header is space-padded to 8 bytes. */
export function writeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    if (!isSafetensorsDtype(t.dtype)) throw new ShapeError(`writeSafetensors: tensor '${name}': unknown dtype ${t.dtype}`);
    for (const d of t.shape) if (!Number.isSafeInteger(d) || d < 0) throw new ShapeError(`writeSafetensors: tensor '${name}': bad shape ${JSON.stringify(t.shape)}`);
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const need = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (bytes.length !== need) throw new ShapeError(`writeSafetensors: tensor '${name}': ${bytes.length} bytes, but ${JSON.stringify(t.shape)} × ${t.dtype} needs ${need}`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
    parts.push(bytes);
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, json.length, true);
  dv.setUint32(4, 0, true);
  out.set(json, 8);
  let p = 8 + json.length;
  for (const part of parts) {
    out.set(part, p);
    p += part.length;
  }
  return out;
}

/** Block-wise FP8 dequantisation scale: W[i,j] = fp8(Wq[i,j]) · scaleInv[⌊i/b0⌋, ⌊j/b1⌋]. */
export interface BlockScale {
  /** [ceil(rows/b0), ceil(cols/b1)] float32, row-major. */
  scaleInv: Float32Array;
  /** The weight's shape [rows, cols] (leading dims are folded into rows). */
  shape: number[];
  /** Block size [b0, b1]; default [128, 128]. */
  block?: [number, number];
}

/** A copy of `bytes` as an aligned typed array of the given element type (no copy if already aligned). */
function aligned<T>(bytes: Uint8Array, bpe: number, make: (buf: ArrayBufferLike, off: number, len: number) => T): T {
  if (bytes.length % bpe !== 0) throw new FormatError(`byte length ${bytes.length} is not a multiple of ${bpe}`);
  if (bytes.byteOffset % bpe === 0) return make(bytes.buffer, bytes.byteOffset, bytes.length / bpe);
  const c = bytes.slice();
  return make(c.buffer, 0, c.length / bpe);
}

/** Converts little-endian tensor bytes to float32 (FP8 dequantised with its block scale when given). */
export function toFloat32(dtype: SafetensorsDtype, bytes: Uint8Array, scale?: BlockScale, into?: Float32Array<ArrayBuffer>): Float32Array {
  let out: Float32Array;
  // `into`: F16/BF16/FP8 values are written there (exactly as many as the tensor has) instead of a new array.
  const dest = (n: number) => {
    if (into && into.length !== n) throw new ShapeError(`toFloat32: ${n} values into an array of ${into.length}`);
    return into ?? new Float32Array(n);
  };
  switch (dtype) {
    case 'F32': out = aligned(bytes, 4, (b, o, l) => new Float32Array(b, o, l)).slice(); break;
    case 'F16': out = f16ArrayToF32(aligned(bytes, 2, (b, o, l) => new Uint16Array(b, o, l)), dest(bytes.length >> 1)); break;
    case 'BF16': out = bf16ArrayToF32(aligned(bytes, 2, (b, o, l) => new Uint16Array(b, o, l)), dest(bytes.length >> 1)); break;
    case 'F8_E4M3': out = fp8e4m3ArrayToF32(bytes, dest(bytes.length)); break;
    case 'F64': out = Float32Array.from(aligned(bytes, 8, (b, o, l) => new Float64Array(b, o, l))); break;
    case 'I64': out = Float32Array.from(aligned(bytes, 8, (b, o, l) => new BigInt64Array(b, o, l)), (v) => Number(v)); break;
    case 'I32': out = Float32Array.from(aligned(bytes, 4, (b, o, l) => new Int32Array(b, o, l))); break;
    case 'U32': out = Float32Array.from(aligned(bytes, 4, (b, o, l) => new Uint32Array(b, o, l))); break;
    case 'I16': out = Float32Array.from(aligned(bytes, 2, (b, o, l) => new Int16Array(b, o, l))); break;
    case 'U16': out = Float32Array.from(aligned(bytes, 2, (b, o, l) => new Uint16Array(b, o, l))); break;
    case 'I8': out = Float32Array.from(new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length)); break;
    case 'U8': case 'BOOL': out = Float32Array.from(bytes); break;
    default: throw new UnsupportedError(`toFloat32: dtype ${dtype as string} is not supported`);
  }
  if (scale) applyBlockScale(out, scale);
  return out;
}

/** Multiplies `w` (row-major `shape`) in place by its block scale. */
export function applyBlockScale(w: Float32Array, scale: BlockScale): void {
  const [b0, b1] = scale.block ?? [128, 128];
  const cols = scale.shape[scale.shape.length - 1] ?? 1;
  const rows = scale.shape.length > 1 ? numel(scale.shape) / cols : 1;
  if (rows * cols !== w.length) throw new ShapeError(`block scale: weight shape ${JSON.stringify(scale.shape)} does not match ${w.length} values`);
  const sr = Math.ceil(rows / b0), sc = Math.ceil(cols / b1);
  if (scale.scaleInv.length !== sr * sc) throw new ShapeError(`block scale: weight_scale_inv has ${scale.scaleInv.length} values, expected [${sr}, ${sc}] for weight [${rows}, ${cols}] with block [${b0}, ${b1}]`);
  // Block by block along the row (no per-element division): a typed-array loop.
  const si = scale.scaleInv;
  for (let i = 0; i < rows; i++) {
    const srow = Math.floor(i / b0) * sc;
    const base = i * cols;
    for (let j0 = 0, b = srow; j0 < cols; j0 += b1, b++) {
      const f = si[b];
      for (let j = base + j0, e = base + Math.min(cols, j0 + b1); j < e; j++) w[j] *= f;
    }
  }
}

/**
 * Per float dtype: the exponent (FP8: exponent and mantissa) mask of one element, repeated over a 32-bit
 * word, and the lowest bit of each element's field. An element is non-finite when its masked field is all
 * ones; adding the low bit then carries into the element's sign bit, which the mask cleared: so
 * `((w & mask) + low) & signs` is nonzero iff some element of word w is NaN or ±Inf, without a branch
 * per element and without the carry reaching the next element.
 */
const NONFINITE_WORD: Partial<Record<SafetensorsDtype, { size: number; mask: number; low: number; signs: number }>> = {
  F32: { size: 4, mask: 0x7f800000, low: 0x00800000, signs: 0x80000000 },
  BF16: { size: 2, mask: 0x7f807f80, low: 0x00800080, signs: 0x80008000 },
  F16: { size: 2, mask: 0x7c007c00, low: 0x04000400, signs: 0x80008000 },
  F8_E4M3: { size: 1, mask: 0x7f7f7f7f, low: 0x01010101, signs: 0x80808080 },
};

/** Number of NaN/±Inf values in tensor bytes of a float dtype (0 for integer dtypes). */
export function countNonFinite(dtype: SafetensorsDtype, bytes: Uint8Array): number {
  const wd = NONFINITE_WORD[dtype];
  if (wd) {
    // Fast scan (the loader runs it on every tensor it reads): OR the per-word flags over 32-bit words
    // of the aligned middle; only a tensor that has a non-finite value is counted element by element.
    const head = Math.min(bytes.length, (4 - (bytes.byteOffset & 3)) & 3);
    if (head % wd.size === 0) {
      const words = (bytes.length - head) >> 2;
      const w = new Uint32Array(bytes.buffer, bytes.byteOffset + head, words);
      const { mask, low } = wd;
      let any = 0;
      for (let i = 0; i < words; i++) any |= (w[i] & mask) + low;
      if ((any & wd.signs) === 0 && countNonFiniteScalar(dtype, bytes.subarray(0, head)) === 0 && countNonFiniteScalar(dtype, bytes.subarray(head + 4 * words)) === 0) return 0;
    }
  }
  return countNonFiniteScalar(dtype, bytes);
}

function countNonFiniteScalar(dtype: SafetensorsDtype, bytes: Uint8Array): number {
  let c = 0;
  switch (dtype) {
    case 'F32': {
      const n = bytes.length >> 2;
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
      for (let i = 0; i < n; i++) if ((dv.getUint32(i * 4, true) & 0x7f800000) === 0x7f800000) c++;
      return c;
    }
    case 'F16': case 'BF16': {
      const mask = dtype === 'F16' ? 0x7c00 : 0x7f80;
      const n = bytes.length >> 1;
      for (let i = 0; i < n; i++) if (((bytes[2 * i] | (bytes[2 * i + 1] << 8)) & mask) === mask) c++;
      return c;
    }
    case 'F8_E4M3':
      for (let i = 0; i < bytes.length; i++) if ((bytes[i] & 0x7f) === 0x7f) c++;
      return c;
    case 'F64': {
      const n = bytes.length >> 3;
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
      for (let i = 0; i < n; i++) if ((dv.getUint32(i * 8 + 4, true) & 0x7ff00000) === 0x7ff00000) c++;
      return c;
    }
    default:
      return 0;
  }
}
