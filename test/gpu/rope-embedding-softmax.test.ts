import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform, randomNormal } from '../../src/util/random';
import { rope } from '../../src/kernels/rope';
import { ropeRef } from '../../src/kernels/rope.ref';
import { ropeInvFreq } from '../../src/kernels/rope-params';
import { embedding } from '../../src/kernels/embedding';
import { embeddingRef } from '../../src/kernels/embedding.ref';
import { softmax, logSoftmax } from '../../src/kernels/softmax';
import { softmaxRef } from '../../src/kernels/softmax.ref';
import { uploadPacked, destroyWeight } from '../../src/kernels/weight';
import { packWeight } from '../../src/kernels/weight-pack';
import { dequantizeRef } from '../../src/kernels/weight.ref';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

// RoPE tolerance: the angle is the same float32 product on both sides; GPU sin/cos of angles up to
// ~3000 rad differ from float64 by a few ulps of the angle's magnitude (≈ 3000·2^-24 ≈ 2e-4 at worst
// after range reduction), times |x| ≤ 1. Small positions are far tighter; 5e-4 abs covers the worst case.
const ROPE_TOL = { atol: 5e-4, rtol: 1e-5 };
// Softmax: a few f32 exp/log and one division per element: 1e-6 relative on probabilities; log-softmax
// values are O(10) with f32 cancellation: 2e-5 absolute.
const SM_TOL = { atol: 1e-7, rtol: 2e-5 };
const LSM_TOL = { atol: 2e-5, rtol: 1e-6 };

describe('rope', () => {
  // style 'half' (HF rotate_half): pair i = (i, i + ropeDim/2) of each head; whole heads (offset 0) as the
  // Llama-style families use it, and a slice of a strided row.
  it.each([
    // rows, heads, headStride, offset, ropeDim, rowStride, pos0
    [1, 1, 8, 0, 8, 8, 0],
    [5, 4, 16, 0, 16, 64, 3],
    [3, 2, 136, 0, 128, 280, 1500],   // ragged strides, head_dim 128
    [7, 3, 70, 6, 64, 214, 2900],
  ])('rotate_half rows=%i heads=%i headStride=%i offset=%i ropeDim=%i', async (rows, heads, headStride, offset, ropeDim, rowStride, pos0) => {
    const x = randomUniform(rows * rowStride, 11 + rows + heads + pos0);
    const inv = ropeInvFreq(ropeDim, 1e6, null);
    const bx = gpu.buffers.upload('x', x), bi = gpu.buffers.upload('inv', inv);
    const ref = ropeRef(Float32Array.from(x), { rows, heads, rowStride, headStride, offset, ropeDim, invFreq: inv, pos0, style: 'half' });
    const interleaved = ropeRef(Float32Array.from(x), { rows, heads, rowStride, headStride, offset, ropeDim, invFreq: inv, pos0 });
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      rope(gpu, rec, { x: bx, rows, heads, rowStride, headStride, offset, ropeDim, invFreq: bi, pos0, style: 'half' });
      rec.submit();
      return gpu.buffers.readF32(bx);
    });
    expectClose(out, ref, ROPE_TOL, 'rope half');
    // The two pairings are different rotations (the test would not notice a kernel ignoring `style` otherwise).
    if (pos0 > 0) expect(Math.max(...ref.map((v, i) => Math.abs(v - interleaved[i])))).toBeGreaterThan(1e-2);
    gpu.buffers.destroy(bx); gpu.buffers.destroy(bi);
  });

  it.each([
    // rows, heads, headStride, offset, ropeDim, rowStride, pos0
    [1, 1, 8, 0, 8, 8, 0],
    [5, 4, 24, 16, 8, 96, 3],        // q: 4 heads of [nope 16 | rope 8]
    [3, 1, 40, 32, 8, 40, 100],      // kv_a: [latent 32 | k_pe 8], one head
    [7, 3, 70, 6, 64, 214, 2900],    // ragged strides, V3 rope dim, large positions
  ])('rows=%i heads=%i headStride=%i offset=%i ropeDim=%i', async (rows, heads, headStride, offset, ropeDim, rowStride, pos0) => {
    const x = randomUniform(rows * rowStride, rows + heads + pos0);
    const inv = ropeInvFreq(ropeDim, 10000, ropeDim === 64 ? { type: 'yarn', factor: 40, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, mscale: 1, mscaleAllDim: 1 } : null);
    const bx = gpu.buffers.upload('x', x), bi = gpu.buffers.upload('inv', inv);
    const ref = ropeRef(Float32Array.from(x), { rows, heads, rowStride, headStride, offset, ropeDim, invFreq: inv, pos0 });
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      rope(gpu, rec, { x: bx, rows, heads, rowStride, headStride, offset, ropeDim, invFreq: bi, pos0 });
      rec.submit();
      return gpu.buffers.readF32(bx);
    });
    expectClose(out, ref, ROPE_TOL, 'rope');
    [bx, bi].forEach((b) => gpu.buffers.destroy(b));
  });

  it('takes the position from a GPU buffer (pos0 + posBuffer[0])', async () => {
    const rows = 2, heads = 2, headStride = 12, offset = 4, ropeDim = 8, rowStride = 24;
    const x = randomUniform(rows * rowStride, 1);
    const inv = ropeInvFreq(ropeDim, 10000, null);
    const bx = gpu.buffers.upload('x', x), bi = gpu.buffers.upload('inv', inv), bp = gpu.buffers.upload('pos', Uint32Array.from([37]));
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      rope(gpu, rec, { x: bx, rows, heads, rowStride, headStride, offset, ropeDim, invFreq: bi, pos0: 5, posBuffer: bp });
      rec.submit();
      return gpu.buffers.readF32(bx);
    });
    expectClose(out, ropeRef(Float32Array.from(x), { rows, heads, rowStride, headStride, offset, ropeDim, invFreq: inv, pos0: 42 }), ROPE_TOL, 'rope posBuffer');
    [bx, bi, bp].forEach((b) => gpu.buffers.destroy(b));
  });
});

describe('embedding', () => {
  it.each([['f32', 9, 13], ['f32', 50, 64], ['f16', 50, 30], ['bf16', 21, 30], ['q8', 33, 40], ['q4', 70, 100]] as const)('%s table V=%i D=%i', async (format, V, D) => {
    const table = randomNormal(V * D, V + D);
    const p = packWeight(table, V, D, format);
    const w = uploadPacked(gpu, 'embed', p);
    const ids = [0, V - 1, 3, 3, Math.floor(V / 2), 1];
    const bids = gpu.buffers.upload('ids', Uint32Array.from(ids));
    const out = poisoned(gpu, 'out', ids.length * D);
    const y = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      embedding(gpu, rec, { table: w, ids: bids, out, T: ids.length, D });
      rec.submit();
      return gpu.buffers.readF32(out);
    });
    // exact: rows are copied / decoded, no arithmetic beyond one scale product
    expectClose(y, embeddingRef(dequantizeRef(p), ids, D), { atol: 0, rtol: 0 }, `embedding ${format}`);
    destroyWeight(gpu, w);
    [bids, out].forEach((b) => gpu.buffers.destroy(b));
  });

  it('a chunked table (forced) gathers every id from its chunk', async () => {
    const V = 300, D = 20;
    const table = randomNormal(V * D, 2);
    const p = packWeight(table, V, D, 'f16');
    const w = uploadPacked(gpu, 'embed', p, p.rowWords * 4 * 128);
    expect(w.chunks?.length).toBe(3);
    const ids = [299, 0, 128, 127, 256, 255, 17];
    const bids = gpu.buffers.upload('ids', Uint32Array.from(ids));
    const out = poisoned(gpu, 'out', ids.length * D);
    const y = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      embedding(gpu, rec, { table: w, ids: bids, out, T: ids.length, D });
      rec.submit();
      return gpu.buffers.readF32(out);
    });
    expectClose(y, embeddingRef(dequantizeRef(p), ids, D), { atol: 0, rtol: 0 }, 'chunked embedding');
    destroyWeight(gpu, w);
    [bids, out].forEach((b) => gpu.buffers.destroy(b));
  });
});

describe('softmax / log-softmax', () => {
  it.each([[1, 1], [3, 17], [2, 4096], [2, 4097], [1, 129_280]])('rows=%i V=%i', async (rows, V) => {
    const x = randomNormal(rows * V, rows + V, 4);
    const bx = gpu.buffers.upload('x', x);
    const by = poisoned(gpu, 'y', rows * V), bl = poisoned(gpu, 'l', rows * V);
    const bin = gpu.buffers.upload('xin', x);
    const [y, l, inPlace] = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      softmax(gpu, rec, { x: bx, y: by, rows, V });
      logSoftmax(gpu, rec, { x: bx, y: bl, rows, V });
      logSoftmax(gpu, rec, { x: bin, rows, V });
      rec.submit();
      return Promise.all([gpu.buffers.readF32(by), gpu.buffers.readF32(bl), gpu.buffers.readF32(bin)]);
    });
    expectClose(y, softmaxRef(x, rows, V), SM_TOL, 'softmax');
    const lref = softmaxRef(x, rows, V, true);
    expectClose(l, lref, LSM_TOL, 'logSoftmax');
    expectClose(inPlace, lref, LSM_TOL, 'logSoftmax in place');
    [bx, by, bl, bin].forEach((b) => gpu.buffers.destroy(b));
  });
});
