/**
 * `webmoe serve`: an OpenAI-compatible HTTP server (node:http) over any Engine's OpenAI layer.
 *
 *   GET  /v1/models, /v1/models/{id}     the served model (with webmoe's ModelInfo under `webmoe`)
 *   POST /v1/chat/completions            chat; `stream: true` answers with server-sent events
 *   POST /v1/completions                 raw text completions
 *
 * One generation runs at a time; up to `maxQueue` more wait in order, and a request beyond that gets 429.
 * A client that disconnects (while waiting or streaming) aborts its generation. Errors use OpenAI's shape
 * { error: { message, type, code } } with webmoe's typed error code: 400 bad request (BAD_ARGUMENT ...),
 * 404 unknown route or model, 429 queue full (BUSY), 503 while the model loads (NOT_LOADED).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Engine, LoadOptions, ModelInfo } from '../engine/types';
import { modelIdOf, parseChatRequest, parseCompletionRequest } from '../engine/openai';
import { ArgumentError, WebMoeError, isWebMoeError, type ErrorCode } from '../errors';

export interface ServerOptions {
  engine: Engine;
  host?: string;
  /** 0 (default): an ephemeral port (see RunningServer.port). */
  port?: number;
  /** The id clients name the model by (default: the last segment of the loaded model's path or URL). */
  modelId?: string;
  /** Requests that may wait while one generates (default 8); more get 429. */
  maxQueue?: number;
  log?: (msg: string) => void;
}

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  /** The model is loaded: requests are served from now on (before, they get 503). */
  ready(info: ModelInfo): void;
  /** Loading failed: requests get 503 with this error's message. */
  failed(error: Error): void;
  /** Stops accepting connections, aborts what runs and closes open connections. */
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 4 * 1024 * 1024;

/** A known route asked with another method: 405, with the typed NOT_FOUND code. */
class MethodNotAllowed extends WebMoeError {
  override readonly name = 'MethodNotAllowed';
  constructor(path: string, allowed: string, used: string | undefined) { super('NOT_FOUND', `${path} takes ${allowed}, not ${used}`); }
}

/** HTTP status of a typed error. */
function statusOf(code: ErrorCode | string): number {
  switch (code) {
    case 'BAD_ARGUMENT': case 'CONTEXT_LENGTH': case 'UNSUPPORTED': case 'BAD_FORMAT': return 400;
    case 'NOT_FOUND': return 404;
    case 'BUSY': return 429;
    case 'NOT_LOADED': return 503;
    default: return 500;
  }
}

function errorBody(e: unknown): { status: number; body: { error: { message: string; type: string; code: string } } } {
  const code = isWebMoeError(e) ? e.code : 'INTERNAL';
  const status = e instanceof MethodNotAllowed ? 405 : statusOf(code);
  const type = status === 400 || status === 404 || status === 405 ? 'invalid_request_error' : status === 429 ? 'rate_limit_error' : 'server_error';
  return { status, body: { error: { message: (e as Error)?.message ?? String(e), type, code } } };
}

/**
 * CORS on every answer (errors included, so a page can read them): any origin may call the API from a
 * browser (createRemoteEngine, the demo, the openai client with dangerouslyAllowBrowser).
 */
const CORS = { 'Access-Control-Allow-Origin': '*', 'Access-Control-Allow-Headers': 'Authorization, Content-Type', 'Access-Control-Allow-Methods': 'GET, POST, OPTIONS' };

/** The answer to a CORS preflight: the headers the page asked for are allowed (the openai client sends x-stainless-*). */
function preflight(req: IncomingMessage, res: ServerResponse): void {
  const asked = req.headers['access-control-request-headers'];
  res.writeHead(204, { ...CORS, ...(typeof asked === 'string' && asked ? { 'Access-Control-Allow-Headers': asked } : {}), 'Access-Control-Max-Age': '600', Vary: 'Access-Control-Request-Headers' });
  res.end();
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'Content-Type': 'application/json', ...CORS });
  res.end(JSON.stringify(body));
}

function sendError(res: ServerResponse, e: unknown): void {
  const { status, body } = errorBody(e);
  if (res.headersSent) {
    // Mid-stream: an SSE event with the error (the openai client throws it as an APIError), then the end.
    if (!res.writableEnded) res.end(`data: ${JSON.stringify(body)}\n\n`);
    return;
  }
  sendJson(res, status, body);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req) {
    size += (part as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new ArgumentError(`the request body is larger than ${MAX_BODY_BYTES} bytes`);
    parts.push(part as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(parts).toString('utf8'));
  } catch (e) {
    throw new ArgumentError(`the request body is not JSON: ${(e as Error).message}`);
  }
}

/** One generation at a time, the others wait in order; a waiter whose client left gives up its place. */
class GenerationQueue {
  private busy = false;
  private waiting: { go: () => void; fail: (e: Error) => void }[] = [];
  constructor(private max: number) {}

  async acquire(signal: AbortSignal): Promise<() => void> {
    if (this.busy) {
      if (this.waiting.length >= this.max) throw new WebMoeError('BUSY', `the server is busy: ${this.waiting.length} requests are waiting already`);
      await new Promise<void>((go, fail) => {
        const entry = { go, fail };
        this.waiting.push(entry);
        signal.addEventListener('abort', () => {
          const i = this.waiting.indexOf(entry);
          if (i >= 0) { this.waiting.splice(i, 1); fail(new WebMoeError('ABORTED', 'the client left while waiting')); }
        }, { once: true });
      });
    }
    this.busy = true;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next.go(); // the slot passes directly to the next waiter
      else this.busy = false;
    };
  }

  get length(): number { return this.waiting.length; }
}

export async function startServer(o: ServerOptions): Promise<RunningServer> {
  const { engine } = o;
  const log = o.log ?? (() => {});
  let model: ModelInfo | null = null;
  let loadError: Error | null = null;
  const created = Math.floor(Date.now() / 1000);
  const queue = new GenerationQueue(o.maxQueue ?? 8);
  const running = new Set<AbortController>();

  const idOf = (info: ModelInfo) => o.modelId ?? modelIdOf(info.name);
  const modelObject = (info: ModelInfo) => ({ id: idOf(info), object: 'model', created, owned_by: 'webmoe', webmoe: info });
  const needModel = (): ModelInfo => {
    if (model) return model;
    throw new WebMoeError('NOT_LOADED', loadError ? `the model failed to load: ${loadError.message}` : 'the model is loading; try again shortly');
  };

  async function generate(req: IncomingMessage, res: ServerResponse, kind: 'chat' | 'completion'): Promise<void> {
    const info = needModel();
    const body = await readJson(req);
    const ac = new AbortController();
    // The response closing before it was finished means the client went away: abort its generation.
    res.on('close', () => { if (!res.writableFinished) ac.abort(); });
    const parsed = kind === 'chat' ? parseChatRequest(body, ac.signal) : parseCompletionRequest(body, ac.signal);
    const requested = (body as { model?: unknown }).model;
    const id = idOf(info);
    if (requested !== undefined && requested !== id) throw new WebMoeError('NOT_FOUND', `the model '${String(requested)}' does not exist; this server serves '${id}'`);
    const release = await queue.acquire(ac.signal);
    running.add(ac);
    try {
      const request = { ...(body as object), model: id };
      const result = kind === 'chat'
        ? await engine.chat.completions.create(request as never, { signal: ac.signal })
        : await engine.completions.create(request as never, { signal: ac.signal });
      if (!parsed.stream) { sendJson(res, 200, result); return; }
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', ...CORS });
      res.flushHeaders();
      for await (const chunk of result as AsyncIterable<unknown>) {
        if (ac.signal.aborted) break;
        res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      }
      if (!res.writableEnded) res.end('data: [DONE]\n\n');
    } finally {
      running.delete(ac);
      release();
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, '');
    if (req.method === 'OPTIONS') { preflight(req, res); return; }
    const route = (method: string) => {
      if (req.method !== method) throw new MethodNotAllowed(path, method, req.method);
    };
    if (path === '/v1/models') {
      route('GET');
      sendJson(res, 200, { object: 'list', data: [modelObject(needModel())] });
    } else if (path.startsWith('/v1/models/')) {
      route('GET');
      const id = decodeURIComponent(path.slice('/v1/models/'.length));
      const info = needModel();
      if (id !== idOf(info)) throw new WebMoeError('NOT_FOUND', `the model '${id}' does not exist; this server serves '${idOf(info)}'`);
      sendJson(res, 200, modelObject(info));
    } else if (path === '/v1/chat/completions') {
      route('POST');
      await generate(req, res, 'chat');
    } else if (path === '/v1/completions') {
      route('POST');
      await generate(req, res, 'completion');
    } else {
      throw new WebMoeError('NOT_FOUND', `unknown route ${req.method} ${path} (routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions)`);
    }
  }

  const server: Server = createServer((req, res) => {
    const t0 = performance.now();
    handle(req, res).then(
      () => log(`${req.method} ${req.url} ${res.statusCode} ${(performance.now() - t0).toFixed(0)} ms`),
      (e) => {
        if (res.destroyed) return; // the client left (aborts end here)
        sendError(res, e);
        log(`${req.method} ${req.url} ${res.statusCode}: ${(e as Error).message}`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, o.host ?? '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    ready(info) { model = info; loadError = null; },
    failed(error) { loadError = error; },
    close() {
      for (const ac of running) ac.abort();
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

export interface ServeModelOptions extends Omit<ServerOptions, 'engine'> {
  engine: Engine;
  model: string;
  load?: Omit<LoadOptions, 'signal'>;
}

/**
 * Starts the server at once (requests get 503 until the model is loaded), then loads `model`. Resolves
 * with the server when it listens; `loaded` settles when the model is in (or its load failed).
 */
export async function serveModel(o: ServeModelOptions): Promise<RunningServer & { loaded: Promise<ModelInfo> }> {
  const server = await startServer(o);
  const loaded = o.engine.load(o.model, o.load).then(
    (info) => { server.ready(info); return info; },
    (e: Error) => { server.failed(e); throw e; },
  );
  loaded.catch(() => {}); // the caller observes it through `loaded`
  return Object.assign(server, { loaded });
}
