/**
 * Waiting for the GPU without spinning a CPU core (Node + dawn.node).
 *
 * dawn.node (the `webgpu` package) polls its events from a setImmediate callback that queues the next
 * one while any of its promises (mapAsync, onSubmittedWorkDone, popErrorScope) is pending, so the JS
 * thread spins on a core for the whole wait. With a software adapter (SwiftShader) that core is one the
 * adapter's own workgroup threads need: on a 2-core machine split-K ×2 of absorbed-MLA decode measured
 * 1.25× one split with the spin and 1.5–1.8× without it, and every kernel ran up to 1.8× slower under
 * other load (docs/attention.md). dawn.node has no option for this, but it looks setImmediate up on
 * every poll: while a wait is pending and older than YIELD_AFTER_MS, `yieldingWait` answers those
 * lookups with 0 ms timers (Node: ~1 ms apart), which let the thread sleep. Short waits keep the
 * spin's latency; a long one ends up to ~1 ms late (≤ 10 % of any wait this affects).
 *
 * The global is swapped once for all concurrent waits (reference counted) and restored when the last
 * one settles. Other code calling setImmediate during a long wait gets a 0 ms timer instead: the same
 * order of callbacks, ~1 ms later. In a browser (no setImmediate) a wait is the plain promise.
 */

/** How long a wait spins (dawn.node's own polling) before the JS thread yields between polls. */
export const YIELD_AFTER_MS = 10;

type Immediate = (fn: (...args: unknown[]) => void, ...args: unknown[]) => unknown;
type Global = { setImmediate?: Immediate };

const defaultNow = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

let enabled = true;
let pending = 0;
let own: Immediate | null = null;
let installed: Immediate | null = null;
/** Start of the most recent wait: a new wait spins for its first YIELD_AFTER_MS again. */
let since = 0;
let clock: () => number = defaultNow;

/**
 * Turns the yielding off (dawn.node's spinning wait, for before/after comparisons: the bench's
 * `--busy-wait`) or back on. Returns the previous setting.
 */
export function setYieldingWaits(on: boolean): boolean {
  const was = enabled;
  enabled = on;
  return was;
}

/** Awaits `wait` (a promise dawn.node settles), letting the JS thread sleep once it is older than YIELD_AFTER_MS. */
export async function yieldingWait<T>(wait: () => Promise<T>, now: () => number = defaultNow): Promise<T> {
  const g = globalThis as Global;
  if (!enabled || typeof g.setImmediate !== 'function') return wait();
  if (pending++ === 0) {
    own = g.setImmediate;
    clock = now;
    installed = (fn, ...args) => (clock() - since < YIELD_AFTER_MS ? own!(fn, ...args) : setTimeout(fn, 0, ...args));
    g.setImmediate = installed;
  }
  since = clock();
  try {
    return await wait();
  } finally {
    if (--pending === 0) {
      // Someone else may have replaced the global meanwhile: theirs stays.
      if (g.setImmediate === installed) g.setImmediate = own!;
      own = installed = null;
    }
  }
}
