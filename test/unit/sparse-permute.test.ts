/**
 * Channel permutation before pruning (src/sparse/permute.ts, folded by model/prune-checkpoint.ts):
 * (a) permuting every pruned MLP's intermediate channels leaves the dense model's logits unchanged on the
 * CPU reference model (up to float summation order); (b) the kept norm with the permutation is never
 * below the kept norm without it, on random matrices and on the bundled trained model's expert down_proj
 * matrices (gain printed per layer).
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { forward } from '../../src/model/deepseek';
import { CpuBackend } from '../../src/model/cpu-backend';
import { buildWeights } from '../../src/model/load';
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { parseSafetensors, toFloat32, writeSafetensors } from '../../src/formats/safetensors';
import { fixtureFile, fixtureJson, fixtureTokens } from '../helpers/fixture';
import { permuteMlpTensors, pruneModelTensors, writePrunedCheckpoint, type HostTensor } from '../../src/model/prune-checkpoint';
import { permuteColumns, permuteRows, searchInputPermutation, searchRowBlockOrder, permuteMlp, type PermutePattern } from '../../src/sparse/permute';
import { pruneVnm } from '../../src/sparse/prune';
import { ShapeError } from '../../src/errors';
import { unpack } from '../../src/sparse/formats';
import { sparseFromTensors } from '../../src/sparse/tensors';

const PATTERNS: [string, PermutePattern][] = [['2:4', { format: '2:4' }], ['64:2:5', { format: 'vnm', v: 64, m: 5 }], ['64:2:8', { format: 'vnm', v: 64, m: 8 }]];

function gaussian(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s + 0.5) / 4294967296; };
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
}

const { tokens } = fixtureTokens();
let dense: HostTensor[];
async function logitsOf(tensors: HostTensor[]): Promise<Float32Array> {
  const file = writeSafetensors(Object.fromEntries(tensors.map((t) => [t.name, { dtype: 'F32' as const, shape: t.shape, data: t.data }])));
  const ckpt = await openCheckpoint(memoryModel({ 'config.json': JSON.stringify(fixtureJson('config.json')), 'model.safetensors': file }));
  const be = new CpuBackend(ckpt.config);
  const w = await buildWeights(be, ckpt.config, ckpt);
  return (forward(be, ckpt.config, w, tokens, { past: 0 }) as { data: Float32Array }).data;
}

beforeAll(() => {
  const st = parseSafetensors(fixtureFile('model.safetensors'));
  dense = [...st.header.tensors.keys()].map((name) => { const t = st.tensor(name); return { name, shape: t.shape, data: toFloat32(t.dtype, t.data) }; });
});

describe('permutation helpers', () => {
  it('permuteColumns / permuteRows move what they say and reject non-permutations', () => {
    const w = Float32Array.from({ length: 6 }, (_, i) => i); // [[0,1,2],[3,4,5]]
    expect(Array.from(permuteColumns(w, 2, 3, Int32Array.from([2, 0, 1])))).toEqual([2, 0, 1, 5, 3, 4]);
    expect(Array.from(permuteRows(w, 2, 3, Int32Array.from([1, 0])))).toEqual([3, 4, 5, 0, 1, 2]);
    expect(() => permuteColumns(w, 2, 3, Int32Array.from([0, 0, 1]))).toThrow(ShapeError);
    expect(() => permuteRows(w, 2, 3, Int32Array.from([0]))).toThrow(ShapeError);
  });

  it('permuteMlp computes the same gated MLP (silu(gate·x) ⊙ up·x → down)', () => {
    const D = 24, I = 40;
    const x = { gate: gaussian(I * D, 1), up: gaussian(I * D, 2), down: gaussian(D * I, 3) };
    const h = gaussian(D, 4);
    const mlp = (m: typeof x) => {
      const a = new Float64Array(I);
      for (let i = 0; i < I; i++) {
        let g = 0, u = 0;
        for (let d = 0; d < D; d++) { g += m.gate[i * D + d] * h[d]; u += m.up[i * D + d] * h[d]; }
        a[i] = (g / (1 + Math.exp(-g))) * u;
      }
      return Array.from({ length: D }, (_, d) => { let y = 0; for (let i = 0; i < I; i++) y += m.down[d * I + i] * a[i]; return y; });
    };
    const p = permuteMlp(x, D, I, { format: '2:4' });
    expect(Array.from(p.perm)).not.toEqual([...Array(I).keys()]);
    const y0 = mlp(x), y1 = mlp(p);
    for (let d = 0; d < D; d++) expect(Math.abs(y1[d] - y0[d])).toBeLessThan(1e-9 * (1 + Math.abs(y0[d])));
    expect(p.gateUpKeptAfter).toBe(p.gateUpKeptBefore); // 2:4: gate/up rows have no blocks
  });
});

describe('gate/up row-block order (output channels, V:2:M)', () => {
  const D = 48, I = 96;
  const x = { gate: gaussian(I * D, 11), up: gaussian(I * D, 12), down: gaussian(D * I, 13) };
  // uneven row scales give the blocks something to regroup
  for (let i = 0; i < I; i++) for (let d = 0; d < D; d++) { const s = 1 + 3 * ((i * 7) % 5 === 0 ? 1 : 0); x.gate[i * D + d] *= s; x.up[i * D + d] *= s; }
  for (const [V, M] of [[16, 8], [32, 5], [16, 6]]) {
    it(`${V}:2:${M}: raises gate+up kept norm, keeps down_proj's pruned values, same MLP`, () => {
      const o: PermutePattern = { format: 'vnm', v: V, m: M };
      const base = searchInputPermutation(x.down, D, I, o, { maxTrials: 500 });
      const r = searchRowBlockOrder(x.gate, x.up, D, I, base.perm, o);
      expect(r.keptAfter).toBeGreaterThanOrEqual(r.keptBefore);
      expect(r.identity).toBe(false);
      expect(r.keptAfter).toBeGreaterThan(r.keptBefore);
      // whole-group swaps: down's pruned matrix holds the same values per group
      const downBefore = pruneVnm(permuteColumns(x.down, D, I, base.perm), D, I, V, M).keptNormFraction;
      const downAfter = pruneVnm(permuteColumns(x.down, D, I, r.perm), D, I, V, M).keptNormFraction;
      expect(downAfter).toBeCloseTo(downBefore, 12);
      // the real pruner's kept norm of the permuted gate/up is what it reports
      const kept = (p: Int32Array) => {
        let k = 0, t = 0;
        for (const w of [x.gate, x.up]) { const q = permuteRows(w, I, D, p); const f = pruneVnm(q, I, D, V, M).keptNormFraction; let n = 0; for (const v of w) n += v * v; t += n; k += n * f * f; }
        return Math.sqrt(k / t);
      };
      expect(kept(r.perm)).toBeCloseTo(r.keptAfter, 12);
      const p = permuteMlp(x, D, I, o, { maxTrials: 500 });
      expect(p.gateUpKeptAfter).toBeGreaterThanOrEqual(p.gateUpKeptBefore);
    });
  }
  it('2:4 and single-block matrices are left alone', () => {
    const id = Int32Array.from({ length: I }, (_, i) => i);
    expect(searchRowBlockOrder(x.gate, x.up, D, I, id, { format: '2:4' }).identity).toBe(true);
    expect(searchRowBlockOrder(x.gate, x.up, D, I, id, { format: 'vnm', v: 128, m: 8 }).identity).toBe(true);
    expect(() => searchRowBlockOrder(x.gate, x.up, D, I, id.subarray(1), { format: 'vnm', v: 16, m: 8 })).toThrow(ShapeError);
  });
});

describe('the permuted dense model is the same model (CPU reference)', () => {
  for (const [label, o] of PATTERNS.filter(([l]) => l !== '64:2:5')) {
    it(`${label}: identical logits after permuting every MLP (all-linear)`, async () => {
      const r = permuteMlpTensors(dense, { ...o, apply: 'all-linear' });
      expect(r.moves.size).toBeGreaterThan(0); // something actually moved
      // every moved tensor differs from the original, so an unfolded permutation would change the logits
      for (const name of r.moves.keys()) expect(r.tensors.find((t) => t.name === name)!.data).not.toEqual(dense.find((t) => t.name === name)!.data);
      const [a, b] = [await logitsOf(dense), await logitsOf(r.tensors)];
      let max = 0;
      for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
      expect(max).toBeLessThanOrEqual(1e-5);
    }, 60_000);
  }
});

describe('pruning with the permutation', () => {
  it('writePrunedCheckpoint (webmoe prune) stores the permuted, pruned model pruneModelTensors computes', async () => {
    const o = { format: 'vnm', v: 64, m: 8, apply: 'experts', permute: true } as const;
    const config = JSON.stringify(fixtureJson('config.json'));
    const open = (file: Uint8Array) => openCheckpoint(memoryModel({ 'config.json': config, 'model.safetensors': file }));
    const r = await writePrunedCheckpoint(await open(fixtureFile('model.safetensors')), o);
    expect(r.permutation.length).toBe(2 * 8); // 2 MoE layers × 8 experts
    for (const g of r.permutation) expect(g.keptAfter).toBeGreaterThanOrEqual(g.keptBefore);
    const host = pruneModelTensors(dense, o);
    expect(host.permutation).toEqual(r.permutation);
    const st = parseSafetensors(r.file);
    const experts = host.tensors.filter((x) => x.name.includes('.experts.'));
    expect(experts.length).toBe(2 * 8 * 3);
    for (const t of experts) expect(unpack(sparseFromTensors(t.name, (n) => (st.header.tensors.has(n) ? st.tensor(n) : undefined)))).toEqual(t.data);
  }, 60_000);
});

describe('kept norm with permutation ≥ without', () => {
  it('random Gaussian matrices', () => {
    const lines: string[] = [];
    for (const [label, o] of PATTERNS) {
      for (const [N, K] of [[64, 128], [130, 96], [128, 61]]) {
        const w = gaussian(N * K, N * 7 + K);
        const r = searchInputPermutation(w, N, K, o, { maxTrials: 5000 });
        expect(r.keptNormAfter).toBeGreaterThanOrEqual(r.keptNormBefore);
        expect(new Set(r.perm).size).toBe(K);
        lines.push(`${label} ${N}×${K}: ${r.keptNormBefore.toFixed(4)} → ${r.keptNormAfter.toFixed(4)} (${r.swaps} swaps)`);
      }
    }
    console.log(`random matrices, kept ‖W‖_F without → with permutation:\n  ${lines.join('\n  ')}`);
    // i.i.d. weights still gain a little for 2:4 (some groups hold 3–4 large weights by chance)
    expect(lines.some((l) => l.startsWith('2:4') && !l.includes('(0 swaps)'))).toBe(true);
  }, 120_000);

  it('the bundled trained model: routed-expert down_proj, gain per layer', () => {
    const st = parseSafetensors(new Uint8Array(readFileSync(new URL('../../public/models/webmoe-tiny/model.safetensors', import.meta.url))));
    // The main model's MoE layers 1–3 (layer 4 is the MTP layer, docs/mtp.md).
    const downs = [...st.header.tensors.keys()].filter((n) => /^model\.layers\.\d+\.mlp\.experts\.\d+\.down_proj\.weight$/.test(n) && Number(n.split('.')[2]) < 4);
    expect(downs.length).toBe(3 * 16);
    const lines: string[] = [];
    for (const [label, o] of PATTERNS) {
      const perLayer = new Map<number, [number, number][]>();
      for (const name of downs) {
        const t = st.tensor(name);
        const r = searchInputPermutation(toFloat32(t.dtype, t.data), t.shape[0], t.shape[1], o, { maxTrials: 2000 });
        expect(r.keptNormAfter).toBeGreaterThanOrEqual(r.keptNormBefore);
        const L = Number(name.split('.')[2]);
        perLayer.set(L, [...(perLayer.get(L) ?? []), [r.keptNormBefore, r.keptNormAfter]]);
      }
      for (const [L, gs] of perLayer) {
        const mean = (i: number) => gs.reduce((s, g) => s + g[i], 0) / gs.length;
        expect(mean(1)).toBeGreaterThan(mean(0)); // a trained matrix has structure to exploit
        lines.push(`${label} layer ${L}: down_proj kept ${mean(0).toFixed(4)} → ${mean(1).toFixed(4)} (mean of ${gs.length} experts)`);
      }
    }
    console.log(`webmoe-tiny routed experts, kept ‖W‖_F without → with permutation (2000 trials):\n  ${lines.join('\n  ')}`);
  }, 600_000);
});
