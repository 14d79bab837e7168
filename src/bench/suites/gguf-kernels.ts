/**
 * GGUF block formats decoded in the shader (src/kernels/gguf-linear.ts, gguf-moe.ts) beside webmoe's
 * own q8 / q4 (groups of 32, f16 scales; src/kernels/linear.ts, moe.ts) at the same shapes:
 *  - decode GEMV (M = 1) on DeepSeek-V2-Lite's expert gate/up (N×K = 1408×2048) and, in full runs,
 *    DeepSeek-V3's expert down (7168×2048) and V2-Lite's expert down (2048×1408: K is not a multiple
 *    of 256, so only the 32-blocks Q8_0 / Q4_0 and webmoe's formats run there, as in llama.cpp's files);
 *  - MoE expert rows for one decode token (T = 1): Qwen3-30B-A3B's expert shape D = 2048, I = 768,
 *    top-8, with 8 experts resident (the decode reads only the 8 chosen ones, whatever E is);
 *  - prefill: a linear layer on 64 rows of x (the GEMV forced vs the tiled matmul that ggufLinear picks
 *    past GGUF_GEMV_MAX_ROWS, webmoe q4's matmul beside) and MoE experts on 32 tokens (the per-(token,
 *    slot) decode path forced vs the grouped path; --quick: half the MoE widths), for Q4_K, Q6_K and Q8_0.
 * Each row reports the time, bytes per weight, the bytes the call must read, and (ctx.result) the % of
 * the device's copy ceiling. Before timing, each GGUF type's GEMV is checked against the CPU reference.
 */
import type { BenchContext, BenchSuite } from '../types';
import type { Gpu } from '../../gpu/device';
import type { Recorder } from '../../gpu/recorder';
import { ggmlTypeByName, type DecodableType } from '../../formats/gguf-blocks';
import { destroyGgufWeight, ggufLinear, uploadGgufWeight } from '../../kernels/gguf-linear';
import { ggufLinearRef } from '../../kernels/gguf-linear.ref';
import { destroyGgufExperts, ggufMoeExperts, uploadGgufExperts } from '../../kernels/gguf-moe';
import { linear } from '../../kernels/linear';
import { destroyExperts, moeExperts, uploadExperts } from '../../kernels/moe';
import { destroyWeight, uploadWeight } from '../../kernels/weight';
import { mulberry32, randomUniform } from '../../util/random';
import { f32ToF16 } from '../../util/half';

const GGUF_TYPES: DecodableType[] = ['Q4_K', 'Q5_K', 'Q6_K', 'Q8_0'];
const OURS = ['q4', 'q8'] as const;

/** Blocks of random bytes with finite, small half scales (timing does not depend on the values). */
function randomBlocks(type: DecodableType, n: number, seed: number): Uint8Array {
  const t = ggmlTypeByName(type)!;
  const r = mulberry32(seed);
  const out = new Uint8Array((n / t.blockSize) * t.blockBytes);
  for (let i = 0; i < out.length; i += 4) {
    const v = (r() * 2 ** 32) >>> 0;
    out[i] = v & 255; out[i + 1] = (v >>> 8) & 255; out[i + 2] = (v >>> 16) & 255; out[i + 3] = v >>> 24;
  }
  const halves = type === 'Q6_K' ? [208] : type.endsWith('_K') ? [0, 2] : [0];
  for (let b = 0; b < n / t.blockSize; b++) {
    for (const o of halves) {
      const h = f32ToF16((r() - 0.5) * 0.01);
      out[b * t.blockBytes + o] = h & 255;
      out[b * t.blockBytes + o + 1] = h >> 8;
    }
  }
  return out;
}

const bytesPerWeight = (v: string) => {
  if (v === 'q4') return 0.5 + 2 / 32;
  if (v === 'q8') return 1 + 2 / 32;
  const t = ggmlTypeByName(v)!;
  return t.blockBytes / t.blockSize;
};

/** Each GGUF type's GEMV against the CPU reference on a small ragged shape (so the timed kernels compute the right thing). */
async function checkKernels(ctx: BenchContext) {
  const gpu = ctx.gpu;
  const M = 3, N = 7, K = 512;
  const x = randomUniform(M * K, 3);
  for (const type of GGUF_TYPES) {
    const bytes = randomBlocks(type, N * K, 11);
    const w = uploadGgufWeight(gpu, `bench.gguf.check.${type}`, type, bytes, N, K);
    const bx = gpu.buffers.upload('bench.gguf.check.x', x), by = gpu.buffers.create('bench.gguf.check.y', M * N * 4);
    try {
      const got = await gpu.checked(async () => {
        const rec = gpu.recorder('bench.gguf.check');
        ggufLinear(gpu, rec, { x: bx, w, y: by, M });
        rec.submit();
        return gpu.buffers.readF32(by, 0, M * N);
      });
      const ref = ggufLinearRef(x, type, bytes, M, N, K);
      let worst = 0, scale = 0;
      for (let i = 0; i < ref.length; i++) { worst = Math.max(worst, Math.abs(got[i] - ref[i])); scale = Math.max(scale, Math.abs(ref[i])); }
      if (!(worst <= 1e-4 * Math.max(1, scale))) ctx.error(`gguf ${type} GEMV differs from the CPU reference by ${worst} (max |ref| ${scale})`);
    } finally {
      destroyGgufWeight(gpu, w);
      gpu.buffers.destroy(bx);
      gpu.buffers.destroy(by);
    }
  }
}

interface Shape { N: number; K: number; what: string }
const GEMV_SHAPES: Shape[] = [
  { N: 1408, K: 2048, what: 'V2-Lite expert gate/up' },
  { N: 7168, K: 2048, what: 'V3 expert down' },
  { N: 2048, K: 1408, what: 'V2-Lite expert down (K % 256 ≠ 0)' },
];

async function benchGemv(ctx: BenchContext, gpu: Gpu, s: Shape) {
  const { N, K } = s;
  const shape = `M=1 N×K=${N}×${K}`;
  const x = gpu.buffers.upload('bench.gguf.x', randomUniform(K, 1, -1, 1));
  const y = gpu.buffers.create('bench.gguf.y', N * 4);
  const repeat = ctx.quick ? 4 : 8;
  try {
    for (const v of [...OURS, ...GGUF_TYPES]) {
      if (v.startsWith('Q') && K % ggmlTypeByName(v)!.blockSize) continue;
      ctx.progress(`gguf-kernels: GEMV ${v} ${shape}`);
      let record: (rec: Recorder) => void, weightBytes: number, free: () => void;
      if (v === 'q4' || v === 'q8') {
        const w = uploadWeight(gpu, `bench.gguf.${v}`, randomUniform(N * K, 2, -0.05, 0.05), N, K, { format: v, groupSize: 32 });
        record = (rec) => linear(gpu, rec, { x, w, y, M: 1, kernel: 'gemv' });
        weightBytes = w.bytes;
        free = () => destroyWeight(gpu, w);
      } else {
        const w = uploadGgufWeight(gpu, `bench.gguf.${v}`, v, randomBlocks(v as DecodableType, N * K, 2), N, K);
        record = (rec) => ggufLinear(gpu, rec, { x, w, y, M: 1 });
        weightBytes = w.bytes;
        free = () => destroyGgufWeight(gpu, w);
      }
      try {
        const ms = await ctx.time(record, { repeat });
        ctx.result({
          suite: 'gguf-kernels', name: 'decode GEMV', variant: v.startsWith('Q') ? `gguf ${v}` : `webmoe ${v}`, shape, medianMs: ms,
          bytes: weightBytes + 4 * (K + N), flops: 2 * N * K,
          extra: { what: s.what, bytesPerWeight: +bytesPerWeight(v).toFixed(4), weightBytes, repeat },
        });
      } finally {
        free();
      }
    }
  } finally {
    gpu.buffers.destroy(x);
    gpu.buffers.destroy(y);
  }
}

async function benchMoe(ctx: BenchContext, gpu: Gpu) {
  const D = 2048, I = 768, E = 8, K = 8, T = 1;
  const shape = `T=${T} D=${D} I=${I} top-${K} of E=${E}`;
  const x = gpu.buffers.upload('bench.gguf.moe.x', randomUniform(T * D, 5, -1, 1));
  const ids = gpu.buffers.upload('bench.gguf.moe.ids', Uint32Array.from({ length: T * K }, (_, i) => i % E));
  const wts = gpu.buffers.upload('bench.gguf.moe.wts', new Float32Array(T * K).fill(1 / K));
  const out = gpu.buffers.create('bench.gguf.moe.out', T * D * 4);
  // What one token must read: K experts' gate, up and down.
  const weightsRead = K * 3 * I * D;
  try {
    for (const v of [...OURS, ...GGUF_TYPES]) {
      ctx.progress(`gguf-kernels: MoE experts ${v} ${shape}`);
      let record: (rec: Recorder) => void, free: () => void;
      if (v === 'q4' || v === 'q8') {
        const one = { gate: randomUniform(I * D, 6, -0.05, 0.05), up: randomUniform(I * D, 7, -0.05, 0.05), down: randomUniform(D * I, 8, -0.05, 0.05) };
        const w = uploadExperts(gpu, `bench.gguf.moe.${v}`, Array.from({ length: E }, () => one), D, I, v, 32);
        record = (rec) => moeExperts(gpu, rec, { x, T, experts: w, ids, weights: wts, K, shared: null, out, mode: 'decode' });
        free = () => destroyExperts(gpu, w);
      } else {
        const t = v as DecodableType;
        const w = uploadGgufExperts(gpu, `bench.gguf.moe.${v}`, { type: t, bytes: randomBlocks(t, E * I * D, 6) }, { type: t, bytes: randomBlocks(t, E * I * D, 7) }, { type: t, bytes: randomBlocks(t, E * D * I, 8) }, E, I, D);
        record = (rec) => ggufMoeExperts(gpu, rec, { x, T, experts: w, ids, weights: wts, K, shared: null, out });
        free = () => destroyGgufExperts(gpu, w);
      }
      try {
        const ms = await ctx.time(record, { repeat: ctx.quick ? 2 : 4 });
        const bpw = bytesPerWeight(v);
        ctx.result({
          suite: 'gguf-kernels', name: 'MoE experts (decode)', variant: v.startsWith('Q') ? `gguf ${v}` : `webmoe ${v}`, shape, medianMs: ms,
          bytes: Math.round(weightsRead * bpw) + 4 * (T * D * 2 + T * K * (2 + 2 * I)), flops: 2 * T * K * 3 * I * D,
          extra: { what: 'Qwen3-30B-A3B expert shape', bytesPerWeight: +bpw.toFixed(4) },
        });
      } finally {
        free();
      }
    }
  } finally {
    for (const b of [x, ids, wts, out]) gpu.buffers.destroy(b);
  }
}

const PREFILL_TYPES: DecodableType[] = ['Q4_K', 'Q6_K', 'Q8_0'];

/** Prefill linear: M = 64 rows of x through N×K = 1408×2048, each GGUF type by the GEMV and by the tiled matmul. */
async function benchPrefillLinear(ctx: BenchContext, gpu: Gpu) {
  const M = 64, N = 1408, K = 2048;
  const shape = `M=${M} N×K=${N}×${K}`;
  const x = gpu.buffers.upload('bench.gguf.prefill.x', randomUniform(M * K, 1, -1, 1));
  const y = gpu.buffers.create('bench.gguf.prefill.y', M * N * 4);
  try {
    for (const v of ['q4', ...PREFILL_TYPES] as const) {
      for (const kernel of v === 'q4' ? (['matmul'] as const) : (['gemv', 'matmul'] as const)) {
        ctx.progress(`gguf-kernels: prefill ${v} ${kernel} ${shape}`);
        let record: (rec: Recorder) => void, weightBytes: number, free: () => void;
        if (v === 'q4') {
          const w = uploadWeight(gpu, 'bench.gguf.prefill.q4', randomUniform(N * K, 2, -0.05, 0.05), N, K, { format: 'q4', groupSize: 32 });
          record = (rec) => linear(gpu, rec, { x, w, y, M, kernel: 'matmul' });
          weightBytes = w.bytes;
          free = () => destroyWeight(gpu, w);
        } else {
          const w = uploadGgufWeight(gpu, `bench.gguf.prefill.${v}`, v, randomBlocks(v, N * K, 2), N, K);
          record = (rec) => ggufLinear(gpu, rec, { x, w, y, M, kernel });
          weightBytes = w.bytes;
          free = () => destroyGgufWeight(gpu, w);
        }
        try {
          const ms = await ctx.time(record, { repeat: 2 });
          ctx.result({
            suite: 'gguf-kernels', name: `prefill linear (${kernel})`, variant: v === 'q4' ? 'webmoe q4' : `gguf ${v}`, shape, medianMs: ms,
            bytes: weightBytes + 4 * M * (K + N), flops: 2 * M * N * K,
            extra: { bytesPerWeight: +bytesPerWeight(v).toFixed(4), weightBytes, kernel },
          });
        } finally {
          free();
        }
      }
    }
  } finally {
    gpu.buffers.destroy(x);
    gpu.buffers.destroy(y);
  }
}

/** Prefill MoE: T = 32 tokens, top-2 of 8 experts (D = 1024, I = 512; quick: 512, 256), the decode path forced vs the grouped path. */
async function benchPrefillMoe(ctx: BenchContext, gpu: Gpu) {
  const D = ctx.quick ? 512 : 1024, I = ctx.quick ? 256 : 512, E = 8, K = 2, T = 32;
  const shape = `T=${T} D=${D} I=${I} top-${K} of E=${E}`;
  const x = gpu.buffers.upload('bench.gguf.pmoe.x', randomUniform(T * D, 5, -1, 1));
  const r = mulberry32(9);
  const ids = gpu.buffers.upload('bench.gguf.pmoe.ids', Uint32Array.from({ length: T * K }, (_, i) => { const a = Math.floor(r() * E); return i % K ? (a + 1) % E : a; }));
  const wts = gpu.buffers.upload('bench.gguf.pmoe.wts', new Float32Array(T * K).fill(1 / K));
  const out = gpu.buffers.create('bench.gguf.pmoe.out', T * D * 4);
  try {
    for (const t of PREFILL_TYPES) {
      const w = uploadGgufExperts(gpu, `bench.gguf.pmoe.${t}`, { type: t, bytes: randomBlocks(t, E * I * D, 6) }, { type: t, bytes: randomBlocks(t, E * I * D, 7) }, { type: t, bytes: randomBlocks(t, E * D * I, 8) }, E, I, D);
      try {
        for (const mode of ['decode', 'grouped'] as const) {
          ctx.progress(`gguf-kernels: prefill MoE ${t} ${mode} ${shape}`);
          const ms = await ctx.time((rec) => ggufMoeExperts(gpu, rec, { x, T, experts: w, ids, weights: wts, K, shared: null, out, mode }), { repeat: 2 });
          ctx.result({
            suite: 'gguf-kernels', name: `prefill MoE experts (${mode})`, variant: `gguf ${t}`, shape, medianMs: ms,
            bytes: w.bytes + 4 * T * D * 2, flops: 2 * T * K * 3 * I * D,
            extra: { bytesPerWeight: +bytesPerWeight(t).toFixed(4), mode },
          });
        }
      } finally {
        destroyGgufExperts(gpu, w);
      }
    }
  } finally {
    for (const b of [x, ids, wts, out]) gpu.buffers.destroy(b);
  }
}

export const ggufKernelsSuite: BenchSuite = {
  name: 'gguf-kernels',
  order: 25,
  async run(ctx) {
    const gpu = ctx.gpu;
    await checkKernels(ctx);
    for (const s of ctx.quick ? GEMV_SHAPES.slice(0, 1) : GEMV_SHAPES) await benchGemv(ctx, gpu, s);
    await benchMoe(ctx, gpu);
    await benchPrefillLinear(ctx, gpu);
    await benchPrefillMoe(ctx, gpu);
  },
};
