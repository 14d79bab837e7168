/**
 * Routed experts held as several stacks (no single-binding wall): uploadExpertGroups under a forced
 * small binding limit, group_remap against its CPU reference, and moeExpertGroupsForward against one
 * stack (the same math, only the order of the per-stack partial sums differs) and the CPU reference.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { expectClose, poisoned, testGpu } from '../helpers/gpu';
import { mulberry32, randomNormal } from '../../src/util/random';
import {
  destroyExpertGroups, destroyExperts, expertsPerStack, type MoeExpertGroups, moeExpertGroupsForward, moeExperts, moeGroupRemap, uploadExpertGroups, uploadExperts,
} from '../../src/kernels/moe';
import { groupRemapRef, moeExpertsRef } from '../../src/kernels/moe.ref';
import { LimitExceededError } from '../../src/errors';
import { openCheckpoint } from '../../src/model/checkpoint';
import { directoryModel } from '../../src/loader/node-source';
import { GpuBackend } from '../../src/model/gpu-backend';
import { GpuRunner } from '../../src/model/gpu-runner';
import { buildWeights } from '../../src/model/load';
import { flatTemps, forwardTemps, planMemory } from '../../src/model/memory-plan';

// Tolerances: f32 stacks against float64: the matmul tests' 1e-4 abs + 1e-4 rel (two chained dot
// products of ≤ 100 terms, |values| ≲ 10). Several stacks against one stack, same format: the per-expert
// math is identical, only the sum over the K chosen experts is grouped differently: 1e-5 abs + 1e-5 rel.
const REF_TOL = { atol: 1e-4, rtol: 1e-4 };
const SAME_TOL = { atol: 1e-5, rtol: 1e-5 };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

function experts(E: number, D: number, I: number, seed: number) {
  return Array.from({ length: E }, (_, e) => ({
    gate: randomNormal(I * D, seed + 3 * e, 0.3), up: randomNormal(I * D, seed + 3 * e + 1, 0.3), down: randomNormal(D * I, seed + 3 * e + 2, 0.3),
  }));
}

function routing(T: number, K: number, E: number, seed: number) {
  const r = mulberry32(seed);
  const ids: number[][] = [], weights: number[][] = [];
  for (let t = 0; t < T; t++) {
    const pick = new Set<number>();
    while (pick.size < K) pick.add(Math.floor(r() * E));
    ids.push([...pick]);
    weights.push([...pick].map(() => 0.2 + r()));
  }
  return { ids, weights };
}

describe('routed experts in several stacks', () => {
  it('group_remap keeps the stack’s entries renumbered and zeroes the others', async () => {
    const N = 1000, r = mulberry32(5);
    const ids = Uint32Array.from({ length: N }, () => Math.floor(r() * 37));
    const w = Float32Array.from({ length: N }, () => r());
    for (const [e0, e1] of [[0, 13], [13, 26], [26, 37]]) {
      const bi = gpu.buffers.upload('ids', ids), bw = gpu.buffers.upload('w', w);
      const oi = gpu.buffers.create('oi', N * 4), ow = poisoned(gpu, 'ow', N);
      gpu.buffers.fill(oi, 0xdeadbeef, false);
      const [gi, gw] = await gpu.checked(async () => {
        const rec = gpu.recorder('remap');
        moeGroupRemap(gpu, rec, { ids: bi, weights: bw, N, e0, e1, idsOut: oi, weightsOut: ow });
        rec.submit();
        return Promise.all([gpu.buffers.readU32(oi), gpu.buffers.readF32(ow)]);
      });
      const ref = groupRemapRef(ids, w, e0, e1);
      expect(Array.from(gi)).toEqual(Array.from(ref.ids));
      expect(Array.from(gw)).toEqual(Array.from(ref.weights));
      for (const b of [bi, bw, oi, ow]) gpu.buffers.destroy(b);
    }
  });

  it('stacks sized to the limit; one expert over it is a LimitExceededError', () => {
    // 10 f32 experts of D=16, I=12: gate|up 1536 B, down 768 B per expert; a 4 KiB limit → 2 per stack... evened to 2.
    expect(expertsPerStack('f32', 10, 16, 12, 4096)).toBe(2);
    expect(expertsPerStack('f32', 10, 16, 12, 5000)).toBe(3); // 3 fit → 4 stacks of ≤ 3 (3,3,3,1 → evened to 3)
    expect(expertsPerStack('f32', 10, 16, 12, 1 << 30)).toBe(10);
    expect(expertsPerStack('f32', 10, 16, 12, 1000)).toBe(0);
    expect(() => uploadExpertGroups(gpu, 'tiny', experts(2, 16, 12, 1), 16, 12, 'f32', { maxBindingBytes: 1000 })).toThrow(LimitExceededError);
  });

  for (const [format, D, I, E, K, limit] of [
    ['f32', 36, 20, 11, 3, 3 * 2 * 20 * 36 * 4], // ragged widths, 4 stacks of ≤ 3 experts
    ['f16', 64, 32, 16, 4, 5 * 2 * 32 * 64 * 2],
    ['q4', 64, 48, 12, 2, 4 * 2 * 48 * 32], // q4 rows of 64 = 32 B
  ] as const) {
    it(`${format} D=${D} I=${I} E=${E} K=${K}: several stacks equal one stack (decode and grouped paths) and the CPU reference`, async () => {
      const ws = experts(E, D, I, 100 + D);
      const one = uploadExperts(gpu, 'one', ws, D, I, format);
      const split = uploadExpertGroups(gpu, 'split', ws, D, I, format, { maxBindingBytes: limit });
      expect(split.groups.length).toBeGreaterThan(2);
      expect(split.groups.every((g) => g.w.bytes > 0 && g.w.E <= Math.ceil(E / split.groups.length))).toBe(true);
      expect(split.groups.map((g) => g.e0)).toEqual(split.groups.map((_, i) => i * split.groups[0].w.E));
      for (const [T, mode] of [[1, 'decode'], [3, 'decode'], [37, 'grouped']] as const) {
        const x = randomNormal(T * D, T + 7);
        const { ids, weights } = routing(T, K, E, T * 13 + E);
        const shared = randomNormal(T * D, T + 9, 0.5);
        const bx = gpu.buffers.upload('x', x), bs = gpu.buffers.upload('shared', shared);
        const bi = gpu.buffers.upload('ids', Uint32Array.from(ids.flat())), bw = gpu.buffers.upload('w', Float32Array.from(weights.flat()));
        const o1 = poisoned(gpu, 'o1', T * D), o2 = poisoned(gpu, 'o2', T * D);
        const [a, b] = await gpu.checked(async () => {
          const rec = gpu.recorder('experts');
          const args = { x: bx, T, ids: bi, weights: bw, K, shared: bs, mode };
          moeExperts(gpu, rec, { ...args, experts: one, out: o1 });
          moeExpertGroupsForward(gpu, rec, { ...args, experts: split, out: o2 });
          rec.submit();
          gpu.temps.releaseAll();
          return Promise.all([gpu.buffers.readF32(o1), gpu.buffers.readF32(o2)]);
        });
        expectClose(b, a, SAME_TOL, `${format} T=${T} ${mode}: split vs one stack`);
        if (format === 'f32') expectClose(b, moeExpertsRef(x, T, D, I, ws, ids, weights, shared), REF_TOL, `f32 T=${T} ${mode}: split vs CPU`);
        for (const buf of [bx, bs, bi, bw, o1, o2]) gpu.buffers.destroy(buf);
      }
      destroyExperts(gpu, one);
      destroyExpertGroups(gpu, split);
    });
  }
});

describe('a model whose expert stacks pass the binding limit', () => {
  it('the fixture with 4 stacks per MoE layer: the same logits as one stack (prefill and decode), and the plan of its bytes and temporaries', async () => {
    const dir = new URL('../fixtures/deepseek-v3-tiny/', import.meta.url).pathname;
    const ckpt = await openCheckpoint(directoryModel(dir), { validateTokenizer: false });
    const cfg = ckpt.config;
    const tokens = Array.from({ length: 40 }, (_, i) => (i * 11 + 5) % cfg.vocabSize);
    const run = async (maxExpertBindingBytes?: number) => {
      const be = new GpuBackend(gpu, cfg, { storage: () => 'f32', nativeFp8: false, sparsity: null, maxExpertBindingBytes }, 64);
      const w = await buildWeights(be, cfg, ckpt);
      const runner = new GpuRunner(be, cfg, w, 64);
      const stacks = (w.layers[1].moe!.experts.w as MoeExpertGroups).groups.length;
      const prefill = await runner.logits(tokens, true);
      const decode = await runner.logits([7], true);
      // The temporaries of a generation step, as the plan counts them (forwardTemps with the stacks).
      runner.truncate(0);
      const acquired: number[] = [];
      const acquire = gpu.temps.acquire.bind(gpu.temps);
      gpu.temps.acquire = (bytes: number) => { acquired.push(bytes); return acquire(bytes); };
      try { await runner.step(tokens, { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 1 }, 0, tokens, false); } finally { gpu.temps.acquire = acquire; }
      const stackSizes = (w.layers[1].moe!.experts.w as MoeExpertGroups).groups.map((g) => g.w.E);
      expect(acquired).toEqual(flatTemps(forwardTemps(cfg, tokens.length, 0, { lastOnly: true, isFallbackAdapter: gpu.adapter.isFallbackAdapter, expertStacks: stackSizes })));
      const weightBytes = be.weightBytes;
      runner.destroy();
      return { stacks, prefill, decode, weightBytes };
    };
    const one = await run();
    // 8 experts of 2·32·64 f32 gate|up rows (16 KiB each): a 40 KiB cap holds 2 per stack.
    const split = await run(40 << 10);
    expect([one.stacks, split.stacks]).toEqual([1, 4]);
    expectClose(split.prefill, one.prefill, SAME_TOL, 'prefill logits');
    expectClose(split.decode, one.decode, SAME_TOL, 'decode logits');
    const plan = planMemory(cfg, ckpt.tensors.values(), { weights: 'f32', contextLength: 64, device: { maxStorageBufferBindingSize: 40 << 10 } });
    expect(plan.expertStacks).toEqual([2, 2, 2, 2]);
    expect(plan.weights.bytes).toBe(split.weightBytes);
    await ckpt.close();
  });
});
