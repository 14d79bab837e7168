/**
 * The service-worker side of createServiceWorkerEngine: one in-thread engine in the service worker,
 * shared by every page of the origin, so a loaded model survives page navigations (the service worker
 * outlives its pages while any of them keeps it busy or pings it). Requests arrive as messages with a
 * port each (sw-protocol.ts); a page's model is identified by a key (URL and load options), so a page
 * asking for the model that is loaded already gets it at once, and a page whose model was replaced by
 * another page's is told NOT_LOADED (its client loads it again).
 */
import { createEngine, browserEnvironment, type EngineEnvironment, type WebMoeEngine } from './engine';
import { serializeError } from './worker-protocol';
import { isSwRequest, type ServiceWorkerEngineStatus, type SwReply, type SwRequest } from './sw-protocol';
import type { EngineOptions, ModelInfo } from './types';
import { AbortError, GpuUnavailableError, WebMoeError } from '../errors';

/** The parts of ServiceWorkerGlobalScope the host uses (so it can be typed without the SW lib). */
export interface ServiceWorkerScopeLike {
  addEventListener(type: 'message', listener: (ev: { data: unknown; ports: readonly MessagePort[]; waitUntil?(p: Promise<unknown>): void }) => void): void;
  addEventListener(type: 'install' | 'activate', listener: (ev: { waitUntil(p: Promise<unknown>): void }) => void): void;
  skipWaiting?(): Promise<void>;
  clients?: { claim(): Promise<void> };
  navigator?: { gpu?: unknown };
}

const randomId = () => (typeof crypto !== 'undefined' && 'randomUUID' in crypto ? crypto.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`);

export class ServiceWorkerHost {
  readonly instance = randomId();
  readonly startedAt = Date.now();
  private engine: WebMoeEngine | null = null;
  private loaded: { key: string; info: ModelInfo } | null = null;
  /** The load in progress, shared by pages asking for the same model meanwhile. */
  private loading: { key: string; done: Promise<ModelInfo> } | null = null;
  private loadCount = 0;

  constructor(private options: EngineOptions = {}, private environment: EngineEnvironment = browserEnvironment, private hasGpu: () => boolean = () => !!(globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu) {}

  private get e(): WebMoeEngine {
    return (this.engine ??= createEngine(this.options, this.environment));
  }

  status(): ServiceWorkerEngineStatus {
    return { instance: this.instance, startedAt: this.startedAt, loadCount: this.loadCount, model: this.loaded?.key ?? null, info: this.loaded?.info ?? null, webgpu: this.hasGpu() };
  }

  /** Runs one request, answering on `port`; resolves when the answer is sent (the service worker waits for it). */
  async handle(req: SwRequest, port: MessagePort): Promise<void> {
    const ac = new AbortController();
    port.onmessage = (ev) => { if ((ev.data as { type?: unknown })?.type === 'cancel') ac.abort(); };
    const send = (m: SwReply) => port.postMessage(m);
    send({ type: 'accepted', instance: this.instance });
    try {
      send({ type: 'result', value: await this.run(req, ac.signal, send) });
    } catch (e) {
      send({ type: 'error', error: serializeError(e) });
    }
  }

  /** A page's model must be the one loaded (another page may have loaded a different one since). */
  private need(key: string | null): void {
    if (key !== null && this.loaded?.key !== key) {
      throw new WebMoeError('NOT_LOADED', this.loaded ? 'the service worker holds another model now (another page loaded it)' : 'the service worker holds no model (it was restarted, or nothing was loaded)', { instance: this.instance });
    }
  }

  private async run(req: SwRequest, signal: AbortSignal, send: (m: SwReply) => void): Promise<Extract<SwReply, { type: 'result' }>['value']> {
    switch (req.op) {
      case 'status':
        return this.status();
      case 'load': {
        if (!this.hasGpu()) {
          throw new GpuUnavailableError(
            'WebGPU is not available in this service worker (Chromium-based browsers expose navigator.gpu to service workers; others may not): use createWorkerEngine(), which runs the engine in a dedicated Worker of the page',
          );
        }
        if (this.loaded?.key === req.key && !this.loading) {
          send({ type: 'progress', progress: { phase: 'done', bytesLoaded: 0, bytesTotal: 0, tensorsLoaded: 0, tensorsTotal: 0 } });
          return this.loaded.info;
        }
        if (this.loading?.key === req.key) return this.loading.done;
        this.loadCount++;
        const done = this.e.load(req.model, { ...req.options, signal, onProgress: (progress) => send({ type: 'progress', progress }) });
        const mine = { key: req.key, done };
        this.loading = mine;
        try {
          const info = await done;
          this.loaded = { key: req.key, info };
          return info;
        } finally {
          if (this.loading === mine) this.loading = null;
        }
      }
      case 'plan':
        // Reads config.json and the tensor headers only: it works whatever model is loaded (or none),
        // and needs no GPU to fail on (the planner names the device limits it checks against).
        return this.e.plan!(req.model, { ...req.options, signal });
      case 'generate': {
        this.need(req.key);
        if (signal.aborted) throw new AbortError();
        const it = req.kind === 'chat' ? this.e.chat(req.input as never, { ...req.options, signal }) : this.e.generate(req.input as string, { ...req.options, signal });
        for (;;) {
          const r = await it.next();
          if (r.done) return r.value;
          send({ type: 'chunk', chunk: r.value });
        }
      }
      case 'stats':
        this.need(req.key);
        return this.e.stats();
      case 'resetExpertLoad':
        this.need(req.key);
        await this.e.resetExpertLoad();
        return null;
      case 'unload':
        this.loaded = null;
        await this.e.unload();
        return null;
    }
  }
}

export interface InstallServiceWorkerEngineOptions extends EngineOptions {
  /** Take over at once (skipWaiting + clients.claim), so the first page can use it (default true). */
  claim?: boolean;
}

/**
 * Call once in the service worker script: the origin's pages then reach one shared engine through
 * createServiceWorkerEngine(). Other messages and events of the script are left alone.
 */
export function installServiceWorkerEngine(options: InstallServiceWorkerEngineOptions = {}, scope: ServiceWorkerScopeLike = globalThis as unknown as ServiceWorkerScopeLike): ServiceWorkerHost {
  const { claim = true, ...engineOptions } = options;
  const host = new ServiceWorkerHost(engineOptions);
  if (claim) {
    scope.addEventListener('install', (ev) => ev.waitUntil(scope.skipWaiting?.() ?? Promise.resolve()));
    scope.addEventListener('activate', (ev) => ev.waitUntil(scope.clients?.claim() ?? Promise.resolve()));
  }
  scope.addEventListener('message', (ev) => {
    if (!isSwRequest(ev.data) || !ev.ports[0]) return;
    // Keeps the service worker alive until the answer is sent (a long generation included).
    ev.waitUntil?.(host.handle(ev.data, ev.ports[0]));
  });
  return host;
}
