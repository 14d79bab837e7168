import { describe, it, expect } from 'vitest';
import { maxVio } from '../../src/model/moe-telemetry';
import { calibrateBias, biasesToSafetensors, type BiasRunner } from '../../src/model/moe-calibrate';
import { moeGateRef, routerLogitsRef, expertCountsRef } from '../../src/kernels/moe.ref';
import { parseSafetensors, toFloat32 } from '../../src/formats/safetensors';
import { mulberry32 } from '../../src/util/random';
import { skewedRouter, hiddenOf } from '../helpers/moe-synthetic';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURE_DIR, loadMoeFixture } from '../helpers/moe-fixture';

describe('maxVio', () => {
  it('is (max − mean)/mean', () => {
    expect(maxVio([1, 1, 1, 1])).toBe(0);
    expect(maxVio([4, 0, 0, 0])).toBe(3);
    expect(maxVio([3, 1, 2, 2])).toBeCloseTo(0.5, 12);
    expect(maxVio([0, 0])).toBe(0);
  });
});

function cpuRunner(layers: number[], seed: number): BiasRunner & { calls: number } {
  const r = skewedRouter(layers, 16, 2, 24, 512, seed);
  const runner = {
    layers, experts: 16, topK: 2, calls: 0,
    async route(tokens: number[], biases: Map<number, Float32Array>) {
      runner.calls++;
      const x = hiddenOf(r, tokens);
      const out = new Map<number, number[]>();
      for (const l of layers) {
        const g = moeGateRef(routerLogitsRef(x, r.gates.get(l)!, tokens.length, r.D, 16), biases.get(l)!, r.routing, tokens.length);
        out.set(l, expertCountsRef(g.ids, 16));
      }
      return out;
    },
  };
  return runner;
}

function batchesOf(n: number, size: number, V: number, seed: number): number[][] {
  const rnd = mulberry32(seed);
  return Array.from({ length: n }, () => Array.from({ length: size }, () => Math.floor(rnd() * V)));
}

describe('calibrateBias (CPU router)', () => {
  it('lowers MaxVio of a skewed router and only moves the bias by ±γ per step', async () => {
    const runner = cpuRunner([1, 2], 3);
    const batches = batchesOf(4, 64, 512, 9);
    const initialBias = new Map([[1, new Float32Array(16)], [2, new Float32Array(16).fill(0.1)]]);
    const res = await calibrateBias(runner, batches, { steps: 80, gamma: 0.01, initialBias });
    for (const l of [1, 2]) {
      expect(res.maxVioBefore.get(l)!).toBeGreaterThan(1); // really skewed
      expect(res.maxVioAfter.get(l)!).toBeLessThan(0.5 * res.maxVioBefore.get(l)!);
      const b = res.biases.get(l)!, b0 = initialBias.get(l)!;
      for (let e = 0; e < 16; e++) {
        const steps = (b[e] - b0[e]) / 0.01;
        expect(Math.abs(steps - Math.round(steps))).toBeLessThan(1e-3);
        expect(Math.abs(steps)).toBeLessThanOrEqual(80);
      }
    }
    expect(res.history).toHaveLength(80);
    expect(initialBias.get(1)!.every((v) => v === 0)).toBe(true); // inputs untouched
    expect(runner.calls).toBe(80 + 2 * batches.length);
  });
});

describe('biasesToSafetensors', () => {
  it('writes e_score_correction_bias tensors that match the checkpoint names, dtype and shape', () => {
    const fx = loadMoeFixture();
    const biases = new Map(fx.layers.map((L) => [L.layer, L.bias.map((v, e) => v + 0.001 * e)]));
    const file = biasesToSafetensors(biases);
    const parsed = parseSafetensors(file);
    const ckpt = parseSafetensors(new Uint8Array(readFileSync(join(FIXTURE_DIR, 'model.safetensors'))));
    expect(parsed.header.tensors.size).toBe(fx.layers.length);
    for (const [l, b] of biases) {
      const name = `model.layers.${l}.mlp.gate.e_score_correction_bias`;
      const t = parsed.tensor(name), c = ckpt.tensor(name);
      expect(t.dtype).toBe(c.dtype);
      expect(t.shape).toEqual(c.shape);
      expect(Array.from(toFloat32(t.dtype, t.data))).toEqual(Array.from(b));
    }
  });
});
