import { describe, expect, it } from 'vitest';
import { ShapeError } from '../../src/errors';
import { readGgufHeader, readGgufTensor } from '../../src/formats/gguf';
import { DECODABLE, dequantize, quantize, type DecodableType } from '../../src/formats/gguf-blocks';
import { kv, writeGguf, type GgufTensorToWrite } from '../../src/formats/gguf-write';
import { bytesSource } from '../../src/loader/source';
import { randomNormal } from '../../src/util/random';

/** A [N, K] matrix of each decodable type (K a multiple of 256), quantised from random weights. */
function tensors(): { t: GgufTensorToWrite; f32: Float32Array }[] {
  return DECODABLE.map((type: DecodableType, i) => {
    const N = 3 + i, K = 256 * (1 + (i % 2));
    const f32 = randomNormal(N * K, 100 + i);
    return { t: { name: `blk.${i}.w_${type.toLowerCase()}`, type, ne: [K, N], data: quantize(type, f32) }, f32 };
  });
}

describe('GGUF writer ↔ reader', () => {
  it.each([32, 64, 256])('every block type, alignment %i: same bytes back, same dequantised values, re-writes identically', async (alignment) => {
    const ts = tensors();
    const meta: [string, ReturnType<typeof kv.str>][] = [
      ['general.architecture', kv.str('deepseek2')], ['deepseek2.block_count', kv.u32(27)], ['deepseek2.expert_weights_scale', kv.f32(1)],
      ['general.file_type', kv.u32(15)], ['big', kv.u64(2n ** 64n - 1n)], ['neg', kv.i64(-(2n ** 63n))], ['tokenizer.ggml.merges', kv.strings(['Ġ t', 'h e'])],
    ];
    const file = writeGguf({ metadata: meta, tensors: ts.map((x) => x.t), alignment });
    const src = bytesSource('w.gguf', file);
    const h = await readGgufHeader(src);
    expect(h.alignment).toBe(alignment);
    expect(h.metadata.get('big')!.value).toBe(2n ** 64n - 1n);
    expect(h.metadata.get('neg')!.value).toBe(-(2n ** 63n));
    for (const { t, f32 } of ts) {
      const info = h.tensors.get(t.name)!;
      expect(info.type.name).toBe(t.type);
      expect(info.ne).toEqual(t.ne);
      expect(info.begin % alignment).toBe(0);
      const bytes = await readGgufTensor([src], info);
      expect(Buffer.compare(bytes, t.data), t.name).toBe(0);
      const y = dequantize(t.type as DecodableType, bytes, f32.length);
      expect(Buffer.compare(Buffer.from(y.buffer), Buffer.from(dequantize(t.type as DecodableType, t.data, f32.length).buffer))).toBe(0);
    }
    // What the reader returns writes back to the same file, byte for byte.
    const again = writeGguf({ metadata: h.metadata, tensors: await Promise.all([...h.tensors.values()].map(async (i) => ({ name: i.name, type: i.type.name, ne: i.ne, data: await readGgufTensor([src], i) }))), alignment });
    expect(Buffer.compare(again, file)).toBe(0);
  });

  it('an empty model (no tensors, no metadata) round-trips', async () => {
    const f = writeGguf({ metadata: [], tensors: [] });
    expect(f.length).toBe(32); // 24 header bytes padded to the alignment (the data section starts there)
    const h = await readGgufHeader(bytesSource('e.gguf', f));
    expect(h.tensors.size).toBe(0);
    expect(h.metadata.size).toBe(0);
  });

  it('refuses what it cannot write correctly', () => {
    const t: GgufTensorToWrite = { name: 'w', type: 'Q8_0', ne: [32, 2], data: new Uint8Array(68) };
    expect(() => writeGguf({ metadata: [], tensors: [t], alignment: 48 })).toThrow(ShapeError);
    expect(() => writeGguf({ metadata: [], tensors: [{ ...t, data: new Uint8Array(67) }] })).toThrow(/67 bytes/);
    expect(() => writeGguf({ metadata: [], tensors: [{ ...t, ne: [33, 2] }] })).toThrow(/multiple of Q8_0's block/);
    expect(() => writeGguf({ metadata: [], tensors: [t, t] })).toThrow(/given twice/);
    expect(() => writeGguf({ metadata: [], tensors: [{ ...t, ne: [32, 1, 1, 1, 2] }] })).toThrow(/bad shape/);
    expect(() => writeGguf({ metadata: [['x', { type: 'UINT32', value: 'no' }]], tensors: [] })).toThrow(/needs a number/);
  });
});
