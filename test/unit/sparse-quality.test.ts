/**
 * End-to-end quality of 2:4, 64:2:5 and 64:2:8 on the deepseek-v3-tiny reference fixture (random
 * weights: the numbers show the machinery, not a trained model's sensitivity): every targeted weight is
 * pruned on the host, the pruned checkpoint runs through the CPU reference model, and its logits are
 * compared with the dense run (src/sparse/quality.ts). Same sparse patterns the GPU kernels run (their
 * tests check sparse kernel == dense kernel on the pruned matrix).
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { parseConfig } from '../../src/model/config';
import { forward } from '../../src/model/deepseek';
import { CpuBackend } from '../../src/model/cpu-backend';
import { buildWeights } from '../../src/model/load';
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { parseSafetensors, toFloat32, writeSafetensors } from '../../src/formats/safetensors';
import { fixtureFile, fixtureJson, fixtureTokens } from '../helpers/fixture';
import { sparsityLabel, type SparsityOption } from '../../src/sparse/apply';
import { isSparsityTarget } from '../../src/model/tensors';
import { pruneModelTensors, type HostTensor } from '../../src/model/prune-checkpoint';
import { logitDeviation, perplexity } from '../../src/sparse/quality';

const VOCAB = 256;
const { tokens } = fixtureTokens();
let dense: HostTensor[];
let denseLogits: Float32Array;

async function logitsOf(tensors: HostTensor[]): Promise<Float32Array> {
  const file = writeSafetensors(Object.fromEntries(tensors.map((t) => [t.name, { dtype: 'F32' as const, shape: t.shape, data: t.data }])));
  const ckpt = await openCheckpoint(memoryModel({ 'config.json': JSON.stringify(fixtureJson('config.json')), 'model.safetensors': file }));
  const cfg = ckpt.config;
  const be = new CpuBackend(cfg);
  const w = await buildWeights(be, cfg, ckpt);
  return (forward(be, cfg, w, tokens, { past: 0 }) as { data: Float32Array }).data;
}

beforeAll(async () => {
  const st = parseSafetensors(fixtureFile('model.safetensors'));
  dense = [...st.header.tensors.keys()].map((name) => { const t = st.tensor(name); return { name, shape: t.shape, data: toFloat32(t.dtype, t.data) }; });
  denseLogits = await logitsOf(dense);
  expect(parseConfig(fixtureJson('config.json')).numLayers).toBe(3);
}, 60_000);

describe('sparsity quality on the reference fixture (CPU reference model)', () => {
  it('targets: experts only vs every block linear layer, never embeddings, lm_head, the router or MLA kv_b', () => {
    const names = dense.map((t) => t.name);
    const experts = names.filter((n) => isSparsityTarget(n, 'experts'));
    const all = names.filter((n) => isSparsityTarget(n, 'all-linear'));
    expect(experts.length).toBe(2 * 8 * 3); // 2 MoE layers × 8 experts × gate/up/down
    expect(all.length).toBe(experts.length + 3 * 4 + 3 + 2 * 3); // + attention 4/layer, dense MLP, shared experts
    for (const n of ['model.embed_tokens.weight', 'lm_head.weight', 'model.layers.1.mlp.gate.weight', 'model.layers.0.self_attn.kv_b_proj.weight']) expect(all).not.toContain(n);
  });

  it('logit deviation and perplexity change for 2:4, 64:2:5, 64:2:8', async () => {
    const targets = tokens.slice(1);
    const pplDense = perplexity(denseLogits, targets, VOCAB).ppl;
    const rows: string[] = [];
    const rel: Record<string, number> = {};
    for (const apply of ['experts', 'all-linear'] as const) {
      for (const o of [{ format: '2:4' }, { format: 'vnm', v: 64, m: 5 }, { format: 'vnm', v: 64, m: 8 }] as Omit<SparsityOption, 'apply'>[]) {
        const r = pruneModelTensors(dense, { ...o, apply });
        const logits = await logitsOf(r.tensors);
        const d = logitDeviation(denseLogits, logits, VOCAB);
        const ppl = perplexity(logits, targets, VOCAB).ppl;
        expect(d.maxAbs).toBeGreaterThan(0);
        rel[`${apply} ${sparsityLabel(o)}`] = d.relRms;
        rows.push(`${apply.padEnd(10)} ${sparsityLabel(o).padEnd(7)} kept ‖W‖ ${r.keptNormFraction.toFixed(3)} (${r.pruned} tensors) | logits: max|Δ| ${d.maxAbs.toFixed(3)} rms ${d.rms.toFixed(3)} rel ${d.relRms.toFixed(3)} top-1 ${(100 * d.top1Agreement).toFixed(0)}% KL ${d.meanKl.toFixed(4)} | ppl ${pplDense.toFixed(2)} → ${ppl.toFixed(2)} (${((ppl / pplDense - 1) * 100).toFixed(1)}%)`);
      }
    }
    console.log(`deepseek-v3-tiny (random weights, ${tokens.length} tokens):\n${rows.join('\n')}`);
    // Sparser patterns and more pruned layers move the logits further.
    for (const apply of ['experts', 'all-linear']) expect(rel[`${apply} 64:2:8`]).toBeGreaterThan(rel[`${apply} 2:4`]);
    for (const p of ['2:4', '64:2:5', '64:2:8']) expect(rel[`all-linear ${p}`]).toBeGreaterThan(rel[`experts ${p}`]);
  }, 60_000); // ~1 s on an idle machine
});
