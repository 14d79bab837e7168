/**
 * Expert offload (issue 17): tokens/s, bytes uploaded per token, hit rate, stalls and GPU→CPU round trips
 * per token against the GPU budget (100%, 50%, 25% of the routed experts' bytes, and the minimum that
 * runs), and the prefetch and eviction policies at one budget. Two models: the bundled one (from the
 * site's /models/webmoe-tiny/, or the folder in Node), and DeepSeek-V2-Lite's real config with a few
 * layers as a synthetic BF16 checkpoint (Node only: src/bench/synthetic-server.ts), q4.
 *
 * Node only (it reads local files and serves HTTP). Options (environment):
 *   WEBMOE_OFFLOAD_LARGE_LAYERS  V2-Lite layers (default 3: one dense, two MoE; 0 skips V2-Lite)
 *   WEBMOE_OFFLOAD_TOKENS        greedy tokens per run (default 24 for the bundled model; V2-Lite 4)
 *   WEBMOE_BENCH_GPU_BUDGET_MIB  one more budget to measure, in MiB (npm run bench -- --gpu-budget MiB)
 */
import type { BenchContext, BenchSuite } from '../types';
import { parseConfig } from '../../model/config';
import { byteLevelTokenizerJson } from '../../model/byte-tokenizer';
import type { LoadOptions } from '../../engine/types';
import { GpuBudgetError } from '../../errors';

type Env = Record<string, string | undefined>;
const envInt = (env: Env, name: string, dflt: number) => {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${v}`);
  return n;
};

interface Case { label: string; budget: 'full' | number | 'min'; opts?: LoadOptions }

async function run(ctx: BenchContext): Promise<void> {
  const proc = (globalThis as { process?: NodeJS.Process }).process;
  if (!import.meta.env.SSR || !proc?.versions?.node) throw new Error('the offload suite runs in Node only: npm run bench -- --node --suites offload');
  const [{ readFileSync }, { resolve }, { serveSyntheticRepo }, { createNodeEngine }] = await Promise.all([
    import('node:fs'), import('node:path'), import('../synthetic-server'), import('../../node'),
  ]);
  const env = proc.env as Env;
  const extraBudget = env.WEBMOE_BENCH_GPU_BUDGET_MIB ? Number(env.WEBMOE_BENCH_GPU_BUDGET_MIB) * 2 ** 20 : undefined;

  /** Loads `model` under each case and generates `tokens` greedy tokens; one result per case. */
  const measure = async (modelName: string, model: string, base: LoadOptions, cases: Case[], tokens: number) => {
    const engine = createNodeEngine({ log: () => {}, onNotice: () => {} });
    try {
      const full = await engine.plan!(model, base);
      const routed = full.weights.byRole.routed_experts ?? 0;
      const minimum = await engine.plan!(model, { ...base, gpuMemoryBudget: 1 }).then(() => 0, (e) => (e instanceof GpuBudgetError ? (e.details!.minimumBytes as number) : Promise.reject(e)));
      const all = extraBudget ? [...cases, { label: `${(extraBudget / 2 ** 20).toFixed(0)} MiB (--gpu-budget)`, budget: extraBudget } as Case] : cases;
      for (const c of all) {
        const budget = c.budget === 'full' ? undefined : c.budget === 'min' ? minimum : c.budget <= 1 ? Math.max(minimum, Math.floor(full.gpuBytes - (1 - c.budget) * routed)) : c.budget;
        ctx.progress(`offload: ${modelName}, ${c.label}: loading (budget ${budget === undefined ? 'none' : `${(budget / 2 ** 20).toFixed(1)} MiB`})`);
        const info = await engine.load(model, { ...base, ...c.opts, gpuMemoryBudget: budget });
        // Warm-up (pipeline compilation, the first uploads), then the measured generation.
        for await (const _ of engine.generate('Once upon a time', { temperature: 0, maxTokens: 2, stopAtEos: false })) { /* drain */ }
        const it = engine.generate('The old man said that the', { temperature: 0, maxTokens: tokens, stopAtEos: false });
        let r;
        for (;;) { r = await it.next(); if (r.done) break; }
        const st = await engine.stats();
        const o = st.offload;
        const extra = {
          model: modelName,
          budget: c.label,
          budgetMiB: budget === undefined ? 'none' : +(budget / 2 ** 20).toFixed(1),
          capacity: o?.capacity ?? info.experts,
          experts: info.experts,
          prefetch: o?.prefetch ?? '-',
          eviction: o?.eviction ?? '-',
          source: o?.source ?? '-',
          gpuMiB: +(st.gpuBytes / 2 ** 20).toFixed(1),
          planMiB: +((info.memoryPlan?.gpuBytes ?? 0) / 2 ** 20).toFixed(1),
          prefillTokPerS: +r.value.prefillTokPerS.toFixed(2),
          decodeTokPerS: +r.value.decodeTokPerS.toFixed(2),
          hitRate: o ? +o.hitRate.toFixed(4) : 1,
          uploadedMiBPerToken: o ? +(o.bytesUploadedPerToken / 2 ** 20).toFixed(3) : 0,
          stallsPerToken: o ? +o.stallsPerToken.toFixed(3) : 0,
          roundTripsPerToken: +st.readbacksPerToken.toFixed(3),
        };
        ctx.result({ suite: 'offload', name: modelName, variant: c.label, shape: `${extra.capacity}/${info.experts} experts per layer`, medianMs: r.value.decodeTokPerS > 0 ? 1000 / r.value.decodeTokPerS : 0, bytes: o ? o.bytesUploadedPerToken : 0, flops: 0, extra });
        ctx.progress(`offload: ${JSON.stringify(extra)}`);
        await engine.unload();
      }
    } finally {
      await engine.unload().catch(() => {});
    }
  };

  const budgets: Case[] = [
    { label: '100%', budget: 'full' },
    { label: '50%', budget: 0.5 },
    { label: '25%', budget: 0.25 },
    { label: 'minimum', budget: 'min' },
  ];
  const policies: Case[] = [];
  for (const eviction of ['lru', 'load'] as const) {
    for (const prefetch of ['none', 'previous-token', 'next-gate'] as const) {
      policies.push({ label: `50%, prefetch ${prefetch}, eviction ${eviction}`, budget: 0.5, opts: { expertPrefetch: prefetch, expertEviction: eviction } });
    }
  }
  const tinyTokens = envInt(env, 'WEBMOE_OFFLOAD_TOKENS', 24);
  await measure('webmoe-tiny', resolve(proc.cwd(), 'public/models/webmoe-tiny'), { contextLength: 128 }, [...budgets, ...policies], tinyTokens);

  const layers = envInt(env, 'WEBMOE_OFFLOAD_LARGE_LAYERS', 3);
  if (!layers) return;
  const real = JSON.parse(readFileSync(resolve(proc.cwd(), 'test/data/configs/DeepSeek-V2-Lite/config.json'), 'utf8')) as Record<string, unknown>;
  const config = { ...real, num_hidden_layers: layers };
  parseConfig(config);
  const server = await serveSyntheticRepo(config, { extraFiles: { 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) } });
  try {
    const large: Case[] = [...budgets, { label: '25%, prefetch next-gate', budget: 0.25, opts: { expertPrefetch: 'next-gate' } }];
    await measure(`DeepSeek-V2-Lite config, ${layers} layers, q4`, server.url, { weights: 'q4', contextLength: 64 }, large, Math.min(tinyTokens, 4));
  } finally {
    await server.close();
  }
}

export const offloadSuite: BenchSuite = {
  name: 'offload',
  order: 96,
  fullOnly: true,
  browserOk: false,
  run,
};
