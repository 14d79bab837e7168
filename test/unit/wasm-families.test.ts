// The WebAssembly engine (device 'wasm') on each Llama-style MoE family's PyTorch fixture
// (test/fixtures/families, tools/families/make_fixtures.py; the CPU reference meets the same bounds in
// test/unit/families.test.ts): the family's architecture file on the WASM backend, logits within 1e-4 in
// prefill, token-by-token decode and prefill-then-decode, and the same experts in the same order for
// every token of every MoE layer. Then the engine API: device 'auto' without WebGPU, generation, and
// the worker pool giving the same logits as one thread.
import { describe, it, expect, vi } from 'vitest';
import { FAMILY_FIXTURES, SLIDING_WINDOW_FIXTURES, GGUF_FAMILY_FIXTURES, familyCheckpoint, familyFixture, gptOssDequantisedFiles, type FamilyFixture } from '../helpers/families';
import { checkpointToGguf } from '../../src/model/gguf-convert';
import { openGgufCheckpoint } from '../../src/model/gguf-deepseek2';
import { bytesSource } from '../../src/loader/source';
import { loadWasmModel } from '../../src/model/wasm-assemble';
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { createEngine } from '../../src/engine/engine';
import { GpuUnavailableError } from '../../src/errors';
import { expectClose } from '../helpers/gpu';
import { SMALL_FAMILY_CONFIGS } from '../../src/bench/suites/wasm';
import { syntheticCheckpoint } from '../../src/model/synthetic';
import { CpuBackend } from '../../src/model/cpu-backend';
import { CpuRunner } from '../../src/model/cpu-runner';
import { buildWeights } from '../../src/model/load';
import { mulberry32 } from '../../src/util/random';
import { parseSafetensors, toFloat32, writeSafetensors } from '../../src/formats/safetensors';
import { pruneMatrix } from '../../src/sparse/apply';
import { tensorName } from '../../src/model/tensors';

vi.setConfig({ testTimeout: 120_000 });

const TOL = { atol: 1e-4, rtol: 0 };

async function wasmRunner(family: FamilyFixture, threads = 1) {
  const { runner, description, device } = await loadWasmModel(await familyCheckpoint(family), family, { weights: 'f32', threads });
  return { runner, description, device };
}

/** Logits of `chunks` of the fixture's tokens, one forward each, and each MoE layer's expert ids per token. */
async function runChunks(family: FamilyFixture, chunks: [number, number][], threads = 1) {
  const { ref } = familyFixture(family);
  const { runner } = await wasmRunner(family, threads);
  const V = ref.vocab_size;
  const out = new Float32Array(ref.tokens.length * V);
  const ids: Record<string, number[][]> = {};
  for (const [a, b] of chunks) {
    out.set(await runner.logits(ref.tokens.slice(a, b), true), a * V);
    for (const [layer, rows] of await runner.lastRouting()) (ids[layer] ??= []).push(...rows);
  }
  runner.destroy();
  return { out, ids };
}

// (and the sliding-window fixtures: windows of 6 under a 13-token prefill, run by the WASM attention kernel)
describe.each([...FAMILY_FIXTURES, ...SLIDING_WINDOW_FIXTURES])('%s on the WASM engine vs the PyTorch fixture', (family) => {
  const { ref, logits: want, routing } = familyFixture(family);
  const n = ref.tokens.length, split = ref.prefill_split;
  const cases: [string, [number, number][]][] = [
    ['prefill', [[0, n]]],
    ['decode token by token', Array.from({ length: n }, (_, i) => [i, i + 1] as [number, number])],
    ['prefill then decode', [[0, split], ...Array.from({ length: n - split }, (_, i) => [split + i, split + i + 1] as [number, number])]],
  ];
  it.each(cases)('%s: logits within 1e-4, the same experts in the same order', async (mode, chunks) => {
    const { out, ids } = await runChunks(family, chunks);
    const maxAbs = expectClose(out, want, TOL, `${family} ${mode}`);
    console.log(`WASM ${family} ${mode}: max |Δlogits| vs PyTorch ${maxAbs.toExponential(2)}`);
    expect(Object.keys(routing).length).toBeGreaterThan(0);
    expect(ids).toEqual(routing);
  });
});

describe('the families on the WASM worker pool', () => {
  // The bench's small models (D 256, vocabulary 2048: projections, experts, the head and attention of a
  // 40-token prefill are past the pool's minimum work), on 3 threads (uneven splits) against 1.
  it.each(['qwen2_moe', 'qwen3_moe', 'gpt_oss'])('%s: 3 threads give the logits of 1 thread bit for bit, prefill and decode', async (family) => {
    const files = syntheticCheckpoint(SMALL_FAMILY_CONFIGS[family], { seed: 9 });
    const r = mulberry32(4);
    const toks = Array.from({ length: 41 }, () => Math.floor(r() * 2048));
    const run = async (threads: number) => {
      const { runner, device } = await loadWasmModel(await openCheckpoint(memoryModel(files)), family, { weights: 'f32', threads, contextLength: 64 });
      const prefill = await runner.logits(toks.slice(0, 40), true), decode = await runner.logits(toks.slice(40), true);
      runner.destroy();
      return { prefill, decode, device };
    };
    const one = await run(1);
    const three = await run(3);
    expect(three.device).toMatch(/\(3 threads/);
    expect(Array.from(three.prefill)).toEqual(Array.from(one.prefill));
    expect(Array.from(three.decode)).toEqual(Array.from(one.decode));
  });
});

describe('GPT-OSS on WASM: an unquantised (BF16-layout) checkpoint', () => {
  it('its dense experts give the MXFP4 fixture\'s logits', async () => {
    const { ref, logits: want } = familyFixture('gpt_oss');
    const ckpt = await openCheckpoint(memoryModel(await gptOssDequantisedFiles()));
    const { runner } = await loadWasmModel(ckpt, 'gpt_oss dense', { weights: 'f32', threads: 1 });
    expectClose(await runner.logits(ref.tokens, true), want, TOL, 'gpt_oss dense prefill');
    runner.destroy();
  });
});

describe('the families through the Engine API on WASM', () => {
  const noGpu = () => createEngine({}, { acquire: async () => { throw new GpuUnavailableError('no WebGPU in this test'); }, resolve: () => { throw new Error('tests pass ModelSources'); } });
  it.each(FAMILY_FIXTURES)('%s: device auto without WebGPU loads on WASM; greedy decoding gives the fixture\'s next token', async (family) => {
    const { ref } = familyFixture(family);
    const e = noGpu();
    const ck = await familyCheckpoint(family);
    await ck.close();
    const files = await familyFiles(family);
    const info = await e.load(memoryModel(files), { device: 'auto', weights: 'f32', requireTokenizer: false });
    expect(info.family).toBeTruthy();
    const s = await e.stats();
    expect(s.backend).toBe('wasm');
    expect(s.backendReason).toMatch(/no usable WebGPU/);
    const logits = await e.runner.logits(ref.tokens, false);
    let best = 0;
    for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
    expect(best).toBe(ref.greedy_next);
    const mem = e.runner.memory(), cfg = e.runner.cfg;
    // K and V of every kv head, f32, per layer.
    expect(mem.kvBytesPerToken).toBe(cfg.numLayers * 2 * cfg.numKvHeads * cfg.headDim * 4);
    await e.unload();
  });
});

async function familyFiles(family: FamilyFixture) {
  const { readFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { familyDir } = await import('../helpers/families');
  return { 'config.json': readFileSync(join(familyDir(family), 'config.json'), 'utf8'), 'model.safetensors': new Uint8Array(readFileSync(join(familyDir(family), 'model.safetensors'))) };
}

describe('the bench\'s small family models (src/bench/suites/wasm.ts): WASM vs the CPU reference', () => {
  // Wider than the fixtures (D 256, head_dim 32, 4 layers, GPT-OSS windows of 32 crossed by the prompt):
  // WASM f32 and the CPU reference (float64 attention and experts) on the same random checkpoint.
  it.each(Object.keys(SMALL_FAMILY_CONFIGS))('%s: prefill of 40 tokens then 3 decodes within 1e-4, same routing', async (family) => {
    const files = syntheticCheckpoint(SMALL_FAMILY_CONFIGS[family], { seed: 5 });
    const ck = await openCheckpoint(memoryModel(files));
    const cfg = ck.config;
    const { runner } = await loadWasmModel(ck, family, { weights: 'f32', threads: 1, contextLength: 64 });
    const cpu = new CpuRunner(cfg, await buildWeights(new CpuBackend(cfg), cfg, await openCheckpoint(memoryModel(files))), 64);
    const r = mulberry32(3);
    const toks = Array.from({ length: 43 }, () => Math.floor(r() * cfg.vocabSize));
    for (const [a, b] of [[0, 40], [40, 41], [41, 42], [42, 43]]) {
      const w = await runner.logits(toks.slice(a, b), true), c = await cpu.logits(toks.slice(a, b), true);
      const d = expectClose(w, c, { atol: 1e-4, rtol: 0 }, `${family} tokens [${a}, ${b})`);
      if (a === 0) console.log(`WASM ${family} small: prefill max |Δlogits| vs the CPU reference ${d.toExponential(2)}`);
      expect(await runner.lastRouting()).toEqual(await cpu.lastRouting());
    }
    runner.destroy();
  });
});

describe('the families\' GGUF files (webmoe convert --to gguf) on WASM', () => {
  it.each(GGUF_FAMILY_FIXTURES)('%s: F32 GGUF within 1e-4 of the fixture; Q8_0 GGUF within 1e-4 of the CPU reference on that file (f32 storage), rel RMS < 1e-3 (blocks kept, auto) and < 0.01 (q8)', async (family) => {
    const { ref, logits: want } = familyFixture(family);
    const st = await openCheckpoint(memoryModel(await familyFiles(family)));
    const f32 = await openGgufCheckpoint([bytesSource(`${family}.gguf`, (await checkpointToGguf(st, 'f32')).file)]);
    const a = await loadWasmModel(f32, `${family}.gguf`, { weights: 'f32', threads: 1 });
    expectClose(await a.runner.logits(ref.tokens, true), want, TOL, `${family} F32 GGUF on WASM`);
    a.runner.destroy();
    // Q8_0 blocks with weights 'f32': dequantised at load, exactly the CPU reference's matrices.
    const q8file = (await checkpointToGguf(await openCheckpoint(memoryModel(await familyFiles(family))), 'q8_0')).file;
    const open8 = () => openGgufCheckpoint([bytesSource(`${family}.q8_0.gguf`, q8file)]);
    const cq = await open8();
    const cpuLogits = await new CpuRunner(cq.config, await buildWeights(new CpuBackend(cq.config), cq.config, cq), 256).logits(ref.tokens, true);
    const c = await loadWasmModel(await open8(), `${family}.q8_0.gguf`, { weights: 'f32', threads: 1 });
    expectClose(await c.runner.logits(ref.tokens, true), cpuLogits, TOL, `${family} Q8_0 GGUF on WASM, f32 storage`);
    c.runner.destroy();
    // Its auto storage on WASM is 'gguf': the Q8_0 blocks kept as stored (kernels/wasm/gguf.c) against int16
    // activations, the matrices the file keeps F32 f32; lossy only by the activations' rounding.
    const relRms = (got: Float32Array) => {
      let d2 = 0, w2 = 0;
      for (let i = 0; i < got.length; i++) { d2 += (got[i] - cpuLogits[i]) ** 2; w2 += cpuLogits[i] ** 2; }
      return Math.sqrt(d2 / w2);
    };
    const g = await loadWasmModel(await open8(), `${family}.q8_0.gguf`, { threads: 1 });
    expect(g.description.weightStorage).toBe('gguf');
    const gr = relRms(await g.runner.logits(ref.tokens, true));
    console.log(`WASM ${family} Q8_0 GGUF, gguf storage (blocks): logits rel RMS vs the CPU reference on the file ${gr.toExponential(2)}`);
    expect(gr).toBeLessThan(1e-3);
    g.runner.destroy();
    // q8 storage: the blocks requantised in the same groups of 32, and the matrices the file keeps F32 (rows
    // under 32 weights) quantised too, with int16 activations: lossier, so a looser bound.
    const b = await loadWasmModel(await open8(), `${family}.q8_0.gguf`, { weights: 'q8', threads: 1 });
    expect(b.description.weightStorage).toBe('q8');
    const br = relRms(await b.runner.logits(ref.tokens, true));
    console.log(`WASM ${family} Q8_0 GGUF, q8 storage: logits rel RMS vs the CPU reference on the file ${br.toExponential(2)}`);
    expect(br).toBeLessThan(0.01);
    b.runner.destroy();
  });
});

describe('the bench\'s small family models as GGUF files on WASM: the blocks kept (weights auto = gguf)', () => {
  // The fixtures' experts are too narrow for blocks (down_proj rows of 16 weights stay F32 in the file), so
  // the block path of the routed experts is checked here, at D 256 and expert width 128: each expert's
  // gate|up and down stay in the file's type (gguf.c kernels), against the CPU reference on the same file.
  const families = Object.keys(SMALL_FAMILY_CONFIGS).filter((f) => f !== 'gpt_oss');
  it.each(families.flatMap((f) => [[f, 'q8_0'], [f, 'q4_k_m']] as const))('%s %s: routed experts in blocks (Granite: f32), logits rel RMS < 2e-3 of the CPU reference on the file', async (family, quant) => {
    const files = syntheticCheckpoint(SMALL_FAMILY_CONFIGS[family], { seed: 5 });
    const file = (await checkpointToGguf(await openCheckpoint(memoryModel(files)), quant)).file;
    const open = () => openGgufCheckpoint([bytesSource(`${family}.${quant}.gguf`, file)]);
    const cq = await open();
    const cfg = cq.config;
    const tokens = Array.from({ length: 12 }, (_, i) => (i * 37 + 5) % cfg.vocabSize);
    const want = await new CpuRunner(cfg, await buildWeights(new CpuBackend(cfg), cfg, cq), 64).logits(tokens, true);
    const { runner, description } = await loadWasmModel(await open(), family, { threads: 1, contextLength: 64 });
    expect(description.weightStorage).toBe('gguf');
    // Granite's GGUF experts are restacked into its HF [E, 2I, D] tensors by the loader (gguf-families.ts
    // 'restack', decoded there for every backend): f32 on WASM. The other families' stay blocks.
    const expertFormat = family === 'granitemoe' ? 'f32' : 'gguf';
    for (const l of runner.weights.layers.filter((x) => x.moe)) {
      for (const e of l.moe!.experts) {
        expect('gateUp' in e && e.gateUp.format === expertFormat && e.down.format === expertFormat).toBe(true);
      }
    }
    const got = await runner.logits(tokens, true);
    let d2 = 0, w2 = 0;
    for (let i = 0; i < got.length; i++) { d2 += (got[i] - want[i]) ** 2; w2 += want[i] ** 2; }
    const rel = Math.sqrt(d2 / w2);
    console.log(`WASM ${family} small ${quant} GGUF, gguf storage (experts ${expertFormat}): logits rel RMS vs the CPU reference on the file ${rel.toExponential(2)}; weights ${(runner.memory().weightBytes / 2 ** 20).toFixed(2)} MiB`);
    expect(rel).toBeLessThan(2e-3);
    runner.destroy();
  });
});

describe('GPT-OSS sparsity on WASM', () => {
  it('is refused with a typed error saying what works instead', async () => {
    await expect(loadWasmModel(await familyCheckpoint('gpt_oss'), 'gpt_oss', { weights: 'f32', threads: 1, sparsity: { format: '2:4', apply: 'experts' } })).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/load without the sparsity option/) });
  });
});

describe('the families\' routed experts on the WASM sparse kernels', () => {
  // Sparsity 'experts' under each family's own expert names: the WASM engine on the dense fixture against
  // the CPU reference on the checkpoint pruned as the backends prune (gate|up as one [2I, D] matrix, down
  // on its own). Granite's and GPT-OSS's stacked experts are no sparsity target (GPT-OSS refuses).
  it.each([
    ['qwen2_moe', { format: '2:4' }], ['qwen3_moe', { format: 'vnm', v: 16, m: 8 }], ['olmoe', { format: '2:4' }], ['mixtral', { format: 'vnm', v: 16, m: 8 }],
  ] as const)('%s %o: prefill then decode within 1e-4 of the CPU reference on the pruned checkpoint', async (family, o) => {
    const { ref } = familyFixture(family);
    const files = await familyFiles(family);
    const st = parseSafetensors(files['model.safetensors']);
    const tensors = new Map<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>([...st.header.tensors.keys()].map((name) => { const t = st.tensor(name); return [name, { dtype: 'F32', shape: t.shape, data: Float32Array.from(toFloat32(t.dtype, t.data)) }]; }));
    const cfg = (await familyCheckpoint(family)).config;
    const D = cfg.hiddenSize, I = cfg.moeIntermediateSize;
    let pruned = 0;
    for (let l = 0; l < cfg.numLayers; l++) {
      for (let e = 0; e < cfg.nRoutedExperts; e++) {
        const g = tensors.get(tensorName('expert_gate', l, e, cfg)), u = tensors.get(tensorName('expert_up', l, e, cfg)), d = tensors.get(tensorName('expert_down', l, e, cfg));
        if (!g || !u || !d) continue;
        const gu = new Float32Array(2 * I * D);
        gu.set(g.data); gu.set(u.data, I * D);
        const p = pruneMatrix(gu, 2 * I, D, o).pruned;
        g.data = p.slice(0, I * D); u.data = p.slice(I * D);
        d.data = pruneMatrix(d.data, D, I, o).pruned;
        pruned++;
      }
    }
    expect(pruned).toBeGreaterThan(0);
    const prunedFile = writeSafetensors(Object.fromEntries(tensors));
    const cpuCk = await openCheckpoint(memoryModel({ ...files, 'model.safetensors': prunedFile }));
    const cpu = new CpuRunner(cpuCk.config, await buildWeights(new CpuBackend(cpuCk.config), cpuCk.config, cpuCk), 256);
    const { runner, description } = await loadWasmModel(await familyCheckpoint(family), family, { weights: 'f32', threads: 1, sparsity: { ...o, apply: 'experts' } });
    expect(description.expertStorage).toBe('sparse f32');
    const split = ref.prefill_split;
    for (const [a, b] of [[0, split], [split, split + 1], [split + 1, split + 2]]) {
      expectClose(await runner.logits(ref.tokens.slice(a, b), true), await cpu.logits(ref.tokens.slice(a, b), true), TOL, `${family} sparse tokens [${a}, ${b})`);
      expect(await runner.lastRouting()).toEqual(await cpu.lastRouting());
    }
    runner.destroy();
  });
});
