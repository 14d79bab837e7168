#!/usr/bin/env -S npx tsx
/**
 * The README's "Model sizes" table: the memory plan (src/model/memory-plan.ts, the same plan `webmoe
 * info` prints and the loader checks) of the real models whose config.json is in test/data/configs, at
 * f16 / q8 / q4 weight storage and a 4096-token context (the KV cache in the plan's GPU default, f16),
 * and what fits a GPU of 8 GB and of 16 GB.
 *
 *   npx tsx scripts/model-sizes.mts            (markdown, as pasted into the README)
 *   npx tsx scripts/model-sizes.mts --json     (every plan as JSON)
 *
 * The device budget assumed for "fits": the whole GPU memory for webmoe, and a 2 GiB binding /
 * 4 GiB buffer limit (what browsers commonly grant on discrete and Apple GPUs; `webmoe info` and the
 * loader use the real device's limits).
 */
import { readFileSync } from 'node:fs';
import { familyLabel, parseConfig } from '../src/model/config';
import { planMemory, whatFits, type DeviceBudget, type StorageFormat } from '../src/model/memory-plan';

const MODELS = ['DeepSeek-V2-Lite', 'Moonlight-16B-A3B-Instruct', 'DeepSeek-V3', 'Qwen1.5-MoE-A2.7B', 'Qwen3-30B-A3B', 'OLMoE-1B-7B-0924', 'Mixtral-8x7B-v0.1', 'granite-3.1-3b-a800m', 'gpt-oss-20b'];
const STORAGE: StorageFormat[] = ['f16', 'q8', 'q4'];
const CONTEXT = 4096;
const GiB = 2 ** 30;
const budget = (memoryBytes: number): DeviceBudget & { memoryBytes: number } => ({ maxStorageBufferBindingSize: 2 * GiB, maxBufferSize: 4 * GiB, memoryBytes });

const gb = (n: number) => (n / 1e9).toFixed(n >= 100e9 ? 0 : 2);
const rows: string[][] = [];
const expect: string[][] = [];
const plans: unknown[] = [];
const kvFormats = new Set<string>();
for (const model of MODELS) {
  const cfg = parseConfig(JSON.parse(readFileSync(new URL(`../test/data/configs/${model}/config.json`, import.meta.url), 'utf8')));
  for (const weights of STORAGE) {
    const p = planMemory(cfg, null, { weights, contextLength: CONTEXT, device: budget(Infinity) });
    plans.push({ name: model, ...p });
    kvFormats.add(p.storage.kvCache);
    rows.push([model, weights === 'f16' ? 'f16 or bf16' : weights, String(p.expertStacks.length), gb(p.weights.bytes), gb(p.kvCache.bytes), gb(p.activations.bytes + p.runtime.bytes), gb(p.gpuBytes), `${gb(p.largestBinding.bytes)} (${p.largestBinding.name.replace(/^model\.layers\.\d+\.mlp\.experts\.\*: /, 'experts ')})`]);
  }
  const fit = (mem: number) => {
    const f = whatFits(cfg, null, { weights: 'f32', contextLength: CONTEXT }, budget(mem));
    const best = f.find((a) => a.weights !== 'f32');
    return best ? `${best.weights}, ${best.contextLength} tokens (${gb(best.gpuBytes)} GB)` : 'does not fit (needs expert offload or a server)';
  };
  const counts = planMemory(cfg, null).model;
  expect.push([model, familyLabel(cfg), `${(counts.parameters / 1e9).toFixed(1)}B (${(counts.activeParameters / 1e9).toFixed(1)}B active)`, fit(8e9), fit(16e9)]);
}

if (process.argv.includes('--json')) {
  console.log(JSON.stringify(plans, null, 2));
} else {
  const table = (head: string[], body: string[][]) => [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  console.log(table(['model', 'weights', 'expert stacks per layer', 'weights GB', `KV GB (${CONTEXT} tokens, ${[...kvFormats].join('/')})`, 'activations + runtime GB', 'gpuBytes GB', 'largest binding GB'], rows));
  console.log();
  console.log(table(['model', 'family', 'parameters', '8 GB GPU: best that fits', '16 GB GPU: best that fits'], expect));
}
