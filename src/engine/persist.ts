/**
 * navigator.storage.persist() exists only in windows, not in the Worker or service worker where the
 * engine caches weights: the page-side clients ask for it when a load may cache a model, and report the
 * answer as a `cache-persist` notice (the browser asks once per page; later loads repeat the answer).
 */
import { requestPersistentStorage } from '../loader/cache';
import type { LoadOptions } from './types';

export function askPersistenceForLoad(model: unknown, o: Pick<LoadOptions, 'cache' | 'onProgress'>): void {
  if (typeof model !== 'string' || o.cache === false) return;
  const storage = (globalThis as { navigator?: { storage?: StorageManager } }).navigator?.storage;
  if (typeof storage?.persist !== 'function') return;
  void requestPersistentStorage(storage).then((r) => {
    o.onProgress?.({
      phase: 'config', bytesLoaded: 0, bytesTotal: 0, tensorsLoaded: 0, tensorsTotal: 0,
      notice: {
        kind: 'cache-persist',
        message: r.persisted
          ? 'persistent storage granted: the browser keeps the cached model when space runs low'
          : 'persistent storage not granted: the browser may evict the cached model when space runs low',
        details: { persisted: r.persisted },
      },
    });
  });
}
