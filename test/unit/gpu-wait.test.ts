import { afterEach, describe, expect, it } from 'vitest';
import { setYieldingWaits, yieldingWait, YIELD_AFTER_MS } from '../../src/gpu/wait';

// yieldingWait swaps globalThis.setImmediate while dawn.node's promises are pending: a poller that
// re-queues itself through setImmediate (as dawn.node's does) must go through the real setImmediate
// for YIELD_AFTER_MS, through 0 ms timers after that, and find the original back afterwards, also
// when waits overlap or one rejects.
const own = globalThis.setImmediate;
const isTimer = (handle: unknown) => 'refresh' in (handle as object); // Node's Timeout has refresh(), Immediate has not

/** A fake dawn.node wait: every poll advances the clock by 1 ms and re-queues through the global. */
function fakeWait(clock: { t: number }, polls: number, kinds: string[], fail = false): () => Promise<void> {
  return () => new Promise<void>((resolve, reject) => {
    let n = 0;
    const poll = () => {
      clock.t += 1;
      if (++n >= polls) { if (fail) reject(new Error('device lost')); else resolve(); return; }
      kinds.push(isTimer(globalThis.setImmediate(poll)) ? 'timer' : 'immediate');
    };
    globalThis.setImmediate(poll);
  });
}

describe('yieldingWait (src/gpu/wait.ts)', () => {
  afterEach(() => { globalThis.setImmediate = own; setYieldingWaits(true); });

  it('spins for YIELD_AFTER_MS, then polls through timers, then restores setImmediate', async () => {
    const clock = { t: 0 }, kinds: string[] = [];
    await yieldingWait(fakeWait(clock, 3 * YIELD_AFTER_MS, kinds), () => clock.t);
    expect(globalThis.setImmediate).toBe(own);
    const firstTimer = kinds.indexOf('timer');
    expect(firstTimer).toBeGreaterThan(YIELD_AFTER_MS - 3);
    expect(firstTimer).toBeLessThanOrEqual(YIELD_AFTER_MS);
    expect(kinds.slice(0, firstTimer).every((k) => k === 'immediate')).toBe(true);
    expect(kinds.slice(firstTimer).every((k) => k === 'timer')).toBe(true);
  });

  it('returns the wait\'s value and restores setImmediate when the wait rejects', async () => {
    await expect(yieldingWait(() => Promise.resolve(42))).resolves.toBe(42);
    const clock = { t: 0 };
    await expect(yieldingWait(fakeWait(clock, 2 * YIELD_AFTER_MS, [], true), () => clock.t)).rejects.toThrow('device lost');
    expect(globalThis.setImmediate).toBe(own);
  });

  it('overlapping waits share one swap and the last to settle restores the original', async () => {
    const clock = { t: 0 }, a: string[] = [], b: string[] = [];
    const first = yieldingWait(fakeWait(clock, 3 * YIELD_AFTER_MS, a), () => clock.t);
    const second = yieldingWait(fakeWait(clock, 5 * YIELD_AFTER_MS, b), () => clock.t);
    await first;
    expect(globalThis.setImmediate).not.toBe(own); // the second is still pending
    await second;
    expect(globalThis.setImmediate).toBe(own);
    expect(a.includes('timer') && b.includes('timer')).toBe(true);
  });

  it('setYieldingWaits(false) leaves dawn.node\'s spinning wait alone', async () => {
    expect(setYieldingWaits(false)).toBe(true);
    const clock = { t: 0 }, kinds: string[] = [];
    const wait = fakeWait(clock, 3 * YIELD_AFTER_MS, kinds);
    let seen: unknown = null;
    await yieldingWait(() => { seen = globalThis.setImmediate; return wait(); }, () => clock.t);
    expect(seen).toBe(own);
    expect(kinds.every((k) => k === 'immediate')).toBe(true);
  });
});
