// The bundled model's GGUF Q8_0 and Q4_K_M files on the WASM engine (blocks kept: kernels/wasm/gguf.c)
// against the WebGPU path on the same file (blocks kept: the GGUF WGSL kernels), issue #23: the same
// greedy tokens, and the WASM logits within the bound the GPU path's GGUF storage is held to
// (test/gpu/gguf-native.test.ts: 1e-4 of max |logit| against f32 storage of the same file), here against
// the GPU's f32 storage of the file, for a prefill (every row).
import { describe, it, expect, beforeAll } from 'vitest';
import { join } from 'node:path';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, compare } from '../helpers/gpu';
import { gpuEngine } from '../helpers/models';
import { memoryModel } from '../../src/loader/model-source';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { checkpointToGguf, type GgufQuant } from '../../src/model/gguf-convert';
import type { WebMoeEngine } from '../../src/engine/engine';

const MODEL = join(import.meta.dirname, '..', '..', 'public', 'models', 'webmoe-tiny');
const TOKS = [0, 17, 300, 42, 9, 1000, 5, 77, 2048, 12, 64, 3];
const PROMPT = 'The jury said it did find';

let gpu: Gpu;
const files = new Map<GgufQuant, Uint8Array>();
beforeAll(async () => {
  gpu = await testGpu();
  const st = await openCheckpoint(localModel(MODEL));
  for (const q of ['q8_0', 'q4_k_m'] as GgufQuant[]) files.set(q, (await checkpointToGguf(st, q)).file);
  await st.close();
}, 300_000);

async function greedy(e: WebMoeEngine, n: number): Promise<number[]> {
  const it = e.generate(PROMPT, { temperature: 0, maxTokens: n, stopAtEos: false });
  let r = await it.next();
  while (!r.done) r = await it.next();
  return r.value.tokens;
}
const maxAbs = (a: Float32Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);

describe.each(['q8_0', 'q4_k_m'] as GgufQuant[])('%s GGUF: WASM (blocks) vs WebGPU', (q) => {
  it('same greedy tokens as the GPU gguf path; prefill logits within 1e-4 of max |logit| of the GPU f32 path', { timeout: 600_000 }, async () => {
    const source = () => memoryModel({ [`webmoe-tiny-${q}.gguf`]: files.get(q)! });
    const g = gpuEngine(gpu);
    expect((await g.load(source(), { device: 'webgpu', weights: 'f32' })).weightStorage).toBe('f32');
    const ref = await gpu.checked(() => g.runner.logits(TOKS, true));
    expect((await g.load(source(), { device: 'webgpu', weights: 'gguf' })).weightStorage).toBe('gguf');
    const gpuTokens = await gpu.checked(() => greedy(g, 16));
    await g.unload();

    const w = gpuEngine(gpu);
    const info = await w.load(source(), { device: 'wasm' });
    expect(info.weightStorage).toBe('gguf');
    const got = await w.runner.logits(TOKS, true);
    const { maxAbs: d, nonFinite } = compare(got, ref, { atol: Infinity, rtol: 0 });
    console.log(`${q}: WASM gguf vs GPU f32 storage: max |Δlogits| ${d.toExponential(2)} = ${(d / maxAbs(ref)).toExponential(2)} of max |logit|`);
    expect(nonFinite).toBe(0);
    expect(d / maxAbs(ref)).toBeLessThan(1e-4);
    w.runner.truncate(0);
    expect(await greedy(w, 16)).toEqual(gpuTokens);
    await w.unload();
  });
});
