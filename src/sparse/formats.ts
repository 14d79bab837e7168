/**
 * Host-side packed layouts for structured-sparse weights W[N, K] (rows = output features, K = the
 * reduction / input-feature axis, as in Hugging Face checkpoints). Described once here and in
 * docs/sparsity.md; the GPU kernels (shaders/sparse.wgsl) read exactly these arrays.
 *
 * Both formats split every row into G groups of GW consecutive columns (K padded with zero columns to
 * G·GW) and keep 2 values per group:
 *
 * - 2:4      GW = 4. The kept pair is chosen per row among the group's 4 columns.
 * - V:2:M    GW = M. Rows are cut into blocks of V rows (the last block may be shorter); for each
 *            (block, group) 4 of the M columns are selected and shared by the block's rows, and each
 *            row keeps 2 of those 4. The 2:4 format is V:2:4 with the 4 columns fixed to {0,1,2,3}.
 *
 * Arrays (all row-major, little-endian words):
 * - values  f32 [N, 2G]            the kept values of row n, group g at [n, 2g] and [n, 2g+1], in
 *                                  ascending column order (first code < second code).
 * - meta    u32 [N, metaStride]    metaStride = ceil(G / 8); 4 bits per (row, group): group g of row n is
 *                                  nibble g % 8 of word [n, g / 8]; bits 0–1 = code of the first kept
 *                                  value, bits 2–3 = code of the second. For 2:4 a code is the column
 *                                  offset within the group (0..3); for V:2:M it indexes the block's 4
 *                                  selected columns.
 * - columns u32 [ceil(N/V), G]     (V:2:M only) the 4 selected column offsets (0..M−1, ascending) of
 *                                  block b, group g: byte i of word [b, g] is the i-th selected column.
 *
 * Padding columns (k ≥ K in the last group) hold zero values; a kept value can sit on a padding column
 * only when the group has fewer than 2 (2:4) or 4 (V:2:M) real columns.
 *
 * Quantised values (int8 / int4, symmetric, one f32 scale per QGROUP = 32 consecutive kept values of a
 * row, i.e. per 16 groups) replace `values` by:
 * - words  u32 [N, rowWords]       rowWords = ceil(2G / 32) · 32 / per-word; value i of row n is byte
 *                                  i % 4 (int8) or nibble i % 8 (int4) of word [n, i / per-word], two's
 *                                  complement; int8 in [−127, 127], int4 in [−7, 7].
 * - scales f32 [N, rowScales]      rowScales = ceil(2G / 32); value i dequantises to q · scales[n, i / 32].
 */
import { FormatError, ShapeError } from '../errors';

export const QGROUP = 32;

export interface Sparse24 {
  format: '2:4';
  N: number;
  K: number;
  /** Groups per row: ceil(K / 4). */
  G: number;
  /** [N, 2G] kept values. */
  values: Float32Array;
  /** [N, metaStride] 4-bit codes, 8 groups per word. */
  meta: Uint32Array;
  metaStride: number;
}

export interface SparseVnm {
  format: 'vnm';
  N: number;
  K: number;
  V: number;
  M: number;
  /** Groups per row: ceil(K / M). */
  G: number;
  /** [N, 2G] kept values. */
  values: Float32Array;
  /** [ceil(N / V), G] four 8-bit column offsets per (block, group). */
  columns: Uint32Array;
  /** [N, metaStride] 4-bit codes into the block's 4 columns, 8 groups per word. */
  meta: Uint32Array;
  metaStride: number;
}

export type SparsePacked = Sparse24 | SparseVnm;

export interface QuantValues {
  bits: 8 | 4;
  /** Kept values per scale (QGROUP). */
  group: number;
  rows: number;
  /** Kept values per row (2G). */
  perRow: number;
  rowWords: number;
  rowScales: number;
  /** [rows, rowWords] packed integers. */
  words: Uint32Array;
  /** [rows, rowScales] f32 scales. */
  scales: Float32Array;
}

/** Group width (4 for 2:4, M for V:2:M). */
export const groupWidth = (p: SparsePacked) => (p.format === '2:4' ? 4 : p.M);
export const metaStrideOf = (G: number) => Math.max(1, Math.ceil(G / 8));

function checkDims(what: string, N: number, K: number, dense?: Float32Array) {
  if (!Number.isInteger(N) || N < 1 || !Number.isInteger(K) || K < 1) throw new ShapeError(`${what}: N and K must be positive integers, got ${N}×${K}`);
  if (dense && dense.length !== N * K) throw new ShapeError(`${what}: dense has ${dense.length} values, expected N·K = ${N * K}`);
}

export function checkVnm(what: string, V: number, M: number) {
  if (!Number.isInteger(V) || V < 1) throw new ShapeError(`${what}: V must be a positive integer, got ${V}`);
  if (!Number.isInteger(M) || M < 4 || M > 256) throw new ShapeError(`${what}: M must be an integer in [4, 256], got ${M}`);
}

const setCode = (meta: Uint32Array, n: number, stride: number, g: number, c0: number, c1: number) => {
  meta[n * stride + (g >> 3)] |= ((c0 | (c1 << 2)) << ((g & 7) * 4)) >>> 0;
};
export const codeOf = (meta: Uint32Array, stride: number, n: number, g: number) => (meta[n * stride + (g >> 3)] >>> ((g & 7) * 4)) & 15;
export const columnsOf = (columns: Uint32Array, G: number, b: number, g: number): [number, number, number, number] => {
  const w = columns[b * G + g];
  return [w & 255, (w >>> 8) & 255, (w >>> 16) & 255, w >>> 24];
};

/**
 * Packs a matrix that already has the 2:4 pattern (at most 2 non-zeros in every group of 4 columns).
 * Groups with fewer non-zeros keep zeros at the lowest free columns (real ones first).
 */
export function pack24(dense: Float32Array, N: number, K: number): Sparse24 {
  checkDims('pack24', N, K, dense);
  const G = Math.ceil(K / 4), metaStride = metaStrideOf(G);
  const values = new Float32Array(N * 2 * G), meta = new Uint32Array(N * metaStride);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      const k0 = g * 4, real = Math.min(4, K - k0);
      const nz: number[] = [];
      for (let c = 0; c < real; c++) if (dense[n * K + k0 + c] !== 0) nz.push(c);
      if (nz.length > 2) throw new FormatError(`pack24: row ${n}, columns ${k0}..${k0 + 3} have ${nz.length} non-zeros (not 2:4 sparse)`, { row: n, group: g });
      for (let c = 0; nz.length < 2; c++) if (!nz.includes(c)) nz.push(c);
      nz.sort((a, b) => a - b);
      values[n * 2 * G + 2 * g] = nz[0] < real ? dense[n * K + k0 + nz[0]] : 0;
      values[n * 2 * G + 2 * g + 1] = nz[1] < real ? dense[n * K + k0 + nz[1]] : 0;
      setCode(meta, n, metaStride, g, nz[0], nz[1]);
    }
  }
  return { format: '2:4', N, K, G, values, meta, metaStride };
}

/**
 * Packs a matrix that already has the V:2:M pattern. `columns` ([ceil(N/V), G], as returned by
 * pruneVnm) fixes each block's 4 columns; without it they are inferred from the non-zeros (padded with
 * the lowest unused columns).
 */
export function packVnm(dense: Float32Array, N: number, K: number, V: number, M: number, columns?: Uint32Array): SparseVnm {
  checkDims('packVnm', N, K, dense);
  checkVnm('packVnm', V, M);
  const G = Math.ceil(K / M), NB = Math.ceil(N / V), metaStride = metaStrideOf(G);
  if (columns && columns.length !== NB * G) throw new ShapeError(`packVnm: columns has ${columns.length} entries, expected ${NB}·${G}`);
  const cols = columns ? columns.slice() : new Uint32Array(NB * G);
  const values = new Float32Array(N * 2 * G), meta = new Uint32Array(N * metaStride);
  for (let b = 0; b < NB; b++) {
    const r0 = b * V, r1 = Math.min(N, r0 + V);
    for (let g = 0; g < G; g++) {
      const k0 = g * M, real = Math.min(M, K - k0);
      let sel: number[];
      if (columns) {
        sel = columnsOf(cols, G, b, g);
        if (!(sel[0] < sel[1] && sel[1] < sel[2] && sel[2] < sel[3] && sel[3] < M)) throw new FormatError(`packVnm: block ${b} group ${g}: columns ${sel} are not 4 ascending offsets below M = ${M}`);
      } else {
        const used = new Set<number>();
        for (let n = r0; n < r1; n++) for (let c = 0; c < real; c++) if (dense[n * K + k0 + c] !== 0) used.add(c);
        if (used.size > 4) throw new FormatError(`packVnm: block ${b} (rows ${r0}..${r1 - 1}), columns ${k0}..${k0 + M - 1} use ${used.size} distinct columns (V:2:M allows 4)`, { block: b, group: g });
        for (let c = 0; used.size < 4; c++) used.add(c);
        sel = [...used].sort((a, b2) => a - b2);
        cols[b * G + g] = (sel[0] | (sel[1] << 8) | (sel[2] << 16) | (sel[3] << 24)) >>> 0;
      }
      for (let n = r0; n < r1; n++) {
        const nz: number[] = [];
        for (let c = 0; c < real; c++) {
          if (dense[n * K + k0 + c] === 0) continue;
          const i = sel.indexOf(c);
          if (i < 0) throw new FormatError(`packVnm: row ${n} has a non-zero at column ${k0 + c}, outside its block's columns ${sel.map((s) => k0 + s)}`, { row: n, group: g });
          nz.push(i);
        }
        if (nz.length > 2) throw new FormatError(`packVnm: row ${n}, group ${g} keeps ${nz.length} values (V:2:M allows 2)`, { row: n, group: g });
        for (let i = 0; nz.length < 2; i++) if (!nz.includes(i)) nz.push(i);
        nz.sort((a, b2) => a - b2);
        for (let j = 0; j < 2; j++) {
          const c = sel[nz[j]];
          values[n * 2 * G + 2 * g + j] = c < real ? dense[n * K + k0 + c] : 0;
        }
        setCode(meta, n, metaStride, g, nz[0], nz[1]);
      }
    }
  }
  return { format: 'vnm', N, K, V, M, G, values, columns: cols, meta, metaStride };
}

/** The dense [N, K] matrix a packed weight stands for (values optionally replaced, e.g. dequantised). */
export function unpack(p: SparsePacked, values: Float32Array = p.values): Float32Array {
  const { N, K, G } = p;
  if (values.length !== N * 2 * G) throw new ShapeError(`unpack: values has ${values.length} entries, expected ${N * 2 * G}`);
  const GW = groupWidth(p);
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      const code = codeOf(p.meta, p.metaStride, n, g);
      const sel = p.format === '2:4' ? [0, 1, 2, 3] : columnsOf(p.columns, G, Math.floor(n / p.V), g);
      for (let j = 0; j < 2; j++) {
        const k = g * GW + sel[(code >> (2 * j)) & 3];
        if (k < K) out[n * K + k] = values[n * 2 * G + 2 * g + j];
      }
    }
  }
  return out;
}
export const unpack24 = (p: Sparse24, values?: Float32Array) => unpack(p, values);
export const unpackVnm = (p: SparseVnm, values?: Float32Array) => unpack(p, values);

/** Symmetric int8/int4 quantisation of the kept values, one scale per QGROUP consecutive values of a row. */
export function quantizeValues(values: Float32Array, rows: number, perRow: number, bits: 8 | 4, group = QGROUP): QuantValues {
  if (values.length !== rows * perRow) throw new ShapeError(`quantizeValues: ${values.length} values, expected ${rows}·${perRow}`);
  if (group % 8 !== 0) throw new ShapeError(`quantizeValues: group ${group} must be a multiple of 8`);
  const perWord = 32 / bits, qmax = bits === 8 ? 127 : 7, mask = bits === 8 ? 0xff : 0xf;
  const rowScales = Math.ceil(perRow / group), rowWords = (rowScales * group) / perWord;
  const words = new Uint32Array(rows * rowWords), scales = new Float32Array(rows * rowScales);
  for (let r = 0; r < rows; r++) {
    for (let s = 0; s < rowScales; s++) {
      const i0 = s * group, i1 = Math.min(perRow, i0 + group);
      let amax = 0;
      for (let i = i0; i < i1; i++) amax = Math.max(amax, Math.abs(values[r * perRow + i]));
      const scale = amax / qmax;
      scales[r * rowScales + s] = scale;
      for (let i = i0; i < i1; i++) {
        const q = scale > 0 ? Math.max(-qmax, Math.min(qmax, Math.round(values[r * perRow + i] / scale))) : 0;
        words[r * rowWords + Math.floor(i / perWord)] |= ((q & mask) << ((i % perWord) * bits)) >>> 0;
      }
    }
  }
  return { bits, group, rows, perRow, rowWords, rowScales, words, scales };
}

/** The f32 values quantised values stand for (same layout as the `values` they were made from). */
export function dequantizeValues(q: QuantValues): Float32Array {
  const perWord = 32 / q.bits, out = new Float32Array(q.rows * q.perRow);
  for (let r = 0; r < q.rows; r++) {
    for (let i = 0; i < q.perRow; i++) {
      const w = q.words[r * q.rowWords + Math.floor(i / perWord)];
      const shift = 32 - q.bits - (i % perWord) * q.bits;
      const v = (w << shift) >> (32 - q.bits); // sign-extend the field
      out[r * q.perRow + i] = v * q.scales[r * q.rowScales + Math.floor(i / q.group)];
    }
  }
  return out;
}

/** Quantises a packed weight's values (both formats share the [N, 2G] values layout). */
export const quantizeSparse = (p: SparsePacked, bits: 8 | 4) => quantizeValues(p.values, p.N, 2 * p.G, bits);

/** Bytes of the packed arrays (what a kernel streams per pass over the weight). */
export function packedBytes(p: SparsePacked, values: 'f32' | 'q8' | 'q4' = 'f32'): number {
  const perRow = 2 * p.G;
  const rowScales = Math.ceil(perRow / QGROUP);
  const valueBytes = values === 'f32' ? p.N * perRow * 4 : p.N * (rowScales * QGROUP * (values === 'q8' ? 1 : 0.5) + rowScales * 4);
  return valueBytes + p.meta.byteLength + (p.format === 'vnm' ? p.columns.byteLength : 0);
}

/**
 * Rows [r0, r1) of a packed weight as a packed weight of its own (r0 a multiple of V for V:2:M, so the
 * slice starts on a block): how a weight too large for one binding is split into row chunks.
 */
export function sliceSparseRows(p: SparsePacked, r0: number, r1: number): SparsePacked {
  if (!(Number.isInteger(r0) && Number.isInteger(r1) && 0 <= r0 && r0 < r1 && r1 <= p.N)) throw new ShapeError(`sliceSparseRows: bad rows [${r0}, ${r1}) of ${p.N}`);
  const values = p.values.slice(r0 * 2 * p.G, r1 * 2 * p.G);
  const meta = p.meta.slice(r0 * p.metaStride, r1 * p.metaStride);
  if (p.format === '2:4') return { ...p, N: r1 - r0, values, meta };
  if (r0 % p.V) throw new ShapeError(`sliceSparseRows: row ${r0} is not on a ${p.V}-row block boundary`);
  const columns = p.columns.slice((r0 / p.V) * p.G, Math.ceil(r1 / p.V) * p.G);
  return { ...p, N: r1 - r0, values, meta, columns };
}
