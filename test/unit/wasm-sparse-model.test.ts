// The whole model on the WASM sparse kernels: the deepseek-v3-tiny fixture loaded on the WASM engine with
// sparsity 'all-linear' (attention, dense MLP, shared and routed experts on the 2:4 / V:2:M kernels) against
// the CPU reference model on the same pruned checkpoint (routed experts' gate|up pruned as one [2I, D]
// matrix, as both the GPU and WASM backends prune them). f32 throughout: 1e-4 on logits of std ≈ 2, as
// test/gpu/sparse-model.test.ts holds the GPU.
import { describe, it, expect, beforeAll, vi } from 'vitest';
import { fixtureFile, fixtureJson, fixtureTokens } from '../helpers/fixture';
import { forward } from '../../src/model/deepseek';
import { CpuBackend, type CpuTensor } from '../../src/model/cpu-backend';
import { buildWeights } from '../../src/model/load';
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { parseSafetensors, toFloat32, writeSafetensors } from '../../src/formats/safetensors';
import { pruneModelTensors, type HostTensor } from '../../src/model/prune-checkpoint';
import { pruneMatrix, sparsityLabel, type SparsityOption } from '../../src/sparse/apply';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { createEngine } from '../../src/engine/engine';
import { GpuUnavailableError } from '../../src/errors';
import { fixtureModel } from '../helpers/models';

// Whole-model loads (q8/q4 quantise on the host) take seconds on a shared 2-core machine.
vi.setConfig({ testTimeout: 120_000 });

const { tokens, prefill_split: split } = fixtureTokens();
let dense: HostTensor[];
beforeAll(() => {
  const st = parseSafetensors(fixtureFile('model.safetensors'));
  dense = [...st.header.tensors.keys()].map((name) => { const t = st.tensor(name); return { name, shape: t.shape, data: toFloat32(t.dtype, t.data) }; });
});

const fileOf = (tensors: HostTensor[]) => writeSafetensors(Object.fromEntries(tensors.map((t) => [t.name, { dtype: 'F32' as const, shape: t.shape, data: t.data }])));
const source = (file: Uint8Array) => memoryModel({ 'config.json': JSON.stringify(fixtureJson('config.json')), 'model.safetensors': file, 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) });
const wasmEngine = () => createEngine({}, { acquire: async () => { throw new GpuUnavailableError('no WebGPU in this test'); }, resolve: () => { throw new Error('tests pass ModelSources'); } });

function prunedLikeTheBackends(tensors: HostTensor[], o: Omit<SparsityOption, 'apply'>): HostTensor[] {
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

describe('WASM: whole model on sparse kernels == CPU reference on the pruned checkpoint', () => {
  it.each([{ format: '2:4' }, { format: 'vnm', v: 64, m: 8 }, { format: 'vnm', v: 16, m: 5 }] as Omit<SparsityOption, 'apply'>[])('%o: prefill then decode', async (o) => {
    const pruned = prunedLikeTheBackends(pruneModelTensors(dense, { ...o, apply: 'all-linear' }).tensors, o);
    const ckptCpu = await openCheckpoint(source(fileOf(pruned)));
    const cfg = ckptCpu.config;
    const V = cfg.vocabSize;
    const cpu = new CpuBackend(cfg);
    const wCpu = await buildWeights(cpu, cfg, ckptCpu);
    const want = new Float32Array(tokens.length * V);
    want.set((forward(cpu, cfg, wCpu, tokens.slice(0, split), { past: 0 }) as CpuTensor).data, 0);
    for (let i = split; i < tokens.length; i++) want.set((forward(cpu, cfg, wCpu, [tokens[i]], { past: cpu.cachedTokens }) as CpuTensor).data, i * V);

    // The dense fixture pruned at load by the WASM engine (pruning is deterministic: the same weights).
    const e = wasmEngine();
    const info = await e.load(fixtureModel(), { weights: 'f32', device: 'wasm', sparsity: { ...o, apply: 'all-linear' } });
    expect(info.sparsity).toBe(`${sparsityLabel(o)} (all-linear)`);
    expect(info.expertStorage).toBe('sparse f32');
    const got = new Float32Array(tokens.length * V);
    got.set(await e.runner.logits(tokens.slice(0, split), true), 0);
    for (let i = split; i < tokens.length; i++) got.set(await e.runner.logits([tokens[i]], true), i * V);
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Number.isNaN(got[i]) ? Infinity : Math.abs(got[i] - want[i]));
    expect(worst).toBeLessThanOrEqual(1e-4);
    // Not the dense model: pruning changed the logits.
    const d = wasmEngine();
    await d.load(fixtureModel(), { weights: 'f32', device: 'wasm' });
    const denseLogits = await d.runner.logits(tokens.slice(0, split), true);
    let diff = 0;
    for (let i = 0; i < denseLogits.length; i++) diff = Math.max(diff, Math.abs(denseLogits[i] - got[i]));
    expect(diff).toBeGreaterThan(1e-2);
    await e.unload();
    await d.unload();
  });
});
