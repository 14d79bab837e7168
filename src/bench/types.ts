import type { Gpu } from '../gpu/device';
import type { Recorder } from '../gpu/recorder';

/** One measured kernel configuration (one row of the results table / JSON `results`). */
export interface BenchResult {
  suite: string;
  name: string;
  variant: string;
  shape: string;
  medianMs: number;
  gflops: number;
  gbps: number;
  /** Bytes read + written per call (the minimum the kernel must move). */
  bytes: number;
  /** Extra figures (dispatches, peak bytes, ratios against a baseline in the same run, ...). */
  extra?: Record<string, number | string>;
}

/** Ours against a peer (onnxruntime-web WebGPU / wasm) on the same device in the same run. */
export interface PeerResult {
  suite: string;
  name: string;
  peer: string;
  oursMs: number;
  peerMs: number;
  /** peerMs / oursMs: > 1 means webmoe is faster. */
  ratio: number;
}

export interface E2eResult {
  model: string;
  prefillTokPerS: number;
  decodeTokPerS: number;
  dispatchesPerToken: number;
  readbacksPerToken: number;
  bytesPerToken: number;
  minBytesPerToken: number;
  timeToFirstTokenMs?: number;
}

export interface Ceilings { fmaGflops: number; copyGBps: number; dispatchOverheadUs?: number; submitRoundTripMs?: number }

export interface BenchContext {
  gpu: Gpu;
  quick: boolean;
  ceilings: Ceilings;
  /**
   * Median wall time (ms) of `record` after warm-up: each repetition records into a fresh Recorder,
   * submits and waits for the queue. `repeat` dispatches per submit amortise submit overhead.
   */
  time(record: (rec: Recorder) => void, opts?: { warmup?: number; iters?: number; repeat?: number }): Promise<number>;
  result(r: Omit<BenchResult, 'gflops' | 'gbps'> & { flops: number }): BenchResult;
  peer(p: Omit<PeerResult, 'ratio'>): PeerResult;
  e2e(r: E2eResult): void;
  progress(message: string): void;
}

export interface BenchSuite {
  name: string;
  /** Runs in the browser page (and in Node where `nodeOk`). */
  run(ctx: BenchContext): Promise<void>;
}
