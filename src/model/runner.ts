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
}

export interface ModelRunner {
  readonly cfg: ModelConfig;
  /** Tokens in the KV cache. */
  readonly cachedTokens: number;
  /** KV cache capacity (the context limit). */
  readonly capacity: number;
  /** Runs `tokens` at positions [cachedTokens, cachedTokens + n) and samples the next token on the device. */
  step(tokens: number[], sampling: SamplingParams, step: number, history: number[], wantRouting: boolean): Promise<StepResult>;
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
