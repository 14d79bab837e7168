/**
 * The worker side of createWorkerEngine: adapts the Engine's streaming API to calls with proxied
 * callbacks (comlink cannot carry async iterators).
 */
import { createEngine } from './create';
import type { WebMoeEngine } from './engine';
import type { ChatMessage, EngineOptions, GenerateOptions, GenerationChunk, GenerationResult, LoadOptions, LoadProgress, ModelInfo, EngineStats } from './types';
import type { ModelRef } from './worker-protocol';
import { fileListModel, directoryHandleModel } from '../loader/model-source';
import type { ModelSource } from '../loader/model-source';

type Plain<T> = Omit<T, 'onProgress' | 'onToken' | 'signal'>;

function toSource(ref: ModelRef): string | ModelSource {
  if (typeof ref === 'string') return ref;
  if (Array.isArray(ref)) return fileListModel(ref);
  return directoryHandleModel(ref);
}

export class WorkerHost {
  private engine: WebMoeEngine | null = null;
  private options: EngineOptions = {};
  /** Abort controllers of the calls in progress, by the client's call id (a load or one generation). */
  private calls = new Map<number, AbortController>();

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
    return (this.engine ??= createEngine(this.options));
  }

  load(model: ModelRef, options: Plain<LoadOptions> = {}, onProgress?: (p: LoadProgress) => void, callId?: number): Promise<ModelInfo> {
    return this.track(callId, (signal) => this.e.load(toSource(model), { ...options, onProgress, signal }));
  }

  generate(kind: 'generate' | 'chat', input: string | ChatMessage[], options: Plain<GenerateOptions>, onChunk: (c: GenerationChunk) => void, callId?: number): Promise<GenerationResult> {
    return this.track(callId, (signal) => this.runGeneration(kind, input, { ...options, signal }, onChunk));
  }

  private async runGeneration(kind: 'generate' | 'chat', input: string | ChatMessage[], options: Omit<GenerateOptions, 'onToken'>, onChunk: (c: GenerationChunk) => void): Promise<GenerationResult> {
    const it = kind === 'chat' ? this.e.chat(input as ChatMessage[], options) : this.e.generate(input as string, options);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
      void onChunk(r.value); // messages stay in order; not awaiting keeps IPC latency out of the decode loop
    }
  }

  abort(): void { this.engine?.abort(); }
  /** Aborts one call (a load or a generation, running or queued) and no other. */
  cancel(callId: number): void { this.calls.get(callId)?.abort(); }
  /**
   * Test-only: destroys the current model's GPU device, as a driver reset would, so tests can check
   * that device loss reaches the client as DEVICE_LOST. Not part of the public API.
   */
  __debugLoseDevice(): boolean {
    const runner = this.engine?.info ? (this.engine.runner as unknown as { be?: { gpu?: { device: GPUDevice } } }) : null;
    const device = runner?.be?.gpu?.device;
    device?.destroy();
    return !!device;
  }
  stats(): Promise<EngineStats> { return this.e.stats(); }
  resetExpertLoad(): Promise<void> { return this.e.resetExpertLoad(); }
  unload(): Promise<void> { return this.e.unload(); }
}
