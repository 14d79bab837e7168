import { describe, expect, it } from 'vitest';
import { compareTables, formatReport, validateReport, renderText, resultsTable, peersTable, fmtNum, fmtBytes, shorten } from '../../src/bench/report';
import { collectSuites, runnableSuites, selectSuites } from '../../src/bench/registry';
import { RunContext, median } from '../../src/bench/context';
import { rooflineSvg } from '../../src/pages/roofline';
import type { BenchReport, BenchSuite } from '../../src/bench/types';
import type { Gpu } from '../../src/gpu/device';

function sampleReport(): BenchReport {
  return {
    version: 1, timestamp: new Date(0).toISOString(), quick: true, userAgent: 'test', env: 'browser', timing: 'wall',
    device: { vendor: 'v', architecture: 'a', device: '', description: 'd', isFallbackAdapter: false, features: ['subgroups'], limits: { maxBufferSize: 1 << 30 } },
    ceilings: { fmaGflops: 100, copyGBps: 10, dispatchOverheadUs: 5, submitRoundTripMs: 0.5 },
    results: [
      { suite: 'matmul-f32', name: 'gemv', variant: 'f32 gemv', shape: '1×64 · 64×64', medianMs: 2, gflops: 0.004, gbps: 0.01, bytes: 20_000, flops: 8192, pctFma: 0.004, pctCopy: 0.1 },
      { suite: 'attention', name: 'kv bytes', variant: 'MLA', shape: 'tiny', medianMs: 0, gflops: 0, gbps: 0, bytes: 576, flops: 0 },
    ],
    peers: [{ suite: 'matmul-f32', name: 'gemv f32', peer: 'ort-webgpu', oursMs: 2, peerMs: 3, ratio: 1.5, note: 'GPU-resident I/O' }],
    peerChecks: [{ peer: 'ort-webgpu', op: 'MatMul f32', shape: '1×64 · 64×17', maxAbsDiff: 1e-6, tolerance: 1e-4, ok: true }],
    e2e: [{ model: 'tiny', prefillTokPerS: 100, decodeTokPerS: 10, dispatchesPerToken: 40, readbacksPerToken: 1, bytesPerToken: 2e6, minBytesPerToken: 1e6 }],
    errors: [{ suite: 'moe', message: 'boom' }],
    suites: ['matmul-f32'], suiteMs: { ceilings: 1000, 'matmul-f32': 2000 }, durationMs: 3000,
  };
}

describe('bench report', () => {
  it('compares two reports row by row: matched rows get B ÷ A, rows of one report only a dash on the other side', () => {
    const a = sampleReport();
    const b = sampleReport();
    b.results[0] = { ...b.results[0], medianMs: 3 };
    b.results.push({ ...b.results[0], shape: '1×128 · 128×128', medianMs: 5 });
    b.peers[0] = { ...b.peers[0], ratio: 2, symmetric: true };
    b.e2e[0] = { ...b.e2e[0], decodeTokPerS: 20 };
    const t = compareTables(a, b);
    expect(t.results.rows).toEqual([
      ['matmul-f32', 'gemv', 'f32 gemv', '1×64 · 64×64', '2.000', '3.000', '1.50×'],
      ['attention', 'kv bytes', 'MLA', 'tiny', '0', '0', '–'],
      ['matmul-f32', 'gemv', 'f32 gemv', '1×128 · 128×128', '–', '5.000', '–'],
    ]);
    expect(t.peers.rows).toEqual([['matmul-f32', 'gemv f32', '', 'ort-webgpu', '1.50', '2.00', 'not both symmetric']]);
    expect(t.e2e.rows).toEqual([['tiny', '100', '100', '1.00×', '10.0', '20.0', '2.00×']]);
  });

  it('accepts a well-formed report, also after a JSON round trip', () => {
    expect(validateReport(sampleReport())).toEqual([]);
    expect(validateReport(JSON.parse(JSON.stringify(sampleReport())))).toEqual([]);
  });

  it('names each problem of a malformed report', () => {
    const r = JSON.parse(JSON.stringify(sampleReport()));
    r.ceilings.fmaGflops = 0;
    delete r.ceilings.copyGBps;
    r.results[0].medianMs = null; // what NaN becomes in JSON
    r.peers[0].ratio = -1;
    delete r.device.limits;
    r.e2e[0].decodeTokPerS = 'fast';
    const p = validateReport(r);
    for (const where of ['ceilings.fmaGflops', 'ceilings.copyGBps', 'results[0].medianMs', 'peers[0].ratio', 'device.limits', 'e2e[0].decodeTokPerS']) {
      expect(p.some((m) => m.startsWith(where)), `${where} in ${p.join('; ')}`).toBe(true);
    }
    expect(validateReport(null)).toEqual(['report: not an object']);
    expect(validateReport({ ...sampleReport(), results: 'x' })).toContain('results: not an array');
  });

  it('prints every section with aligned columns', () => {
    const text = formatReport(sampleReport());
    for (const s of ['ceilings: FMA 100 GFLOP/s', 'peers (onnxruntime-web', 'peer output checks', 'end to end', 'errors (1; full messages in the JSON):', 'moe: boom', 'ort-webgpu', '1.50×']) expect(text).toContain(s);
    const table = renderText(resultsTable(sampleReport())).split('\n');
    expect(table).toHaveLength(2 + 2);
    // Right-aligned numeric columns end at the same offset on every line.
    const end = table[0].indexOf('median ms') + 'median ms'.length;
    expect(table[2].slice(0, end).trimEnd().endsWith('2.000')).toBe(true);
    // A size-only row (medianMs 0) shows no rates.
    expect(resultsTable(sampleReport()).rows[1].slice(4, 9)).toEqual(['–', '–', '–', '–', '–']);
    expect(peersTable(sampleReport()).rows[0][6]).toBe('1.50×');
  });

  it('shortens long error messages', () => {
    const long = Array.from({ length: 50 }, (_, i) => `line ${i}`).join('\n');
    expect(shorten(long, 2)).toBe('line 0\n    line 1 …');
    expect(shorten('short')).toBe('short');
  });

  it('formats numbers and bytes', () => {
    expect(fmtNum(NaN)).toBe('–');
    expect(fmtNum(1234.5)).toBe('1,235');
    expect(fmtNum(0.5)).toBe('0.500');
    expect(fmtBytes(3 * 2 ** 20)).toBe('3.00 MiB');
    expect(fmtBytes(512)).toBe('512 B');
  });

  it('draws the roofline with the measured roof and one point per timed kernel', () => {
    const svg = rooflineSvg(sampleReport().results, sampleReport().ceilings);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/class="roof"/g)).toHaveLength(1);
    expect(svg.match(/class="pt"/g)).toHaveLength(1); // the size-only row has no point
    expect(rooflineSvg([], { fmaGflops: NaN, copyGBps: 1 })).toBe('');
  });
});

describe('bench registry', () => {
  const suite = (name: string, order?: number): BenchSuite => ({ name, order, run: async () => {} });
  it('collects every export with name and run, ordered, without duplicates', () => {
    const a = suite('zeta', 5), b = suite('alpha'), c = suite('e2e', 90);
    const got = collectSuites({ './suites/x.ts': { a, helper: () => 1, shapes: [1, 2], b }, './suites/y.ts': { c, again: a } });
    expect(got.map((s) => s.name)).toEqual(['zeta', 'alpha', 'e2e']);
  });
  it('selects by name and rejects unknown names', () => {
    const all = [suite('a'), suite('b')];
    expect(selectSuites(all, []).length).toBe(2);
    expect(selectSuites(all, ['b']).map((s) => s.name)).toEqual(['b']);
    expect(() => selectSuites(all, ['c'])).toThrow(/unknown benchmark suite\(s\): c \(known: a, b\)/);
  });
  it('leaves out Node-only suites in the browser, browser-only ones in Node, and full-only ones in --quick unless named', () => {
    const large: BenchSuite = { ...suite('large'), fullOnly: true, browserOk: false };
    const page: BenchSuite = { ...suite('page'), nodeOk: false };
    const all = [suite('a'), large, page];
    const names = (o: Parameters<typeof runnableSuites>[1]) => runnableSuites(all, o).map((s) => s.name);
    expect(names({ env: 'node', quick: false })).toEqual(['a', 'large']);
    expect(names({ env: 'node', quick: true })).toEqual(['a']);
    expect(names({ env: 'node', quick: true, suites: ['large'] })).toEqual(['large']);
    expect(names({ env: 'browser', quick: false })).toEqual(['a', 'page']);
  });
});

describe('bench context', () => {
  /** A fake Gpu whose queue takes `cost(dispatches)` ms of a fake clock per submit. */
  function fakeGpu(cost: (n: number) => number) {
    let clock = 0;
    let checked = 0;
    const gpu = {
      recorder: () => {
        let n = 0;
        return { dispatch: () => { n++; }, submit: () => { clock += cost(n); } };
      },
      sync: async () => {},
      checked: async <T>(fn: () => Promise<T>) => { checked++; return fn(); },
      temps: { releaseAll: () => {} },
    };
    return { gpu: gpu as unknown as Gpu, now: () => clock, checked: () => checked };
  }

  it('times warm-up + iterations with repeat per submit, one checked run, and reports the median per call', async () => {
    const costs = [50, 10, 30, 20, 40, 35];
    let k = 0;
    const f = fakeGpu((n) => costs[k++] * n);
    const ctx = new RunContext(f.gpu, { quick: false, peers: false, env: 'node', now: f.now });
    let calls = 0;
    const ms = await ctx.time((rec) => { calls++; rec.dispatch({} as any); }, { warmup: 2, iters: 3, repeat: 4 });
    expect(calls).toBe((2 + 3) * 4);
    expect(f.checked()).toBe(1);
    expect(ms).toBe(median([30, 20, 40])); // the two warm-ups (50, 10) are not counted
  });

  it('reads GPU timestamps when asked and available, wall clock when told to', async () => {
    let clock = 0;
    const rows: { label: string; calls: number; totalMs: number }[] = [];
    const profiler = { enabled: false, reset: () => { rows.length = 0; }, report: () => rows };
    const gpu = {
      caps: { timestampQuery: true },
      profiler,
      recorder: () => {
        const r = { dispatches: 0, dispatch: () => { r.dispatches++; }, submit: () => {
          clock += 100; // wall: 100 ms per submit
          // GPU: 2 ms per dispatch, recorded asynchronously like the real timestamp readback.
          const n = r.dispatches, on = profiler.enabled;
          setTimeout(() => { if (on) rows.push({ label: 'k', calls: n, totalMs: 2 * n }); }, 1);
        } };
        return r;
      },
      sync: async () => {},
      checked: async <T>(fn: () => Promise<T>) => fn(),
      temps: { releaseAll: () => {} },
    } as unknown as Gpu;
    const ctx = new RunContext(gpu, { quick: true, peers: false, env: 'node', timestamps: true, now: () => clock });
    expect(ctx.timestamps).toBe(true);
    expect(await ctx.time((rec) => rec.dispatch({} as any), { warmup: 1, iters: 3, repeat: 5 })).toBe(2);
    expect(profiler.enabled).toBe(false); // restored
    expect(await ctx.time((rec) => rec.dispatch({} as any), { warmup: 0, iters: 1, repeat: 5, clock: 'wall' })).toBe(20);
  });

  it('derives GFLOP/s, GB/s and % of the ceilings, peer ratios and errors', () => {
    const ctx = new RunContext({} as Gpu, { quick: true, peers: true, env: 'browser' });
    ctx.ceilings = { fmaGflops: 200, copyGBps: 50 };
    ctx.suite = 's';
    const r = ctx.result({ suite: '', name: 'n', variant: 'v', shape: 'x', medianMs: 2, bytes: 4e6, flops: 8e8 });
    expect(r.suite).toBe('s');
    expect(r.gflops).toBeCloseTo(400, 9);
    expect(r.gbps).toBeCloseTo(2, 9);
    expect(r.pctFma).toBeCloseTo(200, 9);
    expect(r.pctCopy).toBeCloseTo(4, 9);
    expect(ctx.peer({ suite: '', name: 'n', peer: 'p', oursMs: 2, peerMs: 5 }).ratio).toBe(2.5);
    ctx.error('peer failed');
    expect(ctx.errors).toEqual([{ suite: 's', message: 'peer failed' }]);
    expect(median([3, 1, 2, 10])).toBe(2.5);
  });
});
