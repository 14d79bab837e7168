import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { attentionRef } from '../../src/kernels/attention.ref';
import { gptOssExpertsRef, gptOssRouterRef } from '../../src/kernels/moe.ref';
import { ropeInvFreq, yarnConcentration } from '../../src/kernels/rope-params';
import { packMxfp4 } from '../../src/kernels/weight-pack';
import { dequantizeRef, mxfp4DequantHfRef } from '../../src/kernels/weight.ref';

// webmoe's CPU references for GPT-OSS against PyTorch float32 outputs of code that follows transformers'
// modeling_gpt_oss.py / integrations/mxfp4.py and openai/gpt-oss line by line
// (test/fixtures/gpt-oss-kernels/make.py). Tolerances: MXFP4 dequantisation is exact (bit for bit); the
// rest compares float64 references with float32 torch: experts 1e-4 relative to the output scale (sums of
// ~100 products of magnitude ≤ 10), attention 1e-5, router weights 1e-6, inverse frequencies 3e-7 relative.
const fx = JSON.parse(readFileSync(new URL('../fixtures/gpt-oss-kernels/fixture.json', import.meta.url), 'utf8'));

const f32 = (a: number[]) => Float32Array.from(a);
const u8 = (a: number[]) => Uint8Array.from(a);
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => { let m = 0; for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };

describe('GPT-OSS references against PyTorch (HF / official code)', () => {
  const ex = fx.experts;
  const { E, D, I, K, T } = ex;
  const GD = D / 32, GI = I / 32;
  const guB = u8(ex.gate_up_proj_blocks), guS = u8(ex.gate_up_proj_scales), dnB = u8(ex.down_proj_blocks), dnS = u8(ex.down_proj_scales);

  it('MXFP4: convert_moe_packed_tensors output equals mxfp4DequantHfRef and the packed layout, bit for bit', () => {
    expect(Array.from(mxfp4DequantHfRef(guB, guS, E, 2 * I, GD))).toEqual(ex.gate_up_proj);
    expect(Array.from(mxfp4DequantHfRef(dnB, dnS, E, D, GI))).toEqual(ex.down_proj);
    // The packed [N, K] rows are the transposes of HF's [E, K, N] parameter.
    for (let e = 0; e < E; e++) {
      const w = dequantizeRef(packMxfp4(guB.subarray(e * 2 * I * GD * 16, (e + 1) * 2 * I * GD * 16), guS.subarray(e * 2 * I * GD, (e + 1) * 2 * I * GD), 2 * I, D));
      let bad = 0;
      for (let n = 0; n < 2 * I; n++) for (let k = 0; k < D; k++) if (w[n * D + k] !== ex.gate_up_proj[(e * D + k) * 2 * I + n]) bad++;
      expect(bad).toBe(0);
    }
  });

  it('router (linear + bias, top-k, softmax over the k) and experts (clamped SwiGLU, biases) equal GptOssTopKRouter / GptOssExperts', () => {
    const x = f32(ex.x);
    const r = gptOssRouterRef(x, f32(ex.router_weight), f32(ex.router_bias), T, D, E, K);
    expect(r.ids).toEqual(ex.router_indices);
    expect(maxAbs(r.weights.flat(), ex.router_top_value.flat())).toBeLessThan(1e-6);
    const experts = Array.from({ length: E }, (_, e) => ({
      gateUp: dequantizeRef(packMxfp4(guB.subarray(e * 2 * I * GD * 16, (e + 1) * 2 * I * GD * 16), guS.subarray(e * 2 * I * GD, (e + 1) * 2 * I * GD), 2 * I, D)),
      gateUpBias: f32(ex.gate_up_proj_bias.slice(e * 2 * I, (e + 1) * 2 * I)),
      down: dequantizeRef(packMxfp4(dnB.subarray(e * D * GI * 16, (e + 1) * D * GI * 16), dnS.subarray(e * D * GI, (e + 1) * D * GI), D, I)),
      downBias: f32(ex.down_proj_bias.slice(e * D, (e + 1) * D)),
    }));
    const out = gptOssExpertsRef(x, T, D, I, experts, r.ids, r.weights, { alpha: ex.alpha, limit: ex.limit });
    const scale = Math.max(...ex.out.map(Math.abs));
    expect(maxAbs(out, ex.out)).toBeLessThan(1e-4 * Math.max(1, scale));
  });

  it('attention with sinks and a sliding window equals eager_attention_forward with the sliding-window mask', () => {
    const a = fx.attention;
    const out = attentionRef(f32(a.q), f32(a.k), f32(a.v), { S: a.S, T: a.S, past: 0, heads: a.heads, kvHeads: a.kv_heads, dQk: a.head_dim, dV: a.head_dim, scale: a.scaling, causal: true, window: a.window }, f32(a.sinks));
    expect(maxAbs(out, a.out)).toBeLessThan(1e-5);
  });

  it('YaRN inverse frequencies and concentration equal the official RotaryEmbedding', () => {
    const r = fx.rope;
    const got = ropeInvFreq(r.head_dim, r.base, { type: 'yarn', factor: 32, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, mscale: 1, mscaleAllDim: 0, truncate: false });
    for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - r.inv_freq[i])).toBeLessThanOrEqual(3e-7 * r.inv_freq[i]);
    expect(yarnConcentration({ type: 'yarn', factor: 32, originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, mscale: 1, mscaleAllDim: 0 })).toBeCloseTo(r.concentration, 12);
  });
});
