// GGUF files on the WASM engine: the bundled model written as Q8_0 and Q4_K_M GGUFs (the converter's
// files: src/model/gguf-convert.ts) loads on WASM with its blocks kept as in the file ('auto' = 'gguf':
// the kernels of src/kernels/wasm/gguf.c read them), and in f32 storage with them dequantised at load.
//  - f32 storage equals the CPU reference model on the same file (the same dequantised matrices: f32
//    arithmetic, 1e-4 on logits of magnitude ≤ ~12);
//  - 'gguf' storage: logits within 1e-4 of max |logit| of the f32 storage (the bound the WebGPU 'gguf'
//    storage is held to against its f32 storage, test/gpu/gguf-native.test.ts), for a prefill and decode
//    steps; greedy generation gives the tokens of the CPU reference on the file (which the WebGPU path is
//    checked against the same way); the weights take about the file's bytes, not 4× them;
//  - a file whose layer-2 up experts are Q4_0 beside Q8_0 gates (no one block type for that layer's fused
//    gate|up): that layer's experts are f32, the rest blocks, within the same bound.
import { describe, it, expect, vi, beforeAll } from 'vitest';
import { join } from 'node:path';
import { createEngine, type WebMoeEngine } from '../../src/engine/engine';
import { GpuUnavailableError } from '../../src/errors';
import { memoryModel } from '../../src/loader/model-source';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { checkpointToGguf, ggufTypeChooser, type GgufQuant } from '../../src/model/gguf-convert';
import { deepseek2Gguf, deepseek2Metadata } from '../../src/model/gguf-deepseek2';
import { writeGguf } from '../../src/formats/gguf-write';
import { cpuEngine } from '../helpers/models';

// Converting and loading the bundled model several times: seconds on a shared 2-core machine.
vi.setConfig({ testTimeout: 300_000, hookTimeout: 300_000 });

const MODEL = join(import.meta.dirname, '..', '..', 'public', 'models', 'webmoe-tiny');
const wasmEngine = () => createEngine({}, { acquire: async () => { throw new GpuUnavailableError('no WebGPU in this test'); }, resolve: () => { throw new Error('tests pass ModelSources'); } });
const TOKS = [0, 17, 300, 42, 9, 1000, 5, 77, 2048, 12];
const files = new Map<GgufQuant, Uint8Array>();

beforeAll(async () => {
  const st = await openCheckpoint(localModel(MODEL));
  for (const q of ['q8_0', 'q4_k_m'] as GgufQuant[]) files.set(q, (await checkpointToGguf(st, q)).file);
  await st.close();
});

const maxAbs = (a: Float32Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
function worst(got: Float32Array, want: Float32Array): number {
  expect(got.length).toBe(want.length);
  let w = 0;
  for (let i = 0; i < want.length; i++) w = Math.max(w, Number.isNaN(got[i]) ? Infinity : Math.abs(got[i] - want[i]));
  return w;
}

async function greedy(e: WebMoeEngine, prompt: string, n: number): Promise<number[]> {
  const it = e.generate(prompt, { temperature: 0, maxTokens: n });
  let r = await it.next();
  while (!r.done) r = await it.next();
  return r.value.tokens;
}

describe.each(['q8_0', 'q4_k_m'] as GgufQuant[])('a %s GGUF on the WASM engine', (q) => {
  const source = () => memoryModel({ [`webmoe-tiny-${q}.gguf`]: files.get(q)! });

  it('f32 storage = the CPU reference; auto keeps the blocks and stays within 1e-4 of max |logit|; greedy tokens = the reference', async () => {
    const cpu = cpuEngine();
    await cpu.load(source());
    const want = await cpu.runner.logits(TOKS, true);
    const wantTokens = await greedy(cpu, 'The jury said it did find', 24);
    await cpu.unload();

    const w = wasmEngine();
    const info = await w.load(source(), { device: 'wasm', weights: 'f32' });
    expect(info.weightStorage).toBe('f32');
    const f32Bytes = w.runner.memory().weightBytes;
    const host = await w.runner.logits(TOKS, true);
    expect(worst(host, want)).toBeLessThanOrEqual(1e-4);
    w.runner.truncate(0);
    const hostSteps: Float32Array[] = [];
    for (const t of TOKS.slice(0, 5)) hostSteps.push(await w.runner.logits([t], false));

    const auto = await w.load(source(), { device: 'wasm' });
    expect(auto.weightStorage).toBe('gguf');
    expect(auto.expertStorage).toBe('gguf');
    const native = await w.runner.logits(TOKS, true);
    const bound = 1e-4 * maxAbs(host);
    const dPrefill = worst(native, host);
    w.runner.truncate(0);
    let dDecode = 0;
    for (let i = 0; i < 5; i++) dDecode = Math.max(dDecode, worst(await w.runner.logits([TOKS[i]], false), hostSteps[i]));
    console.log(`${q}: WASM gguf vs f32 storage: prefill ${dPrefill.toExponential(2)}, decode ${dDecode.toExponential(2)} (bound ${bound.toExponential(2)}); weights ${w.runner.memory().weightBytes} B vs ${f32Bytes} B in f32, file ${files.get(q)!.length} B`);
    expect(dPrefill).toBeLessThanOrEqual(bound);
    expect(dDecode).toBeLessThanOrEqual(bound);
    // The blocks as in the file (+ f32 norms, router, kv_b): about the file's size, not the f32 load's.
    expect(w.runner.memory().weightBytes).toBeLessThan(1.1 * files.get(q)!.length);
    expect(w.runner.memory().weightBytes).toBeLessThan(0.5 * f32Bytes);
    w.runner.truncate(0);
    expect(await greedy(w, 'The jury said it did find', 24)).toEqual(wantTokens);

    // 'gguf' by name is the same; q8 still re-quantises the dequantised blocks.
    expect((await w.load(source(), { device: 'wasm', weights: 'gguf' })).weightStorage).toBe('gguf');
    expect((await w.load(source(), { device: 'wasm', weights: 'q8' })).weightStorage).toBe('q8');
    await w.unload();
  });
});

it('a layer whose gate and up experts differ in type runs on f32 experts, the rest on blocks: within the same bound', async () => {
  const ck = await openCheckpoint(localModel(MODEL));
  const q8 = ggufTypeChooser(ck.config, 'q8_0');
  const tensors = await deepseek2Gguf(ck.config, (n) => ck.readF32(n), ck.tensors, (name, ne) => (name === 'blk.2.ffn_up_exps.weight' ? 'Q4_0' : q8(name, ne)));
  const file = writeGguf({ metadata: deepseek2Metadata(ck.config, { json: ck.tokenizerJson, config: ck.tokenizerConfig }), tensors });
  await ck.close();
  const source = () => memoryModel({ 'webmoe-tiny-mixed.gguf': file });
  const w = wasmEngine();
  await w.load(source(), { device: 'wasm', weights: 'f32' });
  const host = await w.runner.logits(TOKS, true);
  expect((await w.load(source(), { device: 'wasm' })).weightStorage).toBe('gguf');
  const native = await w.runner.logits(TOKS, true);
  expect(worst(native, host)).toBeLessThanOrEqual(1e-4 * maxAbs(host));
  await w.unload();
});

it("weights 'gguf' on a checkpoint without GGUF blocks is an ArgumentError", async () => {
  const w = wasmEngine();
  await expect(w.load(localModel(MODEL), { device: 'wasm', weights: 'gguf' })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
});
