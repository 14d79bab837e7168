import type { Gpu } from '../gpu/device';
import type { Recorder } from '../gpu/recorder';
import type { BenchContext, BenchResult, Ceilings, E2eResult, PeerCheck, PeerResult } from './types';

export interface ContextOptions {
  quick: boolean;
  peers: boolean;
  env: 'browser' | 'node';
  /**
   * Time kernels with GPU timestamp queries when the device has them (each dispatch in its own pass,
   * summed per iteration) instead of wall clock. Off by default: browsers quantise timestamps (Chrome
   * to 100 µs without developer flags), which hides short kernels, and one pass per dispatch changes
   * the work being timed.
   */
  timestamps?: boolean;
  onProgress?: (message: string) => void;
  now?: () => number;
  /** Where public/ is served (default: the page's location in a browser). */
  baseUrl?: string;
}

export function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

const defaultNow = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

/**
 * The BenchContext given to every suite: timing, and the sinks for results, peers, peer checks and
 * end-to-end rows. One context per run; `suite` is set by the runner before each suite.
 */
export class RunContext implements BenchContext {
  readonly quick: boolean;
  readonly peers: boolean;
  readonly env: 'browser' | 'node';
  /** Whether ctx.time reads GPU timestamps (requested and available). */
  readonly timestamps: boolean;
  readonly baseUrl?: string;
  ceilings: Ceilings = { fmaGflops: NaN, copyGBps: NaN };
  suite = '';
  readonly results: BenchResult[] = [];
  readonly peerResults: PeerResult[] = [];
  readonly peerChecks: PeerCheck[] = [];
  readonly e2eResults: E2eResult[] = [];
  readonly errors: { suite: string; message: string }[] = [];
  private readonly now: () => number;
  private readonly onProgress: (message: string) => void;

  constructor(readonly gpu: Gpu, o: ContextOptions) {
    this.quick = o.quick;
    this.peers = o.peers;
    this.env = o.env;
    this.timestamps = !!o.timestamps && !!gpu?.caps?.timestampQuery;
    this.now = o.now ?? defaultNow;
    this.onProgress = o.onProgress ?? (() => {});
    this.baseUrl = o.baseUrl ?? (typeof location !== 'undefined' ? location.href : undefined);
  }

  /**
   * Median wall time (ms) per `record` call: each iteration records `repeat` copies into a fresh
   * Recorder, submits once and waits for the queue (the first warm-up runs inside error scopes, so a
   * kernel that fails validation throws instead of timing nothing). Per-step temporaries taken from
   * gpu.temps inside `record` are released after each iteration.
   */
  async time(record: (rec: Recorder) => void, opts: { warmup?: number; iters?: number; repeat?: number; clock?: 'wall' | 'auto' } = {}): Promise<number> {
    const warmup = opts.warmup ?? (this.quick ? 1 : 2);
    const iters = Math.max(1, opts.iters ?? (this.quick ? 3 : 7));
    const repeat = Math.max(1, opts.repeat ?? 1);
    const gpu = this.gpu;
    const once = async (): Promise<number> => {
      const profiler = this.timestamps && opts.clock !== 'wall' ? gpu.profiler : null;
      const wasEnabled = profiler?.enabled ?? false;
      if (profiler) { profiler.reset(); profiler.enabled = true; }
      try {
        const t0 = this.now();
        const rec = gpu.recorder(`bench:${this.suite}`);
        for (let r = 0; r < repeat; r++) record(rec);
        const dispatches = rec.dispatches;
        rec.submit();
        await gpu.sync();
        let ms = (this.now() - t0) / repeat;
        if (profiler) {
          // The timestamp readback resolves shortly after the queue: wait for all of it (bounded).
          const sum = () => profiler.report().reduce((a, t) => [a[0] + t.calls, a[1] + t.totalMs], [0, 0]);
          for (let i = 0; i < 200 && sum()[0] < dispatches; i++) await new Promise((r) => setTimeout(r, 2));
          const [calls, total] = sum();
          if (calls >= dispatches && dispatches > 0) ms = total / repeat;
        }
        return ms;
      } finally {
        if (profiler) profiler.enabled = wasEnabled;
        gpu.temps.releaseAll();
      }
    };
    // Always one checked run first (counts as warm-up when warmup > 0).
    const first = await gpu.checked(once);
    const samples: number[] = warmup > 0 ? [] : [first];
    for (let i = 1; i < warmup; i++) await once();
    while (samples.length < iters) samples.push(await once());
    return median(samples);
  }

  result(r: Omit<BenchResult, 'gflops' | 'gbps'> & { flops: number }): BenchResult {
    const s = r.medianMs * 1e6;
    const gflops = s > 0 ? r.flops / s : 0;
    const gbps = s > 0 ? r.bytes / s : 0;
    const out: BenchResult = {
      suite: r.suite || this.suite,
      name: r.name,
      variant: r.variant,
      shape: r.shape,
      medianMs: r.medianMs,
      gflops,
      gbps,
      bytes: r.bytes,
      flops: r.flops,
      pctFma: pct(gflops, this.ceilings.fmaGflops),
      pctCopy: pct(gbps, this.ceilings.copyGBps),
      ...(r.extra ? { extra: r.extra } : {}),
    };
    this.results.push(out);
    this.progress(`${out.name} ${out.variant} ${out.shape}: ${out.medianMs.toFixed(3)} ms`);
    return out;
  }

  peer(p: Omit<PeerResult, 'ratio'>): PeerResult {
    const out: PeerResult = { ...p, suite: p.suite || this.suite, ratio: p.oursMs > 0 ? p.peerMs / p.oursMs : NaN };
    this.peerResults.push(out);
    this.progress(`${out.name} vs ${out.peer}: ${out.ratio.toFixed(2)}×`);
    return out;
  }

  peerCheck(c: PeerCheck): void {
    this.peerChecks.push({ ...c, suite: c.suite || this.suite });
  }

  error(message: string): void {
    this.errors.push({ suite: this.suite || 'run', message });
    this.progress(`error: ${message}`);
  }

  e2e(r: E2eResult): void {
    this.e2eResults.push(r);
  }

  progress(message: string): void {
    this.onProgress(this.suite ? `${this.suite}: ${message}` : message);
  }
}

function pct(x: number, ceiling: number): number {
  return Number.isFinite(ceiling) && ceiling > 0 ? (100 * x) / ceiling : NaN;
}
