/**
 * The in-thread engine: load a model, then generate or chat with streaming, sampling on the GPU, stop
 * conditions, abort, and KV-cache reuse of the prefix shared with the previous turn. Calls are queued:
 * a second generate waits for the first instead of interleaving with it.
 *
 * createEngine loads on the GPU: open the checkpoint (config, shapes and tokenizer checked before any
 * GPU allocation), build the text codec from its tokenizer, then hand the checkpoint to the model
 * assembly (model/assemble.ts), which puts it on the device. Tests load on the CPU reference instead.
 */
import type { ChatMessage } from './text';
import { StreamDecoder, TextCodec } from './text';
import { HarmonyParser } from './harmony';
import { pullChunks } from './stream';
import { asFileArray, isDirectoryHandle } from './worker-protocol';
import type { ModelRunner, SamplingParams, StepResult } from '../model/runner';
import { sampleRowOnCpu } from '../model/cpu-sampler';
import { JsonObjectMask, tokenTexts } from './json-grammar';
import { modelIdOf, openAIApi, type ChatFunction, type Completions } from './openai';
import { calibrateRunner, type CalibrationOptions, type CalibrationReport } from '../model/calibrate';
import type {
  Engine, EngineOptions, EngineStats, GenerateOptions, GenerationChunk, GenerationResult, LoadNotice, LoadOptions, LoadProgress, ModelInfo, ModelRef, FinishReason, SpeculationStats, TokenLogprob,
} from './types';
import { GpuModelLoader, acquireBrowserGpu, type AcquireGpu } from '../model/assemble';
import { loadWasmModel } from '../model/wasm-assemble';
import { openCheckpoint } from '../model/checkpoint';
import { directoryHandleModel, fileListModel, memoryModel, urlModel, type ModelSource } from '../loader/model-source';
import { ArgumentError, DeviceLostError, FormatError, UnsupportedError, WebMoeError } from '../errors';
import type { MemoryPlan } from '../model/memory-plan';

/** `codec` is null for a model loaded without tokenizer.json (LoadOptions.requireTokenizer false). */
export interface LoadedModel {
  runner: ModelRunner; codec: TextCodec | null; info: ModelInfo; loadTimeMs: number; device: string;
  /** The engine it runs on and why (LoadOptions.device); absent: WebGPU as asked. */
  backend?: { kind: 'webgpu' | 'wasm'; reason: string };
}

/** How a model gets loaded: the GPU loader in production, a CPU loader in reference tests. */
export type ModelLoader = (model: string | ModelSource, options: LoadOptions) => Promise<LoadedModel>;

/** The memory plan of a model on the engine's device, from its config and headers (see Engine.plan). */
export type ModelPlanner = (model: string | ModelSource, options: LoadOptions) => Promise<MemoryPlan>;

/** A model reference as a URL/path string (resolved by the loader) or a ModelSource. */
export function modelSourceOf(ref: ModelRef): string | ModelSource {
  const model = asFileArray(ref);
  if (typeof model === 'string') return model;
  if (Array.isArray(model)) return fileListModel(model);
  if (isDirectoryHandle(model)) return directoryHandleModel(model);
  if (model && typeof model === 'object' && typeof (model as ModelSource).open === 'function' && typeof (model as ModelSource).text === 'function') return model as ModelSource;
  throw new ArgumentError('load takes a URL or path, a ModelSource, a File, File[] or FileList, or a FileSystemDirectoryHandle');
}

/** Each sampling option's range and default (the CLI declares its options from these too). */
export const SAMPLING_RANGES = {
  temperature: { min: 0, max: 100, fallback: 0.7 },
  topK: { min: 0, max: Infinity, fallback: 0 },
  topP: { min: 0, max: 1, fallback: 1 },
  repetitionPenalty: { min: 0.01, max: 100, fallback: 1 },
  seed: { min: 0, max: 2 ** 32 - 1 },
} as const;

export function resolveSampling(o: GenerateOptions): SamplingParams {
  const num = (v: unknown, name: keyof typeof SAMPLING_RANGES, def: number) => {
    if (v === undefined) return def;
    const { min, max } = SAMPLING_RANGES[name];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw new ArgumentError(`${name} must be a number in [${min}, ${max}], got ${String(v)}`);
    return v;
  };
  const r = SAMPLING_RANGES;
  return {
    temperature: num(o.temperature, 'temperature', r.temperature.fallback),
    topK: Math.floor(num(o.topK, 'topK', r.topK.fallback)),
    topP: num(o.topP, 'topP', r.topP.fallback),
    repetitionPenalty: num(o.repetitionPenalty, 'repetitionPenalty', r.repetitionPenalty.fallback),
    seed: Math.floor(num(o.seed, 'seed', Math.floor(Math.random() * 2 ** 31))),
  };
}

export class WebMoeEngine implements Engine {
  private model: LoadedModel | null = null;
  /** Why there is no model: set when device loss dropped it (calls until the next load report that). */
  private lost: DeviceLostError | null = null;
  /** Token ids whose keys/values are in the cache, in order (for prefix reuse across turns). */
  private cachedIds: number[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private current: AbortController | null = null;
  /** Speculation figures of the generation in progress (stats() reports them until it ends). */
  private live: SpeculationStats | null = null;
  private last: { prefillTokPerS: number; decodeTokPerS: number; ttftMs: number; dispatchesPerToken: number; readbacksPerToken: number; speculation: SpeculationStats; offload?: EngineStats['offload'] } = { prefillTokPerS: 0, decodeTokPerS: 0, ttftMs: 0, dispatchesPerToken: 0, readbacksPerToken: 0, speculation: NO_SPECULATION };

  readonly chat: ChatFunction;
  readonly completions: Completions;

  /** `planner`: Engine.plan (engines without one reject it: the CPU reference has no device to plan for). */
  constructor(private loader: ModelLoader, private planner?: ModelPlanner) {
    const api = openAIApi({ chat: (m, o) => this.streamChat(m, o), generate: (p, o) => this.generate(p, o), modelId: () => modelIdOf(this.model?.info.name ?? '') });
    this.chat = api.chat;
    this.completions = api.completions;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }

  private need(): LoadedModel {
    if (!this.model) throw this.lost ?? new WebMoeError('NOT_LOADED', 'No model is loaded: call load() first');
    return this.model;
  }

  /** The loaded model's tokenizer; a model loaded without one runs on token ids only. */
  private needCodec(): TextCodec {
    const m = this.need();
    if (!m.codec) throw new FormatError(`${m.info.name}: loaded without tokenizer.json, so it takes token ids only (runner.logits); text needs the tokenizer`);
    return m.codec;
  }

  load(model: ModelRef, options: LoadOptions = {}): Promise<ModelInfo> {
    let source: string | ModelSource;
    try {
      source = modelSourceOf(model);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serial(async () => {
      // The previous model stays usable until the new one has loaded: a failed load loses nothing.
      const loaded = await this.loader(source, options);
      loaded.runner.onDeviceLost?.(() => this.dropModel());
      this.model?.runner.destroy();
      this.model = loaded;
      this.lost = null;
      this.cachedIds = [];
      return loaded.info;
    });
  }

  /**
   * The memory plan `load(model, options)` would be checked against, from config.json and the tensor
   * headers alone (no weights downloaded, nothing cached or allocated); rejects with the load's typed
   * error (LimitExceededError with what fits, FormatError, …) when that load would fail before its
   * weights. Queued like loads; the loaded model stays loaded.
   */
  plan(model: ModelRef, options: LoadOptions = {}): Promise<MemoryPlan> {
    let source: string | ModelSource;
    try {
      source = modelSourceOf(model);
      if (!this.planner) throw new UnsupportedError('this engine has no device to plan for (the CPU reference engine)');
    } catch (e) {
      return Promise.reject(e);
    }
    const planner = this.planner;
    return this.serial(() => planner(source, options));
  }

  async unload(): Promise<void> {
    this.abort();
    await this.serial(async () => {
      this.model?.runner.destroy();
      this.model = null;
      this.lost = null;
      this.cachedIds = [];
    });
  }

  abort(): void {
    this.current?.abort();
  }

  /** After device loss: the model's GPU state is gone; free what is left so a new load starts clean. */
  private dropModel(): void {
    if (this.model) this.lost = new DeviceLostError('The GPU device was lost and the model with it: load the model again');
    this.model?.runner.destroy();
    this.model = null;
    this.cachedIds = [];
  }

  generate(prompt: string, options: GenerateOptions = {}): AsyncGenerator<GenerationChunk, GenerationResult> {
    if (typeof prompt !== 'string') throw new ArgumentError('prompt must be a string');
    return this.stream(() => this.needCodec().encode(prompt), options, false);
  }

  private streamChat(messages: ChatMessage[], options: GenerateOptions = {}): AsyncGenerator<GenerationChunk, GenerationResult> {
    if (!Array.isArray(messages) || messages.some((m) => !m || typeof m.content !== 'string' || !['system', 'user', 'assistant', 'tool'].includes(m.role))) {
      throw new ArgumentError('messages must be an array of { role: system|user|assistant|tool, content: string }');
    }
    const { reasoningEffort, tools } = options;
    if (reasoningEffort !== undefined && !['low', 'medium', 'high'].includes(reasoningEffort)) throw new ArgumentError(`reasoningEffort must be 'low', 'medium' or 'high', got ${String(reasoningEffort)}`);
    if (tools !== undefined && (!Array.isArray(tools) || tools.some((t) => t?.type !== 'function' || typeof t.function?.name !== 'string'))) {
      throw new ArgumentError('tools must be an array of { type: "function", function: { name, description?, parameters? } }');
    }
    return this.stream(() => this.needCodec().encodeChat(messages, { reasoningEffort, tools }), options, true);
  }

  /** The serialised generation task as an async iterator of chunks. `chat`: the prompt is a chat template's (harmony output is parsed). */
  private stream(encode: () => number[], options: GenerateOptions, chat: boolean): AsyncGenerator<GenerationChunk, GenerationResult> {
    return pullChunks((emit) => this.serial(() => this.run(encode(), options, emit, chat)), () => this.abort());
  }

  private async run(prompt: number[], o: GenerateOptions, emit: (c: GenerationChunk) => void, chat = false): Promise<GenerationResult> {
    const m = this.need();
    const { runner } = m;
    const codec = this.needCodec();
    // GPT-OSS chats: the reply is harmony messages, parsed into reasoning, the answer and tool calls.
    const harmony = chat && codec.harmony ? new HarmonyParser(codec.harmony, (ids, skip) => codec.decode(ids, skip)) : null;
    if (harmony && o.responseFormat === 'json_object') throw new ArgumentError(`JSON mode constrains every token, and a harmony reply (GPT-OSS) starts with its channel header: use responseFormat 'text' and ask for JSON in the prompt`);
    const sampling = resolveSampling(o);
    const maxTokens = o.maxTokens ?? 256;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new ArgumentError(`maxTokens must be a non-negative integer, got ${o.maxTokens}`);
    const topLogprobs = o.topLogprobs ?? 0;
    if (!Number.isInteger(topLogprobs) || topLogprobs < 0 || topLogprobs > 20) throw new ArgumentError(`topLogprobs must be an integer in [0, 20], got ${o.topLogprobs}`);
    if (o.responseFormat !== undefined && o.responseFormat !== 'text' && o.responseFormat !== 'json_object') throw new ArgumentError(`responseFormat must be 'text' or 'json_object', got ${String(o.responseFormat)}`);
    const json = o.responseFormat === 'json_object' ? new JsonObjectMask(this.tokenTexts(m)) : null;
    const mode = speculationMode(o, runner);
    if (json && maxTokens < json.tokensToClose) throw new ArgumentError(`JSON mode needs maxTokens ≥ ${json.tokensToClose} (the shortest object, {}), got ${maxTokens}`);
    if (prompt.length === 0) throw new ArgumentError('the prompt encodes to no tokens');
    if (prompt.length >= runner.capacity) {
      throw new WebMoeError('CONTEXT_LENGTH', `the prompt has ${prompt.length} tokens; the context holds ${runner.capacity}`, { promptTokens: prompt.length, capacity: runner.capacity });
    }
    const ac = new AbortController();
    this.current = ac;
    const onOuterAbort = () => ac.abort();
    o.signal?.addEventListener('abort', onOuterAbort);
    if (o.signal?.aborted) ac.abort();

    // Reuse the cached prefix shared with the previous turn; at least one token is always recomputed
    // so the step has logits to sample from.
    let reuse = 0;
    const cached = Math.min(this.cachedIds.length, runner.cachedTokens);
    while (reuse < cached && reuse < prompt.length - 1 && this.cachedIds[reuse] === prompt[reuse]) reuse++;
    runner.truncate(reuse);
    // (A sliding-window KV cache may keep less than asked: what it kept is what is reused.)
    reuse = Math.min(reuse, runner.cachedTokens);
    this.cachedIds = prompt.slice(0, reuse);

    const eos = new Set(o.stopAtEos === false ? [] : codec.eosIds);
    // A harmony turn ends at <|return|> (the answer is complete) or <|call|> (a tool call for the caller).
    if (harmony && o.stopAtEos !== false) { eos.add(codec.harmony!.return); eos.add(codec.harmony!.call); }
    const decoder = new StreamDecoder(codec);
    let reasoning = '';
    const stops = (o.stop ?? []).filter((s) => s.length > 0);
    // Text that could be the start of a stop string is held back until the next tokens settle it, so a
    // stop string split across tokens is never emitted in part.
    const heldForStops = (t: string) => {
      let hold = 0;
      for (const s of stops) for (let k = Math.min(s.length - 1, t.length); k > hold; k--) if (t.endsWith(s.slice(0, k))) { hold = k; break; }
      return hold;
    };
    let emitted = 0;
    const generated: number[] = [];
    const history = prompt.slice();
    let finish: FinishReason = 'length';
    let text = '';
    const t0 = performance.now();
    let tFirst = t0;
    const c0 = runner.counters();
    let tDecodeStart = t0;
    let pending = prompt.slice(reuse);
    let drafted = 0, accepted = 0, decodeForwards = 0, stepTokens = 0;
    try {
      outer: for (let i = 0; i < maxTokens; i++) {
        if (ac.signal.aborted) { finish = 'aborted'; break; }
        if (runner.cachedTokens + pending.length > runner.capacity) {
          if (o.contextPolicy !== 'slide') { finish = 'context'; break; }
          // Keep the newest half of the context and recompute its keys/values at new positions. The
          // repetition-penalty history is what is in the context, so it stays bounded on long runs.
          const keep = Math.max(1, Math.floor(runner.capacity / 2));
          history.splice(0, history.length - keep);
          pending = history.slice();
          runner.truncate(0);
          this.cachedIds = [];
        }
        // JSON mode: the tokens left, bounded by the context when it cannot slide.
        const budget = Math.min(maxTokens - i, o.contextPolicy === 'slide' ? Infinity : runner.capacity - runner.cachedTokens - pending.length + 1);
        // At least 2 (a prompt leaves ≥ 1 free slot, and a step's token needs no slot), so `{}` always fits.
        const allowed = json?.allowed(budget);
        // A speculative step may yield two tokens: only when both fit the token budget. Steps that report
        // routing decode plainly (a chunk's experts are those of its own position).
        const speculative = mode === 'mtp' && maxTokens - i >= 2 && !o.routing;
        const r: SampledStep = json || o.logprobs
          ? await this.sampleOnCpu(m, pending, sampling, i, history, { routing: !!o.routing, topLogprobs: o.logprobs ? topLogprobs : -1, allowed })
          : await runner.step(pending, sampling, i, history, !!o.routing, speculative ? { speculative } : undefined);
        this.cachedIds.push(...pending);
        if (i === 0) { tFirst = performance.now(); tDecodeStart = tFirst; } else decodeForwards++;
        drafted += r.speculation?.drafted ?? 0;
        accepted += r.speculation?.accepted ?? 0;
        // Live figures for stats() while the generation runs (the demo polls them).
        if (i > 0) stepTokens += 1 + (r.extra?.length ?? 0);
        if (i > 0 && mode === 'mtp') this.live = { mode, drafted, accepted, acceptanceRate: drafted ? accepted / drafted : 0, tokensPerForward: stepTokens / decodeForwards };
        const ids = [r.token, ...(r.extra ?? [])];
        for (let j = 0; j < ids.length; j++) {
          // A speculative step's second token: the first is in the cache now, and counts as a step.
          if (j > 0) { this.cachedIds.push(ids[j - 1]); i++; }
          const id = ids[j];
          if (eos.has(id)) {
            if (harmony && (id === codec.harmony!.return || id === codec.harmony!.call)) {
              // The end token closes the last message (a tool call's arguments are complete at <|call|>);
              // other end tokens (<|endoftext|>) leave it to harmony.finish() below.
              const d = harmony.push(id);
              text += d.content;
              reasoning += d.reasoning;
            }
            finish = harmony?.ended === 'call' ? 'tool_calls' : 'eos';
            break outer;
          }
          generated.push(id);
          history.push(id);
          let piece: string, reasoningPiece = '';
          if (harmony) {
            const d = harmony.push(id);
            piece = d.content;
            reasoningPiece = d.reasoning;
            reasoning += reasoningPiece;
          } else piece = decoder.push(id);
          const before = text.length;
          text += piece;
          if (json) {
            // The mask chose this token by its text in the middle of a sequence; the decoder's text must agree.
            if (!json.state.feed(piece)) throw new WebMoeError('BAD_FORMAT', `JSON mode: the decoder's text for token ${id} (${JSON.stringify(piece)}) differs from the text the mask allowed`);
            if (json.state.done) finish = 'stop';
          }
          const hit = stops.map((s) => text.indexOf(s, Math.max(0, before - s.length + 1))).filter((p) => p >= 0);
          if (hit.length) {
            text = text.slice(0, Math.min(...hit));
            finish = 'stop';
          }
          const visible = finish === 'stop' ? text.length : text.length - heldForStops(text);
          const delta = text.slice(emitted, Math.max(emitted, visible));
          emitted = Math.max(emitted, visible);
          const chunk: GenerationChunk = {
            token: id, text: delta, index: generated.length - 1,
            ...(r.experts && j === 0 ? { experts: r.experts } : {}),
            ...(r.logprob ? { logprob: r.logprob, topLogprobs: r.topLogprobs } : {}),
            ...(reasoningPiece ? { reasoning: reasoningPiece } : {}),
          };
          emit(chunk);
          o.onToken?.(chunk);
          pending = [id];
          if (finish === 'stop') break outer;
        }
      }
      if (harmony) {
        if (finish !== 'stop') {
          const d = harmony.finish();
          text += d.content;
          reasoning += d.reasoning;
        }
      } else if (finish !== 'stop') text += decoder.flush();
    } finally {
      o.signal?.removeEventListener('abort', onOuterAbort);
      if (this.current === ac) this.current = null;
      this.live = null;
    }
    const t1 = performance.now();
    const c1 = runner.counters();
    const steps = Math.max(1, generated.length + (finish === 'eos' || finish === 'tool_calls' ? 1 : 0));
    const prefillMs = tFirst - t0;
    const decodeSteps = steps - 1;
    const speculation: SpeculationStats = {
      mode, drafted, accepted, acceptanceRate: drafted ? accepted / drafted : 0,
      tokensPerForward: decodeForwards ? decodeSteps / decodeForwards : 1,
    };
    this.last = {
      ttftMs: prefillMs,
      prefillTokPerS: (prompt.length - reuse) / Math.max(prefillMs / 1000, 1e-9),
      decodeTokPerS: decodeSteps > 0 ? decodeSteps / Math.max((t1 - tDecodeStart) / 1000, 1e-9) : 0,
      dispatchesPerToken: (c1.dispatches - c0.dispatches) / steps,
      readbacksPerToken: (c1.readbacks - c0.readbacks) / steps,
      offload: offloadStats(runner, c0, c1, steps),
      speculation,
    };
    return {
      text, tokens: generated, completionTokens: generated.length, promptTokens: prompt.length, reusedTokens: reuse, finishReason: finish,
      timeToFirstTokenMs: this.last.ttftMs, prefillTokPerS: this.last.prefillTokPerS, decodeTokPerS: this.last.decodeTokPerS, speculation,
      ...(harmony ? { reasoning, toolCalls: harmony.toolCalls, formatProblems: harmony.problems } : {}),
    };
  }

  /** Token texts of the loaded model's vocabulary for the JSON mask (built once per model). */
  private tokenTexts(m: LoadedModel): (string | null)[] {
    let t = jsonTokenTexts.get(m);
    if (!t) {
      const codec = m.codec!;
      const anchor = codec.encode('a', false)[0];
      t = tokenTexts((ids) => codec.decode(ids), anchor, m.runner.cfg.vocabSize);
      jsonTokenTexts.set(m, t);
    }
    return t;
  }

  /**
   * A step sampled on the CPU: the runner returns the last logits row (one vocab × 4-byte read-back);
   * the row is masked (JSON mode: disallowed tokens → −∞) and sampled with the GPU sampler's exact
   * algorithm and random stream (model/cpu-sampler.ts), so unmasked steps draw the same tokens as the
   * GPU path. Log-probabilities are the model's (log-softmax of the raw row).
   */
  private async sampleOnCpu(
    m: LoadedModel, pending: number[], sampling: SamplingParams, step: number, history: number[],
    want: { routing: boolean; topLogprobs: number; allowed?: Uint8Array },
  ): Promise<SampledStep> {
    const row = await m.runner.logits(pending, false);
    let experts: Record<number, number[]> | undefined;
    if (want.routing) {
      experts = {};
      for (const [layer, rows] of await m.runner.lastRouting()) experts[layer] = rows[rows.length - 1];
    }
    let masked = row;
    if (want.allowed) {
      masked = Float32Array.from(row);
      for (let i = 0; i < masked.length; i++) if (!want.allowed[i]) masked[i] = -Infinity;
    }
    const token = sampleRowOnCpu(masked, sampling, step, sampling.repetitionPenalty !== 1 ? history : undefined);
    if (want.topLogprobs < 0) return { token, experts };
    let max = -Infinity;
    for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
    let sum = 0;
    for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
    const logZ = max + Math.log(sum);
    const texts = this.tokenTexts(m);
    const codec = m.codec!;
    const entry = (id: number): TokenLogprob => ({ token: id, text: texts[id] ?? codec.decode([id], false), logprob: row[id] - logZ });
    const top: number[] = [];
    for (let i = 0; i < row.length && want.topLogprobs > 0; i++) {
      if (top.length === want.topLogprobs && row[i] <= row[top[top.length - 1]]) continue;
      let at = top.length;
      while (at > 0 && row[top[at - 1]] < row[i]) at--;
      top.splice(at, 0, i);
      if (top.length > want.topLogprobs) top.pop();
    }
    return { token, experts, logprob: entry(token), topLogprobs: top.map(entry) };
  }

  async stats(): Promise<EngineStats> {
    const m = this.model;
    const mem = m?.runner.memory();
    return {
      loaded: !!m,
      loadTimeMs: m?.loadTimeMs ?? 0,
      prefillTokPerS: this.last.prefillTokPerS,
      decodeTokPerS: this.last.decodeTokPerS,
      timeToFirstTokenMs: this.last.ttftMs,
      kvCacheBytes: mem?.kvBytes ?? 0,
      kvBytesPerToken: mem?.kvBytesPerToken ?? 0,
      mhaKvBytesPerToken: mem?.mhaKvBytesPerToken ?? 0,
      cachedTokens: m?.runner.cachedTokens ?? 0,
      weightBytes: mem?.weightBytes ?? 0,
      gpuBytes: mem?.gpuBytes ?? 0,
      dispatchesPerToken: this.last.dispatchesPerToken,
      readbacksPerToken: this.last.readbacksPerToken,
      offload: m ? withResident(this.last.offload ?? offloadStats(m.runner, m.runner.counters(), m.runner.counters(), 1), m.runner) : null,
      expertLoad: m ? await m.runner.expertLoad() : [],
      device: m?.device ?? '',
      speculation: this.live ?? this.last.speculation,
      backend: m ? m.backend?.kind ?? 'webgpu' : '',
      backendReason: m ? m.backend?.reason ?? 'device webgpu (the default)' : '',
    };
  }

  async resetExpertLoad(): Promise<void> {
    this.model?.runner.resetExpertLoad();
  }

  /**
   * Runs `fn` on the loaded model's runner between generations (queued like them). The KV cache is
   * treated as unknown afterwards.
   */
  withRunner<T>(fn: (runner: ModelRunner) => Promise<T>): Promise<T> {
    return this.serial(async () => {
      try {
        return await fn(this.need().runner);
      } finally {
        this.cachedIds = [];
      }
    });
  }

  /** Calibrates the loaded model's gate biases (queued like a generation; see model/calibrate). */
  calibrate(batches: number[][], opts: CalibrationOptions): Promise<CalibrationReport> {
    return this.withRunner((runner) => calibrateRunner(runner, batches, opts));
  }

  /** The loaded model's runner (CLI logits, tests). */
  get runner(): ModelRunner { return this.need().runner; }
  get codec(): TextCodec { return this.needCodec(); }
  get info(): ModelInfo | null { return this.model?.info ?? null; }
}

const NO_SPECULATION: SpeculationStats = { mode: 'off', drafted: 0, accepted: 0, acceptanceRate: 0, tokensPerForward: 1 };

/**
 * GenerateOptions.speculative resolved for the loaded model: 'mtp' needs an MTP layer (asking for it
 * without one is an ArgumentError). The default is 'off': the only device it was measured on, a CPU
 * fallback adapter (SwiftShader), decodes the bundled model 0.94× as fast with it (docs/mtp.md; a
 * two-row forward costs two rows of compute there), and it is meant to be on by default only where it
 * measures faster.
 */
export function speculationMode(o: GenerateOptions, runner: ModelRunner): 'mtp' | 'off' {
  const s = o.speculative;
  if (s !== undefined && s !== 'mtp' && s !== 'off') throw new ArgumentError(`speculative must be 'mtp' or 'off', got ${String(s)}`);
  if (s === 'mtp' && runner.mtpLayers === 0) throw new ArgumentError(`speculative 'mtp' needs a model with a Multi-Token Prediction layer (num_nextn_predict_layers ≥ 1 and its weights); this one has none: use 'off'`);
  return s ?? 'off';
}

/** A step's token, with its logprobs when they were asked for. */
type SampledStep = StepResult & { logprob?: TokenLogprob; topLogprobs?: TokenLogprob[] };

const jsonTokenTexts = new WeakMap<LoadedModel, (string | null)[]>();

/** Calibrates the engine's loaded model's gate biases on `batches` of token ids (see WebMoeEngine.calibrate). */
export function calibrateModel(engine: WebMoeEngine, batches: number[][], opts: CalibrationOptions): Promise<CalibrationReport> {
  return engine.calibrate(batches, opts);
}

export interface EngineEnvironment {
  /** A device for this engine (a new one after device loss). */
  acquire: AcquireGpu;
  /** A model reference string → a ModelSource (URL in the browser; path or URL in Node). */
  /** `headersOnly`: for a plan, which reads config.json and the tensor headers (no cache, small range reads). */
  resolve(model: string, options: LoadOptions, headersOnly?: boolean): ModelSource;
}

export const browserEnvironment: EngineEnvironment = {
  acquire: acquireBrowserGpu,
  resolve: (model, o, headersOnly) => headersOnly
    // A 64 KiB first read per file (a header is mostly shorter; a longer one is read to its end after).
    ? urlModel(model, { cache: false, probeBytes: 64 << 10 })
    : urlModel(model, { cache: o.cache === false ? false : undefined, onNotice: noticeAsProgress(o) }),
};

/**
 * Notices reach the caller as progress events carrying `notice`, with the latest progress figures (so a
 * progress bar does not jump back).
 */
function noticeAsProgress(o: LoadOptions): ((n: LoadNotice) => void) | undefined {
  const report = o.onProgress;
  if (!report) return undefined;
  return (notice) => report({ ...(lastProgress.get(o) ?? { phase: 'weights', bytesLoaded: 0, bytesTotal: 0, tensorsLoaded: 0, tensorsTotal: 0 }), notice });
}
/** The last progress event of each load (its options object), for notices in between. */
const lastProgress = new WeakMap<LoadOptions, LoadProgress>();

/**
 * Plans from the config and the tensor headers: the source is opened without the weight cache (a URL
 * source reads config.json, the index and each file's header by range requests), and closed after.
 */
export function gpuPlanner(env: EngineEnvironment, engineOptions: EngineOptions, models: GpuModelLoader): ModelPlanner {
  return async (model, options) => {
    // The plan is WebGPU's (binding limits, GPU buffers); the WASM engine checks its 4 GiB at load.
    if (options.device === 'wasm') throw new UnsupportedError(`engine.plan() plans WebGPU memory; with device 'wasm' the load itself refuses a model that cannot fit WebAssembly's 4 GiB, before reading weights`);
    const source = typeof model === 'string' ? env.resolve(model, { ...options, cache: false, onProgress: undefined }, true) : model;
    const ckpt = await openCheckpoint(source, { signal: options.signal, validateTokenizer: false });
    try {
      return await models.plan(ckpt, { ...options, onProgress: undefined, log: engineOptions.log });
    } finally {
      await ckpt.close().catch(() => {});
    }
  };
}

export function gpuLoader(env: EngineEnvironment, engineOptions: EngineOptions, models = new GpuModelLoader(env.acquire, engineOptions.gpu)): ModelLoader {
  return async (model, options): Promise<LoadedModel> => {
    const log = engineOptions.log ?? (() => {});
    const t0 = performance.now();
    const source = typeof model === 'string' ? env.resolve(model, options) : model;
    const overlay = options.overlay instanceof Uint8Array ? memoryModel({ 'model.safetensors': options.overlay }) : typeof options.overlay === 'string' ? env.resolve(options.overlay, options) : options.overlay;
    // The checkpoint reports 'done' when it has read the weights; the load is done when the model is on
    // the device. Its 'done' is held back and reported once, at the end, with the totals it carried.
    // Every event is also remembered per options object, for the notices that arrive in between.
    const userProgress = options.onProgress;
    const progressKey = options;
    const onProgress = userProgress && ((p: LoadProgress) => {
      lastProgress.set(progressKey, p);
      if (p.phase !== 'done') userProgress(p);
    });
    options = { ...options, onProgress };
    const ckpt = await openCheckpoint(source, { onProgress, signal: options.signal, overlay });
    let codec: TextCodec | null, m: { runner: ModelRunner; description: ModelInfo | Omit<ModelInfo, 'chatTemplate'>; device: string };
    let backend: { kind: 'webgpu' | 'wasm'; reason: string };
    // The weight upload closes each file after its last tensor; a load that fails before that closes them here.
    try {
      if (!ckpt.tokenizer && options.requireTokenizer !== false) throw new FormatError(`${source.description}: tokenizer.json is missing`);
      codec = ckpt.tokenizer ? new TextCodec(ckpt.tokenizer, ckpt.tokenizerConfig, ckpt.config.eosTokenIds) : null;
      backend = await chooseBackend(options.device, models, log);
      log(`${source.description}: ${backend.kind} (${backend.reason})`);
      m = backend.kind === 'wasm'
        ? await loadWasmModel(ckpt, source.description, { ...options, onProgress, log })
        : await models.load(ckpt, source.description, { ...options, onProgress, log });
    } catch (e) {
      await ckpt.close().catch(() => {});
      throw e;
    }
    const { bytesLoaded = 0, bytesTotal = 0, tensorsLoaded = 0, tensorsTotal = 0 } = lastProgress.get(progressKey) ?? {};
    userProgress?.({ phase: 'done', bytesLoaded, bytesTotal, tensorsLoaded, tensorsTotal });
    return {
      runner: m.runner,
      codec,
      info: { ...m.description, chatTemplate: codec?.hasChatTemplate ?? false },
      loadTimeMs: performance.now() - t0,
      device: m.device,
      backend,
    };
  };
}

/**
 * LoadOptions.device → the engine to load on, and why. 'auto' asks for a WebGPU adapter: a hardware one
 * runs the model; a CPU fallback adapter (isFallbackAdapter, or SwiftShader by its adapter info, which
 * Chromium does not always flag) or no WebGPU at all means the WASM engine, which decodes faster on a
 * CPU than WGSL on a software rasteriser (docs/wasm.md).
 */
export async function chooseBackend(device: LoadOptions['device'], models: GpuModelLoader, log: (m: string) => void = () => {}): Promise<{ kind: 'webgpu' | 'wasm'; reason: string }> {
  const d = device ?? 'webgpu';
  if (d !== 'webgpu' && d !== 'wasm' && d !== 'auto') throw new ArgumentError(`device must be 'webgpu', 'wasm' or 'auto', got ${String(device)}`);
  if (d === 'wasm') return { kind: 'wasm', reason: 'device wasm was asked for' };
  if (d === 'webgpu') return { kind: 'webgpu', reason: device ? 'device webgpu was asked for' : 'device webgpu (the default)' };
  let gpu;
  try {
    gpu = await models.device(log);
  } catch (e) {
    return { kind: 'wasm', reason: `auto: no usable WebGPU (${e instanceof Error ? e.message : String(e)})` };
  }
  const a = gpu.adapter;
  const name = [a.vendor, a.architecture, a.description].filter(Boolean).join(' ');
  if (a.isFallbackAdapter) return { kind: 'wasm', reason: `auto: the WebGPU adapter${name ? ` (${name})` : ''} is a CPU fallback adapter` };
  if (/swiftshader|llvmpipe|lavapipe|warp|software/i.test(name)) return { kind: 'wasm', reason: `auto: the WebGPU adapter (${name}) is a software renderer` };
  return { kind: 'webgpu', reason: `auto: a hardware WebGPU adapter${name ? ` (${name})` : ''}` };
}

/** An engine running in this thread (page, worker or Node with the `webgpu` package: see webmoe/node). */
export function createEngine(options: EngineOptions = {}, env: EngineEnvironment = browserEnvironment): WebMoeEngine {
  // One loader: plans and loads share the device.
  const models = new GpuModelLoader(env.acquire, options.gpu);
  return new WebMoeEngine(gpuLoader(env, options, models), gpuPlanner(env, options, models));
}

/** The offload figures of a generation from the runner's counters before (c0) and after (c1) it, per token (null without offload). */
function offloadStats(runner: ModelRunner, c0: ReturnType<ModelRunner['counters']>, c1: ReturnType<ModelRunner['counters']>, steps: number): EngineStats['offload'] {
  const info = runner.offload?.();
  if (!info || !c0.offload || !c1.offload) return null;
  const d = (k: keyof NonNullable<typeof c0.offload>) => c1.offload![k] - c0.offload![k];
  const lookups = d('lookups');
  return {
    ...info,
    hitRate: lookups ? d('hits') / lookups : 1,
    bytesUploadedPerToken: d('bytesUploaded') / steps,
    stallsPerToken: d('stalls') / steps,
    roundTripsPerToken: (c1.readbacks - c0.readbacks) / steps,
  };
}

/** The residency of now (the other figures are the last generation's). */
function withResident(o: EngineStats['offload'], runner: ModelRunner): EngineStats['offload'] {
  const info = runner.offload?.();
  if (!info) return null;
  return o ? { ...o, resident: info.resident } : o;
}
