import { describe, it, expect } from 'vitest';
import { ropeInvFreq, yarnConcentration, yarnCorrectionRange, type YarnScaling } from '../../src/kernels/rope-params';
import { ropeRef } from '../../src/kernels/rope.ref';
import { randomUniform } from '../../src/util/random';

// GPT-OSS's YaRN: config.json rope_scaling of openai/gpt-oss-20b and rope_theta 150000, head_dim 64.
const GPT_OSS: YarnScaling = { type: 'yarn', factor: 32, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, mscale: 1, mscaleAllDim: 0, truncate: false };
const THETA = 150000, HEAD_DIM = 64;

/**
 * openai/gpt-oss torch/model.py RotaryEmbedding._compute_concentration_and_inv_freq, transcribed: freq in
 * float32 (torch.float), low/high in float64 (math.log), no rounding, ramp in float32, blend.
 */
function officialInvFreq(headDim: number, base: number, scaling: number, initialContext: number, ntkAlpha: number, ntkBeta: number) {
  const half = headDim / 2;
  const freq = Array.from({ length: half }, (_, i) => Math.fround(base ** Math.fround((2 * i) / headDim)));
  const concentration = 0.1 * Math.log(scaling) + 1;
  const low = (half * Math.log(initialContext / (ntkBeta * 2 * Math.PI))) / Math.log(base);
  const high = (half * Math.log(initialContext / (ntkAlpha * 2 * Math.PI))) / Math.log(base);
  expect(0 < low && low < high && high < half - 1).toBe(true);   // the official assert
  const inv = freq.map((f, i) => {
    const interpolation = 1 / (scaling * f), extrapolation = 1 / f;
    const ramp = Math.fround((i - low) / (high - low));
    const mask = 1 - Math.min(1, Math.max(0, ramp));
    return interpolation * (1 - mask) + extrapolation * mask;
  });
  return { concentration, inv, low, high };
}

describe('GPT-OSS YaRN rotary parameters', () => {
  it('inverse frequencies equal the official code (truncate: false, no floor/ceil) within f32 rounding', () => {
    const want = officialInvFreq(HEAD_DIM, THETA, 32, 4096, 1, 32);
    const got = ropeInvFreq(HEAD_DIM, THETA, GPT_OSS);
    expect(got.length).toBe(32);
    for (let i = 0; i < 32; i++) expect(Math.abs(got[i] - want.inv[i])).toBeLessThanOrEqual(2e-7 * want.inv[i]);
    const [low, high] = yarnCorrectionRange(HEAD_DIM, THETA, GPT_OSS);
    expect(low).toBeCloseTo(want.low, 12);
    expect(high).toBeCloseTo(want.high, 12);
    expect(low).toBeCloseTo(8.0926, 3);   // not a whole pair index: truncation would change the ramp
  });

  it('truncate (the HF default, DeepSeek) rounds the bounds and changes the ramp frequencies', () => {
    const truncated = ropeInvFreq(HEAD_DIM, THETA, { ...GPT_OSS, truncate: true });
    const exact = ropeInvFreq(HEAD_DIM, THETA, GPT_OSS);
    expect(yarnCorrectionRange(HEAD_DIM, THETA, { ...GPT_OSS, truncate: true })).toEqual([8, 18]);
    let changed = 0;
    for (let i = 0; i < 32; i++) if (Math.abs(truncated[i] - exact[i]) > 1e-6 * exact[i]) changed++;
    expect(changed).toBeGreaterThan(5);
    // Outside the ramp both are the pure extrapolated / interpolated frequencies.
    expect(truncated[0]).toBe(exact[0]);
    expect(truncated[31]).toBe(exact[31]);
  });

  it('concentration 0.1·ln 32 + 1 multiplies cos and sin: q·k scaled by its square', () => {
    expect(yarnConcentration(GPT_OSS)).toBeCloseTo(1.3465735902799727, 14);
    expect(yarnConcentration(null)).toBe(1);
    // Rotating q and k with cos·c, sin·c equals rotating them plainly and scaling their dot by c².
    const c = yarnConcentration(GPT_OSS), inv = ropeInvFreq(HEAD_DIM, THETA, GPT_OSS);
    const q = randomUniform(64, 1), k = randomUniform(64, 2);
    const rq = ropeRef(q.slice(), { rows: 1, heads: 1, rowStride: 64, headStride: 64, offset: 0, ropeDim: 64, invFreq: inv, pos0: 5000, style: 'half' });
    const rk = ropeRef(k.slice(), { rows: 1, heads: 1, rowStride: 64, headStride: 64, offset: 0, ropeDim: 64, invFreq: inv, pos0: 4000, style: 'half' });
    // The official rotation with concentrated cos/sin, written out on the halves.
    const official = (x: Float32Array, pos: number) => {
      const o = new Float64Array(64);
      for (let i = 0; i < 32; i++) {
        const ang = Math.fround(pos * inv[i]);
        const cs = Math.cos(ang) * c, sn = Math.sin(ang) * c;
        o[i] = x[i] * cs - x[i + 32] * sn;
        o[i + 32] = x[i + 32] * cs + x[i] * sn;
      }
      return o;
    };
    const oq = official(q, 5000), ok = official(k, 4000);
    let dPlain = 0, dOfficial = 0;
    for (let i = 0; i < 64; i++) { dPlain += rq[i] * rk[i]; dOfficial += oq[i] * ok[i]; }
    expect(dPlain * c * c).toBeCloseTo(dOfficial, 5);
  });
});
