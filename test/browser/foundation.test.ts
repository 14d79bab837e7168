// The same kernels in headless Chromium (WebGPU on SwiftShader when there is no GPU), proving the WGSL
// and the GPU layer behave identically in a page. Smaller sweep than the Node tier.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform } from '../../src/util/random';
import { matmulTiled, gemv } from '../../src/kernels/matmul';
import { matmulRef } from '../../src/kernels/matmul.ref';
import { rmsNorm } from '../../src/kernels/rmsnorm';
import { rmsNormRef } from '../../src/kernels/rmsnorm.ref';
import { siluMul } from '../../src/kernels/elementwise';
import { siluMulRef } from '../../src/kernels/elementwise.ref';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

describe('foundation kernels in Chromium', () => {
  it('has a WebGPU adapter and reads its capabilities', () => {
    expect(gpu.caps.maxStorageBuffersPerStage).toBeGreaterThanOrEqual(8);
    expect(gpu.caps.maxComputeWorkgroupsPerDimension).toBeGreaterThanOrEqual(65535);
  });

  it.each([[1, 17, 3], [3, 129, 64], [64, 300, 17], [129, 64, 300]])('matmul/gemv M=%i N=%i K=%i', async (M, N, K) => {
    const x = randomUniform(M * K, M + N), w = randomUniform(N * K, K);
    const bx = gpu.buffers.upload('x', x), bw = gpu.buffers.upload('w', w);
    const ref = matmulRef(x, w, M, N, K);
    for (const fn of [matmulTiled, gemv]) {
      const by = poisoned(gpu, 'y', M * N);
      const y = await gpu.checked(async () => {
        const rec = gpu.recorder('t');
        fn(gpu, rec, { x: bx, w: bw, y: by, M, N, K });
        rec.submit();
        return gpu.buffers.readF32(by);
      });
      expectClose(y, ref, { atol: 1e-4, rtol: 1e-4 }, fn.name);
      gpu.buffers.destroy(by);
    }
  });

  it('rmsnorm and silu·mul', async () => {
    const rows = 7, dim = 129;
    const x = randomUniform(rows * dim, 1, -3, 3), w = randomUniform(dim, 2);
    const bx = gpu.buffers.upload('x', x), bw = gpu.buffers.upload('w', w);
    const by = poisoned(gpu, 'y', rows * dim), bm = poisoned(gpu, 'm', rows * dim);
    const [y, m] = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      rmsNorm(gpu, rec, { x: bx, w: bw, y: by, rows, dim, eps: 1e-6 });
      siluMul(gpu, rec, bx, bx, bm, rows * dim);
      rec.submit();
      return Promise.all([gpu.buffers.readF32(by), gpu.buffers.readF32(bm)]);
    });
    expectClose(y, rmsNormRef(x, w, rows, dim, 1e-6), { atol: 1e-6, rtol: 1e-5 }, 'rmsnorm');
    expectClose(m, siluMulRef(x, x), { atol: 1e-6, rtol: 1e-5 }, 'silu_mul');
  });

  it('surfaces validation errors as typed errors', async () => {
    const small = gpu.buffers.create('small', 16);
    await expect(gpu.checked(() => {
      const rec = gpu.recorder('bad');
      // A copy past the end of the buffer is a WebGPU validation error.
      rec.copy(small, 0, small, 8, 16);
      rec.submit();
    })).rejects.toMatchObject({ code: 'GPU_VALIDATION' });
    gpu.buffers.destroy(small);
  });
});
