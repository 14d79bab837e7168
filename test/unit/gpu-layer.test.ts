import { describe, it, expect } from 'vitest';
import { defineUniforms } from '../../src/gpu/uniforms';
import { foldWorkgroups, ceilDiv } from '../../src/gpu/dispatch';
import { LimitExceededError, WebMoeError, ShapeError } from '../../src/errors';
import { mulberry32, randomNormal } from '../../src/util/random';

describe('uniform packing', () => {
  it('packs declared fields in order, little-endian, padded to 16 bytes', () => {
    const L = defineUniforms({ a: 'u32', b: 'f32', c: 'i32', d: 'u32', e: 'f32' });
    expect(L.size).toBe(32);
    const bytes = L.pack({ a: 7, b: 1.5, c: -3, d: 0xffffffff, e: 0 });
    const v = new DataView(bytes.buffer, bytes.byteOffset);
    expect(v.getUint32(0, true)).toBe(7);
    expect(v.getFloat32(4, true)).toBe(1.5);
    expect(v.getInt32(8, true)).toBe(-3);
    expect(v.getUint32(12, true)).toBe(0xffffffff);
  });
  it('rejects a missing field', () => {
    const L = defineUniforms({ a: 'u32', b: 'u32' });
    expect(() => L.pack({ a: 1 } as any)).toThrow(/'b' missing/);
  });
});

describe('workgroup folding', () => {
  it('keeps counts within the limit on x', () => {
    expect(foldWorkgroups(1, 65535)).toEqual([1, 1]);
    expect(foldWorkgroups(65535, 65535)).toEqual([65535, 1]);
  });
  it('folds past the limit into 2-D covering every workgroup', () => {
    for (const n of [65536, 70000, 1_000_000, 65535 * 3 + 1]) {
      const [x, y] = foldWorkgroups(n, 65535);
      expect(x).toBeLessThanOrEqual(65535);
      expect(x * y).toBeGreaterThanOrEqual(n);
      expect(x * (y - 1)).toBeLessThan(n);
    }
  });
  it('throws a typed error past limit²', () => {
    expect(() => foldWorkgroups(17, 4)).toThrow(LimitExceededError);
    try { foldWorkgroups(17, 4); } catch (e) { expect((e as WebMoeError).code).toBe('GPU_LIMIT_EXCEEDED'); }
  });
  it('ceilDiv', () => { expect(ceilDiv(7, 4)).toBe(2); expect(ceilDiv(8, 4)).toBe(2); expect(ceilDiv(0, 4)).toBe(0); });
});

describe('errors and RNG', () => {
  it('typed errors keep name and code', () => {
    const e = new ShapeError('bad');
    expect(e.name).toBe('ShapeError');
    expect(e.code).toBe('BAD_SHAPE');
    expect(e).toBeInstanceOf(WebMoeError);
  });
  it('seeded RNG is reproducible and roughly uniform', () => {
    const a = mulberry32(42), b = mulberry32(42);
    const xs = Array.from({ length: 10000 }, () => a());
    expect(xs.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => b()));
    const mean = xs.reduce((s, v) => s + v, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.02);
    const n = randomNormal(10000, 3);
    const m2 = n.reduce((s, v) => s + v * v, 0) / n.length;
    expect(Math.abs(m2 - 1)).toBeLessThan(0.06);
  });
});
