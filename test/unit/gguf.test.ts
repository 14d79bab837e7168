import { describe, expect, it } from 'vitest';
import { FormatError, WebMoeError } from '../../src/errors';
import {
  ggufSplitNames, metaArray, metaNumber, metaString, parseSplitName, readGgufHeader, readGgufModel, readGgufTensor,
  type GgufKv, type RangeReader,
} from '../../src/formats/gguf';
import { kv, writeGguf, type GgufTensorToWrite } from '../../src/formats/gguf-write';
import { bytesSource } from '../../src/loader/source';

/** A source that records every read (to check the header parse never touches tensor data). */
function counting(name: string, bytes: Uint8Array, onRead?: (o: number, n: number) => void): RangeReader {
  const b = bytesSource(name, bytes);
  return { name, size: b.size, read: (o, n, s) => { onRead?.(o, n); return b.read(o, n, s); } };
}

const META: [string, GgufKv][] = [
  ['general.architecture', kv.str('deepseek2')],
  ['general.name', kv.str('ünïcode ✓ name')],
  ['t.u8', kv.u8(250)], ['t.i8', kv.i8(-100)], ['t.u16', kv.u16(65000)], ['t.i16', kv.i16(-32000)],
  ['t.u32', kv.u32(4_000_000_000)], ['t.i32', kv.i32(-2_000_000_000)], ['t.f32', kv.f32(1.5)], ['t.f64', kv.f64(Math.PI)],
  ['t.bool', kv.bool(true)], ['t.u64', kv.u64(2n ** 63n + 5n)], ['t.i64', kv.i64(-123456789012)],
  ['tokenizer.ggml.tokens', kv.strings(['<s>', '', 'Ġhello', '✓'])],
  ['tokenizer.ggml.token_type', kv.i32s([3, 1, 1, 1])],
  ['t.scores', kv.f32s([0, -1.5, 2.25])],
  ['t.nested', { type: 'ARRAY', value: { type: 'ARRAY', values: [{ type: 'UINT16', values: Uint16Array.from([1, 2]) }, { type: 'STRING', values: ['a'] }] } }],
  ['t.bools', { type: 'ARRAY', value: { type: 'BOOL', values: Uint8Array.from([1, 0, 1]) } }],
];

function tensor(name: string, type: GgufTensorToWrite['type'], ne: number[], bytesPerBlock: number, block: number, fill: number): GgufTensorToWrite {
  const n = (ne.reduce((a, d) => a * d, 1) / block) * bytesPerBlock;
  return { name, type, ne, data: new Uint8Array(n).map((_, i) => (i * 7 + fill) & 255) };
}

const TENSORS = [
  tensor('a.weight', 'F32', [3, 2], 4, 1, 1),
  tensor('b.weight', 'Q4_K', [256, 3], 144, 256, 2),
  tensor('c.weight', 'Q8_0', [64], 34, 32, 3),
  tensor('d.bias', 'F16', [5], 2, 1, 4),
];

describe('GGUF reader', () => {
  it('reads every metadata type, tensor infos and aligned offsets written by the writer', async () => {
    for (const alignment of [32, 64, 1]) {
      const file = writeGguf({ metadata: META, tensors: TENSORS, alignment });
      const reads: [number, number][] = [];
      const h = await readGgufHeader(counting('m.gguf', file, (o, n) => reads.push([o, n])));
      expect(h.version).toBe(3);
      expect(h.alignment).toBe(alignment);
      expect(h.dataStart % alignment).toBe(0);
      for (const [k, v] of META) expect(h.metadata.get(k), k).toEqual(v.type === 'UINT64' ? { type: 'UINT64', value: 2n ** 63n + 5n } : v);
      if (alignment !== 32) expect(metaNumber(h, 'general.alignment')).toBe(alignment);
      expect([...h.tensors.keys()]).toEqual(TENSORS.map((t) => t.name));
      for (const t of TENSORS) {
        const info = h.tensors.get(t.name)!;
        expect(info.ne).toEqual(t.ne);
        expect(info.type.name).toBe(t.type);
        expect((info.begin - h.dataStart) % alignment).toBe(0);
        expect(Buffer.compare(await readGgufTensor([counting('m.gguf', file)], info), t.data)).toBe(0);
      }
      // The header parse read nothing past the data start (small file: one window up to the end is fine).
      expect(reads.every(([o]) => o < h.dataStart)).toBe(true);
      expect(metaString(h, 'general.architecture')).toBe('deepseek2');
      expect(metaArray(h, 'tokenizer.ggml.tokens')!.values).toEqual(['<s>', '', 'Ġhello', '✓']);
    }
  });

  it('reads version 2 files; version 1 is a typed UNSUPPORTED error', async () => {
    const file = writeGguf({ metadata: META.slice(0, 3), tensors: TENSORS.slice(0, 1) });
    file[4] = 2;
    expect((await readGgufHeader(bytesSource('v2.gguf', file))).version).toBe(2);
    file[4] = 1;
    await expect(readGgufHeader(bytesSource('v1.gguf', file))).rejects.toMatchObject({ code: 'UNSUPPORTED' });
  });

  it('pulls header windows of at most 1 MiB from a large file without touching tensor data', async () => {
    // 40k strings (~0.5 MB) + one 4 MB tensor: the parse reads only the header.
    const tokens = Array.from({ length: 40_000 }, (_, i) => `tok${i}`);
    const big = tensor('big', 'Q8_0', [32 * 1024, 117], 34, 32, 5);
    const file = writeGguf({ metadata: [['tokenizer.ggml.tokens', kv.strings(tokens)]], tensors: [big] });
    let maxRead = 0, readEnd = 0;
    const h = await readGgufHeader(counting('big.gguf', file, (o, n) => { maxRead = Math.max(maxRead, n); readEnd = Math.max(readEnd, o + n); }));
    expect((metaArray(h, 'tokenizer.ggml.tokens')!.values as string[])[39_999]).toBe('tok39999');
    expect(maxRead).toBeLessThanOrEqual(1 << 20);
    expect(readEnd).toBeLessThanOrEqual(h.dataStart + (1 << 20));
  });
});

/** Byte offsets of fields in a small file, for targeted corruption. */
function smallFile() {
  const file = writeGguf({ metadata: [['general.architecture', kv.str('x')], ['general.alignment', kv.u32(32)], ['arr', kv.strings(['ab', 'cd'])]], tensors: TENSORS.slice(0, 2) });
  return file;
}
const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
/** Offset of the first occurrence of `s` (ASCII) in `b`. */
function find(b: Uint8Array, s: string): number {
  const needle = new TextEncoder().encode(s);
  outer: for (let i = 0; i + needle.length <= b.length; i++) {
    for (let j = 0; j < needle.length; j++) if (b[i + j] !== needle[j]) continue outer;
    return i;
  }
  throw new Error(`'${s}' not in file`);
}

async function expectBadFormat(file: Uint8Array, match?: RegExp) {
  const p = readGgufHeader(bytesSource('bad.gguf', file));
  await expect(p).rejects.toBeInstanceOf(FormatError);
  if (match) await expect(p).rejects.toThrow(match);
}

describe('GGUF reader on hostile input: typed BAD_FORMAT, no hang, no giant allocation', () => {
  it('truncated at every byte of the header', async () => {
    const file = smallFile();
    const h = await readGgufHeader(bytesSource('ok.gguf', file));
    for (let n = 0; n < file.length; n += n < h.dataStart + 8 ? 1 : 97) {
      await expect(readGgufHeader(bytesSource('cut.gguf', file.slice(0, n))), `cut at ${n}`).rejects.toBeInstanceOf(WebMoeError);
      await expect(readGgufHeader(bytesSource('cut.gguf', file.slice(0, n)))).rejects.toMatchObject({ code: 'BAD_FORMAT' });
    }
  });

  it('each field out of range', async () => {
    const base = smallFile();
    const edit = (f: (b: Uint8Array, d: DataView) => void) => { const b = base.slice(); f(b, dv(b)); return b; };
    await expectBadFormat(edit((b) => { b[0] = 0x47; b[3] = 0x47; }), /not a GGUF file/);
    await expectBadFormat(edit((_, d) => d.setUint32(4, 99, true)), /unknown GGUF version 99/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(8, 2n ** 62n, true)), /tensor count/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(16, 2n ** 40n, true)), /metadata count/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(24, 2n ** 60n, true)), /metadata key 0 length/);
    const archType = find(base, 'general.architecture') + 'general.architecture'.length;
    await expectBadFormat(edit((_, d) => d.setUint32(archType, 13, true)), /unknown value type 13/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(archType + 4, 2n ** 33n, true)), /length/);
    const align = find(base, 'general.alignment') + 'general.alignment'.length + 4;
    for (const v of [0, 3, 48]) await expectBadFormat(edit((_, d) => d.setUint32(align, v, true)), /alignment/);
    await expectBadFormat(edit((_, d) => d.setUint32(align - 4, 5, true)), /alignment must be a u32/); // retyped as i32
    const arr = find(base, 'arr') + 3 + 4; // element type, then count
    await expectBadFormat(edit((_, d) => d.setUint32(arr, 42, true)), /unknown value type 42/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(arr + 4, 2n ** 50n, true)), /count/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(arr + 12, 1000n, true)), /runs past|out of range/);
    await expectBadFormat(edit((b) => { b[arr + 20] = 0xff; }), /UTF-8/);
    const tA = find(base, 'a.weight') + 'a.weight'.length; // n_dims, ne[0], ne[1], type, offset
    await expectBadFormat(edit((_, d) => d.setUint32(tA, 5, true)), /5 dimensions/);
    await expectBadFormat(edit((_, d) => d.setUint32(tA, 0, true)), /0 dimensions/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(tA + 4, 2n ** 40n, true)), /needs more bytes/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(tA + 4, 2n ** 63n, true)), /ne\[0\]/);
    await expectBadFormat(edit((_, d) => d.setUint32(tA + 20, 5, true)), /unknown ggml type 5/);
    await expectBadFormat(edit((_, d) => d.setUint32(tA + 20, 999, true)), /unknown ggml type 999/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(tA + 24, 8n, true)), /not a multiple of the alignment/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(tA + 24, 32n, true)), /overlaps/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(tA + 24, 2n ** 40n, true)), /out of range|runs past/);
    const tB = find(base, 'b.weight') + 'b.weight'.length;
    await expectBadFormat(edit((_, d) => d.setBigUint64(tB + 4, 255n, true)), /not a multiple of Q4_K's block of 256/);
    await expectBadFormat(edit((_, d) => d.setBigUint64(tB + 12, 4n, true)), /runs past the end|needs more bytes/);
    await expectBadFormat(base.slice(0, base.length - 1), /runs past the end/);
    // duplicate key / tensor name
    await expectBadFormat(dupKey(), /metadata key 'k1' appears twice/);
    const two = writeGguf({ metadata: [], tensors: [TENSORS[0], { ...TENSORS[2], name: 'a.wfight' }] });
    two.set(new TextEncoder().encode('a.weight'), find(two, 'a.wfight'));
    await expectBadFormat(two, /tensor 'a.weight' appears twice/);
    // bool byte other than 0/1
    const bo = writeGguf({ metadata: [['b', kv.bool(true)]], tensors: [] });
    bo[find(bo, 'b') + 1 + 4] = 7;
    await expectBadFormat(bo, /bool byte 7/);
  });
});

function dupKey(): Uint8Array {
  const f = writeGguf({ metadata: [['k1', kv.u8(1)], ['k2', kv.u8(2)]], tensors: [] });
  f[find(f, 'k2') + 1] = '1'.charCodeAt(0);
  return f;
}

describe('GGUF splits', () => {
  it('names', () => {
    expect(parseSplitName('Model-Q4_K_M-00002-of-00003.gguf')).toEqual({ prefix: 'Model-Q4_K_M', no: 2, count: 3 });
    expect(parseSplitName('model.gguf')).toBeNull();
    expect(parseSplitName('m-00004-of-00003.gguf')).toBeNull();
    expect(ggufSplitNames('m-00001-of-00003.gguf')).toEqual(['m-00001-of-00003.gguf', 'm-00002-of-00003.gguf', 'm-00003-of-00003.gguf']);
    expect(ggufSplitNames('m.gguf')).toEqual(['m.gguf']);
  });

  function splitFiles(count = 3, tensorsCount = TENSORS.length) {
    const per = [[TENSORS[0], TENSORS[1]], [TENSORS[2]], [TENSORS[3]]];
    return per.slice(0, count).map((ts, i) => writeGguf({
      metadata: [...(i === 0 ? META.slice(0, 2) : []), ['split.no', kv.u16(i)], ['split.count', kv.u16(count)], ['split.tensors.count', kv.i32(tensorsCount)]],
      tensors: ts,
    }));
  }

  it('reads the tensors of every split and their bytes', async () => {
    const files = splitFiles();
    const srcs = files.map((f, i) => bytesSource(`m-0000${i + 1}-of-00003.gguf`, f));
    const m = await readGgufModel(srcs);
    expect(metaString(m, 'general.architecture')).toBe('deepseek2');
    expect([...m.tensors.keys()]).toEqual(TENSORS.map((t) => t.name));
    expect(m.tensors.get('d.bias')!.file).toBe(2);
    for (const t of TENSORS) expect(Buffer.compare(await readGgufTensor(srcs, m.tensors.get(t.name)!), t.data)).toBe(0);
  });

  it('rejects missing, reordered or mismatched splits', async () => {
    const files = splitFiles();
    const src = (f: Uint8Array[]) => f.map((b, i) => bytesSource(`s${i}.gguf`, b));
    await expect(readGgufModel(src(files.slice(0, 2)))).rejects.toThrow(/split.count is 3, but 2 files/);
    await expect(readGgufModel(src([files[0], files[2], files[1]]))).rejects.toThrow(/split.no 2 \/ split.count 3, expected 1/);
    await expect(readGgufModel(src(splitFiles(3, 7)))).rejects.toThrow(/split.tensors.count is 7, but the splits hold 4/);
    const dup = splitFiles();
    dup[1] = writeGguf({ metadata: [['split.no', kv.u16(1)], ['split.count', kv.u16(3)]], tensors: [TENSORS[0]] });
    await expect(readGgufModel(src(dup))).rejects.toThrow(/tensor 'a.weight' is in/);
    await expect(readGgufModel([])).rejects.toBeInstanceOf(FormatError);
  });
});
