/**
 * GPT-OSS's kernel options at gpt-oss-20b widths (hidden 2880, expert intermediate 2880, 32 experts
 * top-4, 64 query / 8 kv heads of 64, sliding window 128):
 *  - decode GEMV (M = 1) of one expert's gate|up (N×K = 5760×2880) and down (2880×2880) in MXFP4 (the
 *    checkpoint's own format: 4.25 bits per weight) beside webmoe's q4 (groups of 32, f16 scales: 4.5 bits);
 *  - the routed experts of one decode token (T = 1, top-4; 4 experts resident: decode reads only the
 *    chosen ones) in MXFP4 with biases and the clamped SwiGLU, beside q4 with SiLU and no biases;
 *  - GQA decode attention (64/8 heads, d = 64) over an 8192-token cache: full causal, and a 128-token
 *    sliding window with sinks (what every other GPT-OSS layer runs), with the K/V bytes each reads.
 * Before timing, the MXFP4 GEMV is checked against the CPU reference on a small ragged shape.
 * q4 and MXFP4 are both resident and timed alternately (q4, mxfp4, q4, mxfp4: ROUNDS rounds), and each
 * row reports the lower of its medians: on a shared machine the load drifts within seconds, and the
 * ratio of two rows measured minutes apart says more about the load than about the kernels.
 */
import type { BenchContext, BenchSuite } from '../types';
import type { Recorder } from '../../gpu/recorder';
import { attentionDecode, attentionDecodeInfo, type AttentionArgs } from '../../kernels/attention';
import { linear } from '../../kernels/linear';
import { linearRef } from '../../kernels/linear.ref';
import { destroyExpertGroups, destroyExperts, moeExpertGroupsForward, moeExperts, uploadExperts, uploadMxfp4ExpertGroups } from '../../kernels/moe';
import { GPT_OSS_SWIGLU } from '../../kernels/moe.ref';
import { destroyWeight, uploadMxfp4Weight, uploadWeight } from '../../kernels/weight';
import { packMxfp4, quantizeMxfp4 } from '../../kernels/weight-pack';
import { dequantizeRef } from '../../kernels/weight.ref';
import { randomUniform } from '../../util/random';

const HIDDEN = 2880, INTER = 2880;
const ROUNDS = 2;

/** Times every variant ROUNDS times, alternating; the lowest median of each. */
async function alternate<V extends string>(ctx: BenchContext, variants: Record<V, (rec: Recorder) => void>, repeat: number): Promise<Record<V, number>> {
  const best = {} as Record<V, number>;
  for (let r = 0; r < ROUNDS; r++) {
    for (const v of Object.keys(variants) as V[]) {
      const ms = await ctx.time(variants[v], { repeat });
      best[v] = Math.min(best[v] ?? Infinity, ms);
    }
  }
  return best;
}
const BPW = { q4: 0.5 + 2 / 32, mxfp4: 0.5 + 1 / 32 };

/** MXFP4 bytes of a random [N, K] matrix in [−a, a] (quantised: timing does not depend on the values). */
function mxfp4Of(N: number, K: number, seed: number, a = 0.05) {
  return quantizeMxfp4(randomUniform(N * K, seed, -a, a), N, K);
}

async function checkMxfp4(ctx: BenchContext) {
  const gpu = ctx.gpu;
  const M = 3, N = 7, K = 200;
  const q = mxfp4Of(N, K, 21, 1);
  const w = uploadMxfp4Weight(gpu, 'bench.gptoss.check', q.blocks, q.scales, N, K);
  const x = randomUniform(M * K, 22);
  const bx = gpu.buffers.upload('bench.gptoss.check.x', x), by = gpu.buffers.create('bench.gptoss.check.y', M * N * 4);
  try {
    const got = await gpu.checked(async () => {
      const rec = gpu.recorder('bench.gptoss.check');
      linear(gpu, rec, { x: bx, w, y: by, M, kernel: 'gemv' });
      rec.submit();
      return gpu.buffers.readF32(by, 0, M * N);
    });
    const ref = linearRef(x, dequantizeRef(packMxfp4(q.blocks, q.scales, N, K)), M, N, K);
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]));
    if (!(worst <= 1e-4)) ctx.error(`mxfp4 GEMV differs from the CPU reference by ${worst}`);
  } finally {
    destroyWeight(gpu, w);
    gpu.buffers.destroy(bx);
    gpu.buffers.destroy(by);
  }
}

async function benchGemv(ctx: BenchContext, N: number, K: number, what: string) {
  const gpu = ctx.gpu;
  const shape = `M=1 N×K=${N}×${K}`;
  const x = gpu.buffers.upload('bench.gptoss.x', randomUniform(K, 1, -1, 1));
  const y = gpu.buffers.create('bench.gptoss.y', N * 4);
  const q = mxfp4Of(N, K, 2);
  const w = {
    q4: uploadWeight(gpu, 'bench.gptoss.q4', randomUniform(N * K, 2, -0.05, 0.05), N, K, { format: 'q4', groupSize: 32 }),
    mxfp4: uploadMxfp4Weight(gpu, 'bench.gptoss.mxfp4', q.blocks, q.scales, N, K),
  };
  try {
    ctx.progress(`gptoss-kernels: GEMV q4 / mxfp4 ${shape}`);
    const ms = await alternate(ctx, {
      q4: (rec: Recorder) => linear(gpu, rec, { x, w: w.q4, y, M: 1, kernel: 'gemv' }),
      mxfp4: (rec: Recorder) => linear(gpu, rec, { x, w: w.mxfp4, y, M: 1, kernel: 'gemv' }),
    }, ctx.quick ? 4 : 8);
    for (const v of ['q4', 'mxfp4'] as const) {
      ctx.result({
        suite: 'gptoss-kernels', name: 'decode GEMV', variant: v, shape, medianMs: ms[v], bytes: w[v].bytes + 4 * (K + N), flops: 2 * N * K,
        extra: { what, bytesPerWeight: +BPW[v].toFixed(4), weightBytes: w[v].bytes, mxfp4OverQ4: +(ms.mxfp4 / ms.q4).toFixed(3) },
      });
    }
  } finally {
    destroyWeight(gpu, w.q4);
    destroyWeight(gpu, w.mxfp4);
    gpu.buffers.destroy(x);
    gpu.buffers.destroy(y);
  }
}

async function benchExperts(ctx: BenchContext) {
  const gpu = ctx.gpu;
  const D = HIDDEN, I = INTER, E = 4, K = 4, T = 1;
  const shape = `T=${T} D=${D} I=${I} top-${K} (${E} resident)`;
  const x = gpu.buffers.upload('bench.gptoss.moe.x', randomUniform(T * D, 5, -1, 1));
  const ids = gpu.buffers.upload('bench.gptoss.moe.ids', Uint32Array.from({ length: T * K }, (_, i) => i % E));
  const wts = gpu.buffers.upload('bench.gptoss.moe.wts', new Float32Array(T * K).fill(1 / K));
  const out = gpu.buffers.create('bench.gptoss.moe.out', T * D * 4);
  const weightsRead = K * 3 * I * D;
  const one = { gate: randomUniform(I * D, 6, -0.05, 0.05), up: randomUniform(I * D, 7, -0.05, 0.05), down: randomUniform(D * I, 8, -0.05, 0.05) };
  const q4 = uploadExperts(gpu, 'bench.gptoss.moe.q4', Array.from({ length: E }, () => one), D, I, 'q4', 32);
  const gu = mxfp4Of(2 * I, D, 6), dn = mxfp4Of(D, I, 8);
  const tile = (a: Uint8Array) => { const o = new Uint8Array(a.length * E); for (let e = 0; e < E; e++) o.set(a, e * a.length); return o; };
  const mx = uploadMxfp4ExpertGroups(gpu, 'bench.gptoss.moe.mxfp4', {
    gateUpBlocks: tile(gu.blocks), gateUpScales: tile(gu.scales), gateUpBias: randomUniform(E * 2 * I, 9, -0.1, 0.1),
    downBlocks: tile(dn.blocks), downScales: tile(dn.scales), downBias: randomUniform(E * D, 10, -0.1, 0.1),
  }, E, D, I);
  try {
    ctx.progress(`gptoss-kernels: MoE experts q4 / mxfp4 ${shape}`);
    const ms = await alternate(ctx, {
      q4: (rec: Recorder) => moeExperts(gpu, rec, { x, T, experts: q4, ids, weights: wts, K, shared: null, out, mode: 'decode' }),
      mxfp4: (rec: Recorder) => moeExpertGroupsForward(gpu, rec, { x, T, experts: mx, ids, weights: wts, K, shared: null, out, mode: 'decode', activation: { kind: 'swiglu_oai', ...GPT_OSS_SWIGLU } }),
    }, ctx.quick ? 2 : 4);
    for (const v of ['q4', 'mxfp4'] as const) {
      ctx.result({
        suite: 'gptoss-kernels', name: 'MoE experts (decode)', variant: v === 'q4' ? 'q4, silu' : 'mxfp4, biases, swiglu_oai', shape, medianMs: ms[v],
        bytes: Math.round(weightsRead * BPW[v]) + 4 * (T * D * 2 + T * K * (2 + 2 * I)), flops: 2 * T * K * 3 * I * D,
        extra: { what: 'gpt-oss-20b expert shape', bytesPerWeight: +BPW[v].toFixed(4), mxfp4OverQ4: +(ms.mxfp4 / ms.q4).toFixed(3) },
      });
    }
  } finally {
    destroyExperts(gpu, q4);
    destroyExpertGroups(gpu, mx);
    for (const b of [x, ids, wts, out]) gpu.buffers.destroy(b);
  }
}

async function benchAttention(ctx: BenchContext) {
  const gpu = ctx.gpu;
  const heads = 64, kvHeads = 8, d = 64, past = ctx.quick ? 2047 : 8191, T = past + 1;
  const q = gpu.buffers.upload('bench.gptoss.att.q', randomUniform(heads * d, 11));
  const k = gpu.buffers.upload('bench.gptoss.att.k', randomUniform(T * kvHeads * d, 12));
  const v = gpu.buffers.upload('bench.gptoss.att.v', randomUniform(T * kvHeads * d, 13));
  const sinks = gpu.buffers.upload('bench.gptoss.att.sinks', randomUniform(heads, 14));
  const out = gpu.buffers.create('bench.gptoss.att.out', heads * d * 4);
  const shape = `GQA ${heads}/${kvHeads} d=${d}, cache ${T}`;
  try {
    ctx.progress(`gptoss-kernels: attention decode full / window 128 + sinks ${shape}`);
    const args: Record<'full causal' | 'window 128 + sinks', AttentionArgs> = {
      'full causal': { q, k, v, out, S: 1, T, past, heads, kvHeads, dQk: d, dV: d, scale: d ** -0.5, causal: true },
      'window 128 + sinks': { q, k, v, out, S: 1, T, past, heads, kvHeads, dQk: d, dV: d, scale: d ** -0.5, causal: true, window: 128, sinks },
    };
    const ms = await alternate(ctx, {
      'full causal': (rec: Recorder) => attentionDecode(gpu, rec, args['full causal']),
      'window 128 + sinks': (rec: Recorder) => attentionDecode(gpu, rec, args['window 128 + sinks']),
    }, ctx.quick ? 2 : 4);
    for (const variant of ['full causal', 'window 128 + sinks'] as const) {
      const a = args[variant];
      const info = attentionDecodeInfo(gpu, a);
      ctx.result({
        suite: 'gptoss-kernels', name: 'attention decode', variant, shape, medianMs: ms[variant], bytes: info.cacheReadBytes, flops: 4 * heads * d * Math.min(T, a.window ?? T),
        extra: { kernel: info.label, splits: info.splits, cacheReadBytes: info.cacheReadBytes, readPerCache: +(info.cacheReadBytes / (T * kvHeads * 2 * d * 4)).toFixed(4) },
      });
    }
  } finally {
    for (const b of [q, k, v, sinks, out]) gpu.buffers.destroy(b);
  }
}

export const gptossKernelsSuite: BenchSuite = {
  name: 'gptoss-kernels',
  order: 26,
  async run(ctx) {
    await checkMxfp4(ctx);
    await benchGemv(ctx, 2 * INTER, HIDDEN, 'gpt-oss-20b expert gate|up');
    if (!ctx.quick) await benchGemv(ctx, HIDDEN, INTER, 'gpt-oss-20b expert down');
    await benchExperts(ctx);
    await benchAttention(ctx);
  },
};
