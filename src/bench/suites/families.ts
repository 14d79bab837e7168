/**
 * A decode row per MoE family at its real widths (issue 22): the published config.json of one model per
 * family (test/data/configs: Qwen1.5-MoE-A2.7B, Qwen3-30B-A3B, OLMoE-1B-7B-0924, Mixtral-8x7B-v0.1,
 * granite-3.1-3b-a800m, gpt-oss-20b: its experts MXFP4 as released, whatever the storage) with a few layers, served as a sharded BF16 checkpoint by the synthetic server,
 * loaded through createNodeEngine (q4 by default) and decoded greedily. Real hidden, expert, head and
 * vocabulary widths; only the layer count is cut, so the per-layer cost and the head's cost are those of
 * the real model (decode time of the full model ≈ per-layer time × layers + head).
 *
 * Node only (it serves HTTP); not in --quick. Options (environment):
 *   WEBMOE_FAMILIES_LAYERS   layers per model (default 1)
 *   WEBMOE_FAMILIES_TOKENS   decoded tokens (default 4)
 *   WEBMOE_FAMILIES_WEIGHTS  weight storage (default q4)
 *   WEBMOE_FAMILIES          comma-separated folders of test/data/configs to run (default: all six)
 */
import type { BenchContext, BenchSuite } from '../types';
import { minBytesPerToken, ourBytesPerToken } from './e2e';
import { familyLabel, parseConfig } from '../../model/config';
import { byteLevelTokenizerJson } from '../../model/byte-tokenizer';
import type { WeightStorage } from '../../model/assemble';

export const FAMILY_CONFIGS = ['Qwen1.5-MoE-A2.7B', 'Qwen3-30B-A3B', 'OLMoE-1B-7B-0924', 'Mixtral-8x7B-v0.1', 'granite-3.1-3b-a800m', 'gpt-oss-20b'];
const BYTES_PER_WEIGHT: Record<string, number> = { q4: 0.5 + 2 / 32, q8: 1 + 2 / 32, f16: 2, bf16: 2, f32: 4 };

async function run(ctx: BenchContext): Promise<void> {
  const proc = (globalThis as { process?: NodeJS.Process }).process;
  if (!import.meta.env.SSR || !proc?.versions?.node) throw new Error('the families suite runs in Node only: npm run bench -- --node --suites families');
  const [{ readFileSync }, { resolve }, { serveSyntheticRepo }, { createNodeEngine }] = await Promise.all([
    import('node:fs'), import('node:path'), import('../synthetic-server'), import('../../node'),
  ]);
  const env = (k: string) => proc.env[k];
  const int = (k: string, d: number) => {
    const v = env(k);
    if (v === undefined || v === '') return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${k} must be a positive integer, got ${v}`);
    return n;
  };
  const layers = int('WEBMOE_FAMILIES_LAYERS', 1);
  const decodeTokens = int('WEBMOE_FAMILIES_TOKENS', 4);
  const weights = (env('WEBMOE_FAMILIES_WEIGHTS') ?? 'q4') as WeightStorage;
  const models = env('WEBMOE_FAMILIES')?.split(',').filter(Boolean) ?? FAMILY_CONFIGS;

  for (const model of models) {
    const real = JSON.parse(readFileSync(resolve(proc.cwd(), `test/data/configs/${model}/config.json`), 'utf8')) as Record<string, unknown>;
    // (GPT-OSS's layer_types has one entry per layer: the first `layers` go with the cut model.)
    const config = { ...real, num_hidden_layers: layers, ...(Array.isArray(real.layer_types) ? { layer_types: real.layer_types.slice(0, layers) } : {}) };
    const cfg = parseConfig(config);
    const name = `${familyLabel(cfg)}: ${model} config, ${layers} of ${String(real.num_hidden_layers)} layers, ${weights}`;
    // BF16 shards whatever torch_dtype says (OLMoE's is float32): the synthetic server makes BF16 bytes fastest, and q4 storage reads them the same.
    const server = await serveSyntheticRepo(config, { dtype: 'BF16', extraFiles: { 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) } });
    const engine = createNodeEngine({ log: (m) => ctx.progress(m), onNotice: () => {} });
    try {
      ctx.progress(`families: loading ${name}`);
      const t0 = performance.now();
      const info = await engine.load(server.url, { weights, contextLength: 64 });
      const loadMs = performance.now() - t0;
      const prompt = 'The quick brown fox';
      // Warm-up: compiles the pipelines the steps use.
      for await (const _ of engine.generate(prompt.slice(0, 4), { temperature: 0, maxTokens: 2, stopAtEos: false })) void _;
      const it = engine.generate(prompt, { temperature: 0, maxTokens: decodeTokens, stopAtEos: false });
      let r;
      for (;;) { r = await it.next(); if (r.done) break; }
      const res = r.value;
      const st = await engine.stats();
      const cached = prompt.length + decodeTokens / 2;
      const bpw = BYTES_PER_WEIGHT[weights] ?? 4;
      ctx.result({
        suite: 'families', name: 'decode', variant: weights, shape: name, medianMs: res.decodeTokPerS > 0 ? 1000 / res.decodeTokPerS : 0,
        bytes: ourBytesPerToken(cfg, cached, bpw), flops: 0,
        extra: { family: familyLabel(cfg), modelType: cfg.modelType, layers, loadS: +(loadMs / 1000).toFixed(2), planGpuBytes: info.memoryPlan?.gpuBytes ?? 0, allocatedGpuBytes: st.gpuBytes, dispatchesPerToken: st.dispatchesPerToken },
      });
      ctx.e2e({
        model: name, prefillTokPerS: res.prefillTokPerS, decodeTokPerS: res.decodeTokPerS,
        dispatchesPerToken: st.dispatchesPerToken, readbacksPerToken: st.readbacksPerToken,
        bytesPerToken: ourBytesPerToken(cfg, cached, bpw), minBytesPerToken: minBytesPerToken(cfg, cached, bpw),
        timeToFirstTokenMs: res.timeToFirstTokenMs,
      });
      ctx.progress(`families: ${name}: decode ${res.decodeTokPerS.toFixed(2)} tok/s, load ${(loadMs / 1000).toFixed(1)} s`);
    } finally {
      await engine.unload().catch(() => {});
      await server.close();
    }
  }
}

export const familiesSuite: BenchSuite = {
  name: 'families',
  order: 94,
  fullOnly: true,
  browserOk: false,
  run,
};
