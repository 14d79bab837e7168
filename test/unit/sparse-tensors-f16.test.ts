/**
 * Pre-pruned weights with F16 kept values (src/sparse/tensors.ts): written rounded to half precision,
 * read back widened to f32, the rest of the packed weight unchanged; other dtypes are rejected.
 */
import { describe, it, expect } from 'vitest';
import { sparseFromTensors, sparseToTensors, type TensorBytes } from '../../src/sparse/tensors';
import { prunePacked } from '../../src/sparse/apply';
import { f16ToF32, f32ToF16 } from '../../src/util/half';
import { FormatError } from '../../src/errors';
import { mulberry32 } from '../../src/util/random';

const asBytes = (parts: ReturnType<typeof sparseToTensors>) => (t: string): TensorBytes | undefined => {
  const p = parts[t];
  return p && { dtype: p.dtype, shape: p.shape, data: new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength) };
};

describe('F16 sparse values', () => {
  for (const o of [{ format: '2:4' as const }, { format: 'vnm' as const, v: 16, m: 6 }]) {
    it(`${o.format}: round trip equals the f16-rounded values`, () => {
      const r = mulberry32(7);
      const N = 40, K = 50, w = Float32Array.from({ length: N * K }, () => (r() - 0.5) * 3);
      const { packed } = prunePacked(w, N, K, o);
      const parts = sparseToTensors('x.weight', packed, 'F16');
      expect(parts['x.weight.sparse_values'].dtype).toBe('F16');
      expect(parts['x.weight.sparse_values'].data.byteLength).toBe(packed.values.length * 2);
      const back = sparseFromTensors('x.weight', asBytes(parts));
      expect(Array.from(back.values)).toEqual(Array.from(packed.values, (v) => f16ToF32(f32ToF16(v))));
      expect(Array.from(back.meta)).toEqual(Array.from(packed.meta));
      const f32 = sparseFromTensors('x.weight', asBytes(sparseToTensors('x.weight', packed)));
      expect(Array.from(f32.values)).toEqual(Array.from(packed.values));
    });
  }
  it('rejects values of another dtype', () => {
    const { packed } = prunePacked(new Float32Array(64).fill(1), 8, 8, { format: '2:4' });
    const parts = sparseToTensors('x.weight', packed);
    const get = asBytes(parts);
    expect(() => sparseFromTensors('x.weight', (t) => { const b = get(t)!; return t.endsWith('values') ? { ...b, dtype: 'BF16' } : b; })).toThrow(FormatError);
  });
});
