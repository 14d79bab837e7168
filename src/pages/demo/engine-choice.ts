/**
 * Which engine the demo talks to: the worker engine on this GPU (default), the service-worker engine on
 * this GPU (the model stays loaded across pages), or a remote OpenAI-compatible server (`webmoe serve`,
 * vLLM, SGLang) by base URL, API key and model. Kept in localStorage.
 */
export type EngineKind = 'worker' | 'service-worker' | 'remote';

export interface EngineChoice {
  kind: EngineKind;
  /** Remote only: the API root, e.g. http://127.0.0.1:8000/v1. */
  baseURL: string;
  apiKey: string;
  /** Remote only: the server's model id ('' = the first it lists). */
  model: string;
}

export const ENGINE_LABELS: Record<EngineKind, string> = {
  worker: 'Worker',
  'service-worker': 'Service worker',
  remote: 'Remote',
};

const KEY = 'webmoe.demo.engine';
export const DEFAULT_CHOICE: EngineChoice = { kind: 'worker', baseURL: 'http://127.0.0.1:8000/v1', apiKey: '', model: '' };

/** The stored choice, or the default when none (or an unreadable one) is stored. */
export function loadEngineChoice(storage: Pick<Storage, 'getItem'> | null = globalThis.localStorage ?? null): EngineChoice {
  try {
    const v = JSON.parse(storage?.getItem(KEY) ?? 'null') as Partial<EngineChoice> | null;
    if (!v || !(v.kind && v.kind in ENGINE_LABELS)) return { ...DEFAULT_CHOICE };
    const str = (x: unknown, d: string) => (typeof x === 'string' ? x : d);
    return { kind: v.kind, baseURL: str(v.baseURL, DEFAULT_CHOICE.baseURL), apiKey: str(v.apiKey, ''), model: str(v.model, '') };
  } catch {
    return { ...DEFAULT_CHOICE };
  }
}

export function saveEngineChoice(c: EngineChoice, storage: Pick<Storage, 'setItem'> | null = globalThis.localStorage ?? null): void {
  try {
    storage?.setItem(KEY, JSON.stringify(c));
  } catch {
    /* storage disabled: the choice lasts for this page only */
  }
}
