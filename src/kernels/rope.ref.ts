/** CPU reference of rotary position embedding (kernels/rope.ts); the frequencies come from rope-params.ts. */

export interface RopeRefArgs {
  rows: number;
  heads: number;
  /** Elements between rows and between heads within a row. */
  rowStride: number;
  headStride: number;
  /** Start of the rope slice within each head. */
  offset: number;
  ropeDim: number;
  invFreq: Float32Array;
  /** Position of row 0; row r is at pos0 + r. */
  pos0: number;
  /** 'pairs' (default): (x[2i], x[2i+1]), DeepSeek / HF rope_interleave; 'halves': (x[i], x[i + d/2]), NeoX / GPT-OSS / Llama. */
  style?: 'pairs' | 'halves';
}

/**
 * In place: for every row r, head h, pair i: (a, b) = x[base + 2i, base + 2i + 1] with
 * base = r·rowStride + h·headStride + offset, angle = fround(pos·inv_freq[i]) (torch multiplies in
 * float32), a' = a·cos − b·sin, b' = a·sin + b·cos.
 */
export function ropeRef(x: Float32Array, a: RopeRefArgs): Float32Array {
  for (let r = 0; r < a.rows; r++) {
    const pos = a.pos0 + r;
    for (let h = 0; h < a.heads; h++) {
      const base = r * a.rowStride + h * a.headStride + a.offset;
      for (let i = 0; i < a.ropeDim / 2; i++) {
        const ang = Math.fround(pos * a.invFreq[i]);
        const c = Math.cos(ang), s = Math.sin(ang);
        // halves: GPT-OSS _apply_rotary_emb: o1 = x1·cos − x2·sin, o2 = x2·cos + x1·sin.
        const ia = a.style === 'halves' ? base + i : base + 2 * i;
        const ib = a.style === 'halves' ? base + i + a.ropeDim / 2 : base + 2 * i + 1;
        const u = x[ia], v = x[ib];
        x[ia] = u * c - v * s;
        x[ib] = u * s + v * c;
      }
    }
  }
  return x;
}
