import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { LimitExceededError } from '../../src/errors';
import { parseSafetensors, parseSafetensorsHeader } from '../../src/formats/safetensors';
import { parseConfig } from '../../src/model/config';
import { type PlanTensor, checkPlanFits, expertStackBuffers, planMemory, planShortfall, resolveStorage, tempPoolBytes, tempSizeClass, weightUploadBytes, whatFits } from '../../src/model/memory-plan';
import { syntheticRepo } from '../../src/bench/synthetic-server';
import { TINY_V3_CONFIG } from '../../src/model/synthetic';

const realConfig = (model: string) => parseConfig(JSON.parse(readFileSync(new URL(`../data/configs/${model}/config.json`, import.meta.url), 'utf8')));
const FIX = new URL('../fixtures/deepseek-v3-tiny/', import.meta.url);
const fixture = () => parseSafetensors(new Uint8Array(readFileSync(new URL('model.safetensors', FIX))));
const fixtureConfig = () => parseConfig(JSON.parse(readFileSync(new URL('config.json', FIX), 'utf8')));
const GiB = 2 ** 30;

describe('memory plan', () => {
  it('fixture, f32: weights within padding of the f32 checkpoint, KV = (kv_lora + rope)·2 per layer and token (f16, the GPU default), parts add up', () => {
    const st = fixture();
    const p = planMemory(fixtureConfig(), st.header.tensors.values(), { weights: 'f32', contextLength: 256 });
    const data = st.header.fileSize - st.header.dataStart;
    expect(p.checkpoint.bytes).toBe(data);
    expect(p.weights.bytes).toBeGreaterThanOrEqual(data);
    expect(p.weights.bytes).toBeLessThan(data * 1.01); // vectors and matrices padded to 16 bytes
    expect(p.storage.kvCache).toBe('f16');
    expect(p.kvCache.bytesPerToken).toBe((32 + 8) * 2 * 3);
    expect(p.kvCache.bytes).toBe(p.kvCache.bytesPerToken * 256);
    // f32 on request and on a CPU fallback adapter (unpacking costs more there than the bytes save).
    for (const f32 of [planMemory(fixtureConfig(), null, { weights: 'f32', contextLength: 256, kvCache: 'f32' }), planMemory(fixtureConfig(), null, { weights: 'f32', contextLength: 256, device: { isFallbackAdapter: true } })]) {
      expect(f32.storage.kvCache).toBe('f32');
      expect(f32.kvCache.bytesPerToken).toBe((32 + 8) * 4 * 3);
    }
    // Odd rows are padded to whole u32 words in f16.
    expect(planMemory({ ...fixtureConfig(), kvLoraRank: 31 }, null, { weights: 'f32', contextLength: 256 }).kvCache.bytesPerToken).toBe((32 + 8) * 2 * 3);
    expect(() => planMemory(fixtureConfig(), null, { kvCache: 'bf16' as 'f16' })).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
    expect(Object.values(p.weights.byRole).reduce((a, b) => a + b, 0)).toBe(p.weights.bytes);
    expect(Object.values(p.weights.byFormat).reduce((a, b) => a + b, 0)).toBe(p.weights.bytes);
    expect(p.gpuBytes).toBe(p.weights.bytes + p.kvCache.bytes + p.activations.bytes + p.runtime.bytes);
    expect(p.model.parameters).toBe(data / 4);
  });

  it("packed sizes follow the uploaders: padded rows, f16 scale pairs, row chunks past the limit, the experts' stacks", () => {
    expect(weightUploadBytes('f32', 3, 5).bytes).toBe(64); // 15 floats → 16
    expect(weightUploadBytes('f16', 2, 10).bytes).toBe(2 * 8 * 4); // rows of 16 halves = 8 words
    expect(weightUploadBytes('q4', 4, 64)).toEqual({ bytes: 4 * 8 * 4 + 16, largest: 4 * 8 * 4 }); // 8 words a row; 8 f16 scales
    const whole = weightUploadBytes('f16', 1000, 4096);
    const chunked = weightUploadBytes('f16', 1000, 4096, 1 << 20);
    expect(chunked.largest).toBe(128 * 4096 * 2);
    expect(chunked.bytes).toBe(whole.bytes);
    const st = expertStackBuffers('q4', 64, 1408, 2048);
    expect(st.map((b) => b.name)).toEqual(['gate_up', 'down', 'gate_up.scales', 'down.scales']);
    expect(st[0].bytes).toBe(64 * 2 * 1408 * 2048 / 2);
    expect(st[2].bytes).toBe(64 * 2 * 1408 * 64 * 2); // f16 scales, not f32
    expect(tempSizeClass(1)).toBe(256);
    expect(tempSizeClass((1 << 20) + 1)).toBe(2 << 20);
    expect(tempPoolBytes([[100, 100, 3000], [100, 5000]])).toBe(2 * 256 + 4096 + 8192);
  });

  it("'auto' as the load decides it: f16 / bf16 for all-F16 / all-BF16 projections on a real GPU, else f32", () => {
    const t = (dtype: 'F16' | 'BF16') => [{ name: 'model.layers.0.self_attn.o_proj.weight', dtype, shape: [2, 2] }, { name: 'model.norm.weight', dtype: 'BF16' as const, shape: [2] }];
    expect(resolveStorage('auto', t('F16'))).toBe('f16');
    expect(resolveStorage('auto', t('F16'), { isFallbackAdapter: true })).toBe('f32');
    expect(resolveStorage('auto', t('BF16'))).toBe('bf16');
    expect(resolveStorage('auto', [...t('BF16'), ...t('F16')])).toBe('f32'); // mixed
    expect(resolveStorage('q4', t('BF16'))).toBe('q4');
  });

  it("'auto' on an FP8 checkpoint (the synthetic server's fp8 mode) is q8 on a real GPU, f32 on a CPU adapter", () => {
    const fp8 = syntheticRepo({ ...TINY_V3_CONFIG, torch_dtype: 'bfloat16', quantization_config: { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128] } });
    const tensors = fp8.shards.flatMap((name) => {
      const f = fp8.files.get(name)!;
      return [...parseSafetensorsHeader(f.read(0, Math.min(f.size, 1 << 20)), f.size).tensors.values()];
    });
    expect(tensors.some((x) => x.dtype === 'F8_E4M3')).toBe(true);
    expect(resolveStorage('auto', tensors)).toBe('q8');
    expect(resolveStorage('auto', tensors, { isFallbackAdapter: true })).toBe('f32');
    const f32 = [{ name: 'model.layers.0.self_attn.o_proj.weight', dtype: 'F8_E4M3' as const, shape: [2, 2] }, { name: 'model.layers.0.self_attn.kv_a_proj_with_mqa.weight', dtype: 'F32' as const, shape: [2, 2] }];
    expect(resolveStorage('auto', f32)).toBe('f32'); // FP8 mixed with F32 projections: not an FP8 checkpoint
  });

  it('DeepSeek-V2-Lite: q4 ≈ 9 GB with f16 scales, q8 and f16 in order; the 1.48 GB f32 expert stack of the issue splits into stacks under a 1 GiB binding', () => {
    const cfg = realConfig('DeepSeek-V2-Lite');
    const repo = syntheticRepo(JSON.parse(readFileSync(new URL('../data/configs/DeepSeek-V2-Lite/config.json', import.meta.url), 'utf8')));
    expect(repo.tensorBytes).toBeGreaterThan(31e9);
    const plans = (['f32', 'f16', 'q8', 'q4'] as const).map((w) => planMemory(cfg, null, { weights: w, contextLength: 4096 }));
    for (let i = 1; i < 4; i++) expect(plans[i].weights.bytes).toBeLessThan(plans[i - 1].weights.bytes);
    const q4 = plans[3];
    // 15.7B weights: routed experts at 0.5625 B/weight, embedding f16, kv_b f32 (real-models.md: 8.8 GB all at q4).
    expect(q4.weights.bytes / 1e9).toBeGreaterThan(8.5);
    expect(q4.weights.bytes / 1e9).toBeLessThan(9.6);
    expect(q4.kvCache.bytes).toBe(27 * 576 * 2 * 4096); // f16 cache
    expect(plans[0].largestBinding).toMatchObject({ bytes: 64 * 2 * 1408 * 2048 * 4 });
    expect(plans[0].largestBinding.name).toMatch(/experts.*gate_up/);
    // A device with a 1 GiB binding limit: the f32 experts go into two stacks of 32 (0.74 GB each) and
    // the binding fits; 16 GB of memory does not hold f32 or f16, q8 does not fit either, q4 does.
    const budget = { maxStorageBufferBindingSize: GiB, maxBufferSize: 4 * GiB, memoryBytes: 16e9 };
    const split = planMemory(cfg, null, { weights: 'f32', contextLength: 4096, device: budget });
    expect(split.expertStacks).toEqual([32, 32]);
    expect(split.largestBinding).toMatchObject({ name: 'model.embed_tokens.weight', bytes: 102400 * 2048 * 4 }); // next: a 0.74 GB stack
    expect(split.weights.bytes).toBe(plans[0].weights.bytes);
    expect(planShortfall(split, budget)).toMatchObject({ limit: 'GPU memory' });
    expect(planShortfall(split, { ...budget, memoryBytes: undefined })).toBeNull();
    const fits = whatFits(cfg, null, { weights: 'f32', contextLength: 4096 }, budget);
    expect(fits[0]).toMatchObject({ weights: 'q4', contextLength: 4096 });
    let err: unknown;
    try { checkPlanFits(split, budget, () => fits); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(LimitExceededError);
    expect((err as Error).message).toMatch(/GPU memory = \d+, but the device grants 16000000000/);
    expect((err as Error).message).toMatch(/What fits: --weights q4 --context 4096/);
    // One expert past the limit (a 0.5 MB binding): the plan's largest binding is that one expert.
    const tiny = planMemory(cfg, null, { weights: 'f32', contextLength: 4096, device: { maxStorageBufferBindingSize: 1 << 19 } });
    expect(tiny.expertStacks.length).toBe(64);
    expect(tiny.largestBinding.bytes).toBeGreaterThanOrEqual(2 * 1408 * 2048 * 4);
    // An 8 GB GPU (memory known to the caller): q4 at a shorter context, nothing at f16.
    const eight = whatFits(cfg, null, { weights: 'f16', contextLength: 4096 }, { ...budget, memoryBytes: 8e9 });
    expect(eight).toEqual([]);
    expect(eight.every((f) => f.gpuBytes <= 8e9)).toBe(true);
    expect(eight.map((f) => f.weights)).not.toContain('f16');
  });

  it('DeepSeek-V3: the plan of 671B from the config, and no storage fits a 16 GB GPU (the error says so)', () => {
    const cfg = realConfig('DeepSeek-V3');
    const p = planMemory(cfg, null, { weights: 'q4', contextLength: 4096 });
    expect(p.model.parameters / 1e9).toBeGreaterThan(650);
    expect(p.weights.bytes / 1e9).toBeGreaterThan(370);
    const budget = { maxStorageBufferBindingSize: 4 * GiB, maxBufferSize: 4 * GiB, memoryBytes: 16e9 };
    expect(whatFits(cfg, null, { weights: 'q4', contextLength: 4096 }, budget)).toEqual([]);
    expect(() => checkPlanFits(p, budget, () => [])).toThrow(/createRemoteEngine/);
  });
});

describe("memory plan: 'gguf' storage (a GGUF's quantised blocks on the GPU)", () => {
  // The fixture's tensors as a GGUF would list them: every matrix but the router in Q8_0 blocks
  // (34 bytes per 32 weights), vectors and the router F32 (no block info).
  const asGguf = (expertDown = 'Q8_0'): PlanTensor[] => [...fixture().header.tensors.values()].map((t) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.shape.length !== 2 || t.name.endsWith('mlp.gate.weight') || t.shape[1] % 32) return { ...t, dtype: 'F32' as const };
    const type = /experts\.\d+\.down_proj/.test(t.name) ? expertDown : 'Q8_0';
    return { ...t, dtype: 'F32' as const, gguf: { type, bytes: (n / 32) * 34 } };
  });

  it("'auto' picks gguf for a checkpoint with block tensors, on a fallback adapter too; not for safetensors", () => {
    expect(resolveStorage('auto', asGguf())).toBe('gguf');
    expect(resolveStorage('auto', asGguf(), { isFallbackAdapter: true })).toBe('gguf');
    expect(resolveStorage('auto', fixture().header.tensors.values(), { isFallbackAdapter: true })).toBe('f32');
  });

  it('counts each block tensor as its bytes + padding (kv_b f32), the experts as two stacked buffers per layer', () => {
    const list = asGguf();
    const cfg = fixtureConfig();
    const p = planMemory(cfg, list, { weights: 'gguf', contextLength: 256 });
    expect(p.storage).toMatchObject({ weights: 'gguf', experts: 'gguf', embedding: 'gguf' });
    const blocks = list.filter((t) => t.gguf && !/kv_b_proj/.test(t.name));
    const blockBytes = blocks.reduce((a, t) => a + t.gguf!.bytes, 0);
    const moeLayers = new Set(list.filter((t) => t.name.includes('.experts.')).map((t) => t.name.split('.')[2])).size;
    const buffers = blocks.filter((t) => !t.name.includes('.experts.')).length + 2 * moeLayers;
    expect(p.weights.byFormat.gguf).toBeGreaterThanOrEqual(blockBytes + 16 * buffers);
    expect(p.weights.byFormat.gguf).toBeLessThanOrEqual(blockBytes + 20 * buffers);
    expect(p.expertStacks).toEqual([cfg.nRoutedExperts]);
    expect(p.weights.bytes).toBeLessThan(planMemory(cfg, list, { weights: 'f32', contextLength: 256 }).weights.bytes);
  });

  it('what fits a GGUF load that does not: the blocks at a shorter context, then q4', () => {
    const cfg = fixtureConfig();
    const half = planMemory(cfg, asGguf(), { weights: 'gguf', contextLength: 512 });
    const budget = { maxStorageBufferBindingSize: 2 ** 30, maxBufferSize: 2 ** 30, memoryBytes: half.gpuBytes };
    const fits = whatFits(cfg, asGguf(), { weights: 'gguf', contextLength: 1024 }, budget);
    expect(fits[0]).toMatchObject({ weights: 'gguf', contextLength: 512, gpuBytes: half.gpuBytes });
    expect(fits.map((f) => f.weights)).not.toContain('f32');
  });

  it('routed experts whose down matrices differ in type within a layer fall back to f32 stacks (that layer only)', () => {
    const cfg = fixtureConfig();
    const mixedLayer = `model.layers.${cfg.firstKDenseReplace}.mlp.experts.0.down_proj.weight`;
    const list = asGguf().map((t) => (t.name === mixedLayer ? { ...t, gguf: { ...t.gguf!, type: 'Q4_0' } } : t));
    const p = planMemory(cfg, list, { weights: 'gguf' });
    expect(p.storage.experts).toBe('f32');
    const all = planMemory(cfg, asGguf(), { weights: 'gguf' });
    const f32 = planMemory(cfg, asGguf(), { weights: 'f32' });
    const moe = p.model.layers - cfg.firstKDenseReplace;
    // One layer's experts as f32 stacks, the others' as blocks.
    expect(p.weights.byRole.routed_experts).toBe(all.weights.byRole.routed_experts * (moe - 1) / moe + f32.weights.byRole.routed_experts / moe);
  });
});

describe('prefill chunk sized from the device', () => {
  // DeepSeek-V3 at 4096 tokens: a 512-token chunk needs a 144 MiB temporary, more than the 128 MiB
  // binding WebGPU guarantees; the plan halves the default chunk until every temporary fits.
  const cfg = realConfig('DeepSeek-V3');
  const device = (limit: number) => ({ maxStorageBufferBindingSize: limit, maxBufferSize: 2 ** 31 });
  it('halves the default chunk while a temporary exceeds the binding limit', () => {
    const at512 = planMemory(cfg, null, { weights: 'q4', contextLength: 4096, prefillTokens: 512 });
    expect(at512.activations.largestBytes).toBeGreaterThan(128 * 2 ** 20);
    const p = planMemory(cfg, null, { weights: 'q4', contextLength: 4096, device: device(128 * 2 ** 20) });
    expect(p.prefillTokens).toBe(256);
    expect(p.activations.largestBytes).toBeLessThanOrEqual(128 * 2 ** 20);
    expect(planMemory(cfg, null, { weights: 'q4', contextLength: 4096, device: device(2 ** 30) }).prefillTokens).toBe(512);
    expect(planMemory(cfg, null, { weights: 'q4', contextLength: 4096, device: device(32 * 2 ** 20) }).prefillTokens).toBe(64);
  });
  it('keeps an explicit chunk and the default without device limits', () => {
    expect(planMemory(cfg, null, { weights: 'q4', contextLength: 4096, prefillTokens: 512, device: device(128 * 2 ** 20) }).prefillTokens).toBe(512);
    expect(planMemory(cfg, null, { weights: 'q4', contextLength: 4096 }).prefillTokens).toBe(512);
    expect(planMemory(cfg, null, { weights: 'q4', contextLength: 100 }).prefillTokens).toBe(100);
  });
  it('stops at 16 tokens when even that chunk does not fit (the load then fails on the limit)', () => {
    const p = planMemory(cfg, null, { weights: 'q4', contextLength: 4096, device: device(4 * 2 ** 20) });
    expect(p.prefillTokens).toBe(16);
    expect(p.activations.largestBytes).toBeGreaterThan(4 * 2 ** 20);
  });
});
