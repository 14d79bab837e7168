export const silu = (v: number) => v / (1 + Math.exp(-v));

export function addRef(a: Float32Array, b: Float32Array): Float32Array {
  return a.map((v, i) => v + b[i]);
}

export function siluMulRef(g: Float32Array, u: Float32Array): Float32Array {
  return g.map((v, i) => Math.fround(silu(v) * u[i]));
}

export function siluMulRowsRef(gu: Float32Array, rows: number, cols: number): Float32Array {
  const y = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) y[r * cols + c] = silu(gu[r * 2 * cols + c]) * gu[r * 2 * cols + cols + c];
  return y;
}

/** y[r, c] += bias[c] in place (addBias). */
export function addBiasRef(y: Float32Array, bias: Float32Array, rows: number, cols: number): Float32Array {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) y[r * cols + c] += bias[c];
  return y;
}
