/**
 * The OpenAI-shaped API (`chat.completions.create`, `completions.create`), built once over any engine's
 * streaming core (chat()/generate()): the in-thread engine, the worker engine and the remote engine all
 * get it from openAIApi(). Requests are checked here, before anything is queued, so a bad request fails
 * with a typed ArgumentError (BAD_ARGUMENT) — also for `stream: true`, whose promise rejects.
 */
import type {
  ChatMessage, FinishReason, GenerateOptions, GenerationChunk, GenerationResult, TokenLogprob,
  ChatTool, ChatToolCall, HarmonyToolCall, ChatCompletionMessageToolCall,
  StreamFunction, StreamingCore, TextContentPart, ChatCompletionMessageParam, ChatCompletionCreateParams, CompletionCreateParams, RequestOptions, UsageExtra, CompletionUsage, OpenAIFinishReason, TopLogprob, ChatCompletionTokenLogprob, ChoiceLogprobs, ChatCompletion, ChatCompletionChunk, CompletionLogprobs, Completion, ChatCompletions, Completions, ChatFunction,
} from './types';

export type { StreamFunction, StreamingCore, TextContentPart, ChatCompletionMessageParam, ChatCompletionCreateParams, CompletionCreateParams, RequestOptions, UsageExtra, CompletionUsage, OpenAIFinishReason, TopLogprob, ChatCompletionTokenLogprob, ChoiceLogprobs, ChatCompletion, ChatCompletionChunk, CompletionLogprobs, Completion, ChatCompletions, Completions, ChatFunction };
import { AbortError, ArgumentError } from '../errors';


/** The OpenAI model id of a loaded model: its path's or URL's last segment ('…/models/webmoe-tiny/' → 'webmoe-tiny'). */
export function modelIdOf(name: string): string {
  return name.replace(/[/\\]+$/, '').split(/[/\\]/).pop() || name;
}

// ---- checking requests ----

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const given = (v: unknown) => v !== undefined && v !== null;

function optionalNumber(body: Record<string, unknown>, name: string, rule: { min: number; max: number; integer?: boolean }): number | undefined {
  const v = body[name];
  if (!given(v)) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < rule.min || v > rule.max || (rule.integer && !Number.isInteger(v))) {
    throw new ArgumentError(`${name} must be ${rule.integer ? 'an integer' : 'a number'} in [${rule.min}, ${rule.max}], got ${JSON.stringify(v)}`);
  }
  return v;
}

function optionalBoolean(body: Record<string, unknown>, name: string): boolean | undefined {
  const v = body[name];
  if (!given(v)) return undefined;
  if (typeof v !== 'boolean') throw new ArgumentError(`${name} must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function stopStrings(v: unknown): string[] | undefined {
  if (!given(v)) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length > 4 || !list.every((s) => typeof s === 'string')) throw new ArgumentError('stop must be a string or an array of at most 4 strings');
  return list as string[];
}

function responseFormat(v: unknown): 'text' | 'json_object' | undefined {
  if (!given(v)) return undefined;
  if (!isObject(v) || (v.type !== 'text' && v.type !== 'json_object')) {
    throw new ArgumentError(`response_format must be { type: 'text' } or { type: 'json_object' } (json_schema is not supported), got ${JSON.stringify(v)}`);
  }
  return v.type;
}

/** The engine options of a request (everything but the input), checked. */
function commonOptions(body: Record<string, unknown>, maxTokensField: unknown, signal: AbortSignal | undefined): GenerateOptions & { includeUsage: boolean; stream: boolean } {
  const n = optionalNumber(body, 'n', { min: 1, max: 1, integer: true });
  void n; // n: 1 is the only choice count
  for (const name of ['frequency_penalty', 'presence_penalty']) {
    if (given(body[name]) && body[name] !== 0) throw new ArgumentError(`${name} is not supported (only 0); use repetition_penalty`);
  }
  const maxTokens = maxTokensField ?? body.max_tokens;
  if (given(maxTokens) && (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens) || maxTokens < 1)) throw new ArgumentError(`max_tokens must be a positive integer, got ${JSON.stringify(maxTokens)}`);
  if (given(body.model) && typeof body.model !== 'string') throw new ArgumentError('model must be a string');
  const stream = optionalBoolean(body, 'stream') ?? false;
  const so = body.stream_options;
  if (given(so) && (!isObject(so) || (given(so.include_usage) && typeof so.include_usage !== 'boolean'))) throw new ArgumentError('stream_options must be { include_usage?: boolean }');
  const o: GenerateOptions & { includeUsage: boolean; stream: boolean } = {
    stream,
    includeUsage: isObject(so) && so.include_usage === true,
    maxTokens: (maxTokens as number | undefined) ?? undefined,
    temperature: optionalNumber(body, 'temperature', { min: 0, max: 2 }),
    topP: optionalNumber(body, 'top_p', { min: 0, max: 1 }),
    topK: optionalNumber(body, 'top_k', { min: 0, max: 2 ** 31, integer: true }),
    repetitionPenalty: optionalNumber(body, 'repetition_penalty', { min: 0.01, max: 100 }),
    seed: optionalNumber(body, 'seed', { min: 0, max: 2 ** 32 - 1, integer: true }),
    stop: stopStrings(body.stop),
    responseFormat: responseFormat(body.response_format),
    signal,
  };
  for (const k of Object.keys(o) as (keyof typeof o)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/**
 * OpenAI messages → the engine's (text parts joined; 'developer' is 'system'). An assistant message's
 * `reasoning_content` becomes the template's `thinking`, its `tool_calls` the template's (arguments parsed
 * from their JSON text, as chat templates take them); 'tool' messages answer the last tool call.
 */
export function chatMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw new ArgumentError('messages must be a non-empty array');
  return v.map((m, i) => {
    if (!isObject(m)) throw new ArgumentError(`messages[${i}] must be an object`);
    const role = m.role === 'developer' ? 'system' : m.role;
    if (role !== 'system' && role !== 'user' && role !== 'assistant' && role !== 'tool') {
      throw new ArgumentError(`messages[${i}].role: unknown role ${JSON.stringify(m.role)} (system, developer, user, assistant or tool)`);
    }
    let content = m.content;
    const calls = role === 'assistant' && given(m.tool_calls) ? toolCallsOf(m.tool_calls, i) : undefined;
    if (content === null && calls?.length) content = '';
    if (Array.isArray(content)) {
      if (!content.every((p) => isObject(p) && p.type === 'text' && typeof p.text === 'string')) throw new ArgumentError(`messages[${i}].content: only text parts are supported`);
      content = content.map((p) => (p as unknown as TextContentPart).text).join('');
    }
    if (typeof content !== 'string') throw new ArgumentError(`messages[${i}].content must be a string or an array of text parts${role === 'assistant' ? ' (or null with tool_calls)' : ''}`);
    const msg: ChatMessage = { role, content };
    if (role === 'assistant' && given(m.reasoning_content)) {
      if (typeof m.reasoning_content !== 'string') throw new ArgumentError(`messages[${i}].reasoning_content must be a string`);
      msg.thinking = m.reasoning_content;
    }
    if (calls?.length) msg.tool_calls = calls;
    return msg;
  });
}

function toolCallsOf(v: unknown, i: number): ChatToolCall[] {
  const bad = () => new ArgumentError(`messages[${i}].tool_calls must be an array of { id, type: 'function', function: { name, arguments } } (arguments: JSON text)`);
  if (!Array.isArray(v)) throw bad();
  return v.map((c) => {
    if (!isObject(c) || !isObject(c.function) || typeof c.function.name !== 'string' || typeof c.function.arguments !== 'string') throw bad();
    let args: Record<string, unknown> | string = c.function.arguments;
    try {
      const parsed: unknown = JSON.parse(c.function.arguments);
      if (isObject(parsed)) args = parsed;
    } catch { /* arguments that are not JSON are passed on as the text the model wrote */ }
    return { ...(typeof c.id === 'string' ? { id: c.id } : {}), type: 'function' as const, function: { name: c.function.name, arguments: args } };
  });
}

/** The request's `tools` (function tools only) and `tool_choice` ('auto' or 'none'). */
function toolsOf(body: Record<string, unknown>): ChatTool[] | undefined {
  const choice = body.tool_choice;
  if (given(choice) && choice !== 'auto' && choice !== 'none') throw new ArgumentError(`tool_choice must be 'auto' or 'none' (forcing a tool is not supported), got ${JSON.stringify(choice)}`);
  if (!given(body.tools)) return undefined;
  const tools = body.tools;
  if (!Array.isArray(tools) || !tools.every((t) => isObject(t) && t.type === 'function' && isObject(t.function) && typeof t.function.name === 'string')) {
    throw new ArgumentError('tools must be an array of { type: "function", function: { name, description?, parameters? } }');
  }
  return choice === 'none' ? undefined : (tools as unknown as ChatTool[]);
}

/** A harmony tool call as OpenAI's chat API writes it (the id is made here: the model does not write one). */
function openAIToolCall(c: HarmonyToolCall): ChatCompletionMessageToolCall {
  return { id: requestId('call'), type: 'function', function: { name: c.name, arguments: c.arguments } };
}

// ---- responses from the streaming core ----

const finishReason = (r: FinishReason): OpenAIFinishReason => (r === 'length' || r === 'context' ? 'length' : r === 'tool_calls' ? 'tool_calls' : 'stop');
const requestId = (prefix: string) => `${prefix}-${globalThis.crypto?.randomUUID?.().replace(/-/g, '') ?? Math.random().toString(36).slice(2)}`;
const utf8 = new TextEncoder();
const topLogprob = (t: TokenLogprob): TopLogprob => ({ token: t.text, logprob: t.logprob, bytes: [...utf8.encode(t.text)] });

export function usageOf(r: GenerationResult): CompletionUsage {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
    extra: {
      time_to_first_token_s: r.timeToFirstTokenMs / 1000,
      prefill_tokens_per_s: r.prefillTokPerS,
      decode_tokens_per_s: r.decodeTokPerS,
      reused_prompt_tokens: r.reusedTokens,
    },
  };
}

function chunkLogprob(c: GenerationChunk): ChatCompletionTokenLogprob | null {
  if (!c.logprob) return null;
  return { ...topLogprob(c.logprob), top_logprobs: (c.topLogprobs ?? []).map(topLogprob) };
}

/** One piece of a generation as the OpenAI layer emits it: text (and reasoning text), and the token's logprob if asked. */
interface Piece { text: string; reasoning: string; logprob: ChatCompletionTokenLogprob | null }

/**
 * Runs one generation to pieces of text. The text the engine held back (a partial stop string that did
 * not complete, the decoder's tail) comes in a last piece from the result. An abort rejects with
 * AbortError: an OpenAI response has no 'aborted' finish reason.
 */
async function* pieces(it: AsyncGenerator<GenerationChunk, GenerationResult>, onResult: (r: GenerationResult) => void): AsyncGenerator<Piece, void> {
  let emitted = '', reasoned = '';
  let result: GenerationResult | undefined;
  try {
    for (;;) {
      const r = await it.next();
      if (r.done) { result = r.value; break; }
      emitted += r.value.text;
      const reasoning = r.value.reasoning ?? '';
      reasoned += reasoning;
      const logprob = chunkLogprob(r.value);
      if (r.value.text || reasoning || logprob) yield { text: r.value.text, reasoning, logprob };
    }
  } finally {
    if (!result) await it.return(undefined as never); // the consumer stopped early: abort the generation
  }
  if (result.finishReason === 'aborted') throw new AbortError('the generation was aborted');
  const tail = (all: string | undefined, sent: string) => (all !== undefined && all.length > sent.length && all.startsWith(sent) ? all.slice(sent.length) : '');
  const text = tail(result.text, emitted), reasoning = tail(result.reasoning, reasoned);
  if (text || reasoning) yield { text, reasoning, logprob: null };
  onResult(result);
}

/** A chat request checked and turned into the engine's input and options (ArgumentError when bad). */
export function parseChatRequest(body: unknown, signal?: AbortSignal): { messages: ChatMessage[]; options: GenerateOptions; stream: boolean; includeUsage: boolean } {
  if (!isObject(body)) throw new ArgumentError('the request must be a JSON object');
  const messages = chatMessages(body.messages);
  const { includeUsage, stream, ...o } = commonOptions(body, body.max_completion_tokens, signal);
  const effort = body.reasoning_effort;
  if (given(effort)) {
    if (effort !== 'low' && effort !== 'medium' && effort !== 'high') throw new ArgumentError(`reasoning_effort must be 'low', 'medium' or 'high', got ${JSON.stringify(effort)}`);
    o.reasoningEffort = effort;
  }
  const tools = toolsOf(body);
  if (tools) o.tools = tools;
  const logprobs = optionalBoolean(body, 'logprobs') ?? false;
  const top = optionalNumber(body, 'top_logprobs', { min: 0, max: 20, integer: true });
  if (top !== undefined && !logprobs) throw new ArgumentError('top_logprobs needs logprobs: true');
  if (logprobs) { o.logprobs = true; o.topLogprobs = top ?? 0; }
  return { messages, options: o, stream, includeUsage };
}

/** A completions request checked and turned into the engine's input and options (ArgumentError when bad). */
export function parseCompletionRequest(body: unknown, signal?: AbortSignal): { prompt: string; options: GenerateOptions; stream: boolean; includeUsage: boolean; top: number | undefined } {
  if (!isObject(body)) throw new ArgumentError('the request must be a JSON object');
  const prompt = Array.isArray(body.prompt) && body.prompt.length === 1 ? body.prompt[0] : body.prompt;
  if (typeof prompt !== 'string') throw new ArgumentError('prompt must be a string (or an array of one string)');
  if (given(body.echo) && body.echo !== false) throw new ArgumentError('echo is not supported');
  if (given(body.suffix)) throw new ArgumentError('suffix is not supported');
  optionalNumber(body, 'best_of', { min: 1, max: 1, integer: true });
  const { includeUsage, stream, ...o } = commonOptions(body, undefined, signal);
  const top = optionalNumber(body, 'logprobs', { min: 0, max: 5, integer: true });
  if (top !== undefined) { o.logprobs = true; o.topLogprobs = top; }
  return { prompt, options: o, stream, includeUsage, top };
}

export function openAIApi(core: StreamingCore): { chat: ChatFunction; completions: Completions } {
  async function createChat(body: ChatCompletionCreateParams, options: RequestOptions = {}): Promise<ChatCompletion | AsyncGenerator<ChatCompletionChunk, void>> {
    const { messages, options: o, stream, includeUsage } = parseChatRequest(body, options.signal);
    const logprobs = !!o.logprobs;
    const base = { id: requestId('chatcmpl'), object: 'chat.completion.chunk' as const, created: Math.floor(Date.now() / 1000), model: body.model ?? core.modelId() };
    let result: GenerationResult | undefined;
    const run = () => pieces(core.chat(messages, o), (r) => (result = r));
    if (!stream) {
      let content = '', reasoning = '';
      const lps: ChatCompletionTokenLogprob[] = [];
      for await (const p of run()) { content += p.text; reasoning += p.reasoning; if (p.logprob) lps.push(p.logprob); }
      const r = result!;
      const message: ChatCompletion['choices'][number]['message'] = { role: 'assistant', content, refusal: null };
      // Only a reasoning model's result carries `reasoning` (GPT-OSS's harmony output); others keep OpenAI's plain message.
      if (r.reasoning !== undefined) message.reasoning_content = reasoning;
      if (r.toolCalls?.length) message.tool_calls = r.toolCalls.map(openAIToolCall);
      return {
        id: base.id, object: 'chat.completion', created: base.created, model: base.model,
        choices: [{ index: 0, message, finish_reason: finishReason(r.finishReason), logprobs: logprobs ? { content: lps } : null }],
        usage: usageOf(r),
      };
    }
    return (async function* () {
      yield { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null, logprobs: null }] } satisfies ChatCompletionChunk;
      for await (const p of run()) {
        const delta: ChatCompletionChunk['choices'][number]['delta'] = p.reasoning ? { reasoning_content: p.reasoning } : {};
        if (p.text || !p.reasoning) delta.content = p.text;
        yield { ...base, choices: [{ index: 0, delta, finish_reason: null, logprobs: logprobs ? { content: p.logprob ? [p.logprob] : [] } : null }] } satisfies ChatCompletionChunk;
      }
      // Tool calls are complete only at the end of the turn (<|call|>): each is sent whole, in one delta.
      const calls = result!.toolCalls ?? [];
      if (calls.length) yield { ...base, choices: [{ index: 0, delta: { tool_calls: calls.map((c, index) => ({ index, ...openAIToolCall(c) })) }, finish_reason: null, logprobs: null }] } satisfies ChatCompletionChunk;
      yield { ...base, choices: [{ index: 0, delta: {}, finish_reason: finishReason(result!.finishReason), logprobs: null }] } satisfies ChatCompletionChunk;
      if (includeUsage) yield { ...base, choices: [], usage: usageOf(result!) } satisfies ChatCompletionChunk;
    })();
  }

  async function createCompletion(body: CompletionCreateParams, options: RequestOptions = {}): Promise<Completion | AsyncGenerator<Completion, void>> {
    const { prompt, options: o, stream, includeUsage, top } = parseCompletionRequest(body, options.signal);
    const base = { id: requestId('cmpl'), object: 'text_completion' as const, created: Math.floor(Date.now() / 1000), model: body.model ?? core.modelId() };
    let result: GenerationResult | undefined;
    const run = () => pieces(core.generate(prompt, o), (r) => (result = r));
    const legacy = (ps: Piece[], offset: number): CompletionLogprobs | null => {
      if (top === undefined) return null;
      const withLp = ps.filter((p) => p.logprob);
      const offsets: number[] = [];
      let at = offset;
      for (const p of ps) { if (p.logprob) offsets.push(at); at += p.text.length; }
      return {
        tokens: withLp.map((p) => p.logprob!.token),
        token_logprobs: withLp.map((p) => p.logprob!.logprob),
        top_logprobs: withLp.map((p) => Object.fromEntries(p.logprob!.top_logprobs.map((t) => [t.token, t.logprob]))),
        text_offset: offsets,
      };
    };
    if (!stream) {
      const ps: Piece[] = [];
      for await (const p of run()) ps.push(p);
      return {
        ...base,
        choices: [{ index: 0, text: ps.map((p) => p.text).join(''), finish_reason: finishReason(result!.finishReason), logprobs: legacy(ps, 0) }],
        usage: usageOf(result!),
      };
    }
    return (async function* () {
      let offset = 0;
      for await (const p of run()) {
        yield { ...base, choices: [{ index: 0, text: p.text, finish_reason: null, logprobs: legacy([p], offset) }] } satisfies Completion;
        offset += p.text.length;
      }
      yield { ...base, choices: [{ index: 0, text: '', finish_reason: finishReason(result!.finishReason), logprobs: null }] } satisfies Completion;
      if (includeUsage) yield { ...base, choices: [], usage: usageOf(result!) } satisfies Completion;
    })();
  }

  const chat = ((messages: ChatMessage[], options?: GenerateOptions) => core.chat(messages, options)) as ChatFunction;
  chat.completions = { create: createChat } as ChatCompletions;
  return { chat, completions: { create: createCompletion } as Completions };
}
