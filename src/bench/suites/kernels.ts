/**
 * The linear-layer kernels of src/kernels/linear.ts in every weight format — f32, f16 (unpack2x16float,
 * any device), int8 and int4 (symmetric groups of 32, f16 scales), FP8 e4m3 with 128×128 block scales —
 * at decode (GEMV, one row) and prefill (tiled matmul, M rows) shapes, with the bytes each call must
 * read. Peers: onnxruntime-web MatMul (f32) and MatMulNBits (int4 / int8, block 32) on the same shapes;
 * before timing, the peers' outputs are checked against ours on the very same quantised weights
 * (converted from the MatMulNBits layout, so both sides compute with identical numbers).
 *
 * Shapes are written N×K = out × in features (the weight's [out, in] layout): DeepSeek-V2-Lite's
 * expert down (2048×1408) and gate/up (1408×2048), its dense FFN down (2048×10944), DeepSeek-V3's
 * expert down (7168×2048).
 */
import type { BenchContext, BenchSuite } from '../types';
import type { Gpu } from '../../gpu/device';
import { linear, gemvMaxRows } from '../../kernels/linear';
import { gemv as gemvF32 } from '../../kernels/matmul';
import { uploadPacked, uploadWeight, destroyWeight, type GpuWeight } from '../../kernels/weight';
import { packWeight, packFp8, rowLayout, type PackedWeight } from '../../kernels/weight-pack';
import { randomUniform } from '../../util/random';
import { f32ToFp8e4m3 } from '../../util/half';
import { checkPeerMatMul, checkPeerMatMulNBits, peerMatMul, peerMatMulNBits } from '../peers';
import type { NBitsWeights } from '../onnx-builder';

/** 'f32-foundation': the GEMV of src/kernels/matmul.ts, for comparison with linear()'s f32 GEMV. */
type Variant = 'f32' | 'f32-foundation' | 'f16' | 'q8' | 'q4' | 'fp8';
const ALL: Variant[] = ['f32', 'f32-foundation', 'f16', 'q8', 'q4', 'fp8'];

/** [N, K] weights in a variant, from values in [−0.05, 0.05]. */
function makeWeight(gpu: Gpu, v: Variant, N: number, K: number, seed: number): GpuWeight {
  const w = randomUniform(N * K, seed, -0.05, 0.05);
  switch (v) {
    case 'f32': case 'f32-foundation': return uploadWeight(gpu, `bench.${v}`, w, N, K);
    case 'f16': return uploadWeight(gpu, 'bench.f16', w, N, K, { format: 'f16' });
    case 'q8': return uploadWeight(gpu, 'bench.q8', w, N, K, { format: 'q8', groupSize: 32 });
    case 'q4': return uploadWeight(gpu, 'bench.q4', w, N, K, { format: 'q4', groupSize: 32 });
    case 'fp8': {
      const scales = new Float32Array(Math.ceil(N / 128) * Math.ceil(K / 128)).fill(0.05 / 448);
      const bytes = new Uint8Array(N * K);
      for (let i = 0; i < bytes.length; i++) bytes[i] = f32ToFp8e4m3(w[i] * (448 / 0.05));
      return uploadPacked(gpu, 'bench.fp8', packFp8(bytes, scales, N, K));
    }
  }
}

/** MatMulNBits weights (u8 blobs, zero point 2^(bits−1), f32 block scales) in our q4/q8 layout: identical values. */
export function fromNBits(q: NBitsWeights, N: number, K: number, bits: 4 | 8, block: 32 | 128): PackedWeight {
  const format = bits === 4 ? 'q4' : 'q8';
  const { Kp, rowWords } = rowLayout(format, K);
  const data = new Uint32Array(N * rowWords);
  if (bits === 4) data.fill(0x88888888);
  const blob = (block * bits) / 8, blocks = K / block;
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const o = (n * blocks + Math.floor(k / block)) * blob, i = k % block;
      if (bits === 4) {
        const nib = (q.packed[o + (i >> 1)] >> (i & 1 ? 4 : 0)) & 15;
        const word = n * rowWords + (k >> 3), sh = (k & 7) * 4;
        data[word] = ((data[word] & ~(0xf << sh)) | (nib << sh)) >>> 0;
      } else {
        const word = n * rowWords + (k >> 2), sh = (k & 3) * 8;
        data[word] = (data[word] | (((q.packed[o + i] - 128) & 0xff) << sh)) >>> 0;
      }
    }
  }
  const scales = new Uint32Array(q.scales.buffer.slice(q.scales.byteOffset, q.scales.byteOffset + q.scales.byteLength));
  return { format, N, K, Kp, rowWords, data, scales, groupSize: block, scaleF16: false, scaleCols: blocks };
}

async function runOnce(gpu: Gpu, w: GpuWeight, x: Float32Array, M: number): Promise<Float32Array> {
  const bx = gpu.buffers.upload('bench.check.x', x);
  const by = gpu.buffers.create('bench.check.y', M * w.N * 4);
  try {
    return await gpu.checked(async () => {
      const rec = gpu.recorder('bench.check');
      linear(gpu, rec, { x: bx, w, y: by, M });
      rec.submit();
      return gpu.buffers.readF32(by, 0, M * w.N);
    });
  } finally {
    gpu.buffers.destroy(bx);
    gpu.buffers.destroy(by);
  }
}

interface Shape { N: number; K: number; what: string }
const DECODE: Shape[] = [
  { N: 2048, K: 1408, what: 'V2-Lite expert down' },
  { N: 1408, K: 2048, what: 'V2-Lite expert gate/up' },
  { N: 2048, K: 10944, what: 'V2-Lite dense down' },
  { N: 7168, K: 2048, what: 'V3 expert down' },
];

async function checkPeers(ctx: BenchContext) {
  const gpu = ctx.gpu;
  ctx.progress('kernels: checking peers on identical weights');
  for (const s of [{ M: 1, N: 17, K: 64 }, { M: 9, N: 33, K: 128 }]) {
    await checkPeerMatMul(ctx, s, async (x, wf) => {
      const w = uploadWeight(gpu, 'bench.check.w', wf, s.N, s.K);
      try { return await runOnce(gpu, w, x, s.M); } finally { destroyWeight(gpu, w); }
    }, 1e-4);
    for (const bits of [4, 8] as const) {
      // Identical weights on both sides: only accumulation order differs (|x|, |w| ≤ 1, K ≤ 128).
      await checkPeerMatMulNBits(ctx, { ...s, bits, block: 32 }, async (x, q) => {
        const w = uploadPacked(gpu, 'bench.check.q', fromNBits(q, s.N, s.K, bits, 32));
        try { return await runOnce(gpu, w, x, s.M); } finally { destroyWeight(gpu, w); }
      }, 1e-4);
    }
  }
}

export const kernelsSuite: BenchSuite = {
  name: 'kernels',
  order: 20,
  async run(ctx) {
    const gpu = ctx.gpu;
    if (ctx.peers) await checkPeers(ctx);
    const decode = ctx.quick ? [DECODE[1]] : DECODE;
    const prefillM = ctx.quick ? [16] : [16, 128, 512];
    const prefillShape: Shape = { N: 1408, K: 2048, what: 'V2-Lite expert gate/up' };
    const runs: { M: number; s: Shape }[] = [...decode.map((s) => ({ M: 1, s })), ...prefillM.map((M) => ({ M, s: prefillShape }))];
    for (const { M, s } of runs) {
      const { N, K } = s;
      const xData = randomUniform(M * K, 1, -1, 1);
      const x = gpu.buffers.upload('bench.kernels.x', xData);
      const y = gpu.buffers.create('bench.kernels.y', M * N * 4);
      const gemv = M === 1;
      const shape = `M=${M} N×K=${N}×${K}`;
      const times: Partial<Record<Variant, number>> = {};
      try {
        for (const v of ALL) {
          if (v === 'f32-foundation' && !gemv) continue;
          if (ctx.quick && !gemv && v !== 'f32' && v !== 'q4') continue; // quick: prefill f32 and int4 only
          ctx.progress(`kernels: ${v} ${shape}`);
          const w = makeWeight(gpu, v, N, K, 2);
          try {
            const repeat = gemv ? (ctx.quick ? 4 : 8) : 1;
            const record = v === 'f32-foundation'
              ? (rec: Parameters<typeof linear>[1]) => gemvF32(gpu, rec, { x, w: w.buffers[0], y, M, N, K })
              : (rec: Parameters<typeof linear>[1]) => linear(gpu, rec, { x, w, y, M });
            const ms = await ctx.time(record, { repeat });
            times[v] = ms;
            const kernel = gemv || M <= gemvMaxRows(w) ? 'gemv' : 'matmul';
            ctx.result({
              suite: 'kernels', name: gemv ? 'decode' : 'prefill', variant: `${v} ${v === 'f32-foundation' ? 'gemv' : kernel}`, shape, medianMs: ms,
              bytes: w.bytes + 4 * (M * K + M * N), flops: 2 * M * N * K,
              extra: { what: s.what, repeat, weightBytes: w.bytes, ...(times.f32 ? { speedupVsF32: +(times.f32 / ms).toFixed(2) } : {}) },
            });
          } finally {
            destroyWeight(gpu, w);
          }
        }
        const name = gemv ? 'decode' : 'prefill';
        // Peers: ours is timed again inside the helper with the peer's protocol (one submit per call),
        // on a weight of the same format made again (the timing loop above freed each).
        const peerRuns: [Variant, (w: GpuWeight) => Promise<unknown>][] = [
          ['f32', (w) => peerMatMul(ctx, { M, N, K }, { name: `${name} f32`, ours: oursCall(w), suite: 'kernels', repeat: gemv ? 8 : 1 })],
          ...([[4, 'q4'], [8, 'q8']] as const).map(([bits, v]) => [v, (w: GpuWeight) => peerMatMulNBits(ctx, { M, N, K, bits, block: 32 }, { name: `${name} int${bits}`, ours: oursCall(w), suite: 'kernels', repeat: gemv ? 8 : 1, providers: ['webgpu'] })] as [Variant, (w: GpuWeight) => Promise<unknown>]),
        ];
        function oursCall(w: GpuWeight) {
          return { record: (rec: Parameters<typeof linear>[1]) => linear(gpu, rec, { x, w, y, M }), inputs: [{ buffer: x, data: xData }], output: { buffer: y, bytes: M * N * 4 } };
        }
        for (const [v, run] of peerRuns) {
          if (!times[v] || !ctx.peers) continue;
          const w = makeWeight(gpu, v, N, K, 2);
          try { await run(w); } finally { destroyWeight(gpu, w); }
        }
      } finally {
        gpu.buffers.destroy(x);
        gpu.buffers.destroy(y);
      }
    }
  },
};
