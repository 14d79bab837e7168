/**
 * createWorkerEngine: the Engine interface backed by a module Worker running the in-thread engine.
 * If the worker dies (terminate(), a crash), every pending call rejects with a typed WORKER_CRASHED
 * error and a new engine can be created.
 */
import * as Comlink from 'comlink';
import type { WorkerHost } from './worker-host';
import { asFileArray, installErrorTransfer, isWorkerModelRef } from './worker-protocol';
import { pullChunks } from './stream';
import { modelIdOf, openAIApi } from './openai';
import type { ChatMessage, Engine, EngineOptions, EngineStats, GenerateOptions, GenerationChunk, GenerationResult } from './types';
import { ArgumentError, AbortError, WorkerCrashedError } from '../errors';
import { askPersistenceForLoad } from './persist';

export interface WorkerEngineOptions extends EngineOptions {
  /** A Worker running webmoe's worker entry (default: a new module Worker). */
  worker?: Worker;
}

/** The same Engine as createEngine's, in a worker; plus terminate(). */
export interface WorkerEngine extends Engine {
  /** Stops the worker; pending calls reject with WORKER_CRASHED. */
  terminate(): void;
}

/**
 * Why a worker died, from its `error` event: the ErrorEvent's message and location when the script ran
 * and threw, else (a script that never loaded: 404, an HTML fallback page, a blocked URL, a bundler that
 * did not emit the file) what to check.
 */
export function describeWorkerError(ev: Event, started: boolean, defaultWorker: boolean): string {
  const e = ev as Partial<ErrorEvent>;
  if (e.message) {
    const where = e.filename ? ` (${e.filename}${e.lineno ? `:${e.lineno}${e.colno ? `:${e.colno}` : ''}` : ''})` : '';
    return `the engine worker ${started ? 'crashed' : 'failed while starting'}: ${e.message}${where}`;
  }
  if (started) return 'the engine worker crashed (its error event carries no message; see the worker\'s console)';
  const what = 'the engine worker script failed to load (not found, not JavaScript, or blocked by the page\'s policy)';
  if (!defaultWorker) return `${what}: check the URL given to the Worker passed as createWorkerEngine({ worker })`;
  return (
    `${what}. Vite and webpack 5 emit webmoe's worker by themselves; with esbuild, build webmoe/worker as an entry ` +
    "point named worker next to your bundle (dist/worker.js beside the importing file for a static copy); or pass " +
    "your own: createWorkerEngine({ worker: new Worker(url, { type: 'module' }) })"
  );
}

export function createWorkerEngine(options: WorkerEngineOptions = {}): WorkerEngine {
  installErrorTransfer();
  const worker = options.worker ?? new Worker(new URL('../worker.ts', import.meta.url), { type: 'module', name: 'webmoe' });
  const host = Comlink.wrap<WorkerHost>(worker);
  let dead: WorkerCrashedError | null = null;
  /** Whether the worker has answered a call (so it loaded and ran its entry). */
  let started = false;
  const pending = new Set<(e: Error) => void>();
  const die = (why: string) => {
    if (dead) return;
    dead = new WorkerCrashedError(why);
    for (const reject of pending) reject(dead);
    pending.clear();
  };
  worker.addEventListener('error', (ev) => {
    // Handled here (it becomes every pending call's WORKER_CRASHED), so it is not reported again as the page's error.
    ev.preventDefault();
    die(describeWorkerError(ev, started, !options.worker));
  });
  worker.addEventListener('messageerror', () => die('the engine worker sent a message that could not be read'));

  /** Every call races the worker's death. */
  const call = <T>(fn: () => Promise<T>): Promise<T> => {
    if (dead) return Promise.reject(dead);
    return new Promise<T>((resolve, reject) => {
      pending.add(reject);
      fn().then(resolve, reject).finally(() => pending.delete(reject));
    });
  };
  const { worker: _w, log, ...plain } = options;
  // Nobody awaits init: a worker that fails to start rejects it, and the same typed error reaches the
  // caller through the next call (load, generate, …), so this rejection is handled here, not left unhandled.
  call(() => host.init(plain as any)).then(() => { started = true; }, () => {});
  /** Ids of calls that can be aborted one by one (host.cancel), so aborting one never stops another. */
  let nextCallId = 1;

  function stream(kind: 'generate' | 'chat', input: string | ChatMessage[], o: GenerateOptions): AsyncGenerator<GenerationChunk, GenerationResult> {
    const { signal, onToken, ...plainOpts } = o;
    const id = nextCallId++;
    const onAbort = () => { if (!dead) void host.cancel(id); };
    // A consumer that stops iterating early aborts its own generation (not one queued after it).
    return pullChunks((emit) => {
      signal?.addEventListener('abort', onAbort);
      const result = call(() => host.generate(kind, input, plainOpts, Comlink.proxy((c: GenerationChunk) => {
        emit(c);
        onToken?.(c);
      }), id)).finally(() => signal?.removeEventListener('abort', onAbort));
      if (signal?.aborted) onAbort(); // after the call is sent: the worker handles messages in order
      return result;
    }, onAbort);
  }

  /** The loaded model's name, for the OpenAI responses' `model`. */
  let modelName = '';
  const api = openAIApi({ generate: (prompt, o = {}) => stream('generate', prompt, o), chat: (messages, o = {}) => stream('chat', messages, o), modelId: () => modelIdOf(modelName) });

  return {
    plan(ref, o = {}) {
      let model = asFileArray(ref);
      if (!isWorkerModelRef(model)) return Promise.reject(new ArgumentError('createWorkerEngine().plan takes a URL, a File, File[] or FileList, or a FileSystemDirectoryHandle'));
      if (typeof model === 'string' && typeof location !== 'undefined') model = new URL(model, location.href).toString();
      const { onProgress: _p, signal, ...plainOpts } = o;
      if (signal?.aborted) return Promise.reject(new AbortError());
      const id = nextCallId++;
      const onAbort = () => { if (!dead) void host.cancel(id); };
      signal?.addEventListener('abort', onAbort);
      return call(() => host.plan(model, plainOpts as any, id)).finally(() => signal?.removeEventListener('abort', onAbort));
    },
    load(ref, o = {}) {
      let model = asFileArray(ref);
      if (!isWorkerModelRef(model)) {
        return Promise.reject(new ArgumentError('createWorkerEngine().load takes a URL, a File, File[] or FileList, or a FileSystemDirectoryHandle (a ModelSource object cannot cross to the worker)'));
      }
      // A relative URL means the page's URL: resolve it here, the worker's base is its own script.
      if (typeof model === 'string' && typeof location !== 'undefined') model = new URL(model, location.href).toString();
      const { onProgress, signal, ...plainOpts } = o;
      if (signal?.aborted) return Promise.reject(new AbortError());
      askPersistenceForLoad(model, o);
      const id = nextCallId++;
      const onAbort = () => { if (!dead) void host.cancel(id); };
      signal?.addEventListener('abort', onAbort);
      return call(() => host.load(model, plainOpts as any, onProgress ? Comlink.proxy(onProgress) : undefined, id))
        .then((info) => { modelName = info.name; return info; })
        .finally(() => signal?.removeEventListener('abort', onAbort));
    },
    generate: (prompt, o = {}) => stream('generate', prompt, o),
    chat: api.chat,
    completions: api.completions,
    abort: () => { if (!dead) void host.abort(); },
    stats: () => call(() => host.stats() as Promise<EngineStats>),
    resetExpertLoad: () => call(() => host.resetExpertLoad()),
    unload: () => call(() => host.unload()),
    terminate() {
      worker.terminate();
      die('the engine worker was terminated');
    },
  };
}
