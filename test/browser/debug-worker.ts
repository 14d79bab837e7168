/// <reference lib="webworker" />
/**
 * A test worker entry: the production worker host (src/worker.ts wires the same), plus a hook that
 * destroys the device the engine acquired, as a driver reset would, so tests can check that device
 * loss reaches the client as DEVICE_LOST. The hook lives here, not in the product.
 */
import * as Comlink from 'comlink';
import { WorkerHost } from '../../src/engine/worker-host';
import { browserEnvironment } from '../../src/engine/engine';
import { installErrorTransfer } from '../../src/engine/worker-protocol';
import type { Gpu } from '../../src/model/assemble';

export class DebugWorkerHost extends WorkerHost {
  private gpu: Gpu | null = null;

  constructor() {
    super({
      ...browserEnvironment,
      acquire: async (options, log) => (this.gpu = await browserEnvironment.acquire(options, log)),
    });
  }

  /** Destroys the engine's current device; false when it has none (nothing loaded yet) or lost it already. */
  loseDevice(): boolean {
    if (!this.gpu || this.gpu.lostError) return false;
    this.gpu.device.destroy();
    return true;
  }
}

installErrorTransfer();
Comlink.expose(new DebugWorkerHost());
