/**
 * The push → pull bridge behind generate() and chat(), in the engine and in the worker client alike:
 * a task pushes chunks through a callback and settles with the result; the consumer pulls them from an
 * async generator whose return value is that result.
 */

/**
 * Starts `start(emit)` at the first pull and yields every chunk it emits, then returns what it
 * resolves to (or throws what it rejects with). A consumer that stops iterating before the task has
 * settled calls `stopEarly` (which aborts the generation it started).
 */
export async function* pullChunks<C, R>(start: (emit: (chunk: C) => void) => Promise<R>, stopEarly: () => void): AsyncGenerator<C, R> {
  const chunks: C[] = [];
  let wake: (() => void) | null = null;
  let settled = false;
  const task = start((c) => {
    chunks.push(c);
    wake?.();
  }).finally(() => {
    settled = true;
    wake?.();
  });
  task.catch(() => {}); // observed below; this only keeps an early-return consumer from an unhandled rejection
  try {
    for (;;) {
      if (chunks.length) { yield chunks.shift()!; continue; }
      if (settled) break;
      await new Promise<void>((r) => (wake = r));
      wake = null;
    }
    const result = await task;
    // Callbacks and results can travel on different channels (comlink): drain what came in meanwhile.
    while (chunks.length) yield chunks.shift()!;
    return result;
  } finally {
    if (!settled) stopEarly();
  }
}
