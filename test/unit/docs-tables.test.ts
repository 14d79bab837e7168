import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
// @ts-ignore plain ESM script
import { TABLES, applyTable, balanceTable, bucketMeans, maxvioTables } from '../../scripts/docs-tables.mjs';

// The docs' generated tables equal what scripts/docs-tables.mjs renders from their committed inputs
// (no timing is measured here: the inputs are committed JSON files and configs).
type Table = { id: string; file: string; input: string; render(): string[] };

describe('docs tables', () => {
  const committed = (TABLES as Table[]).filter((t) => existsSync(t.input));

  it('every generated table with a committed input is what its input gives (node scripts/docs-tables.mjs --check)', () => {
    expect(committed.map((t) => t.id)).toEqual(expect.arrayContaining(['model-sizes', 'card-architecture', 'card-heldout', 'sparse-quality', 'sparse-perf', 'card-balance', 'model-peers']));
    const out = execFileSync(process.execPath, ['scripts/docs-tables.mjs', '--check'], { encoding: 'utf8' });
    for (const t of committed) expect(out).toContain(`${t.id}: up to date`);
  }, 60_000);

  it('a changed number in a table is put back from its input', () => {
    const t = (TABLES as Table[]).find((x) => x.id === 'card-architecture')!;
    const md = readFileSync(t.file, 'utf8');
    const edited = md.replace('| hidden_size | 256 |', '| hidden_size | 512 |');
    expect(edited).not.toBe(md);
    expect(applyTable(edited, t)).toBe(md);
  });

  it('a table without its markers is an error, not a silent skip', () => {
    const t = (TABLES as Table[]).find((x) => x.id === 'card-architecture')!;
    expect(() => applyTable('# no table here\n', t)).toThrow(/markers/);
  });

  it('the card\'s expert-balance table is its JSON: MaxVio = max load / mean load − 1 of the committed counts', () => {
    const t = (TABLES as Table[]).find((x) => x.id === 'card-balance')!;
    const j = JSON.parse(readFileSync(t.input, 'utf8'));
    const md = readFileSync(t.file, 'utf8');
    expect(md).toContain(t.render().join('\n'));
    expect(t.render()[0]).toContain('node tools/expert-balance.mjs');
    expect(t.render()[0]).toMatch(/run \d{4}-\d{2}-\d{2}/);
    for (const l of j.layers) {
      // Every held-out token is counted top-k times over the routed experts.
      expect(l.counts).toHaveLength(j.routedExperts);
      const sum = l.counts.reduce((a: number, b: number) => a + b, 0);
      expect(sum).toBe(j.tokens * j.topK);
      expect(l.maxVio).toBeCloseTo(Math.max(...l.counts) / (sum / j.routedExperts) - 1, 4);
      expect(l.minLoadShare).toBeCloseTo(Math.min(...l.counts) / sum, 4);
      expect(l.windowMaxVioMax).toBeGreaterThanOrEqual(l.windowMaxVioMean);
      expect(md).toContain(`| ${l.layer} | ${l.maxVio.toFixed(3)} | ${l.windowMaxVioMean.toFixed(3)} | ${l.windowMaxVioMax.toFixed(3)} |`);
    }
  });

  it('expert-balance rows from a synthetic JSON', () => {
    const j = { device: 'wasm', weights: 'f32', seconds: 3, tokens: 512, windows: 2, seq: 256, routedExperts: 4, topK: 2,
      layers: [{ layer: 1, maxVio: 0.5, windowMaxVioMean: 0.6, windowMaxVioMax: 0.75, minLoadShare: 0.125, maxLoadShare: 0.375 }] };
    const lines = balanceTable(j, 'cmd --x', '2026-01-02');
    expect(lines[0]).toContain('`cmd --x` (run 2026-01-02;');
    expect(lines[0]).toContain('512 held-out tokens in 2 windows of 256');
    expect(lines).toContain('| 1 | 0.500 | 0.600 | 0.750 | 12.50 % / 37.50 % |');
    expect(lines[2]).toContain('uniform 25.00 %');
  });

  it('MaxVio tables from a training log: step-range means per layer, as model_card.py buckets them', () => {
    // 12 steps, 2 MoE layers: layer 1 MaxVio = step, layer 2 = 2·step.
    const maxvio = Array.from({ length: 12 }, (_, i) => [i + 1, 2 * (i + 1)]);
    expect(bucketMeans(maxvio)).toEqual([['1–10', [5.5, 11]], ['11–12', [11.5, 23]]]);
    const log = {
      moe_layers: [1, 2],
      runs: [
        { label: 'γ=0.005 (this model)', maxvio, loss: Array(12).fill(5) },
        { label: 'γ=0 (no balancing)', maxvio: maxvio.slice(0, 10).map(([a, b]) => [a + 1, b + 1]), loss: Array(10).fill(6) },
      ],
    };
    const lines = maxvioTables(log);
    expect(lines).toContain('| steps | L1 γ=0.005 (this model) | L1 γ=0 (no balancing) | L2 γ=0.005 (this model) | L2 γ=0 (no balancing) |');
    expect(lines).toContain('| 1–10 | 5.50 | 6.50 | 11.00 | 12.00 |');
    // Both runs over their common first 10 steps; the second half is steps 6–10.
    expect(lines).toContain('| γ=0.005 (this model) | 5.50, 11.00 | 8.00, 16.00 | 5.000 |');
    expect(lines).toContain('| γ=0 (no balancing) | 6.50, 12.00 | 9.00, 17.00 | 6.000 |');
    // The whole run: the main run only, all 12 steps.
    expect(lines.slice(lines.indexOf('### Over the whole training run (with balancing)'))).toEqual([
      '### Over the whole training run (with balancing)', '',
      '| steps | layer 1 | layer 2 |', '|---|---|---|',
      '| 1–10 | 5.50 | 11.00 |', '| 11–12 | 11.50 | 23.00 |',
    ]);
  });
});
