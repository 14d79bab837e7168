/** CPU reference for linear(): Y[M, N] = X[M, K] · Wᵀ with W the dense f32 (dequantised, see weight.ref.ts) matrix. */
import { matmulRef } from './matmul.ref';

export function linearRef(x: Float32Array, w: Float32Array, M: number, N: number, K: number): Float32Array {
  return matmulRef(x, w, M, N, K);
}
