/**
 * A forward pass as steps: a generator that yields a promise wherever the backend must wait before the
 * forward goes on (expert offload: Backend.moeSteps reads a layer's routing back and uploads the experts
 * it chose) and returns the forward's output. Every architecture file writes its forward so
 * (architectures.ts drives them); a backend that never pauses (CPU, WASM, a fully resident GPU) runs the
 * steps synchronously.
 */
export type Steps<R> = Generator<Promise<unknown>, R, void>;

/** Runs steps that must not pause (a backend without expert offload); `what` names the caller in the error. */
export function runSteps<R>(steps: Steps<R>, what: string): R {
  const r = steps.next();
  if (!r.done) throw new Error(`${what}: this backend pauses inside the forward (expert offload): use forwardAsync`);
  return r.value;
}

/** Runs steps, awaiting each pause. */
export async function runStepsAsync<R>(steps: Steps<R>): Promise<R> {
  for (let r = steps.next(); ; r = steps.next()) {
    if (r.done) return r.value;
    await r.value;
  }
}
