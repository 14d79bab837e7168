import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu } from '../helpers/gpu';
import { moeGate } from '../../src/kernels/moe';
import { moeGateRef, routerLogitsRef, expertCountsRef } from '../../src/kernels/moe.ref';
import { ExpertLoad, maxVio } from '../../src/model/moe-telemetry';
import { calibrateBias, type BiasRunner } from '../../src/model/moe-calibrate';
import { mulberry32 } from '../../src/util/random';
import { skewedRouter, hiddenOf, type SyntheticRouter } from '../helpers/moe-synthetic';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

/** The synthetic router on the GPU gate kernel; counts come from ExpertLoad (one readback per batch). */
class GpuRouter implements BiasRunner {
  readonly layers: number[];
  readonly experts: number;
  readonly topK: number;
  readonly load: ExpertLoad;
  private gateW = new Map<number, GPUBuffer>();
  private bias = new Map<number, GPUBuffer>();
  constructor(readonly r: SyntheticRouter, layers: number[]) {
    this.layers = layers;
    this.experts = r.routing.experts;
    this.topK = r.routing.topK;
    this.load = new ExpertLoad(gpu, layers, this.experts, this.topK);
    for (const l of layers) {
      this.gateW.set(l, gpu.buffers.upload(`gate${l}`, r.gates.get(l)!));
      this.bias.set(l, gpu.buffers.create(`bias${l}`, this.experts * 4));
    }
  }
  /** Records the gate of every layer for one batch into the counters (no reset, no read). */
  async gate(tokens: number[], biases: Map<number, Float32Array>): Promise<void> {
    const T = tokens.length, K = this.topK;
    const x = gpu.buffers.upload('x', hiddenOf(this.r, tokens));
    const ids = gpu.buffers.create('ids', T * K * 4), w = gpu.buffers.create('w', T * K * 4);
    await gpu.checked(async () => {
      const rec = gpu.recorder('route');
      for (const l of this.layers) {
        gpu.buffers.write(this.bias.get(l)!, biases.get(l)!);
        moeGate(gpu, rec, { x, T, D: this.r.D, gateW: this.gateW.get(l)!, bias: this.bias.get(l)!, routing: this.r.routing, ids, weights: w, counts: this.load.counters(l) });
      }
      rec.submit();
      gpu.temps.releaseAll();
      await gpu.sync();
    });
    [x, ids, w].forEach((b) => gpu.buffers.destroy(b));
  }
  async route(tokens: number[], biases: Map<number, Float32Array>): Promise<Map<number, number[]>> {
    this.load.reset();
    await this.gate(tokens, biases);
    return new Map((await this.load.read()).map((r) => [r.layer, r.counts]));
  }
  destroy() {
    this.load.destroy();
    for (const b of [...this.gateW.values(), ...this.bias.values()]) gpu.buffers.destroy(b);
  }
}

function batchesOf(n: number, size: number, V: number, seed: number): number[][] {
  const rnd = mulberry32(seed);
  return Array.from({ length: n }, () => Array.from({ length: size }, () => Math.floor(rnd() * V)));
}

describe('expert-load telemetry', () => {
  it('GPU counters equal the reference counts per layer, accumulate across batches, reset to zero', async () => {
    // E = 12 → 48-byte slices at 256-byte aligned offsets; two layers must not bleed into each other.
    const layers = [3, 5];
    const sr = skewedRouter(layers, 12, 3, 20, 100, 7, { nGroup: 4, topkGroup: 2 });
    const router = new GpuRouter(sr, layers);
    const batches = batchesOf(2, 37, 100, 1);
    const zero = new Map(layers.map((l) => [l, new Float32Array(12).fill(0.05)]));
    for (const b of batches) await router.gate(b, zero);
    const report = await router.load.read();
    for (const r of report) {
      const want = new Array<number>(12).fill(0);
      for (const b of batches) {
        const x = hiddenOf(sr, b);
        const g = moeGateRef(routerLogitsRef(x, sr.gates.get(r.layer)!, b.length, sr.D, 12), zero.get(r.layer)!, sr.routing, b.length);
        expertCountsRef(g.ids, 12).forEach((c, e) => (want[e] += c));
      }
      expect(r.counts).toEqual(want);
      expect(r.tokens).toBe(74);
      expect(r.frequency.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
      r.frequency.forEach((f, e) => expect(f).toBeCloseTo(want[e] / (3 * 74), 12));
      expect(r.maxVio).toBeCloseTo(maxVio(want), 12);
    }
    expect(report[0].counts).not.toEqual(report[1].counts);
    router.load.reset();
    for (const r of await router.load.read()) expect(r.counts.every((c) => c === 0)).toBe(true);
    expect(() => router.load.counters(4)).toThrow(/not one of the tracked/);
    router.destroy();
  });
});

describe('bias calibration on the GPU gate', () => {
  it('lowers MaxVio of a skewed synthetic router', async () => {
    const layers = [1, 2];
    const router = new GpuRouter(skewedRouter(layers, 16, 2, 24, 512, 3), layers);
    const batches = batchesOf(3, 64, 512, 4);
    const initialBias = new Map(layers.map((l) => [l, new Float32Array(16)]));
    const res = await calibrateBias(router, batches, { steps: 60, gamma: 0.01, initialBias });
    for (const l of layers) {
      expect(res.maxVioBefore.get(l)!).toBeGreaterThan(1);
      expect(res.maxVioAfter.get(l)!).toBeLessThan(0.5 * res.maxVioBefore.get(l)!);
    }
    // The GPU result agrees with routing the calibrated biases through the CPU reference.
    const sr = router.r;
    const counts = await router.route(batches[0], res.biases);
    for (const l of layers) {
      const x = hiddenOf(sr, batches[0]);
      const g = moeGateRef(routerLogitsRef(x, sr.gates.get(l)!, 64, sr.D, 16), res.biases.get(l)!, sr.routing, 64);
      expect(counts.get(l)).toEqual(expertCountsRef(g.ids, 16));
    }
    router.destroy();
  });
});
