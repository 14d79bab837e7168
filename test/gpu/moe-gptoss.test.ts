import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomMxfp4 } from '../helpers/mxfp4';
import { randomUniform } from '../../src/util/random';
import { destroyExpertGroups, moeExpertGroupsForward, moeGate, uploadExpertBiases, uploadExpertGroups, uploadMxfp4ExpertGroups, type ExpertActivation, type MoeExpertGroups } from '../../src/kernels/moe';
import { GPT_OSS_SWIGLU, gptOssExpertsRef, gptOssRouterRef } from '../../src/kernels/moe.ref';
import { packMxfp4, type GptOssExpertTensors } from '../../src/kernels/weight-pack';
import { dequantizeRef } from '../../src/kernels/weight.ref';
import { ShapeError } from '../../src/errors';

// GPT-OSS experts: MXFP4 gate_up / down from the HF tensors (interleaved gate/up rows), biases, the
// clamped SwiGLU, and the router (linear with bias, top-k, softmax over the k logits), against CPU
// references written from HF GptOssExperts / GptOssTopKRouter in the HF layout.
//
// Tolerance: the kernels decode MXFP4 exactly (FP4 × 2^k in f32), so only f32 accumulation order and exp
// differ from the float64 reference. Pre-activations here reach |g| ~ 10 (past the clamp at 7 on
// purpose), h up to ~60, down weights up to 3 over I = 40: Σ|terms| of an output ≲ 1e4, f32 rounding
// of such sums ≲ 1e-3. 2e-3 abs + 1e-4 rel; a wrong row, nibble, scale, bias or clamp moves outputs by ≥ 0.1.
const TOL = { atol: 2e-3, rtol: 1e-4 };
const ACT: ExpertActivation = { kind: 'swiglu_oai', ...GPT_OSS_SWIGLU };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterEach(() => gpu.temps.releaseAll());

/** A random GPT-OSS layer: HF tensors with scales 2^-5 .. 2^-1 (weights up to ±3) and biases in [−1, 1]. */
function randomLayer(E: number, D: number, I: number, seed: number) {
  const GD = Math.ceil(D / 32), GI = Math.ceil(I / 32);
  const gu = randomMxfp4(E, 2 * I, GD, seed, 122, 5), dn = randomMxfp4(E, D, GI, seed + 1, 122, 5);
  const t: GptOssExpertTensors = {
    gateUpBlocks: gu.blocks, gateUpScales: gu.scales, gateUpBias: randomUniform(E * 2 * I, seed + 2),
    downBlocks: dn.blocks, downScales: dn.scales, downBias: randomUniform(E * D, seed + 3),
  };
  // The HF-layout matrices of each expert (gate rows even, up rows odd), dequantised.
  const experts = Array.from({ length: E }, (_, e) => ({
    gateUp: dequantizeRef(packMxfp4(gu.blocks.subarray(e * 2 * I * GD * 16, (e + 1) * 2 * I * GD * 16), gu.scales.subarray(e * 2 * I * GD, (e + 1) * 2 * I * GD), 2 * I, D)),
    gateUpBias: t.gateUpBias.subarray(e * 2 * I, (e + 1) * 2 * I),
    down: dequantizeRef(packMxfp4(dn.blocks.subarray(e * D * GI * 16, (e + 1) * D * GI * 16), dn.scales.subarray(e * D * GI, (e + 1) * D * GI), D, I)),
    downBias: t.downBias.subarray(e * D, (e + 1) * D),
  }));
  return { t, experts };
}

/** Random routing: distinct experts per token, softmax-like weights. */
function randomRouting(T: number, K: number, E: number, seed: number) {
  const r = randomUniform(T * E, seed, 0, 1);
  const ids: number[][] = [], weights: number[][] = [];
  for (let t = 0; t < T; t++) {
    const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => r[t * E + a] - r[t * E + b]);
    ids.push(order.slice(0, K));
    const w = order.slice(0, K).map((e) => 0.2 + r[t * E + e]);
    const z = w.reduce((a, b) => a + b, 0);
    weights.push(w.map((v) => v / z));
  }
  return { ids, weights };
}

async function runExperts(w: MoeExpertGroups, x: Float32Array, T: number, K: number, ids: number[][], weights: number[][], mode: 'decode' | 'grouped' | 'batched', activation: ExpertActivation = ACT) {
  const D = w.D;
  const bx = gpu.buffers.upload('x', x);
  const bi = gpu.buffers.upload('ids', new Uint32Array(ids.flat()));
  const bw = gpu.buffers.upload('w', new Float32Array(weights.flat()));
  const bo = poisoned(gpu, 'out', T * D);
  const out = await gpu.checked(async () => {
    const rec = gpu.recorder('gptoss experts');
    moeExpertGroupsForward(gpu, rec, { x: bx, T, experts: w, ids: bi, weights: bw, K, shared: null, out: bo, mode, activation });
    rec.submit();
    return gpu.buffers.readF32(bo, 0, T * D);
  });
  [bx, bi, bw, bo].forEach((b) => gpu.buffers.destroy(b));
  return out;
}

describe('GPT-OSS experts: MXFP4 + biases + clamped SwiGLU against the HF-layout reference', () => {
  // I = 40: not a multiple of the 32-value block (padded rows); decode (1, 3 tokens) and grouped (20
  // tokens, ragged in the 32-row tiles); one stack and three stacks (binding limit forced down).
  const E = 5, D = 64, I = 40, K = 2;
  const layer = randomLayer(E, D, I, 11);
  it.each([[1, 'decode', 0], [3, 'decode', 0], [20, 'grouped', 0], [3, 'decode', 1], [20, 'grouped', 1], [9, 'batched', 0], [9, 'batched', 1]] as const)('T=%i %s stacks-limited=%i', async (T, mode, limited) => {
    const one = 2 * I * 2 * 16 + 4; // a bit more than one expert's gate|up block bytes: forces 1-2 experts per stack
    const w = uploadMxfp4ExpertGroups(gpu, 'gptoss', layer.t, E, D, I, limited ? { maxBindingBytes: 2 * one } : {});
    if (limited) expect(w.groups.length).toBeGreaterThan(1);
    const x = randomUniform(T * D, 100 + T);
    const { ids, weights } = randomRouting(T, K, E, 200 + T);
    const ref = gptOssExpertsRef(x, T, D, I, layer.experts, ids, weights);
    // The clamp matters in this data: some gate pre-activations pass the limit.
    expectClose(await runExperts(w, x, T, K, ids, weights, mode), ref, TOL, `mxfp4 T=${T} ${mode}`);
    destroyExpertGroups(gpu, w);
  });

  it('f32 stacks with biases and the same activation (the dequantised weights, de-interleaved by hand)', async () => {
    const T = 3;
    const gateUpBias = new Float32Array(E * 2 * I), downBias = new Float32Array(E * D);
    const experts = layer.experts.map((ex, e) => {
      const gate = new Float32Array(I * D), up = new Float32Array(I * D);
      for (let i = 0; i < I; i++) {
        gate.set(ex.gateUp.subarray(2 * i * D, (2 * i + 1) * D), i * D);
        up.set(ex.gateUp.subarray((2 * i + 1) * D, (2 * i + 2) * D), i * D);
        gateUpBias[e * 2 * I + i] = ex.gateUpBias[2 * i];
        gateUpBias[e * 2 * I + I + i] = ex.gateUpBias[2 * i + 1];
      }
      downBias.set(ex.downBias, e * D);
      return { gate, up, down: ex.down };
    });
    const x = randomUniform(T * D, 300);
    const { ids, weights } = randomRouting(T, K, E, 301);
    const ref = gptOssExpertsRef(x, T, D, I, layer.experts, ids, weights);
    const w = uploadExpertGroups(gpu, 'f32', experts, D, I, 'f32');
    uploadExpertBiases(gpu, w, gateUpBias, downBias);
    for (const mode of ['decode', 'grouped', 'batched'] as const) expectClose(await runExperts(w, x, T, K, ids, weights, mode), ref, TOL, `f32 ${mode}`);
    destroyExpertGroups(gpu, w);
  });

  it('the activation is honoured: silu, and a limit that never clamps, give other outputs on this data', async () => {
    const T = 1;
    const w = uploadMxfp4ExpertGroups(gpu, 'gptoss', layer.t, E, D, I);
    const x = randomUniform(T * D, 400);
    const { ids, weights } = randomRouting(T, K, E, 401);
    const oai = await runExperts(w, x, T, K, ids, weights, 'decode');
    const silu = await runExperts(w, x, T, K, ids, weights, 'decode', { kind: 'silu' });
    const unclamped = await runExperts(w, x, T, K, ids, weights, 'decode', { kind: 'swiglu_oai', alpha: GPT_OSS_SWIGLU.alpha, limit: 1e4 });
    const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
    expect(maxDiff(oai, silu)).toBeGreaterThan(0.1);
    expect(maxDiff(oai, unclamped)).toBeGreaterThan(0.1);
    expectClose(unclamped, gptOssExpertsRef(x, T, D, I, layer.experts, ids, weights, { alpha: GPT_OSS_SWIGLU.alpha, limit: 1e4 }), TOL, 'limit 1e4');
    destroyExpertGroups(gpu, w);
  });

  it('rejects mis-sized tensors and NaN scales with typed errors', () => {
    const bad = { ...layer.t, downBias: new Float32Array(3) };
    expect(() => uploadMxfp4ExpertGroups(gpu, 'bad', bad, E, D, I)).toThrow(ShapeError);
    const nan = { ...layer.t, gateUpScales: layer.t.gateUpScales.slice() };
    nan.gateUpScales[7] = 255;
    expect(() => uploadMxfp4ExpertGroups(gpu, 'nan', nan, E, D, I)).toThrow(ShapeError);
  });
});

describe('GPT-OSS router: linear with bias, top-k, softmax over the selected logits', () => {
  it.each([[1, 32, 4], [7, 32, 4], [5, 9, 3]])('T=%i E=%i K=%i equals gptOssRouterRef (ids exactly, weights 1e-5)', async (T, E, K) => {
    const D = 48;
    const x = randomUniform(T * D, 500 + T), W = randomUniform(E * D, 501), b = randomUniform(E, 502, -2, 2);
    const ref = gptOssRouterRef(x, W, b, T, D, E, K);
    const bx = gpu.buffers.upload('x', x), bW = gpu.buffers.upload('W', W), bb = gpu.buffers.upload('b', b);
    const ids = gpu.buffers.create('ids', T * K * 4), wts = poisoned(gpu, 'wts', T * K);
    const [gotIds, gotW] = await gpu.checked(async () => {
      const rec = gpu.recorder('router');
      // Softmax over all E then renormalising the top k equals softmax over the k selected logits.
      moeGate(gpu, rec, { x: bx, T, D, gateW: bW, bias: null, routerBias: bb, ids, weights: wts,
        routing: { experts: E, topK: K, nGroup: 1, topkGroup: 1, scoring: 'softmax', normTopkProb: true, hasBias: false, routedScalingFactor: 1 } });
      rec.submit();
      return Promise.all([gpu.buffers.readU32(ids, 0, T * K), gpu.buffers.readF32(wts, 0, T * K)]);
    });
    expect(Array.from(gotIds)).toEqual(ref.ids.flat());
    expectClose(gotW, ref.weights.flat(), { atol: 1e-5, rtol: 1e-5 }, 'router weights');
    [bx, bW, bb, ids, wts].forEach((buf) => gpu.buffers.destroy(buf));
  });
});
