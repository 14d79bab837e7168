// Every family's forward is a generator of steps (src/model/steps.ts): on a backend whose MoE steps pause
// (as the GPU backend's do under expert offload), forwardAsync awaits one pause per MoE layer and gives
// the same logits as the plain forward; the synchronous driver refuses such a backend instead of
// running it wrong. CPU reference backend on the Llama-style families' fixtures (DeepSeek's steps: test/gpu/offload.test.ts).
import { describe, it, expect } from 'vitest';
import { CpuBackend, type CpuTensor } from '../../src/model/cpu-backend';
import { buildWeights } from '../../src/model/load';
import { forward, forwardAsync } from '../../src/model/architectures';
import { moeLayers } from '../../src/model/tensors';
import type { ModelConfig } from '../../src/model/config';
import { FAMILY_FIXTURES, familyCheckpoint, familyFixture } from '../helpers/families';

/** The CPU backend with MoE steps that pause once per MoE layer before computing it. */
class PausingCpuBackend extends CpuBackend {
  pauses: number[] = [];
  *moeSteps(layer: number, x: CpuTensor, e: Parameters<CpuBackend['moeForward']>[2], cfg: ModelConfig): Generator<Promise<unknown>, CpuTensor, void> {
    yield Promise.resolve().then(() => { this.pauses.push(layer); });
    return this.moeForward(layer, x, e, cfg);
  }
}

describe.each(FAMILY_FIXTURES)('%s: the forward as steps', (family) => {
  it('forwardAsync pauses in every MoE layer and gives the plain forward\'s logits; forward refuses a pausing backend', async () => {
    const ckpt = await familyCheckpoint(family);
    const cfg = ckpt.config;
    const { tokens } = familyFixture(family).ref;
    const plain = new CpuBackend(cfg);
    const want = forward(plain, cfg, await buildWeights(plain, cfg, ckpt), tokens, { past: 0 });
    const be = new PausingCpuBackend(cfg);
    const w = await buildWeights(be, cfg, ckpt);
    const got = await forwardAsync(be, cfg, w, tokens, { past: 0 });
    expect(be.pauses).toEqual(moeLayers(cfg));
    expect(got.data).toEqual(want.data);
    expect(() => forward(new PausingCpuBackend(cfg), cfg, w, tokens, { past: 0 })).toThrow(/pauses inside the forward.*use forwardAsync/);
  });
});
