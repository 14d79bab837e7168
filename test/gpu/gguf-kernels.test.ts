import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, poisoned } from '../helpers/gpu';
import { mulberry32, randomUniform } from '../../src/util/random';
import { f32ToBf16, f32ToF16 } from '../../src/util/half';
import { DECODABLE, dequantize, ggmlTypeByName, quantize, type DecodableType } from '../../src/formats/gguf-blocks';
import { destroyGgufWeight, GGUF_GEMV_MAX_ROWS, ggufEmbedding, ggufLinear, uploadGgufWeight } from '../../src/kernels/gguf-linear';
import { ggufEmbeddingRef, ggufExpertsToRef, ggufLinearRef, ggufMoeExpertsRef } from '../../src/kernels/gguf-linear.ref';
import { destroyGgufExperts, ggufMoeExperts, uploadGgufExperts } from '../../src/kernels/gguf-moe';
import { ggufExpertStackBytes } from '../../src/kernels/gguf-layout';
import { matmulRef } from '../../src/kernels/matmul.ref';

// Tolerance: the kernels decode the blocks to the same f32 weights as the CPU dequantiser (exact but for
// a possible fused multiply-add in `d·sc·q − dmin·m`, ≤ 1 ulp per weight) and accumulate in f32 in a
// different order than the float64 reference. Both errors scale with the magnitude of the terms, not
// of the result (which can cancel): for the GEMV Σ_k |x_k·w_k|, for the MoE the bound computed in its
// test. Each output must be within RTOL · magnitude + 1e-6 of the reference. Measured worst (printed
// by the tests): 5e-8 (GEMV), 1.3e-8 (MoE), i.e. about one f32 ulp; RTOL = 1e-5 leaves 200× margin
// (√K·ε at K = 768 is 1.7e-6) and still catches any wrong nibble, scale, bit or row, and a 0.1% error
// in an intermediate (the MoE's h), which 1e-4 would miss through the down projection's cancellation.
// Quantisation error itself (weights vs the f32 originals) is measured in test/unit/gguf-blocks.test.ts.
const RTOL = 1e-5;

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

/** Half bits of a random finite value in [−lim, lim] (block scales). */
const randHalf = (r: () => number, lim: number) => f32ToF16((r() * 2 - 1) * lim);

/**
 * Raw blocks covering every code and scale bit pattern: random bytes, with the half fields (d, dmin)
 * replaced by random finite values; float types from random values. Half the cases use the quantiser's
 * output instead (realistic scales).
 */
export function randomGgufBytes(type: DecodableType, n: number, seed: number): Uint8Array {
  const r = mulberry32(seed);
  if (type === 'F32') return quantize('F32', randomUniform(n, seed));
  if (type === 'F16' || type === 'BF16') {
    const out = new Uint8Array(2 * n);
    for (let i = 0; i < n; i++) { const h = type === 'F16' ? f32ToF16(r() * 4 - 2) : f32ToBf16(r() * 4 - 2); out[2 * i] = h & 255; out[2 * i + 1] = h >> 8; }
    return out;
  }
  if (seed % 2) return quantize(type, randomUniform(n, seed));
  const t = ggmlTypeByName(type)!;
  const out = new Uint8Array((n / t.blockSize) * t.blockBytes).map(() => Math.floor(r() * 256));
  const halves: Record<string, number[]> = { Q8_0: [0], Q4_0: [0], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208] };
  for (let b = 0; b < n / t.blockSize; b++) {
    for (const o of halves[type]) {
      // K-quant scales multiply 6-bit factors (≤ 63): keep d small so weights stay O(1).
      const h = randHalf(r, type.endsWith('_K') ? 0.03 : 0.2);
      out[b * t.blockBytes + o] = h & 255;
      out[b * t.blockBytes + o + 1] = h >> 8;
    }
  }
  return out;
}

function check(got: Float32Array, ref: Float32Array, mag: Float32Array, what: string) {
  let bad = 0, first = -1, worst = 0;
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(got[i] - ref[i]);
    const lim = RTOL * mag[i] + 1e-6;
    if (!(err <= lim)) { bad++; if (first < 0) first = i; }
    if (Number.isFinite(err)) worst = Math.max(worst, err / (mag[i] || 1));
  }
  if (bad) throw new Error(`${what}: ${bad}/${ref.length} outputs out of tolerance; first at ${first}: got ${got[first]}, want ${ref[first]} (Σ|x·w| ${mag[first]})`);
  return worst;
}

/** Which K each type is tested at (multiples of its block; floats also ragged). */
const K_OF: Record<DecodableType, number[]> = {
  F32: [37, 64], F16: [38, 128], BF16: [41, 96], Q8_0: [96, 160], Q4_0: [64, 224], Q4_K: [256, 768], Q5_K: [512, 256], Q6_K: [256, 512],
};

describe('ggufLinear: every block type against the CPU dequantise-then-f32 reference', () => {
  // Ragged N (not a multiple of the 4-row tile), M across the x-row blocks (1 → MR = 1; 2..9 → MR = 4,
  // 9 is ragged in it), strided and offset x / y on the second shape.
  // The last column: rows per buffer when the matrix is forced into row chunks (a binding limit of that
  // many rows; 0 = one buffer), ragged last chunk included.
  const cases: [DecodableType, number, number, number, boolean, number][] = [];
  DECODABLE.forEach((type, i) => {
    cases.push([type, 1, 7 + 2 * i, K_OF[type][0], false, 0]);
    cases.push([type, 2 + (i % 8), 13 + i, K_OF[type][1], true, 0]);
  });
  cases.push(['Q4_K', 9, 33, 256, false, 0], ['Q6_K', 5, 3, 256, false, 0], ['Q8_0', 4, 1, 32, false, 0]);
  cases.push(['Q4_K', 3, 37, 256, true, 8], ['F16', 1, 29, 38, false, 4], ['Q6_K', 5, 23, 256, true, 12], ['Q8_0', 1, 19, 96, false, 5]);

  it.each(cases)('%s M=%i N=%i K=%i strided=%s chunk rows=%i', (type, M, N, K, strided, chunkRows) => linearCase(type, M, N, K, strided, chunkRows, 'gemv'));

  it('refuses unsupported types and ragged block rows before touching the GPU', () => {
    expect(() => uploadGgufWeight(gpu, 'q2k', 'Q2_K', new Uint8Array(84), 1, 256)).toThrow(/no GPU decoder/);
    expect(() => uploadGgufWeight(gpu, 'q4k', 'Q4_K', new Uint8Array(144), 1, 255)).toThrow(/multiple of Q4_K's block of 256/);
    expect(() => uploadGgufWeight(gpu, 'q8', 'Q8_0', new Uint8Array(33), 1, 32)).toThrow(/33 bytes/);
  });
});

describe('ggufLinear tiled matmul (prefill): every block type against the CPU reference', () => {
  // 32 × 32 output tiles, K in slices of 64: M and N ragged in the tile (1, 9, 33, 70 rows of x; N not a
  // multiple of 32, one N below a tile), K with a ragged last slice (Q8_0/Q4_0 at 96 and 224, floats at
  // 37 / 131 weights: units past K and weights past K masked), several slices for the K-quants; strided
  // and offset x / y; row chunks. The default choice (M > GGUF_GEMV_MAX_ROWS) is checked too.
  const cases: [DecodableType, number, number, number, boolean, number][] = [];
  DECODABLE.forEach((type, i) => {
    cases.push([type, 33 + 37 * (i % 2), 37 + 2 * i, K_OF[type][0], i % 2 === 0, 0]);
    cases.push([type, 9 + i, 5 + 8 * i, K_OF[type][1], i % 2 === 1, 0]);
  });
  cases.push(['F32', 40, 45, 131, true, 0], ['Q4_K', 1, 33, 256, false, 0], ['Q6_K', 70, 23, 256, true, 12], ['Q8_0', 35, 19, 96, false, 5]);

  it.each(cases)('%s M=%i N=%i K=%i strided=%s chunk rows=%i', (type, M, N, K, strided, chunkRows) => linearCase(type, M, N, K, strided, chunkRows, 'matmul'));

  it('is what ggufLinear runs past GGUF_GEMV_MAX_ROWS rows of x', async () => {
    expect(GGUF_GEMV_MAX_ROWS).toBeGreaterThanOrEqual(1);
    const labels: string[] = [];
    const w = uploadGgufWeight(gpu, 'w', 'Q8_0', randomGgufBytes('Q8_0', 4 * 32, 3), 4, 32);
    for (const M of [GGUF_GEMV_MAX_ROWS, GGUF_GEMV_MAX_ROWS + 1]) {
      const rec = gpu.recorder('kernel choice');
      const dispatch = rec.dispatch.bind(rec);
      rec.dispatch = (d) => { labels.push(d.label ?? ''); dispatch(d); };
      const x = gpu.buffers.create('x', M * 32 * 4), y = gpu.buffers.create('y', M * 4 * 4);
      ggufLinear(gpu, rec, { x, w, y, M });
      rec.submit();
      gpu.buffers.destroy(x);
      gpu.buffers.destroy(y);
    }
    destroyGgufWeight(gpu, w);
    expect(labels).toEqual(['gguf_gemv.Q8_0:w', 'gguf_matmul.Q8_0:w']);
  });
});

/** One ggufLinear case with `kernel` forced, both reductions (the matmul has one), against the reference. */
async function linearCase(type: DecodableType, M: number, N: number, K: number, strided: boolean, chunkRows: number, kernel: 'gemv' | 'matmul') {
  {
    const seed = M * 7919 + N * 31 + K;
    const bytes = randomGgufBytes(type, N * K, seed);
    const rowBytes = bytes.length / N;
    const w = uploadGgufWeight(gpu, `w.${type}`, type, bytes, N, K, chunkRows ? { maxBindingBytes: chunkRows * rowBytes + 16 } : {});
    if (chunkRows) expect(w.chunks!.map((c) => [c.row0, c.N])).toEqual(Array.from({ length: Math.ceil(N / (chunkRows - (chunkRows % 4))) }, (_, i) => [i * (chunkRows - (chunkRows % 4)), Math.min(chunkRows - (chunkRows % 4), N - i * (chunkRows - (chunkRows % 4)))]));
    const xStride = strided ? K + 3 : K, xOffset = strided ? 2 : 0, yStride = strided ? N + 5 : N, yOffset = strided ? 1 : 0;
    const xFull = randomUniform(M * xStride + xOffset + 8, seed + 1);
    const x = new Float32Array(M * K);
    for (let m = 0; m < M; m++) x.set(xFull.subarray(m * xStride + xOffset, m * xStride + xOffset + K), m * K);
    const ref = ggufLinearRef(x, type, bytes, M, N, K);
    const mag = matmulRef(x.map(Math.abs), dequantize(type, bytes, N * K).map(Math.abs), M, N, K);
    const bx = gpu.buffers.upload('x', xFull);
    // Both reductions: subgroups (where the device has them) and workgroup memory.
    for (const noSubgroups of kernel === 'gemv' ? [false, true] : [false]) {
      const by = poisoned(gpu, 'y', M * yStride + yOffset + 4);
      const out = await gpu.checked(async () => {
        const rec = gpu.recorder('gguf');
        ggufLinear(gpu, rec, { x: bx, w, y: by, M, xStride, xOffset, yStride, yOffset, noSubgroups, kernel });
        rec.submit();
        return gpu.buffers.readF32(by, 0, M * yStride + yOffset + 4);
      });
      const got = new Float32Array(M * N);
      for (let m = 0; m < M; m++) got.set(out.subarray(m * yStride + yOffset, m * yStride + yOffset + N), m * N);
      console.log(`${type} ${kernel === 'matmul' ? 'matmul' : noSubgroups ? 'workgroup' : 'subgroup'}: worst |Δ| / Σ|x·w| = ${check(got, ref, mag, `${type} ${M}x${N}x${K} noSubgroups=${noSubgroups}`).toExponential(2)}`);
      // Outside the written ranges the poison stays (no stray writes).
      for (let m = 0; m < M; m++) {
        for (let j = 0; j < yStride; j++) if (j < yOffset || j >= yOffset + N) expect(Number.isNaN(out[m * yStride + j]), `y[${m}, ${j}] written`).toBe(true);
      }
      gpu.buffers.destroy(by);
    }
    gpu.buffers.destroy(bx);
    destroyGgufWeight(gpu, w);
  }
}

describe('ggufMoeExperts: stacked GGUF experts against the CPU reference', () => {
  // [gate|up type, down type, E, K, D, I, T, shared]: the Q4_K_M mix (Q4_K gate/up, Q6_K down), Q8_0,
  // a K-quant/legacy mix, and float experts with ragged D and I (rows not a multiple of the 4-row tile,
  // K not a multiple of the 4-weight unit); T from 1 to 9. Last column: experts per stack under a binding
  // limit set just above that stack's bytes (0 = one buffer): uneven stacks (7 experts in 3 + 3 + 1), and
  // stacks of fewer experts than the K slots of a token.
  const cases: [DecodableType, DecodableType, number, number, number, number, number, boolean, number][] = [
    ['Q4_K', 'Q6_K', 4, 2, 256, 256, 1, true, 0],
    ['Q4_K', 'Q6_K', 4, 2, 256, 256, 5, false, 0],
    ['Q8_0', 'Q8_0', 6, 3, 96, 64, 9, true, 0],
    ['Q5_K', 'Q4_0', 3, 1, 256, 256, 3, false, 0],
    ['F16', 'BF16', 3, 2, 38, 22, 2, true, 0],
    ['F32', 'F32', 5, 2, 37, 13, 7, false, 0],
    ['Q4_K', 'Q6_K', 7, 3, 256, 256, 5, true, 3],
    ['Q8_0', 'Q8_0', 6, 4, 96, 64, 3, false, 2],
    ['F16', 'Q8_0', 5, 2, 38, 32, 4, true, 1],
    // Prefill sizes for the grouped path: experts with more sorted rows than a 32-row tile, ragged
    // column tiles (I, D not multiples of 32), several K slices.
    ['Q4_K', 'Q6_K', 3, 2, 256, 256, 40, true, 0],
    ['Q8_0', 'Q4_0', 5, 3, 96, 96, 33, false, 2],
    ['F32', 'BF16', 4, 2, 45, 27, 37, true, 0],
  ];
  it.each(cases)('gate|up %s, down %s: E=%i K=%i D=%i I=%i T=%i shared=%s, experts per stack %i', async (tu, td, E, K, D, I, T, withShared, per) => {
    const seed = E * 131 + D * 7 + I + T;
    const gate = randomGgufBytes(tu, E * I * D, seed), up = randomGgufBytes(tu, E * I * D, seed + 1), down = randomGgufBytes(td, E * D * I, seed + 2);
    const perExpert = [gate.length / E, up.length / E, down.length / E] as const;
    const maxBindingBytes = per ? Math.max(...ggufExpertStackBytes(per, ...perExpert)) + 3 : undefined;
    const w = uploadGgufExperts(gpu, 'moe', { type: tu, bytes: gate }, { type: tu, bytes: up }, { type: td, bytes: down }, E, I, D, { maxBindingBytes });
    if (per) {
      expect(w.stacks?.map((s) => [s.e0, s.E])).toEqual(Array.from({ length: Math.ceil(E / per) }, (_, i) => [i * per, Math.min(per, E - i * per)]));
      for (const s of w.stacks!) { expect(s.gateUp.size).toBeLessThanOrEqual(maxBindingBytes!); expect(s.down.size).toBeLessThanOrEqual(maxBindingBytes!); }
      expect(w.bytes).toBe(w.stacks!.reduce((a, s) => a + s.gateUp.size + s.down.size, 0));
    } else expect(w.stacks).toBeUndefined();
    const r = mulberry32(seed);
    const ids: number[][] = [], wts: number[][] = [];
    for (let t = 0; t < T; t++) {
      const pool = Array.from({ length: E }, (_, e) => e);
      ids.push(Array.from({ length: K }, () => pool.splice(Math.floor(r() * pool.length), 1)[0]));
      wts.push(Array.from({ length: K }, () => 0.1 + r()));
    }
    const x = randomUniform(T * D, seed + 3);
    const shared = withShared ? randomUniform(T * D, seed + 4) : null;
    const experts = ggufExpertsToRef({ type: tu, bytes: gate }, { type: tu, bytes: up }, { type: td, bytes: down }, E, I, D);
    const ref = ggufMoeExpertsRef(x, T, D, I, experts, ids, wts, shared);
    // Magnitude of the terms each output's f32 error scales with: g = gate·x and u = up·x err by
    // ~ε·Σ|gate·x| (ga) and ε·Σ|up·x| (ua), so h = silu(g)·u errs by ≤ |silu'(g)|·ga·|u| + |silu(g)|·ua
    // (|silu'| < 1.1) units of ε; the down projection adds Σ_i |down_di|·|h_i|.
    const mag = new Float32Array(T * D);
    const silu = (v: number) => v / (1 + Math.exp(-v));
    for (let t = 0; t < T; t++) {
      ids[t].forEach((e, j) => {
        const { gate: gw, up: uw, down: dn } = experts[e];
        const hm = new Float64Array(I);
        for (let i = 0; i < I; i++) {
          let ga = 0, ua = 0, g = 0, u = 0;
          for (let d = 0; d < D; d++) {
            const xd = x[t * D + d];
            g += gw[i * D + d] * xd; u += uw[i * D + d] * xd;
            ga += Math.abs(gw[i * D + d] * xd); ua += Math.abs(uw[i * D + d] * xd);
          }
          hm[i] = 1.1 * ga * Math.abs(u) + Math.abs(silu(g)) * ua + Math.abs(silu(g) * u);
        }
        for (let d = 0; d < D; d++) {
          let s = 0;
          for (let i = 0; i < I; i++) s += Math.abs(dn[d * I + i]) * hm[i];
          mag[t * D + d] += Math.abs(wts[t][j]) * s;
        }
      });
    }
    const bx = gpu.buffers.upload('x', x);
    const bids = gpu.buffers.upload('ids', Uint32Array.from(ids.flat()));
    const bw = gpu.buffers.upload('wts', Float32Array.from(wts.flat()));
    const bs = shared ? gpu.buffers.upload('shared', shared) : null;
    // The decode path with both reductions (subgroups where the device has them, workgroup memory), and
    // the grouped path (entries sorted by expert, tiled).
    const runs = [{ mode: 'decode', noSubgroups: false }, { mode: 'decode', noSubgroups: true }, { mode: 'grouped', noSubgroups: false }] as const;
    for (const { mode, noSubgroups } of runs) {
      const bout = poisoned(gpu, 'out', T * D);
      const got = await gpu.checked(async () => {
        const rec = gpu.recorder('gguf-moe');
        ggufMoeExperts(gpu, rec, { x: bx, T, experts: w, ids: bids, weights: bw, K, shared: bs, out: bout, noSubgroups, mode });
        rec.submit();
        gpu.temps.releaseAll();
        return gpu.buffers.readF32(bout, 0, T * D);
      });
      const how = mode === 'grouped' ? 'grouped' : noSubgroups ? 'workgroup' : 'subgroup';
      console.log(`moe ${tu}/${td} ${how}: worst |Δ| / Σ|terms| = ${check(got, ref, mag, `moe ${tu}/${td} E=${E} K=${K} D=${D} I=${I} T=${T} ${how}`).toExponential(2)}`);
      gpu.buffers.destroy(bout);
    }
    for (const b of [bx, bids, bw, ...(bs ? [bs] : [])]) gpu.buffers.destroy(b);
    destroyGgufExperts(gpu, w);
  });

  it('refuses gate and up of different types, and wrong byte counts', () => {
    const q = (t: DecodableType, n: number) => ({ type: t, bytes: new Uint8Array((n / ggmlTypeByName(t)!.blockSize) * ggmlTypeByName(t)!.blockBytes) });
    expect(() => uploadGgufExperts(gpu, 'x', q('Q4_K', 256 * 256), q('Q5_K', 256 * 256), q('Q6_K', 256 * 256), 1, 256, 256)).toThrow(/one type/);
    expect(() => uploadGgufExperts(gpu, 'x', q('Q4_K', 256 * 256), q('Q4_K', 256 * 256), q('Q6_K', 256 * 512), 1, 256, 256)).toThrow(/down has/);
  });

  it('refuses a binding limit below one expert with the typed GPU_LIMIT_EXCEEDED naming the expert', () => {
    const q = (t: DecodableType, n: number) => ({ type: t, bytes: new Uint8Array((n / ggmlTypeByName(t)!.blockSize) * ggmlTypeByName(t)!.blockBytes) });
    // One expert's gate|up: 2 × 256 rows × 144 B = 73,728 B (+ 16 B padding).
    expect(() => uploadGgufExperts(gpu, 'x', q('Q4_K', 2 * 256 * 256), q('Q4_K', 2 * 256 * 256), q('Q6_K', 2 * 256 * 256), 2, 256, 256, { maxBindingBytes: 73_000 }))
      .toThrow(expect.objectContaining({ code: 'GPU_LIMIT_EXCEEDED', message: expect.stringMatching(/one routed expert of 'x'/) }));
  });
});

describe('ggufEmbedding: rows of a GGUF table gathered by token id, against the CPU dequantiser', () => {
  // The kernel decodes each weight as the GEMV does, so values equal the CPU dequantiser's but for a
  // possible fused multiply-add in K-quants' d·sc·q − dmin·m (≤ 1 ulp of the larger term): tolerance
  // 1e-6 × (max |weight| + 1). Ragged V, D ragged for the float types, repeated ids, an id = V (row left
  // unwritten), strided and offset output on every other type; output poisoned with NaN.
  // Last column: rows per buffer of a table forced into row chunks (0 = one buffer); the ids then span chunks.
  const cases: [DecodableType, number, number, boolean, number][] = DECODABLE.map((type, i) => [type, 5 + 2 * i, K_OF[type][i % 2], i % 2 === 1, 0]);
  cases.push(['Q4_K', 19, 256, true, 4], ['F16', 11, 38, false, 4], ['Q8_0', 13, 96, false, 8]);
  it.each(cases)('%s V=%i D=%i strided=%s chunk rows=%i', async (type, V, D, strided, chunkRows) => {
    const bytes = randomGgufBytes(type, V * D, V * 131 + D);
    const w = uploadGgufWeight(gpu, `table.${type}`, type, bytes, V, D, chunkRows ? { maxBindingBytes: chunkRows * (bytes.length / V) + 16 } : {});
    if (chunkRows) expect(w.chunks!.length).toBe(Math.ceil(V / chunkRows));
    const ids = [0, V - 1, 2, V, 2, 1, V - 2];
    const T = ids.length, outStride = strided ? D + 3 : D, outOffset = strided ? 2 : 0;
    const bids = gpu.buffers.upload('ids', Uint32Array.from(ids));
    const bout = poisoned(gpu, 'out', T * outStride + outOffset + 4);
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('gguf.gather');
      ggufEmbedding(gpu, rec, { table: w, ids: bids, out: bout, T, outStride, outOffset });
      rec.submit();
      return gpu.buffers.readF32(bout, 0, T * outStride + outOffset + 4);
    });
    const ref = ggufEmbeddingRef(type, bytes, V, D, ids);
    const table = dequantize(type, bytes, V * D);
    const tol = 1e-6 * (table.reduce((m, x) => Math.max(m, Math.abs(x)), 0) + 1);
    let worst = 0;
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < outStride; j++) {
        const v = out[t * outStride + j];
        const k = j - outOffset;
        if (k < 0 || k >= D || ids[t] >= V) { expect(Number.isNaN(v), `out[${t}, ${j}] written`).toBe(true); continue; }
        const d = Math.abs(v - ref[t * D + k]);
        worst = Math.max(worst, d);
        if (!(d <= tol)) throw new Error(`${type} out[${t}, ${k}] = ${v}, want ${ref[t * D + k]}`);
      }
    }
    console.log(`${type} gather: worst |Δ| = ${worst.toExponential(2)} (tolerance ${tol.toExponential(2)})`);
    for (const b of [bids, bout]) gpu.buffers.destroy(b);
    destroyGgufWeight(gpu, w);
  });
});
