/**
 * Real scale (issue 16): DeepSeek-V2-Lite's real config.json (test/data/configs/DeepSeek-V2-Lite), served
 * as a sharded BF16 Hugging Face repository by the synthetic server (bytes made on the fly, no disk), loaded
 * through createNodeEngine with q4 weights, then a few tokens generated. Reports what a user of a real
 * checkpoint feels: load time, checkpoint MB/s through the loader (quantisation included), peak process
 * RSS, GPU bytes planned vs allocated, decode s/token, bytes read per token vs the minimum for the active
 * parameters, dispatches and readbacks per token.
 *
 * After the load and generation (the engine unloaded, so the process is back to its size before the
 * load and the load's peak RSS is its own), the same run measures the source alone (suite `source`'s rows: the server's byte
 * generation, plain HTTP, the checkpoint reader streaming every tensor without loading), so the load's
 * MB/s reads against the source's (`sourceReaderMBps` in the load row).
 *
 * Node only (it serves HTTP and reads process memory); not in --quick (minutes on a software GPU).
 * Options (environment, since the bench has no per-suite flags):
 *   WEBMOE_LARGE_LAYERS  layers of the model (default 27, the real count; fewer for a quicker run)
 *   WEBMOE_LARGE_TOKENS  decoded tokens (default 4)
 *   WEBMOE_LARGE_WEIGHTS weight storage (default q4)
 *   WEBMOE_LARGE_QUANTIZE_AT where q8/q4 experts are quantised at load: gpu, host or auto (default auto)
 *   WEBMOE_LARGE_PROFILE=1 then also: the prompt again warm, and per-kernel GPU times of its prefill and
 *                        decode steps (large-profile.ts; progress lines and `extra`)
 */
import type { BenchContext, BenchSuite } from '../types';
import { minBytesPerToken, ourBytesPerToken } from './e2e';
import { parseConfig } from '../../model/config';
import { byteLevelTokenizerJson } from '../../model/byte-tokenizer';
import type { WeightStorage } from '../../model/assemble';

/** Bytes per weight of q4 storage: 4 bits plus one f16 scale per group of 32. */
const Q4_BYTES = 0.5 + 2 / 32;
const BYTES_PER_WEIGHT: Record<string, number> = { q4: Q4_BYTES, q8: 1 + 2 / 32, f16: 2, bf16: 2, f32: 4 };

function envInt(name: string, dflt: number): number {
  const v = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${v}`);
  return n;
}

async function run(ctx: BenchContext): Promise<void> {
  const proc = (globalThis as { process?: NodeJS.Process }).process;
  // `npm run bench -- --node` loads the suites through Vite's SSR loader (import.meta.env.SSR); the site
  // build drops this branch, so the page bundles neither node:http nor the Node engine.
  if (!import.meta.env.SSR || !proc?.versions?.node) throw new Error('the large suite runs in Node only: npm run bench -- --node --suites large');
  const [{ readFileSync }, { resolve }, { serveSyntheticRepo }, { createNodeEngine }, { measureSourceRates }] = await Promise.all([
    import('node:fs'), import('node:path'), import('../synthetic-server'), import('../../node'), import('./source'),
  ]);

  const layers = envInt('WEBMOE_LARGE_LAYERS', 27);
  const decodeTokens = envInt('WEBMOE_LARGE_TOKENS', 4);
  const weights = (proc.env.WEBMOE_LARGE_WEIGHTS ?? 'q4') as WeightStorage;
  const quantizeAt = (proc.env.WEBMOE_LARGE_QUANTIZE_AT ?? 'auto') as 'gpu' | 'host' | 'auto';
  const real = JSON.parse(readFileSync(resolve(proc.cwd(), 'test/data/configs/DeepSeek-V2-Lite/config.json'), 'utf8')) as Record<string, unknown>;
  const config = { ...real, num_hidden_layers: layers };
  const cfg = parseConfig(config);
  const name = `DeepSeek-V2-Lite config, ${layers}${layers === 27 ? ' (all)' : ` of ${String(real.num_hidden_layers)}`} layers, ${weights}${quantizeAt === 'auto' ? '' : `, quantised on the ${quantizeAt}`}`;

  // RSS: the kernel's peak for the process (maxRSS, KiB) plus sampling, so the load's own peak shows
  // even when an earlier suite in the same process peaked higher.
  let sampledPeak = 0;
  const sample = () => { sampledPeak = Math.max(sampledPeak, proc.memoryUsage.rss()); };
  const timer = setInterval(sample, 50);
  const server = await serveSyntheticRepo(config, { extraFiles: { 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) } });
  const engine = createNodeEngine({ log: (m) => ctx.progress(m), onNotice: () => {} });
  try {
    const rssBefore = proc.memoryUsage.rss();
    sampledPeak = rssBefore;
    ctx.progress(`large: loading ${name} from ${server.url}`);
    let lastReport = 0;
    const cpu0 = proc.cpuUsage();
    const t0 = performance.now();
    const info = await engine.load(server.url, {
      weights, contextLength: 256, quantizeAt,
      onProgress: (p) => {
        sample(); // the 50 ms timer starves while a tensor is converted synchronously
        const now = performance.now();
        if (now - lastReport < 10_000) return;
        lastReport = now;
        const mb = server.stats.bytesSent / 1e6;
        ctx.progress(`large: ${mb.toFixed(0)} MB read, ${(mb / ((now - t0) / 1000)).toFixed(0)} MB/s, rss ${(proc.memoryUsage.rss() / 2 ** 30).toFixed(2)} GiB (${JSON.stringify(p).slice(0, 120)})`);
      },
    });
    const loadMs = performance.now() - t0;
    // CPU time of the whole process (every thread: SwiftShader's too) over the load. On a machine shared
    // with other work the wall time varies by ±30% run to run; the CPU time much less.
    const cpu = proc.cpuUsage(cpu0);
    const loadCpuS = (cpu.user + cpu.system) / 1e6;
    sample();
    const loadPeakRss = sampledPeak;
    const ckptBytes = server.stats.bytesSent;
    const s0 = await engine.stats();
    ctx.progress(`large: loaded in ${(loadMs / 1000).toFixed(1)} s, ${(ckptBytes / 1e6 / (loadMs / 1000)).toFixed(0)} MB/s, peak rss ${(loadPeakRss / 2 ** 30).toFixed(2)} GiB`);

    const prompt = 'The quick brown fox';
    ctx.progress(`large: generating ${decodeTokens} tokens`);
    const profiling = proc.env.WEBMOE_LARGE_PROFILE === '1';
    const pipes = (engine.runner as { be?: { gpu: { pipelines: { compiled: number; compileMs: number } } } }).be?.gpu.pipelines;
    const compiledBefore = pipes?.compiled ?? 0, compileMsBefore = pipes?.compileMs ?? 0;
    const it = engine.generate(prompt, { temperature: 0, maxTokens: decodeTokens, stopAtEos: false });
    let r;
    for (;;) { r = await it.next(); if (r.done) break; }
    const res = r.value;
    const st = await engine.stats();
    sample();
    const profile = profiling ? await (await import('./large-profile')).profileLarge(ctx, engine, { prompt, decodeTokens, cold: res, compiledBefore, compileMsBefore }) : {};
    const cached = prompt.length + decodeTokens / 2;
    const bpw = BYTES_PER_WEIGHT[weights] ?? 4;
    const planBytes = info.memoryPlan?.gpuBytes ?? 0;
    const extra = {
      layers,
      weights,
      loadS: +(loadMs / 1000).toFixed(2),
      checkpointMB: +(ckptBytes / 1e6).toFixed(1),
      loadMBps: +(ckptBytes / 1e6 / (loadMs / 1000)).toFixed(1),
      loadCpuS: +loadCpuS.toFixed(2),
      loadMBPerCpuS: +(ckptBytes / 1e6 / loadCpuS).toFixed(1),
      peakRssGiB: +(loadPeakRss / 2 ** 30).toFixed(3),
      maxRssGiB: +((proc.resourceUsage().maxRSS * 1024) / 2 ** 30).toFixed(3),
      rssBeforeGiB: +(rssBefore / 2 ** 30).toFixed(3),
      planGpuBytes: planBytes,
      allocatedGpuBytes: s0.gpuBytes,
      planVsAllocated: planBytes ? +(s0.gpuBytes / planBytes).toFixed(4) : 0,
      decodeSPerToken: res.decodeTokPerS > 0 ? +(1 / res.decodeTokPerS).toFixed(3) : 0,
      ttftS: +(res.timeToFirstTokenMs / 1000).toFixed(2),
      dispatchesPerToken: st.dispatchesPerToken,
      readbacksPerToken: st.readbacksPerToken,
      ...profile,
    };
    await engine.unload();
    const source = await measureSourceRates(ctx, server, 'large', `${name}: the source alone`);
    Object.assign(extra, { sourceReaderMBps: source.readerMBps, sourceHttpMBps: source.httpMBps, sourceGenerateMBps: source.generateMBps });
    ctx.result({ suite: 'large', name: 'load', variant: weights, shape: name, medianMs: loadMs, bytes: ckptBytes, flops: 0, extra });
    ctx.e2e({
      model: name,
      prefillTokPerS: res.prefillTokPerS,
      decodeTokPerS: res.decodeTokPerS,
      dispatchesPerToken: st.dispatchesPerToken,
      readbacksPerToken: st.readbacksPerToken,
      // Modelled from the config (as the e2e suite does), at the storage's bytes per weight.
      bytesPerToken: ourBytesPerToken(cfg, cached, bpw),
      minBytesPerToken: minBytesPerToken(cfg, cached, bpw),
      timeToFirstTokenMs: res.timeToFirstTokenMs,
    });
    ctx.progress(`large: ${JSON.stringify(extra)}`);
  } finally {
    clearInterval(timer);
    await engine.unload().catch(() => {});
    await server.close();
  }
}

export const largeSuite: BenchSuite = {
  name: 'large',
  order: 95,
  fullOnly: true,
  browserOk: false,
  run,
};
