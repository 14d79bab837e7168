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
  /** Floating-point operations per call (set by ctx.result; the roofline's arithmetic intensity is flops / bytes). */
  flops?: number;
  /** gflops / ceilings.fmaGflops · 100 and gbps / ceilings.copyGBps · 100 (set by ctx.result). */
  pctFma?: number;
  pctCopy?: number;
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
  /** The shape both sides ran, and how the peer was driven (I/O location, threads, ...). */
  shape?: string;
  note?: string;
  /** The peer's op (matches a PeerCheck's `op`: the e2e test requires a passing check for each). */
  op?: string;
  /**
   * True when both sides were timed here with one protocol (src/bench/peers.ts timeCalls); false or
   * absent when `oursMs` came from the suite's own measurement.
   */
  symmetric?: boolean;
  /** How the row was timed (clock, submits and waits per call, I/O location, warm-up and iterations). */
  timing?: string;
}

/** A peer's output checked against ours on one small shape, so the peer really computes the same thing. */
export interface PeerCheck {
  /** Set by the context to the current suite. */
  suite?: string;
  peer: string;
  op: string;
  shape: string;
  maxAbsDiff: number;
  tolerance: number;
  ok: boolean;
  note?: string;
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

/** What `npm run bench -- --json FILE` writes and the benchmark page exports. */
export interface BenchReport {
  version: 1;
  timestamp: string;
  quick: boolean;
  userAgent: string;
  /** 'browser' (the page / headless Chromium) or 'node' (dawn.node). */
  env: 'browser' | 'node';
  /** How medians were taken: 'wall' (submit → onSubmittedWorkDone) or 'timestamp' (GPU timestamp queries). */
  timing: 'wall' | 'timestamp';
  device: {
    vendor: string;
    architecture: string;
    device: string;
    description: string;
    isFallbackAdapter: boolean;
    features: string[];
    limits: Record<string, number>;
  };
  ceilings: Required<Ceilings>;
  results: BenchResult[];
  peers: PeerResult[];
  peerChecks: PeerCheck[];
  e2e: E2eResult[];
  errors: { suite: string; message: string }[];
  /** Suites run, in order, and the wall time each took (ms; the ceilings under 'ceilings'). */
  suites: string[];
  suiteMs: Record<string, number>;
  durationMs: number;
}

export interface BenchContext {
  gpu: Gpu;
  quick: boolean;
  ceilings: Ceilings;
  /**
   * Median wall time (ms) of `record` after warm-up: each repetition records into a fresh Recorder,
   * submits and waits for the queue. `repeat` dispatches per submit amortise submit overhead.
   * With timestamp timing on (`?timestamps=1`, `--timestamps`), GPU time unless `clock: 'wall'`.
   */
  time(record: (rec: Recorder) => void, opts?: { warmup?: number; iters?: number; repeat?: number; clock?: 'wall' | 'auto' }): Promise<number>;
  result(r: Omit<BenchResult, 'gflops' | 'gbps'> & { flops: number }): BenchResult;
  peer(p: Omit<PeerResult, 'ratio'>): PeerResult;
  e2e(r: E2eResult): void;
  progress(message: string): void;
  /** Records a non-fatal problem of the current suite in the report's `errors` (e.g. a peer that cannot run an op). */
  error(message: string): void;
  /** Records a peer's numerical check against ours (see src/bench/peers.ts). */
  peerCheck(c: PeerCheck): void;
  /** False when peers were turned off for this run (`?peers=0`, `--no-peers`) or cannot run here (Node). */
  peers: boolean;
  env: 'browser' | 'node';
  /** The URL the bench's server serves public/ at (the bundled models under models/), when known. */
  baseUrl?: string;
}

export interface BenchSuite {
  name: string;
  /** Position in the run (lower first; default 50; device-level suites low, end-to-end high). */
  order?: number;
  /** Also runs under `npm run bench -- --node` (dawn.node); default true. */
  nodeOk?: boolean;
  /** Runs in the browser page; default true (false: Node-only suites, e.g. ones that serve HTTP). */
  browserOk?: boolean;
  /** Left out of --quick runs unless named in --suites (minutes-long real-scale suites). */
  fullOnly?: boolean;
  /** Runs in the browser page (and in Node where `nodeOk`). */
  run(ctx: BenchContext): Promise<void>;
}
