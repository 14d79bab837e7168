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

  init(options: Plain<EngineOptions> = {}): void {
    this.options = options;
  }

  private get e(): WebMoeEngine {
    return (this.engine ??= createEngine(this.options));
  }

  load(model: ModelRef, options: Plain<LoadOptions> = {}, onProgress?: (p: LoadProgress) => void): Promise<ModelInfo> {
    return this.e.load(toSource(model), { ...options, onProgress });
  }

  async generate(kind: 'generate' | 'chat', input: string | ChatMessage[], options: Plain<GenerateOptions>, onChunk: (c: GenerationChunk) => void): Promise<GenerationResult> {
    const it = kind === 'chat' ? this.e.chat(input as ChatMessage[], options) : this.e.generate(input as string, options);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
      void onChunk(r.value); // messages stay in order; not awaiting keeps IPC latency out of the decode loop
    }
  }

  abort(): void { this.engine?.abort(); }
  stats(): Promise<EngineStats> { return this.e.stats(); }
  resetExpertLoad(): Promise<void> { return this.e.resetExpertLoad(); }
  unload(): Promise<void> { return this.e.unload(); }
}
