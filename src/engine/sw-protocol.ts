/**
 * What crosses between a page (createServiceWorkerEngine) and the service worker running the engine
 * (installServiceWorkerEngine). Every request is one message to the service worker with a MessagePort
 * of its own; the service worker answers on that port: `accepted` (naming its instance), then
 * `progress` / `chunk` messages, then one `result` or `error`. The page posts `cancel` on the port to
 * abort that request and no other.
 */
import type { SerializedError, WorkerModelRef } from './worker-protocol';
import type { MemoryPlan } from '../model/memory-plan';
import type { EngineStats, GenerateOptions, GenerationChunk, GenerationResult, LoadOptions, LoadProgress, ModelInfo } from './types';
import type { ChatMessage } from './text';

/** Marks webmoe's messages among whatever else a site's service worker receives. */
export const SW_PROTOCOL = 'webmoe-sw-engine/1';

type Plain<T> = Omit<T, 'onProgress' | 'onToken' | 'signal'>;

/** What the service worker holds; the same `instance` across calls means nothing was reloaded. */
export interface ServiceWorkerEngineStatus {
  /** A random id drawn when the service worker started: a new one means the browser restarted it. */
  instance: string;
  /** When this instance started (ms since the epoch). */
  startedAt: number;
  /** Model loads this instance ran (a load of the model it already holds does not count). */
  loadCount: number;
  /** The key of the loaded model (its URL and load options), or null. */
  model: string | null;
  info: ModelInfo | null;
  /** Whether the service worker has navigator.gpu. */
  webgpu: boolean;
}

export type SwRequest =
  | { protocol: typeof SW_PROTOCOL; op: 'status' }
  | { protocol: typeof SW_PROTOCOL; op: 'load'; model: WorkerModelRef; options: Plain<LoadOptions>; key: string }
  | { protocol: typeof SW_PROTOCOL; op: 'plan'; model: WorkerModelRef; options: Plain<LoadOptions> }
  | { protocol: typeof SW_PROTOCOL; op: 'generate'; kind: 'generate' | 'chat'; input: string | ChatMessage[]; options: Plain<GenerateOptions>; key: string | null }
  | { protocol: typeof SW_PROTOCOL; op: 'stats' | 'resetExpertLoad' | 'unload'; key: string | null };

export type SwReply =
  | { type: 'accepted'; instance: string }
  | { type: 'progress'; progress: LoadProgress }
  | { type: 'chunk'; chunk: GenerationChunk }
  | { type: 'result'; value: ServiceWorkerEngineStatus | ModelInfo | GenerationResult | EngineStats | MemoryPlan | null }
  | { type: 'error'; error: SerializedError };

/** Sent by the page on a request's port. */
export interface SwCancel { type: 'cancel' }

export function isSwRequest(data: unknown): data is SwRequest {
  return typeof data === 'object' && data !== null && (data as { protocol?: unknown }).protocol === SW_PROTOCOL && typeof (data as { op?: unknown }).op === 'string';
}
