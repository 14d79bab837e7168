/**
 * Pre-pruned checkpoints: writePrunedCheckpoint stores every targeted weight compressed; the loader
 * validates the parts against config.json, unpacks them, and the model computes exactly what the same
 * pruning applied at load time computes. storedSparsity recognises the pattern and scope.
 */
import { describe, it, expect } from 'vitest';
import { forward } from '../../src/model/deepseek';
import { CpuBackend } from '../../src/model/cpu-backend';
import { buildWeights } from '../../src/model/load';
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { parseSafetensors, toFloat32, writeSafetensors, type TensorToWrite } from '../../src/formats/safetensors';
import { fixtureFile, fixtureJson, fixtureTokens } from '../helpers/fixture';
import type { SparsityOption } from '../../src/sparse/apply';
import { isSparsityTarget } from '../../src/model/tensors';
import { writePrunedCheckpoint, pruneModelTensors, storedSparsity, type HostTensor } from '../../src/model/prune-checkpoint';
import { FormatError, ShapeError, UnsupportedError, WebMoeError } from '../../src/errors';

const { tokens } = fixtureTokens();
const config = JSON.stringify(fixtureJson('config.json'));
const denseFile = fixtureFile('model.safetensors');
const open = (file: Uint8Array) => openCheckpoint(memoryModel({ 'config.json': config, 'model.safetensors': file }));

async function logitsOf(file: Uint8Array, storedPattern?: SparsityOption): Promise<Float32Array> {
  const ckpt = await open(file);
  const be = new CpuBackend(ckpt.config);
  const w = await buildWeights(be, ckpt.config, ckpt, { storedPattern });
  return (forward(be, ckpt.config, w, tokens, { past: 0 }) as { data: Float32Array }).data;
}

function prunedAtLoad(o: SparsityOption): Uint8Array {
  const st = parseSafetensors(denseFile);
  const dense: HostTensor[] = [...st.header.tensors.keys()].map((name) => { const t = st.tensor(name); return { name, shape: t.shape, data: toFloat32(t.dtype, t.data) }; });
  const r = pruneModelTensors(dense, o);
  return writeSafetensors(Object.fromEntries(r.tensors.map((t) => [t.name, { dtype: 'F32' as const, shape: t.shape, data: t.data }])));
}

const readU32 = (ckpt: Awaited<ReturnType<typeof open>>) => async (t: string) => new Uint32Array((await ckpt.readRaw(t)).data.slice().buffer);

describe('pre-pruned checkpoints', () => {
  it.each([
    [{ format: '2:4', apply: 'experts' }],
    [{ format: 'vnm', v: 16, m: 5, apply: 'all-linear' }],
    [{ format: 'vnm', v: 64, m: 8, apply: 'experts' }],
  ] as [SparsityOption][])('%o: compressed file, recognised pattern, same logits as pruning the dense file', async (o) => {
    const r = await writePrunedCheckpoint(await open(denseFile), o);
    const ckpt = await open(r.file);
    const names = [...ckpt.tensors.keys()];
    const targets = [...parseSafetensors(denseFile).header.tensors.keys()].filter((n) => isSparsityTarget(n, o.apply));
    expect(r.pruned).toBe(targets.length);
    for (const n of targets) {
      expect(names).not.toContain(n);
      expect(names).toContain(`${n}.sparse_values`);
    }
    expect(r.bytesAfter).toBeLessThan(r.bytesBefore * (o.format === '2:4' ? 0.6 : 0.55));
    expect(r.keptNormFraction).toBeGreaterThan(0.6);
    expect(r.keptNormFraction).toBeLessThan(1);
    const stored = await storedSparsity(names, readU32(ckpt));
    expect(stored?.option).toEqual(o.format === '2:4' ? { format: '2:4', apply: o.apply } : o);
    expect(stored?.weights.sort()).toEqual(targets.sort());
    const got = await logitsOf(r.file, stored!.option);
    const want = await logitsOf(prunedAtLoad(o));
    expect(got).toEqual(want); // the same f32 values in the same places: bit-identical
  });

  it('a dense checkpoint, or one pruned in an unusual scope, has no stored sparsity', async () => {
    const ckpt = await open(denseFile);
    expect(await storedSparsity(ckpt.tensors.keys(), readU32(ckpt))).toBeNull();
    // Only one expert weight compressed: neither 'experts' nor 'all-linear'; it still loads (dense values).
    const st = parseSafetensors(denseFile);
    const name = 'model.layers.1.mlp.experts.0.up_proj.weight';
    const full = await writePrunedCheckpoint(await open(denseFile), { format: '2:4', apply: 'experts' });
    const fst = parseSafetensors(full.file);
    const mixed: Record<string, TensorToWrite> = {};
    for (const n of st.header.tensors.keys()) {
      if (n === name) for (const s of ['.sparse_config', '.sparse_values', '.sparse_meta']) { const t = fst.tensor(n + s); mixed[n + s] = { dtype: t.dtype, shape: t.shape, data: t.data }; }
      else { const t = st.tensor(n); mixed[n] = { dtype: t.dtype, shape: t.shape, data: t.data }; }
    }
    const file = writeSafetensors(mixed);
    const m = await open(file);
    expect(await storedSparsity(m.tensors.keys(), readU32(m))).toBeNull();
    expect((await logitsOf(file)).every(Number.isFinite)).toBe(true);
  });

  it('broken or inconsistent compressed weights get typed errors naming the tensor', async () => {
    const r = await writePrunedCheckpoint(await open(denseFile), { format: 'vnm', v: 16, m: 8, apply: 'experts' });
    const st = parseSafetensors(r.file);
    const edit = (f: (all: Record<string, TensorToWrite>) => void) => {
      const all: Record<string, TensorToWrite> = {};
      for (const n of st.header.tensors.keys()) { const t = st.tensor(n); all[n] = { dtype: t.dtype, shape: t.shape.slice(), data: t.data.slice() }; }
      f(all);
      return writeSafetensors(all);
    };
    const w = 'model.layers.2.mlp.experts.3.down_proj.weight';
    // A missing part: at open (config check).
    await expect(open(edit((a) => { delete a[`${w}.sparse_meta`]; }))).rejects.toThrow(FormatError);
    await expect(open(edit((a) => { delete a[`${w}.sparse_meta`]; }))).rejects.toThrow(`${w}.sparse_meta`);
    // Rows that contradict config.json: at open.
    await expect(open(edit((a) => { const v = a[`${w}.sparse_values`]; a[`${w}.sparse_values`] = { ...v, shape: [v.shape[0] - 1, v.shape[1]], data: (v.data as Uint8Array).subarray(0, (v.shape[0] - 1) * v.shape[1] * 4) }; }))).rejects.toThrow(ShapeError);
    // K in the config tensor that contradicts config.json: when the weight is read.
    const badK = edit((a) => { const c = new Uint32Array((a[`${w}.sparse_config`].data as Uint8Array).slice().buffer); c[2] += 8; a[`${w}.sparse_config`] = { dtype: 'U32', shape: [5], data: c }; });
    await expect(logitsOf(badK)).rejects.toThrow(WebMoeError);
    // Corrupt column offsets.
    const badCols = edit((a) => { const c = new Uint32Array((a[`${w}.sparse_columns`].data as Uint8Array).slice().buffer); c[0] = 0x00010203; a[`${w}.sparse_columns`] = { dtype: 'U32', shape: a[`${w}.sparse_columns`].shape, data: c }; });
    await expect(logitsOf(badCols)).rejects.toThrow(/not 4 ascending offsets/);
    // Another pattern than the one the load runs with (taken from the file): refused, not silently re-pruned.
    await expect(logitsOf(r.file, { format: '2:4', apply: 'experts' })).rejects.toThrow(UnsupportedError);
  });
});
