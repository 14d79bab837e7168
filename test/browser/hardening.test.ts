// Hardening of the worker engine in Chromium: aborts (load and generation, each call on its own), device
// loss inside the worker (through the test worker's loseDevice hook: test/browser/debug-worker.ts), and a crash
// (terminate) with several calls pending, including a generation in flight.
import { describe, it, expect, afterAll } from 'vitest';
import * as Comlink from 'comlink';
import { createWorkerEngine, type WorkerEngine } from '../../src/engine/worker-client';
import type { DebugWorkerHost } from './debug-worker';
import type { GenerateOptions, GenerationChunk, GenerationResult } from '../../src/engine/types';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';

async function fixtureFiles(): Promise<File[]> {
  const base = '/test/fixtures/deepseek-v3-tiny/';
  const get = async (n: string) => new File([await (await fetch(base + n)).arrayBuffer()], n);
  return [await get('config.json'), await get('model.safetensors'), new File([JSON.stringify(byteLevelTokenizerJson())], 'tokenizer.json')];
}

const counts = { faultsInjected: 0, tokensGenerated: 0 };
afterAll(() => console.log(`worker hardening counts: ${JSON.stringify(counts)}`));

async function collect(it: AsyncGenerator<GenerationChunk, GenerationResult>): Promise<GenerationResult> {
  for (;;) {
    const r = await it.next();
    if (r.done) { counts.tokensGenerated += r.value.tokens.length; return r.value; }
  }
}

async function rejectionOf(p: Promise<unknown>): Promise<{ code?: string; name: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; name: string; message: string };
  }
  throw new Error('expected a rejection');
}

const newWorker = () => new Worker(new URL('./debug-worker.ts', import.meta.url), { type: 'module', name: 'webmoe-test' });
const greedy: GenerateOptions = { temperature: 0, maxTokens: 6, stopAtEos: false };
const load = { weights: 'f32' as const, contextLength: 64 };

describe('worker engine hardening', () => {
  const worker = newWorker();
  const engine: WorkerEngine = createWorkerEngine({ worker });
  // A second comlink endpoint on the same worker, for the test-only hook.
  const debug = Comlink.wrap<DebugWorkerHost>(worker);
  let files: File[];
  let ref: number[];

  it('aborts reach only the call they belong to (load, queued and running generations)', async () => {
    files = await fixtureFiles();
    // A load aborted before it starts, and one aborted right after it is sent: ABORTED, nothing loaded.
    expect((await rejectionOf(engine.load(files, { ...load, signal: AbortSignal.abort() }))).code).toBe('ABORTED');
    let ac = new AbortController();
    let p = engine.load(files, { ...load, signal: ac.signal });
    ac.abort();
    expect((await rejectionOf(p)).code).toBe('ABORTED');
    expect((await engine.stats()).loaded).toBe(false);
    counts.faultsInjected += 2;

    await engine.load(files, load);
    ref = (await collect(engine.generate('H', greedy))).tokens;
    expect(ref).toHaveLength(6);

    // An aborted load keeps the loaded model.
    ac = new AbortController();
    p = engine.load(files, { ...load, signal: ac.signal });
    ac.abort();
    expect((await rejectionOf(p)).code).toBe('ABORTED');
    expect((await collect(engine.generate('H', greedy))).tokens).toEqual(ref);
    counts.faultsInjected++;

    // Aborting a queued generation (before and while it waits) stops it alone; the running one finishes.
    const queuedAc = new AbortController();
    const running = collect(engine.generate('H', { ...greedy, onToken: (c) => { if (c.index === 0) queuedAc.abort(); } }));
    const queued = collect(engine.generate('H', { ...greedy, signal: queuedAc.signal }));
    const preAborted = collect(engine.generate('H', { ...greedy, signal: AbortSignal.abort() }));
    expect((await running).tokens).toEqual(ref);
    expect(await queued).toMatchObject({ finishReason: 'aborted', tokens: [] });
    expect(await preAborted).toMatchObject({ finishReason: 'aborted', tokens: [] });
    counts.faultsInjected += 2;

    // Aborting a running generation in the decode: the tokens so far, then the engine gives the same tokens again.
    ac = new AbortController();
    const cut = await collect(engine.generate('H', { ...greedy, maxTokens: 50, signal: ac.signal, onToken: (c) => { if (c.index === 1) ac.abort(); } }));
    expect(cut.finishReason).toBe('aborted');
    expect(cut.tokens.length).toBeGreaterThanOrEqual(2); // the abort crosses to the worker while it decodes on
    expect(cut.tokens.slice(0, 6)).toEqual(ref.slice(0, Math.min(6, cut.tokens.length)));
    expect((await collect(engine.generate('H', greedy))).tokens).toEqual(ref);
    counts.faultsInjected++;
  });

  it('device loss inside the worker reaches the client as DEVICE_LOST, and a new load works on a new device', async () => {
    const streamed: number[] = [];
    const lost = await rejectionOf(collect(engine.generate('H', { ...greedy, maxTokens: 60, onToken: (c) => { streamed.push(c.token); if (c.index === 2) void debug.loseDevice(); } })));
    expect(lost).toMatchObject({ code: 'DEVICE_LOST', name: 'DeviceLostError' });
    expect(streamed.length).toBeGreaterThanOrEqual(3);
    expect(streamed.slice(0, 6)).toEqual(ref.slice(0, Math.min(6, streamed.length)));
    counts.faultsInjected++;
    expect((await engine.stats()).loaded).toBe(false);
    expect(await rejectionOf(collect(engine.generate('H', greedy)))).toMatchObject({ code: 'DEVICE_LOST' });
    await engine.load(files, load);
    expect((await collect(engine.generate('H', greedy))).tokens).toEqual(ref);
  });

  it('terminating the worker rejects every pending call, including a generation in flight, with WORKER_CRASHED', async () => {
    const it = engine.generate('H', { ...greedy, maxTokens: 200 });
    expect((await it.next()).done).toBe(false); // in flight: its first token has arrived
    const next = it.next();
    const queued = engine.generate('H', greedy).next();
    const stats = engine.stats();
    const reload = engine.load(files, load);
    const reset = engine.resetExpertLoad();
    engine.terminate();
    counts.faultsInjected++;
    for (const p of [next, queued, stats, reload, reset]) expect(await rejectionOf(p)).toMatchObject({ code: 'WORKER_CRASHED', name: 'WorkerCrashedError' });
    // Calls after the crash fail the same way, at once.
    expect(await rejectionOf(engine.stats())).toMatchObject({ code: 'WORKER_CRASHED' });
    expect(await rejectionOf(engine.generate('H', greedy).next())).toMatchObject({ code: 'WORKER_CRASHED' });

    // A new worker engine works.
    const again = createWorkerEngine();
    await again.load(files, load);
    expect((await collect(again.generate('H', { ...greedy, maxTokens: 2 }))).tokens).toEqual(ref.slice(0, 2));
    again.terminate();
  });
});
