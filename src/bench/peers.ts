/**
 * Peers: onnxruntime-web running one-node ONNX models (built in-process by onnx-builder.ts) at the same
 * shapes as our kernels, on the same GPUDevice (WebGPU EP) and on the CPU (wasm EP, the baseline).
 *
 * Suites call e.g. `peerMatMul(ctx, { M, N, K }, { name, oursMs })` after timing their own kernel;
 * every helper is a no-op when `ctx.peers` is false and records failures with ctx.error (a peer that
 * cannot run an op never fails the suite). `check*` helpers run the peer on one small shape and
 * compare its output with ours, so the peer is known to compute the same thing.
 *
 * The WebGPU peer is driven with its inputs and outputs in GPU buffers (no upload or readback per
 * run), timed like ours: `repeat` runs, then wait for the queue, median over iterations.
 */
import type * as Ort from 'onnxruntime-web';
import type { BenchContext, PeerResult } from './types';
import { median } from './context';
import { attentionModel, matmulModel, matmulNBitsModel, moeModel, quantizeNBits, type NBitsWeights } from './onnx-builder';
import { randomUniform } from '../util/random';

export type PeerProvider = 'webgpu' | 'wasm';
export const PEER_NAMES: Record<PeerProvider, string> = { webgpu: 'ort-webgpu', wasm: 'ort-wasm' };

export interface PeerOptions {
  /** Row name in the peers table (usually the same as the result row's name). */
  name: string;
  /** Our median for the same shape (ratio = peerMs / oursMs). */
  oursMs: number;
  suite?: string;
  providers?: PeerProvider[];
  /** Defaults: quick 1/3, full 2/5. */
  warmup?: number;
  iters?: number;
  /** Runs per wait (amortises the submit round trip like ctx.time's repeat). */
  repeat?: number;
  /** Skip the wasm (CPU) peer above this many flops per call (it can take seconds on big shapes). */
  wasmMaxFlops?: number;
  note?: string;
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

interface Feed { name: string; dims: number[]; data: Float32Array }

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
      for (const f of feeds) t[f.name] = new ort.Tensor('float32', f.data, f.dims);
      return new PeerSession(ort, provider, session, t, undefined, null, [], false);
    }
    const session = await ort.InferenceSession.create(model, {
      executionProviders: ['webgpu'],
      graphOptimizationLevel: 'all',
      ...(gpuIo ? { preferredOutputLocation: 'gpu-buffer' as const } : {}),
    });
    const device = await ortDevice(ort);
    const t: Record<string, Ort.Tensor> = {};
    const owned: GPUBuffer[] = [];
    if (!gpuIo) {
      for (const f of feeds) t[f.name] = new ort.Tensor('float32', f.data, f.dims);
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
    for (const f of feeds) t[f.name] = gpuTensor(f.name, f.dims, f.data);
    const fetches = { [output.name]: gpuTensor(output.name, output.dims) };
    return new PeerSession(ort, provider, session, t, fetches, device, owned, true);
  }

  /** One run, waited for (outputs stay on the GPU for the WebGPU session). */
  private async runOnce(): Promise<void> {
    const out = this.fetches ? await this.session.run(this.feeds, this.fetches) : await this.session.run(this.feeds);
    if (!this.fetches) for (const v of Object.values(out)) if (v.location === 'gpu-buffer') v.dispose();
  }

  async time(warmup: number, iters: number, repeat: number): Promise<number> {
    const now = () => performance.now();
    const once = async () => {
      const t0 = now();
      for (let r = 0; r < repeat; r++) await this.runOnce();
      if (this.device) await this.device.queue.onSubmittedWorkDone();
      return (now() - t0) / repeat;
    };
    for (let i = 0; i < warmup; i++) await once();
    const s: number[] = [];
    for (let i = 0; i < iters; i++) s.push(await once());
    return median(s);
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
        await s.time(1, 1, 1);
      } catch (e) {
        if (!gpuIo) throw e;
        fallback = ` (GPU I/O refused: ${(e as Error).message.slice(0, 120)})`;
        // GPU-resident I/O refused: fall back to CPU tensors (upload + readback per run, noted).
        await s?.release().catch(() => {});
        gpuIo = false;
        s = await PeerSession.create(ort, provider, model, job.feeds, job.output, false);
      }
      const peerMs = await s.time(o.warmup ?? (ctx.quick ? 1 : 2), o.iters ?? (ctx.quick ? 3 : 5), o.repeat ?? 1);
      const notes = [provider === 'wasm' ? '1 thread' : gpuIo ? 'GPU-resident I/O' : `CPU I/O (upload + readback per run)${fallback}`, o.note].filter(Boolean).join('; ');
      out.push(ctx.peer({ suite: o.suite ?? '', name: o.name, peer: PEER_NAMES[provider], oursMs: o.oursMs, peerMs, shape: job.shape, note: notes }));
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

function attentionInputs(s: AttentionShape, seed: number) {
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
    op: `MoE top-${s.k}/${s.E}`, shape: `T${s.T} h${s.hidden} i${s.inter}`,
    flops: 2 * s.T * s.k * 3 * s.hidden * s.inter,
    model: () => moeModel(s.T, s.hidden, s.inter, s.E, s.k, w.gate, w.up, w.down),
    feeds: [{ name: 'X', dims: [s.T, s.hidden], data: x }, { name: 'R', dims: [s.T, s.E], data: probs }],
    output: { name: 'Y', dims: [s.T, s.hidden] },
  };
}

function moeInputs(s: MoeShape, seed: number) {
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
export async function checkPeerMoE(ctx: BenchContext, s: MoeShape, ours: (x: Float32Array, probs: Float32Array, w: MoeWeights) => Promise<Float32Array>, tolerance = 1e-4): Promise<void> {
  if (!ctx.peers) return;
  const { x, probs, w } = moeInputs(s, 81);
  await checkPeers(ctx, moeJob(s, x, probs, w), await ours(x, probs, w), tolerance);
}
