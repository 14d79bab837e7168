import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform } from '../../src/util/random';
import { mlaAttention, type MlaDims } from '../../src/kernels/mla';
import { mlaAttentionRef } from '../../src/kernels/mla.ref';
import { LatentKvCache } from '../../src/model/kvcache';
import type { KvFormat } from '../../src/kernels/attention';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/util/half';

// Tolerance (f32): the absorbed path reassociates W_UK into the query (nope-long sums, then a
// kvLora+rope-long dot) and W_UV after the softmax average; the naive path runs a K=kvLora matmul
// first. Both differ from the float64 reference by ~sqrt(kvLora)·ε relative on O(1) values; with
// weights in [-0.2, 0.2] and latents in [-1, 1] outputs are O(1), so 1e-4 abs + 1e-4 rel has margin.
const TOL = { atol: 1e-4, rtol: 1e-4 };
// An f16 cache: the reference takes the latent rows the cache holds (read back, unpacked exactly), so
// only the f32 arithmetic differs: the same TOL. The cached values themselves are checked against the
// sources within one f16 rounding (pack2x16float may round either way: rtol 2^-10, atol 2^-14 for
// subnormals).
const F16_STEP = { atol: 2 ** -14, rtol: 2 ** -10 };

/** rows [T, width] as f16 rows `stride` elements apart, packed in u32 words (low half first). */
function packRows(x: Float32Array, T: number, width: number, stride: number): Uint32Array {
  const h = new Uint16Array(Math.ceil((T * stride) / 2) * 2);
  for (let t = 0; t < T; t++) h.set(f32ArrayToF16(x.subarray(t * width, (t + 1) * width)), t * stride);
  return new Uint32Array(h.buffer);
}
/** The inverse: [T, width] f32 from packed f16 rows. */
function unpackRows(w: Uint32Array, T: number, width: number, stride: number): Float32Array {
  const all = f16ArrayToF32(new Uint16Array(w.buffer, w.byteOffset, T * stride));
  const out = new Float32Array(T * width);
  for (let t = 0; t < T; t++) out.set(all.subarray(t * stride, t * stride + width), t * width);
  return out;
}

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterEach(() => gpu.temps.releaseAll());

const FIXTURE: MlaDims = { heads: 4, qkNope: 16, qkRope: 8, vHead: 16, kvLora: 32 };
const LITE_ISH: MlaDims = { heads: 3, qkNope: 128, qkRope: 64, vHead: 128, kvLora: 512 }; // V2-Lite head dims, 3 heads

/** Random inputs for N tokens: q [N, H·(nope+rope)], kvA [N, kvLora+rope] (latent | pe), kvB. */
function inputs(d: MlaDims, N: number, seed: number) {
  const q = randomUniform(N * d.heads * (d.qkNope + d.qkRope), seed);
  const kvA = randomUniform(N * (d.kvLora + d.qkRope), seed + 1);
  const kvB = randomUniform(d.heads * (d.qkNope + d.vHead) * d.kvLora, seed + 2, -0.2, 0.2);
  const latent = new Float32Array(N * d.kvLora), kPe = new Float32Array(N * d.qkRope);
  for (let t = 0; t < N; t++) {
    latent.set(kvA.subarray(t * (d.kvLora + d.qkRope), t * (d.kvLora + d.qkRope) + d.kvLora), t * d.kvLora);
    kPe.set(kvA.subarray(t * (d.kvLora + d.qkRope) + d.kvLora, (t + 1) * (d.kvLora + d.qkRope)), t * d.qkRope);
  }
  return { q, kvA, kvB, latent, kPe };
}

const scaleOf = (d: MlaDims) => (d.qkNope + d.qkRope) ** -0.5 * 1.37 ** 2; // a YaRN-like mscale² factor

/** One mlaAttention call on `gpu` against the reference; the cache left behind is checked too. */
async function runCase(gpu: Gpu, d: MlaDims, S: number, past: number, mode: 'absorb' | 'naive', format: KvFormat = 'f32') {
    const T = past + S;
    const { q, kvA, kvB } = inputs(d, T, S * 31 + past);
    let { latent, kPe } = inputs(d, T, S * 31 + past);
    const cache = new LatentKvCache(gpu, { layers: 2, kvLoraRank: d.kvLora, ropeDim: d.qkRope, capacity: T + 3, label: 'test.latent', format });
    const row = d.kvLora + d.qkRope, stride = cache.rowFloats;
    // Rows [0, past) as a previous forward would have left them.
    if (past) gpu.buffers.write(cache.layer(1).kv, format === 'f16' ? packRows(kvA, past, row, stride) : kvA.subarray(0, past * row));
    cache.commit(past);
    const qNew = q.subarray(past * d.heads * (d.qkNope + d.qkRope));
    const bq = gpu.buffers.upload('q', qNew), bkvA = gpu.buffers.upload('kvA', kvA.subarray(past * row)), bkvB = gpu.buffers.upload('kvB', kvB);
    const n = S * d.heads * d.vHead;
    const bo = poisoned(gpu, 'out', n);
    const scale = scaleOf(d);
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('mla');
      mlaAttention(gpu, rec, { dims: d, q: bq, kvA: bkvA, kvB: bkvB, cache, layer: 1, past, S, out: bo, scale, mode });
      rec.submit();
      return gpu.buffers.readF32(bo, 0, n);
    });
    cache.commit(S);
    if (format === 'f16') {
      // The cache holds [latent | pe] of every token rounded to f16; the reference attends over those.
      const cached = unpackRows(await gpu.buffers.readU32(cache.layer(1).kv, 0, (T * stride) / 2), T, row, stride);
      expectClose(cached, kvA.subarray(0, T * row), F16_STEP, 'f16 cache rows vs their sources');
      latent = new Float32Array(T * d.kvLora); kPe = new Float32Array(T * d.qkRope);
      for (let t = 0; t < T; t++) {
        latent.set(cached.subarray(t * row, t * row + d.kvLora), t * d.kvLora);
        kPe.set(cached.subarray(t * row + d.kvLora, (t + 1) * row), t * d.qkRope);
      }
    }
    const ref = mlaAttentionRef({ dims: d, q: qNew, latent, kPe, kvB, past, S, scale, mode: 'naive' });
    expectClose(out, ref, TOL, `${mode} ${JSON.stringify(d)} S=${S} past=${past} kv ${format}`);
    // The cache left behind is the latent cache: rows [0, T) = [latent | pe] of every token.
    if (format === 'f32') {
      const cached = await gpu.buffers.readF32(cache.layer(1).kv, 0, T * row);
      expect(Array.from(cached)).toEqual(Array.from(kvA.subarray(0, T * row)));
    }
    cache.destroy();
    [bq, bkvA, bkvB, bo].forEach((b) => gpu.buffers.destroy(b));
}

describe('mlaAttention against the CPU reference (expanded MLA)', () => {
  const cases: [string, MlaDims, number, number, 'absorb' | 'naive'][] = [
    ['fixture dims, prefill S=7 past=0, absorbed', FIXTURE, 7, 0, 'absorb'],
    ['fixture dims, prefill S=7 past=0, naive', FIXTURE, 7, 0, 'naive'],
    ['fixture dims, S=64 past=5, absorbed', FIXTURE, 64, 5, 'absorb'],
    ['fixture dims, S=129 past=0, naive', FIXTURE, 129, 0, 'naive'],
    ['fixture dims, decode S=1 past=40, absorbed', FIXTURE, 1, 40, 'absorb'],
    ['V2-Lite head dims, decode S=1 past=50, absorbed', LITE_ISH, 1, 50, 'absorb'],
    ['V2-Lite head dims, S=9 past=3, naive', LITE_ISH, 9, 3, 'naive'],
    ['16 heads, S=3 past=20, absorbed', { heads: 16, qkNope: 8, qkRope: 4, vHead: 12, kvLora: 20 }, 3, 20, 'absorb'],
    ['V2-Lite-like latent (16 heads, 512 + 64), verify step S=8 past=37, absorbed', { heads: 16, qkNope: 16, qkRope: 64, vHead: 16, kvLora: 512 }, 8, 37, 'absorb'],
    ['20 heads, S=6 past=70, absorbed', { heads: 20, qkNope: 8, qkRope: 8, vHead: 8, kvLora: 40 }, 6, 70, 'absorb'],
  ];
  it.each(cases)('%s', async (_name, d, S, past, mode) => runCase(gpu, d, S, past, mode));
});

describe('mlaAttention with an f16 latent cache against the reference on the cached (rounded) rows', () => {
  const ODD_ROW: MlaDims = { heads: 2, qkNope: 8, qkRope: 4, vHead: 8, kvLora: 21 }; // rows of 25: stride 26
  const cases: [string, MlaDims, number, number, 'absorb' | 'naive'][] = [
    ['fixture dims, prefill S=7 past=0, absorbed', FIXTURE, 7, 0, 'absorb'],
    ['fixture dims, S=129 past=0, naive (cache unpacked for the kv_b matmul)', FIXTURE, 129, 0, 'naive'],
    ['fixture dims, decode S=1 past=40, absorbed', FIXTURE, 1, 40, 'absorb'],
    ['V2-Lite head dims, decode S=1 past=50, absorbed', LITE_ISH, 1, 50, 'absorb'],
    ['V2-Lite head dims, S=9 past=3, naive', LITE_ISH, 9, 3, 'naive'],
    ['odd row (21 + 4), S=5 past=6, absorbed', ODD_ROW, 5, 6, 'absorb'],
    ['odd row (21 + 4), S=11 past=2, naive', ODD_ROW, 11, 2, 'naive'],
  ];
  it.each(cases)('%s', async (_name, d, S, past, mode) => runCase(gpu, d, S, past, mode, 'f16'));

  it('decode (W_UV GEMV) on a device without subgroups: workgroup-memory reduction', async () => {
    const plain = await testGpu({ disableFeatures: ['subgroups'] });
    expect(plain.caps.subgroups).toBe(false);
    await runCase(plain, FIXTURE, 1, 40, 'absorb');
    await runCase(plain, { heads: 3, qkNope: 8, qkRope: 4, vHead: 10, kvLora: 20 }, 2, 9, 'absorb');
    plain.temps.releaseAll();
    plain.destroy();
  });

  it('absorbed equals expanded on the GPU, with separate strided latent / kPe inputs', async () => {
    const d = FIXTURE, S = 12, past = 0;
    const { q, kvB, latent, kPe } = inputs(d, S, 77);
    // latent inside a wider row at offset 3, kPe with stride 10 at offset 1.
    const latW = new Float32Array(S * (d.kvLora + 5)), peW = new Float32Array(S * 10);
    for (let s = 0; s < S; s++) {
      latW.set(latent.subarray(s * d.kvLora, (s + 1) * d.kvLora), s * (d.kvLora + 5) + 3);
      peW.set(kPe.subarray(s * d.qkRope, (s + 1) * d.qkRope), s * 10 + 1);
    }
    const bq = gpu.buffers.upload('q', q), bl = gpu.buffers.upload('lat', latW), bp = gpu.buffers.upload('pe', peW), bkvB = gpu.buffers.upload('kvB', kvB);
    const outs: Float32Array[] = [];
    for (const mode of ['absorb', 'naive'] as const) {
      const cache = new LatentKvCache(gpu, { layers: 1, kvLoraRank: d.kvLora, ropeDim: d.qkRope, capacity: S });
      const bo = poisoned(gpu, 'out', S * d.heads * d.vHead);
      outs.push(await gpu.checked(async () => {
        const rec = gpu.recorder('mla');
        mlaAttention(gpu, rec, {
          dims: d, q: bq, latent: bl, latentStride: d.kvLora + 5, latentOffset: 3, kPe: bp, kPeStride: 10, kPeOffset: 1,
          kvB: bkvB, cache, layer: 0, past, S, out: bo, scale: 0.2, mode,
        });
        rec.submit();
        return gpu.buffers.readF32(bo);
      }));
      gpu.temps.releaseAll();
      cache.destroy();
      gpu.buffers.destroy(bo);
    }
    expectClose(outs[0], outs[1], TOL, 'absorb vs naive');
    expectClose(outs[0], mlaAttentionRef({ dims: d, q, latent, kPe, kvB, past, S, scale: 0.2, mode: 'absorb' }), TOL, 'absorb vs absorbed ref');
    [bq, bl, bp, bkvB].forEach((b) => gpu.buffers.destroy(b));
  });
});

describe('decode after prefill equals a full prefill', () => {
  it('naive prefill of 20 tokens, then 4 absorbed decode steps with past read from a GPU buffer, cache growing', async () => {
    const d = FIXTURE, P = 20, steps = 4, N = P + steps, row = d.kvLora + d.qkRope, qw = d.heads * (d.qkNope + d.qkRope);
    const { q, kvA, kvB, latent, kPe } = inputs(d, N, 5);
    const scale = scaleOf(d);
    const cache = new LatentKvCache(gpu, { layers: 3, kvLoraRank: d.kvLora, ropeDim: d.qkRope, capacity: 16, maxCapacity: 64 });
    const bq = gpu.buffers.upload('q', q), bkvA = gpu.buffers.upload('kvA', kvA), bkvB = gpu.buffers.upload('kvB', kvB);
    const bo = poisoned(gpu, 'out', N * d.heads * d.vHead);
    const pastBuf = gpu.buffers.create('past', 4);
    await gpu.checked(async () => {
      cache.ensureCapacity(P);
      const rec = gpu.recorder('prefill');
      mlaAttention(gpu, rec, { dims: d, q: bq, kvA: bkvA, kvB: bkvB, cache, layer: 2, past: 0, S: P, out: bo, scale, mode: 'naive' });
      rec.submit();
      cache.commit(P);
      gpu.temps.releaseAll();
      for (let i = 0; i < steps; i++) {
        const p = cache.length;
        cache.ensureCapacity(p + 1);
        gpu.buffers.write(pastBuf, new Uint32Array([p]));
        const r = gpu.recorder('decode');
        // Only element offsets change per step; `past` in the uniforms stays 0 (it is read from pastBuf).
        mlaAttention(gpu, r, {
          dims: d, q: bq, qOffset: p * qw, kvA: bkvA, kvAOffset: p * row, kvB: bkvB, cache, layer: 2, past: 0, S: 1,
          out: bo, outOffset: p * d.heads * d.vHead, scale, pastFromBuffer: pastBuf,
        });
        r.submit();
        cache.commit(1);
        gpu.temps.releaseAll();
      }
    });
    expect(cache.capacity).toBe(32);
    const out = await gpu.buffers.readF32(bo);
    expectClose(out, mlaAttentionRef({ dims: d, q, latent, kPe, kvB, past: 0, S: N, scale }), TOL, 'decode after prefill');
    cache.destroy();
    [bq, bkvA, bkvB, bo, pastBuf].forEach((b) => gpu.buffers.destroy(b));
  });
});

describe('LatentKvCache lifecycle', () => {
  it('grows (keeping rows), truncates, resets, accounts bytes, refuses past maxCapacity', async () => {
    const cache = new LatentKvCache(gpu, { layers: 2, kvLoraRank: 6, ropeDim: 2, capacity: 3, maxCapacity: 10, label: 'lc' });
    expect(cache.bytesPerTokenPerLayer()).toBe(8 * 4);
    expect(cache.bytesAllocated()).toBe(2 * 3 * 8 * 4);
    const rows = randomUniform(3 * 8, 1);
    gpu.buffers.write(cache.layer(0).kv, rows);
    cache.commit(3);
    expect(cache.length).toBe(3);
    cache.ensureCapacity(4);
    expect(cache.capacity).toBe(6);
    expect(cache.bytesAllocated()).toBe(2 * 6 * 8 * 4);
    expect(Array.from(await gpu.buffers.readF32(cache.layer(0).kv, 0, 24))).toEqual(Array.from(rows));
    cache.ensureCapacity(9);
    expect(cache.capacity).toBe(10); // doubling capped at maxCapacity
    expect(Array.from(await gpu.buffers.readF32(cache.layer(0).kv, 0, 24))).toEqual(Array.from(rows));
    expect(() => cache.ensureCapacity(11)).toThrow(expect.objectContaining({ code: 'CONTEXT_LENGTH' }));
    expect(() => cache.commit(8)).toThrow(expect.objectContaining({ code: 'CONTEXT_LENGTH' }));
    cache.truncate(1);
    expect(cache.length).toBe(1);
    expect(() => cache.truncate(2)).toThrow();
    cache.reset();
    expect(cache.length).toBe(0);
    const before = gpu.buffers.bytesAllocated;
    cache.destroy();
    expect(gpu.buffers.bytesAllocated).toBe(before - 2 * 10 * 8 * 4);
  });

  it('truncate + rewrite (chat prefix reuse) attends over the kept prefix and the new tokens only', async () => {
    const d = FIXTURE, row = d.kvLora + d.qkRope;
    const A = inputs(d, 10, 21), B = inputs(d, 4, 22);
    const kvB = A.kvB;
    const cache = new LatentKvCache(gpu, { layers: 1, kvLoraRank: d.kvLora, ropeDim: d.qkRope, capacity: 16 });
    gpu.buffers.write(cache.layer(0).kv, A.kvA);
    cache.commit(10);
    cache.truncate(6); // keep the first 6 tokens, then a different continuation of 4
    const bq = gpu.buffers.upload('q', B.q), bkvA = gpu.buffers.upload('kvA', B.kvA), bkvB = gpu.buffers.upload('kvB', kvB);
    const bo = poisoned(gpu, 'out', 4 * d.heads * d.vHead);
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      mlaAttention(gpu, rec, { dims: d, q: bq, kvA: bkvA, kvB: bkvB, cache, layer: 0, past: cache.length, S: 4, out: bo, scale: 0.25 });
      rec.submit();
      return gpu.buffers.readF32(bo);
    });
    cache.commit(4);
    const latent = new Float32Array([...A.latent.subarray(0, 6 * d.kvLora), ...B.latent]);
    const kPe = new Float32Array([...A.kPe.subarray(0, 6 * d.qkRope), ...B.kPe]);
    expectClose(out, mlaAttentionRef({ dims: d, q: B.q, latent, kPe, kvB, past: 6, S: 4, scale: 0.25 }), TOL, 'prefix reuse');
    expect(row).toBe(40);
    cache.destroy();
    [bq, bkvA, bkvB, bo].forEach((b) => gpu.buffers.destroy(b));
  });
});
