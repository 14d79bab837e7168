/**
 * createServiceWorkerEngine: the Engine interface backed by an engine in the origin's service worker
 * (installServiceWorkerEngine in the service worker script), so a loaded model stays loaded while the
 * user navigates between pages. Each call is one message with a MessageChannel of its own: tokens
 * stream back on it, and aborting a call cancels that call only.
 *
 * The browser may stop an idle service worker after a short time without events: while a model is
 * loaded the client pings it (keepAliveMs). If it was stopped anyway, the next call finds it without
 * the model (NOT_LOADED), loads the model again — saying so through the load's onProgress with a
 * `service-worker-reload` notice — and runs the call. Calls in flight when it stopped reject with
 * WORKER_CRASHED.
 */
import { pullChunks } from './stream';
import { modelIdOf, openAIApi } from './openai';
import { isDirectoryHandle, isWorkerModelRef, reviveError, type WorkerModelRef } from './worker-protocol';
import { SW_PROTOCOL, type ServiceWorkerEngineStatus, type SwReply, type SwRequest } from './sw-protocol';
import type { ChatMessage, Engine, EngineStats, GenerateOptions, GenerationChunk, GenerationResult, LoadOptions, LoadProgress, ModelInfo } from './types';
import type { MemoryPlan } from '../model/memory-plan';
import { AbortError, ArgumentError, UnsupportedError, WebMoeError, WorkerCrashedError } from '../errors';
import { askPersistenceForLoad } from './persist';

export type { ServiceWorkerEngineStatus };

/** Where requests go: the active service worker (or, in tests, anything with postMessage). */
export interface MessageTarget {
  postMessage(message: unknown, transfer: Transferable[]): void;
}

export interface ServiceWorkerEngineOptions {
  /**
   * The service worker script to register (a module script calling installServiceWorkerEngine), e.g.
   * '/sw.js'. Without it, the page must have registered one itself; the client waits for it to be active.
   */
  scriptURL?: string | URL;
  /** The registration's scope (default: the script's folder). */
  scope?: string;
  /** Milliseconds between keep-alive pings while a model is loaded (default 10 000; 0: none). */
  keepAliveMs?: number;
  /** Where to send requests (default: the active service worker of this page's registration). */
  target?: () => Promise<MessageTarget>;
}

/** The same Engine as createEngine's, in the service worker; plus what the service worker holds. */
export interface ServiceWorkerEngine extends Engine {
  /** The service worker's instance id, how many loads it ran and the model it holds. */
  status(): Promise<ServiceWorkerEngineStatus>;
  /** Stops this page's keep-alive pings and cancels its calls; the model stays in the service worker. */
  close(): void;
}

type Plain<T> = Omit<T, 'onProgress' | 'onToken' | 'signal'>;
type Body = SwRequest extends infer R ? (R extends { protocol: string } ? Omit<R, 'protocol'> : never) : never;

/** A model's identity in the service worker: where it comes from and how it is loaded. */
function modelKey(model: WorkerModelRef, options: Plain<LoadOptions>): string {
  const where = typeof model === 'string'
    ? model
    : Array.isArray(model)
      ? model.map((f) => `${(f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name}:${f.size}:${f.lastModified}`).join('|')
      : `dir:${isDirectoryHandle(model) ? model.name : ''}`;
  const { weights, sparsity, contextLength, cache, requireTokenizer, overlay } = options;
  return JSON.stringify({ where, weights, sparsity, contextLength, cache, requireTokenizer, overlay: typeof overlay === 'string' ? overlay : overlay ? 'bytes' : undefined });
}

function defaultTarget(o: ServiceWorkerEngineOptions): () => Promise<MessageTarget> {
  let registered: Promise<unknown> | null = null;
  return async () => {
    const container = typeof navigator !== 'undefined' ? navigator.serviceWorker : undefined;
    if (!container) {
      throw new UnsupportedError('Service workers are not available here (they need a secure origin, https or localhost, and some browsers disable them in private windows): use createWorkerEngine(), which runs the engine in a dedicated Worker');
    }
    if (o.scriptURL && !registered) {
      registered = container.register(o.scriptURL, { type: 'module', ...(o.scope ? { scope: o.scope } : {}) }).catch((e: Error) => {
        registered = null;
        throw new WebMoeError('NOT_FOUND', `could not register the service worker script ${String(o.scriptURL)}: ${e.message}. It must be a module script of this origin calling installServiceWorkerEngine() (see webmoe/service-worker)`);
      });
    }
    await registered;
    const reg = await container.ready;
    const active = reg.active;
    if (!active) throw new WorkerCrashedError('the service worker registration has no active worker');
    return active;
  };
}

export function createServiceWorkerEngine(options: ServiceWorkerEngineOptions = {}): ServiceWorkerEngine {
  const target = options.target ?? defaultTarget(options);
  const keepAliveMs = options.keepAliveMs ?? 10_000;
  /** The model this page loaded, to load it again after the service worker restarted. */
  let current: { model: WorkerModelRef; options: Plain<LoadOptions>; onProgress?: (p: LoadProgress) => void; key: string } | null = null;
  let modelName = '';
  /** The service worker instance this page last heard from. */
  let instance: string | null = null;
  let closed = false;
  /** Calls waiting for their answer, with the instance that accepted them. */
  const open = new Set<{ instance: string | null; fail: (e: Error) => void; cancel: () => void; generation: boolean }>();
  let timer: ReturnType<typeof setInterval> | null = null;

  /** One request on its own channel; `onEvent` gets progress and chunks. */
  function request<T>(body: Body, onEvent?: (m: SwReply) => void, signal?: AbortSignal, generation = false): Promise<T> {
    if (closed) return Promise.reject(new WorkerCrashedError('this service-worker engine was closed'));
    if (signal?.aborted) return Promise.reject(new AbortError());
    return target().then((t) => new Promise<T>((resolve, reject) => {
      const channel = new MessageChannel();
      const port = channel.port1;
      const entry = {
        instance: null as string | null,
        generation,
        fail: (e: Error) => settle(() => reject(e)),
        cancel: () => port.postMessage({ type: 'cancel' }),
      };
      const onAbort = () => entry.cancel();
      const settle = (f: () => void) => {
        if (!open.delete(entry)) return;
        signal?.removeEventListener('abort', onAbort);
        port.onmessage = null;
        port.close();
        f();
      };
      open.add(entry);
      signal?.addEventListener('abort', onAbort);
      port.onmessage = (ev: MessageEvent<SwReply>) => {
        const m = ev.data;
        if (m.type === 'accepted') {
          entry.instance = m.instance;
          noteInstance(m.instance);
        } else if (m.type === 'result') settle(() => resolve(m.value as T));
        else if (m.type === 'error') settle(() => reject(reviveError(m.error)));
        else onEvent?.(m);
      };
      try {
        t.postMessage({ protocol: SW_PROTOCOL, ...body }, [channel.port2]);
      } catch (e) {
        settle(() => reject(new ArgumentError(`could not send the request to the service worker: ${(e as Error).message}`)));
      }
    }));
  }

  /** A new instance answering means the old one stopped: its calls will never be answered. */
  function noteInstance(id: string): void {
    if (instance !== null && id !== instance) {
      for (const e of [...open]) if (e.instance === instance) e.fail(new WorkerCrashedError('the service worker was stopped by the browser during this call; call again (the model is loaded again)'));
    }
    instance = id;
  }

  function keepAlive(): void {
    if (timer || !keepAliveMs || closed) return;
    timer = setInterval(() => {
      if (!current) return;
      request<ServiceWorkerEngineStatus>({ op: 'status' }).catch(() => {});
    }, keepAliveMs);
  }

  function loadNow(c: NonNullable<typeof current>, signal?: AbortSignal): Promise<ModelInfo> {
    const onProgress = c.onProgress;
    return request<ModelInfo>({ op: 'load', model: c.model, options: c.options, key: c.key }, (m) => {
      if (m.type === 'progress') onProgress?.(m.progress);
    }, signal);
  }

  /** Runs `call`; when the service worker no longer holds this page's model, loads it again and retries once. */
  async function withModel<T>(call: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      return await call();
    } catch (e) {
      const c = current;
      if ((e as WebMoeError)?.code !== 'NOT_LOADED' || !c) throw e;
      c.onProgress?.({
        phase: 'config', bytesLoaded: 0, bytesTotal: 0, tensorsLoaded: 0, tensorsTotal: 0,
        notice: { kind: 'service-worker-reload', message: `the service worker no longer holds the model (${(e as Error).message}); loading it again` },
      });
      const info = await loadNow(c, signal);
      modelName = info.name;
      return call();
    }
  }

  function stream(kind: 'generate' | 'chat', input: string | ChatMessage[], o: GenerateOptions): AsyncGenerator<GenerationChunk, GenerationResult> {
    const { signal, onToken, ...plain } = o;
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    return pullChunks((emit) => {
      signal?.addEventListener('abort', onAbort);
      if (signal?.aborted) ac.abort();
      return withModel(() => request<GenerationResult>({ op: 'generate', kind, input, options: plain, key: current?.key ?? null }, (m) => {
        if (m.type !== 'chunk') return;
        emit(m.chunk);
        onToken?.(m.chunk);
      }, ac.signal, true)).finally(() => signal?.removeEventListener('abort', onAbort));
    }, onAbort);
  }

  const api = openAIApi({ generate: (prompt, o = {}) => stream('generate', prompt, o), chat: (messages, o = {}) => stream('chat', messages, o), modelId: () => modelIdOf(modelName) });

  return {
    async plan(model, o = {}) {
      if (!isWorkerModelRef(model)) throw new ArgumentError('createServiceWorkerEngine().plan takes a URL, a File[] or a FileSystemDirectoryHandle (a ModelSource object cannot cross to the service worker)');
      if (typeof model === 'string' && typeof location !== 'undefined') model = new URL(model, location.href).toString();
      const { onProgress: _p, signal, ...plain } = o;
      return request<MemoryPlan>({ op: 'plan', model, options: plain }, undefined, signal);
    },
    async load(model, o = {}) {
      if (!isWorkerModelRef(model)) throw new ArgumentError('createServiceWorkerEngine().load takes a URL, a File[] or a FileSystemDirectoryHandle (a ModelSource object cannot cross to the service worker)');
      if (typeof model === 'string' && typeof location !== 'undefined') model = new URL(model, location.href).toString();
      const { onProgress, signal, ...plain } = o;
      const c = { model, options: plain, onProgress, key: modelKey(model, plain) };
      askPersistenceForLoad(model, o);
      const info = await loadNow(c, signal);
      current = c;
      modelName = info.name;
      keepAlive();
      return info;
    },
    generate: (prompt, o = {}) => stream('generate', prompt, o),
    chat: api.chat,
    completions: api.completions,
    abort() {
      for (const e of open) if (e.generation) e.cancel();
    },
    stats: () => withModel(() => request<EngineStats>({ op: 'stats', key: current?.key ?? null })),
    resetExpertLoad: () => withModel(() => request<void>({ op: 'resetExpertLoad', key: current?.key ?? null })),
    async unload() {
      current = null;
      await request<void>({ op: 'unload', key: null });
    },
    status: () => request<ServiceWorkerEngineStatus>({ op: 'status' }),
    close() {
      for (const e of [...open]) { e.cancel(); e.fail(new AbortError('the service-worker engine was closed')); }
      if (timer) clearInterval(timer);
      timer = null;
      closed = true;
    },
  };
}
