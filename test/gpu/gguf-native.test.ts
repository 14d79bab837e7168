// GGUF-native weight storage ('gguf'): a GGUF's quantised blocks stay on the GPU as they are in the file
// and the GGUF kernels decode them (gguf-linear.ts for the attention / dense / shared / lm_head
// projections, gguf-moe.ts for the routed experts). The bundled model (public/models/webmoe-tiny) is
// written by the GGUF writer as Q8_0 and Q4_K_M and loaded twice: with 'gguf' storage, and with 'f32'
// storage (the same blocks dequantised on the host, then the f32 kernels). The two compute the same
// products in a different order (block-wise decode + f32 accumulation vs f32 GEMV/matmul), so the
// logits agree to float rounding: bound 1e-4 of max |logit| (measured values printed), for a prefill, a
// token-by-token decode and a prefill followed by decode steps. The GPU bytes held for weights are
// about the file's tensor bytes (blocks, the embedding's too, + the f32 norms, router and kv_b), not 4× of them.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNodeEngine } from '../../src/node';
import type { WebMoeEngine } from '../../src/engine/engine';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { checkpointToGguf, ggufTypeChooser, type GgufQuant } from '../../src/model/gguf-convert';
import { deepseek2Gguf, deepseek2Metadata } from '../../src/model/gguf-deepseek2';
import { writeGguf } from '../../src/formats/gguf-write';
import type { MemoryPlan } from '../../src/model/memory-plan';
import { compare } from '../helpers/gpu';

const ROOT = join(import.meta.dirname, '..', '..');
const MODEL = join(ROOT, 'public', 'models', 'webmoe-tiny');
const TOKENS: number[] = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'webmoe-tiny-ref', 'tokens.json'), 'utf8')).tokens.slice(0, 48);
// A prefill of 40 rows: past GGUF_GEMV_MAX_ROWS (32), so the projections run the tiled matmul.
const PREFILL = 40, DECODE = 4;
const QUANTS: GgufQuant[] = ['q8_0', 'q4_k_m'];

let dir: string;
let engine: WebMoeEngine;
/** Q8_0, but layer 2's stacked up experts in Q4_0 (gate ≠ up type: the GGUF expert kernel's one decoder cannot take that layer). */
let mixedPath: string;
const files = new Map<GgufQuant, { path: string; fileBytes: number; types: Record<string, number>; blockBytes: number; blockTensors: number }>();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'webmoe-gguf-native-'));
  const ck = await openCheckpoint(localModel(MODEL));
  for (const q of QUANTS) {
    const r = await checkpointToGguf(ck, q);
    const path = join(dir, `webmoe-tiny-${q}.gguf`);
    writeFileSync(path, r.file);
    // The quantised matrices' block bytes, as the opened GGUF reports them (experts one slice each).
    const g = await openCheckpoint(localModel(path));
    const blocks = [...g.tensors.values()].filter((t) => t.gguf);
    await g.close();
    files.set(q, { path, fileBytes: r.file.length, types: r.types, blockBytes: blocks.reduce((a, t) => a + t.gguf!.bytes, 0), blockTensors: blocks.length });
  }
  const q8 = ggufTypeChooser(ck.config, 'q8_0');
  const tensors = await deepseek2Gguf(ck.config, (n) => ck.readF32(n), ck.tensors, (name, ne) => (name === 'blk.2.ffn_up_exps.weight' ? 'Q4_0' : q8(name, ne)));
  mixedPath = join(dir, 'webmoe-tiny-mixed.gguf');
  writeFileSync(mixedPath, writeGguf({ metadata: deepseek2Metadata(ck.config, { json: ck.tokenizerJson, config: ck.tokenizerConfig }), tensors }));
  await ck.close();
  engine = createNodeEngine();
});
afterAll(async () => { await engine?.unload(); });

interface Run { prefill: Float32Array; decode: Float32Array[]; prefillThenDecode: Float32Array[]; weightBytes: number; weightStorage: string; expertStorage?: string; plan: MemoryPlan }

/** Logits of the three paths under one storage. */
async function run(path: string, weights: 'gguf' | 'f32'): Promise<Run> {
  await engine.load(path, { weights, requireTokenizer: false });
  const r = engine.runner;
  r.truncate(0);
  const prefill = await r.logits(TOKENS.slice(0, PREFILL), true);
  const prefillThenDecode: Float32Array[] = [];
  for (const t of TOKENS.slice(PREFILL, PREFILL + DECODE)) prefillThenDecode.push(await r.logits([t], false));
  r.truncate(0);
  const decode: Float32Array[] = [];
  for (const t of TOKENS.slice(0, 6)) decode.push(await r.logits([t], false));
  return { prefill, decode, prefillThenDecode, weightBytes: r.memory().weightBytes, weightStorage: engine.info!.weightStorage, expertStorage: engine.info!.expertStorage, plan: engine.info!.memoryPlan! };
}

const maxAbs = (a: Float32Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
const REL = 1e-4;

describe.each(QUANTS)('%s GGUF with weights: gguf', (q) => {
  let native: Run, host: Run;
  beforeAll(async () => {
    const f = files.get(q)!;
    native = await run(f.path, 'gguf');
    host = await run(f.path, 'f32');
  });

  it('is held as GGUF blocks (weights and routed experts)', () => {
    expect(native.weightStorage).toBe('gguf');
    expect(native.expertStorage).toBe('gguf');
    expect(host.weightStorage).toBe('f32');
  });

  const check = (what: string, a: Float32Array, b: Float32Array) => {
    const { maxAbs: d, nonFinite } = compare(a, b, { atol: Infinity, rtol: 0 });
    const rel = d / maxAbs(b);
    console.log(`${q} ${what}: max |Δlogits| gguf vs f32-dequantised = ${d.toExponential(2)} (${rel.toExponential(2)} of max |logit| ${maxAbs(b).toFixed(2)})`);
    expect(nonFinite).toBe(0);
    expect(a.length).toBe(b.length);
    expect(rel).toBeLessThan(REL);
  };

  it(`prefill of ${PREFILL} tokens (every row): the f32 path's logits within ${REL} of max |logit|`, () => check('prefill', native.prefill, host.prefill));
  it('decode from an empty cache, token by token', () => native.decode.forEach((l, i) => check(`decode ${i}`, l, host.decode[i])));
  it(`prefill then ${DECODE} decode steps`, () => native.prefillThenDecode.forEach((l, i) => check(`prefill+decode ${i}`, l, host.prefillThenDecode[i])));

  it("GPU bytes for the blocks = the file's block bytes (+ ≤ 20 B of padding per buffer), as the memory plan says", () => {
    const f = files.get(q)!;
    const gguf = native.plan.weights.byFormat.gguf;
    console.log(`${q}: file ${f.fileBytes} B (${JSON.stringify(f.types)}), block bytes ${f.blockBytes} in ${f.blockTensors} tensors; GPU weights with gguf ${native.weightBytes} B (blocks ${gguf}, f32 rest ${native.weightBytes - gguf}), with f32 ${host.weightBytes} B`);
    // The plan counts what the uploads allocate, exactly.
    expect(native.weightBytes).toBe(native.plan.weights.bytes);
    expect(host.weightBytes).toBe(host.plan.weights.bytes);
    // Every block tensor is on the GPU as its bytes; buffers (one per matrix, two per MoE layer) pad by 4..20 bytes.
    expect(gguf).toBeGreaterThanOrEqual(f.blockBytes);
    expect(gguf).toBeLessThanOrEqual(f.blockBytes + 20 * f.blockTensors);
    // Only the f32 rest (router, kv_b, norms) is expanded: not 4× the file.
    expect(native.weightBytes).toBeLessThan(1.1 * f.fileBytes);
    expect(native.weightBytes).toBeLessThan(0.5 * host.weightBytes);
  });
});

describe('a layer whose gate and up experts differ in type', () => {
  it('runs that layer on f32 expert stacks, the rest on blocks: the f32 path\'s logits, the plan\'s bytes', async () => {
    const native = await run(mixedPath, 'gguf');
    const host = await run(mixedPath, 'f32');
    expect(native.weightStorage).toBe('gguf');
    expect(native.expertStorage).toBe('f32'); // not every layer's experts are blocks
    expect(native.plan.weights.byFormat.gguf).toBeGreaterThan(0);
    expect(native.weightBytes).toBe(native.plan.weights.bytes);
    const rel = compare(native.prefill, host.prefill, { atol: Infinity, rtol: 0 }).maxAbs / maxAbs(host.prefill);
    console.log(`mixed gate/up types: prefill max |Δlogits| / max |logit| = ${rel.toExponential(2)}`);
    expect(rel).toBeLessThan(REL);
  });
});

describe('weights: gguf on a checkpoint without blocks', () => {
  it('is the typed BAD_ARGUMENT error naming what works', async () => {
    await expect(engine.load(MODEL, { weights: 'gguf', requireTokenizer: false })).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/quantised blocks.*auto, f32/) });
  });
});

describe('a GGUF matrix past the binding limit', () => {
  it('is held as row chunks (the q4_k_m output.weight at a 600 KiB binding limit): the same logits as one buffer, the plan\'s bytes and largest binding', async () => {
    const limit = 600 << 10;
    const small = createNodeEngine({ gpu: { limitOverrides: { maxStorageBufferBindingSize: limit } }, onNotice: () => {} });
    try {
      const f = files.get('q4_k_m')!;
      const whole = await run(f.path, 'gguf');
      await small.load(f.path, { weights: 'gguf', requireTokenizer: false, contextLength: 64 }); // small temporaries: the chunk is the largest binding
      const r = small.runner;
      r.truncate(0);
      const prefill = await r.logits(TOKENS.slice(0, PREFILL), true);
      const decode = [await r.logits([TOKENS[PREFILL]], false)];
      const plan = small.info!.memoryPlan!;
      // output.weight: 3072 rows of Q6_K (210 B per 256 weights) = 645,120 B > 614,400.
      expect(plan.largestBinding.name).toMatch(/lm_head.*largest row chunk/);
      expect(plan.largestBinding.bytes).toBeLessThanOrEqual(limit);
      expect(r.memory().weightBytes).toBe(plan.weights.bytes);
      // Each chunk's rows are the same dot products in the same order: identical logits.
      expect(compare(prefill, whole.prefill, { atol: 0, rtol: 0 }).maxAbs).toBe(0);
      expect(compare(decode[0], whole.prefillThenDecode[0], { atol: 0, rtol: 0 }).maxAbs).toBe(0);
    } finally {
      await small.unload();
    }
  });

  // Routed experts at a 256 KiB binding limit: Q4_K_M's stacked gate|up (16 experts × 2 × 18,432 B)
  // splits into stacks of 6, 6 and 4 experts, Q8_0's (16 × 2 × 34,816 B) into 3 × 5 + 1. Each stack is
  // one more pass over the remapped routing that adds its experts to the running sum: the same products,
  // summed per stack, so the logits equal one buffer's to float rounding (bound 1e-6 of max |logit|).
  it.each(QUANTS)('%s: routed experts split into stacks of whole experts: one buffer\'s logits, the plan\'s bytes and stacks', async (q) => {
    const limit = 256 << 10;
    const small = createNodeEngine({ gpu: { limitOverrides: { maxStorageBufferBindingSize: limit } }, onNotice: () => {} });
    try {
      const f = files.get(q)!;
      const whole = await run(f.path, 'gguf');
      await small.load(f.path, { weights: 'gguf', requireTokenizer: false, contextLength: 64 });
      const r = small.runner;
      r.truncate(0);
      const prefill = await r.logits(TOKENS.slice(0, PREFILL), true);
      const decode = [await r.logits([TOKENS[PREFILL]], false)];
      const plan = small.info!.memoryPlan!;
      expect(plan.largestBinding.bytes).toBeLessThanOrEqual(limit);
      expect(plan.expertStacks).toEqual(q === 'q4_k_m' ? [6, 6, 4] : [3, 3, 3, 3, 3, 1]);
      expect(r.memory().weightBytes).toBe(plan.weights.bytes);
      expect(plan.weights.bytes).toBeGreaterThan(whole.plan.weights.bytes); // 16 B of padding per extra buffer
      for (const [what, a, b] of [['prefill', prefill, whole.prefill], ['decode', decode[0], whole.prefillThenDecode[0]]] as const) {
        const d = compare(a, b, { atol: Infinity, rtol: 0 });
        console.log(`${q} expert stacks at ${limit} B, ${what}: max |Δlogits| vs one buffer = ${d.maxAbs.toExponential(2)} (max |logit| ${maxAbs(b).toFixed(2)})`);
        expect(d.nonFinite).toBe(0);
        expect(d.maxAbs / maxAbs(b)).toBeLessThan(1e-6);
      }
    } finally {
      await small.unload();
    }
  });
});
