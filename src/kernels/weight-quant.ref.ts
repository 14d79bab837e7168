/**
 * CPU reference of shaders/weight_quant.wgsl: packWeight's q8 / q4 layout (groups of 32, f16 scales)
 * with the exact rounding the shader implements, scale f16(fround(amax / Q)) and code
 * clamp(floor(x / s + 1/2), -Q, Q) with a true division (in double precision x / s is correctly rounded,
 * and an f32 x over an f16 s never lands within 2^-53 of a tie it is not on, so the floor is exact).
 */
import { f32ToF16, f16ToF32 } from '../util/half';
import { QMAX, rowLayout, type PackedWeight } from './weight-pack';

export function quantizeRef(w: Float32Array, N: number, K: number, format: 'q8' | 'q4'): PackedWeight {
  const gs = 32, G = Math.ceil(K / gs), Q = QMAX[format];
  const { Kp, rowWords } = rowLayout(format, K);
  const data = new Uint32Array(N * rowWords);
  const scales = new Uint32Array(Math.ceil((N * G) / 2));
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      let amax = 0;
      for (let k = g * gs; k < Math.min(K, g * gs + gs); k++) amax = Math.max(amax, Math.abs(w[n * K + k]));
      const h = f32ToF16(Math.fround(amax / Q));
      const idx = n * G + g;
      scales[idx >> 1] |= (idx & 1 ? h << 16 : h) >>> 0;
      const s = f16ToF32(h);
      for (let k = g * gs; k < Math.min(Kp, g * gs + gs); k++) {
        const q = k < K && s > 0 ? Math.max(-Q, Math.min(Q, Math.floor(w[n * K + k] / s + 0.5))) : 0;
        if (format === 'q8') data[n * rowWords + (k >> 2)] |= ((q & 0xff) << ((k & 3) * 8)) >>> 0;
        else data[n * rowWords + (k >> 3)] |= ((q + 8) << ((k & 7) * 4)) >>> 0;
      }
    }
  }
  return { format, N, K, Kp, rowWords, data, scales, groupSize: gs, scaleF16: true, scaleCols: G };
}
