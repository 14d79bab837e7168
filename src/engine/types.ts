/** The public engine API, implemented in-thread (createEngine) and behind a Worker (createWorkerEngine). */
import type { ChatMessage, ChatTool, ChatToolCall } from './text';
import type { HarmonyToolCall } from './harmony';
import type { LoadNotice, LoadProgress } from '../model/checkpoint';
import type { ModelSource } from '../loader/model-source';
import type { GpuOptions, ModelDescription, SparsityOptions, WeightStorage } from '../model/assemble';
import type { LayerLoad } from '../model/runner';
import type { MemoryPlan } from '../model/memory-plan';

export type { ChatMessage, ChatTool, ChatToolCall, HarmonyToolCall, LoadNotice, LoadProgress, LayerLoad, SparsityOptions, WeightStorage };

/**
 * A model to load: a URL (or, in Node, a path) of a folder or of a `.gguf` file, a ModelSource, or in the
 * browser the files of a checkpoint folder or a picked .gguf (a File, File[] or FileList) or a directory
 * handle. The worker engine takes the structured-clonable forms only (not a ModelSource object, whose
 * methods cannot cross to the worker).
 */
export type ModelRef = string | ModelSource | File | File[] | FileList | FileSystemDirectoryHandle;

/** Where a model runs: WebGPU, the WebAssembly engine (CPU, SIMD), or 'auto' (see LoadOptions.device). */
export type DeviceChoice = 'webgpu' | 'wasm' | 'auto';

export interface LoadOptions {
  /**
   * Where the model runs (default 'webgpu'). 'wasm': the WebAssembly engine on the CPU (128-bit SIMD
   * kernels, docs/wasm.md). 'auto': WebGPU on a hardware adapter, WASM on a CPU fallback adapter
   * (SwiftShader and the like) or without WebGPU; engine.stats() says which and why.
   */
  device?: DeviceChoice;
  /**
   * The WASM engine's threads: the caller plus threads − 1 workers over one SharedArrayBuffer. Default:
   * the cores (at most 8) where SharedArrayBuffer exists (Node; a cross-origin isolated page: COOP
   * same-origin + COEP require-corp), else 1. WebGPU loads ignore it.
   */
  threads?: number;
  /** Weight storage on the GPU. 'auto': f16 for F16 checkpoints (exact; half the bytes of f32), f32 otherwise and on CPU fallback adapters. q8/q4 quantise at load, routed experts included (embeddings then stay f16). 'gguf' (the 'auto' choice for a GGUF with quantised tensors): those tensors' blocks stay on the GPU as in the file, decoded by the GGUF kernels; the embedding, router, kv_b, norms and F32/F16 tensors are f32 (docs/gguf.md). */
  weights?: WeightStorage;
  sparsity?: SparsityOptions | null;
  /** KV cache capacity in tokens (default: the model's max_position_embeddings, at most 4096). */
  contextLength?: number;
  /**
   * GPU memory the model may take, in bytes: a load whose memory plan needs more fails before any
   * download with GPU_LIMIT_EXCEEDED naming what fits. Default: the device's memory when known (in Node,
   * system memory for a CPU fallback adapter); WebGPU does not tell a page its GPU's memory.
   */
  memoryBytes?: number;
  /**
   * GPU memory budget in bytes. When the model's memory plan needs more, its routed experts live in a
   * per-MoE-layer GPU expert cache sized to fit (`info.memoryPlan.offload.capacity` experts per layer);
   * everything else stays resident, and outputs equal full residency. Below the minimum that runs
   * (resident part + top-k experts per layer): GpuBudgetError naming it; above the device's memory:
   * LimitExceededError. Default: no budget (everything resident).
   */
  gpuMemoryBudget?: number;
  /** Expert offload: where cold experts wait ('auto' default: host memory when they take ≤ half of it, else re-read from the source; 'host'; 'source'). */
  expertSource?: 'auto' | 'host' | 'source';
  /** Expert offload: uploads ahead of a layer's routing ('none', 'previous-token', 'next-gate'); default 'next-gate' (measured in docs/offload.md). */
  expertPrefetch?: 'none' | 'previous-token' | 'next-gate';
  /** Expert offload: which resident expert a miss replaces ('lru', or 'load': least chosen so far, the default). */
  expertEviction?: 'lru' | 'load';
  /** Host memory for expertSource 'auto' (default: navigator.deviceMemory where known, else 4 GiB). */
  hostMemoryBytes?: number;
  /**
   * Most prompt tokens per prefill forward (default 512, at most the context, halved down to 16 while one
   * of a chunk's temporaries would exceed the device's storage binding limit; `plan.prefillTokens` says
   * which): longer prompts run in chunks, each appending to the KV cache, so the temporaries (and the
   * memory plan's activations) are bounded by the chunk, not the prompt. A positive integer; anything
   * else is an ArgumentError.
   */
  prefillChunk?: number;
  /**
   * KV cache element format: 'f16' (half the bytes, values rounded to f16 when written; default on a
   * GPU) or 'f32' (default on a CPU fallback adapter: the halved bytes measured no faster there, and
   * f32 keeps the logits exact; model/memory-plan.ts kvCacheFor).
   * Anything else is an ArgumentError.
   */
  kvCache?: 'f16' | 'f32';
  /**
   * Where q8 / q4 routed experts of a BF16, F16 or F32 checkpoint are quantised at load: 'gpu' (the
   * checkpoint's bytes are uploaded as they are and a kernel packs them, shaders/weight_quant.wgsl),
   * 'host' (packed in JavaScript, then uploaded), or 'auto' (default): 'gpu' on a hardware adapter,
   * 'host' on a CPU fallback adapter, where the "GPU" is the same CPU (docs/real-scale.md has the
   * measurements). Same-format stacks (bf16 experts from a BF16 checkpoint) are copied either way.
   */
  quantizeAt?: 'gpu' | 'host' | 'auto';
  /** Browser: keep downloaded files in the Cache API so a second load reads them locally (default true). */
  cache?: boolean;
  /**
   * false: a folder without tokenizer.json still loads, for token-id use only (runner.logits, as the
   * CLI's `logits` does); generate, chat and codec then throw. Default true: tokenizer.json is required.
   */
  requireTokenizer?: boolean;
  /** A safetensors file whose tensors replace the checkpoint's (e.g. calibrated gate biases). */
  overlay?: string | ModelSource | Uint8Array;
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
}

export interface SamplingOptions {
  /** 0 = greedy (default 0.7). */
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  /** Seed of the sampler's random stream (default: random). The same seed gives the same tokens. */
  seed?: number;
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens?: number;
  /** Stop when any of these strings appears in the output (it is not included). */
  stop?: string[];
  /** Stop at the model's end-of-sequence token (default true). */
  stopAtEos?: boolean;
  signal?: AbortSignal;
  /** Called for every token (in addition to the async iterator). */
  onToken?: (chunk: GenerationChunk) => void;
  /** Report the experts chosen per MoE layer for every generated token (routing view). Costs one small readback per token. */
  routing?: boolean;
  /**
   * When the context is full: 'stop' ends with finishReason 'context' (default); 'slide' keeps the last
   * half of the context, recomputes its KV cache and goes on (for long free-running generation).
   */
  contextPolicy?: 'stop' | 'slide';
  /**
   * Report each sampled token's log-probability (GenerationChunk.logprob) and, with `topLogprobs` > 0, the
   * most likely alternatives. Samples on the CPU from a read-back logits row (see responseFormat).
   */
  logprobs?: boolean;
  /** How many alternatives per token with `logprobs` (0–20, default 0). */
  topLogprobs?: number;
  /**
   * 'json_object': the output is constrained to one JSON object (it always parses, unless a stop string
   * cuts it). Each step then reads back the logits row (vocab × 4 bytes), masks it with a JSON-prefix
   * grammar and samples on the CPU with the GPU sampler's algorithm (model/cpu-sampler.ts).
   */
  responseFormat?: 'text' | 'json_object';
  /**
   * Self-speculative decoding with the model's Multi-Token Prediction module (docs/mtp.md): each step
   * verifies the module's draft of the next-but-one token in the same forward, so an accepted draft
   * yields two tokens per main-model forward. The tokens are exactly those of plain decoding (greedy and
   * sampled, same seed). Default 'off' (measured slower on a CPU fallback adapter, the only device measured:
   * docs/mtp.md); 'mtp' on a model without an MTP layer is an ArgumentError. Steps that sample on the CPU
   * (logprobs, JSON mode) or report routing decode plainly.
   */
  speculative?: 'mtp' | 'off';
  /** chat(): GPT-OSS's reasoning level (its system message's `Reasoning: low|medium|high`; the template's default is medium). Other templates ignore it. */
  reasoningEffort?: 'low' | 'medium' | 'high';
  /** chat(): functions the model may call, rendered by the chat template (GPT-OSS: a TypeScript-like namespace in the developer message). */
  tools?: ChatTool[];
}

/** Self-speculative decoding figures of a generation (or, in EngineStats, of the last one). */
export interface SpeculationStats {
  mode: 'mtp' | 'off';
  /** Steps that verified an MTP draft, and drafts the main model accepted. */
  drafted: number;
  accepted: number;
  /** accepted / drafted (0 without drafts). */
  acceptanceRate: number;
  /** Decode tokens per main-model forward (1 without speculation; up to 2 with a depth-1 MTP module). */
  tokensPerForward: number;
}

/** A token with its log-probability under the model (before temperature, penalties and any JSON mask). */
export interface TokenLogprob { token: number; text: string; logprob: number }

export interface GenerationChunk {
  /** The sampled token id. */
  token: number;
  /** Text this token completes (may be empty inside a multi-byte character). */
  text: string;
  /** Index of the token among the generated ones. */
  index: number;
  /** Experts chosen for this token: layer → expert ids (only with `routing: true`). */
  experts?: Record<number, number[]>;
  /** The sampled token with its log-probability under the model (with `logprobs`). */
  logprob?: TokenLogprob;
  /** The `topLogprobs` most likely tokens at this step, most likely first (with `logprobs`). */
  topLogprobs?: TokenLogprob[];
  /**
   * Harmony chats (GPT-OSS): reasoning text this token completes (its analysis channel). `text` is then
   * the answer only (the final channel); tool calls are in the result.
   */
  reasoning?: string;
}

/** 'tool_calls': a harmony model ended its turn with a tool call (`<|call|>`): GenerationResult.toolCalls. */
export type FinishReason = 'eos' | 'stop' | 'length' | 'aborted' | 'context' | 'tool_calls';

export interface GenerationResult {
  text: string;
  /** The generated token ids (empty from a remote engine, which does not see them). */
  tokens: number[];
  /** Number of generated tokens (tokens.length locally; the server's count remotely). */
  completionTokens: number;
  promptTokens: number;
  /** Prompt tokens served from the KV cache of an earlier turn. */
  reusedTokens: number;
  finishReason: FinishReason;
  timeToFirstTokenMs: number;
  prefillTokPerS: number;
  decodeTokPerS: number;
  /** Self-speculative decoding figures (local engines). */
  speculation?: SpeculationStats;
  /** Harmony chats (GPT-OSS): the reasoning (analysis channel); `text` is the answer (final channel). */
  reasoning?: string;
  /** Harmony chats: the tool calls the model made (commentary messages to a recipient). */
  toolCalls?: HarmonyToolCall[];
  /** Harmony chats: how the output departs from the format (empty when well-formed); such text is kept in `text`. */
  formatProblems?: string[];
}

export interface ModelInfo extends ModelDescription {
  /** Whether the tokenizer has a chat template (chat() uses it; otherwise a plain "Role: text" layout). */
  chatTemplate: boolean;
}

export interface EngineStats {
  loaded: boolean;
  loadTimeMs: number;
  prefillTokPerS: number;
  decodeTokPerS: number;
  timeToFirstTokenMs: number;
  kvCacheBytes: number;
  kvBytesPerToken: number;
  /** What a standard (non-latent) MHA cache would need per token for the same model. */
  mhaKvBytesPerToken: number;
  cachedTokens: number;
  weightBytes: number;
  gpuBytes: number;
  dispatchesPerToken: number;
  readbacksPerToken: number;
  /**
   * Expert offload of the last generation (null without): experts per MoE layer on the GPU, the share
   * of needed experts already resident, bytes uploaded and stalls (MoE layers that waited for an
   * upload) per generated token, routing readbacks (GPU→CPU round trips) per token.
   */
  offload: {
    capacity: number; experts: number; source: string; prefetch: string; eviction: string;
    hitRate: number; bytesUploadedPerToken: number; stallsPerToken: number; roundTripsPerToken: number;
    /** Per MoE layer, the experts on the GPU now (the demo's routing heatmap marks them). */
    resident: Record<number, number[]>;
  } | null;
  expertLoad: LayerLoad[];
  device: string;
  /** The last generation's self-speculative decoding figures (mode 'off' and zeros when it used none). */
  speculation: SpeculationStats;
  /** The engine the loaded model runs on ('' when none is loaded), and why (LoadOptions.device); absent from remote engines. */
  backend?: 'webgpu' | 'wasm' | '';
  backendReason?: string;
}

export interface EngineOptions {
  gpu?: GpuOptions;
  /** Log lines (e.g. "using SwiftShader"); default: none. */
  log?: (msg: string) => void;
}

export interface Engine {
  load(model: ModelRef, options?: LoadOptions): Promise<ModelInfo>;
  /**
   * The memory plan load(model, options) would be checked against (weights by format and role, KV
   * cache, activations, the largest binding, gpuBytes), from config.json and the tensor headers alone:
   * nothing downloaded past the headers, nothing allocated. Rejects with the typed error the load would
   * fail with before its weights (LimitExceededError naming the limit and what fits). Engines on this
   * device have it (in-thread, worker); a remote engine's memory is the server's.
   */
  plan?(model: ModelRef, options?: LoadOptions): Promise<MemoryPlan>;
  /** Streams a completion of `prompt` (raw text, no chat template). */
  generate(prompt: string, options?: GenerateOptions): AsyncGenerator<GenerationChunk, GenerationResult>;
  /**
   * Streams the assistant's reply to a conversation (chat template applied, KV cache of the shared prefix
   * reused). `chat.completions.create` is the OpenAI-shaped API over it (engine/openai.ts).
   */
  chat: ChatFunction;
  /** OpenAI's legacy text completions over generate(). */
  completions: Completions;
  /** Aborts the running generation (it ends with finishReason 'aborted'; the engine stays usable). */
  abort(): void;
  stats(): Promise<EngineStats>;
  resetExpertLoad(): Promise<void>;
  unload(): Promise<void>;
}

// The OpenAI-shaped API over the streaming core (implemented once in openai.ts; the wire shapes are OpenAI's).

export type StreamFunction<I> = (input: I, options?: GenerateOptions) => AsyncGenerator<GenerationChunk, GenerationResult>;

/** What the OpenAI layer needs from an engine. */
export interface StreamingCore {
  chat: StreamFunction<ChatMessage[]>;
  generate: StreamFunction<string>;
  /** The id reported in `model` (the loaded model's name). */
  modelId(): string;
}

// ---- requests (the fields webmoe reads; OpenAI's names and types) ----

export interface TextContentPart { type: 'text'; text: string }
export interface ChatCompletionMessageParam {
  /** 'developer' is OpenAI's newer name for 'system'; 'tool' answers the assistant's last tool call. */
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  /** null for an assistant message that only calls tools. */
  content: string | TextContentPart[] | null;
  name?: string;
  /** An assistant turn's reasoning, as this API returns it (given back to the chat template as `thinking`). */
  reasoning_content?: string | null;
  tool_calls?: ChatCompletionMessageToolCall[];
  tool_call_id?: string;
}

/** A tool call as OpenAI's chat API writes it (arguments: JSON text). */
export interface ChatCompletionMessageToolCall { id: string; type: 'function'; function: { name: string; arguments: string } }
/** A streamed tool call (webmoe sends each one whole, in one delta). */
export interface ChatCompletionChunkToolCall extends ChatCompletionMessageToolCall { index: number }

interface CommonParams {
  model?: string;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  seed?: number | null;
  /** Up to 4 strings; generation ends before the first of them (which is not returned). */
  stop?: string | string[] | null;
  /** Only 1 (one choice per request). */
  n?: number | null;
  /** Only 0: use repetition_penalty. */
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  /** webmoe (and vLLM) extensions. */
  top_k?: number | null;
  repetition_penalty?: number | null;
  user?: string;
}

export interface ChatCompletionCreateParams extends CommonParams {
  messages: ChatCompletionMessageParam[];
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  /** 0–20 alternatives per token (needs logprobs: true). */
  top_logprobs?: number | null;
  response_format?: { type: 'text' | 'json_object' } | null;
  /** GPT-OSS: the reasoning level of its system message (other models ignore it). */
  reasoning_effort?: 'low' | 'medium' | 'high' | null;
  /** Functions the model may call (rendered by the chat template; GPT-OSS answers with tool_calls). */
  tools?: { type: 'function'; function: { name: string; description?: string; parameters?: Record<string, unknown> } }[] | null;
  /** Only 'auto' (the model decides; the default) or 'none' (tools are not shown to the model). */
  tool_choice?: 'auto' | 'none' | null;
}

export interface CompletionCreateParams extends CommonParams {
  prompt: string | [string];
  /** Legacy completions: the number of alternatives per token (0–5). */
  logprobs?: number | null;
  echo?: boolean | null;
  suffix?: string | null;
  best_of?: number | null;
  /** webmoe extension (as in vLLM): JSON mode for raw completions. */
  response_format?: { type: 'text' | 'json_object' } | null;
}

export interface RequestOptions { signal?: AbortSignal }

// ---- responses ----

/** webmoe's speed figures for the request (as WebLLM reports them). */
export interface UsageExtra {
  time_to_first_token_s: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  /** Prompt tokens whose KV cache was reused from the previous turn. */
  reused_prompt_tokens: number;
}
export interface CompletionUsage { prompt_tokens: number; completion_tokens: number; total_tokens: number; extra: UsageExtra }

export type OpenAIFinishReason = 'stop' | 'length' | 'tool_calls';

export interface TopLogprob { token: string; logprob: number; bytes: number[] }
export interface ChatCompletionTokenLogprob extends TopLogprob { top_logprobs: TopLogprob[] }
export interface ChoiceLogprobs { content: ChatCompletionTokenLogprob[] }

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  /**
   * `reasoning_content`: a reasoning model's thinking (GPT-OSS's analysis channel), apart from the answer
   * in `content` (the name DeepSeek's API, vLLM and llama.cpp's server use); absent for other models.
   * `content` is '' when the model only called tools (`tool_calls`, finish_reason 'tool_calls'; OpenAI
   * writes null there: webmoe keeps the string type its callers read).
   */
  choices: { index: number; message: { role: 'assistant'; content: string; refusal: null; reasoning_content?: string; tool_calls?: ChatCompletionMessageToolCall[] }; finish_reason: OpenAIFinishReason; logprobs: ChoiceLogprobs | null }[];
  usage: CompletionUsage;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: { index: number; delta: { role?: 'assistant'; content?: string; reasoning_content?: string; tool_calls?: ChatCompletionChunkToolCall[] }; finish_reason: OpenAIFinishReason | null; logprobs: ChoiceLogprobs | null }[];
  /** Only on the last chunk (choices empty), with stream_options.include_usage. */
  usage?: CompletionUsage | null;
}

/** Legacy completions' logprobs layout. */
export interface CompletionLogprobs { tokens: string[]; token_logprobs: number[]; top_logprobs: Record<string, number>[] | null; text_offset: number[] }

export interface Completion {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: { index: number; text: string; finish_reason: OpenAIFinishReason | null; logprobs: CompletionLogprobs | null }[];
  usage?: CompletionUsage | null;
}

export interface ChatCompletions {
  create(body: ChatCompletionCreateParams & { stream: true }, options?: RequestOptions): Promise<AsyncGenerator<ChatCompletionChunk, void>>;
  create(body: ChatCompletionCreateParams & { stream?: false | null }, options?: RequestOptions): Promise<ChatCompletion>;
  create(body: ChatCompletionCreateParams, options?: RequestOptions): Promise<ChatCompletion | AsyncGenerator<ChatCompletionChunk, void>>;
}
export interface Completions {
  create(body: CompletionCreateParams & { stream: true }, options?: RequestOptions): Promise<AsyncGenerator<Completion, void>>;
  create(body: CompletionCreateParams & { stream?: false | null }, options?: RequestOptions): Promise<Completion>;
  create(body: CompletionCreateParams, options?: RequestOptions): Promise<Completion | AsyncGenerator<Completion, void>>;
}

/** engine.chat: the streaming core, with the OpenAI API as chat.completions. */
export type ChatFunction = StreamFunction<ChatMessage[]> & { completions: ChatCompletions };
