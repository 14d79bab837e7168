import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { randomNormal, randomUniform, mulberry32 } from '../../src/util/random';
import { ropeRef } from '../../src/kernels/rope.ref';
import { ropeInvFreq, yarnSoftmaxScale, yarnCorrectionRange } from '../../src/kernels/rope-params';
import { packWeight, packFp8, sliceRows, rowLayout, type PackedWeight } from '../../src/kernels/weight-pack';
import { dequantizeRef, quantError } from '../../src/kernels/weight.ref';
import { sampleRef, sampleDistribution, sortableKey, keyToF32, pcg, penalisedScaled, type SamplingParams } from '../../src/kernels/sample.ref';
import { f32ToFp8e4m3, fp8e4m3ToF32, f16ToF32, f32ToF16 } from '../../src/util/half';

const FIX = new URL('../fixtures/deepseek-v3-tiny/', import.meta.url);

describe('rope reference', () => {
  it('inv_freq without scaling matches the fixture (θ = 10000, d = 8)', () => {
    const ref = JSON.parse(readFileSync(new URL('reference.json', FIX), 'utf8'));
    expect([...ropeInvFreq(8, 10000, null)]).toEqual(ref.rope_inv_freq);
    expect(yarnSoftmaxScale(24, null)).toBeCloseTo(ref.softmax_scale, 12);
  });

  const v3 = { type: 'yarn' as const, factor: 40, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, mscale: 1, mscaleAllDim: 1 };
  it('YaRN for DeepSeek-V3 (d = 64, θ = 1e4, factor 40): range [10, 23], ramp blend, softmax scale 0.135234', () => {
    expect(yarnCorrectionRange(64, 10000, v3)).toEqual([10, 23]);
    const base = ropeInvFreq(64, 10000, null), y = ropeInvFreq(64, 10000, v3);
    for (let i = 0; i < 32; i++) {
      const ramp = Math.min(1, Math.max(0, (i - 10) / 13));
      expect(Math.abs(y[i] - (base[i] / 40 * ramp + base[i] * (1 - ramp)))).toBeLessThan(1e-6 * base[i]);
      if (i <= 10) expect(y[i]).toBe(base[i]);
      if (i >= 23) expect(Math.abs(y[i] - base[i] / 40)).toBeLessThan(1e-6 * base[i]);
    }
    expect(yarnSoftmaxScale(192, v3)).toBeCloseTo(192 ** -0.5 * (0.1 * Math.log(40) + 1) ** 2, 12);
    expect(yarnSoftmaxScale(192, v3)).toBeCloseTo(0.135234, 6);
    expect(yarnSoftmaxScale(192, { ...v3, factor: 1 })).toBe(192 ** -0.5);
  });

  it('ropeRef rotates adjacent pairs (2i, 2i+1), not halves', () => {
    const x = Float32Array.from([1, 0, 1, 0]);
    ropeRef(x, { rows: 1, heads: 1, rowStride: 4, headStride: 4, offset: 0, ropeDim: 4, invFreq: Float32Array.from([1, 0.5]), pos0: 1 });
    expect(x[0]).toBeCloseTo(Math.cos(1), 6);
    expect(x[1]).toBeCloseTo(Math.sin(1), 6);
    expect(x[2]).toBeCloseTo(Math.cos(0.5), 6);
    expect(x[3]).toBeCloseTo(Math.sin(0.5), 6);
  });
});

describe('weight packing', () => {
  it('f16 round-trips exactly through the packed layout', () => {
    const N = 5, K = 13, w = randomUniform(N * K, 1);
    const p = packWeight(w, N, K, 'f16');
    expect(p.Kp).toBe(16);
    const d = dequantizeRef(p);
    for (let i = 0; i < w.length; i++) expect(d[i]).toBe(f16ToF32(f32ToF16(w[i])));
  });

  it.each(['q8', 'q4'] as const)('%s: symmetric group quantisation error is within half a step per group', (fmt) => {
    for (const gs of [32, 128] as const) for (const sd of ['f16', 'f32'] as const) {
      const N = 7, K = 300, w = randomNormal(N * K, gs, 0.02);
      const p = packWeight(w, N, K, fmt, { groupSize: gs, scaleDtype: sd });
      const d = dequantizeRef(p);
      const Q = fmt === 'q8' ? 127 : 7;
      for (let n = 0; n < N; n++) for (let g = 0; g < Math.ceil(K / gs); g++) {
        let amax = 0;
        for (let k = g * gs; k < Math.min(K, g * gs + gs); k++) amax = Math.max(amax, Math.abs(w[n * K + k]));
        const step = amax / Q;
        for (let k = g * gs; k < Math.min(K, g * gs + gs); k++) {
          // half a step, plus the scale's own rounding (f16: 2^-11 relative) times |q| ≤ Q
          expect(Math.abs(d[n * K + k] - w[n * K + k])).toBeLessThanOrEqual(step * (0.5 + Q * 2 ** -10) + 1e-12);
        }
      }
    }
  });

  it('q4 nibbles: element 8j+b in bits 4b..4b+3 of word j, stored q+8, padding decodes to 0', () => {
    const K = 9, w = Float32Array.from([7, -7, 1, 0, 2, 3, 4, 5, 6]);
    const p = packWeight(w, 1, K, 'q4', { groupSize: 32, scaleDtype: 'f32' });
    expect(p.rowWords).toBe(4);
    expect(p.data[0] & 0xf).toBe(15);
    expect((p.data[0] >>> 4) & 0xf).toBe(1);
    expect((p.data[1] >>> 4) & 0xf).toBe(8); // element 9 (padding) = 0
    expect([...dequantizeRef(p)]).toEqual([...w]);
  });

  it('fp8: bytes × 128×128 block scales; sliceRows keeps scale rows aligned', () => {
    const N = 300, K = 200;
    const bytes = new Uint8Array(N * K), r = mulberry32(2);
    for (let i = 0; i < bytes.length; i++) { bytes[i] = Math.floor(r() * 256); if ((bytes[i] & 0x7f) === 0x7f) bytes[i] = 0; }
    const sc = randomUniform(3 * 2, 4, 0.5, 2);
    const p = packFp8(bytes, sc, N, K);
    const d = dequantizeRef(p);
    for (const [n, k] of [[0, 0], [129, 199], [299, 130], [5, 127]]) expect(d[n * K + k]).toBe(Math.fround(fp8e4m3ToF32(bytes[n * K + k]) * sc[Math.floor(n / 128) * 2 + Math.floor(k / 128)]));
    const s = sliceRows(p, 128, 300);
    expect([...dequantizeRef(s)]).toEqual([...d.subarray(128 * K)]);
  });

  it('sliceRows of f16-scaled q4 matches the rows of the whole', () => {
    const N = 9, K = 70, w = randomUniform(N * K, 3);
    const p = packWeight(w, N, K, 'q4');
    expect([...dequantizeRef(sliceRows(p, 3, 8))]).toEqual([...dequantizeRef(p).subarray(3 * K, 8 * K)]);
  });

  it('row layouts are whole vec4<u32> units', () => {
    for (const f of ['f16', 'q8', 'q4', 'fp8'] as const) for (const K of [1, 31, 33, 2048, 1408]) expect(rowLayout(f, K).rowWords % 4).toBe(0);
  });
});

describe('sampling reference', () => {
  const V = 300;
  const logits = randomNormal(V, 9, 2);
  const P = (o: Partial<SamplingParams>): SamplingParams => ({ temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, seed: 1, ...o });

  /** Independent definition by sorting (HF order: penalty, temperature, top-k, then top-p on the renormalised rest). */
  function sortedDefinition(params: SamplingParams, history?: number[]): Set<number> {
    const z = penalisedScaled(logits, params, history);
    const order = Array.from(z.keys()).sort((a, b) => z[b] - z[a] || a - b);
    let kept = params.topK > 0 ? order.slice(0, params.topK) : order;
    if (params.topP < 1) {
      const M = z[order[0]];
      const w = kept.map((i) => Math.exp(z[i] - M));
      const S = w.reduce((a, b) => a + b, 0);
      let cum = 0, n = 0;
      while (n < kept.length) { cum += w[n++]; if (cum >= params.topP * S - 1e-9 * S) break; }
      kept = kept.slice(0, n);
    }
    return new Set(kept);
  }

  it.each([
    P({ topK: 7 }), P({ topP: 0.6 }), P({ topK: 50, topP: 0.8, temperature: 0.7 }), P({ topP: 0.95, temperature: 1.4, repetitionPenalty: 1.5 }),
  ])('kept set = the sorted definition (%o)', (p) => {
    const hist = p.repetitionPenalty !== 1 ? [1, 2, 3, 50] : undefined;
    const probs = sampleDistribution(logits, p, hist);
    const kept = new Set([...probs.keys()].filter((i) => probs[i] > 0));
    expect(kept).toEqual(sortedDefinition(p, hist));
  });

  it('the draw distribution is the renormalised softmax over the kept set, and draws follow it (χ², p = 1e-7 threshold)', () => {
    for (const p of [P({ topK: 20, temperature: 0.9 }), P({ topP: 0.7 }), P({ temperature: 1, repetitionPenalty: 2 })]) {
      const hist = p.repetitionPenalty !== 1 ? [0, 10, 20, 30] : undefined;
      const z = penalisedScaled(logits, p, hist);
      const kept = sortedDefinition(p, hist);
      const M = Math.max(...z);
      const exact = new Float64Array(V);
      let S = 0;
      for (const i of kept) { exact[i] = Math.exp(z[i] - M); S += exact[i]; }
      const probs = sampleDistribution(logits, p, hist);
      // integer weights floor(e^(z−M)·2^20) lose < 1 unit each out of Σ ≥ 2^20 units (the top token
      // alone is 2^20), so each probability moves by < (|kept| + 1)·2^-20; plus f32 exp rounding.
      for (let i = 0; i < V; i++) expect(Math.abs(probs[i] - exact[i] / S)).toBeLessThan((kept.size + 1) * 2 ** -20 + 1e-6);
      const n = 3000, counts = new Float64Array(V);
      for (let s = 0; s < n; s++) counts[sampleRef(logits, { ...p, seed: 77 }, s, hist)]++;
      let chi = 0, df = -1;
      for (let i = 0; i < V; i++) {
        const e = probs[i] * n;
        if (e === 0) { expect(counts[i]).toBe(0); continue; }
        if (e < 5) continue;
        chi += (counts[i] - e) ** 2 / e;
        df++;
      }
      const limit = df * (1 - 2 / (9 * df) + 5.2 * Math.sqrt(2 / (9 * df))) ** 3;
      expect(chi).toBeLessThan(limit);
    }
  }, 60_000);

  it('keys preserve order and round-trip; greedy ties go to the lowest index; pcg is a bijection sample', () => {
    const vals = [-Infinity, -3.5, -0, 0, 1e-30, 2, 3.25, Infinity];
    for (let i = 1; i < vals.length; i++) expect(sortableKey(vals[i])).toBeGreaterThanOrEqual(sortableKey(vals[i - 1]));
    for (const v of vals) expect(Object.is(keyToF32(sortableKey(v)), Math.fround(v))).toBe(true);
    expect(sortableKey(NaN)).toBe(0);
    const l = Float32Array.from([1, 5, 5, NaN, 2]);
    expect(sampleRef(l, P({ temperature: 0 }), 0)).toBe(1);
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) seen.add(pcg(i));
    expect(seen.size).toBe(1000);
  });

  it('fp8 encode/decode agree on all finite codes (used by the fp8 tests)', () => {
    for (let b = 0; b < 256; b++) if ((b & 0x7f) !== 0x7f) expect(f32ToFp8e4m3(fp8e4m3ToF32(b)) === b || fp8e4m3ToF32(b) === 0).toBe(true);
  });
});

describe('quantisation error', () => {
  it('random N(0, 0.02) weights: q8 ≪ q4 (g32) < q4 (g128), f16 ≈ 2^-11', () => {
    const N = 64, K = 512, w = randomNormal(N * K, 3, 0.02);
    const e = (p: PackedWeight) => quantError(w, dequantizeRef(p)).relRms;
    const f16 = e(packWeight(w, N, K, 'f16'));
    const q8 = e(packWeight(w, N, K, 'q8'));
    const q4g32 = e(packWeight(w, N, K, 'q4', { groupSize: 32 }));
    const q4g128 = e(packWeight(w, N, K, 'q4', { groupSize: 128 }));
    expect(f16).toBeLessThan(4e-4);
    expect(q8).toBeLessThan(0.01);
    expect(q4g32).toBeLessThan(0.15);
    expect(q4g32).toBeLessThan(q4g128);
    expect(q8).toBeLessThan(q4g32 / 5);
  });
});

describe('f16 range', () => {
  it('packing a value beyond the f16 range fails loudly instead of storing Inf', () => {
    expect(() => packWeight(Float32Array.from([1, 70000]), 1, 2, 'f16')).toThrow(/overflows f16/);
  });
});
