import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, poisoned } from '../helpers/gpu';
import { mulberry32, randomUniform } from '../../src/util/random';
import { f32ToBf16, f32ToF16 } from '../../src/util/half';
import { DECODABLE, dequantize, ggmlTypeByName, quantize, type DecodableType } from '../../src/formats/gguf-blocks';
import { destroyGgufWeight, ggufLinear, uploadGgufWeight } from '../../src/kernels/gguf-linear';
import { ggufLinearRef } from '../../src/kernels/gguf-linear.ref';
import { matmulRef } from '../../src/kernels/matmul.ref';

// Tolerance: the kernels decode the blocks to the same f32 weights as the CPU dequantiser (exact but for
// a possible fused multiply-add in `d·sc·q − dmin·m`, ≤ 1 ulp per weight) and accumulate in f32 in a
// different order than the float64 reference. Both errors scale with Σ_k |x_k·w_k| (the magnitude of
// the terms, not of the result, which can cancel), so each output must be within
// RTOL · Σ_k |x_k·w_k| + 1e-6 of the reference: RTOL = 1e-4 is ~10× the f32 accumulation error at
// K ≤ 768 (√K·2⁻²⁴·a few) and far below any wrong nibble, scale, bit or row (≥ 1e-2 of the terms).
// Quantisation error itself (weights vs the f32 originals) is measured in test/unit/gguf-blocks.test.ts.
const RTOL = 1e-4;

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
  const cases: [DecodableType, number, number, number, boolean][] = [];
  DECODABLE.forEach((type, i) => {
    cases.push([type, 1, 7 + 2 * i, K_OF[type][0], false]);
    cases.push([type, 2 + (i % 8), 13 + i, K_OF[type][1], true]);
  });
  cases.push(['Q4_K', 9, 33, 256, false], ['Q6_K', 5, 3, 256, false], ['Q8_0', 4, 1, 32, false]);

  it.each(cases)('%s M=%i N=%i K=%i strided=%s', async (type, M, N, K, strided) => {
    const seed = M * 7919 + N * 31 + K;
    const bytes = randomGgufBytes(type, N * K, seed);
    const w = uploadGgufWeight(gpu, `w.${type}`, type, bytes, N, K);
    const xStride = strided ? K + 3 : K, xOffset = strided ? 2 : 0, yStride = strided ? N + 5 : N, yOffset = strided ? 1 : 0;
    const xFull = randomUniform(M * xStride + xOffset + 8, seed + 1);
    const x = new Float32Array(M * K);
    for (let m = 0; m < M; m++) x.set(xFull.subarray(m * xStride + xOffset, m * xStride + xOffset + K), m * K);
    const ref = ggufLinearRef(x, type, bytes, M, N, K);
    const mag = matmulRef(x.map(Math.abs), dequantize(type, bytes, N * K).map(Math.abs), M, N, K);
    const bx = gpu.buffers.upload('x', xFull);
    const by = poisoned(gpu, 'y', M * yStride + yOffset + 4);
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('gguf');
      ggufLinear(gpu, rec, { x: bx, w, y: by, M, xStride, xOffset, yStride, yOffset });
      rec.submit();
      return gpu.buffers.readF32(by, 0, M * yStride + yOffset + 4);
    });
    const got = new Float32Array(M * N);
    for (let m = 0; m < M; m++) got.set(out.subarray(m * yStride + yOffset, m * yStride + yOffset + N), m * N);
    check(got, ref, mag, `${type} ${M}x${N}x${K}`);
    // Outside the written ranges the poison stays (no stray writes).
    for (let m = 0; m < M; m++) {
      for (let j = 0; j < yStride; j++) if (j < yOffset || j >= yOffset + N) expect(Number.isNaN(out[m * yStride + j]), `y[${m}, ${j}] written`).toBe(true);
    }
    gpu.buffers.destroy(bx);
    gpu.buffers.destroy(by);
    destroyGgufWeight(gpu, w);
  });

  it('refuses unsupported types and ragged block rows before touching the GPU', () => {
    expect(() => uploadGgufWeight(gpu, 'q2k', 'Q2_K', new Uint8Array(84), 1, 256)).toThrow(/no GPU decoder/);
    expect(() => uploadGgufWeight(gpu, 'q4k', 'Q4_K', new Uint8Array(144), 1, 255)).toThrow(/multiple of Q4_K's block of 256/);
    expect(() => uploadGgufWeight(gpu, 'q8', 'Q8_0', new Uint8Array(33), 1, 32)).toThrow(/33 bytes/);
  });
});
