// The whole model on sparse kernels: the deepseek-v3-tiny fixture with every linear layer the GPU
// backend's `sparsify` policy sees (attention, dense MLP) uploaded 2:4 / 64:2:8, so the model's
// linear() calls run shaders/sparse.wgsl (matmul for the prefill, GEMV for the decode steps), and the
// MoE experts (uploaded by the backend's moe()) pruned to the same pattern but dense-stored, against
// the CPU reference model on the same pruned checkpoint.
import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose } from '../helpers/gpu';
import { fixtureFile, fixtureJson, fixtureTokens } from '../helpers/fixture';
import { forward } from '../../src/model/deepseek';
import { CpuBackend, type CpuTensor } from '../../src/model/cpu-backend';
import { GpuBackend, type GpuTensor } from '../../src/model/gpu-backend';
import { buildWeights } from '../../src/model/load';
import { openCheckpoint } from '../../src/loader/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { parseSafetensors, toFloat32, writeSafetensors } from '../../src/formats/safetensors';
import { pruneModelTensors, sparsityLabel, isSparsityTarget, type HostTensor, type SparsityOption } from '../../src/sparse/apply';
import { sparsifyWeight } from '../../src/kernels/sparse';

// f32 throughout; the GPU and CPU paths of the dense fixture agree to ~5e-6 (fixture README), the
// sparse kernels sum fewer products in another order: 1e-4 on logits of std ≈ 2.
const TOL = { atol: 1e-4, rtol: 0 };
const { tokens, prefill_split: split } = fixtureTokens();
let gpu: Gpu;
let dense: HostTensor[];

beforeAll(async () => {
  gpu = await testGpu();
  const st = parseSafetensors(fixtureFile('model.safetensors'));
  dense = [...st.header.tensors.keys()].map((name) => { const t = st.tensor(name); return { name, shape: t.shape, data: toFloat32(t.dtype, t.data) }; });
});

const checkpoint = (tensors: HostTensor[]) => openCheckpoint(memoryModel({
  'config.json': JSON.stringify(fixtureJson('config.json')),
  'model.safetensors': writeSafetensors(Object.fromEntries(tensors.map((t) => [t.name, { dtype: 'F32' as const, shape: t.shape, data: t.data }]))),
}));

describe('whole model on sparse kernels == CPU reference on the pruned checkpoint', () => {
  it.each([{ format: '2:4' }, { format: 'vnm', v: 64, m: 8 }] as Omit<SparsityOption, 'apply'>[])('%o: prefill then decode', async (o) => {
    const pruned = pruneModelTensors(dense, { ...o, apply: 'all-linear' }).tensors;
    // CPU reference: prefill [0, split), then one token at a time.
    const ckptCpu = await checkpoint(pruned);
    const cfg = ckptCpu.config;
    const V = cfg.vocabSize;
    const cpu = new CpuBackend(cfg);
    const wCpu = await buildWeights(cpu, cfg, ckptCpu);
    const want = new Float32Array(tokens.length * V);
    want.set((forward(cpu, cfg, wCpu, tokens.slice(0, split), { past: 0 }) as CpuTensor).data, 0);
    for (let i = split; i < tokens.length; i++) want.set((forward(cpu, cfg, wCpu, [tokens[i]], { past: cpu.cachedTokens }) as CpuTensor).data, i * V);

    // GPU: the same checkpoint; every block linear layer re-packed sparse (pruning is idempotent).
    let sparseLayers = 0;
    const be = new GpuBackend(gpu, cfg, {
      storage: () => 'f32',
      nativeFp8: false,
      sparsify: (name, data, N, K, role) => {
        if (!isSparsityTarget(name, 'all-linear')) return null; // not lm_head, nor MLA's kv_b (read densely by the attention kernels)
        sparseLayers++;
        return sparsifyWeight(gpu, name, data, N, K, { ...o, values: 'f32' }).weight;
      },
    }, 64);
    const wGpu = await buildWeights(be, cfg, await checkpoint(pruned));
    // attention (q_a, q_b, kv_a, o) ×3 layers + the dense MLP; the backend's moe() uploads shared and
    // routed experts itself (dense-stored here, pruned in the checkpoint; sparse-moe.test.ts runs them sparse)
    expect(sparseLayers).toBe(3 * 4 + 3);
    const got = new Float32Array(tokens.length * V);
    const step = async (toks: number[], at: number) => {
      const past = be.cache.length;
      be.cache.ensureCapacity(past + toks.length);
      be.begin('sparse-model');
      const out = forward(be, cfg, wGpu, toks, { past }) as GpuTensor;
      be.submit();
      be.cache.commit(toks.length);
      got.set(await gpu.buffers.readF32(out.buf, 0, toks.length * V), at * V);
    };
    await gpu.checked(async () => {
      await step(tokens.slice(0, split), 0);
      for (let i = split; i < tokens.length; i++) await step([tokens[i]], i);
    });
    be.destroy();
    expectClose(got, want, TOL, `whole model ${sparsityLabel(o)}`);
  });
});
