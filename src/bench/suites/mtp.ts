/**
 * Multi-Token Prediction as a self-speculative draft (issue #18, docs/mtp.md): decode tokens/s of the
 * bundled model (public/models/webmoe-tiny, trained weights with its MTP layer) with speculation off and
 * with 'mtp', in the same run and alternating (rounds, median per mode), greedy; their ratio, the
 * acceptance rate and tokens per main-model forward the engine measured, and the bytes read per generated
 * token (weights each step reads once, over the tokens the step yields).
 */
import type { BenchContext, BenchSuite } from '../types';
import { createEngine, type WebMoeEngine } from '../../engine/engine';
import { memoryModel, urlModel } from '../../loader/model-source';
import type { ModelConfig } from '../../model/config';
import { minBytesPerToken } from './e2e';

/**
 * Bytes one speculative step reads, per generated token: the main model's weights for two rows (the
 * routed experts of both rows: 2K distinct of E at most), the MTP layer (one MoE decoder block, eh_proj,
 * its norms; the head is the main model's, read again for the MTP rows), and the two caches.
 */
export function speculativeBytesPerToken(cfg: ModelConfig, cachedTokens: number, bytesPerWeight: number, tokensPerForward: number): number {
  const D = cfg.hiddenSize, E = cfg.nRoutedExperts, K = cfg.numExpertsPerTok;
  const expert = 3 * D * cfg.moeIntermediateSize;
  const moeLayers = Array.from({ length: cfg.numLayers }, (_, i) => i).filter((i) => cfg.nRoutedExperts > 0 && i >= cfg.firstKDenseReplace && i % cfg.moeLayerFreq === 0).length;
  const twoRowExtraExperts = moeLayers * (Math.min(E, 2 * K) - K) * expert;
  const main = minBytesPerToken(cfg, cachedTokens, bytesPerWeight) + twoRowExtraExperts * bytesPerWeight;
  const attn = D * (cfg.qLoraRank ?? 0) + (cfg.qLoraRank ?? D) * cfg.numHeads * (cfg.qkNopeHeadDim + cfg.qkRopeHeadDim)
    + D * (cfg.kvLoraRank + cfg.qkRopeHeadDim) + cfg.kvLoraRank * cfg.numHeads * (cfg.qkNopeHeadDim + cfg.vHeadDim) + cfg.numHeads * cfg.vHeadDim * D;
  const mtpBlock = 2 * D * D + attn + E * D + Math.min(E, 2 * K) * expert + cfg.nSharedExperts * expert;
  const mtp = (mtpBlock + cfg.vocabSize * D) * bytesPerWeight + cachedTokens * (cfg.kvLoraRank + cfg.qkRopeHeadDim) * 4;
  return (main + mtp) / tokensPerForward;
}

async function run(ctx: BenchContext) {
  if (!ctx.baseUrl) { ctx.error('mtp: the bundled model needs the URL public/ is served at (ctx.baseUrl); not measured'); return; }
  const url = new URL('models/webmoe-tiny/', ctx.baseUrl).href;
  const engine: WebMoeEngine = createEngine({}, { acquire: async () => ctx.gpu, resolve: () => memoryModel({}) });
  const rounds = ctx.quick ? 1 : 3, decodeTokens = ctx.quick ? 24 : 64;
  const prompt = 'The jury said it did find that the city executive committee, which had over-all charge of the election, ';
  try {
    ctx.progress('mtp: loading the bundled model (f32)');
    await engine.load(urlModel(url, { cache: false }), { weights: 'f32', contextLength: 256 });
    if (!engine.info!.mtpLayers) { ctx.error('mtp: the bundled model has no MTP layer'); return; }
    const cfg = engine.runner.cfg;
    const modes = ['off', 'mtp'] as const;
    for (const m of modes) for await (const _ of engine.generate(prompt, { temperature: 0, maxTokens: 4, stopAtEos: false, speculative: m })) void _;
    const samples = { off: [] as number[], mtp: [] as number[] };
    let spec = { acceptanceRate: 0, tokensPerForward: 1, drafted: 0, accepted: 0 };
    const texts: Record<string, number[]> = {};
    const dispatches = { off: 0, mtp: 0 }, readbacks = { off: 0, mtp: 0 };
    for (let round = 0; round < rounds; round++) {
      for (const m of modes) {
        ctx.progress(`mtp: round ${round + 1}/${rounds}, speculative ${m}: ${decodeTokens} greedy tokens`);
        const it = engine.generate(prompt, { temperature: 0, maxTokens: decodeTokens, stopAtEos: false, speculative: m });
        let r;
        for (;;) { r = await it.next(); if (r.done) break; }
        samples[m].push(r.value.decodeTokPerS);
        texts[m] = r.value.tokens;
        const st = await engine.stats();
        dispatches[m] = st.dispatchesPerToken;
        readbacks[m] = st.readbacksPerToken;
        if (m === 'mtp') spec = r.value.speculation!;
      }
    }
    if (JSON.stringify(texts.off) !== JSON.stringify(texts.mtp)) ctx.error('mtp: speculative greedy tokens differ from plain decoding');
    const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
    const off = median(samples.off), on = median(samples.mtp);
    const cached = 24 + decodeTokens / 2;
    ctx.e2e({ model: `webmoe-tiny, speculative off${rounds > 1 ? ` (median of ${rounds})` : ''}`, prefillTokPerS: 0, decodeTokPerS: off, dispatchesPerToken: dispatches.off, readbacksPerToken: readbacks.off, bytesPerToken: minBytesPerToken(cfg, cached, 4), minBytesPerToken: minBytesPerToken(cfg, cached, 4) });
    ctx.e2e({ model: `webmoe-tiny, speculative mtp${rounds > 1 ? ` (median of ${rounds})` : ''}`, prefillTokPerS: 0, decodeTokPerS: on, dispatchesPerToken: dispatches.mtp, readbacksPerToken: readbacks.mtp, bytesPerToken: speculativeBytesPerToken(cfg, cached, 4, spec.tokensPerForward), minBytesPerToken: minBytesPerToken(cfg, cached, 4) });
    ctx.result({
      suite: 'mtp', name: 'self-speculative decode (bundled model, greedy, f32)', variant: 'mtp vs off', shape: `${decodeTokens} tokens`,
      medianMs: 1000 / on, bytes: speculativeBytesPerToken(cfg, cached, 4, spec.tokensPerForward), flops: 0,
      extra: {
        decodeTokPerS_off: +off.toFixed(2), decodeTokPerS_mtp: +on.toFixed(2), speedRatio: +(on / off).toFixed(3),
        acceptanceRate: +spec.acceptanceRate.toFixed(3), tokensPerForward: +spec.tokensPerForward.toFixed(3), drafted: spec.drafted, accepted: spec.accepted,
        bytesPerToken_off: minBytesPerToken(cfg, cached, 4), bytesPerToken_mtp: Math.round(speculativeBytesPerToken(cfg, cached, 4, spec.tokensPerForward)),
      },
    });
  } finally {
    await engine.unload();
  }
}

export const mtpSuite: BenchSuite = { name: 'mtp', order: 90, run };
