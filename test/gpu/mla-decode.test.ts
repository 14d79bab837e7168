import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu, expectClose, poisoned } from '../helpers/gpu';
import { randomUniform } from '../../src/util/random';
import { mlaDecode, mlaDecodeInfo, mlaDecodePlan, mlaDecodeScratchBytes, type MlaDecodeArgs, type MlaDecodeTuning } from '../../src/kernels/mla';
import { mlaDecodeRef } from '../../src/kernels/mla.ref';
import { SOFTWARE_THREADS_UNKNOWN, softwareThreads } from '../../src/kernels/mla-plan';
import type { KvFormat } from '../../src/kernels/attention';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/util/half';

// Tolerance (f32 arithmetic against the float64 reference): the scores are kvLora+rope ≤ 576-long dots
// of values in [-1, 1] (error ~sqrt(576)·2^-24 relative to |q̃|·|row| ≈ 1e-5 after the 0.05–0.3 scale),
// exp2 is within a few ulp, and the outputs are convex combinations of latent values in [-1, 1]
// accumulated in blocks: 5e-5 abs + 1e-4 rel has margin. An f16 cache: the reference attends over the
// same rows rounded to f16, so the same tolerance.
const TOL = { atol: 5e-5, rtol: 1e-4 };

interface Case {
  H: number; kvLora: number; rope: number; S: number; past: number;
  pad?: number; format?: KvFormat; splits?: number | 'auto'; tuning?: MlaDecodeTuning; pastFromBuffer?: boolean;
}

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });
afterEach(() => gpu.temps.releaseAll());

/** Cache rows [T, stride] as stored: f32, or f16 pairs in u32 words; and the f32 values the kernel sees. */
function cacheRows(T: number, stride: number, dk: number, format: KvFormat, seed: number) {
  const rows = randomUniform(T * stride, seed);
  for (let t = 0; t < T; t++) rows.fill(NaN, t * stride + dk, (t + 1) * stride); // padding is never read
  if (format === 'f32') return { stored: rows as Float32Array | Uint32Array, seen: rows };
  const halves = f32ArrayToF16(rows.map((v) => (Number.isNaN(v) ? 0 : v)));
  for (let t = 0; t < T; t++) halves.fill(0x7e00, t * stride + dk, (t + 1) * stride); // NaN padding
  return { stored: new Uint32Array(halves.buffer), seen: f16ArrayToF32(halves) };
}

async function runCase(g: Gpu, c: Case, seed: number) {
  const { H, kvLora, rope, S, past } = c;
  const dk = kvLora + rope, T = past + S, format = c.format ?? 'f32';
  let stride = dk + (c.pad ?? 0);
  if (format === 'f16' && stride % 2) stride++;
  const capacity = T + 5;
  const qa = randomUniform(S * H * dk, seed);
  const { stored, seen } = cacheRows(capacity, stride, dk, format, seed + 1);
  const scale = 0.05 + 0.25 * ((seed * 7919) % 100) / 100;
  const bqa = g.buffers.upload('qa', qa);
  const bcache = g.buffers.upload('cache', stored);
  const bo = poisoned(g, 'olat', S * H * kvLora);
  const pastBuf = c.pastFromBuffer ? g.buffers.upload('past', new Uint32Array([past])) : undefined;
  const args: MlaDecodeArgs = {
    H, kvLora, rope, S, past: c.pastFromBuffer ? 0 : past, qa: bqa, cache: bcache, rowStride: stride, format, out: bo, scale,
    splits: c.splits, tuning: c.tuning, pastFromBuffer: pastBuf, maxT: c.pastFromBuffer ? capacity : undefined,
  };
  const out = await g.checked(async () => {
    const rec = g.recorder('mla-decode');
    mlaDecode(g, rec, args);
    rec.submit();
    return g.buffers.readF32(bo);
  });
  const ref = mlaDecodeRef({ H, kvLora, rope, S, past, qa, rows: seen, rowStride: stride, scale });
  const info = mlaDecodeInfo(g, args);
  expectClose(out, ref, TOL, `${JSON.stringify(c)} → ${info.label}`);
  for (const b of [bqa, bcache, bo, pastBuf]) if (b) g.buffers.destroy(b);
  return info;
}

/** Small deterministic generator for the random shapes. */
function rng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s % n; };
}

describe('mlaDecode (absorbed-MLA attention core) against the float64 reference', () => {
  const named: [string, Case][] = [
    ['V2-Lite core (16 heads, 512 + 64), decode past 300, one split', { H: 16, kvLora: 512, rope: 64, S: 1, past: 300, splits: 1 }],
    ['V2-Lite core, decode past 300, 3 splits (combine)', { H: 16, kvLora: 512, rope: 64, S: 1, past: 300, splits: 3 }],
    ['V2-Lite core, verify step S=8 past 37 (8 row tiles)', { H: 16, kvLora: 512, rope: 64, S: 8, past: 37 }],
    ['V2-Lite core, S=5 past 90, f16 cache, 2 splits', { H: 16, kvLora: 512, rope: 64, S: 5, past: 90, format: 'f16', splits: 2 }],
    ['V2-Lite core, past from a GPU buffer, auto splits', { H: 16, kvLora: 512, rope: 64, S: 1, past: 77, pastFromBuffer: true }],
    ['first token (past 0, one key)', { H: 3, kvLora: 20, rope: 4, S: 1, past: 0 }],
    ['prefill-like S=8 past 0 (rows see 1..8 keys)', { H: 2, kvLora: 12, rope: 4, S: 8, past: 0, splits: 2 }],
    ['more splits than blocks (empty splits)', { H: 4, kvLora: 24, rope: 8, S: 2, past: 5, splits: 7 }],
  ];
  it.each(named)('%s', async (_n, c) => { await runCase(gpu, c, 11); });

  it('random ragged shapes: heads, widths and lengths off the tiles, S 1–8, padded rows, f32/f16, every launch shape', async () => {
    const r = rng(2027);
    const tunings: (MlaDecodeTuning | undefined)[] = [undefined, { SQ: 4 }, { DWG: 16 }, { BK: 4, subgroups: false }, { BK: 16 }, { SQ: 4, subgroups: false }, { DWG: 64, BK: 8 }];
    for (let i = 0; i < 21; i++) {
      const c: Case = {
        H: 1 + r(20), kvLora: 3 + r(70), rope: 1 + r(12), S: 1 + r(8), past: r(140), pad: r(3),
        format: r(2) ? 'f16' : 'f32', splits: [1, 2, 3, 'auto' as const][r(4)], tuning: tunings[i % tunings.length], pastFromBuffer: r(4) === 0,
      };
      await runCase(gpu, c, 100 + i);
      gpu.temps.releaseAll();
    }
  }, 400_000); // ~21 shader specialisations compiled by a software adapter, with other processes on the cores

  it('a device without subgroups and with the 16 KiB workgroup-memory baseline: blocks of 4 cache rows', async () => {
    const small = await testGpu({ disableFeatures: ['subgroups'], limitOverrides: { maxComputeWorkgroupStorageSize: 16384 } });
    const info = await runCase(small, { H: 16, kvLora: 512, rope: 64, S: 2, past: 45, splits: 2 }, 5);
    expect(info.cfg.BK).toBe(4);
    small.temps.releaseAll();
    small.destroy();
  });
});

describe('mlaDecodePlan', () => {
  const gpuLike = (fallback: boolean, wgBytes = 32768) => ({ adapter: { isFallbackAdapter: fallback }, caps: { maxComputeWorkgroupStorageSize: wgBytes, maxComputeInvocationsPerWorkgroup: 256 } });
  const lite = { H: 16, kvLora: 512, rope: 64, S: 1 };

  it('reads every cache row once per step for the 16 heads of a V2-Lite decode (one row tile)', () => {
    for (const fallback of [false, true]) {
      const p = mlaDecodePlan(gpuLike(fallback), { ...lite, T: 8192 });
      expect(p.rowTiles).toBe(1);
      expect(p.cacheReadBytes).toBe(8192 * 576 * 4);
    }
    expect(mlaDecodePlan(gpuLike(false), { ...lite, T: 8192, format: 'f16' }).cacheReadBytes).toBe(8192 * 576 * 2);
  });

  it('splits long caches over a GPU, not short ones; a software adapter splits over its threads from 2 × 256 keys', () => {
    expect(mlaDecodePlan(gpuLike(false), { ...lite, T: 8192 }).splits).toBe(32);
    expect(mlaDecodePlan(gpuLike(false), { ...lite, T: 200 }).splits).toBe(1);
    const threads = softwareThreads();
    expect(threads).toBe((globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency || SOFTWARE_THREADS_UNKNOWN);
    for (const T of [200, 511]) expect(mlaDecodePlan(gpuLike(true), { ...lite, T }).splits).toBe(1);
    for (const T of [512, 2048, 8192]) expect(mlaDecodePlan(gpuLike(true), { ...lite, T }).splits).toBe(Math.min(threads, Math.floor(T / 256)));
    // A verify step of 8 tokens has 8 row tiles: as many workgroups as threads here, no split.
    expect(mlaDecodePlan(gpuLike(true), { ...lite, S: 8, T: 8192 }).splits).toBe(threads <= 8 ? 1 : Math.ceil(threads / 8));
  });

  it('one invocation per 8 latent values (128 accumulators each); the staging fits the workgroup memory', () => {
    for (const wg of [16384, 32768, 65536]) {
      const p = mlaDecodePlan(gpuLike(false, wg), { ...lite, S: 8, T: 4096 });
      expect(p.cfg.DWG * 8).toBe(512);
      expect(p.rowTiles).toBe(8);
      expect(4 * (p.cfg.BK * p.cfg.DKP + p.cfg.BK * p.cfg.RT * p.cfg.DS + p.cfg.BK * p.cfg.RT + 2 * p.cfg.RT)).toBeLessThanOrEqual(wg);
    }
    expect(() => mlaDecodePlan(gpuLike(false, 4096), { ...lite, T: 64 })).toThrow(expect.objectContaining({ code: 'GPU_LIMIT_EXCEEDED' }));
  });

  it('scratch for split partials: rows × (kvLora + 2) floats per split, none for one split', () => {
    expect(mlaDecodeScratchBytes({ S: 2, H: 16, kvLora: 512 }, 3)).toBe(3 * 32 * 514 * 4);
    expect(mlaDecodeScratchBytes({ S: 2, H: 16, kvLora: 512 }, 1)).toBe(0);
  });

  it('bad arguments are typed errors', () => {
    const b = gpu.buffers.create('x', 16);
    const base: MlaDecodeArgs = { H: 2, kvLora: 4, rope: 2, S: 1, past: 0, qa: b, cache: b, rowStride: 6, out: b, scale: 1 };
    expect(() => mlaDecodeInfo(gpu, { ...base, rowStride: 5 })).toThrow(expect.objectContaining({ code: 'BAD_SHAPE' }));
    expect(() => mlaDecodeInfo(gpu, { ...base, format: 'f16', rowStride: 7 })).toThrow(expect.objectContaining({ code: 'BAD_SHAPE' }));
    expect(() => mlaDecodeInfo(gpu, { ...base, splits: 0 })).toThrow(expect.objectContaining({ code: 'BAD_SHAPE' }));
    for (const DWG of [24, 8]) expect(() => mlaDecodeInfo(gpu, { ...base, tuning: { DWG } })).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
    expect(() => mlaDecodeInfo(gpu, { ...base, kvLora: 600, rowStride: 602, tuning: { DWG: 16 } })).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
    expect(() => mlaDecodeInfo(gpu, { ...base, pastFromBuffer: b })).toThrow(expect.objectContaining({ code: 'BAD_SHAPE' }));
    gpu.buffers.destroy(b);
  });
});
