import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomNormal, randomUniform, mulberry32 } from '../../src/util/random';
import { moeGate, moeGateSelect, moeExperts, moeExpertsMode, moeSort, uploadExperts, destroyExperts, maxGroupedTiles, MOE_BATCH_ROWS, MOE_DECODE_MAX_TOKENS, MOE_TILE_ROWS, type MoeRouting } from '../../src/kernels/moe';
import { moeGateRef, moeExpertsRef, moePermutationRef, expertCountsRef } from '../../src/kernels/moe.ref';
import { routingFromConfig } from '../../src/model/config';
import { matmul } from '../../src/kernels/matmul';
import { siluMulRows } from '../../src/kernels/elementwise';
import { loadMoeFixture, sameSet } from '../helpers/moe-fixture';
import { LimitExceededError, ShapeError } from '../../src/errors';
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16 } from '../../src/util/half';
import { packWeight } from '../../src/kernels/weight-pack';
import { dequantizeRef } from '../../src/kernels/weight.ref';

// Tolerances (f32):
// - gate weights/scores: a sigmoid/softmax and a K-term normalisation in f32 against float64: 2e-6 abs
//   + 1e-5 rel (GPU exp is not correctly rounded).
// - expert outputs: two chained dot products (D then I terms) and a K-term weighted sum, f32 against
//   float64: 1e-4 abs + 1e-4 rel for |values| ≲ 10 and D, I ≤ 100 (as the matmul tests).
// - the fixture's ffn_out: the README's 1e-4.
const GATE_TOL = { atol: 2e-6, rtol: 1e-5 };
const MLP_TOL = { atol: 1e-4, rtol: 1e-4 };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

function free(...bs: GPUBuffer[]) { bs.forEach((b) => gpu.buffers.destroy(b)); }

async function runSelect(logits: Float32Array, bias: Float32Array | null, routing: MoeRouting, T: number) {
  const E = routing.experts, K = routing.topK;
  const bl = gpu.buffers.upload('logits', logits);
  const bb = bias ? gpu.buffers.upload('bias', bias) : null;
  const ids = gpu.buffers.create('ids', T * K * 4);
  gpu.buffers.fill(ids, 0xdeadbeef, false);
  const w = poisoned(gpu, 'weights', T * K), s = poisoned(gpu, 'scores', T * E);
  const counts = gpu.buffers.upload('counts', new Uint32Array(E));
  const [gi, gw, gs, gc] = await gpu.checked(async () => {
    const rec = gpu.recorder('gate');
    moeGateSelect(gpu, rec, { logits: bl, T, bias: bb, routing, ids, weights: w, scores: s, counts });
    rec.submit();
    return Promise.all([gpu.buffers.readU32(ids), gpu.buffers.readF32(w), gpu.buffers.readF32(s), gpu.buffers.readU32(counts)]);
  });
  free(bl, ids, w, s, counts, ...(bb ? [bb] : []));
  return { ids: gi, weights: gw, scores: gs, counts: gc };
}

function checkAgainstRef(got: Awaited<ReturnType<typeof runSelect>>, logits: Float32Array, bias: Float32Array | null, routing: MoeRouting, T: number, what: string) {
  const ref = moeGateRef(logits, bias, routing, T);
  const K = routing.topK;
  for (let t = 0; t < T; t++) {
    expect(Array.from(got.ids.subarray(t * K, (t + 1) * K)), `${what} token ${t} ids`).toEqual(ref.ids[t]);
  }
  expectClose(got.weights, ref.weights.flat(), GATE_TOL, `${what} weights`);
  expectClose(got.scores, ref.scores, GATE_TOL, `${what} scores`);
  expect(Array.from(got.counts), `${what} counts`).toEqual(expertCountsRef(ref.ids, routing.experts));
}

describe('moe gate selection vs CPU reference', () => {
  const v3: MoeRouting = { experts: 256, topK: 8, nGroup: 8, topkGroup: 4, scoring: 'sigmoid', normTopkProb: true, routedScalingFactor: 2.5, hasBias: true };
  const cases: [string, MoeRouting, number, number][] = [
    // name, routing, T, bias mean (NaN: no bias)
    ['V3 sigmoid+bias 256e top-8 8g/4', v3, 5, 0.3],
    ['tiny fixture shape 8e top-2 4g/2', { ...v3, experts: 8, topK: 2, nGroup: 4, topkGroup: 2 }, 33, 0.3],
    ['negative biased scores (bias ≈ −3)', { ...v3, experts: 64, topK: 6, nGroup: 8, topkGroup: 3 }, 17, -3],
    ['V2 softmax 160e top-6 8g/3 ×16, no renorm', { experts: 160, topK: 6, nGroup: 8, topkGroup: 3, scoring: 'softmax', normTopkProb: false, routedScalingFactor: 16, hasBias: false }, 7, NaN],
    ['V2-Lite softmax 64e top-6', { experts: 64, topK: 6, nGroup: 1, topkGroup: 1, scoring: 'softmax', normTopkProb: false, routedScalingFactor: 1, hasBias: false }, 9, NaN],
    ['Mixtral softmax 8e top-2 renorm', routingFromConfig({ model_type: 'mixtral', num_local_experts: 8, num_experts_per_tok: 2 }), 31, NaN],
    ['OLMoE softmax 64e top-8', routingFromConfig({ model_type: 'olmoe', num_experts: 64, num_experts_per_tok: 8, norm_topk_prob: false }), 3, NaN],
    ['ragged 7e top-3 sigmoid no bias', { experts: 7, topK: 3, nGroup: 1, topkGroup: 1, scoring: 'sigmoid', normTopkProb: true, routedScalingFactor: 1, hasBias: false }, 1, NaN],
    ['ragged 300e (> workgroup) top-7 6g/2', { ...v3, experts: 300, topK: 7, nGroup: 6, topkGroup: 2 }, 3, 0.1],
    ['sigmoid, groups, no bias (group = max)', { ...v3, experts: 32, topK: 4, nGroup: 4, topkGroup: 1, hasBias: false }, 11, NaN],
  ];
  it.each(cases)('%s', async (name, routing, T, biasMean) => {
    const E = routing.experts;
    const logits = randomNormal(T * E, T * 7 + E, 2);
    const bias = Number.isNaN(biasMean) ? null : randomNormal(E, E, 0.1).map((v) => v + biasMean);
    checkAgainstRef(await runSelect(logits, bias, routing, T), logits, bias, routing, T, name);
  });

  it('rejects impossible routings and gates past the workgroup-storage limit with typed errors', async () => {
    const b = gpu.buffers.create('b', 1 << 16);
    const args = { logits: b, T: 1, bias: b, ids: b, weights: b };
    // top-8 of 2 kept groups × 2 experts: fewer unmasked experts than K
    expect(() => moeGateSelect(gpu, gpu.recorder('x'), { ...args, routing: { ...v3, experts: 16, nGroup: 8, topkGroup: 2 } })).toThrowError(ShapeError);
    expect(() => moeGateSelect(gpu, gpu.recorder('x'), { ...args, routing: { ...v3, experts: 12, nGroup: 8 } })).toThrowError(/nGroup 8 must divide/);
    // 16 KiB (the WebGPU minimum) of workgroup storage holds the scores of < 2048 experts
    const small = await testGpu({ limitOverrides: { maxComputeWorkgroupStorageSize: 16384 } });
    const sb = small.buffers.create('b', 1 << 16);
    const r2048: MoeRouting = { ...v3, experts: 2048, nGroup: 8 };
    expect(() => moeGateSelect(small, small.recorder('x'), { logits: sb, T: 1, bias: sb, ids: sb, weights: sb, routing: r2048 })).toThrowError(LimitExceededError);
    expect(() => moeGateSelect(small, small.recorder('x'), { logits: sb, T: 1, bias: sb, ids: sb, weights: sb, routing: r2048 })).toThrowError(/maxComputeWorkgroupStorageSize/);
    small.destroy();
    gpu.buffers.destroy(b);
  });

  it('exact ties pick the lower expert index, near-ties (1e-3 apart) resolve exactly', async () => {
    const routing: MoeRouting = { ...v3, experts: 64, topK: 6, nGroup: 8, topkGroup: 4 };
    const T = 12, E = 64;
    const rnd = mulberry32(99);
    const logits = new Float32Array(T * E), bias = new Float32Array(E);
    for (let e = 0; e < E; e++) bias[e] = [0.25, -0.5][e % 2]; // equal biases in pairs of parity
    for (let t = 0; t < T; t++) {
      for (let e = 0; e < E; e++) {
        // a few distinct levels → many exact ties, some 1e-3 apart
        logits[t * E + e] = Math.floor(rnd() * 4) * 0.5 + (t % 3 === 0 ? 1e-3 * Math.floor(rnd() * 3) : 0);
      }
    }
    const got = await runSelect(logits, bias, routing, T);
    checkAgainstRef(got, logits, bias, routing, T, 'ties');
    // the reference's tie rule is what we claim: lower index first among equal selection scores
    const ref = moeGateRef(logits, bias, routing, T);
    for (let t = 0; t < T; t++) {
      const c = ref.selection[t];
      for (let j = 1; j < routing.topK; j++) {
        const a = ref.ids[t][j - 1], b = ref.ids[t][j];
        expect(c[a] > c[b] || (c[a] === c[b] && a < b)).toBe(true);
      }
    }
  });
});

// ------------------------------------------------------------------------------------ fixture

async function sharedExpertGpu(xb: GPUBuffer, T: number, D: number, w: { gate: Float32Array; up: Float32Array; down: Float32Array }) {
  const Is = w.gate.length / D;
  const gu = new Float32Array(2 * Is * D);
  gu.set(w.gate, 0);
  gu.set(w.up, Is * D);
  const bgu = gpu.buffers.upload('shared.gate_up', gu), bd = gpu.buffers.upload('shared.down', w.down);
  const t1 = gpu.buffers.create('shared.gu', T * 2 * Is * 4), t2 = gpu.buffers.create('shared.h', T * Is * 4);
  const out = gpu.buffers.create('shared.out', T * D * 4);
  return { out, record(rec: ReturnType<Gpu['recorder']>) {
    matmul(gpu, rec, { x: xb, w: bgu, y: t1, M: T, N: 2 * Is, K: D });
    siluMulRows(gpu, rec, t1, t2, T, Is);
    matmul(gpu, rec, { x: t2, w: bd, y: out, M: T, N: D, K: Is });
  }, free() { free(bgu, bd, t1, t2, out); } };
}

describe('deepseek-v3-tiny fixture: gate + experts + shared reproduce the official MoE layers', () => {
  it('routing equals routing.json at every position and layer; ffn_out within 1e-4 (grouped prefill, decode, token-by-token decode)', async () => {
    const fx = loadMoeFixture();
    const { S: T, D, I, routing } = fx;
    const K = routing.topK, E = routing.experts;
    for (const L of fx.layers) {
      const xb = gpu.buffers.upload('ffn_in', L.ffnIn);
      const gw = gpu.buffers.upload('gate.weight', L.gate), bias = gpu.buffers.upload('gate.bias', L.bias);
      const ids = gpu.buffers.create('ids', T * K * 4), wts = poisoned(gpu, 'weights', T * K), scores = poisoned(gpu, 'scores', T * E);
      const experts = uploadExperts(gpu, `layer${L.layer}`, L.experts, D, I);
      const shared = await sharedExpertGpu(xb, T, D, L.shared);
      const outs = { decode: poisoned(gpu, 'out.decode', T * D), grouped: poisoned(gpu, 'out.grouped', T * D), batched: poisoned(gpu, 'out.batched', T * D) };
      const [gi, gwt, gs, od, og, ob] = await gpu.checked(async () => {
        const rec = gpu.recorder('moe layer');
        moeGate(gpu, rec, { x: xb, T, D, gateW: gw, bias, routing, ids, weights: wts, scores });
        shared.record(rec);
        for (const mode of ['decode', 'grouped', 'batched'] as const) moeExperts(gpu, rec, { x: xb, T, experts, ids, weights: wts, K, shared: shared.out, out: outs[mode], mode });
        rec.submit();
        gpu.temps.releaseAll();
        return Promise.all([gpu.buffers.readU32(ids), gpu.buffers.readF32(wts), gpu.buffers.readF32(scores), gpu.buffers.readF32(outs.decode), gpu.buffers.readF32(outs.grouped), gpu.buffers.readF32(outs.batched)]);
      });
      for (let t = 0; t < T; t++) {
        const got = Array.from(gi.subarray(t * K, (t + 1) * K));
        expect(sameSet(got, L.indices[t]), `layer ${L.layer} position ${t}: ${got} vs ${L.indices[t]}`).toBe(true);
      }
      expectClose(gwt, L.weights.flat(), { atol: 1e-5, rtol: 1e-5 }, `layer ${L.layer} router weights`);
      expectClose(gs, L.routerScores, { atol: 1e-5, rtol: 1e-5 }, `layer ${L.layer} router scores`);
      expectClose(od, L.ffnOut, { atol: 1e-4, rtol: 0 }, `layer ${L.layer} ffn_out (decode path)`);
      expectClose(og, L.ffnOut, { atol: 1e-4, rtol: 0 }, `layer ${L.layer} ffn_out (grouped path)`);
      expectClose(ob, L.ffnOut, { atol: 1e-4, rtol: 0 }, `layer ${L.layer} ffn_out (batched path)`);

      // Token by token, as decoding runs it: GEMV gate (T = 1) + decode experts, rows bound at offsets
      // (D = 64 f32 = 256 bytes per row; ids/weights get a 256-byte slot per token for alignment).
      // Half the positions keep the test short on a software GPU (4 dispatches per token).
      const decodeT = T / 2;
      const slot = 64, perTok = poisoned(gpu, 'out.per-token', T * D);
      const idsTok = gpu.buffers.create('ids.per-token', T * slot * 4), wTok = gpu.buffers.create('w.per-token', T * slot * 4);
      const row = (b: GPUBuffer, t: number, bytes: number) => ({ buffer: b, offset: t * 256, size: bytes });
      const [pt, pi] = await gpu.checked(async () => {
        const rec = gpu.recorder('moe per token');
        shared.record(rec);
        for (let t = 0; t < decodeT; t++) {
          moeGate(gpu, rec, { x: row(xb, t, D * 4), T: 1, D, gateW: gw, bias, routing, ids: row(idsTok, t, K * 4), weights: row(wTok, t, K * 4) });
          moeExperts(gpu, rec, { x: row(xb, t, D * 4), T: 1, experts, ids: row(idsTok, t, K * 4), weights: row(wTok, t, K * 4), K, shared: row(shared.out, t, D * 4), out: row(perTok, t, D * 4), mode: 'auto' });
        }
        rec.submit();
        gpu.temps.releaseAll();
        return Promise.all([gpu.buffers.readF32(perTok), gpu.buffers.readU32(idsTok)]);
      });
      for (let t = 0; t < decodeT; t++) expect(sameSet(pi.subarray(t * slot, t * slot + K), L.indices[t]), `per-token layer ${L.layer} position ${t}`).toBe(true);
      expectClose(pt.subarray(0, decodeT * D), L.ffnOut.subarray(0, decodeT * D), { atol: 1e-4, rtol: 0 }, `layer ${L.layer} ffn_out (per-token decode)`);
      expectClose(pt.subarray(0, decodeT * D), og.subarray(0, decodeT * D), MLP_TOL, `layer ${L.layer} per-token decode vs grouped prefill`);
      free(perTok, idsTok, wTok);
      destroyExperts(gpu, experts);
      shared.free();
      free(xb, gw, bias, ids, wts, scores, outs.decode, outs.grouped, outs.batched);
    }
  });
});

// ------------------------------------------------------------------------------------ experts

function skewedIds(T: number, K: number, E: number, seed: number): number[][] {
  // distinct experts per token, drawn with a skew so some experts get many rows and some none
  const rnd = mulberry32(seed);
  return Array.from({ length: T }, () => {
    const row: number[] = [];
    while (row.length < K) {
      const e = Math.floor(rnd() * rnd() * E);
      if (!row.includes(e)) row.push(e);
    }
    return row;
  });
}

describe('moeExperts: grouped (prefill) == batched == per-token decode == CPU reference', () => {
  // [T, K, E, D, I]: ragged D/I (scalar loads), vec4 shapes, segments crossing tile boundaries (T·K > 32·E)
  const cases: [number, number, number, number, number][] = [
    [1, 1, 1, 4, 4], [1, 2, 8, 64, 32], [3, 3, 5, 17, 9], [7, 2, 4, 36, 20], [33, 4, 6, 33, 31], [20, 6, 9, 40, 24], [70, 2, 3, 8, 12],
  ];
  it.each(cases)('T=%i K=%i E=%i D=%i I=%i', async (T, K, E, D, I) => {
    const seed = T * 1000 + E * 10 + D;
    const experts = Array.from({ length: E }, (_, e) => ({
      gate: randomUniform(I * D, seed + 3 * e, -0.5, 0.5), up: randomUniform(I * D, seed + 3 * e + 1, -0.5, 0.5), down: randomUniform(D * I, seed + 3 * e + 2, -0.5, 0.5),
    }));
    const x = randomUniform(T * D, seed + 999, -1, 1);
    const idsArr = skewedIds(T, K, E, seed);
    const wArr = idsArr.map((row, t) => row.map((_, j) => 0.25 + ((t * 7 + j * 3) % 10) / 10));
    const sharedArr = randomUniform(T * D, seed + 5);
    const ref = moeExpertsRef(x, T, D, I, experts, idsArr, wArr, sharedArr);
    const refNoShared = moeExpertsRef(x, T, D, I, experts, idsArr, wArr, null);
    const w = uploadExperts(gpu, 'rand', experts, D, I);
    const bx = gpu.buffers.upload('x', x), bids = gpu.buffers.upload('ids', Uint32Array.from(idsArr.flat()));
    const bw = gpu.buffers.upload('w', Float32Array.from(wArr.flat())), bs = gpu.buffers.upload('shared', sharedArr);
    const outs = [0, 1, 2, 3, 4, 5].map((i) => poisoned(gpu, `out${i}`, T * D));
    const res = await gpu.checked(async () => {
      const rec = gpu.recorder('experts');
      moeExperts(gpu, rec, { x: bx, T, experts: w, ids: bids, weights: bw, K, shared: bs, out: outs[0], mode: 'decode' });
      moeExperts(gpu, rec, { x: bx, T, experts: w, ids: bids, weights: bw, K, shared: bs, out: outs[1], mode: 'grouped' });
      moeExperts(gpu, rec, { x: bx, T, experts: w, ids: bids, weights: bw, K, shared: null, out: outs[2], mode: 'decode' });
      moeExperts(gpu, rec, { x: bx, T, experts: w, ids: bids, weights: bw, K, shared: null, out: outs[3], mode: 'grouped' });
      moeExperts(gpu, rec, { x: bx, T, experts: w, ids: bids, weights: bw, K, shared: bs, out: outs[4], mode: 'batched' });
      moeExperts(gpu, rec, { x: bx, T, experts: w, ids: bids, weights: bw, K, shared: null, out: outs[5], mode: 'batched' });
      rec.submit();
      gpu.temps.releaseAll();
      return Promise.all(outs.map((o) => gpu.buffers.readF32(o)));
    });
    expectClose(res[0], ref, MLP_TOL, 'decode');
    expectClose(res[1], ref, MLP_TOL, 'grouped');
    expectClose(res[1], res[0], MLP_TOL, 'grouped vs decode');
    expectClose(res[2], refNoShared, MLP_TOL, 'decode, no shared');
    expectClose(res[3], refNoShared, MLP_TOL, 'grouped, no shared');
    expectClose(res[4], ref, MLP_TOL, 'batched');
    expectClose(res[4], res[0], MLP_TOL, 'batched vs decode');
    expectClose(res[5], refNoShared, MLP_TOL, 'batched, no shared');
    destroyExperts(gpu, w);
    free(bx, bids, bw, bs, ...outs);
  });

  it('decode and batched without subgroups (workgroup-memory reduction) equal the reference', async () => {
    const plain = await testGpu({ disableFeatures: ['subgroups'] });
    expect(plain.caps.subgroups).toBe(false);
    // [T, K, E, D, I]: vec4 shapes ragged in the 4-row groups, and scalar loads (D, I odd)
    for (const [T, K, E, D, I] of [[2, 3, 5, 36, 22], [1, 2, 4, 17, 9], [9, 2, 3, 20, 13]]) {
      const seed = 77 + D;
      const experts = Array.from({ length: E }, (_, e) => ({
        gate: randomUniform(I * D, seed + 3 * e, -0.5, 0.5), up: randomUniform(I * D, seed + 3 * e + 1, -0.5, 0.5), down: randomUniform(D * I, seed + 3 * e + 2, -0.5, 0.5),
      }));
      const x = randomUniform(T * D, seed + 9, -1, 1);
      const idsArr = skewedIds(T, K, E, seed);
      const wArr = idsArr.map((row, t) => row.map((_, j) => 0.5 + t * 0.1 + j * 0.2));
      const sharedArr = randomUniform(T * D, seed + 5);
      const w = uploadExperts(plain, 'plain', experts, D, I);
      const bx = plain.buffers.upload('x', x), bids = plain.buffers.upload('ids', Uint32Array.from(idsArr.flat()));
      const bw = plain.buffers.upload('w', Float32Array.from(wArr.flat())), bs = plain.buffers.upload('shared', sharedArr);
      const out = poisoned(plain, 'out', T * D), outBatched = poisoned(plain, 'out.batched', T * D);
      const got = await plain.checked(async () => {
        const rec = plain.recorder('experts');
        moeExperts(plain, rec, { x: bx, T, experts: w, ids: bids, weights: bw, K, shared: bs, out, mode: 'decode' });
        moeExperts(plain, rec, { x: bx, T, experts: w, ids: bids, weights: bw, K, shared: bs, out: outBatched, mode: 'batched' });
        rec.submit();
        plain.temps.releaseAll();
        return Promise.all([plain.buffers.readF32(out), plain.buffers.readF32(outBatched)]);
      });
      const ref = moeExpertsRef(x, T, D, I, experts, idsArr, wArr, sharedArr);
      expectClose(got[0], ref, MLP_TOL, `decode (no subgroups) D=${D} I=${I}`);
      expectClose(got[1], ref, MLP_TOL, `batched (no subgroups) D=${D} I=${I}`);
    }
    plain.destroy();
  });

  it.each([['f16', 32], ['bf16', 32], ['q8', 32], ['q4', 32], ['q8', 128], ['q4', 128]] as const)('%s (group %i) expert storage: decode (subgroups and workgroup memory), batched and grouped equal the reference on the stored weights', async (format, gs) => {
    const plain = await testGpu({ disableFeatures: ['subgroups'] });
    // The reference runs on exactly what is stored: f16-rounded, or quantised and dequantised per row.
    const round = (a: Float32Array, rows: number, cols: number) => (format === 'f16' ? f16ArrayToF32(f32ArrayToF16(a)) : format === 'bf16' ? bf16ArrayToF32(f32ArrayToBf16(a)) : dequantizeRef(packWeight(a, rows, cols, format, { groupSize: gs, scaleDtype: 'f16' })));
    // [T, K, E, D, I]: one row, rows ragged in the 4-row groups, segments crossing 32-row tiles;
    // D, I not multiples of the group (ragged last group) nor of the 16/32-value row padding
    for (const [T, K, E, D, I] of [[1, 2, 8, 64, 32], [3, 3, 5, 36, 20], [40, 3, 4, 44, 12], [2, 2, 3, 136, 164]]) {
      const seed = 5 + T * 31 + D;
      const experts = Array.from({ length: E }, (_, e) => ({
        gate: randomUniform(I * D, seed + 3 * e, -0.5, 0.5), up: randomUniform(I * D, seed + 3 * e + 1, -0.5, 0.5), down: randomUniform(D * I, seed + 3 * e + 2, -0.5, 0.5),
      }));
      const rounded = experts.map((x) => ({ gate: round(x.gate, I, D), up: round(x.up, I, D), down: round(x.down, D, I) }));
      const x = randomUniform(T * D, seed + 9, -1, 1);
      const idsArr = skewedIds(T, K, E, seed);
      const wArr = idsArr.map((row, t) => row.map((_, j) => 0.5 + t * 0.01 + j * 0.2));
      const sharedArr = randomUniform(T * D, seed + 5);
      const ref = moeExpertsRef(x, T, D, I, rounded, idsArr, wArr, sharedArr);
      for (const [g, modes] of [[gpu, ['decode', 'grouped', 'batched']], [plain, ['decode', 'batched']]] as const) {
        const w = uploadExperts(g, format, experts, D, I, format, gs);
        expect(w.format).toBe(format);
        if (format === 'f16' || format === 'bf16') expect(w.bytes).toBe(E * 3 * I * D * 2);
        else expect(w.bytes).toBeLessThan(E * 3 * I * D * (format === 'q8' ? 1.6 : 1.1)); // vs 4 bytes per f32 weight
        const bx = g.buffers.upload('x', x), bids = g.buffers.upload('ids', Uint32Array.from(idsArr.flat()));
        const bw = g.buffers.upload('w', Float32Array.from(wArr.flat())), bs = g.buffers.upload('shared', sharedArr);
        // decode and batched walk quantised rows by vec4s or by whole 4-word units (CPU adapters' default): both
        for (const [mode, unitWalk] of modes.flatMap((m) => (m !== 'grouped' ? [[m, false], [m, true]] : [[m, undefined]]) as ['decode' | 'grouped' | 'batched', boolean | undefined][])) {
          const out = poisoned(g, 'out', T * D);
          const got = await g.checked(async () => {
            const rec = g.recorder(`experts ${format}`);
            moeExperts(g, rec, { x: bx, T, experts: w, ids: bids, weights: bw, K, shared: bs, out, mode, unitWalk });
            rec.submit();
            g.temps.releaseAll();
            return g.buffers.readF32(out);
          });
          expectClose(got, ref, MLP_TOL, `${format} ${mode}${unitWalk ? ' (unit walk)' : ''}${g === plain ? ' (no subgroups)' : ''} T=${T} D=${D} I=${I}`);
          g.buffers.destroy(out);
        }
        destroyExperts(g, w);
        for (const b of [bx, bids, bw, bs]) g.buffers.destroy(b);
      }
    }
    expect(() => uploadExperts(gpu, 'odd', [{ gate: new Float32Array(9 * 17), up: new Float32Array(9 * 17), down: new Float32Array(9 * 17) }], 17, 9, format)).toThrowError(ShapeError);
    plain.destroy();
  });

  it('a stack past maxStorageBufferBindingSize is a LimitExceededError naming the limit', async () => {
    // 128 MiB is the lowest binding size a device can have; 3 experts of 2×4096×4096 f32 need 384 MiB.
    // The limit is checked before the expert arrays are read, so they can stay tiny here.
    const small = await testGpu({ limitOverrides: { maxStorageBufferBindingSize: 128 << 20 } });
    expect(small.caps.maxStorageBufferBindingSize).toBe(128 << 20);
    const one = { gate: new Float32Array(4), up: new Float32Array(4), down: new Float32Array(4) };
    expect(() => uploadExperts(small, 'big', [one, one, one], 4096, 4096)).toThrowError(LimitExceededError);
    expect(() => uploadExperts(small, 'big', [one, one, one], 4096, 4096)).toThrowError(/maxStorageBufferBindingSize/);
    expect(small.buffers.count).toBe(0); // nothing allocated
    small.destroy();
  });
});

describe('moeExpertsMode: the auto path choice', () => {
  it('CPU fallback adapters batch from one entry per expert (T > 1); GPUs keep decode up to MOE_DECODE_MAX_TOKENS, then grouped', () => {
    const fallback = { adapter: { isFallbackAdapter: true } } as Gpu, hardware = { adapter: { isFallbackAdapter: false } } as Gpu;
    // V2-Lite: E = 64, K = 6 (moeDecodeMaxTokens = 64 on a fallback adapter)
    expect(moeExpertsMode(fallback, 1, 6, 64)).toBe('decode');
    expect(moeExpertsMode(fallback, 10, 6, 64)).toBe('decode');
    expect(moeExpertsMode(fallback, 11, 6, 64)).toBe('batched');
    expect(moeExpertsMode(fallback, 64, 6, 64)).toBe('batched');
    expect(moeExpertsMode(fallback, 65, 6, 64)).toBe('grouped');
    expect(moeExpertsMode(hardware, 1, 6, 64)).toBe('decode');
    expect(moeExpertsMode(hardware, MOE_DECODE_MAX_TOKENS, 6, 64)).toBe('decode');
    expect(moeExpertsMode(hardware, MOE_DECODE_MAX_TOKENS + 1, 6, 64)).toBe('grouped');
    expect(moeExpertsMode(hardware, 19, 6, 8)).toBe('grouped');
  });
});

describe('moeSort: the token permutation', () => {
  // N crosses the 256-entry chunk; E = 300 gives invocations more than one expert in the scan
  it.each([[1, 1, 1], [5, 3, 8], [300, 6, 64], [129, 8, 256], [40, 5, 300], [600, 2, 7]])('T=%i K=%i E=%i round trips and equals the stable reference', async (T, K, E) => {
    const ids = skewedIds(T, K, E, T + E).flat();
    const N = ids.length;
    // the grouped GEMMs' 32-row tiles and the batched kernels' 4-row tiles
    for (const tileRows of [MOE_TILE_ROWS, MOE_BATCH_ROWS]) {
      const ref = moePermutationRef(ids, E, tileRows);
      const bids = gpu.buffers.upload('ids', Uint32Array.from(ids));
      const perm = gpu.buffers.create('perm', N * 4), inv = gpu.buffers.create('inv', N * 4), seg = gpu.buffers.create('seg', 2 * (E + 1) * 4);
      for (const b of [perm, inv, seg]) gpu.buffers.fill(b, 0xffffffff, false);
      const [p, q, s] = await gpu.checked(async () => {
        const rec = gpu.recorder('sort');
        moeSort(gpu, rec, { ids: bids, N, E, perm, inv, seg, tileRows });
        rec.submit();
        return Promise.all([gpu.buffers.readU32(perm), gpu.buffers.readU32(inv), gpu.buffers.readU32(seg)]);
      });
      for (let i = 0; i < N; i++) expect(p[q[i]]).toBe(i);
      expect(Array.from(p)).toEqual(Array.from(ref.perm));
      expect(Array.from(q)).toEqual(Array.from(ref.inv));
      expect(Array.from(s.subarray(0, E + 1))).toEqual(Array.from(ref.offsets));
      expect(Array.from(s.subarray(E + 1)), `tile starts, ${tileRows}-row tiles`).toEqual(Array.from(ref.tileStart));
      expect(ref.tileStart[E]).toBeLessThanOrEqual(maxGroupedTiles(N, E, tileRows));
      free(bids, perm, inv, seg);
    }
  });
});
