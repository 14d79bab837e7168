/**
 * createRemoteEngine: the Engine interface against any OpenAI-compatible server (`webmoe serve`, vLLM,
 * SGLang, ...), for models that outgrow one machine. chat()/generate() stream through server-sent events
 * (fetch, so it runs in browsers, workers and Node); abort cancels the HTTP request, which a server like
 * `webmoe serve` turns into an aborted generation. Server errors become typed errors: the server's code
 * when it sends one of webmoe's (webmoe serve does), else one from the HTTP status.
 */
import type {
  ChatMessage, Engine, HarmonyToolCall, EngineStats, FinishReason, GenerateOptions, GenerationChunk, GenerationResult, LoadOptions, ModelInfo, ModelRef, TokenLogprob,
} from './types';
import { openAIApi, type CompletionUsage } from './openai';
import { AbortError, ArgumentError, WebMoeError, type ErrorCode } from '../errors';

export interface RemoteEngineOptions {
  /** The API root, as the openai client takes it: e.g. http://127.0.0.1:8000/v1. */
  baseURL: string;
  /** Sent as `Authorization: Bearer …` when given. */
  apiKey?: string;
  /** The server's model id (default: the first one /models lists, chosen at load()). */
  model?: string;
  /** fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

const ERROR_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'GPU_UNAVAILABLE', 'GPU_FEATURE_MISSING', 'GPU_LIMIT_EXCEEDED', 'GPU_VALIDATION', 'GPU_OUT_OF_MEMORY', 'GPU_INTERNAL', 'DEVICE_LOST',
  'SHADER_COMPILE', 'BAD_SHAPE', 'BAD_FORMAT', 'BAD_CONFIG', 'UNSUPPORTED', 'NOT_FOUND', 'NETWORK', 'ABORTED', 'BUSY', 'CONTEXT_LENGTH',
  'NOT_LOADED', 'WORKER_CRASHED', 'BAD_ARGUMENT', 'QUOTA_EXCEEDED', 'TRUNCATED',
]);

/** The code for an HTTP status when the server sent none of webmoe's. */
function codeOfStatus(status: number): ErrorCode {
  if (status === 400 || status === 422) return 'BAD_ARGUMENT';
  if (status === 404) return 'NOT_FOUND';
  if (status === 429) return 'BUSY';
  if (status === 503) return 'NOT_LOADED';
  return 'NETWORK';
}

/** A typed error from an OpenAI-shaped error body ({error: {message, code}}, or vLLM's flat form). */
function remoteError(status: number, body: unknown, where: string): WebMoeError {
  const e = (body as { error?: unknown })?.error ?? body;
  const message = typeof (e as { message?: unknown })?.message === 'string' ? (e as { message: string }).message : `HTTP ${status}`;
  const code = (e as { code?: unknown })?.code;
  const typed: ErrorCode = typeof code === 'string' && ERROR_CODES.has(code) ? (code as ErrorCode) : codeOfStatus(status);
  const text = `${where}: ${message}`;
  if (typed === 'BAD_ARGUMENT') return new ArgumentError(text);
  return new WebMoeError(typed, text, { status, ...(code !== undefined ? { serverCode: code } : {}) });
}

/** The `data:` payloads of a server-sent-events body, in order. */
async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const utf8 = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += utf8.decode(value, { stream: true });
      let end: RegExpExecArray | null;
      while ((end = /\r?\n\r?\n/.exec(buffer))) {
        const event = buffer.slice(0, end.index);
        buffer = buffer.slice(end.index + end[0].length);
        const data = event.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (data) yield data;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

const finishOf = (r: unknown, fallback: FinishReason): FinishReason => (r === 'length' ? 'length' : r === 'stop' ? 'stop' : r === 'tool_calls' ? 'tool_calls' : fallback);

export function createRemoteEngine(options: RemoteEngineOptions): Engine {
  if (!options || typeof options.baseURL !== 'string' || !/^https?:\/\//.test(options.baseURL)) throw new ArgumentError('createRemoteEngine needs baseURL: an http(s) URL such as http://127.0.0.1:8000/v1');
  const root = options.baseURL.replace(/\/+$/, '');
  const doFetch = options.fetch ?? ((...a: Parameters<typeof fetch>) => fetch(...a));
  const headers: Record<string, string> = { 'Content-Type': 'application/json', ...(options.apiKey ? { Authorization: `Bearer ${options.apiKey}` } : {}) };
  let model: string | null = options.model ?? null;
  let loaded: ModelInfo | null = null;
  let loadTimeMs = 0;
  const running = new Set<AbortController>();
  let last = { prefillTokPerS: 0, decodeTokPerS: 0, ttftMs: 0 };

  async function request(path: string, init: RequestInit): Promise<Response> {
    let res: Response;
    try {
      res = await doFetch(`${root}${path}`, { ...init, headers });
    } catch (e) {
      if (init.signal?.aborted) throw new AbortError();
      throw new WebMoeError('NETWORK', `${root}${path}: ${(e as Error).message}`);
    }
    if (!res.ok) {
      const text = await res.text().catch(() => '');
      let body: unknown = text;
      try { body = JSON.parse(text); } catch { /* not JSON: the status decides */ }
      throw remoteError(res.status, body, `${init.method ?? 'GET'} ${root}${path}`);
    }
    return res;
  }

  /** One generation as the engine's chunks: the request streams (SSE) whatever the caller does. */
  async function* stream(kind: 'chat' | 'generate', input: ChatMessage[] | string, o: GenerateOptions): AsyncGenerator<GenerationChunk, GenerationResult> {
    if (!model) throw new WebMoeError('NOT_LOADED', 'No remote model chosen: call load() first (or pass model to createRemoteEngine)');
    const ac = new AbortController();
    const onOuterAbort = () => ac.abort();
    o.signal?.addEventListener('abort', onOuterAbort);
    if (o.signal?.aborted) ac.abort();
    running.add(ac);
    const body: Record<string, unknown> = {
      model, stream: true, stream_options: { include_usage: true },
      max_tokens: o.maxTokens, temperature: o.temperature, top_p: o.topP, top_k: o.topK, repetition_penalty: o.repetitionPenalty,
      seed: o.seed, stop: o.stop?.length ? o.stop : undefined,
      response_format: o.responseFormat ? { type: o.responseFormat } : undefined,
    };
    if (kind === 'chat') {
      body.messages = input;
      if (o.reasoningEffort) body.reasoning_effort = o.reasoningEffort;
      if (o.tools?.length) body.tools = o.tools;
      if (o.logprobs) { body.logprobs = true; body.top_logprobs = o.topLogprobs ?? 0; }
    } else {
      body.prompt = input;
      if (o.logprobs) body.logprobs = o.topLogprobs ?? 0;
    }
    const t0 = performance.now();
    let tFirst = 0;
    let text = '';
    // A reasoning model's thinking (delta.reasoning_content) and tool calls, when the server sends them.
    let reasoning: string | undefined;
    const toolCalls: HarmonyToolCall[] = [];
    let index = 0;
    let finish: FinishReason = 'length';
    let usage: CompletionUsage | null = null;
    let ended = false;
    try {
      const res = await request(kind === 'chat' ? '/chat/completions' : '/completions', { method: 'POST', body: JSON.stringify(body), signal: ac.signal });
      if (!res.body) throw new WebMoeError('NETWORK', `${root}: the streaming response has no body`);
      for await (const data of sseData(res.body)) {
        if (data === '[DONE]') break;
        let event: any;
        try { event = JSON.parse(data); } catch { throw new WebMoeError('BAD_FORMAT', `${root}: a server-sent event is not JSON: ${data.slice(0, 200)}`); }
        if (event.error) throw remoteError(500, event, `${root}: during the stream`);
        if (event.usage) usage = event.usage;
        const choice = event.choices?.[0];
        if (!choice) continue;
        const piece: string = (kind === 'chat' ? choice.delta?.content : choice.text) ?? '';
        // reasoning_content (DeepSeek's API, llama.cpp's server, webmoe's) or reasoning (newer vLLM, OpenRouter).
        const said = choice.delta?.reasoning_content ?? choice.delta?.reasoning;
        const thought: string = kind === 'chat' && typeof said === 'string' ? said : '';
        if (thought) reasoning = (reasoning ?? '') + thought;
        for (const c of kind === 'chat' && Array.isArray(choice.delta?.tool_calls) ? choice.delta.tool_calls : []) {
          const name = String(c?.function?.name ?? '');
          toolCalls.push({ name, recipient: `functions.${name}`, arguments: String(c?.function?.arguments ?? ''), contentType: null });
        }
        const lps = tokenLogprobs(kind, choice.logprobs);
        if (choice.finish_reason) finish = finishOf(choice.finish_reason, finish);
        if (!piece && !thought && !lps.length) continue;
        if (!tFirst) tFirst = performance.now();
        text += piece;
        // One chunk per piece; the server's token ids are unknown here (token −1).
        const chunk: GenerationChunk = { token: -1, text: piece, index: index++, ...(thought ? { reasoning: thought } : {}), ...(lps[0] ? { logprob: lps[0].logprob, topLogprobs: lps[0].top } : {}) };
        o.onToken?.(chunk);
        yield chunk;
      }
      ended = true;
    } catch (e) {
      if (!ac.signal.aborted) throw e;
      finish = 'aborted';
    } finally {
      if (!ended) ac.abort(); // a consumer that stopped early (or an error) cancels the request
      running.delete(ac);
      o.signal?.removeEventListener('abort', onOuterAbort);
    }
    const extra = usage?.extra;
    const t1 = performance.now();
    last = {
      ttftMs: extra ? extra.time_to_first_token_s * 1000 : (tFirst || t1) - t0,
      prefillTokPerS: extra?.prefill_tokens_per_s ?? 0,
      decodeTokPerS: extra?.decode_tokens_per_s ?? (tFirst && index > 1 ? (index - 1) / ((t1 - tFirst) / 1000) : 0),
    };
    return {
      text, tokens: [], completionTokens: usage?.completion_tokens ?? index, promptTokens: usage?.prompt_tokens ?? 0,
      reusedTokens: extra?.reused_prompt_tokens ?? 0, finishReason: finish,
      timeToFirstTokenMs: last.ttftMs, prefillTokPerS: last.prefillTokPerS, decodeTokPerS: last.decodeTokPerS,
      ...(reasoning !== undefined || toolCalls.length ? { reasoning: reasoning ?? '', toolCalls } : {}),
    };
  }

  const api = openAIApi({
    chat: (messages, o = {}) => stream('chat', messages, o),
    generate: (prompt, o = {}) => stream('generate', prompt, o),
    modelId: () => model ?? '',
  });

  return {
    async load(ref: ModelRef, o: LoadOptions = {}): Promise<ModelInfo> {
      if (ref !== undefined && ref !== null && ref !== '' && typeof ref !== 'string') throw new ArgumentError('a remote engine loads a model id (a string): the server holds the weights');
      const wanted = (ref as string | undefined) || options.model;
      const t0 = performance.now();
      // A server still loading its model answers 503: wait for it (as long as the caller's signal allows).
      for (;;) {
        try {
          const list = await (await request('/models', { method: 'GET', signal: o.signal })).json() as { data?: { id: string; webmoe?: ModelInfo }[] };
          const models = Array.isArray(list.data) ? list.data : [];
          const found = wanted ? models.find((m) => m.id === wanted) : models[0];
          if (!found) throw new WebMoeError('NOT_FOUND', `${root}/models: ${wanted ? `no model '${wanted}'` : 'no models'} (the server lists ${models.map((m) => m.id).join(', ') || 'none'})`);
          model = found.id;
          loaded = found.webmoe ?? {
            name: found.id, modelType: 'remote', family: 'remote', layers: 0, hiddenSize: 0, vocabSize: 0, experts: 0, expertsPerToken: 0, moeLayers: [],
            parameters: 0, activeParameters: 0, weightStorage: 'remote', sparsity: 'remote', contextLength: 0, chatTemplate: true,
          };
          loadTimeMs = performance.now() - t0;
          return loaded;
        } catch (e) {
          if ((e as WebMoeError).code !== 'NOT_LOADED') throw e;
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(resolve, 500);
            o.signal?.addEventListener('abort', () => { clearTimeout(timer); reject(new AbortError()); }, { once: true });
          });
        }
      }
    },
    generate: (prompt, o = {}) => {
      if (typeof prompt !== 'string') throw new ArgumentError('prompt must be a string');
      return stream('generate', prompt, o);
    },
    chat: api.chat,
    completions: api.completions,
    abort() { for (const ac of running) ac.abort(); },
    async stats(): Promise<EngineStats> {
      return {
        loaded: !!loaded, loadTimeMs, prefillTokPerS: last.prefillTokPerS, decodeTokPerS: last.decodeTokPerS, timeToFirstTokenMs: last.ttftMs,
        // The server's memory and expert load are not visible through the OpenAI API.
        kvCacheBytes: 0, kvBytesPerToken: 0, mhaKvBytesPerToken: 0, cachedTokens: 0, weightBytes: 0, gpuBytes: 0, offload: null,
        dispatchesPerToken: 0, readbacksPerToken: 0, expertLoad: [], device: `remote ${root}`, speculation: { mode: 'off', drafted: 0, accepted: 0, acceptanceRate: 0, tokensPerForward: 1 },
      };
    },
    /** The expert load lives on the server, which the OpenAI API does not expose: nothing to reset here. */
    async resetExpertLoad() {},
    async unload() {
      for (const ac of running) ac.abort();
      loaded = null;
      model = options.model ?? null;
    },
  };
}

/** The per-token logprobs of an event's choice, in the engine's form (token ids unknown: −1). */
function tokenLogprobs(kind: 'chat' | 'generate', lp: any): { logprob: TokenLogprob; top: TokenLogprob[] }[] {
  if (!lp) return [];
  if (kind === 'chat') {
    return (Array.isArray(lp.content) ? lp.content : []).map((t: any) => ({
      logprob: { token: -1, text: String(t.token), logprob: Number(t.logprob) },
      top: (t.top_logprobs ?? []).map((a: any) => ({ token: -1, text: String(a.token), logprob: Number(a.logprob) })),
    }));
  }
  const tokens: string[] = Array.isArray(lp.tokens) ? lp.tokens : [];
  return tokens.map((t, i) => ({
    logprob: { token: -1, text: t, logprob: Number(lp.token_logprobs?.[i]) },
    top: Object.entries((lp.top_logprobs?.[i] ?? {}) as Record<string, number>).map(([text, logprob]) => ({ token: -1, text, logprob })),
  }));
}
