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
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { parseSafetensors, toFloat32, writeSafetensors } from '../../src/formats/safetensors';
import { autoSparsity, writePrunedCheckpoint, pruneModelTensors, type HostTensor } from '../../src/model/prune-checkpoint';
import type { SparsityOptions } from '../../src/model/assemble';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { gpuEngine } from '../helpers/models';
import { pruneMatrix, sparsityLabel, type SparsityOption } from '../../src/sparse/apply';

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

/**
 * The GPU stacks each routed expert's gate and up rows ([2I, D]) before pruning, so a V×M block can span
 * both; prune the checkpoint's experts the same way so the CPU reference sees the GPU's weights.
 */
function prunedLikeTheGpu(tensors: HostTensor[], o: Omit<SparsityOption, 'apply'>): HostTensor[] {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const original = new Map(dense.map((t) => [t.name, t]));
  for (const t of tensors) {
    const m = /^(model\.layers\.\d+\.mlp\.experts\.\d+)\.gate_proj\.weight$/.exec(t.name);
    if (!m) continue;
    const gate = original.get(`${m[1]}.gate_proj.weight`)!, up = original.get(`${m[1]}.up_proj.weight`)!;
    const [I, D] = gate.shape;
    const stacked = new Float32Array(2 * I * D);
    stacked.set(gate.data, 0);
    stacked.set(up.data, I * D);
    const p = pruneMatrix(stacked, 2 * I, D, o).pruned;
    byName.get(`${m[1]}.gate_proj.weight`)!.data = p.slice(0, I * D);
    byName.get(`${m[1]}.up_proj.weight`)!.data = p.slice(I * D);
  }
  return tensors;
}

describe('whole model on sparse kernels == CPU reference on the pruned checkpoint', () => {
  it.each([{ format: '2:4' }, { format: 'vnm', v: 64, m: 8 }] as Omit<SparsityOption, 'apply'>[])('%o: prefill then decode', async (o) => {
    const pruned = prunedLikeTheGpu(pruneModelTensors(dense, { ...o, apply: 'all-linear' }).tensors, o);
    // CPU reference: prefill [0, split), then one token at a time.
    const ckptCpu = await checkpoint(pruned);
    const cfg = ckptCpu.config;
    const V = cfg.vocabSize;
    const cpu = new CpuBackend(cfg);
    const wCpu = await buildWeights(cpu, cfg, ckptCpu);
    const want = new Float32Array(tokens.length * V);
    want.set((forward(cpu, cfg, wCpu, tokens.slice(0, split), { past: 0 }) as CpuTensor).data, 0);
    for (let i = split; i < tokens.length; i++) want.set((forward(cpu, cfg, wCpu, [tokens[i]], { past: cpu.cachedTokens }) as CpuTensor).data, i * V);

    // GPU: the same checkpoint with sparsity 'all-linear' in the load policy: every block linear layer,
    // the shared experts and the routed experts re-packed sparse (pruning is idempotent).
    const be = new GpuBackend(gpu, cfg, {
      storage: () => 'f32',
      nativeFp8: false,
      sparsity: { format: o.format, v: o.v ?? 64, m: o.m ?? 8, apply: 'all-linear', values: 'f32' },
    }, 64);
    const wGpu = await buildWeights(be, cfg, await checkpoint(pruned));
    // attention (q_a, q_b, kv_a, o) ×3 layers + the dense MLP + the shared experts ×2 run sparse
    // (not lm_head, nor MLA's kv_b, read densely by the attention kernels); routed experts too.
    const sparseLinear = wGpu.layers.flatMap((L) => [L.attn.qA, L.attn.qB, L.attn.kvA, L.attn.o, L.mlp?.gate, L.mlp?.up, L.mlp?.down, L.moe?.shared?.gate, L.moe?.shared?.up, L.moe?.shared?.down])
      .filter((w) => w && (w.format === '2:4' || w.format === 'vnm'));
    expect(sparseLinear).toHaveLength(3 * 4 + 3 + 2 * 3);
    expect(wGpu.layers.filter((L) => L.moe?.experts.sparse)).toHaveLength(2);
    expect(wGpu.layers[0].attn.kvB!.format).toBe('f32');
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

describe('pre-pruned checkpoints on the engine', () => {
  const withTokenizer = (file: Uint8Array) => memoryModel({
    'config.json': JSON.stringify(fixtureJson('config.json')),
    'model.safetensors': file,
    'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()),
  });
  const logitsOn = async (file: Uint8Array, sparsity?: SparsityOptions | null) => {
    const e = gpuEngine(gpu);
    const info = await e.load(withTokenizer(file), { weights: 'f32', ...(sparsity !== undefined ? { sparsity } : {}) });
    const logits = await gpu.checked(() => e.runner.logits(tokens, true));
    await e.unload();
    return { info, logits };
  };

  it.each([
    [{ format: '2:4', apply: 'experts' }, '2:4 (experts, pre-pruned)'],
    [{ format: 'vnm', v: 16, m: 8, apply: 'all-linear' }, '16:2:8 (all-linear, pre-pruned)'],
  ] as [SparsityOption, string][])('%o runs on the sparse kernels by default, as the dense file pruned at load does', async (o, label) => {
    const pre = await writePrunedCheckpoint(await openCheckpoint(memoryModel({ 'config.json': JSON.stringify(fixtureJson('config.json')), 'model.safetensors': fixtureFile('model.safetensors') })), o);
    const a = await logitsOn(pre.file);
    expect(a.info.sparsity).toBe(label);
    const b = await logitsOn(fixtureFile('model.safetensors'), o);
    expect(b.info.sparsity).toBe(label.replace(', pre-pruned', ''));
    expectClose(a.logits, b.logits, { atol: 1e-6, rtol: 0 }, 'pre-pruned vs pruned at load');
    // sparsity: null runs the stored values on the dense kernels.
    const c = await logitsOn(pre.file, null);
    expect(c.info.sparsity).toBe('dense');
    expectClose(c.logits, a.logits, TOL, 'dense kernels vs sparse kernels');
  });

  it("sparsity 'auto' loads the pattern autoSparsity picks for the target ratio, as that option does", async () => {
    const fixture = () => openCheckpoint(memoryModel({ 'config.json': JSON.stringify(fixtureJson('config.json')), 'model.safetensors': fixtureFile('model.safetensors') }));
    const ck = await fixture();
    const auto = autoSparsity([...ck.tensors].map(([name, t]) => ({ name, shape: t.shape })), ck.config, 'experts', 0.45);
    // fixture: I = 32, D = 64, so V ∈ {16, 32}; M = 5 pads K = 32 to 35 columns (0.47 of the bytes), so M = 6
    expect(auto.label).toBe('16:2:6');
    const a = await logitsOn(fixtureFile('model.safetensors'), { format: 'auto', targetRatio: 0.45, apply: 'experts' });
    expect(a.info.sparsity).toBe('16:2:6 (experts)');
    const b = await logitsOn(fixtureFile('model.safetensors'), auto.option);
    expectClose(a.logits, b.logits, { atol: 0, rtol: 0 }, 'auto vs the picked pattern');
  });

  it('pre-pruned with F16 values: sparse kernels, the f16-rounded values', async () => {
    const o: SparsityOption = { format: '2:4', apply: 'experts' };
    const ck = () => openCheckpoint(memoryModel({ 'config.json': JSON.stringify(fixtureJson('config.json')), 'model.safetensors': fixtureFile('model.safetensors') }));
    const half = await writePrunedCheckpoint(await ck(), o, { values: 'F16' });
    const full = await writePrunedCheckpoint(await ck(), o);
    expect(half.bytesAfter).toBeLessThan(0.6 * full.bytesAfter);
    const a = await logitsOn(half.file), b = await logitsOn(full.file);
    expect(a.info.sparsity).toBe('2:4 (experts, pre-pruned)');
    expectClose(a.logits, b.logits, { atol: 2e-2, rtol: 0 }, 'F16 vs F32 stored values'); // f16 rounding of the kept values (~5e-4 relative)
  });

  it('a V that splits the stacked expert blocks (V ∤ moe_intermediate_size) loads the stored values on dense kernels', async () => {
    const o: SparsityOption = { format: 'vnm', v: 64, m: 8, apply: 'experts' }; // fixture: I = 32
    const pre = await writePrunedCheckpoint(await openCheckpoint(memoryModel({ 'config.json': JSON.stringify(fixtureJson('config.json')), 'model.safetensors': fixtureFile('model.safetensors') })), o);
    const a = await logitsOn(pre.file);
    expect(a.info.sparsity).toBe('dense');
    const pruned = pruneModelTensors(dense, o).tensors;
    const b = await logitsOn(writeSafetensors(Object.fromEntries(pruned.map((t) => [t.name, { dtype: 'F32' as const, shape: t.shape, data: t.data }]))), null);
    expectClose(a.logits, b.logits, { atol: 1e-6, rtol: 0 }, 'stored 64:2:8 values on dense kernels');
  });
});
