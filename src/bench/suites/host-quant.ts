/**
 * Host-side load conversions (issue 16: loading must be bound by the source, not by our code): MB/s of
 * checkpoint bytes through the CPU steps every loaded weight takes, on one DeepSeek-V2-Lite routed
 * expert matrix ([1408, 2048] BF16, 5.8 MB): BF16 → f32, f32 → q4 / q8 / f16 packing (weight-pack.ts),
 * FP8 e4m3 + block scales → f32, and FP8 → q8 (the FP8 load path); and the GPU path routed experts of
 * BF16 checkpoints take now (weight-quant.ts: the bytes staged as they are, quantised by a kernel),
 * timed the same way from the host's side: staging write, dispatch and the wait for the queue; and
 * the WebAssembly SIMD packer the loader uses on the host (kernels/wasm/host-pack.ts: BF16 / F16 / F32
 * bytes → q4 / q8, BF16 → f16 / bf16, FP8 + block scales → q8), variant 'wasm'.
 */
import type { BenchSuite } from '../types';
import { packWeight } from '../../kernels/weight-pack';
import { countNonFinite, toFloat32 } from '../../formats/safetensors';
import { mulberry32 } from '../../util/random';
import { quantizeOnGpu } from '../../kernels/weight-quant';
import { rowLayout } from '../../kernels/weight-pack';
import { HostPacker } from '../../kernels/wasm/host-pack';
import { f32ToF16 } from '../../util/half';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

export const hostQuantSuite: BenchSuite = {
  name: 'host-quant',
  order: 90,
  async run(ctx) {
    const N = 1408, K = 2048;
    const r = mulberry32(3);
    // BF16 bits of small random values (|w| ~ 2^-8..2^-5, as the synthetic server makes them).
    const bf = new Uint16Array(N * K);
    for (let i = 0; i < bf.length; i++) bf[i] = ((r() < 0.5 ? 0x8000 : 0) | ((119 + Math.floor(r() * 3)) << 7) | Math.floor(r() * 128)) & 0xffff;
    const bytes = new Uint8Array(bf.buffer);
    const fp8 = new Uint8Array(N * K);
    for (let i = 0; i < fp8.length; i++) { const b = Math.floor(r() * 256); fp8[i] = (b & 0x7f) === 0x7f ? 0x7e : b; }
    const scaleInv = Float32Array.from({ length: Math.ceil(N / 128) * Math.ceil(K / 128) }, () => 2 ** -(6 + Math.floor(r() * 4)));
    const f32 = toFloat32('BF16', bytes);
    const iters = ctx.quick ? 3 : 9;
    const time = async (name: string, srcBytes: number, f: () => void | Promise<void>, variant = 'cpu') => {
      await f();
      const ms: number[] = [];
      for (let i = 0; i < iters; i++) { const t0 = performance.now(); await f(); ms.push(performance.now() - t0); }
      const m = median(ms);
      ctx.result({ suite: '', name, variant, shape: `[${N}, ${K}]`, medianMs: m, bytes: srcBytes, flops: 0, extra: { checkpointMBps: +(srcBytes / 1e6 / (m / 1000)).toFixed(1) } });
    };
    const gpu = ctx.gpu;
    for (const format of ['q4', 'q8'] as const) {
      const dst = gpu.buffers.create('host-quant.dst', N * rowLayout(format, K).rowWords * 4);
      const scales = gpu.buffers.create('host-quant.scales', Math.ceil((N * Math.ceil(K / 32)) / 2) * 4);
      await time(`bf16→${format} on the GPU (load path)`, bytes.length, async () => {
        quantizeOnGpu(gpu, { src: bytes, source: 'bf16', rows: N, K, format, dst, dstOffsetWords: 0, scales, scaleOffsetWords: 0 });
        await gpu.sync();
      }, 'gpu');
      gpu.buffers.destroy(dst);
      gpu.buffers.destroy(scales);
    }
    await time('bf16→f32', bytes.length, () => { toFloat32('BF16', bytes); });
    await time('f32→q4 pack', bytes.length, () => { packWeight(f32, N, K, 'q4'); });
    await time('f32→q8 pack', bytes.length, () => { packWeight(f32, N, K, 'q8'); });
    await time('f32→f16 pack', bytes.length, () => { packWeight(f32, N, K, 'f16'); });
    await time('bf16→q4 (load path)', bytes.length, () => { packWeight(toFloat32('BF16', bytes), N, K, 'q4'); });
    // The loader's NaN / Inf scan of every tensor (loader/checkpoint.ts), which the WASM packer's fused count replaces for what it packs.
    await time('countNonFinite (loader scan)', bytes.length, () => { countNonFinite('BF16', bytes); });
    await time('bf16→q8 (JS load path)', bytes.length, () => { packWeight(toFloat32('BF16', bytes), N, K, 'q8'); });
    await time('bf16→f16 (JS load path)', bytes.length, () => { packWeight(toFloat32('BF16', bytes), N, K, 'f16'); });
    await time('bf16→bf16 (JS load path)', bytes.length, () => { packWeight(toFloat32('BF16', bytes), N, K, 'bf16'); });
    // The WebAssembly SIMD packer the loader uses now (host-pack.ts; bit-identical to the JS rows'
    // results): from the file's bytes, NaN / Inf count included, no f32 copy. Same values as F16 / F32
    // bytes for the other sources (exact: they are BF16 values of normal f16 range).
    const packer = await HostPacker.load();
    if (packer) {
      const f16 = new Uint8Array(Uint16Array.from(f32, f32ToF16).buffer), f32b = new Uint8Array(f32.buffer);
      await time('bf16→q4 (WASM load path)', bytes.length, () => { packer.pack('bf16', bytes, N, K, 'q4'); }, 'wasm');
      await time('bf16→q8 (WASM load path)', bytes.length, () => { packer.pack('bf16', bytes, N, K, 'q8'); }, 'wasm');
      await time('f16→q4 (WASM load path)', f16.length, () => { packer.pack('f16', f16, N, K, 'q4'); }, 'wasm');
      await time('f32→q4 (WASM load path)', f32b.length, () => { packer.pack('f32', f32b, N, K, 'q4'); }, 'wasm');
      await time('bf16→q4 (WASM, dense: owned arrays)', bytes.length, () => { packer.packMatrix('bf16', bytes, N, K, 'q4'); }, 'wasm');
      await time('bf16→f16 (WASM load path)', bytes.length, () => { packer.halfMatrix('bf16', bytes, N, K); }, 'wasm');
      await time('bf16→bf16 (WASM load path)', bytes.length, () => { packer.bf16Matrix(bytes, N, K); }, 'wasm');
      await time('fp8→q8 (WASM load path)', fp8.length, () => { packer.pack('fp8', fp8, N, K, 'q8', 32, { scaleInv }); }, 'wasm');
    }
    await time('fp8→f32', fp8.length, () => { toFloat32('F8_E4M3', fp8, { scaleInv, shape: [N, K] }); });
    await time('fp8→q8 (load path)', fp8.length, () => { packWeight(toFloat32('F8_E4M3', fp8, { scaleInv, shape: [N, K] }), N, K, 'q8'); });
  },
};
