/**
 * The WebAssembly model runner: the architecture file on the WASM backend, sampling the last logits row
 * with the GPU sampler's algorithm and random stream (model/cpu-sampler.ts: same seed, same tokens as
 * on WebGPU). A prompt runs in forwards of at most `prefillChunk` tokens, as on the GPU, so the
 * activations of one forward stay bounded.
 */
import type { LayerLoad, ModelRunner, SamplingParams, StepOptions, StepResult } from './runner';
import type { ModelConfig } from './config';
import type { ModelWeights } from './deepseek';
import { forward } from './architectures';
import { mtpForward } from './deepseek';
import { MtpState, argmax, type SpecPlan } from './speculative';
import type { WasmBackend, WasmMoe, WasmTensor } from './wasm-backend';
import type { WasmWeight } from '../kernels/wasm/kernels';
import { sampleRowOnCpu } from './cpu-sampler';
import { maxVio } from './moe-telemetry';
import { mhaCacheBytesPerToken } from './kvcache';
import { wasmKvValuesPerToken } from './wasm-backend';
import { ArgumentError } from '../errors';
import { DEFAULT_PREFILL_CHUNK } from './memory-plan';

export class WasmRunner implements ModelRunner {
  private destroyed = false;
  /** Self-speculative decoding state (models with MTP layers: model/speculative.ts). */
  readonly spec = new MtpState();
  private kernelCalls = 0;

  constructor(readonly be: WasmBackend, readonly cfg: ModelConfig, readonly weights: ModelWeights<WasmWeight, WasmMoe>, readonly prefillChunk = DEFAULT_PREFILL_CHUNK) {
    if (!Number.isInteger(prefillChunk) || prefillChunk < 1) throw new ArgumentError(`prefillChunk must be a positive integer number of tokens, got ${String(prefillChunk)}`);
  }

  get capacity(): number { return this.be.capacity; }
  get mtpLayers(): number { return this.weights.mtp?.length ?? 0; }
  get cachedTokens(): number { return this.be.length; }

  /** Runs `tokens` (chunked); returns the last chunk's output rows (logits, all or last) as a copy. */
  private run(tokens: number[], lastOnly: boolean, routing: boolean): Float32Array {
    if (this.destroyed) throw new Error('WasmRunner: destroyed');
    const be = this.be, n = this.prefillChunk;
    const lastStart = lastOnly ? Math.floor((tokens.length - 1) / n) * n : 0;
    for (let a = 0; a < lastStart; a += n) {
      const chunk = tokens.slice(a, a + n);
      be.captureRouting = false;
      be.begin();
      try {
        forward(be, this.cfg, this.weights, chunk, { past: be.length, lastOnly: true, cacheOnly: true });
        be.length += chunk.length;
      } finally {
        be.finish();
      }
    }
    const last = tokens.slice(lastStart);
    be.captureRouting = routing;
    be.routing.clear();
    be.begin();
    try {
      const out = forward(be, this.cfg, this.weights, last, { past: be.length, lastOnly });
      be.length += last.length;
      return be.k.readF32(out.ptr, out.rows * out.cols);
    } finally {
      be.finish();
      this.spec.appended(tokens);
    }
  }

  /** The main model over `tokens` (one forward pass, open): every row's final-norm hidden state (the MTP input). */
  private hiddenOf(tokens: number[]): WasmTensor {
    const be = this.be;
    const h = forward(be, this.cfg, this.weights, tokens, { past: be.length, cacheOnly: true });
    be.length += tokens.length;
    return be.rmsNorm(h, this.weights.norm, this.cfg.rmsNormEps);
  }

  /** The MTP module over the rows of `hidden` with the embeddings of `next` (open forward pass); its logits. */
  private mtpOf(hidden: WasmTensor, next: number[], lastOnly: boolean): WasmTensor {
    const be = this.be, m = this.weights.mtp![0];
    be.captureRouting = false;
    const out = mtpForward(be, this.cfg, m, be.embed(m.embed, next, this.cfg.hiddenSize), hidden, be.mtpLength, lastOnly);
    be.mtpLength += next.length;
    return out;
  }

  private truncateMtp(n: number): void { this.be.mtpLength = Math.min(this.be.mtpLength, Math.max(0, n)); }

  /**
   * A self-speculative step (model/speculative.ts), as the CPU reference runner computes it: a plain step
   * runs the pending tokens through both the main model and the MTP module (chunked like a prompt) and
   * keeps the MTP's argmax as the draft; a verify step runs [token, draft] (S = 2 rows) and drops row 1 of
   * both caches when the draft is rejected.
   */
  private speculativeStep(tokens: number[], sampling: SamplingParams, step: number, history: number[]): StepResult {
    if (this.destroyed) throw new Error('WasmRunner: destroyed');
    const be = this.be, V = this.cfg.vocabSize;
    const plan: SpecPlan = this.spec.plan(tokens, this.capacity);
    be.length = Math.min(be.length, plan.rewindTo);
    this.truncateMtp(plan.rewindTo);
    const penalty = sampling.repetitionPenalty !== 1;
    be.captureRouting = false;
    be.routing.clear();
    if (plan.draft === null) {
      const feed = plan.feed, n = this.prefillChunk;
      let token = -1, draft = -1;
      for (let a = 0; a < feed.length; a += n) {
        const chunk = feed.slice(a, a + n), last = a + n >= feed.length;
        be.captureRouting = false;
        be.begin();
        try {
          const hidden = this.hiddenOf(chunk);
          if (last) {
            const logits = be.linear(be.lastRow(hidden), this.weights.lmHead);
            token = sampleRowOnCpu(be.k.readF32(logits.ptr, V), sampling, step, penalty ? history : undefined);
          }
          const next = last ? [...feed.slice(a + 1), token] : feed.slice(a + 1, a + n + 1);
          const ml = this.mtpOf(hidden, next, true);
          if (last) draft = argmax(be.k.viewF32(ml.ptr, V));
        } finally {
          be.finish();
        }
      }
      this.spec.afterPlain(plan, token, draft);
      return { token };
    }
    const d = plan.draft;
    let x: number, y: number, dx: number, dy: number;
    be.begin();
    try {
      const hidden = this.hiddenOf([plan.feed[0], d]);
      const logits = be.k.readF32(be.linear(hidden, this.weights.lmHead).ptr, 2 * V);
      x = sampleRowOnCpu(logits.subarray(0, V), sampling, step, penalty ? history : undefined);
      y = sampleRowOnCpu(logits.subarray(V, 2 * V), sampling, step + 1, penalty ? [...history, d] : undefined);
      const ml = this.mtpOf(hidden, [x, y], false);
      const mv = be.k.viewF32(ml.ptr, 2 * V);
      dx = argmax(mv, 0, V);
      dy = argmax(mv, V, V);
    } finally {
      be.finish();
    }
    const r = this.spec.afterVerify(plan, x, y, dx, dy);
    be.length = Math.min(be.length, r.keep);
    this.truncateMtp(r.keep);
    return { token: r.tokens[0], extra: r.tokens.slice(1), speculation: { drafted: 1, accepted: r.tokens.length - 1 } };
  }

  /** The MTP module's logits for positions [0, tokens.length − 1) of `tokens` (tests: against model.py); leaves the caches empty. */
  async mtpLogits(tokens: number[]): Promise<Float32Array> {
    if (!this.mtpLayers) throw new ArgumentError('mtpLogits: the model has no MTP layer');
    this.truncate(0);
    const S = tokens.length - 1;
    this.be.begin();
    try {
      const ml = this.mtpOf(this.hiddenOf(tokens.slice(0, S)), tokens.slice(1), false);
      return this.be.k.readF32(ml.ptr, S * this.cfg.vocabSize);
    } finally {
      this.be.finish();
      this.truncate(0);
    }
  }

  async step(tokens: number[], sampling: SamplingParams, step: number, history: number[], wantRouting: boolean, opts?: StepOptions): Promise<StepResult> {
    // With the routing view on, steps run plainly (as on the GPU runner): the MTP cache catches up later.
    if (opts?.speculative && this.mtpLayers > 0 && !wantRouting) return this.speculativeStep(tokens, sampling, step, history);
    const logits = this.run(tokens, true, wantRouting);
    const token = sampleRowOnCpu(logits, sampling, step, sampling.repetitionPenalty !== 1 ? history : undefined);
    const experts = wantRouting ? Object.fromEntries([...this.be.routing].map(([l, rows]) => [l, rows[rows.length - 1]])) : undefined;
    return { token, experts };
  }

  async logits(tokens: number[], all: boolean): Promise<Float32Array> {
    return this.run(tokens, !all, true);
  }

  truncate(n: number): void {
    this.be.length = Math.min(this.be.length, Math.max(0, n));
    this.truncateMtp(n);
    this.spec.truncate(Math.max(0, n));
  }

  async lastRouting(): Promise<Map<number, number[][]>> { return new Map(this.be.routing); }

  async expertLoad(): Promise<LayerLoad[]> {
    // The main model's layers only (the MTP layer's routing is not the model's load).
    return [...this.be.counts].filter(([l]) => l < this.cfg.numLayers).sort((a, b) => a[0] - b[0]).map(([layer, c]) => {
      const counts = [...c];
      const total = counts.reduce((a, b) => a + b, 0) || 1;
      return { layer, counts, frequency: counts.map((v) => v / total), maxVio: maxVio(counts) };
    });
  }

  resetExpertLoad(): void { this.be.counts.clear(); }

  memory() {
    const cfg = this.cfg;
    return {
      kvBytes: this.be.kvBytes,
      kvBytesPerToken: cfg.numLayers * wasmKvValuesPerToken(cfg) * 4,
      mhaKvBytesPerToken: mhaCacheBytesPerToken({ layers: cfg.numLayers, heads: cfg.numHeads, qkHeadDim: cfg.qkNopeHeadDim + cfg.qkRopeHeadDim, vHeadDim: cfg.vHeadDim }, 4),
      weightBytes: this.be.weightBytes,
      // No GPU memory: the WASM engine's bytes are the module's linear memory (weights, cache, activations).
      gpuBytes: 0,
    };
  }

  counters() { return { dispatches: this.kernelCalls, readbacks: 0 }; }

  /** Stops the WASM engine's worker pool; the runner is unusable afterwards. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.be.k.destroy();
  }
}
