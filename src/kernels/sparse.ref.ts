/**
 * CPU reference for the structured-sparse linear layer, computed straight from the packed arrays
 * (codes, block columns, quantised words and scales as documented in src/sparse/formats.ts), in
 * float64 accumulation. It shares no code with the unpacker, so the GPU tests check the kernels against
 * both this and the dense kernel on the unpacked matrix.
 */
import type { QuantValues, SparsePacked } from '../sparse/formats';

/** Kept value j (0/1) of row n, group g. */
function valueAt(p: SparsePacked, q: QuantValues | undefined, n: number, g: number, j: number): number {
  const i = 2 * g + j;
  if (!q) return p.values[n * 2 * p.G + i];
  const perWord = 32 / q.bits;
  const word = q.words[n * q.rowWords + Math.floor(i / perWord)];
  const shift = (i % perWord) * q.bits;
  let v = (word >>> shift) & ((1 << q.bits) - 1);
  if (v >= 1 << (q.bits - 1)) v -= 1 << q.bits;
  return v * q.scales[n * q.rowScales + Math.floor(i / q.group)];
}

/** Y[M, N] = X[M, K] · Wᵀ for a packed W (values from `q` when given). */
export function sparseMatmulRef(x: Float32Array, p: SparsePacked, M: number, q?: QuantValues): Float32Array {
  const { N, K, G } = p;
  const GW = p.format === '2:4' ? 4 : p.M;
  const y = new Float64Array(M * N);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      const code = (p.meta[n * p.metaStride + (g >> 3)] >>> ((g & 7) * 4)) & 15;
      const colWord = p.format === 'vnm' ? p.columns[Math.floor(n / p.V) * G + g] : 0x03020100;
      for (let j = 0; j < 2; j++) {
        const k = g * GW + ((colWord >>> (8 * ((code >> (2 * j)) & 3))) & 255);
        if (k >= K) continue;
        const w = valueAt(p, q, n, g, j);
        for (let m = 0; m < M; m++) y[m * N + n] += w * x[m * K + k];
      }
    }
  }
  return Float32Array.from(y);
}
