import { describe, it, expect } from 'vitest';
import { randomNormal, randomUniform } from '../../src/util/random';
import {
  pack24, packVnm, unpack, quantizeValues, dequantizeValues, quantizeSparse, columnsOf, packedBytes, sliceSparseRows,
} from '../../src/sparse/formats';
import { prune24, pruneVnm, pruneStacked } from '../../src/sparse/prune';
import { sparseMatmulRef } from '../../src/kernels/sparse.ref';
import { matmulRef } from '../../src/kernels/matmul.ref';
import { logitDeviation, perplexity } from '../../src/sparse/quality';
import { FormatError, ShapeError } from '../../src/errors';
import { sparseToTensors, sparseFromTensors, hasSparseTensors } from '../../src/sparse/tensors';
import { writeSafetensors, parseSafetensors } from '../../src/formats/safetensors';

const VS = [16, 32, 64];
const MS = [5, 6, 7, 8, 16];
// Ragged shapes: N not a multiple of V, K not a multiple of 4 or M (including K < M).
const SHAPES: [number, number][] = [[1, 1], [3, 7], [17, 29], [70, 64], [129, 45], [33, 3]];

/** Non-zero column offsets of row n within [k0, k0 + w). */
function nonZeros(w: Float32Array, K: number, n: number, k0: number, width: number): number[] {
  const out: number[] = [];
  for (let c = 0; c < width && k0 + c < K; c++) if (w[n * K + k0 + c] !== 0) out.push(c);
  return out;
}

describe('2:4 pruning and packing', () => {
  it.each(SHAPES)('N=%i K=%i: exactly 2 of every 4 kept, the 2 largest; pack/unpack round trip', (N, K) => {
    const w = randomNormal(N * K, N * 100 + K);
    const { pruned, keptNormFraction, keptL1Fraction } = prune24(w, N, K);
    for (let n = 0; n < N; n++) {
      for (let k0 = 0; k0 < K; k0 += 4) {
        const real = Math.min(4, K - k0);
        const kept = nonZeros(pruned, K, n, k0, 4);
        expect(kept.length).toBe(Math.min(2, real));
        for (const c of kept) expect(pruned[n * K + k0 + c]).toBe(w[n * K + k0 + c]);
        const dropped = [...Array(real).keys()].filter((c) => !kept.includes(c));
        const minKept = Math.min(...kept.map((c) => Math.abs(w[n * K + k0 + c])));
        for (const c of dropped) expect(Math.abs(w[n * K + k0 + c])).toBeLessThanOrEqual(minKept);
      }
    }
    // Top 2 of 4 carry at least half the L1 and half the energy of each group.
    expect(keptL1Fraction).toBeGreaterThanOrEqual(0.5);
    expect(keptNormFraction).toBeGreaterThanOrEqual(Math.SQRT1_2);
    const p = pack24(pruned, N, K);
    expect(p.values.length).toBe(N * 2 * Math.ceil(K / 4));
    expect(unpack(p)).toEqual(pruned);
  });

  it('activation-norm importance |w|·‖x‖ changes which weights are kept', () => {
    const N = 4, K = 8;
    const w = new Float32Array(N * K).fill(1);
    for (let n = 0; n < N; n++) { w[n * K] = 3; w[n * K + 1] = 2; } // by |w| columns 0, 1 win
    const norms = new Float32Array([1, 1, 10, 10, 1, 1, 1, 1]); // columns 2, 3 see large activations
    const { pruned } = prune24(w, N, K, norms);
    for (let n = 0; n < N; n++) expect(nonZeros(pruned, K, n, 0, 4)).toEqual([2, 3]);
    expect(nonZeros(prune24(w, N, K).pruned, K, 0, 0, 4)).toEqual([0, 1]);
  });

  it('pack24 rejects a group with 3 non-zeros; prune rejects a wrong importance length', () => {
    expect(() => pack24(new Float32Array([1, 1, 1, 0]), 1, 4)).toThrow(FormatError);
    expect(() => prune24(new Float32Array(8), 2, 4, new Float32Array(3))).toThrow(ShapeError);
  });

  it('metadata layout: codes are 4-bit nibbles, 8 groups per word, first code < second', () => {
    const K = 40, N = 2;
    const dense = new Float32Array(N * K);
    dense[3] = 5; dense[1] = 4;             // group 0: columns 1, 3 → codes 1, 3
    dense[K + 36] = 7;                      // row 1, group 9: column 0 only → padded with column 1
    const p = pack24(dense, N, K);
    expect(p.metaStride).toBe(2);
    expect(p.meta[0] & 15).toBe(1 | (3 << 2));
    expect(Array.from(p.values.subarray(0, 2))).toEqual([4, 5]);
    expect((p.meta[1 * 2 + 1] >>> 4) & 15).toBe(0 | (1 << 2));
    expect(p.values[1 * 20 + 18]).toBe(7);
  });
});

describe('V:2:M pruning and packing', () => {
  const cases: [number, number, number, number][] = [];
  for (const V of VS) for (const M of MS) {
    const [N, K] = SHAPES[(V / 16 + M) % SHAPES.length];
    cases.push([V, M, N + V, K + 2 * M]); // at least one full and one ragged block
  }
  cases.push([16, 5, 3, 3], [64, 16, 70, 17]);

  it.each(cases)('V=%i M=%i N=%i K=%i: 4 shared columns per block, 2 per row, optimal set; round trip', (V, M, N, K) => {
    const w = randomNormal(N * K, V * 1000 + M * 10 + N + K);
    const { pruned, columns, keptL1Fraction } = pruneVnm(w, N, K, V, M);
    const G = Math.ceil(K / M), NB = Math.ceil(N / V);
    expect(columns.length).toBe(NB * G);
    for (let b = 0; b < NB; b++) {
      for (let g = 0; g < G; g++) {
        const k0 = g * M, real = Math.min(M, K - k0);
        const sel = columnsOf(columns, G, b, g);
        expect(new Set(sel).size).toBe(4);
        expect([...sel].sort((a, c) => a - c)).toEqual(sel);
        const realSel = sel.filter((c) => c < real);
        expect(realSel.length).toBe(Math.min(4, real));
        const used = new Set<number>();
        for (let n = b * V; n < Math.min(N, b * V + V); n++) {
          const kept = nonZeros(pruned, K, n, k0, M);
          expect(kept.length).toBe(Math.min(2, real));
          for (const c of kept) { expect(sel).toContain(c); used.add(c); }
          // each row keeps its 2 largest among the block's columns
          const minKept = Math.min(...kept.map((c) => Math.abs(w[n * K + k0 + c])));
          for (const c of realSel) if (!kept.includes(c)) expect(Math.abs(w[n * K + k0 + c])).toBeLessThanOrEqual(minKept);
        }
        expect(used.size).toBeLessThanOrEqual(4);
        // the column set is the best of all C(real, 4) (M ≤ 8) or the top-4 by column L1 (M > 8)
        if (real > 4) {
          const rows = [...Array(Math.min(N, b * V + V) - b * V).keys()].map((r) => b * V + r);
          const a = (n: number, c: number) => Math.abs(w[n * K + k0 + c]);
          const score = (set: number[]) => rows.reduce((s, n) => s + set.map((c) => a(n, c)).sort((x, y) => y - x).slice(0, 2).reduce((p, q) => p + q, 0), 0);
          const l1 = (c: number) => rows.reduce((s, n) => s + a(n, c), 0);
          if (M <= 8) {
            let best = -1;
            for (let mask = 0; mask < 1 << real; mask++) {
              const set = [...Array(real).keys()].filter((c) => mask & (1 << c));
              if (set.length === 4) best = Math.max(best, score(set));
            }
            expect(score(sel)).toBeCloseTo(best, 4);
          } else {
            const minSel = Math.min(...sel.map(l1));
            for (let c = 0; c < real; c++) if (!sel.includes(c)) expect(l1(c)).toBeLessThanOrEqual(minSel);
          }
        }
      }
    }
    // Averaging over column sets: the kept L1 is at least 2/M of the total.
    expect(keptL1Fraction).toBeGreaterThanOrEqual(2 / M - 1e-9);
    const withCols = packVnm(pruned, N, K, V, M, columns);
    expect(unpack(withCols)).toEqual(pruned);
    expect(withCols.columns).toEqual(columns);
    const inferred = packVnm(pruned, N, K, V, M);
    expect(unpack(inferred)).toEqual(pruned);
    expect(withCols.values.length).toBe(N * 2 * G);
  });

  it('packVnm rejects a block using 5 columns and a row outside its block columns', () => {
    const N = 2, K = 8;
    const d = new Float32Array(N * K);
    d[0] = 1; d[1] = 1; d[K + 2] = 1; d[K + 3] = 1; d[K + 4] = 1; // block rows use columns 0..4
    expect(() => packVnm(d, N, K, 2, 8)).toThrow(FormatError);
    const cols = new Uint32Array([0 | (1 << 8) | (2 << 16) | (3 << 24)]);
    const e = new Float32Array(N * K); e[5] = 1;
    expect(() => packVnm(e, N, K, 2, 8, cols)).toThrow(FormatError);
  });

  it('rows of different blocks choose columns independently', () => {
    const N = 4, K = 8, V = 2, M = 8;
    const w = new Float32Array(N * K).fill(0.01);
    // each row has its own 2 large weights; only one 4-column set serves both rows of a block
    w[0 * K + 0] = w[0 * K + 1] = w[1 * K + 2] = w[1 * K + 3] = 1;
    w[2 * K + 4] = w[2 * K + 5] = w[3 * K + 6] = w[3 * K + 7] = 1;
    const { columns } = pruneVnm(w, N, K, V, M);
    expect(columnsOf(columns, 1, 0, 0)).toEqual([0, 1, 2, 3]);
    expect(columnsOf(columns, 1, 1, 0)).toEqual([4, 5, 6, 7]);
  });

  it('pruneStacked prunes each expert matrix independently', () => {
    const E = 3, R = 20, C = 24;
    const w = randomNormal(E * R * C, 5);
    for (const opts of [{ format: '2:4' as const }, { format: 'vnm' as const, v: 16, m: 6 }]) {
      const { pruned, keptNormFraction } = pruneStacked(w, E, R, C, opts);
      for (let e = 0; e < E; e++) {
        const we = w.subarray(e * R * C, (e + 1) * R * C);
        const ref = opts.format === '2:4' ? prune24(we, R, C).pruned : pruneVnm(we, R, C, 16, 6).pruned;
        expect(pruned.subarray(e * R * C, (e + 1) * R * C)).toEqual(ref);
      }
      expect(keptNormFraction).toBeGreaterThan(0);
      expect(keptNormFraction).toBeLessThan(1);
    }
  });
});

describe('quantised values', () => {
  it.each([8, 4] as const)('int%i: each value within half a step of the original, sign kept', (bits) => {
    const rows = 5, perRow = 70; // not a multiple of the 32-value scale group
    const v = randomNormal(rows * perRow, bits);
    v[3] = 0;
    const q = quantizeValues(v, rows, perRow, bits);
    expect(q.rowScales).toBe(3);
    expect(q.rowWords).toBe((3 * 32 * bits) / 32);
    const d = dequantizeValues(q);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < perRow; i++) {
        const s = q.scales[r * q.rowScales + Math.floor(i / 32)];
        expect(Math.abs(d[r * perRow + i] - v[r * perRow + i])).toBeLessThanOrEqual(s / 2 + 1e-7);
      }
    }
    expect(d[3]).toBe(0);
  });

  it('the reference reads quantised words the same way dequantizeValues does', () => {
    const N = 9, K = 50, M = 3;
    const w = pruneVnm(randomNormal(N * K, 3), N, K, 4, 6);
    const p = packVnm(w.pruned, N, K, 4, 6, w.columns);
    const x = randomUniform(M * K, 4);
    for (const bits of [8, 4] as const) {
      const q = quantizeSparse(p, bits);
      const ref = sparseMatmulRef(x, p, M, q);
      const viaDense = matmulRef(x, unpack(p, dequantizeValues(q)), M, N, K);
      for (let i = 0; i < ref.length; i++) expect(ref[i]).toBeCloseTo(viaDense[i], 4);
    }
  });
});

describe('sparse reference == dense reference on the unpacked matrix', () => {
  it.each([[1, 7, 13], [4, 33, 64], [5, 70, 45]])('M=%i N=%i K=%i', (M, N, K) => {
    const x = randomUniform(M * K, M + N + K);
    const w = randomNormal(N * K, N);
    const p24 = pack24(prune24(w, N, K).pruned, N, K);
    const r = pruneVnm(w, N, K, 16, 7);
    const pv = packVnm(r.pruned, N, K, 16, 7, r.columns);
    for (const p of [p24, pv]) {
      const a = sparseMatmulRef(x, p, M), b = matmulRef(x, unpack(p), M, N, K);
      for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i], 4);
    }
    // bytes: 2:4 f32 ≈ half of dense plus metadata; 16:2:7 ≈ 2/7 of dense
    expect(packedBytes(p24)).toBeLessThan(N * K * 4 * 0.5 + N * 8 * 4 + 64);
    expect(packedBytes(pv, 'q4')).toBeLessThan(packedBytes(pv, 'q8'));
  });
});

describe('quality helpers', () => {
  it('logit deviation is zero for identical logits and grows with noise', () => {
    const V = 50, S = 6;
    const ref = randomNormal(S * V, 1, 2);
    const same = logitDeviation(ref, ref.slice(), V);
    expect(same.maxAbs).toBe(0);
    expect(same.top1Agreement).toBe(1);
    expect(same.meanKl).toBeLessThan(1e-12);
    const noise = randomNormal(S * V, 2, 0.1);
    const small = logitDeviation(ref, ref.map((v, i) => v + noise[i]), V);
    const big = logitDeviation(ref, ref.map((v, i) => v + 10 * noise[i]), V);
    expect(small.rms).toBeGreaterThan(0.05);
    expect(big.rms).toBeCloseTo(10 * small.rms, 5);
    expect(big.meanKl).toBeGreaterThan(small.meanKl);
    expect(big.relRms).toBeGreaterThan(small.relRms);
    // a shift of every logit by a constant changes no probability
    const shifted = logitDeviation(ref, ref.map((v) => v + 3), V);
    expect(shifted.meanKl).toBeLessThan(1e-9);
    expect(shifted.top1Agreement).toBe(1);
  });

  it('perplexity of uniform logits is the vocabulary size; a confident right answer gives ~1', () => {
    const V = 17;
    expect(perplexity(new Float32Array(3 * V), [1, 2, 3], V).ppl).toBeCloseTo(V, 6);
    const l = new Float32Array(2 * V);
    l[5] = 50; l[V + 9] = 50;
    expect(perplexity(l, [5, 9], V).ppl).toBeCloseTo(1, 6);
    expect(() => perplexity(l, [5, V], V)).toThrow(ShapeError);
  });
});

describe('compressed tensors in safetensors files', () => {
  it('2:4 and V:2:M weights survive a write/parse round trip; bad shapes are refused', () => {
    const N = 37, K = 50;
    const w = randomNormal(N * K, 77);
    const p24 = pack24(prune24(w, N, K).pruned, N, K);
    const r = pruneVnm(w, N, K, 16, 7);
    const pv = packVnm(r.pruned, N, K, 16, 7, r.columns);
    const file = writeSafetensors({ ...sparseToTensors('a.weight', p24), ...sparseToTensors('b.weight', pv) });
    const st = parseSafetensors(file);
    const get = (n: string) => (st.header.tensors.has(n) ? st.tensor(n) : undefined);
    expect(hasSparseTensors('a.weight', (n) => st.header.tensors.has(n))).toBe(true);
    expect(hasSparseTensors('c.weight', (n) => st.header.tensors.has(n))).toBe(false);
    const a = sparseFromTensors('a.weight', get), b = sparseFromTensors('b.weight', get);
    expect(a).toEqual(p24);
    expect(b).toEqual(pv);
    expect(unpack(b)).toEqual(r.pruned);
    const bad = writeSafetensors({ ...sparseToTensors('a.weight', p24), 'a.weight.sparse_meta': { dtype: 'U32', shape: [N, 1], data: new Uint32Array(N) } });
    const sb = parseSafetensors(bad);
    expect(() => sparseFromTensors('a.weight', (n) => (sb.header.tensors.has(n) ? sb.tensor(n) : undefined))).toThrow(FormatError);
  });
});

describe('row slices (chunks of weights too large for one binding)', () => {
  it('slices on block boundaries unpack to the matching rows; off-block V:2:M slices are refused', () => {
    const N = 70, K = 45;
    const w = randomNormal(N * K, 12);
    const r = pruneVnm(w, N, K, 16, 6);
    for (const p of [pack24(prune24(w, N, K).pruned, N, K), packVnm(r.pruned, N, K, 16, 6, r.columns)]) {
      const full = unpack(p);
      for (const [r0, r1] of [[0, 32], [32, 64], [64, 70]]) {
        expect(unpack(sliceSparseRows(p, r0, r1))).toEqual(full.subarray(r0 * K, r1 * K));
      }
    }
    expect(() => sliceSparseRows(packVnm(r.pruned, N, K, 16, 6, r.columns), 8, 40)).toThrow(ShapeError);
  });
});
