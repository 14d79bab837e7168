/**
 * A worker pool for the WebAssembly kernels over one shared memory: every worker instantiates
 * kernels-mt.wasm (the same kernels.c built with atomics and an imported shared memory) on the module's
 * SharedArrayBuffer, and a call is split by output rows (or heads) across the caller and the workers.
 *
 * No messages per call: the job (export index, f64 arguments, which argument pair is the row range)
 * goes into a control block in the shared memory, a generation counter wakes the workers
 * (Atomics.notify), and a pending counter says when they are done. The caller computes its own slice
 * meanwhile and then waits (Atomics.wait where the thread may block: Node, Workers; a spin on a page's
 * main thread, which may not block).
 *
 * Needs SharedArrayBuffer: in a browser that is a cross-origin isolated page (COOP: same-origin and
 * COEP: require-corp, or credentialless) and its workers; in Node always (worker_threads).
 * kernels.c uses no stack (the build checks), so the instances may share the one stack region.
 */
import { ArgumentError } from '../../errors';

/** Control block: i32 words, then the f64 arguments at byte 64. */
const C_GEN = 0, C_PENDING = 1, C_FN = 2, C_NARGS = 3, C_SPLIT = 4, C_THREADS = 5, C_SCRATCH = 6, C_SCRATCH_STRIDE = 7, C_ALIGN = 8;
export const CONTROL_BYTES = 64 + 8 * 32;
const STOP = -1;

/** The worker's source: plain JavaScript, started from a Blob URL (browsers) or with eval (Node). */
const WORKER_SOURCE = String.raw`
const isNode = typeof self === 'undefined' || typeof self.postMessage !== 'function';
const port = isNode ? require('node:worker_threads').parentPort : self;
const onMessage = (f) => (isNode ? port.on('message', f) : (self.onmessage = (e) => f(e.data)));
onMessage(async (msg) => {
  const { module, memory, index, ctrl, names } = msg;
  const { exports } = await WebAssembly.instantiate(module, { env: { memory } });
  const fns = names.map((n) => exports[n]);
  const c = new Int32Array(memory.buffer, ctrl, 16);
  const a = new Float64Array(memory.buffer, ctrl + 64, 32);
  // The generation is read before 'ready': the caller may post a job the moment it hears it.
  let gen = Atomics.load(c, 0);
  port.postMessage('ready');
  for (;;) {
    Atomics.wait(c, 0, gen);
    gen = Atomics.load(c, 0);
    const fn = c[2];
    if (fn === -1) break;
    const args = Array.from(a.subarray(0, c[3]));
    const T = c[5];
    if (index < T) {
      const s = c[4], lo = args[s], total = args[s + 1] - lo, align = c[8];
      const r0 = lo + Math.min(total, Math.ceil((total * index) / T / align) * align);
      const r1 = lo + Math.min(total, Math.ceil((total * (index + 1)) / T / align) * align);
      args[s] = r0; args[s + 1] = r1;
      if (c[6] >= 0) args[c[6]] += index * c[7];
      if (r1 > r0) fns[fn](...args);
    }
    if (Atomics.sub(c, 1, 1) === 1) Atomics.notify(c, 1);
  }
});
`;

interface PoolWorker { post(m: unknown): void; terminate(): void; once(f: (m: unknown) => void, fail: (e: unknown) => void): void }

async function startWorker(): Promise<PoolWorker> {
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  if (proc?.versions?.node && typeof (globalThis as { window?: unknown }).window === 'undefined' && typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope === 'undefined') {
    const spec = 'node:worker_threads';
    const { Worker } = await import(/* @vite-ignore */ spec) as typeof import('node:worker_threads');
    const w = new Worker(WORKER_SOURCE, { eval: true });
    w.unref();
    return {
      post: (m) => w.postMessage(m),
      terminate: () => void w.terminate(),
      once: (f, fail) => { w.once('message', f); w.once('error', fail); },
    };
  }
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' }));
  const w = new Worker(url);
  URL.revokeObjectURL(url);
  return {
    post: (m) => w.postMessage(m),
    terminate: () => w.terminate(),
    once: (f, fail) => {
      w.addEventListener('message', (e) => f(e.data), { once: true });
      w.addEventListener('error', (e) => fail(e), { once: true });
    },
  };
}

/** Whether this realm can run the pool: SharedArrayBuffer (a cross-origin isolated page, or Node) and Workers. */
export function threadsAvailable(): { ok: boolean; why: string } {
  if (typeof SharedArrayBuffer !== 'function') return { ok: false, why: 'no SharedArrayBuffer (the page is not cross-origin isolated: it needs COOP same-origin and COEP require-corp headers)' };
  const g = globalThis as { crossOriginIsolated?: boolean; process?: { versions?: { node?: string } }; Worker?: unknown };
  if (g.crossOriginIsolated === false) return { ok: false, why: 'the page is not cross-origin isolated (send COOP: same-origin and COEP: require-corp)' };
  if (!g.process?.versions?.node && typeof g.Worker !== 'function') return { ok: false, why: 'no Worker in this context' };
  return { ok: true, why: '' };
}

/** Cores to use by default: the hardware's (navigator.hardwareConcurrency; in Node before 21, os.availableParallelism), at most 8. */
export async function defaultThreads(): Promise<number> {
  let n = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency;
  if (n === undefined && (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node) {
    const spec = 'node:os';
    try { n = ((await import(/* @vite-ignore */ spec)) as typeof import('node:os')).availableParallelism(); } catch { n = 1; }
  }
  return Math.max(1, Math.min(8, n ?? 1));
}

export class KernelPool {
  private c: Int32Array;
  private a: Float64Array;
  private canBlock: boolean;
  private stopped = false;

  private constructor(private memory: WebAssembly.Memory, private ctrl: number, private workers: PoolWorker[], private names: string[]) {
    this.c = new Int32Array(memory.buffer, ctrl, 16);
    this.a = new Float64Array(memory.buffer, ctrl + 64, 32);
    let block = true;
    try { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0); } catch { block = false; }
    this.canBlock = block;
  }

  /** Threads taking part in a call: the caller and the workers. */
  get threads(): number { return this.workers.length + 1; }

  static async create(module: WebAssembly.Module, memory: WebAssembly.Memory, ctrl: number, threads: number, names: string[]): Promise<KernelPool> {
    if (!Number.isInteger(threads) || threads < 2) throw new ArgumentError(`KernelPool: threads must be an integer ≥ 2, got ${threads}`);
    const workers = await Promise.all(Array.from({ length: threads - 1 }, () => startWorker()));
    try {
      await Promise.all(workers.map((w, i) => new Promise<void>((resolve, reject) => {
        w.once(() => resolve(), reject);
        w.post({ module, memory, index: i + 1, ctrl, names });
      })));
    } catch (e) {
      for (const w of workers) w.terminate();
      throw e;
    }
    return new KernelPool(memory, ctrl, workers, names);
  }

  /**
   * Runs export `fn` with `args`, rows [args[split], args[split + 1]) cut into `threads` slices (multiples of
   * `align`); with `scratch` (an argument index), slice t gets args[scratch] + t·scratchStride.
   */
  run(fn: (...a: number[]) => void, name: string, args: number[], split: number, align = 1, scratch = -1, scratchStride = 0): void {
    if (this.stopped) throw new Error('KernelPool: stopped');
    const T = this.threads, c = this.c;
    const f = this.names.indexOf(name);
    if (f < 0) throw new Error(`KernelPool: ${name} is not a pool kernel`);
    this.a.set(args);
    c[C_FN] = f; c[C_NARGS] = args.length; c[C_SPLIT] = split; c[C_THREADS] = T; c[C_SCRATCH] = scratch; c[C_SCRATCH_STRIDE] = scratchStride; c[C_ALIGN] = align;
    Atomics.store(c, C_PENDING, T - 1);
    Atomics.add(c, C_GEN, 1);
    Atomics.notify(c, C_GEN);
    // The caller's slice: index 0.
    const lo = args[split], total = args[split + 1] - lo;
    const r1 = lo + Math.min(total, Math.ceil(total / T / align) * align);
    const mine = args.slice();
    mine[split + 1] = r1;
    if (r1 > lo) fn(...mine);
    for (;;) {
      const p = Atomics.load(c, C_PENDING);
      if (p === 0) break;
      if (this.canBlock) Atomics.wait(c, C_PENDING, p, 50);
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.c[C_FN] = STOP;
    Atomics.add(this.c, C_GEN, 1);
    Atomics.notify(this.c, C_GEN);
    for (const w of this.workers) w.terminate();
    void this.memory;
  }
}
