/**
 * How GGUF block tensors are laid out in GPU buffers, without the kernels: the memory plan
 * (model/memory-plan.ts) sizes buffers with these, and gguf-linear.ts / gguf-moe.ts allocate by them.
 * (No shader imports here, so the plan can be loaded anywhere, e.g. by tests in plain Node.)
 */

/** GPU bytes of a GGUF block buffer: whole words plus 16 spare bytes (the decoder reads fields at even offsets as words, and float row tails as whole vec4 units). */
export const ggufBufferBytes = (bytes: number): number => Math.ceil(bytes / 4) * 4 + 16;

/**
 * Rows per chunk of an N-row GGUF matrix with `rowBytes` per row under a binding `limit`: N (one
 * buffer) when it fits, else the most rows whose buffer fits, rounded down to a multiple of 4 (the
 * GEMV's row tile); below 1 when not even one row fits.
 */
export function ggufChunkRows(N: number, rowBytes: number, limit: number): number {
  if (ggufBufferBytes(N * rowBytes) <= limit) return N;
  const rows = Math.floor((Math.floor((limit - 16) / 4) * 4) / rowBytes);
  return rows >= 4 ? rows - (rows % 4) : rows;
}
