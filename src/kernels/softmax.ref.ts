/** Softmax / log-softmax of each row (float64 accumulation). */
export function softmaxRef(x: Float32Array, rows: number, V: number, log = false): Float32Array {
  const y = new Float32Array(rows * V);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let i = 0; i < V; i++) m = Math.max(m, x[r * V + i]);
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(x[r * V + i] - m);
    const ls = Math.log(s);
    for (let i = 0; i < V; i++) y[r * V + i] = log ? x[r * V + i] - m - ls : Math.exp(x[r * V + i] - m) / s;
  }
  return y;
}
