import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu } from '../helpers/gpu';
import { randomNormal, mulberry32 } from '../../src/util/random';
import { sampleToken, type SamplingParams } from '../../src/kernels/sample';
import { sampleRef, sampleDistribution } from '../../src/kernels/sample.ref';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

const P = (o: Partial<SamplingParams>): SamplingParams => ({ temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, seed: 1, ...o });

/** Draws steps [0, n) (or the given seeds at step 0) in one submit; returns the token ids. */
async function draw(logits: Float32Array, params: SamplingParams, n: number, opts: { history?: number[]; seeds?: number[] } = {}): Promise<Uint32Array> {
  const bl = gpu.buffers.upload('logits', logits);
  const bh = opts.history ? gpu.buffers.upload('history', Uint32Array.from(opts.history)) : null;
  const out = gpu.buffers.create('tokens', n * 4);
  gpu.buffers.fill(out, 0xdeadbeef, false);
  const ids = await gpu.checked(async () => {
    const rec = gpu.recorder('sample-test');
    for (let i = 0; i < n; i++) {
      const p = opts.seeds ? { ...params, seed: opts.seeds[i] } : params;
      sampleToken(gpu, rec, { logits: bl, V: logits.length, out, outIndex: i, params: p, step: opts.seeds ? 0 : i, history: bh ? { ids: bh, count: opts.history!.length } : undefined });
    }
    rec.submit();
    return gpu.buffers.readU32(out, 0, n);
  });
  [bl, bh, out].forEach((b) => gpu.buffers.destroy(b));
  return ids;
}

/**
 * Pearson χ² of observed counts against expected probabilities (bins with expected < 5 pooled), and
 * the χ² quantile at p = 1e-7 (Wilson–Hilferty, z = 5.2): a correct sampler fails with probability ~1e-7.
 */
function chiSquare(tokens: ArrayLike<number>, probs: Float64Array) {
  const n = tokens.length;
  const counts = new Float64Array(probs.length);
  for (let i = 0; i < n; i++) counts[tokens[i]]++;
  let chi = 0, df = -1, poolE = 0, poolO = 0;
  for (let i = 0; i < probs.length; i++) {
    const e = probs[i] * n;
    if (e === 0) { expect(counts[i], `token ${i} has probability 0 but was drawn`).toBe(0); continue; }
    if (e < 5) { poolE += e; poolO += counts[i]; continue; }
    chi += (counts[i] - e) ** 2 / e;
    df++;
  }
  if (poolE > 0) { chi += (poolO - poolE) ** 2 / poolE; df++; }
  const z = 5.2;
  const limit = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  return { chi, df, limit };
}

describe('sampleToken', () => {
  const V = 200;
  const logits = randomNormal(V, 42, 2);

  it('greedy: argmax with ties to the lowest index, also for temperature 0 and topK 1', async () => {
    const l = Float32Array.from(logits);
    l[17] = 50; l[123] = 50; l[3] = NaN;
    for (const p of [P({ temperature: 0 }), P({ topK: 1, temperature: 0.7 })]) {
      const ids = await draw(l, p, 2);
      expect([...ids]).toEqual([17, 17]);
      expect(sampleRef(l, p, 0)).toBe(17);
    }
  });

  const configs: [string, SamplingParams, number[] | undefined][] = [
    ['temperature 0.8', P({ temperature: 0.8, seed: 7 }), undefined],
    ['top-k 5', P({ temperature: 1.3, topK: 5, seed: 8 }), undefined],
    ['top-p 0.7', P({ temperature: 1, topP: 0.7, seed: 9 }), undefined],
    ['top-k 40 + top-p 0.9', P({ temperature: 1.5, topK: 40, topP: 0.9, seed: 10 }), undefined],
    ['repetition penalty 1.8', P({ temperature: 1, repetitionPenalty: 1.8, seed: 11 }), [5, 9, 9, 150, 5, 77, 199]],
  ];

  it.each(configs)('%s: the GPU draws exactly the reference token for each (seed, step)', async (_n, p, history) => {
    const ids = await draw(logits, p, 24, { history });
    const ref = Array.from({ length: 24 }, (_, s) => sampleRef(logits, p, s, history));
    expect([...ids]).toEqual(ref);
    expect(new Set(ids).size).toBeGreaterThan(1);
  });

  // The GPU χ² runs are costly on the software GPU (radix rounds are barrier-heavy there), so the
  // filters get fewer draws; test/unit/sample.test.ts checks the reference's distribution with 20k draws.
  const chiCases: [string, SamplingParams, number[] | undefined, number][] = [
    [configs[0][0], configs[0][1], undefined, 800],
    [configs[4][0], configs[4][1], configs[4][2], 600],
    [configs[1][0], configs[1][1], undefined, 250],
    [configs[2][0], configs[2][1], undefined, 300],
  ];
  it.each(chiCases)('%s: frequencies over many steps match the reference distribution (χ²)', async (_n, p, history, n) => {
    const probs = sampleDistribution(logits, p, history);
    const ids = await draw(logits, p, n, { history });
    const { chi, df, limit } = chiSquare(ids, probs);
    expect(df).toBeGreaterThan(1);
    expect(chi, `χ² = ${chi.toFixed(1)} with ${df} dof`).toBeLessThan(limit);
  });

  it('the filters keep what they should (support of the drawn tokens)', async () => {
    const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
    const ids = await draw(logits, P({ topK: 3, temperature: 5 }), 60);
    expect(new Set(ids)).toEqual(new Set(order.slice(0, 3)));
    // Penalised tokens become rarer: the top token, penalised hard, is drawn far less often.
    const top = order[0];
    const plain = await draw(logits, P({ temperature: 1 }), 300);
    const pen = await draw(logits, P({ temperature: 1, repetitionPenalty: 3 }), 300, { history: [top] });
    const count = (a: Uint32Array) => a.filter((t) => t === top).length;
    expect(count(pen)).toBeLessThan(count(plain) / 2);
  });

  it('samples a row of a [T, V] logits buffer at an unaligned offset (with the penalty)', async () => {
    const rows = new Float32Array(3 * V);
    rows.set(randomNormal(V, 1), 0); rows.set(logits, V); rows.set(randomNormal(V, 2), 2 * V);
    const bl = gpu.buffers.upload('rows', rows), bh = gpu.buffers.upload('h', Uint32Array.from([4, 8]));
    const out = gpu.buffers.create('tok', 16 * 4);
    const p = P({ temperature: 1, repetitionPenalty: 1.5, seed: 3 });
    const ids = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      for (let s = 0; s < 16; s++) sampleToken(gpu, rec, { logits: { buffer: bl, offset: V * 4, size: V * 4 }, V, out, outIndex: s, params: p, step: s, history: { ids: bh, count: 2 } });
      rec.submit();
      return gpu.buffers.readU32(out, 0, 16);
    });
    expect([...ids]).toEqual(Array.from({ length: 16 }, (_, s) => sampleRef(logits, p, s, [4, 8])));
    [bl, bh, out].forEach((b) => gpu.buffers.destroy(b));
  });

  it('is reproducible: the same seed and step give the same token; seeds differ', async () => {
    const p = P({ temperature: 1.2, topP: 0.95 });
    const seeds = Array.from({ length: 40 }, (_, i) => 1000 + i);
    const a = await draw(logits, p, 40, { seeds });
    const b = await draw(logits, p, 40, { seeds });
    expect([...a]).toEqual([...b]);
    expect([...a]).toEqual(seeds.map((seed) => sampleRef(logits, { ...p, seed }, 0)));
    expect(new Set(a).size).toBeGreaterThan(3);
  });

  it('a 130k vocabulary (127 chunks): greedy and temperature sampling exactly like the reference, reading back 4 bytes', async () => {
    const V2 = 129_280;
    const big = randomNormal(V2, 5, 3);
    const r = mulberry32(3);
    for (let i = 0; i < 50; i++) big[Math.floor(r() * V2)] = 12 + r(); // a head of likely tokens
    for (const p of [P({ temperature: 0 }), P({ temperature: 1, seed: 5 })]) {
      const ids = await draw(big, p, 1);
      expect([...ids], JSON.stringify(p)).toEqual([sampleRef(big, p, 0)]);
    }
  });

  it('top-k + top-p radix select across 20 chunks matches the reference', async () => {
    const V2 = 20_000;
    const big = randomNormal(V2, 6, 2);
    for (const p of [P({ temperature: 0.9, topK: 50, topP: 0.9, seed: 3 }), P({ temperature: 1.5, topK: 3000, seed: 4 })]) {
      const ids = await draw(big, p, 2);
      expect([...ids], JSON.stringify(p)).toEqual([0, 1].map((s) => sampleRef(big, p, s)));
    }
  });
});
