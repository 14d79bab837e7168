/**
 * The GPU model runner: one recorded command buffer per step (forward + sampling), one 4-byte readback
 * (the token id) per generated token. A prompt longer than `prefillChunk` tokens runs as several
 * forwards of at most that many tokens, each submitted on its own: a forward's temporaries live until
 * its submit, so the chunk, not the prompt, bounds them (the memory plan sizes them for the same chunk).
 */
import { kvElementBytes } from '../kernels/attention-plan';
import type { LayerLoad, ModelRunner, SamplingParams, StepResult } from './runner';
import type { ModelConfig } from './config';
import type { ModelWeights } from './deepseek';
import { forwardAsync } from './architectures';
import type { GpuBackend, GpuMoe, GpuTensor } from './gpu-backend';
import type { GpuWeight } from '../kernels/weight';
import { sampleToken } from '../kernels/sample';
import { mhaCacheBytesPerToken } from './kvcache';
import { ArgumentError } from '../errors';
import { DEFAULT_PREFILL_CHUNK } from './memory-plan';

export class GpuRunner implements ModelRunner {
  private tokenOut: GPUBuffer;
  private destroyed = false;
  private history: GPUBuffer | null = null;
  /** The ids in `history` on the device (a new generation's history need not extend the last one's). */
  private historyIds: number[] = [];

  constructor(
    readonly be: GpuBackend, readonly cfg: ModelConfig, readonly weights: ModelWeights<GpuWeight, GpuMoe>, readonly capacity: number,
    /** Most tokens of one prefill forward (LoadOptions.prefillChunk). */
    readonly prefillChunk = DEFAULT_PREFILL_CHUNK,
  ) {
    if (!Number.isInteger(prefillChunk) || prefillChunk < 1) throw new ArgumentError(`prefillChunk must be a positive integer number of tokens, got ${String(prefillChunk)}`);
    this.tokenOut = be.gpu.buffers.create('sample.token', 4);
    this.seenErrors = be.gpu.uncapturedTotal;
  }

  get cachedTokens(): number { return this.be.cache.length; }

  private seenErrors = 0;
  /** A step whose commands failed validation produced garbage: surface the device's error instead. */
  private throwNewGpuErrors(): void {
    const gpu = this.be.gpu;
    gpu.assertAlive();
    if (gpu.uncapturedTotal > this.seenErrors) {
      // The first new error is the cause; later ones are mostly "invalid due to a previous error".
      const fresh = Math.min(gpu.uncapturedTotal - this.seenErrors, gpu.uncaptured.length);
      this.seenErrors = gpu.uncapturedTotal;
      throw gpu.uncaptured[gpu.uncaptured.length - fresh];
    }
  }

  /** Records a forward (with expert offload it submits and reads the routing back per MoE layer on the way). */
  private run(tokens: number[], lastOnly: boolean, label: string, cacheOnly = false): Promise<GpuTensor> {
    const past = this.be.cache.length;
    this.be.cache.ensureCapacity(past + tokens.length);
    this.be.begin(label);
    return forwardAsync(this.be, this.cfg, this.weights, tokens, { past, lastOnly, cacheOnly });
  }

  /**
   * Runs every chunk of `tokens` but the last through the model, each only filling the KV cache (no
   * final norm, no lm_head) and submitted on its own so its temporaries return to the pool, and returns
   * the last chunk, whose forward yields the logits. Chunks start at multiples of `prefillChunk`.
   */
  private async prefillAllButLast(tokens: number[]): Promise<number[]> {
    const n = this.prefillChunk;
    if (tokens.length <= n) return tokens;
    const lastStart = Math.floor((tokens.length - 1) / n) * n;
    const routing = this.be.captureRouting;
    this.be.captureRouting = false; // only the last chunk's routing is asked for
    try {
      for (let a = 0; a < lastStart; a += n) {
        const chunk = tokens.slice(a, a + n);
        await this.run(chunk, true, 'prefill chunk', true);
        this.be.submit();
        this.be.cache.commit(chunk.length);
      }
    } finally {
      this.be.captureRouting = routing;
    }
    return tokens.slice(lastStart);
  }

  /** Uploads the repetition-penalty history incrementally: only the ids past the prefix already on the device. */
  private syncHistory(history: number[]): void {
    const gpu = this.be.gpu;
    if (!this.history || this.history.size < history.length * 4) {
      gpu.buffers.destroy(this.history);
      this.history = gpu.buffers.create('sample.history', Math.max(1024, 2 ** Math.ceil(Math.log2(history.length + 1))) * 4);
      this.historyIds = [];
    }
    const old = this.historyIds;
    let same = 0;
    while (same < old.length && same < history.length && old[same] === history[same]) same++;
    if (same < history.length) gpu.buffers.write(this.history, Uint32Array.from(history.slice(same)), same * 4);
    this.historyIds = history.slice();
  }

  onDeviceLost(listener: () => void): void {
    this.be.gpu.onLost(() => listener());
  }

  /** Device loss surfaces as the typed DeviceLostError, whatever the failing call reported. */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      // Loss is reported asynchronously and can come after the failed readback (in Chrome it does): when
      // the readback failed, wait for the lost promise (bounded), else give it a moment to settle.
      const gpu = this.be.gpu;
      const readbackFailed = (e as { code?: string } | null)?.code === 'DEVICE_LOST';
      if (!gpu.lostError) await Promise.race([gpu.device.lost, new Promise((r) => setTimeout(r, readbackFailed ? 2000 : 0))]);
      if (this.be.gpu.lostError) throw this.be.gpu.lostError;
      throw e;
    }
  }

  step(tokens: number[], sampling: SamplingParams, step: number, history: number[], wantRouting: boolean): Promise<StepResult> {
    return this.guard(() => this.stepOnce(tokens, sampling, step, history, wantRouting));
  }

  private async stepOnce(tokens: number[], sampling: SamplingParams, step: number, history: number[], wantRouting: boolean): Promise<StepResult> {
    const gpu = this.be.gpu;
    if (sampling.repetitionPenalty !== 1) this.syncHistory(history);
    this.be.captureRouting = wantRouting;
    tokens = await this.prefillAllButLast(tokens);
    const logits = await this.run(tokens, true, 'decode');
    sampleToken(gpu, this.be.rec!, {
      logits: logits.buf, V: this.cfg.vocabSize, out: this.tokenOut, params: sampling, step,
      history: sampling.repetitionPenalty !== 1 && this.history ? { ids: this.history, count: history.length } : undefined,
    });
    this.be.submit();
    this.be.cache.commit(tokens.length);
    const token = new Uint32Array(await gpu.buffers.read(this.tokenOut, 0, 4))[0];
    this.throwNewGpuErrors();
    let experts: Record<number, number[]> | undefined;
    if (wantRouting) {
      experts = {};
      const K = this.cfg.numExpertsPerTok;
      for (const [layer, r] of this.be.routingIds) {
        const ids = await gpu.buffers.readU32(r.buf, (r.rows - 1) * K * 4, K);
        experts[layer] = [...ids];
      }
      this.be.captureRouting = false;
    }
    return { token, experts };
  }

  logits(tokens: number[], all: boolean): Promise<Float32Array> {
    return this.guard(() => this.logitsOnce(tokens, all));
  }

  /**
   * Every row's logits (`all`) run as one forward: the [n, V] result is as big as the prompt anyway, and
   * lastRouting then covers every row (callers that score long texts pass them in batches). The last
   * row's logits run chunked like a step, and lastRouting covers the last chunk.
   */
  private async logitsOnce(tokens: number[], all: boolean): Promise<Float32Array> {
    this.be.captureRouting = true;
    if (!all) tokens = await this.prefillAllButLast(tokens);
    const out = await this.run(tokens, !all, 'logits');
    this.be.submit();
    this.be.cache.commit(tokens.length);
    const rows = all ? tokens.length : 1;
    const logits = await this.be.gpu.buffers.readF32(out.buf, 0, rows * this.cfg.vocabSize);
    this.throwNewGpuErrors();
    return logits;
  }

  async lastRouting(): Promise<Map<number, number[][]>> {
    const K = this.cfg.numExpertsPerTok;
    const out = new Map<number, number[][]>();
    for (const [layer, r] of this.be.routingIds) {
      const ids = await this.be.gpu.buffers.readU32(r.buf, 0, r.rows * K);
      out.set(layer, Array.from({ length: r.rows }, (_, t) => [...ids.subarray(t * K, (t + 1) * K)]));
    }
    return out;
  }

  truncate(n: number): void {
    if (n < this.be.cache.length) this.be.cache.truncate(n);
  }

  async expertLoad(): Promise<LayerLoad[]> {
    return this.be.load.read();
  }

  resetExpertLoad(): void {
    this.be.load.reset();
  }

  memory() {
    const c = this.be.cache, cfg = this.cfg;
    return {
      kvBytes: c.bytesAllocated(),
      kvBytesPerToken: c.bytesPerTokenPerLayer() * cfg.numLayers,
      mhaKvBytesPerToken: mhaCacheBytesPerToken({ layers: cfg.numLayers, heads: cfg.numHeads, qkHeadDim: cfg.qkNopeHeadDim + cfg.qkRopeHeadDim, vHeadDim: cfg.vHeadDim }, kvElementBytes(c.format)),
      weightBytes: this.be.weightBytes,
      gpuBytes: this.be.gpu.buffers.bytesAllocated,
    };
  }

  counters() {
    return { dispatches: this.be.gpu.dispatchCount, readbacks: this.be.gpu.buffers.readbacks, offload: this.be.offload ? { ...this.be.offloadCounters } : undefined };
  }

  offload() {
    const o = this.be.offload;
    return o ? { capacity: o.capacity, experts: this.cfg.nRoutedExperts, source: o.source, prefetch: o.prefetch, eviction: o.eviction, resident: this.be.residentExperts() } : null;
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.be.destroy();
    this.be.gpu.buffers.destroy(this.tokenOut);
    this.be.gpu.buffers.destroy(this.history);
    this.be.gpu.temps.destroy();
  }
}
