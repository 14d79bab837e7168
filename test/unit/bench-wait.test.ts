import { afterEach, describe, expect, it } from 'vitest';
import { waitYielding, YIELD_AFTER_MS } from '../../src/bench/context';

// waitYielding swaps globalThis.setImmediate while dawn.node's promise is pending: a poller that
// re-queues itself through setImmediate (as dawn.node's does) must go through the real setImmediate
// for YIELD_AFTER_MS, through 0 ms timers after that, and find the original back afterwards.
describe('bench waitYielding', () => {
  const own = globalThis.setImmediate;
  afterEach(() => { globalThis.setImmediate = own; });

  it('spins for YIELD_AFTER_MS, then polls through timers, then restores setImmediate', async () => {
    let clock = 0;
    const now = () => clock;
    const kinds: string[] = [];
    const wait = () => new Promise<void>((resolve) => {
      // A fake dawn.node: every poll advances the clock by 1 ms and re-queues through the global.
      const poll = () => {
        clock += 1;
        if (clock >= 3 * YIELD_AFTER_MS) { resolve(); return; }
        const handle = globalThis.setImmediate(poll);
        kinds.push('refresh' in (handle as object) ? 'timer' : 'immediate'); // Node's Timeout has refresh(), Immediate has not
      };
      globalThis.setImmediate(poll);
    });
    await waitYielding(wait, now);
    expect(globalThis.setImmediate).toBe(own);
    const firstTimer = kinds.indexOf('timer');
    expect(firstTimer).toBeGreaterThan(YIELD_AFTER_MS - 3);
    expect(firstTimer).toBeLessThanOrEqual(YIELD_AFTER_MS);
    expect(kinds.slice(0, firstTimer).every((k) => k === 'immediate')).toBe(true);
    expect(kinds.slice(firstTimer).every((k) => k === 'timer')).toBe(true);
  });

  it('restores setImmediate when the wait rejects', async () => {
    await expect(waitYielding(() => Promise.reject(new Error('device lost')))).rejects.toThrow('device lost');
    expect(globalThis.setImmediate).toBe(own);
  });
});
