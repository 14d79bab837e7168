/**
 * The WebAssembly engine (device 'wasm', src/kernels/wasm) against WebGPU on this adapter, in the same
 * run and page:
 *  - end to end on the bundled model (public/models/webmoe-tiny): prefill and decode tokens/s of the WASM
 *    engine in f32 / f16 / q8 / q4 storage and of WebGPU in f32 (on a CPU fallback adapter the WebGPU row
 *    is WGSL on SwiftShader: the comparison device 'auto' decides on), on 1 thread and on the worker
 *    pool's default where this realm has SharedArrayBuffer;
 *    the bundled model's GGUF Q8_0 and Q4_K_M files (written in-process by model/gguf-convert.ts) on WASM
 *    with their blocks kept as stored (kernels/wasm/gguf.c), and MTP self-speculative decoding off and on
 *    (WASM f32 and q8, with the drafts' acceptance);
 *  - GEMV and small-batch matmul on the WASM kernels: dense f32 / f16 / q8 / q4, the GGUF block formats
 *    (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K: K-quants where K is a multiple of 256) against 2:4 and 64:2:8
 *    sparse (f32 kept values) at DeepSeek-V2-Lite expert shapes and the bundled model's, each row with
 *    `speedup` = dense f32 ms / its ms of the same shape and the bytes per weight as stored;
 *  - GQA attention of one decoded token over 4096 cached keys (Qwen3-30B-A3B's and gpt-oss-20b's heads);
 *  - a decode row per Llama-style family (Qwen2-MoE, Qwen3-MoE, OLMoE, Mixtral, Granite-MoE, GPT-OSS) on
 *    the WASM engine: random weights at small shapes (SMALL_FAMILY_CONFIGS), f32 and q8, 1 thread.
 * Every kernel is checked against the CPU reference on a ragged shape before it is timed.
 */
import type { BenchContext, BenchSuite } from '../types';
import { createEngine, type WebMoeEngine } from '../../engine/engine';
import { memoryModel, urlModel, type ModelSource } from '../../loader/model-source';
import { checkpointToGguf } from '../../model/gguf-convert';
import { quantize, type DecodableType } from '../../formats/gguf-blocks';
import { ggufLinearRef } from '../../kernels/gguf-linear.ref';
import { openCheckpoint } from '../../model/checkpoint';
import { parameterCounts } from '../../model/assemble';
import { familyLabel, parseConfig } from '../../model/config';
import { syntheticCheckpoint } from '../../model/synthetic';
import { byteLevelTokenizerJson } from '../../model/byte-tokenizer';
import { GpuUnavailableError } from '../../errors';
import { WasmKernels, type WasmWeight, type WasmWeightFormat } from '../../kernels/wasm/kernels';
import { defaultThreads, threadsAvailable } from '../../kernels/wasm/pool';
import { prunePacked } from '../../sparse/apply';
import { sparseMatmulRef } from '../../kernels/sparse.ref';
import { matmulRef } from '../../kernels/matmul.ref';
import { attentionRef } from '../../kernels/attention.ref';
import { dequantizeRef } from '../../kernels/weight.ref';
import { quantizeActivationsI16Ref } from '../../kernels/quant-x16.ref';
import { packWeight } from '../../kernels/weight-pack';
import { randomUniform } from '../../util/random';
import { minBytesPerToken } from './e2e';

/**
 * Median and fastest wall time (ms) of `fn` after `warmup` calls; at least `minMs` of calls per sample.
 * The fastest sample is reported too: on a shared machine it is the one least disturbed by other work.
 */
function timeMs(fn: () => void, iters: number, warmup = 3, minMs = 2): { median: number; min: number } {
  for (let i = 0; i < warmup; i++) fn();
  const samples: number[] = [];
  for (let i = 0; i < iters; i++) {
    let n = 0;
    const t0 = performance.now();
    let t1 = t0;
    do { fn(); n++; t1 = performance.now(); } while (t1 - t0 < minMs);
    samples.push((t1 - t0) / n);
  }
  samples.sort((a, b) => a - b);
  return { median: samples[Math.floor(samples.length / 2)], min: samples[0] };
}

type Variant = { label: string; dense?: WasmWeightFormat; gguf?: DecodableType; sparse?: { format: '2:4' } | { format: 'vnm'; v: number; m: number } };
const VARIANTS: Variant[] = [
  { label: 'dense f32', dense: 'f32' }, { label: 'dense f16', dense: 'f16' }, { label: 'dense q8', dense: 'q8' }, { label: 'dense q4', dense: 'q4' },
  ...(['Q8_0', 'Q4_0', 'Q4_K', 'Q5_K', 'Q6_K'] as const).map((t) => ({ label: `GGUF ${t}`, gguf: t })),
  { label: '2:4 f32', sparse: { format: '2:4' } }, { label: '64:2:8 f32', sparse: { format: 'vnm', v: 64, m: 8 } },
];

/** GGUF block types need K a multiple of their block (32, or 256 for the K-quants). */
const fits = (v: Variant, K: number) => !v.gguf || K % (v.gguf.endsWith('_K') ? 256 : 32) === 0;

/** GGUF blocks per (type, matrix): quantising a V2-Lite-sized matrix to a K-quant takes seconds in JavaScript. */
const ggufBlocks = new Map<string, Uint8Array>();

function store(k: WasmKernels, v: Variant, w: Float32Array, N: number, K: number): WasmWeight {
  if (v.gguf) {
    const key = `${v.gguf} ${N}×${K} ${w[0]}`;
    if (!ggufBlocks.has(key)) ggufBlocks.set(key, quantize(v.gguf, w));
    return k.ggufWeight(v.gguf, [ggufBlocks.get(key)!], N, K);
  }
  return v.dense ? k.weight(w, N, K, v.dense) : k.sparseWeight(prunePacked(w, N, K, v.sparse!).packed);
}

/** Refuses to time a kernel that computes the wrong thing: a ragged shape per variant against the CPU reference. */
function selfCheck(k: WasmKernels) {
  const N = 70, M = 3;
  for (const v of VARIANTS) {
    const K = v.gguf ? 256 : 45;
    const w = randomUniform(N * K, 3), x = randomUniform(M * K, 4);
    const mark = k.mark();
    const ww = store(k, v, w, N, K);
    const xp = k.putF32(x), yp = k.alloc(M * N * 4);
    k.matmul(xp, ww, yp, M);
    const got = k.readF32(yp, M * N);
    // q8/q4 multiply int16 activations: the reference takes x through the same rounding.
    const xr = v.dense === 'q8' || v.dense === 'q4' || v.gguf ? quantizeActivationsI16Ref(x, M, K) : x;
    const ref = v.gguf ? ggufLinearRef(xr, v.gguf, quantize(v.gguf, w), M, N, K) : v.dense ? matmulRef(xr, v.dense === 'f32' ? w : dequantizeRef(packWeight(w, N, K, v.dense)), M, N, K) : sparseMatmulRef(x, prunePacked(w, N, K, v.sparse!).packed, M);
    const bad = ref.findIndex((r, i) => !(Math.abs(got[i] - r) <= 1e-4 + 1e-4 * Math.abs(r)));
    k.release(mark);
    if (bad >= 0) throw new Error(`wasm ${v.label}: output ${bad} is ${got[bad]}, reference ${ref[bad]}`);
  }
}

/**
 * GQA attention for one decoded token over a long cache (the Llama-style families' attention on WASM,
 * kernels-gqa.c), after a ragged check against attentionRef (window and sinks).
 */
function gqaAttention(ctx: BenchContext, k: WasmKernels, threads: number) {
  const check = { S: 3, past: 17, H: 6, KVH: 2, d: 13, window: 7 };
  {
    const { S, past, H, KVH, d, window } = check, T = past + S, w = KVH * d;
    const q = randomUniform(S * H * d, 11), kc = randomUniform(T * w, 12), vc = randomUniform(T * w, 13), sinks = randomUniform(H, 14);
    const mark = k.mark();
    const out = k.alloc(S * H * d * 4);
    k.gqa({ q: k.putF32(q), k: k.putF32(kc), v: k.putF32(vc), sinks: k.putF32(sinks), out, S, heads: H, kvHeads: KVH, d, past, scale: 0.3, window });
    const got = k.readF32(out, S * H * d);
    k.release(mark);
    const ref = attentionRef(q, kc, vc, { S, T, past, heads: H, kvHeads: KVH, dQk: d, dV: d, scale: 0.3, causal: true, window }, sinks);
    const bad = ref.findIndex((r, i) => !(Math.abs(got[i] - r) <= 1e-5));
    if (bad >= 0) throw new Error(`wasm gqa attention: output ${bad} is ${got[bad]}, reference ${ref[bad]}`);
  }
  const shapes = ctx.quick ? [{ H: 32, KVH: 4, d: 128, keys: 1024, window: 0, what: 'Qwen3-30B-A3B heads' }] : [
    { H: 32, KVH: 4, d: 128, keys: 4096, window: 0, what: 'Qwen3-30B-A3B heads' },
    { H: 64, KVH: 8, d: 64, keys: 4096, window: 0, what: 'gpt-oss-20b full layer' },
    { H: 64, KVH: 8, d: 64, keys: 4096, window: 128, what: 'gpt-oss-20b sliding layer (window 128)' },
  ];
  for (const s of shapes) {
    const w = s.KVH * s.d, past = s.keys - 1;
    const mark = k.mark();
    const q = k.putF32(randomUniform(s.H * s.d, 1)), kc = k.putF32(randomUniform(s.keys * w, 2)), vc = k.putF32(randomUniform(s.keys * w, 3));
    const sinks = k.putF32(randomUniform(s.H, 4)), out = k.alloc(s.H * s.d * 4);
    ctx.progress(`wasm: gqa attention ${s.what}, ${s.keys} keys, ${threads} thread(s)`);
    const { median, min } = timeMs(() => k.gqa({ q, k: kc, v: vc, sinks, out, S: 1, heads: s.H, kvHeads: s.KVH, d: s.d, past, scale: 1 / Math.sqrt(s.d), window: s.window }), ctx.quick ? 5 : 15);
    k.release(mark);
    const seen = s.window ? Math.min(s.window, s.keys) : s.keys;
    ctx.result({
      suite: 'wasm', name: 'wasm gqa attention decode', variant: `${threads} thread${threads > 1 ? 's' : ''}`, shape: `${s.H}/${s.KVH} heads × ${s.d}, ${s.keys} cached keys (${s.what})`,
      medianMs: median, flops: 4 * s.H * seen * s.d, bytes: 2 * seen * w * 4,
      extra: { minMs: +min.toFixed(4) },
    });
  }
}

/** Thread counts to measure: 1, and the pool's default (at least 2) when this realm has one. */
async function threadCounts(): Promise<number[]> {
  return threadsAvailable().ok ? [1, Math.max(2, await defaultThreads())] : [1];
}

async function kernels(ctx: BenchContext) {
  const shapes = ctx.quick
    ? [{ N: 2048, K: 1408, M: 1, what: 'V2-Lite expert down' }]
    : [
        { N: 2048, K: 1408, M: 1, what: 'V2-Lite expert down' }, { N: 2816, K: 2048, M: 1, what: 'V2-Lite expert gate|up' },
        { N: 256, K: 768, M: 1, what: 'bundled dense MLP down' }, { N: 3072, K: 256, M: 1, what: 'bundled lm_head' },
        { N: 2048, K: 1408, M: 16, what: 'V2-Lite expert down, 16 rows' },
      ];
  for (const threads of await threadCounts()) {
    const k = await WasmKernels.create({ threads });
    try {
      ctx.progress(`wasm: checking the WASM kernels (${threads} thread${threads > 1 ? 's' : ''}) against the CPU reference`);
      selfCheck(k);
      gqaAttention(ctx, k, threads);
      for (const s of shapes) {
        const { N, K, M } = s;
        const w = randomUniform(N * K, 2, -0.05, 0.05), x = randomUniform(M * K, 1);
        let denseMs = 0, denseMin = 0;
        for (const v of VARIANTS) {
          if (!fits(v, K)) continue;
          ctx.progress(`wasm: ${v.label} ${M}×${K} · ${K}×${N}, ${threads} thread(s)`);
          const mark = k.mark();
          const ww = store(k, v, w, N, K);
          const xp = k.putF32(x), yp = k.alloc(M * N * 4);
          const { median: ms, min } = timeMs(() => k.matmul(xp, ww, yp, M), ctx.quick ? 5 : 15);
          const bytes = ww.bytes;
          k.release(mark);
          if (v.label === 'dense f32') { denseMs = ms; denseMin = min; }
          ctx.result({
            suite: 'wasm', name: M === 1 ? 'wasm gemv' : 'wasm matmul', variant: `${v.label}, ${threads} thread${threads > 1 ? 's' : ''}`, shape: `${M}×${K} · ${K}×${N} (${s.what})`,
            medianMs: ms, flops: 2 * M * N * (v.sparse ? K / 2 : K), bytes: bytes + 4 * (M * K + M * N),
            extra: { speedupVsDenseF32: +(denseMs / ms).toFixed(2), minMs: +min.toFixed(4), minSpeedupVsDenseF32: +(denseMin / min).toFixed(2), bytesPerWeight: +(bytes / (N * K)).toFixed(4) },
          });
        }
      }
    } finally {
      k.destroy();
    }
  }
}

async function endToEnd(ctx: BenchContext) {
  if (!ctx.baseUrl) { ctx.error('wasm: the bundled model needs the URL public/ is served at (ctx.baseUrl); not measured'); return; }
  // From the server's root: the bench page may live below it (public/ is served at /).
  const url = new URL('/models/webmoe-tiny/', ctx.baseUrl).href;
  const ck = await openCheckpoint(urlModel(url, { cache: false }));
  const cfg = ck.config;
  // The bundled model as GGUF files (the converter's Q8_0 and Q4_K_M), kept in memory.
  const ggufFiles: Record<string, Uint8Array> = {};
  if (!ctx.quick) {
    ctx.progress('wasm: writing the bundled model as GGUF Q8_0 and Q4_K_M');
    for (const q of ['q8_0', 'q4_k_m'] as const) ggufFiles[q] = (await checkpointToGguf(ck, q)).file;
  }
  await ck.close();
  const params = parameterCounts(cfg).total;
  const promptTokens = ctx.quick ? 16 : 48, decodeTokens = ctx.quick ? 16 : 64, rounds = ctx.quick ? 1 : 3;
  const adapter = [ctx.gpu.adapter.vendor, ctx.gpu.adapter.architecture].filter(Boolean).join(' ') || 'this adapter';
  const nt = await threadCounts();
  type Run = { name: string; device: 'wasm' | 'webgpu'; weights: 'f32' | 'f16' | 'q8' | 'q4' | 'auto'; threads: number; source?: () => ModelSource; speculative?: 'mtp' };
  const runs: Run[] = [
    // Quick: f32 only (the 'auto' storage on WASM).
    ...(ctx.quick ? ['f32'] as const : ['f32', 'f16', 'q8', 'q4'] as const).map((w) => ({ name: `webmoe-tiny WASM ${w}, 1 thread`, device: 'wasm' as const, weights: w, threads: 1 })),
    // GGUF files with their blocks kept ('auto' = 'gguf' on WASM).
    ...Object.entries(ggufFiles).map(([q, f]) => ({ name: `webmoe-tiny GGUF ${q.toUpperCase()} WASM (blocks), 1 thread`, device: 'wasm' as const, weights: 'auto' as const, threads: 1, source: () => memoryModel({ [`webmoe-tiny-${q}.gguf`]: f }) })),
    // MTP self-speculative decoding (the plain rows above are its 'off').
    ...(ctx.quick ? [] : ['f32', 'q8'] as const).map((w) => ({ name: `webmoe-tiny WASM ${w}, 1 thread, speculative mtp`, device: 'wasm' as const, weights: w, threads: 1, speculative: 'mtp' as const })),
    ...nt.slice(1).flatMap((t) => (ctx.quick ? ['f32'] as const : ['f32', 'q8'] as const).map((w) => ({ name: `webmoe-tiny WASM ${w}, ${t} threads`, device: 'wasm' as const, weights: w, threads: t }))),
    { name: `webmoe-tiny WebGPU f32 (${adapter}${ctx.gpu.adapter.isFallbackAdapter ? ', CPU fallback' : ''})`, device: 'webgpu' as const, weights: 'f32' as const, threads: 1 },
  ];
  const spec = runs.map(() => ({ drafted: 0, accepted: 0 }));
  const prompt = 'Once upon a time, there was a little girl who loved to play in the park with her friends. '.repeat(4).slice(0, promptTokens);
  const samples = runs.map(() => [] as { prefill: number; decode: number; ttft: number; bpw: number }[]);
  const engine: WebMoeEngine = createEngine({}, { acquire: async () => ctx.gpu, resolve: () => urlModel(url, { cache: false }) });
  try {
    for (let round = 0; round < rounds; round++) {
      for (const [i, r] of runs.entries()) {
        ctx.progress(`wasm: round ${round + 1}/${rounds}: ${r.name}`);
        await engine.load(r.source ? r.source() : urlModel(url, { cache: false }), { device: r.device, weights: r.weights, threads: r.threads, contextLength: Math.min(cfg.maxPositionEmbeddings, 256) });
        const speculative = r.speculative ?? 'off';
        const warm = engine.generate(prompt, { temperature: 0, maxTokens: 4, stopAtEos: false, speculative });
        for await (const _ of warm) void _;
        // Forget the warm-up's cache: the timed prompt is prefilled whole (no prefix reuse).
        await engine.withRunner(async (runner) => runner.truncate(0));
        const it = engine.generate(prompt, { temperature: 0, maxTokens: decodeTokens, stopAtEos: false, speculative });
        let res;
        for (;;) { res = await it.next(); if (res.done) break; }
        if (r.speculative) { spec[i].drafted += res.value.speculation!.drafted; spec[i].accepted += res.value.speculation!.accepted; }
        samples[i].push({ prefill: res.value.prefillTokPerS, decode: res.value.decodeTokPerS, ttft: res.value.timeToFirstTokenMs, bpw: engine.runner.memory().weightBytes / params });
      }
    }
  } finally {
    await engine.unload();
  }
  const median = (v: number[]) => { const a = [...v].sort((x, y) => x - y); return a[Math.floor(a.length / 2)]; };
  runs.forEach((r, i) => {
    const s = samples[i];
    if (r.speculative) {
      const off = runs.findIndex((o) => !o.speculative && !o.source && o.device === r.device && o.weights === r.weights && o.threads === r.threads);
      const on = median(s.map((x) => x.decode)), plain = off >= 0 ? median(samples[off].map((x) => x.decode)) : NaN;
      ctx.result({
        suite: 'wasm', name: 'wasm speculative decode (bundled model, greedy)', variant: `${r.weights}, ${r.threads} thread${r.threads > 1 ? 's' : ''}: mtp vs off`, shape: `${decodeTokens} tokens`,
        medianMs: 1000 / on, bytes: 0, flops: 0,
        extra: { decodeTokPerS_off: +plain.toFixed(1), decodeTokPerS_mtp: +on.toFixed(1), speedRatio: +(on / plain).toFixed(3), drafted: spec[i].drafted, accepted: spec[i].accepted, acceptanceRate: +(spec[i].accepted / Math.max(1, spec[i].drafted)).toFixed(3) },
      });
    }
    const cached = promptTokens + decodeTokens / 2;
    ctx.e2e({
      model: rounds > 1 ? `${r.name} (median of ${rounds})` : r.name,
      prefillTokPerS: median(s.map((x) => x.prefill)),
      decodeTokPerS: median(s.map((x) => x.decode)),
      dispatchesPerToken: 0, readbacksPerToken: 0,
      bytesPerToken: minBytesPerToken(cfg, cached, s[0].bpw),
      minBytesPerToken: minBytesPerToken(cfg, cached, s[0].bpw),
      timeToFirstTokenMs: median(s.map((x) => x.ttft)),
    });
  });
}

/**
 * One small model per Llama-style family for the WASM decode rows: 4 layers, hidden 256, 8 query heads
 * of 32 over 2 kv heads, 16 experts of width 128 (top-4; Mixtral and Granite top-2 as published), vocabulary
 * 2048; each with its family's own features (QKV biases and the gated shared expert, q/k norms,
 * multipliers, GPT-OSS's sinks, sliding window 32 on every other layer and clamped SwiGLU; its experts
 * unquantised here: MXFP4 is decoded at load on WASM, so decode costs the same).
 */
const SMALL = { vocab_size: 2048, hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 8, num_key_value_heads: 2, hidden_act: 'silu', max_position_embeddings: 512, rope_scaling: null, torch_dtype: 'float32', tie_word_embeddings: false, rms_norm_eps: 1e-6, bos_token_id: 1, eos_token_id: 2 };
export const SMALL_FAMILY_CONFIGS: Record<string, Record<string, unknown>> = {
  qwen2_moe: { ...SMALL, architectures: ['Qwen2MoeForCausalLM'], model_type: 'qwen2_moe', intermediate_size: 512, moe_intermediate_size: 128, shared_expert_intermediate_size: 512, num_experts: 16, num_experts_per_tok: 4, norm_topk_prob: false, decoder_sparse_step: 1, mlp_only_layers: [], rope_theta: 1e6, use_sliding_window: false, sliding_window: null },
  qwen3_moe: { ...SMALL, architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe', intermediate_size: 512, moe_intermediate_size: 128, num_experts: 16, num_experts_per_tok: 4, head_dim: 32, norm_topk_prob: true, decoder_sparse_step: 1, mlp_only_layers: [], rope_theta: 1e6, attention_bias: false, use_sliding_window: false, sliding_window: null },
  olmoe: { ...SMALL, architectures: ['OlmoeForCausalLM'], model_type: 'olmoe', intermediate_size: 128, num_experts: 16, num_experts_per_tok: 4, norm_topk_prob: false, rope_theta: 10000, attention_bias: false, clip_qkv: null },
  mixtral: { ...SMALL, architectures: ['MixtralForCausalLM'], model_type: 'mixtral', intermediate_size: 128, num_local_experts: 16, num_experts_per_tok: 2, rope_theta: 1e6, sliding_window: null },
  granitemoe: { ...SMALL, architectures: ['GraniteMoeForCausalLM'], model_type: 'granitemoe', tie_word_embeddings: true, intermediate_size: 128, num_local_experts: 16, num_experts_per_tok: 2, rope_theta: 10000, attention_bias: false, embedding_multiplier: 12, attention_multiplier: 0.03125, residual_multiplier: 0.22, logits_scaling: 6 },
  gpt_oss: { ...SMALL, architectures: ['GptOssForCausalLM'], model_type: 'gpt_oss', intermediate_size: 128, head_dim: 32, num_local_experts: 16, num_experts_per_tok: 4, experts_per_token: 4, layer_types: ['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention'], sliding_window: 32, attention_bias: true, swiglu_limit: 7, rope_theta: 150000, rope_scaling: { rope_type: 'yarn', factor: 32, beta_fast: 32, beta_slow: 1, original_max_position_embeddings: 4096, truncate: false }, initial_context_length: 4096 },
};

/** Decode (and prefill) tokens/s of each family's small model on the WASM engine, f32 and q8, 1 thread (median of 3 generations). */
async function families(ctx: BenchContext) {
  const promptTokens = ctx.quick ? 16 : 32, decodeTokens = ctx.quick ? 8 : 64, rounds = ctx.quick ? 1 : 3;
  const prompt = 'Once upon a time, there was a little girl who loved to play in the park with her friends. '.slice(0, promptTokens);
  // device 'wasm' never asks for a GPU: an engine without one.
  const engine = createEngine({}, { acquire: async () => { throw new GpuUnavailableError('the WASM rows need no WebGPU'); }, resolve: () => { throw new Error('the family rows load ModelSources'); } });
  try {
    for (const [family, config] of Object.entries(SMALL_FAMILY_CONFIGS)) {
      const cfg = parseConfig(config);
      const files = { ...syntheticCheckpoint(config, { seed: 5 }), 'tokenizer.json': JSON.stringify(byteLevelTokenizerJson()) };
      const params = parameterCounts(cfg).total;
      for (const weights of ctx.quick ? ['f32'] as const : ['f32', 'q8'] as const) {
        const name = `${familyLabel(cfg)} small (${family}: ${cfg.numLayers} layers, D ${cfg.hiddenSize}, ${cfg.numHeads}/${cfg.numKvHeads} heads, ${cfg.nRoutedExperts} experts top-${cfg.numExpertsPerTok}) WASM ${weights}, 1 thread${rounds > 1 ? ` (median of ${rounds})` : ''}`;
        ctx.progress(`wasm: ${name}`);
        await engine.load(memoryModel(files, `${family} small`), { device: 'wasm', weights, threads: 1, contextLength: 256 });
        for await (const _ of engine.generate(prompt.slice(0, 4), { temperature: 0, maxTokens: 2, stopAtEos: false })) void _;
        const samples: { prefillTokPerS: number; decodeTokPerS: number; timeToFirstTokenMs: number }[] = [];
        for (let round = 0; round < rounds; round++) {
          await engine.withRunner(async (runner) => runner.truncate(0));
          const it = engine.generate(prompt, { temperature: 0, maxTokens: decodeTokens, stopAtEos: false });
          let res;
          for (;;) { res = await it.next(); if (res.done) break; }
          samples.push(res.value);
        }
        const med = (f: (x: (typeof samples)[number]) => number) => samples.map(f).sort((a, b) => a - b)[Math.floor(samples.length / 2)];
        const r = { prefillTokPerS: med((x) => x.prefillTokPerS), decodeTokPerS: med((x) => x.decodeTokPerS), timeToFirstTokenMs: med((x) => x.timeToFirstTokenMs) };
        const bpw = engine.runner.memory().weightBytes / params;
        const cached = promptTokens + decodeTokens / 2;
        ctx.result({
          suite: 'wasm', name: 'wasm family decode', variant: `${weights}, 1 thread`, shape: name, medianMs: r.decodeTokPerS > 0 ? 1000 / r.decodeTokPerS : 0,
          flops: 0, bytes: minBytesPerToken(cfg, cached, bpw),
          extra: { family: familyLabel(cfg), decodeTokPerS: +r.decodeTokPerS.toFixed(1), prefillTokPerS: +r.prefillTokPerS.toFixed(1) },
        });
        ctx.e2e({
          model: name, prefillTokPerS: r.prefillTokPerS, decodeTokPerS: r.decodeTokPerS, dispatchesPerToken: 0, readbacksPerToken: 0,
          bytesPerToken: minBytesPerToken(cfg, cached, bpw), minBytesPerToken: minBytesPerToken(cfg, cached, bpw), timeToFirstTokenMs: r.timeToFirstTokenMs,
        });
      }
    }
  } finally {
    await engine.unload();
  }
}

export const wasmSuite: BenchSuite = {
  name: 'wasm',
  order: 85,
  async run(ctx) {
    await kernels(ctx);
    // The family rows need no server: before the bundled model's, which fetch it.
    await families(ctx);
    await endToEnd(ctx);
  },
};
