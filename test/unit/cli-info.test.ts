import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main, type CliIO } from '../../src/cli';
import { serveSyntheticRepo, type SyntheticServer } from '../../src/bench/synthetic-server';
import { parseConfig } from '../../src/model/config';
import { planMemory } from '../../src/model/memory-plan';

const realConfig = (model: string): Record<string, unknown> =>
  JSON.parse(readFileSync(new URL(`../data/configs/${model}/config.json`, import.meta.url), 'utf8'));

function io() {
  const out: string[] = [], err: string[] = [];
  const cio: CliIO = { out: (s) => out.push(s), err: (s) => err.push(s) };
  return { out, err, io: cio };
}

describe('webmoe info: the plan from config and headers only', () => {
  let v3: SyntheticServer;
  beforeAll(async () => { v3 = await serveSyntheticRepo(realConfig('DeepSeek-V3')); });
  afterAll(async () => { await v3.close(); });

  it("DeepSeek-V3 (671B, FP8 shards) over HTTP: prints the plan after reading config.json, the index and each shard's header", async () => {
    v3.resetStats();
    const c = io();
    expect(await main(['info', '--model', v3.url, '--weights', 'q4', '--context', '4096'], c.io), c.err.join('')).toBe(0);
    const r = JSON.parse(c.out.join(''));
    expect(r.model.parameters / 1e9).toBeGreaterThan(650);
    expect(r.plan.storage).toMatchObject({ weights: 'q4', experts: 'q4', kvCache: 'f16' });
    expect(r.plan.checkpoint.byDtype.F8_E4M3 / 1e9).toBeGreaterThan(600);
    expect(r.plan.gpuBytes).toBe(planMemory(parseConfig(realConfig('DeepSeek-V3')), null, { weights: 'q4', contextLength: 4096 }).gpuBytes);
    // Bytes the server sent: config and index, then per shard the 64 KiB probe and, when the header is
    // longer, the header again by a range read — never tensor data past the header.
    const shards = v3.repo.shards;
    let allowed = v3.repo.files.get('config.json')!.size + v3.repo.files.get('model.safetensors.index.json')!.size;
    for (const s of shards) {
      const f = v3.repo.files.get(s)!;
      const first = f.read(0, 8);
      const headerEnd = 8 + new DataView(first.buffer).getUint32(0, true);
      const bound = headerEnd <= 64 << 10 ? 64 << 10 : (64 << 10) + headerEnd;
      allowed += bound;
      expect(v3.stats.byFile.get(s) ?? 0, s).toBeLessThanOrEqual(bound);
      for (const q of v3.stats.requests.filter((x) => x.file === s)) expect(Number(/-(\d+)$/.exec(q.range ?? '')?.[1]), `${s} ${q.range}`).toBeLessThan(headerEnd + (64 << 10));
    }
    expect(v3.stats.bytesSent).toBeLessThanOrEqual(allowed);
    expect(v3.stats.bytesSent).toBeLessThan(100e6); // of a 690 GB checkpoint
    console.info(`webmoe info DeepSeek-V3: ${v3.stats.bytesSent} bytes read of ${v3.repo.tensorBytes}, gpuBytes (q4, 4096) ${r.plan.gpuBytes}`);
  });

  it('a folder: the fixture, with --weights and --context', async () => {
    const c = io();
    const dir = new URL('../fixtures/deepseek-v3-tiny/', import.meta.url).pathname;
    expect(await main(['info', '--model', dir, '--weights', 'q8', '--context', '128'], c.io), c.err.join('')).toBe(0);
    const r = JSON.parse(c.out.join(''));
    expect(r.plan).toMatchObject({ contextLength: 128, prefillTokens: 128, storage: { weights: 'q8' } });
    expect(r.plan.kvCache.bytes).toBe(3 * 40 * 2 * 128); // f16 cache: the GPU default
    const c32 = io();
    expect(await main(['info', '--model', dir, '--weights', 'q8', '--context', '128', '--kv-cache', 'f32'], c32.io), c32.err.join('')).toBe(0);
    const r32 = JSON.parse(c32.out.join(''));
    expect(r32.plan.storage.kvCache).toBe('f32');
    expect(r32.plan.kvCache.bytes).toBe(3 * 40 * 4 * 128);
    const bad = io();
    expect(await main(['info', '--model', dir, '--kv-cache', 'f8'], bad.io)).not.toBe(0);
    expect(bad.err.join('')).toMatch(/kv-cache/);
  });

  it('--prefill-chunk: the activations are planned for that chunk (as generate and serve load with it)', async () => {
    const dir = new URL('../fixtures/deepseek-v3-tiny/', import.meta.url).pathname;
    const plans = [];
    for (const chunk of ['16', '128']) {
      const c = io();
      expect(await main(['info', '--model', dir, '--weights', 'f32', '--context', '128', '--prefill-chunk', chunk], c.io), c.err.join('')).toBe(0);
      plans.push(JSON.parse(c.out.join('')).plan);
    }
    expect(plans.map((p) => p.prefillTokens)).toEqual([16, 128]);
    expect(plans[0].activations.prefillBytes).toBeLessThan(plans[1].activations.prefillBytes);
  });
});
