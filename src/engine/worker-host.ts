/**
 * The worker side of createWorkerEngine: adapts the Engine's streaming API to calls with proxied
 * callbacks (comlink cannot carry async iterators).
 */
import { createEngine, browserEnvironment, type EngineEnvironment, type WebMoeEngine } from './engine';
import type { ChatMessage, EngineOptions, GenerateOptions, GenerationChunk, GenerationResult, LoadOptions, LoadProgress, ModelInfo, EngineStats } from './types';
import type { WorkerModelRef } from './worker-protocol';
import type { MemoryPlan } from '../model/memory-plan';

type Plain<T> = Omit<T, 'onProgress' | 'onToken' | 'signal'>;

export class WorkerHost {
  private engine: WebMoeEngine | null = null;
  private options: EngineOptions = {};
  /** Abort controllers of the calls in progress, by the client's call id (a load or one generation). */
  private calls = new Map<number, AbortController>();

  /** `environment`: where devices come from (a test host wraps it to reach the device). */
  constructor(private environment: EngineEnvironment = browserEnvironment) {}

  /** Runs call `id` with its own signal (cancel(id) aborts it), forgotten when the call settles. */
  private async track<T>(id: number | undefined, run: (signal: AbortSignal | undefined) => Promise<T>): Promise<T> {
    if (id === undefined) return run(undefined);
    const ac = new AbortController();
    this.calls.set(id, ac); // synchronously: a cancel message right behind this call finds it
    try {
      return await run(ac.signal);
    } finally {
      this.calls.delete(id);
    }
  }

  init(options: Plain<EngineOptions> = {}): void {
    this.options = options;
  }

  private get e(): WebMoeEngine {
    return (this.engine ??= createEngine(this.options, this.environment));
  }

  load(model: WorkerModelRef, options: Plain<LoadOptions> = {}, onProgress?: (p: LoadProgress) => void, callId?: number): Promise<ModelInfo> {
    return this.track(callId, (signal) => this.e.load(model, { ...options, onProgress, signal }));
  }

  plan(model: WorkerModelRef, options: Plain<LoadOptions> = {}, callId?: number): Promise<MemoryPlan> {
    return this.track(callId, (signal) => this.e.plan(model, { ...options, signal }));
  }

  generate(kind: 'generate' | 'chat', input: string | ChatMessage[], options: Plain<GenerateOptions>, onChunk: (c: GenerationChunk) => void, callId?: number): Promise<GenerationResult> {
    return this.track(callId, (signal) => this.runGeneration(kind, input, { ...options, signal }, onChunk));
  }

  private async runGeneration(kind: 'generate' | 'chat', input: string | ChatMessage[], options: Omit<GenerateOptions, 'onToken'>, onChunk: (c: GenerationChunk) => void): Promise<GenerationResult> {
    const it = kind === 'chat' ? this.e.chat(input as ChatMessage[], options) : this.e.generate(input as string, options);
    let last: unknown;
    for (;;) {
      const r = await it.next();
      if (r.done) {
        // The chunks travel on the callback's own port, the result on the engine's: an engine that
        // generates faster than the page reads (the WASM engine) would otherwise resolve the call before
        // the page has its last chunks. The page answers the last callback after all earlier ones.
        await last;
        return r.value;
      }
      last = onChunk(r.value); // not awaited: keeps IPC latency out of the decode loop
    }
  }

  abort(): void { this.engine?.abort(); }
  /** Aborts one call (a load or a generation, running or queued) and no other. */
  cancel(callId: number): void { this.calls.get(callId)?.abort(); }
  stats(): Promise<EngineStats> { return this.e.stats(); }
  resetExpertLoad(): Promise<void> { return this.e.resetExpertLoad(); }
  unload(): Promise<void> { return this.e.unload(); }
}
