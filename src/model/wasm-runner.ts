/**
 * The WebAssembly model runner: the architecture file on the WASM backend, sampling the last logits row
 * with the GPU sampler's algorithm and random stream (model/cpu-sampler.ts: same seed, same tokens as
 * on WebGPU). A prompt runs in forwards of at most `prefillChunk` tokens, as on the GPU, so the
 * activations of one forward stay bounded.
 */
import type { LayerLoad, ModelRunner, SamplingParams, StepResult } from './runner';
import type { ModelConfig } from './config';
import type { ModelWeights } from './deepseek';
import { forward } from './architectures';
import type { WasmBackend, WasmMoe } from './wasm-backend';
import type { WasmWeight } from '../kernels/wasm/kernels';
import { sampleRowOnCpu } from './cpu-sampler';
import { maxVio } from './moe-telemetry';
import { mhaCacheBytesPerToken } from './kvcache';
import { wasmKvValuesPerToken } from './wasm-backend';
import { ArgumentError } from '../errors';
import { DEFAULT_PREFILL_CHUNK } from './memory-plan';

export class WasmRunner implements ModelRunner {
  /** Self-speculative decoding (MTP) runs on the GPU and CPU-reference runners; the WASM engine decodes plainly. */
  readonly mtpLayers = 0;
  private destroyed = false;
  private kernelCalls = 0;

  constructor(readonly be: WasmBackend, readonly cfg: ModelConfig, readonly weights: ModelWeights<WasmWeight, WasmMoe>, readonly prefillChunk = DEFAULT_PREFILL_CHUNK) {
    if (!Number.isInteger(prefillChunk) || prefillChunk < 1) throw new ArgumentError(`prefillChunk must be a positive integer number of tokens, got ${String(prefillChunk)}`);
  }

  get capacity(): number { return this.be.capacity; }
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
    }
  }

  async step(tokens: number[], sampling: SamplingParams, step: number, history: number[], wantRouting: boolean): Promise<StepResult> {
    const logits = this.run(tokens, true, wantRouting);
    const token = sampleRowOnCpu(logits, sampling, step, sampling.repetitionPenalty !== 1 ? history : undefined);
    const experts = wantRouting ? Object.fromEntries([...this.be.routing].map(([l, rows]) => [l, rows[rows.length - 1]])) : undefined;
    return { token, experts };
  }

  async logits(tokens: number[], all: boolean): Promise<Float32Array> {
    return this.run(tokens, !all, true);
  }

  truncate(n: number): void { this.be.length = Math.min(this.be.length, Math.max(0, n)); }

  async lastRouting(): Promise<Map<number, number[][]>> { return new Map(this.be.routing); }

  async expertLoad(): Promise<LayerLoad[]> {
    return [...this.be.counts].sort((a, b) => a[0] - b[0]).map(([layer, c]) => {
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
