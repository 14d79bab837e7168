/**
 * The CPU reference runner: the architecture file on the CPU backend with the reference sampler. Used
 * to check the GPU runner and the engine's generation logic (same seed → same tokens), not for speed.
 */
import type { LayerLoad, ModelRunner, SamplingParams, StepOptions, StepResult } from './runner';
import type { ModelConfig } from './config';
import { forward } from './architectures';
import { mtpForward, type ModelWeights } from './deepseek';
import { CpuBackend, type CpuMoe, type CpuTensor, type CpuWeight } from './cpu-backend';
import { sampleRef } from '../kernels/sample.ref';
import { expertCountsRef } from '../kernels/moe.ref';
import { maxVio } from './moe-telemetry';
import { mhaCacheBytesPerToken, latentCacheBytesPerToken } from './kvcache';
import { MtpState, argmax, type SpecPlan } from './speculative';

export class CpuRunner implements ModelRunner {
  readonly be: CpuBackend;
  private counts = new Map<number, number[]>();
  private steps = 0;
  /** Self-speculative decoding state (models with MTP layers). */
  readonly spec = new MtpState();

  constructor(readonly cfg: ModelConfig, readonly weights: ModelWeights<CpuWeight, CpuMoe>, readonly capacity: number) {
    this.be = new CpuBackend(cfg);
  }

  get cachedTokens(): number { return this.be.cachedTokens; }
  get mtpLayers(): number { return this.weights.mtp?.length ?? 0; }

  /** Routing of the main model's MoE layers only (the MTP layers' routing is not the model's load). */
  private countRouting(): void {
    for (const [layer, r] of this.be.routing) {
      if (layer >= this.cfg.numLayers) continue;
      const c = expertCountsRef(r.ids, this.cfg.nRoutedExperts);
      const acc = this.counts.get(layer) ?? new Array(this.cfg.nRoutedExperts).fill(0);
      c.forEach((v, i) => (acc[i] += v));
      this.counts.set(layer, acc);
    }
    this.steps++;
  }

  private run(tokens: number[], lastOnly: boolean) {
    const out = forward(this.be, this.cfg, this.weights, tokens, { past: this.be.cachedTokens, lastOnly });
    this.countRouting();
    this.spec.appended(tokens);
    return out;
  }

  /** The main model over `tokens`: every row's final-norm hidden state (the MTP input) and the logits of every row or the last. */
  private runWithHidden(tokens: number[], lastOnly: boolean): { logits: CpuTensor; hidden: CpuTensor } {
    const h = forward(this.be, this.cfg, this.weights, tokens, { past: this.be.cachedTokens, cacheOnly: true });
    this.countRouting();
    const hidden = this.be.rmsNorm(h, this.weights.norm, this.cfg.rmsNormEps);
    const logits = this.be.linear(lastOnly ? this.be.lastRow(hidden) : hidden, this.weights.lmHead);
    return { logits, hidden };
  }

  private mtpCacheTruncate(n: number): void {
    const c = this.be.cache[this.weights.mtp![0].layer];
    if (c) c.length = Math.min(c.length, n);
  }

  async step(tokens: number[], sampling: SamplingParams, step: number, history: number[], wantRouting: boolean, opts?: StepOptions): Promise<StepResult> {
    if (opts?.speculative && this.mtpLayers > 0) return this.speculativeStep(tokens, sampling, step, history, wantRouting);
    const logits = this.run(tokens, true);
    const token = sampleRef(logits.data, sampling, step, sampling.repetitionPenalty !== 1 ? history : undefined);
    return { token, experts: this.experts(wantRouting) };
  }

  private experts(want: boolean): Record<number, number[]> | undefined {
    if (!want) return undefined;
    return Object.fromEntries([...this.be.routing].filter(([l]) => l < this.cfg.numLayers).map(([l, r]) => [l, r.ids[r.ids.length - 1]]));
  }

  private speculativeStep(tokens: number[], sampling: SamplingParams, step: number, history: number[], wantRouting: boolean): Promise<StepResult> {
    const plan: SpecPlan = this.spec.plan(tokens, this.capacity);
    const m = this.weights.mtp![0];
    const D = this.cfg.hiddenSize, V = this.cfg.vocabSize;
    const penalty = sampling.repetitionPenalty !== 1;
    this.be.truncate(plan.rewindTo);
    this.mtpCacheTruncate(plan.rewindTo);
    const n = plan.rewindTo;
    if (plan.draft === null) {
      const { logits, hidden } = this.runWithHidden(plan.feed, true);
      const token = sampleRef(logits.data, sampling, step, penalty ? history : undefined);
      const experts = this.experts(wantRouting);
      const emb = this.be.embed(m.embed, [...plan.feed.slice(1), token], D);
      const draft = argmax(mtpForward(this.be, this.cfg, m, emb, hidden, n, true).data);
      this.be.routing.delete(m.layer);
      this.spec.afterPlain(plan, token, draft);
      return Promise.resolve({ token, experts });
    }
    const d = plan.draft;
    const { logits, hidden } = this.runWithHidden([plan.feed[0], d], false);
    const x = sampleRef(logits.data.subarray(0, V), sampling, step, penalty ? history : undefined);
    const y = sampleRef(logits.data.subarray(V, 2 * V), sampling, step + 1, penalty ? [...history, d] : undefined);
    const experts = this.experts(wantRouting);
    const emb = this.be.embed(m.embed, [x, y], D);
    const ml = mtpForward(this.be, this.cfg, m, emb, hidden, n).data;
    this.be.routing.delete(m.layer);
    const r = this.spec.afterVerify(plan, x, y, argmax(ml, 0, V), argmax(ml, V, V));
    this.be.truncate(r.keep);
    this.mtpCacheTruncate(r.keep);
    return Promise.resolve({ token: r.tokens[0], extra: r.tokens.slice(1), experts, speculation: { drafted: 1, accepted: r.tokens.length - 1 } });
  }

  async mtpLogits(tokens: number[]): Promise<Float32Array> {
    const m = this.weights.mtp?.[0];
    if (!m) throw new Error('mtpLogits: the model has no MTP layer');
    this.truncate(0);
    const S = tokens.length - 1;
    const { hidden } = this.runWithHidden(tokens.slice(0, S), false);
    const out = mtpForward(this.be, this.cfg, m, this.be.embed(m.embed, tokens.slice(1), this.cfg.hiddenSize), hidden, 0).data;
    this.be.routing.delete(m.layer);
    this.truncate(0);
    return out;
  }

  async logits(tokens: number[], all: boolean): Promise<Float32Array> {
    return this.run(tokens, !all).data;
  }

  truncate(n: number): void {
    this.be.truncate(n);
    this.spec.truncate(n);
  }

  async lastRouting(): Promise<Map<number, number[][]>> {
    return new Map([...this.be.routing].filter(([l]) => l < this.cfg.numLayers).map(([l, r]) => [l, r.ids]));
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
