// The GPU runtime against each Llama-style MoE family's PyTorch float32 reference
// (tools/families/make_fixtures.py): logits within 1e-4 and the same experts for every token of every
// MoE layer, in prefill, token-by-token decode and prefill-then-decode, through the engine's load path
// (config → tensor table → memory plan → GQA KV cache per kv head).
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose } from '../helpers/gpu';
import { gpuEngine } from '../helpers/models';
import { memoryModel } from '../../src/loader/model-source';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { FAMILY_FIXTURES, familyDir, familyFixture, type FamilyFixture } from '../helpers/families';

const TOL = { atol: 1e-4, rtol: 0 };
let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

const source = (f: FamilyFixture) => memoryModel({
  'config.json': readFileSync(join(familyDir(f), 'config.json'), 'utf8'),
  'model.safetensors': new Uint8Array(readFileSync(join(familyDir(f), 'model.safetensors'))),
  'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()),   // the fixtures' vocabulary is 256 byte tokens
});
const sets = (rows: number[][]) => rows.map((r) => [...r].sort((a, b) => a - b));

describe.each(FAMILY_FIXTURES)('%s: GPU runtime vs the PyTorch fixture', (family) => {
  const { ref, logits: want, routing: wantRouting } = familyFixture(family);
  const { tokens, prefill_split: p, vocab_size: V } = ref;
  const n = tokens.length;
  const cases: [string, [number, number][]][] = [
    ['prefill', [[0, n]]],
    ['decode', Array.from({ length: n }, (_, i) => [i, i + 1] as [number, number])],
    ['prefill then decode', [[0, p], ...Array.from({ length: n - p }, (_, i) => [p + i, p + i + 1] as [number, number])]],
  ];
  it.each(cases)('%s: logits within 1e-4, identical routing', async (_mode, chunks) => {
    const e = gpuEngine(gpu);
    const info = await e.load(source(family), { weights: 'f32', kvCache: 'f32' });
    expect(info.modelType).toBe(ref.model_type);
    const out = new Float32Array(n * V);
    const routing = new Map<number, number[][]>();
    for (const [a, b] of chunks) {
      out.set(await gpu.checked(() => e.runner.logits(tokens.slice(a, b), true)), a * V);
      for (const [layer, rows] of await e.runner.lastRouting()) routing.set(layer, [...(routing.get(layer) ?? []), ...rows]);
    }
    await e.unload();
    expectClose(out, want, TOL, `${family} ${_mode}`);
    expect([...routing.keys()].sort()).toEqual(Object.keys(wantRouting).map(Number).sort());
    for (const [layer, rows] of Object.entries(wantRouting)) expect(sets(routing.get(+layer)!), `layer ${layer}`).toEqual(sets(rows));
  });
});
