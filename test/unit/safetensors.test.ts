import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { FormatError, ShapeError, UnsupportedError, WebMoeError } from '../../src/errors';
import { parseJsonStrict } from '../../src/formats/json-strict';
import {
  MAX_HEADER_BYTES, countNonFinite, parseSafetensors, parseSafetensorsHeader, toFloat32, writeSafetensors,
  type SafetensorsDtype,
} from '../../src/formats/safetensors';
import {
  bf16ToF32, f16ToF32, f32ArrayToBf16, f32ArrayToF16, f32ToBf16, f32ToF16, f32ToFp8e4m3, fp8e4m3ToF32,
} from '../../src/util/half';
import { mulberry32, randomNormal } from '../../src/util/random';

const FIX = new URL('../fixtures/deepseek-v3-tiny/', import.meta.url);
const fixtureBytes = () => new Uint8Array(readFileSync(new URL('model.safetensors', FIX)));

/** Builds a file from a raw header object and a data section (for malformed cases the writer refuses). */
function rawFile(header: unknown, data: Uint8Array, headerText?: string): Uint8Array {
  const json = new TextEncoder().encode(headerText ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function expectFormatError(fn: () => unknown, ...fragments: string[]) {
  let err: unknown;
  try { fn(); } catch (e) { err = e; }
  expect(err, 'expected a FormatError').toBeInstanceOf(FormatError);
  for (const f of fragments) expect((err as Error).message).toContain(f);
}

describe('half-precision conversions', () => {
  it('f16: every bit pattern round-trips f16 → f32 → f16, and values are ordered', () => {
    let prev = -Infinity;
    // Negative values descending by bits, so walk 0xfc00..0x8000 then 0x0000..0x7c00 for ascending order.
    const order: number[] = [];
    for (let h = 0xfc00; h >= 0x8000; h--) order.push(h);
    for (let h = 0; h <= 0x7c00; h++) order.push(h);
    for (const h of order) {
      const v = f16ToF32(h);
      expect(f32ToF16(v) === h || (v === 0 && (h & 0x7fff) === 0)).toBe(true);
      expect(v >= prev).toBe(true);
      prev = v;
    }
    for (let h = 0x7c01; h < 0x8000; h++) expect(Number.isNaN(f16ToF32(h))).toBe(true);
    expect(f32ToF16(NaN) & 0x7c00).toBe(0x7c00);
  });

  it('f16: midpoints round to even, just above rounds up, overflow → Inf', () => {
    for (let h = 0; h < 0x7bff; h++) {
      const a = f16ToF32(h), b = f16ToF32(h + 1);
      const mid = (a + b) / 2; // exact in float64, and representable in float32 (≤ 12 significant bits)
      expect(f32ToF16(mid)).toBe(h & 1 ? h + 1 : h);
      expect(f32ToF16(-mid)).toBe((h & 1 ? h + 1 : h) | 0x8000);
      const above = mid + (b - a) / 8, below = mid - (b - a) / 8;
      expect(f32ToF16(above)).toBe(h + 1);
      expect(f32ToF16(below)).toBe(h);
    }
    const max = f16ToF32(0x7bff);
    expect(f32ToF16(max + (max - f16ToF32(0x7bfe)) / 2)).toBe(0x7c00); // the tie above the max goes to Inf (even)
    expect(f32ToF16(1e6)).toBe(0x7c00);
    expect(f32ToF16(-1e6)).toBe(0xfc00);
  });

  it('bf16: round trip of all finite patterns, round-to-nearest-even at midpoints', () => {
    for (let h = 0; h < 0x10000; h++) {
      const v = bf16ToF32(h);
      if (Number.isNaN(v)) { expect(Number.isNaN(bf16ToF32(f32ToBf16(v)))).toBe(true); continue; }
      expect(f32ToBf16(v)).toBe(h);
    }
    const r = mulberry32(3);
    for (let k = 0; k < 2000; k++) {
      const h = Math.floor(r() * 0x7f7f);
      const a = bf16ToF32(h), b = bf16ToF32(h + 1);
      expect(f32ToBf16((a + b) / 2)).toBe(h & 1 ? h + 1 : h);
    }
  });

  it('fp8 e4m3: the format (max 448, subnormals, NaN only at 0x7f/0xff) and nearest rounding', () => {
    expect(fp8e4m3ToF32(0x7e)).toBe(448);
    expect(fp8e4m3ToF32(0x08)).toBe(2 ** -6); // smallest normal
    expect(fp8e4m3ToF32(0x01)).toBe(2 ** -9); // smallest subnormal
    expect(fp8e4m3ToF32(0x38)).toBe(1);
    expect(fp8e4m3ToF32(0xb8)).toBe(-1);
    expect(Number.isNaN(fp8e4m3ToF32(0x7f)) && Number.isNaN(fp8e4m3ToF32(0xff))).toBe(true);
    for (let b = 0; b < 256; b++) {
      if ((b & 0x7f) === 0x7f) continue;
      const v = fp8e4m3ToF32(b);
      if (v === 0) continue;
      expect(f32ToFp8e4m3(v)).toBe(b);
      if ((b & 0x7f) < 0x7e) {
        const next = fp8e4m3ToF32(b + 1);
        expect(f32ToFp8e4m3(v + (next - v) * 0.4)).toBe(b);
        expect(f32ToFp8e4m3(v + (next - v) * 0.6)).toBe(b + 1);
      }
    }
    expect(f32ToFp8e4m3(1e9)).toBe(0x7e); // saturates
  });
});

describe('strict JSON', () => {
  it('matches JSON.parse on valid documents', () => {
    for (const s of ['{"a":[1,2.5e-3,-0,{"b":null}],"c":"x\\u00e9\\n\\"y","d":true,"e":false}', '[]', '"s"', ' 12 ', '{"__proto__":{"x":1}}']) {
      expect(JSON.stringify(parseJsonStrict(s))).toBe(JSON.stringify(JSON.parse(s)));
    }
  });
  it('rejects duplicate keys, deep nesting, trailing garbage and malformed input with FormatError', () => {
    expectFormatError(() => parseJsonStrict('{"a":1,"b":2,"a":3}'), 'duplicate key "a"');
    expectFormatError(() => parseJsonStrict('['.repeat(10000) + ']'.repeat(10000)), 'nesting');
    for (const bad of ['{"a":1}x', '{"a":01}', '{a:1}', '{"a":1,}', '[1,]', '"\\x"', '"abc', '{"a" 1}', '', '-', '1e999', 'tru', '"\u0001"']) {
      expect(() => parseJsonStrict(bad), bad).toThrow(FormatError);
    }
  });
});

describe('safetensors reader', () => {
  it('reads the fixture (written by Python): tensor table tiles the data and values match the reference intermediates', () => {
    const bytes = fixtureBytes();
    const f = parseSafetensors(bytes);
    const names = [...f.header.tensors.keys()];
    expect(names.length).toBeGreaterThan(50);
    let pos = f.header.dataStart;
    for (const t of f.header.tensors.values()) {
      expect(t.begin).toBe(pos);
      pos = t.end;
    }
    expect(pos).toBe(bytes.length);
    // Cross-file check: the reference's `embed` intermediate [S, D] = rows of embed_tokens at tokens.json.
    const tokens: number[] = JSON.parse(readFileSync(new URL('tokens.json', FIX), 'utf8')).tokens;
    const inter = parseSafetensors(new Uint8Array(readFileSync(new URL('intermediates.safetensors', FIX))));
    const embed = toFloat32('F32', inter.tensor('embed').data);
    const E = f.tensor('model.embed_tokens.weight');
    const D = E.shape[1];
    const W = toFloat32(E.dtype, E.data);
    expect(inter.tensor('embed').shape).toEqual([tokens.length, D]);
    for (let s = 0; s < tokens.length; s++) {
      for (let d = 0; d < D; d++) expect(embed[s * D + d]).toBe(W[tokens[s] * D + d]);
    }
  });

  it('write → read round-trips every dtype, shapes incl. scalars and zero-size, metadata, 8-byte padded header', () => {
    const r = mulberry32(11);
    const dtypes: SafetensorsDtype[] = ['F64', 'F32', 'F16', 'BF16', 'F8_E4M3', 'I64', 'I32', 'I16', 'I8', 'U8', 'U16', 'U32', 'BOOL'];
    const bpe: Record<SafetensorsDtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, U16: 2, U32: 4, BOOL: 1 };
    const tensors: Record<string, { dtype: SafetensorsDtype; shape: number[]; data: Uint8Array }> = {};
    dtypes.forEach((dt, i) => {
      const shape = i === 0 ? [] : i === 1 ? [0, 3] : [1 + Math.floor(r() * 5), 1 + Math.floor(r() * 7)];
      const n = shape.reduce((a, b) => a * b, 1);
      const data = new Uint8Array(n * bpe[dt]).map(() => Math.floor(r() * 256));
      tensors[`t.${dt}.${i}`] = { dtype: dt, shape, data };
    });
    const file = writeSafetensors(tensors, { format: 'pt', note: 'é ünicode' });
    const f = parseSafetensors(file);
    expect(f.header.dataStart % 8).toBe(0);
    expect(f.header.metadata).toEqual({ format: 'pt', note: 'é ünicode' });
    for (const [name, t] of Object.entries(tensors)) {
      const got = f.tensor(name);
      expect(got.dtype).toBe(t.dtype);
      expect(got.shape).toEqual(t.shape);
      expect(Array.from(got.data)).toEqual(Array.from(t.data));
    }
    expect(() => f.tensor('nope')).toThrow(WebMoeError);
    expect(() => writeSafetensors({ a: { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) } })).toThrow(ShapeError);
  });

  it('toFloat32: F16/BF16 exact for representable values, unaligned views, FP8 with ragged block scales', () => {
    const x = randomNormal(1000, 5);
    const h = f32ArrayToF16(x), b = f32ArrayToBf16(x);
    const fh = toFloat32('F16', new Uint8Array(h.buffer));
    const fb = toFloat32('BF16', new Uint8Array(b.buffer));
    for (let i = 0; i < x.length; i++) {
      expect(fh[i]).toBe(f16ToF32(h[i]));
      expect(fb[i]).toBe(bf16ToF32(b[i]));
      expect(Math.abs(fh[i] - x[i])).toBeLessThanOrEqual(Math.abs(x[i]) * 2 ** -11 + 2 ** -25); // half ulp of f16
      expect(Math.abs(fb[i] - x[i])).toBeLessThanOrEqual(Math.abs(x[i]) * 2 ** -8); // half ulp of bf16
    }
    // Unaligned view (safetensors headers need not be padded).
    const f32 = new Float32Array(x.slice(0, 10));
    const buf = new Uint8Array(41);
    buf.set(new Uint8Array(f32.buffer), 1);
    expect(Array.from(toFloat32('F32', buf.subarray(1)))).toEqual(Array.from(f32));
    // FP8 [rows, cols] = [130, 70] with block [128, 64]: scale [2, 2], ragged on both axes.
    const rows = 130, cols = 70;
    const r = mulberry32(9);
    const q = new Uint8Array(rows * cols).map(() => { let v; do v = Math.floor(r() * 256); while ((v & 0x7f) === 0x7f); return v; });
    const scaleInv = new Float32Array([0.5, 2, 3, 0.25]);
    const w = toFloat32('F8_E4M3', q, { scaleInv, shape: [rows, cols], block: [128, 64] });
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
      expect(w[i * cols + j]).toBe(fp8e4m3ToF32(q[i * cols + j]) * scaleInv[(i < 128 ? 0 : 2) + (j < 64 ? 0 : 1)]);
    }
    expect(() => toFloat32('F8_E4M3', q, { scaleInv: new Float32Array(3), shape: [rows, cols], block: [128, 64] })).toThrow(ShapeError);
  });

  it('countNonFinite counts NaN/Inf per float dtype', () => {
    const v = new Float32Array([1, NaN, Infinity, -Infinity, 0, 3e38]);
    expect(countNonFinite('F32', new Uint8Array(v.buffer))).toBe(3);
    expect(countNonFinite('F16', new Uint8Array(f32ArrayToF16(v).buffer))).toBe(4); // 3e38 overflows to Inf in f16
    expect(countNonFinite('BF16', new Uint8Array(f32ArrayToBf16(v).buffer))).toBe(3);
    expect(countNonFinite('F8_E4M3', new Uint8Array([0x7f, 0xff, 0x7e, 0]))).toBe(2);
    expect(countNonFinite('I32', new Uint8Array(8).fill(255))).toBe(0);
  });

  it('BF16 → f32 (two values per word) equals the per-value shift at every length and alignment', () => {
    const buf = new Uint16Array(41);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 40503 + 0x8001) & 0xffff; // signs, NaNs and subnormals among them
    for (const start of [0, 1, 2, 3]) {
      for (const len of [0, 1, 2, 5, 36]) {
        const src = buf.subarray(start, start + len);
        const got = new Uint32Array(toFloat32('BF16', new Uint8Array(src.buffer, src.byteOffset, src.byteLength)).buffer);
        expect(Array.from(got), `+${start} × ${len}`).toEqual(Array.from(src, (h) => (h << 16) >>> 0));
      }
    }
  });

  it('countNonFinite: the word scan finds one NaN/Inf anywhere, in aligned and misaligned views, and the largest finite values are finite', () => {
    // Per dtype: element size, the bits of NaN / Inf and of the largest finite magnitude with either sign.
    const cases = [
      { dtype: 'F32' as const, size: 4, bad: [0x7fc00000, 0xff800000, 0x7f800001], fine: 0xff7fffff },
      { dtype: 'BF16' as const, size: 2, bad: [0x7fc0, 0xff80, 0x7f81], fine: 0xff7f },
      { dtype: 'F16' as const, size: 2, bad: [0x7e00, 0xfc00, 0x7c01], fine: 0xfbff },
      { dtype: 'F8_E4M3' as const, size: 1, bad: [0x7f, 0xff], fine: 0xfe },
    ];
    const put = (b: Uint8Array, at: number, size: number, v: number) => { for (let k = 0; k < size; k++) b[at * size + k] = (v >>> (8 * k)) & 0xff; };
    for (const { dtype, size, bad, fine } of cases) {
      const n = 37;
      for (const start of [0, size, 2 * size, 3 * size]) {
        const buf = new Uint8Array((n + 4) * size);
        const view = buf.subarray(start, start + n * size);
        for (let e = 0; e < n; e++) put(view, e, size, e % 2 ? fine : 0x3c003c00 >>> (32 - 8 * size));
        expect(countNonFinite(dtype, view), `${dtype} all finite at +${start}`).toBe(0);
        for (const at of [0, 1, 17, n - 1]) {
          for (const b of bad) {
            const v = view.slice();
            put(v, at, size, b);
            const w = buf.slice();
            w.set(v, start);
            expect(countNonFinite(dtype, w.subarray(start, start + n * size)), `${dtype} 0x${b.toString(16)} at ${at}, view +${start}`).toBe(1);
          }
        }
      }
    }
  });

  describe('rejects malformed files with a FormatError naming the problem', () => {
    const data = new Uint8Array(24);
    const ok = { a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] }, b: { dtype: 'F16', shape: [4], data_offsets: [16, 24] } };
    it('accepts the well-formed base case', () => {
      expect(parseSafetensors(rawFile(ok, data)).header.tensors.size).toBe(2);
    });
    it('header length', () => {
      expectFormatError(() => parseSafetensorsHeader(new Uint8Array(5), 5), 'too short');
      const f = rawFile(ok, data);
      new DataView(f.buffer).setUint32(0, f.length, true);
      expectFormatError(() => parseSafetensorsHeader(f, f.length), 'past the end');
      new DataView(f.buffer).setUint32(0, MAX_HEADER_BYTES + 1, true);
      expectFormatError(() => parseSafetensorsHeader(f, 2 ** 40), 'limit');
      new DataView(f.buffer).setUint32(4, 1, true); // > 4 GiB header
      expectFormatError(() => parseSafetensorsHeader(f, 2 ** 40), 'limit');
    });
    it('offsets: overlap, gap, past the end, trailing bytes, end < begin', () => {
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, b: { dtype: 'F16', shape: [4], data_offsets: [8, 16] } }, data)), "'b'");
      expectFormatError(() => parseSafetensors(rawFile({ a: ok.a, b: { dtype: 'F16', shape: [2], data_offsets: [20, 24] } }, data)), 'gap', "'b'");
      expectFormatError(() => parseSafetensors(rawFile({ a: ok.a, b: { dtype: 'F16', shape: [8], data_offsets: [16, 32] } }, data)), "'b'", 'past the end');
      expectFormatError(() => parseSafetensors(rawFile({ a: ok.a }, data)), 'after the last tensor');
      expectFormatError(() => parseSafetensors(rawFile({ a: ok.a, b: { dtype: 'F16', shape: [0], data_offsets: [24, 16] } }, data)), "'b'");
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16.5] } }, data)), "'a'");
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, a: { dtype: 'F32', shape: [2, 2], data_offsets: [-16, 0] } }, data)), "'a'");
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, a: { dtype: 'F32', shape: [2, 2], data_offsets: [0] } }, data)), "'a'");
    });
    it('dtype × shape vs byte count, bad dims, unknown dtype', () => {
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, a: { dtype: 'F16', shape: [2, 2], data_offsets: [0, 16] } }, data)), "'a'", '8 bytes');
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, a: { dtype: 'F32', shape: [2, -2], data_offsets: [0, 16] } }, data)), "'a'", 'dimension');
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, a: { dtype: 'F32', shape: [2.5, 2], data_offsets: [0, 16] } }, data)), "'a'");
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 16] } }, data)), "'a'");
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, a: { dtype: 'Q4', shape: [2, 2], data_offsets: [0, 16] } }, data)), "'a'", 'dtype');
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, a: { shape: [2, 2], data_offsets: [0, 16] } }, data)), "'a'", 'dtype');
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, a: [1] }, data)), "'a'");
      expect(() => parseSafetensors(rawFile({ ...ok, a: { dtype: 'F8_E5M2', shape: [16], data_offsets: [0, 16] } }, data))).toThrow(UnsupportedError);
    });
    it('duplicate names, invalid UTF-8, invalid JSON, non-object header, bad __metadata__', () => {
      const text = JSON.stringify(ok).replace('"b":', '"a":');
      expectFormatError(() => parseSafetensors(rawFile(null, data, text)), 'duplicate key "a"');
      const f = rawFile(ok, data);
      f[10] = 0xff;
      expectFormatError(() => parseSafetensors(f), 'UTF-8');
      expectFormatError(() => parseSafetensors(rawFile(null, data, JSON.stringify(ok).slice(0, -1) + ' ')), 'JSON');
      expectFormatError(() => parseSafetensors(rawFile(null, data, '[1, 2]')), '{');
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, __metadata__: { a: 1 } }, data)), '__metadata__');
      expectFormatError(() => parseSafetensors(rawFile({ ...ok, __metadata__: 'x' }, data)), '__metadata__');
    });
  });
});
