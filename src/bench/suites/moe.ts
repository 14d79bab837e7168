/**
 * One MoE layer at DeepSeek-V2-Lite shapes (hidden 2048, 64 routed experts, top-6, expert width 1408,
 * 2 shared experts = one 2816-wide MLP, softmax routing) with random weights, for 1/16/128/512 tokens:
 *  - the whole layer as the model runs it (gate 2 dispatches + shared MLP 3 + routed experts 2 or 4),
 *  - the routed experts alone in decode and grouped mode,
 *  - a per-token dense loop over the same experts (ids read back to the CPU first, not timed: GEMV
 *    gate|up, SiLU·mul, GEMV down per (token, slot), then the same combine) as the baseline.
 * Bytes: `bytes` is the minimum (weights of the distinct chosen experts once + activations); `extra`
 * has each path's modelled weight traffic and its ratio to that minimum, and dispatches per layer.
 *
 * f32 V2-Lite experts are 2.2 GB per layer: when the stacked gate|up weights pass
 * maxStorageBufferBindingSize the suite uses as many experts as fit and says so in `variant`.
 * Quick mode (software GPUs): hidden 256, width 176 (V2-Lite ÷ 8), 16 experts, top-6, 1 and 16 tokens;
 * the decode path is timed only up to 4 tokens there (it is the small-T path).
 * Then (both modes) the small-prefill paths at V2-Lite's real widths and routing density (hidden 2048,
 * 64 experts × 1408, top-6) in q4 and q8 storage: decode vs batched (and grouped, not in quick mode)
 * at 4/8/19/64 tokens (smallPrefillRows; WEBMOE_MOE_SMALL_TOKENS=8,19 picks others, =0 skips).
 */
import type { BenchContext, BenchSuite } from '../types';
import type { Recorder } from '../../gpu/recorder';
import { moeGate, moeExperts, moeExpertsMode, moeCombine, uploadExperts, destroyExperts, MOE_DECODE_MAX_TOKENS, MOE_TILE_ROWS, type MoeRouting, type MoeExpertWeights, type MoeExpertsMode } from '../../kernels/moe';
import { gemv, matmul } from '../../kernels/matmul';
import { siluMulRows } from '../../kernels/elementwise';
import { randomUniform } from '../../util/random';
import { checkPeerMoE, checkPeerMoeDense, moeInputs, peerMoE, peerMoeDense, topkSoftmax, type MoeShape, type MoeWeights } from '../peers';

/** Our routed experts (f32, no shared expert) for x, CPU-routed ids / weights and per-expert weights. */
async function oursMoeOnce(ctx: BenchContext, s: MoeShape, x: Float32Array, logits: Float32Array, w: MoeWeights): Promise<Float32Array> {
  const gpu = ctx.gpu;
  const { hidden: D, inter: I, E, k: K, T } = s;
  const experts = uploadExperts(gpu, 'bench.peer.moe', Array.from({ length: E }, (_, e) => ({
    gate: w.gate.subarray(e * I * D, (e + 1) * I * D), up: w.up.subarray(e * I * D, (e + 1) * I * D), down: w.down.subarray(e * D * I, (e + 1) * D * I),
  })), D, I);
  const r = topkSoftmax(logits, T, E, K);
  const bx = gpu.buffers.upload('bench.peer.moe.x', x), ids = gpu.buffers.upload('bench.peer.moe.ids', r.ids), wts = gpu.buffers.upload('bench.peer.moe.w', r.weights);
  const out = gpu.buffers.create('bench.peer.moe.out', T * D * 4);
  try {
    return await gpu.checked(async () => {
      const rec = gpu.recorder('bench.peer.moe');
      moeExperts(gpu, rec, { x: bx, T, experts, ids, weights: wts, K, shared: null, out });
      rec.submit();
      return gpu.buffers.readF32(out, 0, T * D);
    });
  } finally {
    destroyExperts(gpu, experts);
    for (const b of [bx, ids, wts, out]) gpu.buffers.destroy(b);
    gpu.temps.releaseAll();
  }
}

/**
 * onnxruntime-web's com.microsoft MoE (SwiGLU experts, softmax over the top-k router logits) against
 * our gate (router GEMV + softmax top-k + renormalise) and routed experts ('auto' mode), f32, no shared
 * expert; checked first on a small ragged shape with the routing done on the CPU for both.
 */
async function moePeers(ctx: BenchContext) {
  const gpu = ctx.gpu;
  ctx.progress('moe: checking the MoE peer against our experts');
  for (const small of [{ T: 1, hidden: 32, inter: 24, E: 6, k: 2 }, { T: 5, hidden: 48, inter: 20, E: 8, k: 3 }] as MoeShape[]) {
    // The fused MoE op exists on ORT's CPU EP only (its WebGPU EP assigns the node to the CPU EP).
    await checkPeerMoE(ctx, small, (x, logits, w) => oursMoeOnce(ctx, small, x, logits, w), 1e-4, ['wasm']);
    // On WebGPU: the op graph an exporter emits without a MoE op (all experts, dense routing weights).
    await checkPeerMoeDense(ctx, small, (x, logits, w) => oursMoeOnce(ctx, small, x, logits, w), 1e-4, ['webgpu']);
  }
  const shapes: MoeShape[] = ctx.quick ? [{ T: 1, hidden: 256, inter: 128, E: 16, k: 4 }] : [{ T: 1, hidden: 1024, inter: 704, E: 16, k: 6 }, { T: 16, hidden: 1024, inter: 704, E: 16, k: 6 }];
  for (const s of shapes) {
    const { hidden: D, inter: I, E, k: K, T } = s;
    const { x, w } = moeInputs(s, 71);
    const experts = uploadExperts(gpu, 'bench.peer.moe', Array.from({ length: E }, (_, e) => ({
      gate: w.gate.subarray(e * I * D, (e + 1) * I * D), up: w.up.subarray(e * I * D, (e + 1) * I * D), down: w.down.subarray(e * D * I, (e + 1) * D * I),
    })), D, I);
    const bx = gpu.buffers.upload('bench.peer.moe.x', x);
    const gateW = gpu.buffers.upload('bench.peer.moe.gate', randomUniform(E * D, 72, -0.1, 0.1));
    const ids = gpu.buffers.create('bench.peer.moe.ids', T * K * 4), wts = gpu.buffers.create('bench.peer.moe.w', T * K * 4);
    const out = gpu.buffers.create('bench.peer.moe.out', T * D * 4);
    const routing: MoeRouting = { experts: E, topK: K, nGroup: 1, topkGroup: 1, scoring: 'softmax', normTopkProb: true, routedScalingFactor: 1, hasBias: false };
    try {
      const ours = {
        record: (rec: Recorder) => { moeGate(gpu, rec, { x: bx, T, D, gateW, bias: null, routing, ids, weights: wts }); moeExperts(gpu, rec, { x: bx, T, experts, ids, weights: wts, K, shared: null, out }); },
        inputs: [{ buffer: bx, data: x }], output: { buffer: out, bytes: T * D * 4 },
      };
      await peerMoeDense(ctx, s, {
        name: `MoE layer, routed experts (${ctx.quick ? 'webmoe-tiny shapes' : 'V2-Lite ÷2 widths, 16 experts, top-6'})`,
        ours, repeat: T === 1 ? (ctx.quick ? 2 : 4) : 1, providers: ['webgpu'],
        note: `the WebGPU EP has no MoE op: the exporter's dense graph runs all ${E} experts (${(E / K).toFixed(1)}× the routed work); ours also computes the router logits`,
      });
      await peerMoE(ctx, s, {
        name: `MoE layer, routed experts (${ctx.quick ? 'webmoe-tiny shapes' : 'V2-Lite ÷2 widths, 16 experts, top-6'})`,
        ours,
        repeat: T === 1 ? (ctx.quick ? 2 : 4) : 1,
        providers: ['wasm'], wasmMaxFlops: Infinity,
        note: 'ours also computes the router logits (x · W_gateᵀ); the peer is given them',
      });
    } finally {
      destroyExperts(gpu, experts);
      for (const b of [bx, gateW, ids, wts, out]) gpu.buffers.destroy(b);
    }
  }
}

interface Shape { D: number; I: number; E: number; K: number; sharedI: number; tokens: number[]; what: string }

export function moeShapes(quick: boolean): Shape {
  return quick
    ? { D: 256, I: 176, E: 16, K: 6, sharedI: 352, tokens: [1, 16], what: 'V2-Lite ÷8 width, 16 experts (quick)' }
    : { D: 2048, I: 1408, E: 64, K: 6, sharedI: 2816, tokens: [1, 16, 128, 512], what: 'DeepSeek-V2-Lite' };
}

/**
 * Routed experts at V2-Lite widths for the token counts a prompt's prefill runs on a CPU adapter without
 * the grouped GEMMs (moe.ts moeExpertsMode): decode (each weight decoded per (token, slot)) vs batched
 * (per tile of 4 sorted rows of an expert) vs grouped, q4 and q8 experts, routing from a random gate.
 */
async function smallPrefillRows(ctx: BenchContext) {
  const gpu = ctx.gpu;
  const env = typeof process !== 'undefined' ? process.env.WEBMOE_MOE_SMALL_TOKENS : undefined;
  const tokens = env !== undefined ? env.split(',').map(Number).filter((t) => t > 0) : [4, 8, 19, 64];
  if (!tokens.length) return;
  const D = 2048, I = 1408, E = 64, K = 6;
  const routing: MoeRouting = { experts: E, topK: K, nGroup: 1, topkGroup: 1, scoring: 'softmax', normTopkProb: false, routedScalingFactor: 1, hasBias: false };
  const Tmax = Math.max(...tokens);
  const x = gpu.buffers.upload('bench.moe.small.x', randomUniform(Tmax * D, 17, -1, 1));
  const gateW = gpu.buffers.upload('bench.moe.small.gate', randomUniform(E * D, 16, -0.1, 0.1));
  const ids = gpu.buffers.create('bench.moe.small.ids', Tmax * K * 4), wts = gpu.buffers.create('bench.moe.small.weights', Tmax * K * 4);
  const out = gpu.buffers.create('bench.moe.small.out', Tmax * D * 4);
  const one = { gate: randomUniform(I * D, 11, -0.03, 0.03), up: randomUniform(I * D, 12, -0.03, 0.03), down: randomUniform(D * I, 13, -0.03, 0.03) };
  try {
    for (const format of ['q4', 'q8'] as const) {
      ctx.progress(`moe: uploading ${E} ${format} experts at V2-Lite widths`);
      const w = uploadExperts(gpu, `bench.moe.small.${format}`, Array.from({ length: E }, () => one), D, I, format);
      try {
        for (const T of tokens) {
          const rec0 = gpu.recorder('bench.moe.small.route');
          moeGate(gpu, rec0, { x, T, D, gateW, bias: null, routing, ids, weights: wts });
          rec0.submit();
          gpu.temps.releaseAll();
          const idsHost = await gpu.buffers.readU32(ids, 0, T * K);
          const distinct = new Set(idsHost).size;
          const auto = moeExpertsMode(gpu, T, K, E);
          const ms: Partial<Record<MoeExpertsMode, number>> = {};
          // grouped at these widths takes 10+ s per run on a software adapter: full runs only
          for (const mode of ctx.quick ? (['decode', 'batched'] as const) : (['decode', 'batched', 'grouped'] as const)) {
            ms[mode] = await ctx.time((rec) => moeExperts(gpu, rec, { x, T, experts: w, ids, weights: wts, K, shared: null, out, mode }), { warmup: 1, iters: 2, repeat: 1 });
            ctx.result({
              suite: 'moe', name: `routed experts small prefill ${mode}`, variant: `DeepSeek-V2-Lite widths, ${format} experts`, shape: `T=${T} D=${D} E=${E} K=${K} I=${I}`,
              medianMs: ms[mode]!, bytes: (distinct * w.bytes) / E + 4 * (2 * T * D + 2 * T * K), flops: 2 * T * K * 3 * I * D,
              extra: { distinctExperts: distinct, autoMode: auto, ...(mode !== 'decode' && ms.decode ? { speedupVsDecode: +(ms.decode / ms[mode]!).toFixed(2) } : {}) },
            });
          }
        }
      } finally {
        destroyExperts(gpu, w);
      }
    }
  } finally {
    for (const b of [x, gateW, ids, wts, out]) gpu.buffers.destroy(b);
    gpu.temps.releaseAll();
  }
}

export const moeSuite: BenchSuite = {
  name: 'moe',
  order: 40,
  async run(ctx: BenchContext) {
    if (ctx.peers) await moePeers(ctx);
    const gpu = ctx.gpu;
    const s = moeShapes(ctx.quick);
    const { D, I, K, sharedI } = s;
    const fit = Math.floor(Math.min(gpu.caps.maxStorageBufferBindingSize, gpu.caps.maxBufferSize) / (2 * I * D * 4));
    const E = Math.min(s.E, fit);
    if (E < K) {
      ctx.error(`moe: not even ${K} experts of ${2 * I}×${D} f32 fit maxStorageBufferBindingSize ${gpu.caps.maxStorageBufferBindingSize}`);
      return;
    }
    const variant = `${s.what}${E < s.E ? `, ${E} of ${s.E} experts (maxStorageBufferBindingSize)` : ''}, f32`;
    const routing: MoeRouting = { experts: E, topK: K, nGroup: 1, topkGroup: 1, scoring: 'softmax', normTopkProb: false, routedScalingFactor: 1, hasBias: false };

    ctx.progress(`moe: uploading ${E} experts (${((E * 3 * I * D * 4) / 2 ** 20).toFixed(0)} MiB)`);
    // Values do not change timing: one random expert is written E times (keeps host memory small).
    const one = { gate: randomUniform(I * D, 1, -0.03, 0.03), up: randomUniform(I * D, 2, -0.03, 0.03), down: randomUniform(D * I, 3, -0.03, 0.03) };
    const experts: MoeExpertWeights = uploadExperts(gpu, 'bench.moe', Array.from({ length: E }, () => one), D, I);
    // The same stack in f16 / q8 / q4 storage (what those loads use), decoded in the shader.
    const packed: MoeExpertWeights[] = D % 4 === 0 && I % 4 === 0 ? (['f16', 'q8', 'q4'] as const).map((f) => uploadExperts(gpu, `bench.moe.${f}`, Array.from({ length: E }, () => one), D, I, f)) : [];
    const sharedGU = gpu.buffers.upload('bench.moe.shared.gate_up', randomUniform(2 * sharedI * D, 4, -0.03, 0.03));
    const sharedDown = gpu.buffers.upload('bench.moe.shared.down', randomUniform(D * sharedI, 5, -0.03, 0.03));
    const gateW = gpu.buffers.upload('bench.moe.gate', randomUniform(E * D, 6, -0.1, 0.1));
    const Tmax = Math.max(...s.tokens);
    const x = gpu.buffers.upload('bench.moe.x', randomUniform(Tmax * D, 7, -1, 1));
    const ids = gpu.buffers.create('bench.moe.ids', Tmax * K * 4), wts = gpu.buffers.create('bench.moe.weights', Tmax * K * 4);
    const sharedOut = gpu.buffers.create('bench.moe.shared.out', Tmax * D * 4);
    const out = gpu.buffers.create('bench.moe.out', Tmax * D * 4);
    const gu = gpu.buffers.create('bench.moe.gu', Tmax * 2 * Math.max(sharedI, I) * 4);
    const h = gpu.buffers.create('bench.moe.h', Tmax * Math.max(sharedI, I) * 4);
    const yRows = gpu.buffers.create('bench.moe.y', Tmax * K * D * 4);
    const identity = gpu.buffers.upload('bench.moe.identity', Uint32Array.from({ length: Tmax * K }, (_, i) => i));
    const expertBytes = 3 * I * D * 4;
    const align = gpu.caps.minStorageBufferOffsetAlignment;
    const sliceable = (2 * I * D * 4) % align === 0 && (D * I * 4) % align === 0;
    try {
      for (const T of s.tokens) {
        const gate = (rec: Recorder) => moeGate(gpu, rec, { x, T, D, gateW, bias: null, routing, ids, weights: wts });
        const shared = (rec: Recorder) => {
          matmul(gpu, rec, { x, w: sharedGU, y: gu, M: T, N: 2 * sharedI, K: D });
          siluMulRows(gpu, rec, gu, h, T, sharedI);
          matmul(gpu, rec, { x: h, w: sharedDown, y: sharedOut, M: T, N: D, K: sharedI });
        };
        const routed = (mode: 'auto' | 'decode' | 'grouped', w = experts) => (rec: Recorder) => moeExperts(gpu, rec, { x, T, experts: w, ids, weights: wts, K, shared: sharedOut, out, mode });
        // Route once and read the choices (for the byte model and the baseline loop).
        const idsHost = await gpu.checked(async () => {
          const rec = gpu.recorder('bench.moe.route');
          gate(rec);
          shared(rec);
          rec.submit();
          gpu.temps.releaseAll();
          return gpu.buffers.readU32(ids, 0, T * K);
        });
        const counts = new Array<number>(E).fill(0);
        idsHost.forEach((e) => counts[e]++);
        const distinct = counts.filter((c) => c > 0).length;
        const act = 4 * (2 * T * D + 2 * T * K);
        const minBytes = distinct * expertBytes + act;
        const decodeBytes = T * K * expertBytes + act;
        const groupedBytes = counts.reduce((a, c) => a + Math.ceil(c / MOE_TILE_ROWS), 0) * expertBytes + act;
        const flops = 2 * T * K * 3 * I * D;
        const shape = `T=${T} D=${D} E=${E} K=${K} I=${I}`;
        const count = (f: (rec: Recorder) => void) => { const r = gpu.recorder('count'); f(r); const n = r.dispatches; gpu.temps.releaseAll(); return n; };
        const repeat = T <= MOE_DECODE_MAX_TOKENS ? (ctx.quick ? 2 : 8) : 1;

        // Whole layer as the model runs it.
        const layer = (rec: Recorder) => { gate(rec); shared(rec); routed('auto')(rec); };
        const layerMs = await ctx.time(layer, { repeat });
        const autoMode = T <= MOE_DECODE_MAX_TOKENS ? 'decode' : 'grouped';
        ctx.result({
          suite: 'moe', name: 'moe layer (gate + shared + routed)', variant, shape, medianMs: layerMs,
          bytes: minBytes + 3 * sharedI * D * 4 + E * D * 4, flops: flops + 2 * T * 3 * sharedI * D + 2 * T * E * D,
          extra: { dispatchesPerLayer: count(layer), routedMode: autoMode, distinctExperts: distinct },
        });

        // Routed experts: decode vs grouped vs the per-token loop.
        const modes: ('decode' | 'grouped')[] = ['decode', 'grouped'];
        const ms: Record<string, number> = {};
        for (const mode of modes) {
          // decode re-reads a full expert per (token, slot): pointless past small T
          if (mode === 'decode' && (T > 128 || (ctx.quick && T > MOE_DECODE_MAX_TOKENS))) continue;
          ms[mode] = await ctx.time(routed(mode), { repeat });
          const modelled = mode === 'decode' ? decodeBytes : groupedBytes;
          ctx.result({
            suite: 'moe', name: `routed experts ${mode}`, variant, shape, medianMs: ms[mode], bytes: minBytes, flops,
            extra: { dispatches: count(routed(mode)), modelledBytesRead: modelled, bytesVsMinimum: +(modelled / minBytes).toFixed(2) },
          });
          for (const w of packed) {
            const wMs = await ctx.time(routed(mode, w), { repeat });
            const scaled = (b: number) => ((b - act) * w.bytes) / (E * expertBytes) + act;
            ctx.result({
              suite: 'moe', name: `routed experts ${mode}`, variant: variant.replace(/f32$/, `${w.format} experts`), shape, medianMs: wMs, bytes: scaled(minBytes), flops,
              extra: { dispatches: count(routed(mode, w)), modelledBytesRead: scaled(modelled), f32Ms: ms[mode], speedupVsF32: +(ms[mode] / wMs).toFixed(2) },
            });
          }
        }
        if (sliceable && (!ctx.quick || T <= 16) && T <= 128) {
          const loop = (rec: Recorder) => {
            for (let t = 0; t < T; t++) {
              for (let j = 0; j < K; j++) {
                const e = idsHost[t * K + j], row = t * K + j;
                gemv(gpu, rec, { x, w: { buffer: experts.gateUp, offset: e * 2 * I * D * 4, size: 2 * I * D * 4 }, y: gu, M: 1, N: 2 * I, K: D, xOffset: t * D, xStride: D });
                siluMulRows(gpu, rec, gu, h, 1, I);
                gemv(gpu, rec, { x: h, w: { buffer: experts.down, offset: e * D * I * 4, size: D * I * 4 }, y: yRows, M: 1, N: D, K: I, yOffset: row * D, yStride: D });
              }
            }
            moeCombine(gpu, rec, { y: yRows, inv: identity, weights: wts, shared: sharedOut, out, T, K, D });
          };
          const loopMs = await ctx.time(loop, { repeat: 1, iters: ctx.quick ? 2 : 3 });
          const best = Math.min(...Object.values(ms));
          ctx.result({
            suite: 'moe', name: 'routed experts per-token dense loop (baseline)', variant, shape, medianMs: loopMs, bytes: minBytes, flops,
            extra: { dispatches: count(loop), modelledBytesRead: decodeBytes, bytesVsMinimum: +(decodeBytes / minBytes).toFixed(2), speedupOfBest: +(loopMs / best).toFixed(2), note: 'ids read back to the CPU beforehand (not timed)' },
          });
        }
      }
    } finally {
      destroyExperts(gpu, experts);
      for (const w of packed) destroyExperts(gpu, w);
      for (const b of [sharedGU, sharedDown, gateW, x, ids, wts, sharedOut, out, gu, h, yRows, identity]) gpu.buffers.destroy(b);
    }
    await smallPrefillRows(ctx);
  },
};
