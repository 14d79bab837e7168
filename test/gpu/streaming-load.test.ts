/**
 * Streaming load (issue 16): routed experts go from the checkpoint into their GPU stacks one matrix at a
 * time (expertGroupsWriter via GpuBackend.expertSink), so the loader's host staging stays a small
 * multiple of the largest single tensor, never a layer. Checked: the streamed stacks are byte-identical
 * to the whole-layer upload (any arrival order, several stacks), the loaded model gives the same logits
 * as the whole-layer path, and the loader's own tracked peak of host bytes is ≤ 3 × the largest tensor
 * (as f32) while one layer's experts alone are several times that.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu } from '../helpers/gpu';
import { mulberry32, randomNormal } from '../../src/util/random';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/util/half';
import { destroyExpertGroups, expertGroupsWriter, uploadExpertGroups, type MoeExpertGroups } from '../../src/kernels/moe';
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { syntheticCheckpoint, TINY_V3_CONFIG } from '../../src/model/synthetic';
import { GpuBackend, type WeightPolicy } from '../../src/model/gpu-backend';
import { GpuRunner } from '../../src/model/gpu-runner';
import { buildWeights, type LoadStaging } from '../../src/model/load';
import type { ExpertSink } from '../../src/model/deepseek';
import { HostPacker } from '../../src/kernels/wasm/host-pack';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

async function stackBytes(w: MoeExpertGroups): Promise<Uint32Array[]> {
  const out: Uint32Array[] = [];
  for (const g of w.groups) for (const b of [g.w.gateUp, g.w.down, g.w.gateUpScales, g.w.downScales]) if (b) out.push(await gpu.buffers.readU32(b));
  return out;
}

describe('expertGroupsWriter', () => {
  for (const format of ['q4', 'q8', 'f16', 'f32'] as const) {
    it(`${format}: experts written one matrix at a time, in any order, equal the whole-layer upload byte for byte (3 stacks)`, async () => {
      const E = 7, D = 64, I = 24;
      const ex = Array.from({ length: E }, (_, e) => ({ gate: randomNormal(I * D, 10 * e + 1, 0.2), up: randomNormal(I * D, 10 * e + 2, 0.2), down: randomNormal(D * I, 10 * e + 3, 0.2) }));
      // A cap that holds 3 experts' gate|up rows per stack: 3 stacks (3, 3, 1 evened to 3, 3, 1).
      const one = Math.max(2 * I * D * 4, 1) * (format === 'f32' ? 1 : format === 'f16' ? 0.5 : format === 'q8' ? 0.25 : 0.125);
      const opts = { maxBindingBytes: Math.floor(3.5 * one) };
      const whole = uploadExpertGroups(gpu, 'whole', ex, D, I, format, opts);
      const w = expertGroupsWriter(gpu, 'streamed', E, D, I, format, opts);
      const order = ex.flatMap((_, e) => (['gate', 'up', 'down'] as const).map((p) => [e, p] as const));
      const r = mulberry32(4);
      for (let i = order.length - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [order[i], order[j]] = [order[j], order[i]]; }
      for (const [e, p] of order) w.put(e, p, ex[e][p]);
      const streamed = w.finish();
      expect(streamed.groups.length).toBe(whole.groups.length);
      expect(streamed.groups.length).toBeGreaterThan(1);
      expect(streamed.bytes).toBe(whole.bytes);
      const [a, b] = [await stackBytes(streamed), await stackBytes(whole)];
      expect(a.length).toBe(b.length);
      a.forEach((x, i) => expect(Buffer.from(x.buffer).equals(Buffer.from(b[i].buffer)), `buffer ${i}`).toBe(true));
      destroyExpertGroups(gpu, streamed);
      destroyExpertGroups(gpu, whole);
    });
  }

  // putRaw: the checkpoint's BF16 / F16 bytes, copied (bf16 / f16 stacks) or quantised on the GPU (q8 /
  // q4, weight_quant.wgsl), give the stacks `put` writes from the same values widened to f32.
  for (const [source, format] of [['bf16', 'q4'], ['bf16', 'q8'], ['f16', 'q4'], ['bf16', 'bf16'], ['f16', 'f16']] as const) {
    it(`putRaw ${source} bytes into ${format} stacks equals put of their f32 values, byte for byte`, async () => {
      const E = 5, D = 64, I = 40;
      const enc = (x: Float32Array) => {
        const h = new Uint16Array(x.length), v = new Float32Array(x.length);
        for (let i = 0; i < x.length; i++) { h[i] = source === 'bf16' ? f32ToBf16(x[i]) : f32ToF16(x[i]); v[i] = source === 'bf16' ? bf16ToF32(h[i]) : f16ToF32(h[i]); }
        return { bytes: new Uint8Array(h.buffer), values: v };
      };
      const ex = Array.from({ length: E }, (_, e) => ({ gate: enc(randomNormal(I * D, 10 * e + 1, 0.2)), up: enc(randomNormal(I * D, 10 * e + 2, 0.2)), down: enc(randomNormal(D * I, 10 * e + 3, 0.2)) }));
      const opts = { maxBindingBytes: 3 * 2 * I * D * 2 };
      const viaPut = expertGroupsWriter(gpu, 'put', E, D, I, format, opts), viaRaw = expertGroupsWriter(gpu, 'raw', E, D, I, format, opts);
      for (let e = 0; e < E; e++) {
        for (const p of ['down', 'up', 'gate'] as const) {
          viaPut.put(e, p, ex[e][p].values);
          expect(viaRaw.putRaw(e, p, { source, bytes: ex[e][p].bytes })).toBe(true);
        }
      }
      const a = await gpu.checked(async () => stackBytes(viaRaw.finish())), b = await stackBytes(viaPut.finish());
      expect(a.length).toBe(b.length);
      a.forEach((x, i) => expect(Buffer.from(x.buffer).equals(Buffer.from(b[i].buffer)), `buffer ${i}`).toBe(true));
      viaPut.destroy();
      viaRaw.destroy();
    });
  }

  // putRaw with quantizeOnDevice false and the WebAssembly packer (LoadOptions.quantizeAt 'host', or
  // 'auto' on a CPU adapter): the checkpoint's bytes packed on the host, no f32 copy; the same stacks as
  // put, byte for byte (host-pack.ts is bit-identical to packWeight), group sizes 32 and 128.
  for (const [source, format, gs] of [['bf16', 'q4', 32], ['bf16', 'q8', 32], ['f16', 'q4', 32], ['f32', 'q8', 32], ['bf16', 'q4', 128]] as const) {
    it(`putRaw ${source} bytes into ${format} stacks with the WASM packer (groups of ${gs}) equals put, byte for byte`, async () => {
      const packer = await HostPacker.load();
      expect(packer).not.toBeNull();
      const E = 5, D = 256, I = 40;
      const enc = (x: Float32Array) => {
        if (source === 'f32') return { bytes: new Uint8Array(x.slice().buffer), values: x };
        const h = new Uint16Array(x.length), v = new Float32Array(x.length);
        for (let i = 0; i < x.length; i++) { h[i] = source === 'bf16' ? f32ToBf16(x[i]) : f32ToF16(x[i]); v[i] = source === 'bf16' ? bf16ToF32(h[i]) : f16ToF32(h[i]); }
        return { bytes: new Uint8Array(h.buffer), values: v };
      };
      const ex = Array.from({ length: E }, (_, e) => ({ gate: enc(randomNormal(I * D, 10 * e + 1, 0.2)), up: enc(randomNormal(I * D, 10 * e + 2, 0.2)), down: enc(randomNormal(D * I, 10 * e + 3, 0.2)) }));
      ex[1].up.bytes[2 * 7 + 1] = 0x7f; ex[1].up.bytes[2 * 7] = 0xff; // a NaN (bf16 / f16 element 7; f32 element 3)
      ex[1].up.values = (source === 'f32' ? new Float32Array(ex[1].up.bytes.buffer) : ex[1].up.values).slice();
      if (source !== 'f32') ex[1].up.values[7] = NaN;
      const opts = { maxBindingBytes: 3 * 2 * I * D * 2, groupSize: gs, quantizeOnDevice: false };
      const viaPut = expertGroupsWriter(gpu, 'put', E, D, I, format, opts), viaRaw = expertGroupsWriter(gpu, 'raw', E, D, I, format, { ...opts, hostPacker: packer });
      let nonFinite = 0;
      for (let e = 0; e < E; e++) {
        for (const p of ['down', 'up', 'gate'] as const) {
          viaPut.put(e, p, ex[e][p].values);
          const raw = { source, bytes: ex[e][p].bytes, nonFinite: undefined as number | undefined };
          expect(viaRaw.putRaw(e, p, raw)).toBe(true);
          expect(raw.nonFinite, 'the packer counts NaN / Inf').toBeTypeOf('number');
          nonFinite += raw.nonFinite!;
        }
      }
      expect(nonFinite).toBe(1);
      const a = await gpu.checked(async () => stackBytes(viaRaw.finish())), b = await stackBytes(viaPut.finish());
      expect(a.length).toBe(b.length);
      a.forEach((x, i) => expect(Buffer.from(x.buffer).equals(Buffer.from(b[i].buffer)), `buffer ${i}`).toBe(true));
      viaPut.destroy();
      viaRaw.destroy();
    });
  }

  it('putRaw declines what it cannot write without the host (then put is used)', () => {
    const bytes = new Uint8Array(8 * 8 * 2);
    const f16Stack = expertGroupsWriter(gpu, 'f16', 2, 8, 8, 'f16');
    expect(f16Stack.putRaw(0, 'gate', { source: 'bf16', bytes })).toBe(false); // bf16 → f16 needs a host conversion
    f16Stack.destroy();
    const g128 = expertGroupsWriter(gpu, 'g128', 2, 128, 8, 'q4', { groupSize: 128 });
    expect(g128.putRaw(0, 'gate', { source: 'bf16', bytes: new Uint8Array(8 * 128 * 2) })).toBe(false); // the shader packs groups of 32
    g128.destroy();
    const hostQuant = expertGroupsWriter(gpu, 'host', 2, 8, 8, 'q4', { quantizeOnDevice: false });
    expect(hostQuant.putRaw(0, 'gate', { source: 'bf16', bytes })).toBe(false); // LoadOptions.quantizeAt 'host' without the WASM packer
    hostQuant.destroy();
  });

  it('a missing matrix at finish and a matrix sent twice are errors', () => {
    const w = expertGroupsWriter(gpu, 'x', 2, 8, 8, 'f32');
    const m = new Float32Array(64);
    w.put(0, 'gate', m);
    expect(() => w.put(0, 'gate', m)).toThrow(/twice/);
    expect(() => w.put(0, 'up', new Float32Array(3))).toThrow(/values/);
    expect(() => w.finish()).toThrow(/missing/);
    w.destroy();
  });
});

/** The GPU backend without the streaming sink: experts staged per layer, as before. */
class StagingBackend extends GpuBackend {
  override expertSink(): ExpertSink | null { return null; }
}

describe('a streamed load', () => {
  it('holds at most 3 × the largest tensor on the host (a layer of experts is 8× that) and gives the logits of the staged load', async () => {
    // 32 routed experts of 64×64: one layer's experts are 32·3·16 KiB = 1.5 MiB as f32; the largest
    // tensor is the [256, 64] embedding / head (64 KiB as f32).
    const config = { ...TINY_V3_CONFIG, n_routed_experts: 32, moe_intermediate_size: 64, n_group: 4, topk_group: 2 };
    const files = syntheticCheckpoint(config, { seed: 7, dtype: 'BF16' });
    const ckpt = await openCheckpoint(memoryModel(files), { validateTokenizer: false });
    const cfg = ckpt.config;
    const policy: WeightPolicy = { storage: (role) => (role === 'embed' ? 'f16' : 'q4'), nativeFp8: false, sparsity: null };
    const tokens = Array.from({ length: 12 }, (_, i) => (i * 29 + 3) % cfg.vocabSize);
    const run = async (be: GpuBackend) => {
      const staging: LoadStaging = { peakHostBytes: 0, largestTensorF32Bytes: 0, checkpointBytes: 0 };
      const w = await buildWeights(be, cfg, ckpt, { staging });
      const runner = new GpuRunner(be, cfg, w, 32);
      const prefill = await runner.logits(tokens, true);
      const decode = await runner.logits([5], true);
      runner.destroy();
      return { staging, prefill, decode };
    };
    const streamed = await run(new GpuBackend(gpu, cfg, policy, 32));
    const staged = await run(new StagingBackend(gpu, cfg, policy, 32));
    const largest = streamed.staging.largestTensorF32Bytes;
    expect(largest).toBe(256 * 64 * 4);
    const layerExperts = cfg.nRoutedExperts * 3 * cfg.moeIntermediateSize * cfg.hiddenSize * 4;
    expect(layerExperts).toBeGreaterThanOrEqual(8 * largest);
    expect(streamed.staging.peakHostBytes).toBeLessThanOrEqual(3 * largest);
    // The staged path really holds a layer: the counter sees it (so the bound above can fail).
    expect(staged.staging.peakHostBytes).toBeGreaterThan(layerExperts);
    expect(streamed.staging.checkpointBytes).toBe(staged.staging.checkpointBytes);
    // Same packing, same kernels: the same logits, bit for bit.
    expect(Array.from(streamed.prefill)).toEqual(Array.from(staged.prefill));
    expect(Array.from(streamed.decode)).toEqual(Array.from(staged.decode));
    await ckpt.close();
  });

  it('with the WASM packer (host packing from the BF16 bytes: experts, dense q4, f16 embedding): the logits of the JS-packed staged load, bit for bit, and the same NaN / Inf counts', async () => {
    const config = { ...TINY_V3_CONFIG, n_routed_experts: 32, moe_intermediate_size: 64, n_group: 4, topk_group: 2 };
    const files = syntheticCheckpoint(config, { seed: 7, dtype: 'BF16' });
    const probe = await openCheckpoint(memoryModel(files), { validateTokenizer: false });
    const name = [...probe.tensors.keys()].find((n) => /experts\.3\.down_proj\.weight$/.test(n))!;
    const t = probe.tensors.get(name)!;
    // Two NaNs and an Inf in one expert matrix: loaded as the JS path packs them, and reported.
    for (const [i, hi] of [[5, 0x7f], [6, 0xff], [40, 0x7f]] as const) { files['model.safetensors'][t.begin + 2 * i] = i === 40 ? 0x80 : 0xc1; files['model.safetensors'][t.begin + 2 * i + 1] = hi; }
    // And an Inf in a dense q4 matrix (packed by GpuBackend.matrix from HostMatrix.raw).
    const dense = [...probe.tensors.keys()].find((n) => /layers\.0\.self_attn\.o_proj\.weight$/.test(n))!;
    files['model.safetensors'][probe.tensors.get(dense)!.begin + 2 * 9] = 0x80;
    files['model.safetensors'][probe.tensors.get(dense)!.begin + 2 * 9 + 1] = 0xff;
    // And a NaN in the f16 embedding table (packed by HostPacker.halfMatrix), in a token row the prompt does not use.
    const embed = [...probe.tensors.keys()].find((n) => /embed_tokens\.weight$/.test(n))!;
    const et = probe.tensors.get(embed)!;
    files['model.safetensors'][et.end - 2] = 0xc0;
    files['model.safetensors'][et.end - 1] = 0x7f;
    await probe.close();
    const run = async (be: GpuBackend) => {
      const ckpt = await openCheckpoint(memoryModel(files), { validateTokenizer: false });
      const w = await buildWeights(be, ckpt.config, ckpt, {});
      const runner = new GpuRunner(be, ckpt.config, w, 32);
      const prefill = await runner.logits([1, 9, 17, 33], true);
      runner.destroy();
      await ckpt.close();
      return { prefill, nonFinite: ckpt.nonFinite };
    };
    const cfg = (await openCheckpoint(memoryModel(files), { validateTokenizer: false })).config;
    const hostPacker = await HostPacker.load();
    const policy = (packer: HostPacker | null): WeightPolicy => ({ storage: (role) => (role === 'embed' ? 'f16' : 'q4'), nativeFp8: false, sparsity: null, quantizeOnDevice: false, hostPacker: packer });
    let packed = 0, layers = 0;
    class CountingBackend extends GpuBackend {
      override expertSink(layer: number): ExpertSink | null {
        const s = super.expertSink(layer)!;
        layers++;
        return { put: (e, p, d) => s.put(e, p, d), putRaw: (e, p, raw) => { const ok = s.putRaw!(e, p, raw); packed += +ok; return ok; } };
      }
    }
    const wasm = await run(new CountingBackend(gpu, cfg, policy(hostPacker), 32));
    expect(packed, 'every routed expert matrix went through the WASM packer').toBe(cfg.nRoutedExperts * 3 * layers);
    expect(layers).toBeGreaterThan(0);
    const js = await run(new StagingBackend(gpu, cfg, policy(null), 32));
    expect(Array.from(wasm.prefill)).toEqual(Array.from(js.prefill));
    expect(wasm.nonFinite).toContainEqual({ name, count: 3 });
    expect(wasm.nonFinite).toContainEqual({ name: dense, count: 1 });
    expect(wasm.nonFinite).toContainEqual({ name: embed, count: 1 });
    expect(wasm.nonFinite.length).toBe(3);
    expect(js.nonFinite).toEqual(wasm.nonFinite);
  });

  for (const storage of ['bf16', 'q8'] as const) {
    it(`${storage} storage (embedding ${storage === 'bf16' ? 'bf16' : 'f16'}) through the WASM packer: the JS path's logits, bit for bit`, async () => {
      const files = syntheticCheckpoint({ ...TINY_V3_CONFIG, n_routed_experts: 8 }, { seed: 11, dtype: 'BF16' });
      const ckpt = await openCheckpoint(memoryModel(files), { validateTokenizer: false });
      const cfg = ckpt.config;
      const run = async (hostPacker: HostPacker | null) => {
        const policy: WeightPolicy = { storage: (role) => (role === 'embed' ? (storage === 'bf16' ? 'bf16' : 'f16') : storage), nativeFp8: false, sparsity: null, quantizeOnDevice: false, hostPacker };
        const be = new GpuBackend(gpu, cfg, policy, 32);
        const runner = new GpuRunner(be, cfg, await buildWeights(be, cfg, ckpt, {}), 32);
        const logits = await runner.logits([2, 7, 19, 40, 3], true);
        runner.destroy();
        return logits;
      };
      const wasm = await run(await HostPacker.load()), js = await run(null);
      expect(wasm.every(Number.isFinite)).toBe(true);
      expect(Array.from(wasm)).toEqual(Array.from(js));
      await ckpt.close();
    });
  }
});
