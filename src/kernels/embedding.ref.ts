/** CPU reference for the embedding gather: out[t] = table[ids[t]] (rows of a dense f32 [V, D] table; ids ≥ V are not written). */
export function embeddingRef(table: Float32Array, ids: ArrayLike<number>, D: number, out = new Float32Array(ids.length * D)): Float32Array {
  const V = table.length / D;
  for (let t = 0; t < ids.length; t++) if (ids[t] < V) out.set(table.subarray(ids[t] * D, ids[t] * D + D), t * D);
  return out;
}
