/**
 * End to end: prefill and decode tokens/s of whole models on this device, with the hardware-independent
 * figures: dispatches and GPU→CPU round trips per decoded token, and bytes read per decoded token against
 * the minimum (active weights and the KV cache, each read once).
 *
 * Models (random weights, made in-process so the suite needs no downloads):
 *  - the reference fixture's shapes (DeepSeek-V3 in miniature, 3 layers);
 *  - DeepSeek-V2-Lite's shapes (hidden 2048, MLA 512/64, 16 heads, top-6 of 64 experts, 2 shared)
 *    cut to 2 layers (1 dense + 1 MoE) with the vocabulary cut to 8,192 and the routed experts to 16,
 *    so the f32 expert stack fits one storage binding on common devices (full mode only).
 */
import type { BenchContext, BenchSuite } from '../types';
import { createEngine } from '../../engine/engine';
import { memoryModel, urlModel, type ModelSource } from '../../loader/model-source';
import { openCheckpoint } from '../../model/checkpoint';
import { checkpointToGguf, type GgufQuant } from '../../model/gguf-convert';
import { parameterCounts, type WeightStorage } from '../../model/assemble';
import { syntheticCheckpoint, TINY_V3_CONFIG, V2_LITE_CONFIG } from '../../model/synthetic';
import { byteLevelTokenizerJson } from '../../model/byte-tokenizer';
import { parseConfig, type ModelConfig } from '../../model/config';
import { expectedTensorShapes } from '../../model/tensors';
import type { WebMoeEngine } from '../../engine/engine';

/** Bytes one decoded token must read at least: every weight it uses once, plus the KV cache once. */
/** Cached values per token and layer: MLA's latent row, or GQA's K and V of every kv head. */
const kvValuesPerLayer = (cfg: ModelConfig) => (cfg.attention === 'gqa' ? 2 * cfg.numKvHeads * cfg.headDim : cfg.kvLoraRank + cfg.qkRopeHeadDim);

export function minBytesPerToken(cfg: ModelConfig, cachedTokens: number, bytesPerWeight = 4): number {
  let params = 0, storedBytes = 0;
  const chosen = cfg.numExpertsPerTok / Math.max(1, cfg.nRoutedExperts);
  for (const [name, shape] of expectedTensorShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    // GPT-OSS's stacked experts, K of E read: MXFP4 block and scale bytes as stored, f32 biases, or unquantised stacks in the storage.
    const oss = /\.experts\.(gate_up|down)_proj(_blocks|_scales|_bias)?$/.exec(name);
    if (oss) {
      if (oss[2] === '_blocks' || oss[2] === '_scales') storedBytes += n * chosen;
      else if (oss[2] === '_bias') storedBytes += n * chosen * 4;
      else params += n * chosen;
      continue;
    }
    if (name === 'model.embed_tokens.weight') params += cfg.hiddenSize; // one row
    // Routed experts (per-expert tensors of any family, or Granite's stacked input/output_linear): K of E read.
    else if (/\.experts\.\d+\.|\.(input|output)_linear\.weight$/.test(name)) params += n * (cfg.numExpertsPerTok / cfg.nRoutedExperts);
    else params += n;
  }
  const kv = cachedTokens * cfg.numLayers * kvValuesPerLayer(cfg) * 4;
  return params * bytesPerWeight + storedBytes + kv;
}

/**
 * Bytes our decode step reads: the same weights (the MoE decode kernel reads only the chosen experts),
 * but the attention kernel reads the latent cache once per block of 4 query heads.
 */
export function ourBytesPerToken(cfg: ModelConfig, cachedTokens: number, bytesPerWeight = 4): number {
  // (GQA: the cache is read once per kv head group, as the minimum counts it.)
  if (cfg.attention === 'gqa') return minBytesPerToken(cfg, cachedTokens, bytesPerWeight);
  const kvOnce = cachedTokens * cfg.numLayers * kvValuesPerLayer(cfg) * 4;
  return minBytesPerToken(cfg, cachedTokens, bytesPerWeight) + kvOnce * (Math.ceil(cfg.numHeads / 4) - 1);
}

async function measure(ctx: BenchContext, name: string, config: Record<string, unknown>, promptTokens: number, decodeTokens: number) {
  ctx.progress(`e2e: building ${name} (random weights)`);
  const files = { ...syntheticCheckpoint(config, { seed: 1 }), 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) };
  const engine: WebMoeEngine = createEngine({}, { acquire: async () => ctx.gpu, resolve: () => memoryModel(files) });
  try {
    ctx.progress(`e2e: loading ${name}`);
    await engine.load(memoryModel(files), { weights: 'f32', contextLength: promptTokens + decodeTokens + 8 });
    const cfg = parseConfig(config);
    const prompt = 'The quick brown fox jumps over the lazy dog. '.repeat(8).slice(0, promptTokens);
    // Warm-up: compiles every pipeline the steps use.
    const warm = engine.generate(prompt.slice(0, 8), { temperature: 0, maxTokens: 2, stopAtEos: false });
    for await (const _ of warm) void _;
    ctx.progress(`e2e: ${name}: ${promptTokens}-token prefill, ${decodeTokens} decode steps`);
    const it = engine.generate(prompt, { temperature: 0, maxTokens: decodeTokens, stopAtEos: false });
    let r;
    for (;;) { r = await it.next(); if (r.done) break; }
    const res = r.value;
    const s = await engine.stats();
    const cached = promptTokens + decodeTokens / 2;
    ctx.e2e({
      model: name,
      prefillTokPerS: res.prefillTokPerS,
      decodeTokPerS: res.decodeTokPerS,
      dispatchesPerToken: s.dispatchesPerToken,
      readbacksPerToken: s.readbacksPerToken,
      bytesPerToken: ourBytesPerToken(cfg, cached),
      minBytesPerToken: minBytesPerToken(cfg, cached),
      timeToFirstTokenMs: res.timeToFirstTokenMs,
    });
  } finally {
    await engine.unload();
  }
}

/**
 * The bundled model (public/models/webmoe-tiny, trained weights, fetched from the bench's server) from
 * its safetensors in f32 / q8 / q4 storage, and from GGUF files the writer makes of it (Q8_0, Q4_K_M:
 * src/model/gguf-convert.ts) with the blocks kept on the GPU ('gguf' storage: gguf-linear / gguf-moe).
 * bytesPerToken and minBytesPerToken use the average bytes per parameter the load holds on the GPU.
 * Full runs take the median of 3 rounds over all loads in turn.
 */
async function measureBundled(ctx: BenchContext, promptTokens: number, decodeTokens: number, rounds: number) {
  if (!ctx.baseUrl) { ctx.error('e2e: the bundled model needs the URL public/ is served at (ctx.baseUrl); not measured'); return; }
  const url = new URL('models/webmoe-tiny/', ctx.baseUrl).href;
  ctx.progress('e2e: bundled model: writing its GGUF files');
  const ck = await openCheckpoint(urlModel(url, { cache: false }));
  const ggufs = new Map<GgufQuant, Uint8Array>();
  try {
    for (const q of ['q8_0', 'q4_k_m'] as GgufQuant[]) ggufs.set(q, (await checkpointToGguf(ck, q)).file);
  } finally {
    await ck.close();
  }
  const cfg = ck.config;
  const params = parameterCounts(cfg).total;
  const runs: { name: string; source: () => ModelSource; weights: WeightStorage }[] = [
    ...(['f32', 'q8', 'q4'] as const).map((w) => ({ name: `webmoe-tiny safetensors, ${w} storage`, source: () => urlModel(url, { cache: false }), weights: w })),
    ...[...ggufs].map(([q, file]) => ({ name: `webmoe-tiny GGUF ${q.toUpperCase()}, gguf storage (blocks on the GPU)`, source: () => memoryModel({ [`webmoe-tiny-${q}.gguf`]: file }), weights: 'gguf' as const })),
  ];
  const engine: WebMoeEngine = createEngine({}, { acquire: async () => ctx.gpu, resolve: () => memoryModel({}) });
  const prompt = 'Once upon a time, there was a little girl who loved to play in the park with her friends. '.repeat(4).slice(0, promptTokens);
  // Rounds over all loads in turn, the median per load: on a shared or throttling machine, slow spells
  // then hit every storage alike instead of whichever ran during them.
  const samples = runs.map(() => [] as { prefill: number; decode: number; ttft?: number; dispatches: number; readbacks: number; bpw: number }[]);
  try {
    for (let round = 0; round < rounds; round++) {
      for (const [i, r] of runs.entries()) {
        ctx.progress(`e2e: round ${round + 1}/${rounds}: loading ${r.name}`);
        await engine.load(r.source(), { weights: r.weights, contextLength: Math.min(cfg.maxPositionEmbeddings, 256) });
        if (engine.info!.weightStorage !== r.weights) ctx.error(`e2e: ${r.name} loaded as ${engine.info!.weightStorage}`);
        // Warm-up with the same prompt: compiles the prefill's pipelines too (their shapes depend on its length).
        const warm = engine.generate(prompt, { temperature: 0, maxTokens: 2, stopAtEos: false });
        for await (const _ of warm) void _;
        ctx.progress(`e2e: ${r.name}: prefill, ${decodeTokens} decode steps`);
        const it = engine.generate(prompt, { temperature: 0, maxTokens: decodeTokens, stopAtEos: false });
        let res;
        for (;;) { res = await it.next(); if (res.done) break; }
        const st = await engine.stats();
        samples[i].push({
          prefill: res.value.prefillTokPerS, decode: res.value.decodeTokPerS, ttft: res.value.timeToFirstTokenMs,
          dispatches: st.dispatchesPerToken, readbacks: st.readbacksPerToken, bpw: engine.runner.memory().weightBytes / params,
        });
      }
    }
  } finally {
    await engine.unload();
  }
  const median = (v: number[]) => { const a = [...v].sort((x, y) => x - y); return a[Math.floor(a.length / 2)]; };
  const cached = promptTokens + decodeTokens / 2;
  runs.forEach((r, i) => {
    const s = samples[i];
    const bpw = s[0].bpw;
    ctx.e2e({
      model: rounds > 1 ? `${r.name} (median of ${rounds})` : r.name,
      prefillTokPerS: median(s.map((x) => x.prefill)),
      decodeTokPerS: median(s.map((x) => x.decode)),
      dispatchesPerToken: s[0].dispatches,
      readbacksPerToken: s[0].readbacks,
      bytesPerToken: ourBytesPerToken(cfg, cached, bpw),
      minBytesPerToken: minBytesPerToken(cfg, cached, bpw),
      timeToFirstTokenMs: s[0].ttft === undefined ? undefined : median(s.map((x) => x.ttft!)),
    });
  });
}

export const e2eSuite: BenchSuite = {
  name: 'e2e',
  async run(ctx) {
    await measure(ctx, 'fixture-shaped (DeepSeek-V3 tiny, 3 layers)', TINY_V3_CONFIG, ctx.quick ? 16 : 64, ctx.quick ? 8 : 32);
    await measureBundled(ctx, ctx.quick ? 16 : 48, ctx.quick ? 16 : 32, ctx.quick ? 1 : 3);
    if (!ctx.quick) {
      const v2 = { ...V2_LITE_CONFIG, num_hidden_layers: 2, vocab_size: 8192, n_routed_experts: 16, max_position_embeddings: 4096 };
      await measure(ctx, 'V2-Lite-shaped, 2 layers, 16 experts, vocab 8k', v2, 64, 8);
    }
  },
};
