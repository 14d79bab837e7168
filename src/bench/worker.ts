/// <reference lib="webworker" />
/**
 * The benchmark's Worker entry (started by the benchmark page, src/pages/bench.ts), so the page stays
 * responsive: acquires the GPU here (navigator.gpu exists in dedicated workers), runs ./runner.ts and
 * posts progress and the report back. The page only sends messages; it never touches the GPU.
 */
import { acquireGpu, type Gpu } from '../gpu/device';
import { runBench } from './runner';
import { suites } from './registry';
import type { BenchReport } from './types';

/** `baseUrl`: the page's URL (public/ is served there); the Worker's own location is its script under assets/. */
export type ToWorker = { type: 'run'; quick: boolean; suites?: string[]; peers: boolean; timestamps: boolean; baseUrl?: string } | { type: 'list' };
export type FromWorker =
  | { type: 'progress'; fraction: number; step: string }
  | { type: 'done'; report: BenchReport }
  | { type: 'suites'; names: string[] }
  | { type: 'error'; name: string; message: string };

const post = (m: FromWorker) => (self as unknown as DedicatedWorkerGlobalScope).postMessage(m);
let gpu: Gpu | null = null;

self.onmessage = async (ev: MessageEvent<ToWorker>) => {
  const msg = ev.data;
  if (msg.type === 'list') return post({ type: 'suites', names: suites.map((s) => s.name) });
  try {
    if (!gpu || gpu.lostError) gpu = await acquireGpu({ label: 'webmoe-bench' });
    const report = await runBench(gpu, { quick: msg.quick, suites: msg.suites, peers: msg.peers, timestamps: msg.timestamps, baseUrl: msg.baseUrl, env: 'browser', onProgress: (fraction, step) => post({ type: 'progress', fraction, step }) });
    post({ type: 'done', report });
  } catch (e) {
    const err = e as Error;
    post({ type: 'error', name: err?.name ?? 'Error', message: err?.message ?? String(e) });
  }
};
