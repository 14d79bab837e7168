/** CPU reference of the packed weight formats (weight-pack.ts): the matrix a packed weight stands for, and quantisation error. */
import { bf16ToF32, f16ToF32, fp8e4m3Table } from '../util/half';
import { FP4_VALUES, FP8_BLOCK, MX_BLOCK, e8m0Value, scaleAt, type PackedWeight } from './weight-pack';

const f32View = new Float32Array(1);
const u32View = new Uint32Array(f32View.buffer);
const bitsF32 = (b: number) => { u32View[0] = b; return f32View[0]; };

/** The f32 [N, K] matrix a packed weight represents (what the kernels must compute with). */
export function dequantizeRef(p: PackedWeight): Float32Array {
  const { N, K, rowWords, data } = p;
  const out = new Float32Array(N * K);
  const fp8 = p.format === 'fp8' ? fp8e4m3Table() : null;
  for (let n = 0; n < N; n++) {
    const wi = n * rowWords;
    for (let k = 0; k < K; k++) {
      let v: number;
      switch (p.format) {
        case 'f32': v = bitsF32(data[wi + k]); break;
        case 'f16': { const w = data[wi + (k >> 1)]; v = f16ToF32(k & 1 ? w >>> 16 : w & 0xffff); break; }
        case 'bf16': { const w = data[wi + (k >> 1)]; v = bf16ToF32(k & 1 ? w >>> 16 : w & 0xffff); break; }
        case 'q8': v = ((data[wi + (k >> 2)] >>> ((k & 3) * 8)) << 24 >> 24) * scaleAt(p, n * p.scaleCols + Math.floor(k / p.groupSize)); break;
        case 'q4': v = (((data[wi + (k >> 3)] >>> ((k & 7) * 4)) & 15) - 8) * scaleAt(p, n * p.scaleCols + Math.floor(k / p.groupSize)); break;
        case 'fp8': v = fp8![(data[wi + (k >> 2)] >>> ((k & 3) * 8)) & 0xff] * scaleAt(p, Math.floor(n / FP8_BLOCK) * p.scaleCols + Math.floor(k / FP8_BLOCK)); break;
        case 'mxfp4': {
          const si = n * p.scaleCols + Math.floor(k / MX_BLOCK);
          v = FP4_VALUES[(data[wi + (k >> 3)] >>> ((k & 7) * 4)) & 15] * e8m0Value((p.scales![si >> 2] >>> ((si & 3) * 8)) & 0xff);
          break;
        }
      }
      out[n * K + k] = v;
    }
  }
  return out;
}

/** Error of a quantised matrix against the original: max |Δ|, RMS Δ, and RMS Δ / RMS w. */
export function quantError(orig: Float32Array, deq: Float32Array): { maxAbs: number; rms: number; relRms: number } {
  let maxAbs = 0, se = 0, sw = 0;
  for (let i = 0; i < orig.length; i++) {
    const d = deq[i] - orig[i];
    maxAbs = Math.max(maxAbs, Math.abs(d));
    se += d * d;
    sw += orig[i] * orig[i];
  }
  const rms = Math.sqrt(se / Math.max(1, orig.length));
  return { maxAbs, rms, relRms: sw > 0 ? Math.sqrt(se / sw) : 0 };
}


/**
 * transformers' convert_moe_packed_tensors, line by line, in float64: blocks [E, N, G, 16] and scales
 * [E, N, G] (one layer's `*_blocks` / `*_scales`) → [E, G·32, N], the dequantised parameter HF's
 * GptOssExperts multiplies as x @ W (hence the transpose). Low nibble = element 2i, high = 2i + 1;
 * exponent = scale − 127 (torch.ldexp). The oracle the packed layout is checked against.
 */
export function mxfp4DequantHfRef(blocks: Uint8Array, scales: Uint8Array, E: number, N: number, G: number): Float64Array {
  const K = G * MX_BLOCK;
  const out = new Float64Array(E * K * N);
  for (let e = 0; e < E; e++) for (let n = 0; n < N; n++) for (let g = 0; g < G; g++) {
    const r = (e * N + n) * G + g;
    const exp = scales[r] - 127;
    for (let b = 0; b < 16; b++) {
      const byte = blocks[r * 16 + b];
      const k = g * MX_BLOCK + 2 * b;
      out[(e * K + k) * N + n] = FP4_VALUES[byte & 0x0f] * 2 ** exp;
      out[(e * K + k + 1) * N + n] = FP4_VALUES[byte >> 4] * 2 ** exp;
    }
  }
  return out;
}
