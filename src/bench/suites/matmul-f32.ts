/**
 * Dense f32 matmul (prefill) and GEMV (decode) from src/kernels/matmul.ts at model-like shapes, with
 * onnxruntime-web as the peer: MatMul f32 at the same shapes, and MatMulNBits (int4, block 32) at the
 * same shapes for reference against our f32 kernel until our int4 kernel has its own suite.
 * The device ceilings themselves are measured by the runner (src/bench/ceilings.ts) before any suite.
 */
import type { BenchContext, BenchSuite } from '../types';
import { GEMV_MAX_ROWS, matmul } from '../../kernels/matmul';
import { randomUniform } from '../../util/random';
import { checkPeerMatMul, checkPeerMatMulNBits, peerMatMul, peerMatMulNBits } from '../peers';

interface Shape { M: number; N: number; K: number; what: string }

/**
 * Decode (GEMV, one row) and prefill (tiled, M rows) shapes. Full mode: DeepSeek-V2-Lite-like
 * projections (hidden 2048, expert FFN 1408) and a DeepSeek-V3 expert's gate/up (7168 → 2048).
 * Quick mode: one decode and one (short) prefill shape at hidden 1024, small enough for a software GPU.
 */
export function matmulShapes(quick: boolean): Shape[] {
  if (quick) {
    return [
      { M: 1, N: 1024, K: 1024, what: 'decode proj 1024' },
      { M: 32, N: 512, K: 1024, what: 'prefill 32 rows 1024→512' },
    ];
  }
  return [
    { M: 1, N: 2048, K: 2048, what: 'decode proj 2048' },
    { M: 1, N: 1408, K: 2048, what: 'decode expert up 2048→1408' },
    { M: 1, N: 2048, K: 7168, what: 'decode V3 expert 7168→2048' },
    { M: 4, N: 2048, K: 2048, what: 'decode batch 4' },
    { M: 128, N: 2048, K: 2048, what: 'prefill 128 proj 2048' },
    { M: 128, N: 1408, K: 2048, what: 'prefill 128 expert' },
    { M: 512, N: 2048, K: 2048, what: 'prefill 512 proj 2048' },
  ];
}

async function oursOnce(ctx: BenchContext, M: number, N: number, K: number, xs: Float32Array, ws: Float32Array): Promise<Float32Array> {
  const gpu = ctx.gpu;
  const x = gpu.buffers.upload('bench.check.x', xs);
  const w = gpu.buffers.upload('bench.check.w', ws);
  const y = gpu.buffers.create('bench.check.y', M * N * 4);
  try {
    return await gpu.checked(async () => {
      const rec = gpu.recorder('bench.check');
      matmul(gpu, rec, { x, w, y, M, N, K });
      rec.submit();
      return gpu.buffers.readF32(y, 0, M * N);
    });
  } finally {
    for (const b of [x, w, y]) gpu.buffers.destroy(b);
  }
}

export const matmulF32Suite: BenchSuite = {
  name: 'matmul-f32',
  order: 10,
  async run(ctx) {
    const gpu = ctx.gpu;
    // The peers compute the same thing: checked once on a small ragged shape for each path.
    if (ctx.peers) {
      ctx.progress('checking peers against our kernels');
      for (const s of [{ M: 1, N: 17, K: 64 }, { M: 7, N: 33, K: 128 }]) {
        // f32: |Δ| ≤ 1e-4 for K ≤ 128 and |x|, |w| ≤ 1 (sums of ≤ 128 products in different orders).
        await checkPeerMatMul(ctx, s, (x, w) => oursOnce(ctx, s.M, s.N, s.K, x, w), 1e-4);
        await checkPeerMatMulNBits(ctx, { ...s, bits: 4, block: 32 }, (x, q) => oursOnce(ctx, s.M, s.N, s.K, x, q.dequant), 1e-4);
      }
    }
    for (const s of matmulShapes(ctx.quick)) {
      const { M, N, K } = s;
      const xData = randomUniform(M * K, 1, -1, 1);
      const x = gpu.buffers.upload('bench.matmul.x', xData);
      const w = gpu.buffers.upload('bench.matmul.w', randomUniform(N * K, 2, -0.05, 0.05));
      const y = gpu.buffers.create('bench.matmul.y', M * N * 4);
      try {
        const gemv = M <= GEMV_MAX_ROWS;
        // Short GEMVs: several per submit so the submit round trip does not dominate.
        const repeat = gemv ? (ctx.quick ? 4 : 8) : 1;
        const ms = await ctx.time((rec) => matmul(gpu, rec, { x, w, y, M, N, K }), { repeat });
        const name = gemv ? 'gemv' : 'matmul';
        const shape = `${M}×${K} · ${K}×${N}`;
        ctx.result({
          suite: 'matmul-f32', name, variant: gemv ? 'f32 gemv' : 'f32 tiled 32×32', shape, medianMs: ms,
          bytes: 4 * (M * K + N * K + M * N), flops: 2 * M * N * K, extra: { what: s.what, repeat },
        });
        // Ours is timed again inside the peer helper with the peer's protocol (one submit per call).
        const ours = { record: (rec: Parameters<typeof matmul>[1]) => matmul(gpu, rec, { x, w, y, M, N, K }), inputs: [{ buffer: x, data: xData }], output: { buffer: y, bytes: M * N * 4 } };
        await peerMatMul(ctx, { M, N, K }, { name: `${name} f32`, ours, repeat });
        await peerMatMulNBits(ctx, { M, N, K, bits: 4, block: 32 }, {
          name: `${name} int4 vs ours f32`, ours, repeat, providers: ['webgpu'],
          note: 'peer reads int4 weights (8× fewer bytes); ours is the f32 kernel',
        });
      } finally {
        for (const b of [x, w, y]) gpu.buffers.destroy(b);
      }
    }
  },
};
