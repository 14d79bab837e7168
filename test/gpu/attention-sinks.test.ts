import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform } from '../../src/util/random';
import { flashAttention, attentionDecode, attentionDecodeInfo, naiveAttention, kvElementBytes, type AttentionArgs } from '../../src/kernels/attention';
import { attentionRef, firstVisibleKey, type AttentionShape } from '../../src/kernels/attention.ref';
import { ShapeError, UnsupportedError } from '../../src/errors';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/util/half';

// GPT-OSS attention: per-head sinks (a logit in the softmax denominator with no value) and sliding
// windows (key t visible to query s iff past + s − W < t ≤ past + s), in every attention kernel
// (flash_blocks, flash_rows, the tiled `main`, split-K + combine, naive) for f32 and f16 caches.
//
// Tolerance: as test/gpu/attention.test.ts (f32 dot products in another order than the float64
// reference, exp2 and running rescales; outputs are convex combinations of V rows in [-1, 1], scaled
// down by the sink's share): 3e-5 abs + 1e-4 rel. With an f16 cache the reference gets the same
// f16-rounded K/V, so the same tolerance holds.
const TOL = { atol: 3e-5, rtol: 1e-4 };

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterEach(() => gpu.temps.releaseAll());

const roundF16 = (x: Float32Array) => f16ArrayToF32(f32ArrayToF16(x));
function packF16(x: Float32Array): Uint32Array {
  const h = f32ArrayToF16(x);
  const words = new Uint32Array(Math.max(1, Math.ceil(h.length / 2)));
  new Uint16Array(words.buffer).set(h);
  return words;
}

const mk = (S: number, past: number, heads: number, kvHeads: number, dQk: number, dV: number, window: number): AttentionShape =>
  ({ S, T: past + S, past, heads, kvHeads, dQk, dV, scale: 1 / Math.sqrt(dQk), causal: true, window });

type Kernel = typeof flashAttention;

/**
 * Random q/k/v and sinks in [-3, 3] (a sink of +3 takes most of the mass from small scores: the test
 * sees it), run `kernel`, compare with attentionRef. `nanOutsideWindow`: every K/V value before the
 * first row's window start is NaN, so a kernel that reads (and weights by 0) any of them fails: the
 * blocks before the window are never visited.
 */
async function check(kernel: Kernel, c: AttentionShape, seed: number, extra: Partial<AttentionArgs> & { useSinks?: boolean; nanOutsideWindow?: boolean } = {}) {
  const kw = c.kvHeads * c.dQk, vw = c.kvHeads * c.dV;
  const q = randomUniform(c.S * c.heads * c.dQk, seed);
  let k = randomUniform(c.T * kw, seed + 1), v = randomUniform(c.T * vw, seed + 2);
  const f16 = extra.kv === 'f16';
  if (f16) { k = roundF16(k); v = roundF16(v); }
  const sinks = extra.useSinks === false ? undefined : randomUniform(c.heads, seed + 3, -3, 3);
  const kIn = k.slice(), vIn = v.slice();
  if (extra.nanOutsideWindow) {
    const lo = firstVisibleKey(c, 0);
    kIn.fill(NaN, 0, lo * kw);
    vIn.fill(NaN, 0, lo * vw);
  }
  const bq = gpu.buffers.upload('q', q);
  const bk = gpu.buffers.upload('k', f16 ? packF16(kIn) : kIn), bv = gpu.buffers.upload('v', f16 ? packF16(vIn) : vIn);
  const bs = sinks ? gpu.buffers.upload('sinks', sinks) : undefined;
  const n = c.S * c.heads * c.dV;
  const bo = poisoned(gpu, 'out', n);
  const out = await gpu.checked(async () => {
    const rec = gpu.recorder('attention sinks test');
    kernel(gpu, rec, { ...c, q: bq, k: bk, v: bv, out: bo, sinks: bs, ...extra });
    rec.submit();
    return gpu.buffers.readF32(bo, 0, n);
  });
  [bq, bk, bv, bo, ...(bs ? [bs] : [])].forEach((b) => gpu.buffers.destroy(b));
  return expectClose(out, attentionRef(q, k, v, c, sinks), TOL, `${kernel.name} ${JSON.stringify(c)} splits ${extra.splits ?? '-'} kernel ${extra.kernel ?? 'default'} kv ${extra.kv ?? 'f32'}`);
}

describe('decode with sinks and a sliding window (GPT-OSS shapes, scaled down)', () => {
  // GQA 8/2 (gpt-oss: 64/8, d = 64), cache longer than the window, windows that do not divide the key
  // block, 1..3 query rows (verify steps), splits 1, 3 and auto; flash_rows and the tiled kernel.
  const cases: [AttentionShape, number | 'auto', 'blocks' | 'rows' | 'tiled'][] = [
    [mk(1, 300, 8, 2, 64, 64, 128), 1, 'blocks'],
    [mk(1, 300, 8, 2, 64, 64, 128), 3, 'blocks'],
    [mk(3, 50, 4, 2, 7, 9, 10), 2, 'blocks'],
    [mk(1, 20, 4, 4, 16, 16, 128), 2, 'blocks'],
    [mk(1, 300, 8, 2, 64, 64, 128), 1, 'rows'],
    [mk(1, 300, 8, 2, 64, 64, 128), 3, 'rows'],
    [mk(1, 1000, 8, 2, 64, 64, 128), 'auto', 'rows'],
    [mk(1, 77, 4, 1, 24, 16, 13), 4, 'rows'],
    [mk(3, 50, 4, 2, 7, 9, 10), 2, 'rows'],
    [mk(1, 300, 8, 2, 64, 64, 128), 1, 'tiled'],
    [mk(1, 300, 8, 2, 64, 64, 128), 3, 'tiled'],
    [mk(2, 40, 3, 1, 13, 5, 6), 'auto', 'tiled'],
    [mk(1, 20, 4, 4, 16, 16, 128), 2, 'rows'],   // window longer than the cache: full attention + sinks
  ];
  it.each(cases.map(([c, sp, kern], i) => [`S=${c.S} past=${c.past} H=${c.heads}/${c.kvHeads} d=${c.dQk}/${c.dV} W=${c.window} splits=${sp} ${kern}`, c, sp, kern, i] as const))('%s', async (_n, c, splits, kernel, i) => {
    for (const kv of ['f32', 'f16'] as const) await check(attentionDecode, c, 100 + 10 * i, { splits, kernel, kv, nanOutsideWindow: c.S === 1 });
  });
  it('sinks alone (full causal attention) and a window alone', async () => {
    const full = { ...mk(1, 200, 8, 2, 64, 64, 0) };
    await check(attentionDecode, full, 200, { splits: 3 });
    await check(attentionDecode, full, 201, { splits: 1, kernel: 'tiled' });
    await check(attentionDecode, mk(1, 200, 8, 2, 64, 64, 32), 202, { splits: 2, useSinks: false, nanOutsideWindow: true });
  });
  it('reads past from a GPU buffer: the window moves with the recorded position', async () => {
    const c = mk(1, 260, 8, 2, 64, 64, 128);
    const pastBuf = gpu.buffers.upload('past', new Uint32Array([c.past]));
    // T and past in the uniforms are deliberately wrong: the kernel must use the buffer.
    await check(attentionDecode, c, 210, { pastFromBuffer: pastBuf, maxT: 1024, T: 1, past: 0, nanOutsideWindow: true });
    await check(attentionDecode, c, 211, { pastFromBuffer: pastBuf, maxT: 1024, T: 1, past: 0, kernel: 'tiled', splits: 2 });
    gpu.buffers.destroy(pastBuf);
  });
  it('bytes read per step are bounded by the window, not the cache', () => {
    const c = mk(1, 8191, 64, 8, 64, 64, 128);
    // Distinct k and v (null for both would read as one shared K|V buffer, the absorbed-MLA layout).
    const a = { ...c, q: null!, k: 'k' as never, v: 'v' as never, out: null! };
    const windowed = attentionDecodeInfo(gpu, a);
    const full = attentionDecodeInfo(gpu, { ...a, window: 0 });
    expect(windowed.cacheReadBytes).toBe(kvElementBytes('f32') * 128 * 8 * (64 + 64));
    expect(full.cacheReadBytes).toBe(kvElementBytes('f32') * 8192 * 8 * (64 + 64));
  });
});

describe('prefill with sinks and a sliding window', () => {
  const cases: [AttentionShape, number | 'auto', 'blocks' | 'rows' | 'tiled'][] = [
    [mk(129, 0, 4, 1, 16, 16, 16), 'auto', 'blocks'],
    [mk(64, 37, 2, 1, 24, 16, 5), 1, 'blocks'],
    [mk(40, 0, 8, 2, 64, 64, 128), 2, 'blocks'],
    [mk(33, 100, 3, 3, 7, 9, 32), 'auto', 'blocks'],
    [mk(129, 0, 4, 1, 16, 16, 16), 'auto', 'rows'],
    [mk(64, 37, 2, 1, 24, 16, 5), 1, 'rows'],
    [mk(40, 0, 8, 2, 64, 64, 128), 2, 'rows'],
    [mk(33, 100, 3, 3, 7, 9, 32), 'auto', 'rows'],
    [mk(129, 0, 4, 1, 16, 16, 16), 'auto', 'tiled'],
    [mk(50, 10, 2, 2, 12, 20, 1), 3, 'tiled'],
  ];
  it.each(cases.map(([c, sp, kern], i) => [`S=${c.S} past=${c.past} H=${c.heads}/${c.kvHeads} d=${c.dQk}/${c.dV} W=${c.window} splits=${sp} ${kern}`, c, sp, kern, i] as const))('%s', async (_n, c, splits, kernel, i) => {
    await check(flashAttention, c, 300 + 10 * i, { splits, kernel });
    await check(flashAttention, c, 305 + 10 * i, { splits, kernel, kv: 'f16' });
  });
});

describe('naive kernel with sinks and a sliding window', () => {
  it.each([mk(7, 20, 4, 2, 24, 16, 8), mk(65, 0, 2, 1, 16, 16, 64), mk(1, 300, 8, 2, 64, 64, 128)].map((c) => [`S=${c.S} past=${c.past} W=${c.window}`, c] as const))(
    '%s', async (_n, c) => {
      await check(naiveAttention, c, 500);
      await check(naiveAttention, c, 501, { kv: 'f16' });
    },
  );
});

describe('argument checks', () => {
  it('rejects a window without causal masking, a negative window and a short sinks binding', () => {
    const b = gpu.buffers.create('x', 64);
    const base = { ...mk(2, 3, 2, 1, 4, 4, 2), q: b, k: b, v: b, out: b };
    const rec = gpu.recorder('bad');
    expect(() => attentionDecode(gpu, rec, { ...base, causal: false })).toThrow(UnsupportedError);
    expect(() => attentionDecode(gpu, rec, { ...base, window: -1 })).toThrow(ShapeError);
    expect(() => attentionDecode(gpu, rec, { ...base, heads: 32, kvHeads: 1, sinks: gpu.buffers.create('s', 16) })).toThrow(ShapeError);
    gpu.buffers.destroy(b);
  });
});
