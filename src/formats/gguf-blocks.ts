/**
 * ggml tensor types: block layout facts (weights per block, bytes per block), from ggml's
 * `ggml/src/ggml-common.h` and the type traits table of `ggml.c`. Layouts of the types webmoe decodes
 * are documented in docs/gguf.md.
 */

/** ggml_type ids as stored in GGUF tensor infos (gaps are removed types: 4, 5 = Q4_2/Q4_3; 31–33; 36–38). */
export const GGML_TYPE = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9,
  Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, Q8_K: 15,
  IQ2_XXS: 16, IQ2_XS: 17, IQ3_XXS: 18, IQ1_S: 19, IQ4_NL: 20, IQ3_S: 21, IQ2_S: 22, IQ4_XS: 23,
  I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, IQ1_M: 29, BF16: 30, TQ1_0: 34, TQ2_0: 35, MXFP4: 39,
} as const;

export type GgmlTypeName = keyof typeof GGML_TYPE;

export interface GgmlTypeInfo {
  name: GgmlTypeName;
  id: number;
  /** Weights per block (1 for plain scalars). */
  blockSize: number;
  /** Bytes per block. */
  blockBytes: number;
}

/** [name, weights per block, bytes per block] (ggml's type_traits blck_size / type_size). */
const LAYOUTS: [GgmlTypeName, number, number][] = [
  ['F32', 1, 4], ['F16', 1, 2], ['Q4_0', 32, 18], ['Q4_1', 32, 20], ['Q5_0', 32, 22], ['Q5_1', 32, 24],
  ['Q8_0', 32, 34], ['Q8_1', 32, 36], ['Q2_K', 256, 84], ['Q3_K', 256, 110], ['Q4_K', 256, 144],
  ['Q5_K', 256, 176], ['Q6_K', 256, 210], ['Q8_K', 256, 292], ['IQ2_XXS', 256, 66], ['IQ2_XS', 256, 74],
  ['IQ3_XXS', 256, 98], ['IQ1_S', 256, 50], ['IQ4_NL', 32, 18], ['IQ3_S', 256, 110], ['IQ2_S', 256, 82],
  ['IQ4_XS', 256, 136], ['I8', 1, 1], ['I16', 1, 2], ['I32', 1, 4], ['I64', 1, 8], ['F64', 1, 8],
  ['IQ1_M', 256, 56], ['BF16', 1, 2], ['TQ1_0', 256, 54], ['TQ2_0', 256, 66], ['MXFP4', 32, 17],
];

const BY_ID = new Map<number, GgmlTypeInfo>(LAYOUTS.map(([name, blockSize, blockBytes]) => [GGML_TYPE[name], { name, id: GGML_TYPE[name], blockSize, blockBytes }]));
const BY_NAME = new Map<string, GgmlTypeInfo>([...BY_ID.values()].map((t) => [t.name, t]));

/** The layout of ggml type `id`, or undefined for an id ggml does not define. */
export function ggmlType(id: number): GgmlTypeInfo | undefined {
  return BY_ID.get(id);
}

export function ggmlTypeByName(name: string): GgmlTypeInfo | undefined {
  return BY_NAME.get(name);
}

/** Bytes of a row of `n` weights (n must be a multiple of the block size). */
export function rowBytes(t: GgmlTypeInfo, n: number): number {
  return (n / t.blockSize) * t.blockBytes;
}
