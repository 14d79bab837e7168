import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform } from '../../src/util/random';
import { flashAttention, attentionDecode, attentionDecodeInfo, naiveAttention, mhaAttention, flashConfig, flashSharedBytes, rowsConfig, rowsSharedBytes, blocksConfig, blocksSharedBytes, type AttentionArgs } from '../../src/kernels/attention';
import { attentionRef, type AttentionShape } from '../../src/kernels/attention.ref';
import { MhaKvCache } from '../../src/model/kvcache';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/util/half';

// Tolerance (f32): each score is a dQk-long dot product in a different order than the float64
// reference, then exp2 and a running rescale; outputs are convex combinations of V rows in [-1, 1].
// The error is a few ε·sqrt(dQk)·|q||k|·scale on the logits, i.e. ~1e-6 here; 3e-5 abs + 1e-4 rel
// leaves margin for the 576-wide absorbed-MLA dims and 1000-token rows.
const TOL = { atol: 3e-5, rtol: 1e-4 };

// Tolerance with an f16 cache (kv 'f16'): the CPU reference is fed the same f16-rounded K/V the kernel
// unpacks (unpack2x16float is exact), so only the f32 arithmetic differs, as above: the same TOL.

/** f16 K/V as the cache stores them: pairs packed in u32 words (low half first), zero-padded to a whole word. */
function packF16(x: Float32Array): Uint32Array {
  const h = f32ArrayToF16(x);
  const words = new Uint32Array(Math.max(1, Math.ceil(h.length / 2)));
  new Uint16Array(words.buffer).set(h);
  return words;
}
/** The f32 values of packed f16 words (the first n elements). */
const unpackF16 = (w: Uint32Array, n: number) => f16ArrayToF32(new Uint16Array(w.buffer, w.byteOffset, n));
/** x rounded to f16 (what the reference sees with an f16 cache). */
const roundF16 = (x: Float32Array) => f16ArrayToF32(f32ArrayToF16(x));

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterEach(() => gpu.temps.releaseAll());

interface Case extends AttentionShape { name?: string }

type Kernel = typeof flashAttention;

/** Random q/k/v for a case (dense layouts unless the case gives strides), run `kernel`, compare with the CPU reference. */
async function check(kernel: Kernel, c: Case, seed: number, extra: Partial<AttentionArgs> = {}, tol = TOL) {
  const qLen = c.S * (c.qStride ?? c.heads * c.dQk);
  const kLen = c.T * (c.kStride ?? c.kvHeads * c.dQk);
  const vLen = c.T * (c.vStride ?? c.kvHeads * c.dV);
  const q = randomUniform(qLen, seed);
  let k = randomUniform(kLen, seed + 1), v = randomUniform(vLen, seed + 2);
  const f16 = extra.kv === 'f16';
  if (f16) { k = roundF16(k); v = roundF16(v); }
  const bq = gpu.buffers.upload('q', q);
  const bk = gpu.buffers.upload('k', f16 ? packF16(k) : k), bv = gpu.buffers.upload('v', f16 ? packF16(v) : v);
  const n = c.S * c.heads * c.dV;
  const bo = poisoned(gpu, 'out', n);
  const out = await gpu.checked(async () => {
    const rec = gpu.recorder('attention test');
    kernel(gpu, rec, { ...c, q: bq, k: bk, v: bv, out: bo, ...extra });
    rec.submit();
    return gpu.buffers.readF32(bo, 0, n);
  });
  [bq, bk, bv, bo].forEach((b) => gpu.buffers.destroy(b));
  return expectClose(out, attentionRef(q, k, v, c), tol, `${kernel.name} ${JSON.stringify(c)} ${JSON.stringify(extra.splits ?? '')} kv ${extra.kv ?? 'f32'}`);
}

const mk = (S: number, past: number, heads: number, kvHeads: number, dQk: number, dV: number, causal = true, T = past + S): Case =>
  ({ S, T, past, heads, kvHeads, dQk, dV, scale: 1 / Math.sqrt(dQk), causal });

describe('flashAttention (prefill) against the CPU reference', () => {
  // Sequences 1, 7, 64, 129, 1000; heads 1..16; past 0 and > 0; MHA, GQA, MQA; d_qk ≠ d_v.
  const cases: Case[] = [
    mk(1, 0, 1, 1, 8, 8),
    mk(7, 0, 4, 2, 24, 16),
    mk(7, 9, 16, 4, 16, 16),
    mk(64, 0, 3, 3, 16, 24),
    mk(64, 37, 2, 1, 24, 16),
    mk(129, 0, 2, 1, 24, 16),
    mk(129, 3, 1, 1, 5, 3),
    mk(1000, 0, 1, 1, 16, 16),
    mk(17, 0, 2, 2, 192, 128),
    mk(5, 11, 16, 1, 576, 512),
    mk(7, 0, 3, 1, 24, 16, false, 33),
    mk(33, 0, 2, 2, 16, 8, false, 1),
  ];
  it.each(cases.map((c, i) => [`S=${c.S} T=${c.T} past=${c.past} H=${c.heads}/${c.kvHeads} d=${c.dQk}/${c.dV}${c.causal ? '' : ' non-causal'}`, c, i] as const))('%s', async (_n, c, i) => {
    await check(flashAttention, c, 100 + i, { splits: 1 });
  });
  it('the older tiled kernel (`main`, what runs when flash_rows does not fit) equals the reference', async () => {
    await check(flashAttention, mk(129, 3, 4, 2, 24, 16), 150, { kernel: 'tiled' });
    await check(flashAttention, mk(33, 0, 16, 1, 576, 512), 151, { kernel: 'tiled' });
    await check(flashAttention, mk(7, 0, 3, 1, 24, 16, false, 33), 152, { kernel: 'tiled' });
  });
  it('split-K on a prefill (long T, few rows) equals the unsplit result', async () => {
    await check(flashAttention, mk(3, 300, 2, 1, 24, 16), 7, { splits: 5 });
    await check(flashAttention, mk(20, 280, 1, 1, 16, 16), 8, { splits: 'auto' });
  });
  it('reads strided slices: q/k/v as parts of one fused row, out into a wider row', async () => {
    // Fused rows [q (H·dQk) | k (Hkv·dQk) | v (Hkv·dV)] of width W, the layout of a fused QKV projection.
    const S = 9, H = 4, Hk = 2, dQk = 12, dV = 8, W = H * dQk + Hk * dQk + Hk * dV + 3;
    const c: Case = { ...mk(S, 0, H, Hk, dQk, dV), qStride: W, qOffset: 1, kStride: W, kOffset: 1 + H * dQk, vStride: W, vOffset: 1 + (H + Hk) * dQk };
    const x = randomUniform(S * W, 5);
    const bx = gpu.buffers.upload('qkv', x);
    const oStride = H * dV + 5;
    const bo = gpu.buffers.upload('out', new Float32Array(S * oStride).fill(-7));
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      flashAttention(gpu, rec, { ...c, q: bx, k: bx, v: bx, out: bo, oStride, oOffset: 2, splits: 1 });
      rec.submit();
      return gpu.buffers.readF32(bo);
    });
    const ref = attentionRef(x, x, x, c);
    for (let s = 0; s < S; s++) {
      expectClose(out.subarray(s * oStride + 2, s * oStride + 2 + H * dV), ref.subarray(s * H * dV, (s + 1) * H * dV), TOL, 'strided');
      expect(out[s * oStride]).toBe(-7);
      expect(out[s * oStride + 2 + H * dV]).toBe(-7);
    }
    [bx, bo].forEach((b) => gpu.buffers.destroy(b));
  });
  it('tile configurations fit the device workgroup memory', () => {
    for (const [rows, dq, dv] of [[1, 8, 8], [16, 576, 512], [64, 192, 128], [3, 576, 512]]) {
      const cfg = flashConfig(gpu, rows, dq, dv);
      expect(flashSharedBytes(cfg)).toBeLessThanOrEqual(gpu.caps.maxComputeWorkgroupStorageSize);
      expect((cfg.BQ / cfg.TR) * (cfg.BK / cfg.TK)).toBe(64);
      expect((cfg.BQ / cfg.OR) * (cfg.DC / cfg.OC)).toBe(64);
    }
  });
});

describe('attentionDecode (split-K + LSE combine) against the CPU reference', () => {
  const cases: [Case, number | 'auto'][] = [
    [mk(1, 0, 1, 1, 16, 16), 'auto'],
    [mk(1, 1, 4, 2, 64, 64), 3],
    [mk(1, 130, 8, 2, 24, 16), 'auto'],
    [mk(1, 999, 4, 4, 32, 32), 'auto'],
    [mk(1, 999, 4, 4, 32, 32), 1],
    [mk(1, 300, 16, 1, 576, 512), 'auto'],
    [mk(2, 77, 16, 1, 576, 512), 4],
    [mk(4, 64, 2, 2, 192, 128), 7],
  ];
  it.each(cases.map(([c, sp], i) => [`S=${c.S} past=${c.past} H=${c.heads}/${c.kvHeads} d=${c.dQk}/${c.dV} splits=${sp}`, c, sp, i] as const))('%s', async (_n, c, splits, i) => {
    await check(attentionDecode, c, 300 + i, { splits });
  });
  it('the tiled kernel for few rows (what devices without subgroups run) equals the reference', async () => {
    await check(attentionDecode, mk(1, 130, 8, 2, 24, 16), 310, { splits: 'auto', kernel: 'tiled' });
    await check(attentionDecode, mk(1, 1, 4, 2, 64, 64), 311, { splits: 3, kernel: 'tiled' });
  });
  it('few rows, ragged d_v and a split per key (subgroup decode path when the device has subgroups)', async () => {
    await check(attentionDecode, mk(1, 40, 3, 1, 80, 66), 312, { splits: 'auto' });
    await check(attentionDecode, mk(3, 5, 1, 1, 13, 7), 313, { splits: 8 });
  });
  // flash_rows: up to 16 rows (query, head-in-group) per workgroup, keys in blocks of 4..32; cache
  // lengths that are not multiples of the block, 1..8 query rows (verify steps), 1..20 heads per kv head
  // (more than one row tile), ragged head dims (scalar loads) and aligned ones (vec4 views).
  const rowsCases: [Case, number | 'auto'][] = [
    [mk(1, 0, 1, 1, 4, 4), 1],
    [mk(1, 36, 3, 3, 12, 20), 'auto'],
    [mk(1, 1000, 20, 1, 36, 28), 'auto'],
    [mk(1, 522, 16, 1, 576, 512), 1],
    [mk(1, 1027, 16, 1, 576, 512), 3],
    [mk(8, 57, 16, 1, 576, 512), 2],
    [mk(3, 9, 5, 1, 7, 9), 'auto'],
    [mk(6, 101, 12, 4, 128, 128), 5],
    [mk(8, 200, 32, 8, 64, 48), 'auto'],
  ];
  it.each(rowsCases.map(([c, sp], i) => [`flash_rows S=${c.S} past=${c.past} H=${c.heads}/${c.kvHeads} d=${c.dQk}/${c.dV} splits=${sp}`, c, sp, i] as const))('%s', async (_n, c, splits, i) => {
    expect(attentionDecodeInfo(gpu, { ...c, q: null!, k: null!, v: null!, out: null!, splits, kernel: 'rows' }).kernel).toBe('flash_rows');
    await check(attentionDecode, c, 700 + i, { splits, kernel: 'rows' });
  });
  // flash_blocks (the default wherever 8 rows × 8 keys and its Q / O fit the workgroup memory): seeded
  // random shapes (ragged head dims → scalar loads, aligned → vec4 views; sequences and caches that
  // are not multiples of the row tile or the key block; MHA, GQA, MQA; past 0 and > 0; splits) plus
  // fixed corner cases: one row, DeepSeek's non-absorbed MLA prefill dims 192/128, non-causal.
  const rng = (seed: number) => () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const randomBlocksCases = (n: number, seed: number): [Case, number | 'auto'][] => {
    const r = rng(seed);
    const pick = <T,>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)];
    return Array.from({ length: n }, () => {
      const kvHeads = pick([1, 2, 3]), gs = pick([1, 2, 4, 5]);
      const aligned = r() < 0.5;
      const dQk = aligned ? 4 * (1 + Math.floor(r() * 24)) : 1 + Math.floor(r() * 70);
      const dV = aligned ? 4 * (1 + Math.floor(r() * 24)) : 1 + Math.floor(r() * 70);
      const S = pick([1, 2, 3, 5, 9, 17, 40, 77]), past = pick([0, 0, 3, 31, 130]);
      return [mk(S, past, kvHeads * gs, kvHeads, dQk, dV), pick([1, 1, 3, 'auto'] as const)];
    });
  };
  const blocksCases: [Case, number | 'auto'][] = [
    ...randomBlocksCases(12, 2027),
    [mk(1, 0, 1, 1, 4, 4), 1],
    [mk(1, 8191, 32, 8, 128, 128), 'auto'],
    [mk(100, 0, 2, 2, 192, 128), 1],
    [mk(33, 20, 4, 1, 64, 64), 2],
    [mk(9, 0, 3, 1, 24, 16, false, 70), 1],
  ];
  it.each(blocksCases.map(([c, sp], i) => [`flash_blocks S=${c.S} past=${c.past} H=${c.heads}/${c.kvHeads} d=${c.dQk}/${c.dV}${c.causal ? '' : ' non-causal'} splits=${sp}`, c, sp, i] as const))('%s', async (_n, c, splits, i) => {
    expect(attentionDecodeInfo(gpu, { ...c, q: null!, k: null!, v: null!, out: null!, splits }).kernel).toBe('flash_blocks');
    await check(c.S > 4 ? flashAttention : attentionDecode, c, 900 + i, { splits });
  });
  it('flash_blocks with an f16 cache (vec4 and scalar loads)', async () => {
    await check(flashAttention, mk(37, 5, 4, 2, 64, 32), 950, { kv: 'f16', splits: 1 });
    await check(flashAttention, mk(21, 0, 3, 3, 13, 10), 951, { kv: 'f16', splits: 2 });
    await check(attentionDecode, mk(1, 300, 8, 2, 64, 64), 952, { kv: 'f16', splits: 'auto' });
  });
  it('absorbed-MLA rows (V = the first d_v values of the K row) are read once per step, all heads of the row tile', async () => {
    // K and V are one buffer with the same rows, as the latent cache: decode_rows stages each row once.
    const c: Case = { ...mk(1, 700, 16, 1, 576, 512), kStride: 576, vStride: 576 };
    const q = randomUniform(c.heads * c.dQk, 801), kv = randomUniform(c.T * 576, 802);
    const bq = gpu.buffers.upload('q', q), bkv = gpu.buffers.upload('kv', kv), bo = poisoned(gpu, 'out', c.heads * c.dV);
    const args: AttentionArgs = { ...c, q: bq, k: bkv, v: bkv, out: bo, splits: 'auto' };
    const info = attentionDecodeInfo(gpu, args);
    expect(info.kernel).toBe('flash_rows');
    expect(info.cacheReadBytes).toBe(c.T * 576 * 4);
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('mla rows');
      attentionDecode(gpu, rec, args);
      rec.submit();
      return gpu.buffers.readF32(bo);
    });
    expectClose(out, attentionRef(q, kv, kv, c), TOL, 'shared rows');
    [bq, bkv, bo].forEach((b) => gpu.buffers.destroy(b));
  });
  it('reads past from a GPU buffer (recorded decode step independent of the position)', async () => {
    const c = mk(1, 150, 4, 1, 24, 16);
    const pastBuf = gpu.buffers.upload('past', new Uint32Array([c.past]));
    // T and past in the uniforms are deliberately wrong: the kernel must use the buffer.
    await check(attentionDecode, c, 400, { pastFromBuffer: pastBuf, maxT: 512, T: 1, past: 0 });
    await check(attentionDecode, c, 401, { pastFromBuffer: pastBuf, maxT: 512, T: 1, past: 0, kernel: 'rows', splits: 2 });
    gpu.buffers.destroy(pastBuf);
  });
});

describe('naive materialised-softmax kernel', () => {
  it.each([mk(7, 0, 4, 2, 24, 16), mk(65, 20, 2, 1, 16, 16), mk(9, 0, 2, 2, 8, 4, false, 40)].map((c) => [`S=${c.S} past=${c.past} H=${c.heads}/${c.kvHeads}`, c] as const))(
    'against the CPU reference: %s', async (_n, c) => { await check(naiveAttention, c, 500); },
  );
  it('flash equals naive on the GPU (S=129, past=7, GQA)', async () => {
    const c = mk(129, 7, 4, 2, 32, 32);
    const q = randomUniform(c.S * c.heads * c.dQk, 1), k = randomUniform(c.T * c.kvHeads * c.dQk, 2), v = randomUniform(c.T * c.kvHeads * c.dV, 3);
    const bq = gpu.buffers.upload('q', q), bk = gpu.buffers.upload('k', k), bv = gpu.buffers.upload('v', v);
    const n = c.S * c.heads * c.dV;
    const b1 = poisoned(gpu, 'flash', n), b2 = poisoned(gpu, 'naive', n);
    const [o1, o2] = await gpu.checked(async () => {
      const rec = gpu.recorder('t');
      flashAttention(gpu, rec, { ...c, q: bq, k: bk, v: bv, out: b1 });
      naiveAttention(gpu, rec, { ...c, q: bq, k: bk, v: bv, out: b2 });
      rec.submit();
      return Promise.all([gpu.buffers.readF32(b1), gpu.buffers.readF32(b2)]);
    });
    expectClose(o1, o2, TOL, 'flash vs naive');
    [bq, bk, bv, b1, b2].forEach((b) => gpu.buffers.destroy(b));
  });
});

describe('f16 K/V (packed pairs, the f16 KV cache) against the CPU reference on the same rounded values', () => {
  // Ragged head dims and odd strides/offsets (elements straddling words), GQA, MQA, the absorbed-MLA
  // shared rows, splits; each kernel: flash_rows (vec4 and scalar loads), the tiled `main`, naive.
  const cases: [Case, Partial<AttentionArgs>][] = [
    [mk(7, 0, 4, 2, 24, 16), { splits: 1 }],
    [mk(129, 3, 1, 1, 5, 3), { splits: 1 }],
    [mk(33, 0, 2, 2, 16, 8, false, 17), { splits: 1 }],
    [mk(1, 130, 8, 2, 24, 16), { splits: 'auto' }],
    [mk(3, 5, 1, 1, 13, 7), { splits: 8 }],
    [mk(2, 77, 16, 1, 576, 512), { splits: 4 }],
    [{ ...mk(5, 40, 4, 1, 20, 12), kStride: 27, kOffset: 3, vStride: 15, vOffset: 1 }, { splits: 'auto' }],
  ];
  it.each(cases.map(([c, x], i) => [`S=${c.S} T=${c.T} past=${c.past} H=${c.heads}/${c.kvHeads} d=${c.dQk}/${c.dV}${c.kStride ? ` strides ${c.kStride}/${c.vStride}` : ''}`, c, x, i] as const))('%s', async (_n, c, x, i) => {
    await check(c.S > 4 ? flashAttention : attentionDecode, c, 700 + i, { ...x, kv: 'f16' });
    await check(c.S > 4 ? flashAttention : attentionDecode, c, 700 + i, { ...x, kv: 'f16', kernel: 'tiled' });
    await check(naiveAttention, c, 700 + i, { kv: 'f16' });
  });
  it('absorbed-MLA rows (V = the first d_v values of the K row) from one f16 buffer', async () => {
    const c = mk(3, 50, 16, 1, 576, 512);
    const kv = roundF16(randomUniform(c.T * 576, 720)), q = randomUniform(c.S * 16 * 576, 721);
    const bq = gpu.buffers.upload('q', q), bkv = gpu.buffers.upload('kv', packF16(kv));
    const bo = poisoned(gpu, 'out', c.S * 16 * 512);
    const info = attentionDecodeInfo(gpu, { ...c, q: bq, k: bkv, v: bkv, out: bo, kStride: 576, vStride: 576, kv: 'f16' });
    expect(info.label).toContain('f16');
    const out = await gpu.checked(async () => {
      const rec = gpu.recorder('mla f16');
      attentionDecode(gpu, rec, { ...c, q: bq, k: bkv, v: bkv, out: bo, kStride: 576, vStride: 576, kv: 'f16' });
      rec.submit();
      return gpu.buffers.readF32(bo);
    });
    expectClose(out, attentionRef(q, kv, kv, { ...c, kStride: 576, vStride: 576 }), TOL, 'absorbed MLA f16 rows');
    [bq, bkv, bo].forEach((b) => gpu.buffers.destroy(b));
  });
});

describe('MHA/GQA with an MhaKvCache', () => {
  it('prefill then decode steps equal one full prefill; cache grows on the way', async () => {
    const H = 4, Hk = 2, dk = 16, dv = 8, S0 = 13, steps = 3, N = S0 + steps;
    const scale = 0.3;
    const q = randomUniform(N * H * dk, 11), k = randomUniform(N * Hk * dk, 12), v = randomUniform(N * Hk * dv, 13);
    const cache = new MhaKvCache(gpu, { layers: 2, kvHeads: Hk, kDim: dk, vDim: dv, capacity: 8, label: 'test.mha' });
    const bq = gpu.buffers.upload('q', q), bk = gpu.buffers.upload('k', k), bv = gpu.buffers.upload('v', v);
    const bo = poisoned(gpu, 'out', N * H * dv);
    await gpu.checked(async () => {
      cache.ensureCapacity(S0);
      const rec = gpu.recorder('prefill');
      mhaAttention(gpu, rec, { q: bq, k: bk, v: bv, out: bo, cache, layer: 1, past: 0, S: S0, heads: H, scale });
      rec.submit();
      cache.commit(S0);
      for (let i = 0; i < steps; i++) {
        const p = cache.length;
        cache.ensureCapacity(p + 1);
        const r = gpu.recorder('decode');
        mhaAttention(gpu, r, {
          q: bq, qOffset: p * H * dk, k: bk, kOffset: p * Hk * dk, v: bv, vOffset: p * Hk * dv,
          out: bo, oOffset: p * H * dv, cache, layer: 1, past: p, S: 1, heads: H, scale,
        });
        r.submit();
        cache.commit(1);
        gpu.temps.releaseAll();
      }
    });
    expect(cache.capacity).toBeGreaterThanOrEqual(N);
    const out = await gpu.buffers.readF32(bo);
    expectClose(out, attentionRef(q, k, v, { S: N, T: N, past: 0, heads: H, kvHeads: Hk, dQk: dk, dV: dv, scale, causal: true }), TOL, 'mha cache');
    cache.destroy();
    [bq, bk, bv, bo].forEach((b) => gpu.buffers.destroy(b));
  });

  it('an f16 cache (odd row widths padded to whole words): kvWrite packs within one f16 step, attention equals the reference on the cached values', async () => {
    // K rows 3·7 = 21 values (odd: stride 22), V rows 3·5 = 15 (stride 16).
    const H = 6, Hk = 3, dk = 7, dv = 5, S0 = 11, steps = 3, N = S0 + steps;
    const scale = 0.4;
    const q = randomUniform(N * H * dk, 21), k = randomUniform(N * Hk * dk, 22), v = randomUniform(N * Hk * dv, 23);
    const cache = new MhaKvCache(gpu, { layers: 1, kvHeads: Hk, kDim: dk, vDim: dv, capacity: 4, label: 'test.mha16', format: 'f16' });
    expect(cache.bytesPerTokenPerLayer()).toBe((22 + 16) * 2);
    const bq = gpu.buffers.upload('q', q), bk = gpu.buffers.upload('k', k), bv = gpu.buffers.upload('v', v);
    const bo = poisoned(gpu, 'out', N * H * dv);
    await gpu.checked(async () => {
      cache.ensureCapacity(S0);
      const rec = gpu.recorder('prefill');
      mhaAttention(gpu, rec, { q: bq, k: bk, v: bv, out: bo, cache, layer: 0, past: 0, S: S0, heads: H, scale });
      rec.submit();
      cache.commit(S0);
      for (let i = 0; i < steps; i++) {
        const p = cache.length;
        cache.ensureCapacity(p + 1);
        const r = gpu.recorder('decode');
        mhaAttention(gpu, r, {
          q: bq, qOffset: p * H * dk, k: bk, kOffset: p * Hk * dk, v: bv, vOffset: p * Hk * dv,
          out: bo, oOffset: p * H * dv, cache, layer: 0, past: p, S: 1, heads: H, scale,
        });
        r.submit();
        cache.commit(1);
        gpu.temps.releaseAll();
      }
    });
    // What the cache holds: each value within half an f16 step of its source (pack2x16float may round
    // either way, WGSL leaves it to the implementation), the padding half 0.
    const { k: ck, v: cv } = cache.layer(0);
    const kw = await gpu.buffers.readU32(ck, 0, N * 11), vw = await gpu.buffers.readU32(cv, 0, N * 8);
    const halves = (w: Uint32Array, width: number, stride: number) => {
      const all = unpackF16(w, N * stride), out = new Float32Array(N * width);
      for (let t = 0; t < N; t++) {
        out.set(all.subarray(t * stride, t * stride + width), t * width);
        if (stride > width) expect(all[t * stride + width]).toBe(0);
      }
      return out;
    };
    const kc = halves(kw, Hk * dk, 22), vc = halves(vw, Hk * dv, 16);
    expectClose(kc, k, { atol: 2 ** -14, rtol: 2 ** -10 }, 'cached K vs source');
    expectClose(vc, v, { atol: 2 ** -14, rtol: 2 ** -10 }, 'cached V vs source');
    const out = await gpu.buffers.readF32(bo);
    expectClose(out, attentionRef(q, kc, vc, { S: N, T: N, past: 0, heads: H, kvHeads: Hk, dQk: dk, dV: dv, scale, causal: true }), TOL, 'mha f16 cache');
    cache.destroy();
    [bq, bk, bv, bo].forEach((b) => gpu.buffers.destroy(b));
  });
});

describe('shape checks and device limits', () => {
  it('rejects bad shapes with typed errors', () => {
    const rec = gpu.recorder('t');
    const b = gpu.buffers.create('x', 64);
    const base = { q: b, k: b, v: b, out: b, S: 2, T: 2, past: 0, heads: 4, kvHeads: 2, dQk: 4, dV: 4, scale: 1, causal: true };
    expect(() => flashAttention(gpu, rec, { ...base, kvHeads: 3 })).toThrow(expect.objectContaining({ code: 'BAD_SHAPE' }));
    expect(() => flashAttention(gpu, rec, { ...base, T: 1 })).toThrow(expect.objectContaining({ code: 'BAD_SHAPE' }));
    expect(() => attentionDecode(gpu, rec, { ...base, dV: 0 })).toThrow(expect.objectContaining({ code: 'BAD_SHAPE' }));
    expect(() => naiveAttention(gpu, rec, { ...base, S: 1.5 })).toThrow(expect.objectContaining({ code: 'BAD_SHAPE' }));
    expect(rec.empty).toBe(true);
    gpu.buffers.destroy(b);
  });
  it('sizes tiles to the workgroup memory granted: the 16 KiB WebGPU baseline runs absorbed-MLA shapes correctly', async () => {
    // Tile choice is a pure function of the limits: down to 4 KiB it still finds a configuration.
    for (const bytes of [4096, 8192, 16384, 32768]) {
      const fake = { caps: { ...gpu.caps, maxComputeWorkgroupStorageSize: bytes } } as Gpu;
      for (const [rows, dq, dv] of [[16, 576, 512], [1, 576, 512], [64, 192, 128], [7, 24, 16]]) {
        const cfg = flashConfig(fake, rows, dq, dv);
        expect(flashSharedBytes(cfg)).toBeLessThanOrEqual(bytes);
        expect((cfg.BQ / cfg.TR) * (cfg.BK / cfg.TK)).toBe(64);
      }
    }
    for (const bytes of [8192, 16384, 32768, 65536]) {
      const fake = { caps: { ...gpu.caps, maxComputeWorkgroupStorageSize: bytes }, adapter: gpu.adapter } as Gpu;
      for (const [rows, dq, dv] of [[4096, 64, 64], [16, 192, 128], [4, 128, 128], [1, 24, 16], [16, 576, 512]] as const) {
        const cfg = blocksConfig(fake, rows, dq, dv);
        if (cfg) expect(blocksSharedBytes(cfg)).toBeLessThanOrEqual(bytes);
        else expect(dq === 576 || bytes < 16384).toBe(true); // below the baseline or absorbed-MLA dims: flash_rows runs them
      }
      for (const [rows, dq, dv, shared] of [[16, 576, 512, true], [4, 128, 128, false], [1, 24, 16, false]] as const) {
        const cfg = rowsConfig(fake, rows, dq, dv, shared);
        if (cfg) expect(rowsSharedBytes(cfg)).toBeLessThanOrEqual(bytes);
        else expect(bytes).toBeLessThan(16384); // only below the baseline may the 576-wide rows not fit 4 keys
      }
    }
    const small = await testGpu({ limitOverrides: { maxComputeWorkgroupStorageSize: 16384 } });
    expect(small.caps.maxComputeWorkgroupStorageSize).toBe(16384);
    const saved = gpu;
    gpu = small;
    try {
      await check(attentionDecode, mk(1, 70, 16, 1, 576, 512), 600, { splits: 2 });
      await check(attentionDecode, { ...mk(2, 45, 16, 1, 576, 512), kStride: 576, vStride: 576 }, 601, { splits: 1 });
    } finally {
      gpu = saved;
      small.destroy();
    }
  });
});
