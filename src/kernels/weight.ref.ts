/** CPU reference of the packed weight formats (weight-pack.ts): the matrix a packed weight stands for, and quantisation error. */
import { bf16ToF32, f16ToF32, fp8e4m3Table } from '../util/half';
import { FP8_BLOCK, scaleAt, type PackedWeight } from './weight-pack';

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

