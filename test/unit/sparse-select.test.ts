/**
 * V and M selection (src/sparse/select.ts): the mask-diversity ordering, the exact packed byte count
 * against real packed arrays, and the choice for a byte budget on the bundled model's expert shapes.
 */
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { logMaskDiversity, packedBytes, selectPattern, patternLabel, type PatternChoice } from '../../src/sparse/select';
import { pack24, packVnm } from '../../src/sparse/formats';
import { prune24, pruneVnm } from '../../src/sparse/prune';
import { autoSparsity } from '../../src/model/prune-checkpoint';
import { parseSafetensors } from '../../src/formats/safetensors';
import { ArgumentError } from '../../src/errors';
import { mulberry32 } from '../../src/util/random';

const random = (n: number, seed: number) => { const r = mulberry32(seed); return Float32Array.from({ length: n }, () => r() * 2 - 1); };

/** The bundled model's routed expert matrices: gate/up [128, 256], down [256, 128], 3 MoE layers × 16 experts. */
const EXPERTS = Array.from({ length: 3 * 16 }, () => [{ N: 128, K: 256 }, { N: 128, K: 256 }, { N: 256, K: 128 }]).flat();

describe('mask diversity K(V, M)', () => {
  it('is log(C(M,4)·6^V)/(V·M) per weight; 2:4 is ln 6 / 4', () => {
    expect(logMaskDiversity({ format: '2:4' })).toBeCloseTo(Math.log(6) / 4, 12);
    expect(logMaskDiversity({ format: 'vnm', v: 64, m: 8 })).toBeCloseTo((Math.log(70) + 64 * Math.log(6)) / 512, 12);
  });
  it('falls with V at fixed M and with M at fixed V; 2:4 is above every V:2:M', () => {
    for (const m of [5, 6, 8, 12]) {
      const byV = [16, 32, 64, 128].map((v) => logMaskDiversity({ format: 'vnm', v, m }));
      for (let i = 1; i < byV.length; i++) expect(byV[i]).toBeLessThan(byV[i - 1]);
      expect(logMaskDiversity({ format: '2:4' })).toBeGreaterThan(byV[0]);
    }
    for (const v of [16, 64]) {
      const byM = [5, 6, 7, 8, 16].map((m) => logMaskDiversity({ format: 'vnm', v, m }));
      for (let i = 1; i < byM.length; i++) expect(byM[i]).toBeLessThan(byM[i - 1]);
    }
  });
});

describe('packedBytes', () => {
  it('equals the bytes of the packed arrays, ragged shapes included', () => {
    const cases: Array<[number, number, PatternChoice]> = [[37, 53, { format: '2:4' }], [64, 128, { format: '2:4' }], [70, 41, { format: 'vnm', v: 16, m: 5 }], [128, 256, { format: 'vnm', v: 64, m: 8 }], [33, 100, { format: 'vnm', v: 32, m: 7 }], [96, 77, { format: 'vnm', v: 16, m: 12 }]];
    for (const [N, K, c] of cases) {
      const w = random(N * K, N * 131 + K);
      const p = c.format === '2:4' ? pack24(prune24(w, N, K).pruned, N, K) : (() => { const r = pruneVnm(w, N, K, c.v!, c.m!); return packVnm(r.pruned, N, K, c.v!, c.m!, r.columns); })();
      const actual = p.values.byteLength + p.meta.byteLength + (p.format === 'vnm' ? p.columns.byteLength : 0);
      expect(packedBytes(N, K, c), `${N}×${K} ${patternLabel(c)}`).toBe(actual);
    }
  });
});

describe('selectPattern', () => {
  const divides = { vDivides: [128, 256] };
  it('picks the most diverse pattern within the byte budget (bundled expert shapes)', () => {
    expect(patternLabel(selectPattern(EXPERTS, 0.6, divides).choice)).toBe('2:4');
    // 2:4 needs 0.531; below it M = 5 with the smallest V that fits
    const s45 = selectPattern(EXPERTS, 0.45, divides);
    expect(patternLabel(s45.choice)).toBe('16:2:5');
    expect(s45.ratio).toBeLessThanOrEqual(0.45);
    expect(patternLabel(selectPattern(EXPERTS, 0.44, divides).choice)).toBe('64:2:5');
    expect(patternLabel(selectPattern(EXPERTS, 0.275, divides).choice)).toBe('16:2:8');
    // 64:2:8 (0.2676) fits 0.268, but 16:2:9 (0.249, density 2/9) has more masks per weight: the heuristic
    // trades density for smaller blocks (docs/sparsity.md measures what that costs)
    expect(logMaskDiversity({ format: 'vnm', v: 16, m: 9 })).toBeGreaterThan(logMaskDiversity({ format: 'vnm', v: 64, m: 8 }));
    expect(patternLabel(selectPattern(EXPERTS, 0.268, divides).choice)).toBe('16:2:9');
    // every feasible candidate fits, most diverse first
    for (const c of s45.feasible) expect(c.ratio).toBeLessThanOrEqual(0.45);
    for (let i = 1; i < s45.feasible.length; i++) expect(s45.feasible[i].logDiversity).toBeLessThanOrEqual(s45.feasible[i - 1].logDiversity);
  });
  it('honours V | the expert sizes', () => {
    const c = selectPattern(EXPERTS, 0.45, { vDivides: [96] }).choice; // only V = 16, 32 divide 96
    expect([16, 32]).toContain(c.v);
    expect(() => selectPattern(EXPERTS, 0.3, { vDivides: [24] })).toThrow(/V must divide 24/);
  });
  it('rejects an impossible or malformed budget with ArgumentError', () => {
    expect(() => selectPattern(EXPERTS, 0.05)).toThrow(ArgumentError);
    expect(() => selectPattern(EXPERTS, 0.05)).toThrow(/the smallest is 128:2:16/);
    expect(() => selectPattern(EXPERTS, 0)).toThrow(ArgumentError);
    expect(() => selectPattern(EXPERTS, 1.5)).toThrow(ArgumentError);
  });
});

describe('autoSparsity on the bundled model', () => {
  const file = readFileSync('public/models/webmoe-tiny/model.safetensors');
  const { header } = parseSafetensors(new Uint8Array(file.buffer, file.byteOffset, file.byteLength));
  const tensors = [...header.tensors].map(([name, t]) => ({ name, shape: t.shape }));
  const cfg = JSON.parse(readFileSync('public/models/webmoe-tiny/config.json', 'utf8'));
  const c = { nRoutedExperts: cfg.n_routed_experts, moeIntermediateSize: cfg.moe_intermediate_size, hiddenSize: cfg.hidden_size };
  it('selects over the routed experts the scope prunes', () => {
    const r = autoSparsity(tensors, c, 'experts', 0.45);
    expect(r.option).toEqual({ format: 'vnm', v: 16, m: 5, apply: 'experts' });
    expect(r.selection.ratio).toBeCloseTo(selectPattern(EXPERTS, 0.45).ratio, 12);
    expect(() => autoSparsity(tensors, c, 'experts', undefined)).toThrow(ArgumentError);
  });
});
