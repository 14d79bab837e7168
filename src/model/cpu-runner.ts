/**
 * The CPU reference runner: the architecture file on the CPU backend with the reference sampler. Used
 * to check the GPU runner and the engine's generation logic (same seed → same tokens), not for speed.
 */
import type { LayerLoad, ModelRunner, SamplingParams, StepResult } from './runner';
import type { ModelConfig } from './config';
import type { ModelWeights } from './deepseek';
import { forward } from './architectures';
import { CpuBackend, type CpuMoe, type CpuWeight } from './cpu-backend';
import { sampleRef } from '../kernels/sample.ref';
import { expertCountsRef } from '../kernels/moe.ref';
import { maxVio } from './moe-telemetry';
import { mhaCacheBytesPerToken, latentCacheBytesPerToken } from './kvcache';

export class CpuRunner implements ModelRunner {
  readonly be: CpuBackend;
  private counts = new Map<number, number[]>();
  private steps = 0;

  constructor(readonly cfg: ModelConfig, readonly weights: ModelWeights<CpuWeight, CpuMoe>, readonly capacity: number) {
    this.be = new CpuBackend(cfg);
  }

  get cachedTokens(): number { return this.be.cachedTokens; }

  private run(tokens: number[], lastOnly: boolean) {
    const out = forward(this.be, this.cfg, this.weights, tokens, { past: this.be.cachedTokens, lastOnly });
    for (const [layer, r] of this.be.routing) {
      const c = expertCountsRef(r.ids, this.cfg.nRoutedExperts);
      const acc = this.counts.get(layer) ?? new Array(this.cfg.nRoutedExperts).fill(0);
      c.forEach((v, i) => (acc[i] += v));
      this.counts.set(layer, acc);
    }
    this.steps++;
    return out;
  }

  async step(tokens: number[], sampling: SamplingParams, step: number, history: number[], wantRouting: boolean): Promise<StepResult> {
    const logits = this.run(tokens, true);
    const token = sampleRef(logits.data, sampling, step, sampling.repetitionPenalty !== 1 ? history : undefined);
    const experts = wantRouting ? Object.fromEntries([...this.be.routing].map(([l, r]) => [l, r.ids[r.ids.length - 1]])) : undefined;
    return { token, experts };
  }

  async logits(tokens: number[], all: boolean): Promise<Float32Array> {
    return this.run(tokens, !all).data;
  }

  truncate(n: number): void { this.be.truncate(n); }

  async lastRouting(): Promise<Map<number, number[][]>> {
    return new Map([...this.be.routing].map(([l, r]) => [l, r.ids]));
  }

  async expertLoad(): Promise<LayerLoad[]> {
    const total = (c: number[]) => c.reduce((a, b) => a + b, 0) || 1;
    return [...this.counts].map(([layer, counts]) => ({ layer, counts, frequency: counts.map((c) => c / total(counts)), maxVio: maxVio(counts) }));
  }

  resetExpertLoad(): void { this.counts.clear(); }

  memory() {
    const cfg = this.cfg;
    // MLA: the latent row; GQA: K and V of every kv head.
    const per = cfg.attention === 'gqa' ? cfg.numLayers * 2 * cfg.numKvHeads * cfg.headDim * 4 : latentCacheBytesPerToken({ layers: cfg.numLayers, kvLoraRank: cfg.kvLoraRank, ropeDim: cfg.qkRopeHeadDim }, 4);
    return {
      kvBytes: per * this.cachedTokens, kvBytesPerToken: per,
      mhaKvBytesPerToken: mhaCacheBytesPerToken({ layers: cfg.numLayers, heads: cfg.numHeads, qkHeadDim: cfg.qkNopeHeadDim + cfg.qkRopeHeadDim, vHeadDim: cfg.vHeadDim }, 4),
      weightBytes: 0, gpuBytes: 0,
    };
  }

  counters() { return { dispatches: 0, readbacks: 0 }; }
  destroy(): void {}
}
