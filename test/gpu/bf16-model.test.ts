/**
 * bf16 storage on a BF16 checkpoint: the stored values are the checkpoint's exactly (a bfloat16 is
 * the top half of an f32), so a model held as bf16 computes what the f32-widened model computes, up to
 * f32 summation order. Tolerance: 1e-5 abs + 1e-5 rel on logits of |·| ≲ 10 (the f32 kernels' own
 * run-to-run spread between GEMV and matmul paths is of that order).
 */
import { describe, expect, it } from 'vitest';
import { GpuModelLoader, type AcquireGpu } from '../../src/model/assemble';
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { syntheticCheckpoint, TINY_V3_CONFIG } from '../../src/model/synthetic';
import type { GpuRunner } from '../../src/model/gpu-runner';
import { expectClose, testGpu } from '../helpers/gpu';

const TOL = { atol: 1e-5, rtol: 1e-5 };
const acquire: AcquireGpu = () => testGpu();

describe('bf16 weight storage', () => {
  it('a BF16 checkpoint held as bf16 gives the f32-widened logits (prefill and decode), with half the weight bytes of its matrices, as planned', async () => {
    const files = syntheticCheckpoint({ ...TINY_V3_CONFIG, torch_dtype: 'bfloat16' }, { dtype: 'BF16', seed: 3 });
    const ckpt = await openCheckpoint(memoryModel(files), { validateTokenizer: false });
    const tokens = [5, 17, 200, 3, 99, 41, 7, 250, 12, 64];
    const run = async (weights: 'f32' | 'bf16') => {
      const m = await new GpuModelLoader(acquire).load(ckpt, 'bf16', { weights, contextLength: 64 });
      const runner = m.runner as GpuRunner;
      const prefill = await runner.logits(tokens, true);
      const decode = await runner.logits([9], true);
      const out = { prefill, decode, bytes: runner.be.weightBytes, plan: m.plan, description: m.description };
      runner.destroy();
      return out;
    };
    const f32 = await run('f32');
    const bf16 = await run('bf16');
    expect(bf16.description).toMatchObject({ weightStorage: 'bf16', expertStorage: 'bf16' });
    expect(bf16.plan.storage).toMatchObject({ weights: 'bf16', experts: 'bf16', embedding: 'bf16' });
    expectClose(bf16.prefill, f32.prefill, TOL, 'prefill logits');
    expectClose(bf16.decode, f32.decode, TOL, 'decode logits');
    expect(bf16.bytes).toBe(bf16.plan.weights.bytes);
    expect(f32.bytes).toBe(f32.plan.weights.bytes);
    // Everything but kv_b, the routers and the norms halves.
    expect(bf16.bytes / f32.bytes).toBeGreaterThan(0.5);
    expect(bf16.bytes / f32.bytes).toBeLessThan(0.6);
    await ckpt.close();
  });
});
