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

/**
 * GPU bytes of a stack of `n` GGUF experts as gguf-moe.ts uploadGgufExperts holds it: [gate|up buffer,
 * down buffer], with `gate`, `up`, `down` the bytes of one expert's matrix (its slice of the stacked
 * file tensor; up starts at the 4-byte aligned end of gate).
 */
export function ggufExpertStackBytes(n: number, gate: number, up: number, down: number): [number, number] {
  return [ggufBufferBytes(Math.ceil((n * gate) / 4) * 4 + n * up), ggufBufferBytes(n * down)];
}

/**
 * Experts per stack of a layer's E GGUF experts so that both buffers of a stack fit `limit`: the fewest
 * stacks, as even as they come (as moe.ts expertsPerStack); 0 when not even one expert fits.
 */
export function ggufExpertsPerStack(E: number, gate: number, up: number, down: number, limit: number): number {
  const fits = (n: number) => Math.max(...ggufExpertStackBytes(n, gate, up, down)) <= limit;
  if (!fits(1)) return 0;
  let lo = 1, hi = E;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return Math.ceil(E / Math.ceil(E / lo));
}

