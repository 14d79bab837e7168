/**
 * Attention (src/kernels/attention.ts, mla.ts, model/kvcache.ts):
 *  - FlashAttention vs the naive materialised-softmax kernel, causal prefill at seq 256, 1024, 4096
 *    (quick: 128, 256): time and peak GPU bytes of the call (inputs, output, scratch), ratio in one run.
 *  - Decode (one token) at cache lengths 128 … 8192: absorbed-MLA decode (V2-Lite shapes: 16 heads,
 *    K = 576, V = 512, one shared latent KV head) with split-K vs one split, and GQA decode.
 *    Decode rows give the bytes of cache the kernel reads per step against the cache size.
 *  - MLA latent cache bytes per token against the equivalent MHA cache, for the fixture, DeepSeek-V2-Lite
 *    and V3 shapes: computed (bf16 and f32) and as actually allocated by LatentKvCache / MhaKvCache.
 */
import type { BenchContext, BenchSuite } from '../types';
import type { Gpu } from '../../gpu/device';
import type { Recorder } from '../../gpu/recorder';
import { attentionDecode, attentionDecodeInfo, flashAttention, naiveAttention, naiveScoresBytes, attentionScratchBytes, type AttentionArgs } from '../../kernels/attention';
import { mlaDecode, mlaDecodeInfo, mlaDecodeScratchBytes, type MlaDecodeArgs } from '../../kernels/mla';
import { latentCacheBytesPerToken, mhaCacheBytesPerToken } from '../../model/kvcache';
import { LatentKvCache, MhaKvCache } from '../../model/kvcache';
import { randomUniform } from '../../util/random';
import { f32ArrayToF16 } from '../../util/half';
import { attentionInputs, checkPeerAttention, checkPeerGqa, gqaInputs, peerAttention, peerGqa, type AttentionShape, type GqaShape } from '../peers';

const SUITE = 'attention';

function inputs(gpu: Gpu, a: { S: number; T: number; heads: number; kvHeads: number; dQk: number; dV: number; kvSame?: boolean }) {
  const q = gpu.buffers.upload('bench.attn.q', randomUniform(a.S * a.heads * a.dQk, 1));
  const k = gpu.buffers.upload('bench.attn.k', randomUniform(a.T * a.kvHeads * a.dQk, 2));
  const v = a.kvSame ? k : gpu.buffers.upload('bench.attn.v', randomUniform(a.T * a.kvHeads * a.dV, 3));
  const out = gpu.buffers.create('bench.attn.out', a.S * a.heads * a.dV * 4);
  const bytes = q.size + k.size + (a.kvSame ? 0 : v.size) + out.size;
  const destroy = () => { for (const b of new Set([q, k, v, out])) gpu.buffers.destroy(b); };
  return { q, k, v, out, bytes, destroy };
}

async function prefill(ctx: BenchContext, o: { seqs: number[]; naive: boolean; tiled?: boolean; rows?: boolean; iters?: (seq: number) => number | undefined }) {
  const gpu = ctx.gpu;
  const heads = 4, d = 64;
  for (const seq of o.seqs) {
    const shape = { S: seq, T: seq, past: 0, heads, kvHeads: heads, dQk: d, dV: d, scale: d ** -0.5, causal: true };
    const io = inputs(gpu, shape);
    const args: AttentionArgs = { ...shape, q: io.q, k: io.k, v: io.v, out: io.out, splits: 1 };
    // Useful work: causal half of the S×T scores, QKᵀ and PV.
    const flops = 2 * heads * (seq * (seq + 1)) / 2 * (2 * d);
    const iters = o.iters ? o.iters(seq) : seq >= 4096 ? 3 : undefined;
    try {
      const flashMs = await ctx.time((rec) => flashAttention(gpu, rec, args), { iters, warmup: 1 });
      const info = attentionDecodeInfo(gpu, args, 'prefill');
      ctx.result({
        suite: SUITE, name: 'prefill', variant: 'flash', shape: `S=T=${seq} H=${heads} d=${d} causal`, medianMs: flashMs,
        bytes: io.bytes, flops, extra: { peakBytes: io.bytes, scratchBytes: 0, kernel: info.label },
      });
      if (o.rows) {
        // flash_rows (kernel 'rows': what flashAttention ran on main before flash_blocks) right after, same run.
        const rowsArgs: AttentionArgs = { ...args, kernel: 'rows' };
        const rowsMs = await ctx.time((rec) => flashAttention(gpu, rec, rowsArgs), { iters, warmup: 1 });
        ctx.result({
          suite: SUITE, name: 'prefill', variant: 'flash, flash_rows (main)', shape: `S=T=${seq} H=${heads} d=${d} causal`, medianMs: rowsMs,
          bytes: io.bytes, flops, extra: { kernel: attentionDecodeInfo(gpu, rowsArgs, 'prefill').label, blocksSpeedup: +(rowsMs / flashMs).toFixed(2) },
        });
      }
      if (o.tiled) {
        // The older tiled kernel (`main`, what flashAttention ran before flash_rows) in the same run.
        const tiledArgs: AttentionArgs = { ...args, kernel: 'tiled' };
        const tiledMs = await ctx.time((rec) => flashAttention(gpu, rec, tiledArgs), { iters, warmup: 1 });
        ctx.result({
          suite: SUITE, name: 'prefill', variant: 'flash, tiled kernel (main)', shape: `S=T=${seq} H=${heads} d=${d} causal`, medianMs: tiledMs,
          bytes: io.bytes, flops, extra: { kernel: attentionDecodeInfo(gpu, tiledArgs, 'prefill').label, rowsSpeedup: +(tiledMs / flashMs).toFixed(2) },
        });
      }
      if (!o.naive) continue;
      const scoreBytes = naiveScoresBytes(shape);
      if (scoreBytes > gpu.caps.maxStorageBufferBindingSize) {
        ctx.progress(`naive S=${seq}: the ${scoreBytes} B score matrix exceeds maxStorageBufferBindingSize (${gpu.caps.maxStorageBufferBindingSize}); skipped`);
        continue;
      }
      const scores = gpu.buffers.create('bench.attn.scores', scoreBytes);
      try {
        const naiveMs = await ctx.time((rec) => naiveAttention(gpu, rec, { ...args, scores }), { iters, warmup: 1 });
        ctx.result({
          suite: SUITE, name: 'prefill', variant: 'naive (materialised)', shape: `S=T=${seq} H=${heads} d=${d} causal`, medianMs: naiveMs,
          bytes: io.bytes + 2 * scoreBytes, flops, // scores written once and read once at least
          extra: { peakBytes: io.bytes + scoreBytes, scratchBytes: scoreBytes, flashSpeedup: +(naiveMs / flashMs).toFixed(2), peakBytesRatio: +((io.bytes + scoreBytes) / io.bytes).toFixed(1) },
        });
      } finally {
        gpu.buffers.destroy(scores);
      }
    } finally {
      io.destroy();
    }
  }
}

const DECODE_VARIANTS = {
  // Absorbed MLA (V2-Lite): 16 heads share one latent KV row of 576 (K) whose first 512 are V.
  mla: { what: 'MLA absorbed (V2-Lite)', heads: 16, kvHeads: 1, dQk: 576, dV: 512, kvSame: true },
  gqa: { what: 'GQA 32/8 d=128', heads: 32, kvHeads: 8, dQk: 128, dV: 128, kvSame: false },
};

/**
 * One-token decode rows, one split and the 'auto' split count. `cacheBytes` is the K/V cache the step
 * attends over, `readBytes` what the chosen kernel reads of it (attentionDecodeInfo), `readPerCache` their ratio.
 */
async function decode(ctx: BenchContext, o: { runs: { variant: keyof typeof DECODE_VARIANTS; lengths: number[]; tiled?: number[]; rows?: number[]; forceSplits?: number }[]; iters?: (L: number) => number | undefined }) {
  const gpu = ctx.gpu;
  for (const run of o.runs) {
    const vr = DECODE_VARIANTS[run.variant];
    for (const L of run.lengths) {
      const shape = { S: 1, T: L, past: L - 1, heads: vr.heads, kvHeads: vr.kvHeads, dQk: vr.dQk, dV: vr.dV, scale: 0.1, causal: true };
      const io = inputs(gpu, { ...shape, kvSame: vr.kvSame });
      const stride = vr.kvSame ? { kStride: vr.dQk, vStride: vr.dQk } : {};
      const base: AttentionArgs = { ...shape, ...stride, q: io.q, k: io.k, v: io.v, out: io.out };
      const auto = attentionDecodeInfo(gpu, { ...base, splits: 'auto' }).splits;
      // forceSplits: when 'auto' picks one split, time this many too (what the occupancy model declined).
      const other = auto === 1 && run.forceSplits ? run.forceSplits : auto;
      const scratch = gpu.buffers.create('bench.attn.split', Math.max(16, attentionScratchBytes(shape, other)));
      const cacheBytes = L * vr.kvHeads * (vr.kvSame ? vr.dQk : vr.dQk + vr.dV) * 4;
      const flops = 2 * vr.heads * L * (vr.dQk + vr.dV);
      try {
        let oneMs = NaN;
        for (const splits of [1, other]) {
          const args: AttentionArgs = { ...base, splits, scratch };
          const info = attentionDecodeInfo(gpu, args);
          const ms = await ctx.time((rec) => attentionDecode(gpu, rec, args), { repeat: L >= 2048 ? 1 : ctx.quick ? 2 : 4, iters: o.iters ? o.iters(L) : L >= 4096 ? 3 : undefined });
          if (splits === 1) oneMs = ms;
          ctx.result({
            suite: SUITE, name: 'decode', variant: `${vr.what}, ${splits === 1 ? 'one split' : `split-K ×${splits}${splits === auto ? '' : ' (forced; auto: 1)'}`}`, shape: `cache ${L}`, medianMs: ms,
            bytes: cacheBytes + io.q.size + io.out.size, flops,
            extra: {
              splits, kernel: info.label, cacheBytes, readBytes: info.cacheReadBytes, readPerCache: +(info.cacheReadBytes / cacheBytes).toFixed(2),
              ...(splits > 1 ? { speedupVsOneSplit: +(oneMs / ms).toFixed(2) } : {}),
            },
          });
          if (other === 1) break;
        }
        if (run.rows?.includes(L)) {
          // flash_rows (kernel 'rows': main's GQA decode before flash_blocks), one split and its own 'auto', same run.
          const rowsAuto = attentionDecodeInfo(gpu, { ...base, kernel: 'rows', splits: 'auto' }).splits;
          const part = gpu.buffers.create('bench.attn.split.rows', Math.max(16, attentionScratchBytes(shape, rowsAuto)));
          try {
            for (const splits of rowsAuto > 1 ? [1, rowsAuto] : [1]) {
              const rowsArgs: AttentionArgs = { ...base, kernel: 'rows', splits, scratch: part };
              const info = attentionDecodeInfo(gpu, rowsArgs);
              const ms = await ctx.time((rec) => attentionDecode(gpu, rec, rowsArgs), { repeat: L >= 2048 ? 1 : ctx.quick ? 2 : 4, iters: o.iters ? o.iters(L) : L >= 4096 ? 3 : undefined });
              ctx.result({
                suite: SUITE, name: 'decode', variant: `${vr.what}, flash_rows (main) ${splits === 1 ? 'one split' : `×${splits}`}`, shape: `cache ${L}`, medianMs: ms,
                bytes: cacheBytes + io.q.size + io.out.size, flops,
                extra: { splits, kernel: info.label, cacheBytes, readBytes: info.cacheReadBytes, readPerCache: +(info.cacheReadBytes / cacheBytes).toFixed(2), blocksOneSplitSpeedup: +(ms / oneMs).toFixed(2) },
              });
            }
          } finally {
            gpu.buffers.destroy(part);
          }
        }
        if (run.tiled?.includes(L)) {
          // The older tiled kernel (`main`: main's absorbed-MLA decode) with its own 'auto' split count, same run.
          const tiledArgs: AttentionArgs = { ...base, kernel: 'tiled', splits: 'auto' };
          const info = attentionDecodeInfo(gpu, tiledArgs);
          const part = gpu.buffers.create('bench.attn.split.tiled', Math.max(16, attentionScratchBytes(shape, info.splits)));
          try {
            const ms = await ctx.time((rec) => attentionDecode(gpu, rec, { ...tiledArgs, scratch: part }), { repeat: L >= 2048 ? 1 : ctx.quick ? 2 : 4, iters: o.iters ? o.iters(L) : L >= 4096 ? 3 : undefined });
            ctx.result({
              suite: SUITE, name: 'decode', variant: `${vr.what}, tiled kernel (main) ×${info.splits}`, shape: `cache ${L}`, medianMs: ms,
              bytes: cacheBytes + io.q.size + io.out.size, flops,
              extra: { splits: info.splits, kernel: info.label, cacheBytes, readBytes: info.cacheReadBytes, readPerCache: +(info.cacheReadBytes / cacheBytes).toFixed(2), rowsOneSplitSpeedup: +(ms / oneMs).toFixed(2) },
            });
          } finally {
            gpu.buffers.destroy(part);
          }
        }
      } finally {
        gpu.buffers.destroy(scratch);
        io.destroy();
      }
    }
  }
}

/** V2-Lite's absorbed-MLA attention core: 16 heads, latent 512 + rope 64 (one shared latent kv head). */
const MLA_LITE = { heads: 16, kvLora: 512, rope: 64 };

/**
 * Absorbed-MLA decode (one token, V2-Lite shapes) over an f32 latent cache of L rows, same run:
 *  - `mla_decode` (shaders/mla.wgsl, what mlaAttention runs for S ≤ 8) with one split, with the split
 *    count 'auto' picks, and with 2 splits when 'auto' picks one (the occupancy model's choice checked);
 *  - with `before` on a software adapter, mla_decode's previous launch shape there (16 invocations,
 *    one group scoring all 16 rows) with the 'auto' split count;
 *  - the generic attention decode (attentionDecode in attention.ts over the same latent rows: what main
 *    ran for MLA decode before mla_decode) with its own 'auto' split count, when `generic` lists L.
 * `readBytes` is what the kernel reads of the cache per step, `readPerCache` that over the cache size.
 */
async function mlaDecodeRows(ctx: BenchContext, o: { lengths: number[]; generic: number[]; /** Also time the software adapter's previous launch shape (attention-mla). */ before?: boolean; iters?: (L: number) => number | undefined; /** The rows' suite name (default 'attention'; the attention-mla suite's own, so its rows never share a key with the attention suite's). */ suite?: string }) {
  const gpu = ctx.gpu;
  const { heads: H, kvLora, rope } = MLA_LITE;
  const dk = kvLora + rope;
  for (const L of o.lengths) {
    const qa = gpu.buffers.upload('bench.mla.qa', randomUniform(H * dk, 1));
    const cache = gpu.buffers.upload('bench.mla.cache', randomUniform(L * dk, 2));
    const out = gpu.buffers.create('bench.mla.out', H * kvLora * 4);
    const cacheBytes = cache.size;
    const flops = 2 * H * L * (dk + kvLora);
    const bytes = cacheBytes + qa.size + out.size;
    const timing = { repeat: L >= 2048 ? 1 : ctx.quick ? 2 : 4, iters: o.iters ? o.iters(L) : L >= 4096 ? 3 : undefined };
    const base: MlaDecodeArgs = { H, kvLora, rope, S: 1, past: L - 1, qa, cache, rowStride: dk, out, scale: 0.1 };
    const auto = mlaDecodeInfo(gpu, { ...base, splits: 'auto' }).splits;
    const scratch = gpu.buffers.create('bench.mla.split', Math.max(16, mlaDecodeScratchBytes({ S: 1, H, kvLora }, Math.max(2, auto))));
    try {
      let oneMs = NaN, bestMs = NaN;
      for (const splits of auto > 1 ? [1, auto] : [1, 2]) {
        const args: MlaDecodeArgs = { ...base, splits, scratch };
        const info = mlaDecodeInfo(gpu, args);
        const ms = await ctx.time((rec) => mlaDecode(gpu, rec, args), timing);
        if (splits === 1) oneMs = ms;
        if (splits === 1 || splits === auto) bestMs = ms;
        const chosen = splits === auto ? ' (auto)' : '';
        ctx.result({
          suite: o.suite ?? SUITE, name: 'decode', variant: `MLA absorbed (V2-Lite), mla_decode, ${splits === 1 ? 'one split' : `split-K ×${splits}`}${chosen}`, shape: `cache ${L}`, medianMs: ms,
          bytes, flops,
          extra: {
            splits, auto, kernel: info.label, cacheBytes, readBytes: info.cacheReadBytes, readPerCache: +(info.cacheReadBytes / cacheBytes).toFixed(2),
            ...(splits > 1 ? { speedupVsOneSplit: +(oneMs / ms).toFixed(2) } : {}),
          },
        });
      }
      if (o.before && gpu.adapter.isFallbackAdapter) {
        // The software adapter's launch shape before this one (16 invocations holding 4 blocks of value
        // columns each, one group scoring all 16 rows): same run, same split count as 'auto'.
        const args: MlaDecodeArgs = { ...base, splits: auto, scratch, tuning: { DWG: 16, SQ: 4 } };
        const info = mlaDecodeInfo(gpu, args);
        const ms = await ctx.time((rec) => mlaDecode(gpu, rec, args), timing);
        ctx.result({
          suite: o.suite ?? SUITE, name: 'decode', variant: `MLA absorbed (V2-Lite), mla_decode before (16 invocations, 16-row score tiles), ${auto === 1 ? 'one split' : `split-K ×${auto}`}`, shape: `cache ${L}`, medianMs: ms,
          bytes, flops,
          extra: { splits: auto, kernel: info.label, cacheBytes, readBytes: info.cacheReadBytes, readPerCache: +(info.cacheReadBytes / cacheBytes).toFixed(2), mlaDecodeSpeedup: +(ms / bestMs).toFixed(2) },
        });
      }
      if (o.generic.includes(L)) {
        // main's MLA decode core: attentionDecode over the latent rows (K = row, V = its first 512).
        const args: AttentionArgs = { S: 1, T: L, past: L - 1, heads: H, kvHeads: 1, dQk: dk, dV: kvLora, scale: 0.1, causal: true, kStride: dk, vStride: dk, q: qa, k: cache, v: cache, out, splits: 'auto' };
        const info = attentionDecodeInfo(gpu, args);
        const part = gpu.buffers.create('bench.mla.split.generic', Math.max(16, attentionScratchBytes(args, info.splits)));
        try {
          const ms = await ctx.time((rec) => attentionDecode(gpu, rec, { ...args, scratch: part }), timing);
          ctx.result({
            suite: o.suite ?? SUITE, name: 'decode', variant: `MLA absorbed (V2-Lite), generic attentionDecode (main) ×${info.splits}`, shape: `cache ${L}`, medianMs: ms,
            bytes, flops,
            extra: { splits: info.splits, kernel: info.label, cacheBytes, readBytes: info.cacheReadBytes, readPerCache: +(info.cacheReadBytes / cacheBytes).toFixed(2), mlaDecodeSpeedup: +(ms / bestMs).toFixed(2) },
          });
        } finally {
          gpu.buffers.destroy(part);
        }
      }
    } finally {
      for (const b of [qa, cache, out, scratch]) gpu.buffers.destroy(b);
    }
  }
}

const MODELS = [
  { what: 'fixture deepseek-v3-tiny', layers: 3, heads: 4, qkNope: 16, qkRope: 8, vHead: 16, kvLora: 32 },
  { what: 'DeepSeek-V2-Lite', layers: 27, heads: 16, qkNope: 128, qkRope: 64, vHead: 128, kvLora: 512 },
  { what: 'DeepSeek-V3', layers: 61, heads: 128, qkNope: 128, qkRope: 64, vHead: 128, kvLora: 512 },
];

async function cacheBytes(ctx: BenchContext) {
  const gpu = ctx.gpu;
  const capacity = 4; // tokens allocated to measure; bytes per token = bytesAllocated / capacity
  for (const m of MODELS) {
    const latentCfg = { layers: m.layers, kvLoraRank: m.kvLora, ropeDim: m.qkRope };
    const mhaCfg = { layers: m.layers, heads: m.heads, qkHeadDim: m.qkNope + m.qkRope, vHeadDim: m.vHead };
    const latent = new LatentKvCache(gpu, { ...latentCfg, capacity, label: 'bench.latentCache' });
    const latentAlloc = latent.bytesAllocated() / capacity;
    latent.destroy();
    let mhaAlloc = NaN;
    const mhaBytes = mhaCacheBytesPerToken(mhaCfg, 4) * capacity;
    if (mhaBytes <= 256 << 20) {
      const mha = new MhaKvCache(gpu, { layers: m.layers, kvHeads: m.heads, kDim: m.qkNope + m.qkRope, vDim: m.vHead, capacity, label: 'bench.mhaCache' });
      mhaAlloc = mha.bytesAllocated() / capacity;
      mha.destroy();
    }
    const extra = {
      model: m.what,
      latentBf16: latentCacheBytesPerToken(latentCfg, 2),
      mhaBf16: mhaCacheBytesPerToken(mhaCfg, 2),
      latentF32: latentCacheBytesPerToken(latentCfg, 4),
      mhaF32: mhaCacheBytesPerToken(mhaCfg, 4),
      latentAllocatedF32: latentAlloc,
      mhaAllocatedF32: mhaAlloc,
      ratio: +(mhaCacheBytesPerToken(mhaCfg, 4) / latentCacheBytesPerToken(latentCfg, 4)).toFixed(1),
    };
    ctx.result({ suite: SUITE, name: 'kv cache bytes/token', variant: 'MLA latent vs MHA', shape: m.what, medianMs: 0, bytes: latentAlloc, flops: 0, extra });
  }
}

/**
 * Our attention on `n` new queries against `L` keys (causal, scale 1/√dQk), q [n, H·dQk], k [L, kvH·dQk],
 * v [L, kvH·dV]: FlashAttention for prefill (n = L), the decode kernel ('auto' splits) for n = 1.
 */
function oursAttention(gpu: Gpu, a: { S: number; L: number; H: number; kvH: number; dQk: number; dV: number }, q: Float32Array, k: Float32Array, v: Float32Array) {
  const shape = { S: a.S, T: a.L, past: a.L - a.S, heads: a.H, kvHeads: a.kvH, dQk: a.dQk, dV: a.dV, scale: a.dQk ** -0.5, causal: true };
  const bq = gpu.buffers.upload('bench.peer.attn.q', q), bk = gpu.buffers.upload('bench.peer.attn.k', k), bv = gpu.buffers.upload('bench.peer.attn.v', v);
  const out = gpu.buffers.create('bench.peer.attn.out', a.S * a.H * a.dV * 4);
  const base: AttentionArgs = { ...shape, q: bq, k: bk, v: bv, out };
  const decodeStep = a.S === 1;
  const splits = decodeStep ? attentionDecodeInfo(gpu, { ...base, splits: 'auto' }).splits : 1;
  const scratch = gpu.buffers.create('bench.peer.attn.split', Math.max(16, attentionScratchBytes(shape, splits)));
  const args: AttentionArgs = { ...base, splits, scratch };
  const record = (rec: Recorder) => (decodeStep ? attentionDecode(gpu, rec, args) : flashAttention(gpu, rec, args));
  return {
    call: { record, inputs: [{ buffer: bq, data: q }, { buffer: bk, data: k }, { buffer: bv, data: v }], output: { buffer: out, bytes: out.size } },
    read: async () => gpu.checked(async () => { const rec = gpu.recorder('bench.peer.attn'); record(rec); rec.submit(); return gpu.buffers.readF32(out, 0, a.S * a.H * a.dV); }),
    destroy: () => { for (const b of [bq, bk, bv, out, scratch]) gpu.buffers.destroy(b); gpu.temps.releaseAll(); },
  };
}

/**
 * onnxruntime-web's attention contrib ops against ours, each checked on a small ragged shape first:
 *  - prefill: MultiHeadAttention (causal, S = L) at DeepSeek-V2-Lite's MLA prefill head shapes
 *    (16 heads, q/k dim 192 = nope 128 + rope 64, v dim 128) against our FlashAttention;
 *  - decode: GroupQueryAttention (one query, KV cache of L − 1 rows, 32 query / 8 KV heads, d 128)
 *    against our decode kernel ('auto' splits).
 * (Absorbed-MLA decode, K = 576 ≠ V = 512 over one latent head, has no ORT op.)
 */
async function attentionPeers(ctx: BenchContext, o: { prefill?: number[]; decode?: number[] } = {}) {
  const gpu = ctx.gpu;
  ctx.progress('attention: checking peers against our kernels');
  const mhaSmall: AttentionShape = { S: 19, L: 19, H: 2, D: 24, Dv: 16, causal: true };
  await checkPeerAttention(ctx, mhaSmall, async (q, k, v) => {
    const o = oursAttention(gpu, { S: 19, L: 19, H: 2, kvH: 2, dQk: 24, dV: 16 }, q, k, v);
    try { return await o.read(); } finally { o.destroy(); }
  }, 1e-4);
  const gqaSmall: GqaShape = { S: 1, L: 37, H: 8, kvH: 2, D: 16 };
  await checkPeerGqa(ctx, gqaSmall, async (q, k, v) => {
    const o = oursAttention(gpu, { S: 1, L: 37, H: 8, kvH: 2, dQk: 16, dV: 16 }, q, k, v);
    try { return await o.read(); } finally { o.destroy(); }
  }, 1e-4);
  for (const L of o.prefill ?? (ctx.quick ? [64] : [256, 1024])) {
    const s: AttentionShape = { S: L, L, H: 16, D: 192, Dv: 128, causal: true };
    const [q, k, v] = attentionInputs(s, 51);
    const o = oursAttention(gpu, { S: L, L, H: 16, kvH: 16, dQk: 192, dV: 128 }, q, k, v);
    try {
      await peerAttention(ctx, s, { name: 'prefill (MLA heads, V2-Lite)', ours: o.call, wasmMaxFlops: ctx.quick ? 3e8 : 4e9 });
    } finally { o.destroy(); }
  }
  for (const L of o.decode ?? (ctx.quick ? [256] : [512, 2048, 8192])) {
    const s: GqaShape = { S: 1, L, H: 32, kvH: 8, D: 128 };
    const [q, k, v] = gqaInputs(s, 91);
    const o = oursAttention(gpu, { S: 1, L, H: 32, kvH: 8, dQk: 128, dV: 128 }, q, k, v);
    try {
      await peerGqa(ctx, s, { name: 'decode GQA 32/8 d=128', ours: o.call, repeat: L >= 2048 ? 1 : ctx.quick ? 2 : 4 });
    } finally { o.destroy(); }
  }
}

export const attentionSuite: BenchSuite = {
  name: 'attention',
  order: 30,
  nodeOk: true,
  async run(ctx) {
    await cacheBytes(ctx);
    await prefill(ctx, { seqs: ctx.quick ? [128, 256] : [256, 1024, 4096], naive: true });
    const lengths = ctx.quick ? [128, 512] : [128, 512, 2048, 8192];
    await mlaDecodeRows(ctx, { lengths, generic: [] });
    await decode(ctx, { runs: [{ variant: 'gqa', lengths }] });
    if (ctx.peers) await attentionPeers(ctx);
  },
};

/**
 * The rows issue 27 tracks, with few iterations so one run takes minutes on a software adapter:
 * MLA absorbed decode at caches 512/2048/8192, GQA decode at 8192, FlashAttention prefill at 1024/4096
 * (no naive baseline); main's generic decode kernel at MLA 8192, and flash_rows (what main ran for GQA decode
 * and prefill before flash_blocks) at GQA 8192 and both prefills, each right after ours in the same run.
 * `npm run bench -- --node --suites attention-core` (docs/attention.md).
 */
export const attentionCoreSuite: BenchSuite = {
  name: 'attention-core',
  order: 31,
  nodeOk: true,
  // Its shapes do not shrink in quick mode (two minutes on SwiftShader): named runs only.
  fullOnly: true,
  async run(ctx) {
    await mlaDecodeRows(ctx, { lengths: [512, 2048, 8192], generic: [8192], iters: (L) => (L >= 8192 ? 3 : 5) });
    await decode(ctx, { runs: [{ variant: 'gqa', lengths: [8192], rows: [8192], forceSplits: 4 }], iters: (L) => (L >= 8192 ? 3 : 5) });
    await prefill(ctx, { seqs: [1024, 4096], naive: false, rows: true, iters: (seq) => (seq >= 4096 ? 1 : 3) });
  },
};

/**
 * Only the onnxruntime-web peers of the attention suite, each checked numerically first; needs the
 * browser: MultiHeadAttention prefill at V2-Lite's MLA prefill heads at S = 256 (ORT's WebGPU kernel
 * took over 10 minutes at 1024 on the software adapter; the full suite keeps 1024) and
 * GroupQueryAttention decode 32/8 d=128 at 512/2048/8192. `npm run bench -- --suites attention-peers`.
 */
export const attentionPeersSuite: BenchSuite = {
  name: 'attention-peers',
  order: 33,
  fullOnly: true,
  async run(ctx) {
    if (!ctx.peers) { ctx.progress('attention-peers: peers are off for this run (--no-peers, or Node)'); return; }
    await attentionPeers(ctx, { prefill: [256], decode: [512, 2048, 8192] });
  },
};

/**
 * Only the absorbed-MLA decode rows (issue 27): mla_decode at caches 512/2048/8192 with one split, the
 * 'auto' split count (or 2 splits when 'auto' picks one), its previous software-adapter launch shape
 * (on a software adapter) and main's generic attentionDecode at every length, same run. `npm run bench -- --node --suites attention-mla` (docs/attention.md).
 */
export const attentionMlaSuite: BenchSuite = {
  name: 'attention-mla',
  order: 34,
  nodeOk: true,
  async run(ctx) {
    const lengths = ctx.quick ? [512, 2048] : [512, 2048, 8192];
    await mlaDecodeRows(ctx, { lengths, generic: lengths, before: true, iters: (L) => (L >= 8192 ? 3 : 5), suite: 'attention-mla' });
  },
};

/**
 * The KV cache format (model/kvcache.ts, the `kvCache` load option): absorbed-MLA decode (mla_decode,
 * V2-Lite shapes) over an f32 and an f16 latent cache of the same length, 'auto' splits, same run. What it
 * decides: the default per device (f16 halves the bytes read per step; on a software adapter memory
 * is read at CPU speed and every f16 value costs an unpack). `npm run bench -- --node --suites attention-kv`.
 */
export const attentionKvSuite: BenchSuite = {
  name: 'attention-kv',
  order: 32,
  nodeOk: true,
  async run(ctx) {
    const gpu = ctx.gpu;
    const { heads: H, kvLora, rope } = MLA_LITE;
    const dk = kvLora + rope;
    for (const L of ctx.quick ? [512] : [512, 2048, 8192]) {
      const rows = randomUniform(L * dk, 2);
      const qa = gpu.buffers.upload('bench.kv.q', randomUniform(H * dk, 1));
      const out = gpu.buffers.create('bench.kv.out', H * kvLora * 4);
      const f32ms: number[] = [];
      for (const kv of ['f32', 'f16'] as const) {
        const cache = gpu.buffers.upload(`bench.kv.${kv}`, kv === 'f16' ? new Uint32Array(f32ArrayToF16(rows).buffer) : rows);
        // What mlaAttention runs for a decode step: mla_decode with its 'auto' split count.
        const args: MlaDecodeArgs = { H, kvLora, rope, S: 1, past: L - 1, qa, cache, rowStride: dk, format: kv, out, scale: 0.1, splits: 'auto' };
        const info = mlaDecodeInfo(gpu, args);
        const scratch = gpu.buffers.create('bench.kv.split', Math.max(16, mlaDecodeScratchBytes({ S: 1, H, kvLora }, info.splits)));
        try {
          const ms = await ctx.time((rec) => mlaDecode(gpu, rec, { ...args, scratch }), { repeat: L >= 2048 ? 1 : ctx.quick ? 2 : 4, iters: L >= 8192 ? 3 : 5 });
          if (kv === 'f32') f32ms.push(ms);
          ctx.result({
            suite: 'attention-kv', name: 'decode', variant: `MLA absorbed (V2-Lite), ${kv} cache`, shape: `cache ${L}`, medianMs: ms,
            bytes: cache.size + qa.size + out.size, flops: 2 * H * L * (dk + kvLora),
            extra: { kv, kernel: info.label, cacheBytes: cache.size, readBytes: info.cacheReadBytes, ...(kv === 'f16' ? { speedupVsF32: +(f32ms[0] / ms).toFixed(2) } : {}) },
          });
        } finally {
          gpu.buffers.destroy(scratch);
          gpu.buffers.destroy(cache);
        }
      }
      gpu.buffers.destroy(qa);
      gpu.buffers.destroy(out);
    }
  },
};
