/**
 * FP8 checkpoints (e4m3 projections + F32 weight_scale_inv in 128×128 blocks, DeepSeek-V3's format), served
 * by the synthetic server's fp8 mode over HTTP: loaded as q8 (what weights: 'auto' picks on a real GPU,
 * memory-plan.ts resolveStorage; this machine's SwiftShader adapter picks f32) — each tensor dequantised
 * and re-quantised to q8 on its own as it streams — and compared with the dequantised-f32 load.
 *
 * Tolerance, q8 against f32: each weight moves by at most half a q8 step, amax/254 of its group of 32
 * (≈ 0.4% of the group's largest weight); through 3 layers of 64-wide projections the logits moved by
 * 0.56% (prefill) and 0.46% (decode) of their largest magnitude when this test was written: asserted at
 * 3% of max|logit| (absolute, room for the error to add up over layers), with every row's argmax kept.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu } from '../helpers/gpu';
import { serveSyntheticRepo, type SyntheticServer } from '../../src/bench/synthetic-server';
import { TINY_V3_CONFIG } from '../../src/model/synthetic';
import { openCheckpoint } from '../../src/model/checkpoint';
import { urlModel } from '../../src/loader/model-source';
import { GpuModelLoader } from '../../src/model/assemble';
import { GpuRunner } from '../../src/model/gpu-runner';
import { GpuBackend, type WeightPolicy } from '../../src/model/gpu-backend';
import { buildWeights } from '../../src/model/load';
import { HostPacker } from '../../src/kernels/wasm/host-pack';
import type { ExpertSink } from '../../src/model/deepseek';

const FP8_TINY = { ...TINY_V3_CONFIG, torch_dtype: 'bfloat16', quantization_config: { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128] } };

let gpu: Gpu;
let server: SyntheticServer;
beforeAll(async () => { gpu = await testGpu(); server = await serveSyntheticRepo(FP8_TINY); });
afterAll(async () => { await server?.close(); });

const argmax = (a: Float32Array, off: number, n: number) => { let b = 0; for (let i = 1; i < n; i++) if (a[off + i] > a[off + b]) b = i; return b; };

describe('an FP8 checkpoint', () => {
  it('loads as q8 (per tensor) with the logits of the dequantised-f32 load within the q8 tolerance', async () => {
    const ckpt = await openCheckpoint(urlModel(server.url, { cache: false }), { validateTokenizer: false });
    expect([...ckpt.tensors.values()].some((t) => t.dtype === 'F8_E4M3')).toBe(true);
    const loader = new GpuModelLoader(async () => gpu);
    const tokens = Array.from({ length: 10 }, (_, i) => (i * 37 + 11) % ckpt.config.vocabSize);
    const run = async (weights: 'q8' | 'f32') => {
      const m = await loader.load(ckpt, 'fp8-tiny', { weights, contextLength: 32 });
      const runner = m.runner as GpuRunner;
      const prefill = await runner.logits(tokens, true);
      const decode = await runner.logits([3], true);
      const out = { prefill, decode, storage: m.description.weightStorage, experts: m.description.expertStorage, bytes: runner.be.weightBytes };
      runner.destroy();
      return out;
    };
    const q8 = await run('q8');
    const f32 = await run('f32');
    expect([q8.storage, q8.experts]).toEqual(['q8', 'q8']);
    expect(q8.bytes).toBeLessThan(f32.bytes / 2);
    const V = ckpt.config.vocabSize;
    for (const [what, a, b] of [['prefill', q8.prefill, f32.prefill], ['decode', q8.decode, f32.decode]] as const) {
      expect(a.length).toBe(b.length);
      let maxAbs = 0, maxDiff = 0;
      for (let i = 0; i < b.length; i++) { maxAbs = Math.max(maxAbs, Math.abs(b[i])); maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i])); }
      expect(a.every(Number.isFinite), `${what}: finite`).toBe(true);
      expect(maxDiff, `${what}: max |q8 − f32| = ${maxDiff} of max |logit| ${maxAbs}`).toBeLessThanOrEqual(0.03 * maxAbs);
      expect(maxDiff, `${what}: q8 differs from f32 at all`).toBeGreaterThan(0);
      const rows = a.length / V;
      for (let r = 0; r < rows; r++) expect(argmax(a, r * V, V), `${what} row ${r} argmax`).toBe(argmax(b, r * V, V));
      console.log(`fp8 → q8 vs f32, ${what}: max |diff| ${maxDiff.toExponential(3)}, max |logit| ${maxAbs.toExponential(3)} (${(100 * maxDiff / maxAbs).toFixed(2)}%)`);
    }
    await ckpt.close();
  });

  it('packed by the WASM packer from the FP8 bytes (experts and dense q8): the JS path\'s logits, bit for bit', async () => {
    const ckpt = await openCheckpoint(urlModel(server.url, { cache: false }), { validateTokenizer: false });
    const cfg = ckpt.config;
    const packer = await HostPacker.load();
    expect(packer).not.toBeNull();
    let fp8Packed = 0;
    class Counting extends GpuBackend {
      override expertSink(layer: number): ExpertSink | null {
        const s = super.expertSink(layer)!;
        return { put: (e, p, d) => s.put(e, p, d), putFp8: (e, p, b, si) => { const ok = s.putFp8!(e, p, b, si); fp8Packed += +ok; return ok; } };
      }
    }
    const tokens = [5, 17, 29, 41];
    const run = async (be: GpuBackend) => {
      const w = await buildWeights(be, cfg, ckpt, {});
      const runner = new GpuRunner(be, cfg, w, 32);
      const logits = await runner.logits(tokens, true);
      runner.destroy();
      return logits;
    };
    const policy = (hostPacker: HostPacker | null): WeightPolicy => ({ storage: (role) => (role === 'embed' ? 'f16' : 'q8'), nativeFp8: false, sparsity: null, quantizeOnDevice: false, hostPacker });
    const wasm = await run(new Counting(gpu, cfg, policy(packer), 32));
    expect(fp8Packed, 'routed experts packed from FP8 bytes').toBeGreaterThan(0);
    const js = await run(new GpuBackend(gpu, cfg, policy(null), 32));
    expect(Array.from(wasm)).toEqual(Array.from(js));
    await ckpt.close();
  });
});
