/**
 * CPU reference of the WASM q8/q4 kernels' activation quantisation (kernels/wasm/kernels.c quant_x16): each
 * row of x [M, K] in groups of 32 along K (zero-padded to Kp) as int16 q = clamp(roundHalfEven(x · 32767 /
 * max|x|), ±32767) with scale max|x| / 32767, in f32 arithmetic as the kernel does it. Returns the values the
 * kernel multiplies with (q · scale), so the reference product is matmulRef(dequantised x, dequantised W).
 */
const roundHalfEven = (v: number) => {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

export function quantizeActivationsI16Ref(x: Float32Array, M: number, K: number): Float32Array {
  const out = new Float32Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let k0 = 0; k0 < K; k0 += 32) {
      const k1 = Math.min(K, k0 + 32);
      let amax = 0;
      for (let k = k0; k < k1; k++) amax = Math.max(amax, Math.abs(x[m * K + k]));
      const inv = amax > 0 ? Math.fround(32767 / amax) : 0;
      const scale = Math.fround(amax / 32767);
      for (let k = k0; k < k1; k++) {
        const q = Math.max(-32767, Math.min(32767, roundHalfEven(Math.fround(x[m * K + k] * inv))));
        out[m * K + k] = q * scale;
      }
    }
  }
  return out;
}
