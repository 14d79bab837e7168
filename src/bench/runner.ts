import type { Gpu } from '../gpu/device';
import { RunContext } from './context';
import { setYieldingWaits } from '../gpu/wait';
import { measureCeilings } from './ceilings';
import { runnableSuites, suites as registeredSuites } from './registry';
import type { BenchReport, BenchSuite } from './types';

export interface RunOptions {
  quick?: boolean;
  /** Suite names to run (all when empty). */
  suites?: string[];
  /** Run the onnxruntime-web peers (default: true in the browser). */
  peers?: boolean;
  env?: 'browser' | 'node';
  /** Time with GPU timestamp queries when available (see ContextOptions.timestamps). */
  timestamps?: boolean;
  /** Node: dawn.node's own spinning wait for the GPU instead of the yielding one (src/gpu/wait.ts), for the run. */
  busyWait?: boolean;
  /** Overall progress in [0, 1] and the current step. */
  onProgress?: (fraction: number, step: string) => void;
  /** Where public/ is served (ContextOptions.baseUrl). */
  baseUrl?: string;
  /** The suite list (defaults to every suite in src/bench/suites/). */
  registry?: BenchSuite[];
}

/** Runs the device ceilings, then every selected suite; a failing suite is recorded in `errors` and the run goes on. */
export async function runBench(gpu: Gpu, o: RunOptions = {}): Promise<BenchReport> {
  const was = setYieldingWaits(!o.busyWait);
  try {
    return await runSuites(gpu, o);
  } finally {
    setYieldingWaits(was);
  }
}

async function runSuites(gpu: Gpu, o: RunOptions): Promise<BenchReport> {
  const quick = !!o.quick;
  const env = o.env ?? (typeof window === 'undefined' && typeof (globalThis as any).WorkerGlobalScope === 'undefined' ? 'node' : 'browser');
  const selected = runnableSuites(o.registry ?? registeredSuites, { suites: o.suites, env, quick });
  const t0 = Date.now();
  const total = selected.length + 1;
  let done = 0;
  let step = 'device ceilings';
  const report = (msg?: string) => o.onProgress?.(Math.min(1, done / total), msg ?? step);
  const ctx = new RunContext(gpu, { quick, env, peers: o.peers ?? env === 'browser', timestamps: o.timestamps, baseUrl: o.baseUrl, onProgress: (m) => report(m) });
  const errors = ctx.errors;

  const suiteMs: Record<string, number> = {};
  let ts = Date.now();
  report('device ceilings');
  const c = await measureCeilings(gpu, ctx.time.bind(ctx), quick, (m) => report(`ceilings: ${m}`));
  ctx.ceilings = { fmaGflops: c.fmaGflops, copyGBps: c.copyGBps, dispatchOverheadUs: c.dispatchOverheadUs, submitRoundTripMs: c.submitRoundTripMs };
  ctx.result({ suite: 'ceilings', name: 'fma-peak', variant: 'f32 vec4 FMA', shape: `${c.fma.invocations} inv × ${c.fma.iters} it`, medianMs: c.fma.ms, bytes: c.fma.invocations * 16, flops: c.fma.flops });
  ctx.result({ suite: 'ceilings', name: 'copy', variant: 'vec4 copy', shape: `${(c.copy.bytes / 2 / 2 ** 20).toFixed(0)} MiB`, medianMs: c.copy.ms, bytes: c.copy.bytes, flops: 0 });
  done++;
  suiteMs.ceilings = Date.now() - ts;

  for (const suite of selected) {
    if (gpu.lostError) {
      errors.push({ suite: suite.name, message: `skipped: ${gpu.lostError.message}` });
      done++;
      continue;
    }
    step = suite.name;
    ctx.suite = suite.name;
    report(`${suite.name}: starting`);
    ts = Date.now();
    try {
      await suite.run(ctx);
    } catch (e) {
      const err = e as Error;
      errors.push({ suite: suite.name, message: `${err?.name ?? 'Error'}: ${err?.message ?? String(e)}`.slice(0, 4000) });
      report(`${suite.name}: failed (${err?.message ?? e})`);
    } finally {
      gpu.temps.releaseAll();
      suiteMs[suite.name] = Date.now() - ts;
    }
    ctx.suite = '';
    done++;
  }
  report('done');

  const a = gpu.adapter;
  return {
    version: 1,
    timestamp: new Date().toISOString(),
    quick,
    userAgent: typeof navigator !== 'undefined' ? navigator.userAgent : `node ${typeof process !== 'undefined' ? process.version : ''}`,
    env,
    timing: ctx.timestamps ? 'timestamp' : 'wall',
    device: { vendor: a.vendor, architecture: a.architecture, device: a.device, description: a.description, isFallbackAdapter: a.isFallbackAdapter, features: [...a.features], limits: { ...a.limits } },
    ceilings: { fmaGflops: c.fmaGflops, copyGBps: c.copyGBps, dispatchOverheadUs: c.dispatchOverheadUs, submitRoundTripMs: c.submitRoundTripMs },
    results: ctx.results,
    peers: ctx.peerResults,
    peerChecks: ctx.peerChecks,
    e2e: ctx.e2eResults,
    errors,
    suites: selected.map((s) => s.name),
    suiteMs,
    durationMs: Date.now() - t0,
  };
}
