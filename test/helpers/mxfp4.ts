import { mulberry32 } from '../../src/util/random';

/** Random MXFP4 bytes in the HF layout: every nibble value (incl. −0), scale bytes lo .. lo + span − 1 (default 117..136). */
export function randomMxfp4(E: number, N: number, G: number, seed: number, lo = 117, span = 20) {
  const r = mulberry32(seed);
  const blocks = new Uint8Array(E * N * G * 16), scales = new Uint8Array(E * N * G);
  for (let i = 0; i < blocks.length; i++) blocks[i] = Math.floor(r() * 256);
  for (let i = 0; i < scales.length; i++) scales[i] = lo + Math.floor(r() * span);
  return { blocks, scales };
}

