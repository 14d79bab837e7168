/**
 * Quantisation error of the weight formats against f32, on random weights and on every linear weight
 * of the reference fixture (test/fixtures/deepseek-v3-tiny): relative RMS error of the weights, and of
 * a layer's output y = W·x for unit-normal x. Prints the table (npx vitest run --project unit
 * test/unit/quant-error.test.ts) and checks bounds that follow from the formats' step sizes.
 */
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { parseSafetensors, toFloat32 } from '../../src/formats/safetensors';
import { packWeight, packFp8, quantizeFp8Blocks } from '../../src/kernels/weight-pack';
import { dequantizeRef, quantError } from '../../src/kernels/weight.ref';
import { matmulRef } from '../../src/kernels/matmul.ref';
import { randomNormal } from '../../src/util/random';

type Q = 'f16' | 'q8 g32' | 'q8 g128' | 'q4 g32' | 'q4 g128' | 'q4 g32 f32-scale' | 'fp8 128²';
const KINDS: Q[] = ['f16', 'q8 g32', 'q8 g128', 'q4 g32', 'q4 g128', 'q4 g32 f32-scale', 'fp8 128²'];

function dequant(kind: Q, w: Float32Array, N: number, K: number): Float32Array {
  switch (kind) {
    case 'f16': return dequantizeRef(packWeight(w, N, K, 'f16'));
    case 'q8 g32': return dequantizeRef(packWeight(w, N, K, 'q8', { groupSize: 32 }));
    case 'q8 g128': return dequantizeRef(packWeight(w, N, K, 'q8', { groupSize: 128 }));
    case 'q4 g32': return dequantizeRef(packWeight(w, N, K, 'q4', { groupSize: 32 }));
    case 'q4 g128': return dequantizeRef(packWeight(w, N, K, 'q4', { groupSize: 128 }));
    case 'q4 g32 f32-scale': return dequantizeRef(packWeight(w, N, K, 'q4', { groupSize: 32, scaleDtype: 'f32' }));
    case 'fp8 128²': { const q = quantizeFp8Blocks(w, N, K); return dequantizeRef(packFp8(q.bytes, q.scaleInv, N, K)); }
  }
}

/** Relative RMS error of W, and of y = W·x over a batch of unit-normal x. */
function errors(kind: Q, w: Float32Array, N: number, K: number) {
  const d = dequant(kind, w, N, K);
  const x = randomNormal(8 * K, N + K);
  const y = matmulRef(x, w, 8, N, K), yq = matmulRef(x, d, 8, N, K);
  return { w: quantError(w, d).relRms, y: quantError(y, yq).relRms };
}

// Expected relative RMS for Gaussian-like weights: uniform rounding error step/√12 with step = amax/Q
// (amax ≈ 2.5–3.5σ in a group): q8 ≈ 0.8 %, q4 g32 ≈ 12 %, q4 g128 ≈ 15 %, f16 ≈ 2^-11/√3, fp8 ≈ 2^-4/√12 · ~1.
const BOUND: Record<Q, number> = { f16: 5e-4, 'q8 g32': 0.012, 'q8 g128': 0.015, 'q4 g32': 0.16, 'q4 g128': 0.2, 'q4 g32 f32-scale': 0.16, 'fp8 128²': 0.05 };

describe('quantisation error against f32', () => {
  it('random N(0, 0.02) weights [512, 1024]', () => {
    const N = 512, K = 1024, w = randomNormal(N * K, 1, 0.02);
    const rows: string[] = [];
    for (const k of KINDS) {
      const e = errors(k, w, N, K);
      rows.push(`${k.padEnd(18)} weights ${(e.w * 100).toFixed(3).padStart(7)} %   output ${(e.y * 100).toFixed(3).padStart(7)} %`);
      expect(e.w, k).toBeLessThan(BOUND[k]);
      expect(e.y, k).toBeLessThan(BOUND[k]);
    }
    console.log(`random N(0, 0.02) [${N}×${K}], relative RMS error:\n` + rows.join('\n'));
  });

  it('every linear weight of the deepseek-v3-tiny fixture', () => {
    const st = parseSafetensors(new Uint8Array(readFileSync(new URL('../fixtures/deepseek-v3-tiny/model.safetensors', import.meta.url))));
    const sums = new Map<Q, { w: number; y: number; worstW: number; worst: string; n: number }>();
    for (const [name, info] of st.header.tensors) {
      if (info.shape.length !== 2 || name.includes('embed_tokens') || name.endsWith('mlp.gate.weight')) continue;
      const [N, K] = info.shape;
      const t = st.tensor(name);
      const w = toFloat32(t.dtype, t.data);
      for (const k of KINDS) {
        const e = errors(k, w, N, K);
        const s = sums.get(k) ?? { w: 0, y: 0, worstW: 0, worst: '', n: 0 };
        s.w += e.w; s.y += e.y; s.n++;
        if (e.w > s.worstW) { s.worstW = e.w; s.worst = name; }
        sums.set(k, s);
        expect(e.w, `${k} ${name}`).toBeLessThan(BOUND[k] * 1.5);
      }
    }
    const rows = [...sums].map(([k, s]) => `${k.padEnd(18)} mean weights ${(s.w / s.n * 100).toFixed(3).padStart(7)} %   mean output ${(s.y / s.n * 100).toFixed(3).padStart(7)} %   worst ${(s.worstW * 100).toFixed(2)} % (${s.worst})`);
    console.log(`deepseek-v3-tiny, ${sums.get('f16')!.n} linear weights, relative RMS error:\n` + rows.join('\n'));
    expect(sums.get('f16')!.n).toBeGreaterThan(20);
  });
});
