import { describe, it, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose } from '../helpers/gpu';
import { randomUniform } from '../../src/util/random';
import { rope } from '../../src/kernels/rope';
import { ropeRef } from '../../src/kernels/rope.ref';
import { ropeInvFreq } from '../../src/kernels/rope-params';

// GPT-OSS rotary embedding: NeoX halves (x[i] with x[i + d/2]) and its YaRN frequencies (truncate false).
// Tolerance as test/gpu/rope-embedding-softmax.test.ts: the same f32 angle on both sides; the shader's
// range-reduced sin/cos of angles up to ~1e4·inv_freq differ from float64 by a few ulps of the angle:
// 5e-4 abs on |x| ≤ 1 covers positions in the thousands.
const ROPE_TOL = { atol: 5e-4, rtol: 1e-5 };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

describe('rope style halves (GPT-OSS / NeoX)', () => {
  const yarn = { type: 'yarn' as const, factor: 32, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, mscale: 1, mscaleAllDim: 0, truncate: false };
  it.each([
    // rows, heads, headStride, offset, ropeDim, rowStride, pos0
    [3, 8, 64, 0, 64, 8 * 64, 0],         // gpt-oss q heads (scaled down), positions 0..2
    [2, 2, 64, 0, 64, 128, 7000],         // k heads past the original context (YaRN matters)
    [5, 3, 20, 4, 10, 70, 33],            // ragged: slice inside a head, odd half (5), strided rows
  ])('rows=%i heads=%i headStride=%i offset=%i ropeDim=%i', async (rows, heads, headStride, offset, ropeDim, rowStride, pos0) => {
    const x = randomUniform(rows * rowStride, rows + heads + pos0);
    const inv = ropeInvFreq(ropeDim, 150000, ropeDim === 64 ? yarn : null);
    const ref = ropeRef(Float32Array.from(x), { rows, heads, rowStride, headStride, offset, ropeDim, invFreq: inv, pos0, style: 'half' });
    const bx = gpu.buffers.upload('x', x), bi = gpu.buffers.upload('inv', inv);
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('rope halves');
      rope(gpu, rec, { x: bx, rows, heads, rowStride, headStride, offset, ropeDim, invFreq: bi, pos0, style: 'half' });
      rec.submit();
      return gpu.buffers.readF32(bx);
    });
    // Values outside the rope slices must be untouched: the reference leaves them as they were.
    expectClose(out, ref, ROPE_TOL, 'rope halves');
    [bx, bi].forEach((b) => gpu.buffers.destroy(b));
  });
  it('without a style the kernel keeps rotating adjacent pairs (DeepSeek)', async () => {
    const x = randomUniform(64, 9), inv = ropeInvFreq(64, 150000, null);
    const bx = gpu.buffers.upload('x', x), bi = gpu.buffers.upload('inv', inv);
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('rope pairs');
      rope(gpu, rec, { x: bx, rows: 1, heads: 1, rowStride: 64, headStride: 64, offset: 0, ropeDim: 64, invFreq: bi, pos0: 100 });
      rec.submit();
      return gpu.buffers.readF32(bx);
    });
    expectClose(out, ropeRef(Float32Array.from(x), { rows: 1, heads: 1, rowStride: 64, headStride: 64, offset: 0, ropeDim: 64, invFreq: inv, pos0: 100 }), ROPE_TOL, 'pairs');
    [bx, bi].forEach((b) => gpu.buffers.destroy(b));
  });
});
