// The published configs of the other MoE families (test/data/configs) at their real widths: `webmoe info`
// prints each one's memory plan from config.json and the tensor headers of the synthetic server's
// sharded checkpoint, and the synthetic server's checkpoint (a few layers) opens and reads through the
// URL loader with the family's tensor table.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { main, type CliIO } from '../../src/cli';
import { serveSyntheticRepo } from '../../src/bench/synthetic-server';
import { parseConfig } from '../../src/model/config';
import { planMemory } from '../../src/model/memory-plan';
import { openCheckpoint } from '../../src/model/checkpoint';
import { urlModel } from '../../src/loader/model-source';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { expectedTensorCount } from '../../src/model/tensors';

const MODELS = ['Qwen1.5-MoE-A2.7B', 'Qwen3-30B-A3B', 'OLMoE-1B-7B-0924', 'Mixtral-8x7B-v0.1', 'granite-3.1-3b-a800m', 'gpt-oss-20b'];
const realConfig = (model: string): Record<string, unknown> => JSON.parse(readFileSync(new URL(`../data/configs/${model}/config.json`, import.meta.url), 'utf8'));
const GB = 1e9;

async function info(url: string, ...args: string[]) {
  const out: string[] = [], err: string[] = [];
  const io: CliIO = { out: (s) => out.push(s), err: (s) => err.push(s) };
  expect(await main(['info', '--model', url, ...args], io), err.join('')).toBe(0);
  return JSON.parse(out.join(''));
}

describe.each(MODELS)('%s', (model) => {
  it('webmoe info: the memory plan from config.json and the shard headers (q4 and f16, 4096 tokens)', async () => {
    const s = await serveSyntheticRepo(realConfig(model));
    try {
      const cfg = parseConfig(realConfig(model));
      const rows: string[] = [];
      for (const weights of ['q4', 'f16'] as const) {
        const r = await info(s.url, '--weights', weights, '--context', '4096');
        expect(r.plan.model).toMatchObject({ modelType: cfg.modelType, layers: cfg.numLayers });
        expect(r.plan.gpuBytes).toBe(planMemory(cfg, null, { weights, contextLength: 4096 }).gpuBytes);
        // GQA cache: K and V per kv head, f16 (the GPU default): 2 · kv_heads · head_dim · 2 bytes per layer and
        // token, past the windows: sliding-window layers (gpt-oss's 12) hold a fixed window of rows.
        const growing = cfg.layerTypes ? cfg.layerTypes.filter((t) => t === 'full_attention').length : cfg.numLayers;
        expect(r.plan.kvCache.bytesPerToken).toBe(growing * 2 * cfg.numKvHeads * cfg.headDim * 2);
        rows.push(`${weights}: gpuBytes ${(r.plan.gpuBytes / GB).toFixed(2)} GB (weights ${(r.plan.weights.bytes / GB).toFixed(2)}, KV ${(r.plan.kvCache.bytes / GB).toFixed(2)})`);
      }
      expect(s.stats.bytesSent).toBeLessThan(s.repo.tensorBytes / 100); // headers only
      console.info(`webmoe info ${model} (${r0(cfg)}), context 4096: ${rows.join('; ')}`);
    } finally {
      await s.close();
    }
  });

  it('the synthetic server serves it (2 layers) and the URL loader opens and reads it', async () => {
    const real = realConfig(model);
    // (GPT-OSS lists one layer_types entry per layer: the first two go with the two layers.)
    const config = { ...real, num_hidden_layers: 2, ...(Array.isArray(real.layer_types) ? { layer_types: real.layer_types.slice(0, 2) } : {}) };
    const s = await serveSyntheticRepo(config, { shardBytes: 256e6, extraFiles: { 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) } });
    try {
      const ck = await openCheckpoint(urlModel(s.url, { cache: false }), { validateTokenizer: false });
      const cfg = ck.config;
      expect(cfg.modelType).toBe(realConfig(model).model_type);
      expect([...ck.tensors.keys()].length).toBe(expectedTensorCount(cfg));
      const name = [...ck.tensors.keys()].find((n) => n.includes('layers.1.') && n.includes('o_proj'))!;
      const w = await ck.readF32(name);
      expect(w.length).toBe(cfg.hiddenSize * cfg.numHeads * cfg.headDim);
      expect(w.every(Number.isFinite)).toBe(true);
      await ck.close();
    } finally {
      await s.close();
    }
  });
});

const r0 = (c: ReturnType<typeof parseConfig>) => `${c.numLayers} layers, ${c.nRoutedExperts} experts top-${c.numExpertsPerTok}`;
