/**
 * Structured sparsity: dense f32 vs 2:4 vs 64:2:5 vs 64:2:8 (src/kernels/sparse.ts against the dense
 * kernels of src/kernels/matmul.ts), decode GEMV and prefill matmul at DeepSeek-V2-Lite-like expert
 * shapes, all in the same run. Each sparse row reports its time ratio against the dense row of the same
 * shape and value type (`speedup` = dense ms / sparse ms; `speedupVsF32` against dense f32) and the
 * bytes it reads (weights + x + y). Values in f32 (the GEMV targets: ≥ 1.6× for 2:4, ≥ 2.5×
 * for 64:2:8) and int4 (full mode: int8 too) against the dense int kernels of linear.ts (group 32).
 */
import type { BenchContext, BenchSuite } from '../types';
import { GEMV_MAX_ROWS, matmul } from '../../kernels/matmul';
import { linear } from '../../kernels/linear';
import { destroyWeight, uploadWeight } from '../../kernels/weight';
import { destroySparse, matmulPath, sparseLinear, uploadSparse, type SparseValues } from '../../kernels/sparse';
import { sparseMatmulRef } from '../../kernels/sparse.ref';
import { quantizeSparse, type SparsePacked } from '../../sparse/formats';
import { prunePacked } from '../../sparse/apply';
import { randomUniform } from '../../util/random';

interface Pattern { label: string; V?: number; M?: number }
const PATTERNS: Pattern[] = [{ label: '2:4' }, { label: '64:2:5', V: 64, M: 5 }, { label: '64:2:8', V: 64, M: 8 }];

function packPattern(p: Pattern, w: Float32Array, N: number, K: number): SparsePacked {
  return prunePacked(w, N, K, p.V ? { format: 'vnm', v: p.V, m: p.M } : { format: '2:4' }).packed;
}

/** [N, K] weight shapes (rows = output features) and the x rows per call. */
function shapes(quick: boolean) {
  const mats = quick
    ? [{ N: 1024, K: 704, what: 'expert down (half size)' }]
    : [{ N: 2048, K: 1408, what: 'expert down 1408→2048' }, { N: 1408, K: 2048, what: 'expert gate/up 2048→1408' }];
  const rows = quick ? [1, 64] : [1, 128];
  return mats.flatMap((m) => rows.map((M) => ({ ...m, M })));
}

/** Refuses to time a kernel that computes the wrong thing: one small ragged check per pattern and value type. */
async function selfCheck(ctx: BenchContext) {
  const gpu = ctx.gpu;
  const N = 70, K = 45;
  for (const p of PATTERNS) {
    for (const values of ['f32', 'q4'] as SparseValues[]) {
      const packed = packPattern(p, randomUniform(N * K, 3), N, K);
      const w = uploadSparse(gpu, 'bench.sparse.check', packed, values);
      for (const M of [1, 9]) {
        const xs = randomUniform(M * K, 4);
        const x = gpu.buffers.upload('bench.sparse.check.x', xs), y = gpu.buffers.create('bench.sparse.check.y', M * N * 4);
        const out = await gpu.checked(async () => {
          const rec = gpu.recorder('bench.sparse.check');
          sparseLinear(gpu, rec, { x, w, y, M });
          rec.submit();
          return gpu.buffers.readF32(y, 0, M * N);
        });
        const ref = sparseMatmulRef(xs, packed, M, values === 'f32' ? undefined : quantizeSparse(packed, 4));
        // f32 sums of ≤ 45 products of values in [-1, 1]: 1e-4 covers the summation-order difference.
        const bad = ref.findIndex((r, i) => !(Math.abs(out[i] - r) <= 1e-4 + 1e-4 * Math.abs(r)));
        gpu.buffers.destroy(x);
        gpu.buffers.destroy(y);
        if (bad >= 0) throw new Error(`sparse ${p.label} ${values} M=${M}: output ${bad} is ${out[bad]}, reference ${ref[bad]}`);
      }
      destroySparse(gpu, w);
    }
  }
}

export const sparseSuite: BenchSuite = {
  name: 'sparse',
  order: 40,
  async run(ctx) {
    const gpu = ctx.gpu;
    ctx.progress('checking sparse kernels against the CPU reference');
    await selfCheck(ctx);
    for (const s of shapes(ctx.quick)) {
      const { M, N, K } = s;
      const gemv = M <= GEMV_MAX_ROWS;
      const repeat = gemv ? (ctx.quick ? 4 : 8) : 1;
      const name = gemv ? 'gemv' : 'matmul';
      const shape = `${M}×${K} · ${K}×${N}`;
      const io = 4 * (M * K + M * N);
      const dense = randomUniform(N * K, 2, -0.05, 0.05);
      const x = gpu.buffers.upload('bench.sparse.x', randomUniform(M * K, 1));
      const y = gpu.buffers.create('bench.sparse.y', M * N * 4);
      const valueTypes = (ctx.quick ? ['f32', 'q4'] : ['f32', 'q8', 'q4']) as SparseValues[];
      const denseMs: Partial<Record<SparseValues, number>> = {};
      for (const values of valueTypes) {
        ctx.progress(`${name} ${shape}: dense ${values}`);
        let ms: number, weightBytes: number;
        if (values === 'f32') {
          const wd = gpu.buffers.upload('bench.sparse.dense', dense);
          ms = await ctx.time((rec) => matmul(gpu, rec, { x, w: wd, y, M, N, K }), { repeat });
          weightBytes = 4 * N * K;
          gpu.buffers.destroy(wd);
        } else {
          const wd = uploadWeight(gpu, `bench.sparse.dense.${values}`, dense, N, K, { format: values, groupSize: 32, scaleDtype: 'f32' });
          ms = await ctx.time((rec) => linear(gpu, rec, { x, w: wd, y, M }), { repeat });
          weightBytes = wd.bytes;
          destroyWeight(gpu, wd);
        }
        denseMs[values] = ms;
        ctx.result({
          suite: 'sparse', name, variant: `dense ${values}`, shape, medianMs: ms, bytes: weightBytes + io, flops: 2 * M * N * K,
          extra: { what: s.what, speedup: 1, speedupVsF32: +(denseMs.f32! / ms).toFixed(3), weightBytes, repeat },
        });
      }
      for (const p of PATTERNS) {
        const packed = packPattern(p, dense, N, K);
        for (const values of valueTypes) {
          ctx.progress(`${name} ${shape}: ${p.label} ${values}`);
          const w = uploadSparse(gpu, `bench.sparse.${p.label}`, packed, values);
          try {
            const ms = await ctx.time((rec) => sparseLinear(gpu, rec, { x, w, y, M }), { repeat });
            const GW = p.M ?? 4;
            ctx.result({
              suite: 'sparse', name, variant: `${p.label} ${values}`, shape, medianMs: ms, bytes: w.bytes + io,
              // useful FLOPs: 2 multiply-adds per kept value
              flops: 2 * M * N * packed.G * 2,
              extra: {
                what: s.what, speedup: +(denseMs[values]! / ms).toFixed(3), speedupVsF32: +(denseMs.f32! / ms).toFixed(3),
                weightBytes: w.bytes, weightBytesVsDenseF32: +(w.bytes / (4 * N * K)).toFixed(3), density: +(2 / GW).toFixed(3), repeat,
                kernel: gemv ? 'gemv' : `matmul (${matmulPath(gpu, w)})`,
              },
            });
          } finally {
            destroySparse(gpu, w);
          }
        }
      }
      gpu.buffers.destroy(x);
      gpu.buffers.destroy(y);
    }
  },
};
