/**
 * The checkpoint source on its own (issue 16: loading must be bound by the source, not by our code):
 * MB/s of the synthetic DeepSeek-V2-Lite repository that the `large` suite loads, measured three ways
 * without loading anything, so the load's MB/s can be read against what the source gives:
 *   generate  the synthetic server's byte generation alone (SyntheticFile.read, copies, in the server's
 *             chunks; the server runs in this process, so this is CPU the load shares with its source;
 *             the server itself sends matrices as views of its tables, cheaper still)
 *   http      every shard fetched whole with plain fetch() from the synthetic server, the body discarded
 *             (the HTTP source: server generation + socket + Node's fetch)
 *   reader    every tensor streamed through the checkpoint reader (openCheckpoint + urlModel, the HTTP
 *             Range path the engine uses, countNonFinite included, borrowed buffers as buildWeights
 *             asks) to a callback that does nothing
 * The large suite runs the same rows before its load (same run, same machine conditions).
 *
 * Node only. Options (environment): WEBMOE_LARGE_LAYERS (default 3 here: the rows' MB/s does not depend
 * on the layer count, only their duration does).
 */
import type { BenchContext, BenchSuite } from '../types';
import type { SyntheticServer } from '../synthetic-server';

export interface SourceRates { generateMBps: number; httpMBps: number; readerMBps: number }

/** The three source rows for `server`'s repository (reported through ctx.result, suite `suite`). */
export async function measureSourceRates(ctx: BenchContext, server: SyntheticServer, suite: string, shape: string): Promise<SourceRates> {
  const [{ openCheckpoint }, { urlModel }] = await Promise.all([import('../../model/checkpoint'), import('../../loader/model-source')]);
  const repo = server.repo;
  const proc = (globalThis as { process?: NodeJS.Process }).process!;
  let cpu0 = proc.cpuUsage();
  // MB/s of wall time, and MB per CPU-second of the process (steadier on a shared machine).
  const row = (name: string, bytes: number, ms: number, note: string) => {
    const c = proc.cpuUsage(cpu0), cpuS = (c.user + c.system) / 1e6;
    const MBps = +(bytes / 1e6 / (ms / 1000)).toFixed(1);
    const MBPerCpuS = +(bytes / 1e6 / cpuS).toFixed(1);
    ctx.result({ suite, name, variant: 'source', shape, medianMs: ms, bytes, flops: 0, extra: { MBps, MBPerCpuS, cpuS: +cpuS.toFixed(2), bytesMB: +(bytes / 1e6).toFixed(1), note } });
    ctx.progress(`${suite}: ${name} ${MBps} MB/s, ${MBPerCpuS} MB per CPU-second (${(bytes / 1e6).toFixed(0)} MB in ${(ms / 1000).toFixed(2)} s)`);
    return MBps;
  };

  // Generation alone: the shards' bytes in the server's own chunk size.
  let t0 = performance.now(), bytes = 0;
  cpu0 = proc.cpuUsage();
  for (const s of repo.shards) {
    const f = repo.files.get(s)!;
    for (let pos = 0; pos < f.size; ) {
      const n = Math.min(1 << 20, f.size - pos);
      bytes += f.read(pos, n).length;
      pos += n;
    }
  }
  const generateMBps = row('generate', bytes, performance.now() - t0, 'SyntheticFile.read, 1 MiB chunks, every shard');

  // Plain HTTP: whole shards, bodies discarded.
  t0 = performance.now(); bytes = 0; cpu0 = proc.cpuUsage();
  for (const s of repo.shards) {
    const res = await fetch(server.url + s);
    if (!res.ok || !res.body) throw new Error(`${s}: HTTP ${res.status}`);
    const reader = res.body.getReader();
    for (;;) { const { done, value } = await reader.read(); if (done) break; bytes += value.length; }
  }
  const httpMBps = row('http', bytes, performance.now() - t0, 'fetch() of every shard, body read and discarded');

  // The checkpoint reader: every tensor streamed (HTTP Range requests), nothing loaded.
  t0 = performance.now(); bytes = 0; cpu0 = proc.cpuUsage();
  const ck = await openCheckpoint(urlModel(server.url, { cache: false }), { validateTokenizer: false });
  try {
    // As buildWeights streams: borrowed bytes (read buffers reused), one chunk read ahead.
    await ck.stream(null, (_name, t) => { bytes += t.data.length; }, { borrow: true });
  } finally {
    await ck.close();
  }
  const readerMBps = row('reader', bytes, performance.now() - t0, 'openCheckpoint(urlModel) + stream(all tensors) to a no-op');
  return { generateMBps, httpMBps, readerMBps };
}

async function run(ctx: BenchContext): Promise<void> {
  const proc = (globalThis as { process?: NodeJS.Process }).process;
  if (!import.meta.env.SSR || !proc?.versions?.node) throw new Error('the source suite runs in Node only: npm run bench -- --node --suites source');
  const [{ readFileSync }, { resolve }, { serveSyntheticRepo }] = await Promise.all([import('node:fs'), import('node:path'), import('../synthetic-server')]);
  const v = proc.env.WEBMOE_LARGE_LAYERS;
  const layers = v ? Number(v) : 3;
  if (!Number.isInteger(layers) || layers < 1) throw new Error(`WEBMOE_LARGE_LAYERS must be a positive integer, got ${v}`);
  const real = JSON.parse(readFileSync(resolve(proc.cwd(), 'test/data/configs/DeepSeek-V2-Lite/config.json'), 'utf8')) as Record<string, unknown>;
  const server = await serveSyntheticRepo({ ...real, num_hidden_layers: layers });
  try {
    await measureSourceRates(ctx, server, 'source', `DeepSeek-V2-Lite config, ${layers} layers, BF16 shards`);
  } finally {
    await server.close();
  }
}

export const sourceSuite: BenchSuite = {
  name: 'source',
  order: 94,
  fullOnly: true,
  browserOk: false,
  run,
};
