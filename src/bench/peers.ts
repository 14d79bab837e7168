/**
 * Peers: onnxruntime-web running one-node ONNX models (built in-process by onnx-builder.ts) at the same
 * shapes as our kernels, on the same adapter (WebGPU EP) and on the CPU (wasm EP, the baseline).
 *
 * Suites call e.g. `peerMatMul(ctx, { M, N, K }, { name, ours: { record, inputs, output } })`: the
 * helper then times OUR kernel and the peer with one and the same protocol (`timeCalls` below), one
 * right after the other, so a row compares like with like:
 *  - one measured call is one submission on each side (ours: the call recorded and submitted alone;
 *    the peer: one `session.run`), `repeat` calls are issued back to back and the queue is waited for
 *    once per iteration; the same warm-up and iteration counts on both sides; wall clock on both sides
 *    (the peer has no GPU timestamps, so peer rows never use them even in a `--timestamps` run);
 *  - I/O: GPU-resident inputs and outputs on both sides when the peer accepts GPU buffers, else both
 *    sides upload the inputs and read the output back on every call (the wasm peer always does).
 * The row's `timing` names the protocol. A suite may still pass only `oursMs` (its own measurement):
 * such a row is marked `symmetric: false` and its note says so.
 *
 * Every helper is a no-op when `ctx.peers` is false and records failures with ctx.error. `check*`
 * helpers run the peer on one small shape and compare its output with ours (`peerCheck`), so the peer
 * is known to compute the same thing; the e2e test requires a passing check for every timed peer op.
 */
import type * as Ort from 'onnxruntime-web';
import type { BenchContext, PeerResult } from './types';
import type { Recorder } from '../gpu/recorder';
import { median } from './context';
import { attentionModel, gqaModel, matmulModel, matmulNBitsModel, moeDenseGraphModel, moeModel, quantizeNBits, type NBitsWeights } from './onnx-builder';
import { randomUniform } from '../util/random';

export type PeerProvider = 'webgpu' | 'wasm';
export const PEER_NAMES: Record<PeerProvider, string> = { webgpu: 'ort-webgpu', wasm: 'ort-wasm' };

/**
 * Our side of a peer row, for symmetric timing: `record` records one call (the kernel(s) the peer's
 * op stands for), reading `inputs` and writing `output` (GPU buffers of ours). With CPU I/O each call
 * first writes `inputs[i].data` to its buffer and ends by reading `output` back, as the peer does.
 */
export interface OursCall {
  record: (rec: Recorder) => void;
  inputs: { buffer: GPUBuffer; data: Float32Array }[];
  output: { buffer: GPUBuffer; bytes: number };
}

export interface PeerOptions {
  /** Row name in the peers table (usually the same as the result row's name). */
  name: string;
  /** Our call, timed here with the peer's protocol (preferred: the row is symmetric). */
  ours?: OursCall;
  /** Our median measured by the suite itself (legacy; the row is marked symmetric: false). */
  oursMs?: number;
  suite?: string;
  providers?: PeerProvider[];
  /** Defaults: quick 1/3, full 2/5 (both sides). */
  warmup?: number;
  iters?: number;
  /** Calls per queue wait (amortises the submit round trip; both sides). */
  repeat?: number;
  /** Skip the wasm (CPU) peer above this many flops per call (it can take seconds on big shapes). */
  wasmMaxFlops?: number;
  note?: string;
}

/**
 * The one timing loop both sides use: `warmup` then `iters` iterations of `repeat` calls issued back to
 * back and one `wait`; the median over iterations of (iteration wall time / repeat).
 */
export async function timeCalls(call: () => unknown, wait: () => Promise<void>, o: { warmup: number; iters: number; repeat: number; now?: () => number }): Promise<number> {
  const now = o.now ?? (() => performance.now());
  const once = async () => {
    const t0 = now();
    for (let r = 0; r < o.repeat; r++) await call();
    await wait();
    return (now() - t0) / o.repeat;
  };
  for (let i = 0; i < o.warmup; i++) await once();
  const s: number[] = [];
  for (let i = 0; i < Math.max(1, o.iters); i++) s.push(await once());
  return median(s);
}

/** How a symmetric row was timed (the table's `timing` column). */
export function timingLabel(io: 'gpu' | 'cpu', repeat: number, warmup: number, iters: number): string {
  return `wall; 1 submit per call, ${repeat} call${repeat > 1 ? 's' : ''} per queue wait; ${io === 'gpu' ? 'GPU-resident I/O' : 'upload + readback per call'}; warm-up ${warmup}, median of ${iters}`;
}

/** Times our call with the protocol of timeCalls, GPU-resident or with upload + readback per call. */
async function timeOurs(ctx: BenchContext, ours: OursCall, io: 'gpu' | 'cpu', o: { warmup: number; iters: number; repeat: number }): Promise<number> {
  const gpu = ctx.gpu;
  const call = async () => {
    if (io === 'cpu') for (const i of ours.inputs) gpu.buffers.write(i.buffer, i.data);
    const rec = gpu.recorder('bench.peer-ours');
    ours.record(rec);
    rec.submit();
    if (io === 'cpu') await gpu.buffers.read(ours.output.buffer, 0, ours.output.bytes);
  };
  try {
    // One checked call first: a kernel that fails validation throws instead of timing nothing.
    await gpu.checked(async () => { await call(); await gpu.sync(); });
    return await timeCalls(call, async () => { await gpu.sync(); gpu.temps.releaseAll(); }, o);
  } finally {
    gpu.temps.releaseAll();
  }
}

type OrtModule = typeof Ort;
let ortPromise: Promise<OrtModule> | null = null;

/**
 * onnxruntime-web (WebGPU build, which also has the wasm CPU EP), with its wasm served by our own
 * server. Its WebGPU EP creates its own GPUDevice on the same adapter (1.30's native EP does not
 * take a device from outside: buffers of ours are rejected by its device), so the peers run on the
 * same GPU but not the same GPUDevice object.
 */
export function loadOrt(): Promise<OrtModule> {
  if (!ortPromise) {
    ortPromise = (async () => {
      const [ort, wasm] = await Promise.all([
        import('onnxruntime-web/webgpu') as Promise<OrtModule>,
        import('onnxruntime-web/ort-wasm-simd-threaded.asyncify.wasm?url'),
      ]);
      ort.env.wasm.wasmPaths = { wasm: new URL(wasm.default, (globalThis as any).location?.href ?? 'http://localhost/').href };
      // One thread: the CPU baseline is single-threaded and no extra workers are spawned (the bench
      // already runs in a Worker, and threads would need the bundle's own URL).
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.proxy = false;
      ort.env.logLevel = 'error';
      return ort;
    })();
    ortPromise.catch(() => { ortPromise = null; });
  }
  return ortPromise;
}

/** The GPUDevice of ORT's WebGPU EP (valid once a WebGPU session exists). */
async function ortDevice(ort: OrtModule): Promise<GPUDevice> {
  return (await ort.env.webgpu.device) as unknown as GPUDevice;
}

/** An input; int32 feeds (lengths, ids) always stay CPU tensors (the EPs read them on the CPU). */
interface Feed { name: string; dims: number[]; data: Float32Array | Int32Array }

function cpuTensor(ort: OrtModule, f: Feed): Ort.Tensor {
  return f.data instanceof Int32Array ? new ort.Tensor('int32', f.data, f.dims) : new ort.Tensor('float32', f.data, f.dims);
}

/** A session with its feeds (and for WebGPU its output bound to a GPU buffer), ready to time. */
class PeerSession {
  private constructor(
    private readonly ort: OrtModule,
    readonly provider: PeerProvider,
    private readonly session: Ort.InferenceSession,
    private readonly feeds: Record<string, Ort.Tensor>,
    private readonly fetches: Record<string, Ort.Tensor> | undefined,
    private readonly device: GPUDevice | null,
    private readonly owned: GPUBuffer[],
    readonly gpuIo: boolean,
  ) {}

  static async create(ort: OrtModule, provider: PeerProvider, model: Uint8Array, feeds: Feed[], output: { name: string; dims: number[] }, gpuIo = true): Promise<PeerSession> {
    if (provider === 'wasm') {
      const session = await ort.InferenceSession.create(model, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
      const t: Record<string, Ort.Tensor> = {};
      for (const f of feeds) t[f.name] = cpuTensor(ort, f);
      return new PeerSession(ort, provider, session, t, undefined, null, [], false);
    }
    const session = await ort.InferenceSession.create(model, {
      executionProviders: ['webgpu'],
      graphOptimizationLevel: 'all',
      // An op the WebGPU EP lacks must fail here, not run on the CPU EP under the 'ort-webgpu' name.
      extra: { session: { disable_cpu_ep_fallback: '1' } },
      ...(gpuIo ? { preferredOutputLocation: 'gpu-buffer' as const } : {}),
    });
    const device = await ortDevice(ort);
    const t: Record<string, Ort.Tensor> = {};
    const owned: GPUBuffer[] = [];
    if (!gpuIo) {
      for (const f of feeds) t[f.name] = cpuTensor(ort, f);
      return new PeerSession(ort, provider, session, t, undefined, device, owned, false);
    }
    const usage = 0x80 | 0x08 | 0x04; // STORAGE | COPY_DST | COPY_SRC
    const gpuTensor = (label: string, dims: number[], data?: Float32Array) => {
      const n = dims.reduce((a, b) => a * b, 1);
      const size = Math.ceil((n * 4) / 16) * 16;
      const buffer = device.createBuffer({ label: `peer.${label}`, size, usage });
      if (data) device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
      owned.push(buffer);
      return ort.Tensor.fromGpuBuffer(buffer as any, { dataType: 'float32', dims });
    };
    for (const f of feeds) t[f.name] = f.data instanceof Int32Array ? cpuTensor(ort, f) : gpuTensor(f.name, f.dims, f.data);
    const fetches = { [output.name]: gpuTensor(output.name, output.dims) };
    return new PeerSession(ort, provider, session, t, fetches, device, owned, true);
  }

  /** One run, waited for (outputs stay on the GPU for the WebGPU session). */
  private async runOnce(): Promise<void> {
    const out = this.fetches ? await this.session.run(this.feeds, this.fetches) : await this.session.run(this.feeds);
    if (!this.fetches) for (const v of Object.values(out)) if (v.location === 'gpu-buffer') v.dispose();
  }

  /** The peer's side of timeCalls: one `session.run` per call, the EP device's queue per wait. */
  async time(o: { warmup: number; iters: number; repeat: number }): Promise<number> {
    const wait = async () => { if (this.device) await this.device.queue.onSubmittedWorkDone(); };
    return timeCalls(() => this.runOnce(), wait, o);
  }

  /** Outputs on the CPU (for checks: a session created with gpuIo = false). */
  async outputs(): Promise<Record<string, Float32Array>> {
    const out = await this.session.run(this.feeds);
    const r: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries(out)) r[k] = (await v.getData(true)) as Float32Array;
    return r;
  }

  async release(): Promise<void> {
    for (const t of Object.values(this.fetches ?? {})) t.dispose();
    await this.session.release();
    for (const b of this.owned) b.destroy();
  }
}

interface PeerJob {
  op: string;
  shape: string;
  flops: number;
  model: () => Uint8Array;
  feeds: Feed[];
  output: { name: string; dims: number[] };
}

async function timePeers(ctx: BenchContext, job: PeerJob, o: PeerOptions): Promise<PeerResult[]> {
  if (!ctx.peers) return [];
  const out: PeerResult[] = [];
  let ort: OrtModule;
  try {
    ctx.progress('loading onnxruntime-web');
    ort = await loadOrt();
  } catch (e) {
    ctx.error(`onnxruntime-web did not load: ${(e as Error).message}`);
    return [];
  }
  const providers = o.providers ?? ['webgpu', 'wasm'];
  const protocol = { warmup: o.warmup ?? (ctx.quick ? 1 : 2), iters: o.iters ?? (ctx.quick ? 3 : 5), repeat: Math.max(1, o.repeat ?? 1) };
  const model = job.model();
  for (const provider of providers) {
    if (provider === 'wasm' && job.flops > (o.wasmMaxFlops ?? (ctx.quick ? 2e8 : 4e9))) continue;
    let s: PeerSession | null = null;
    try {
      ctx.progress(`${PEER_NAMES[provider]} ${job.op} ${job.shape}`);
      let gpuIo = provider === 'webgpu';
      let fallback = '';
      try {
        s = await PeerSession.create(ort, provider, model, job.feeds, job.output, gpuIo);
        await s.time({ warmup: 0, iters: 1, repeat: 1 }); // does the EP accept our GPU buffers?
      } catch (e) {
        if (!gpuIo) throw e;
        fallback = ` (GPU I/O refused: ${(e as Error).message.slice(0, 120)})`;
        // GPU-resident I/O refused: both sides upload + read back per call (noted).
        await s?.release().catch(() => {});
        gpuIo = false;
        s = await PeerSession.create(ort, provider, model, job.feeds, job.output, false);
      }
      const io = gpuIo ? 'gpu' : 'cpu';
      // Ours right before the peer, with the peer's protocol and I/O (or the suite's own figure).
      const oursMs = o.ours ? await timeOurs(ctx, o.ours, io, protocol) : o.oursMs ?? NaN;
      const peerMs = await s.time(protocol);
      const symmetric = !!o.ours;
      const notes = [
        provider === 'wasm' ? 'wasm EP, 1 thread' : '',
        fallback,
        symmetric ? '' : 'ours timed by the suite (its own protocol): not symmetric',
        o.note,
      ].filter(Boolean).join('; ');
      out.push(ctx.peer({
        suite: o.suite ?? '', name: o.name, peer: PEER_NAMES[provider], op: job.op, oursMs, peerMs, shape: job.shape,
        symmetric, timing: symmetric ? timingLabel(io, protocol.repeat, protocol.warmup, protocol.iters) : 'ours: the suite\'s ctx.time; peer: ' + timingLabel(io, protocol.repeat, protocol.warmup, protocol.iters),
        ...(notes ? { note: notes } : {}),
      }));
    } catch (e) {
      ctx.error(`${PEER_NAMES[provider]} ${job.op} ${job.shape}: ${(e as Error).message}`);
    } finally {
      await s?.release().catch(() => {});
    }
  }
  return out;
}

/** Runs the peer at a (small) shape on each provider with CPU I/O and compares with `ours`. */
async function checkPeers(ctx: BenchContext, job: PeerJob, ours: Float32Array, tolerance: number, providers: PeerProvider[] = ['webgpu', 'wasm']): Promise<void> {
  if (!ctx.peers) return;
  let ort: OrtModule;
  try {
    ort = await loadOrt();
  } catch (e) {
    ctx.error(`onnxruntime-web did not load: ${(e as Error).message}`);
    return;
  }
  const model = job.model();
  for (const provider of providers) {
    let s: PeerSession | null = null;
    try {
      s = await PeerSession.create(ort, provider, model, job.feeds, job.output, false);
      const got = (await s.outputs())[job.output.name];
      let maxAbsDiff = 0;
      let finite = got.length === ours.length;
      for (let i = 0; i < ours.length && finite; i++) {
        if (!Number.isFinite(got[i])) finite = false;
        else maxAbsDiff = Math.max(maxAbsDiff, Math.abs(got[i] - ours[i]));
      }
      ctx.peerCheck({ peer: PEER_NAMES[provider], op: job.op, shape: job.shape, maxAbsDiff: finite ? maxAbsDiff : NaN, tolerance, ok: finite && maxAbsDiff <= tolerance, ...(finite ? {} : { note: `length ${got.length} vs ${ours.length} or non-finite output` }) });
    } catch (e) {
      ctx.peerCheck({ peer: PEER_NAMES[provider], op: job.op, shape: job.shape, maxAbsDiff: NaN, tolerance, ok: false, note: (e as Error).message.slice(0, 200) });
    } finally {
      await s?.release().catch(() => {});
    }
  }
}

// ---- matmul ---------------------------------------------------------------------------------------

export interface MatMulShape { M: number; N: number; K: number; seed?: number }

function transpose(w: Float32Array, N: number, K: number): Float32Array {
  const t = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) t[k * N + n] = w[n * K + k];
  return t;
}

function matmulJob({ M, N, K }: MatMulShape, x: Float32Array, w: Float32Array): PeerJob {
  return {
    op: 'MatMul f32', shape: `${M}×${K} · ${K}×${N}`, flops: 2 * M * N * K,
    model: () => matmulModel(M, N, K, transpose(w, N, K)),
    feeds: [{ name: 'X', dims: [M, K], data: x }],
    output: { name: 'Y', dims: [M, N] },
  };
}

/** ONNX MatMul (f32) at Y[M, N] = X[M, K] · W[N, K]ᵀ. */
export function peerMatMul(ctx: BenchContext, s: MatMulShape, o: PeerOptions): Promise<PeerResult[]> {
  const seed = s.seed ?? 11;
  return timePeers(ctx, matmulJob(s, randomUniform(s.M * s.K, seed, -1, 1), randomUniform(s.N * s.K, seed + 1, -0.05, 0.05)), o);
}

/** Checks the peers' MatMul against `ours(x, w)` (our kernel's output for X[M, K], W[N, K]). */
export async function checkPeerMatMul(ctx: BenchContext, s: MatMulShape, ours: (x: Float32Array, w: Float32Array) => Promise<Float32Array>, tolerance = 1e-4): Promise<void> {
  if (!ctx.peers) return;
  const x = randomUniform(s.M * s.K, 21, -1, 1), w = randomUniform(s.N * s.K, 22, -1, 1);
  await checkPeers(ctx, matmulJob(s, x, w), await ours(x, w), tolerance);
}

// ---- MatMulNBits ----------------------------------------------------------------------------------

export interface NBitsShape extends MatMulShape { bits: 4 | 8; block: number }

function nbitsJob(s: NBitsShape, x: Float32Array, q: NBitsWeights): PeerJob {
  const { M, N, K, bits, block } = s;
  return {
    op: `MatMulNBits int${bits} b${block}`, shape: `${M}×${K} · ${K}×${N}`, flops: 2 * M * N * K,
    model: () => matmulNBitsModel(M, N, K, bits, block, q),
    feeds: [{ name: 'X', dims: [M, K], data: x }],
    output: { name: 'Y', dims: [M, N] },
  };
}

/** com.microsoft MatMulNBits (symmetric block quantisation, default zero point) at Y = X · dequant(W)ᵀ. */
export function peerMatMulNBits(ctx: BenchContext, s: NBitsShape, o: PeerOptions): Promise<PeerResult[]> {
  const seed = s.seed ?? 31;
  const q = quantizeNBits(randomUniform(s.N * s.K, seed + 1, -0.05, 0.05), s.N, s.K, s.bits, s.block);
  return timePeers(ctx, nbitsJob(s, randomUniform(s.M * s.K, seed, -1, 1), q), o);
}

/**
 * Checks MatMulNBits against `ours(x, q)`: our output for X and the quantised weights (q.dequant is
 * the [N, K] f32 matrix they stand for, q.packed / q.scales the MatMulNBits layout).
 */
export async function checkPeerMatMulNBits(ctx: BenchContext, s: NBitsShape, ours: (x: Float32Array, q: NBitsWeights) => Promise<Float32Array>, tolerance = 1e-3): Promise<void> {
  if (!ctx.peers) return;
  const x = randomUniform(s.M * s.K, 41, -1, 1);
  const q = quantizeNBits(randomUniform(s.N * s.K, 42, -1, 1), s.N, s.K, s.bits, s.block);
  await checkPeers(ctx, nbitsJob(s, x, q), await ours(x, q), tolerance);
}

// ---- attention ------------------------------------------------------------------------------------

/** One sequence: S queries against L keys, H heads, head dims D (q, k) and Dv (v); causal (S = L or S = 1) aligns the last query with the last key. */
export interface AttentionShape { S: number; L: number; H: number; D: number; Dv?: number; causal?: boolean; seed?: number }

function attentionJob(s: AttentionShape, q: Float32Array, k: Float32Array, v: Float32Array): PeerJob {
  const Dv = s.Dv ?? s.D;
  // ORT's unidirectional mask is the usual causal one for S = L (prefill) and S = 1 (decode); for
  // 1 < S < L (chunked prefill against a cache) its wasm kernel does not align the last query with
  // the last key, so the peer is not used there.
  if (s.causal && s.S !== s.L && s.S !== 1) throw new Error(`peerAttention: causal needs S = L or S = 1 (got S ${s.S}, L ${s.L})`);
  return {
    op: `MultiHeadAttention${s.causal ? ' causal' : ''}`, shape: `S${s.S} L${s.L} H${s.H} D${s.D}/${Dv}`,
    flops: 2 * s.S * s.L * s.H * (s.D + Dv),
    model: () => attentionModel(1, s.S, s.L, s.H, s.D, Dv, !!s.causal),
    feeds: [
      { name: 'Q', dims: [1, s.S, s.H * s.D], data: q },
      { name: 'K', dims: [1, s.L, s.H * s.D], data: k },
      { name: 'V', dims: [1, s.L, s.H * Dv], data: v },
    ],
    output: { name: 'O', dims: [1, s.S, s.H * Dv] },
  };
}

/** Random q [S, H·D], k [L, H·D], v [L, H·Dv] in [−1, 1] (what peerAttention feeds). */
export function attentionInputs(s: AttentionShape, seed: number) {
  const Dv = s.Dv ?? s.D;
  return [randomUniform(s.S * s.H * s.D, seed, -1, 1), randomUniform(s.L * s.H * s.D, seed + 1, -1, 1), randomUniform(s.L * s.H * Dv, seed + 2, -1, 1)] as const;
}

/** com.microsoft MultiHeadAttention: O[S, H·Dv] = softmax(Q·Kᵀ/√D)·V per head, q [S, H·D], k [L, H·D], v [L, H·Dv]. */
export async function peerAttention(ctx: BenchContext, s: AttentionShape, o: PeerOptions): Promise<PeerResult[]> {
  if (!ctx.peers) return [];
  const [q, k, v] = attentionInputs(s, s.seed ?? 51);
  let job: PeerJob;
  try {
    job = attentionJob(s, q, k, v);
  } catch (e) {
    ctx.error((e as Error).message);
    return [];
  }
  return timePeers(ctx, job, o);
}

/** Checks the peers' attention against `ours(q, k, v)` (layouts as in peerAttention). */
export async function checkPeerAttention(ctx: BenchContext, s: AttentionShape, ours: (q: Float32Array, k: Float32Array, v: Float32Array) => Promise<Float32Array>, tolerance = 1e-4): Promise<void> {
  if (!ctx.peers) return;
  const [q, k, v] = attentionInputs(s, 61);
  let job: PeerJob;
  try {
    job = attentionJob(s, q, k, v);
  } catch (e) {
    ctx.error((e as Error).message);
    return;
  }
  await checkPeers(ctx, job, await ours(q, k, v), tolerance);
}

// ---- grouped-query attention with a KV cache ------------------------------------------------------

/** One sequence: S new queries (and S new K/V rows) after `L − S` cached rows; H query heads, kvH KV heads of dim D. */
export interface GqaShape { S: number; L: number; H: number; kvH: number; D: number; seed?: number }

/**
 * GroupQueryAttention's feeds from our layouts: q [S, H·D], k / v [L, kvH·D] (row t = token t, the
 * cache and the new rows together): the first L − S rows become past_key / past_value [kvH, past, D].
 */
function gqaJob(s: GqaShape, q: Float32Array, k: Float32Array, v: Float32Array): PeerJob {
  const past = s.L - s.S, w = s.kvH * s.D;
  const bnsh = (x: Float32Array) => {
    const t = new Float32Array(past * w);
    for (let r = 0; r < past; r++) for (let h = 0; h < s.kvH; h++) t.set(x.subarray(r * w + h * s.D, r * w + (h + 1) * s.D), (h * past + r) * s.D);
    return t;
  };
  return {
    op: 'GroupQueryAttention', shape: `S${s.S} L${s.L} H${s.H}/${s.kvH} D${s.D}`,
    flops: 2 * s.S * s.L * s.H * 2 * s.D,
    model: () => gqaModel(s.S, past, s.H, s.kvH, s.D),
    feeds: [
      { name: 'Q', dims: [1, s.S, s.H * s.D], data: q },
      { name: 'K', dims: [1, s.S, w], data: k.slice(past * w) },
      { name: 'V', dims: [1, s.S, w], data: v.slice(past * w) },
      { name: 'PK', dims: [1, s.kvH, past, s.D], data: bnsh(k) },
      { name: 'PV', dims: [1, s.kvH, past, s.D], data: bnsh(v) },
      { name: 'SEQLENS', dims: [1], data: Int32Array.of(s.L - 1) },
      { name: 'TOTAL', dims: [], data: Int32Array.of(s.L) },
    ],
    output: { name: 'O', dims: [1, s.S, s.H * s.D] },
  };
}

/** Random q [S, H·D], k / v [L, kvH·D] in [−1, 1]. */
export function gqaInputs(s: GqaShape, seed: number): [Float32Array, Float32Array, Float32Array] {
  return [randomUniform(s.S * s.H * s.D, seed, -1, 1), randomUniform(s.L * s.kvH * s.D, seed + 1, -1, 1), randomUniform(s.L * s.kvH * s.D, seed + 2, -1, 1)];
}

/** com.microsoft GroupQueryAttention (decode: S = 1 against a cache of L − 1 rows), scale 1/√D. */
export function peerGqa(ctx: BenchContext, s: GqaShape, o: PeerOptions): Promise<PeerResult[]> {
  if (!ctx.peers) return Promise.resolve([]);
  const [q, k, v] = gqaInputs(s, s.seed ?? 91);
  return timePeers(ctx, gqaJob(s, q, k, v), o);
}

/** Checks GroupQueryAttention against `ours(q, k, v)` (layouts as in gqaJob; causal, scale 1/√D). */
export async function checkPeerGqa(ctx: BenchContext, s: GqaShape, ours: (q: Float32Array, k: Float32Array, v: Float32Array) => Promise<Float32Array>, tolerance = 1e-4): Promise<void> {
  if (!ctx.peers) return;
  const [q, k, v] = gqaInputs(s, 101);
  await checkPeers(ctx, gqaJob(s, q, k, v), await ours(q, k, v), tolerance);
}

// ---- MoE ------------------------------------------------------------------------------------------

/** T tokens, E experts of SwiGLU FFNs (hidden → inter → hidden), top-k of the router probabilities. */
export interface MoeShape { T: number; hidden: number; inter: number; E: number; k: number; seed?: number }

export interface MoeWeights {
  /** [E, inter, hidden] gate, [E, inter, hidden] up, [E, hidden, inter] down (Hugging Face [out, in]). */
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

function moeJob(s: MoeShape, x: Float32Array, probs: Float32Array, w: MoeWeights): PeerJob {
  return {
    op: 'MoE SwiGLU', shape: `T${s.T} h${s.hidden} i${s.inter} top-${s.k}/${s.E}`,
    flops: 2 * s.T * s.k * 3 * s.hidden * s.inter,
    model: () => moeModel(s.T, s.hidden, s.inter, s.E, s.k, w.gate, w.up, w.down),
    feeds: [{ name: 'X', dims: [s.T, s.hidden], data: x }, { name: 'R', dims: [s.T, s.E], data: probs }],
    output: { name: 'Y', dims: [s.T, s.hidden] },
  };
}

/** Random x [T, hidden], router logits [T, E] and expert weights (what peerMoE feeds). */
export function moeInputs(s: MoeShape, seed: number) {
  const n = s.E * s.inter * s.hidden;
  const w: MoeWeights = { gate: randomUniform(n, seed + 1, -0.1, 0.1), up: randomUniform(n, seed + 2, -0.1, 0.1), down: randomUniform(n, seed + 3, -0.1, 0.1) };
  const probs = randomUniform(s.T * s.E, seed + 4, 0, 1);
  return { x: randomUniform(s.T * s.hidden, seed, -1, 1), probs, w };
}

/**
 * com.microsoft MoE with SwiGLU experts: y = Σ_top-k p̂_e · down_e(silu(gate_e x) ⊙ up_e x), where the
 * router input holds logits and p̂ is the softmax over the k largest of them (see moeModel).
 */
export function peerMoE(ctx: BenchContext, s: MoeShape, o: PeerOptions): Promise<PeerResult[]> {
  const { x, probs, w } = moeInputs(s, s.seed ?? 71);
  return timePeers(ctx, moeJob(s, x, probs, w), o);
}

/** Checks the peers' MoE against `ours(x, routerLogits, weights)` (p̂ = softmax over the top-k logits). */
export async function checkPeerMoE(ctx: BenchContext, s: MoeShape, ours: (x: Float32Array, probs: Float32Array, w: MoeWeights) => Promise<Float32Array>, tolerance = 1e-4, providers: PeerProvider[] = ['webgpu', 'wasm']): Promise<void> {
  if (!ctx.peers) return;
  const { x, probs, w } = moeInputs(s, 81);
  await checkPeers(ctx, moeJob(s, x, probs, w), await ours(x, probs, w), tolerance, providers);
}

/** Softmax over each row's k largest logits (ids in order of logit, ties to the lower id): MoE's routing. */
export function topkSoftmax(logits: Float32Array, T: number, E: number, k: number): { ids: Uint32Array; weights: Float32Array } {
  const ids = new Uint32Array(T * k), weights = new Float32Array(T * k);
  for (let t = 0; t < T; t++) {
    const row = Array.from(logits.subarray(t * E, (t + 1) * E), (v, e) => [v, e] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k);
    const m = row[0][0];
    const ex = row.map(([v]) => Math.exp(v - m)), sum = ex.reduce((a, b) => a + b, 0);
    row.forEach(([, e], j) => { ids[t * k + j] = e; weights[t * k + j] = ex[j] / sum; });
  }
  return { ids, weights };
}

/** The routing as dense weights [E, T, 1] (zero for experts a token did not choose): the dense graph's input. */
function denseRouting(logits: Float32Array, T: number, E: number, k: number): Float32Array {
  const r = topkSoftmax(logits, T, E, k);
  const w = new Float32Array(E * T);
  for (let t = 0; t < T; t++) for (let j = 0; j < k; j++) w[r.ids[t * k + j] * T + t] = r.weights[t * k + j];
  return w;
}

function moeDenseJob(s: MoeShape, x: Float32Array, logits: Float32Array, w: MoeWeights): PeerJob {
  return {
    op: 'MoE dense expert graph', shape: `T${s.T} h${s.hidden} i${s.inter} top-${s.k}/${s.E}`,
    flops: 2 * s.T * s.E * 3 * s.hidden * s.inter,
    model: () => moeDenseGraphModel(s.T, s.hidden, s.inter, s.E, w.gate, w.up, w.down),
    feeds: [{ name: 'X', dims: [s.T, s.hidden], data: x }, { name: 'W', dims: [s.E, s.T, 1], data: denseRouting(logits, s.T, s.E, s.k) }],
    output: { name: 'Y', dims: [s.T, s.hidden] },
  };
}

/**
 * The MoE layer as the op graph an exporter emits without a MoE op (onnx-builder moeDenseGraphModel:
 * every expert on every token, batched MatMuls, weighted sum), routing weights given as an input.
 * For the WebGPU EP, which has no MoE kernel; it does E/k times the routed work.
 */
export function peerMoeDense(ctx: BenchContext, s: MoeShape, o: PeerOptions): Promise<PeerResult[]> {
  const { x, probs, w } = moeInputs(s, s.seed ?? 71);
  return timePeers(ctx, moeDenseJob(s, x, probs, w), o);
}

/** Checks the dense expert graph against `ours(x, routerLogits, weights)` (routing: softmax over the top-k logits). */
export async function checkPeerMoeDense(ctx: BenchContext, s: MoeShape, ours: (x: Float32Array, probs: Float32Array, w: MoeWeights) => Promise<Float32Array>, tolerance = 1e-4, providers: PeerProvider[] = ['webgpu']): Promise<void> {
  if (!ctx.peers) return;
  const { x, probs, w } = moeInputs(s, 81);
  await checkPeers(ctx, moeDenseJob(s, x, probs, w), await ours(x, probs, w), tolerance, providers);
}
