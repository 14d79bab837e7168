/**
 * A loaded model that runs forward steps against its own KV cache and samples. The engine drives
 * generation through this interface only; the GPU runner is the product, the CPU runner the reference
 * used to check it.
 */
import type { ModelConfig } from './config';
import type { OffloadCounters } from './expert-cache';

export type { OffloadCounters };
/** How a model's routed experts are offloaded (model/expert-cache.ts). */
export interface OffloadInfo {
  capacity: number; experts: number; source: 'host' | 'source'; prefetch: string; eviction: string;
  /** Per MoE layer, the experts in GPU slots now. */
  resident: Record<number, number[]>;
}

/** Per MoE layer: how often each routed expert was chosen, and the imbalance (max violation). */
export interface LayerLoad { layer: number; counts: number[]; frequency: number[]; maxVio: number }

export interface SamplingParams { temperature: number; topK: number; topP: number; repetitionPenalty: number; seed: number }

export interface StepResult {
  token: number;
  /** layer → expert ids chosen for the last position (when asked). */
  experts?: Record<number, number[]>;
  /**
   * A self-speculative step (StepOptions.speculative): the tokens after `token` it also produced (the
   * MTP draft, accepted, and the main model's token after it), and whether a draft was verified.
   */
  extra?: number[];
  speculation?: { drafted: number; accepted: number };
}

export interface StepOptions {
  /**
   * Self-speculative decoding with the model's first MTP module (mtpLayers > 0): the step verifies the
   * module's draft of the token after `token` in the same forward and returns it in `extra` when the
   * main model samples it too. Tokens are the ones plain steps would give (same sampler, same steps).
   */
  speculative?: boolean;
}

export interface ModelRunner {
  readonly cfg: ModelConfig;
  /** Tokens in the KV cache. */
  readonly cachedTokens: number;
  /** KV cache capacity (the context limit). */
  readonly capacity: number;
  /** MTP modules the checkpoint holds and the runner loaded (0: no self-speculative decoding). */
  readonly mtpLayers: number;
  /**
   * Runs `tokens` at positions [cachedTokens, cachedTokens + n) and samples the next token on the device
   * (sampling step `step`; a speculative step's extra tokens are steps step + 1, …).
   */
  step(tokens: number[], sampling: SamplingParams, step: number, history: number[], wantRouting: boolean, opts?: StepOptions): Promise<StepResult>;
  /**
   * Teacher-forced MTP logits (tests, acceptance measurements): from an empty cache, the main model over
   * tokens[0..S-1] and MTP module `depth` 0 at positions 0..S-1 with the embeddings of tokens[1..S];
   * returns [S, V] (row i predicts token i + 2). Leaves the cache empty.
   */
  mtpLogits?(tokens: number[]): Promise<Float32Array>;
  /** Runs `tokens` and returns logits: every row [n, V] or only the last [1, V]. */
  logits(tokens: number[], all: boolean): Promise<Float32Array>;
  /** Drops cached tokens past `n`. */
  truncate(n: number): void;
  /** Per MoE layer, the experts chosen for each of the last forward's rows (tests, CLI). */
  lastRouting(): Promise<Map<number, number[][]>>;
  expertLoad(): Promise<LayerLoad[]>;
  resetExpertLoad(): void;
  memory(): { kvBytes: number; kvBytesPerToken: number; mhaKvBytesPerToken: number; weightBytes: number; gpuBytes: number };
  counters(): { dispatches: number; readbacks: number; offload?: OffloadCounters };
  /** Expert offload in use (GPU runner with a budget below the full plan), else null / absent. */
  offload?(): OffloadInfo | null;
  /** Frees what the model holds (GPU buffers); the runner is unusable afterwards. */
  destroy(): void;
  /** Called once if the device is lost (the GPU runner); the engine then drops the model. */
  onDeviceLost?(listener: () => void): void;
}
