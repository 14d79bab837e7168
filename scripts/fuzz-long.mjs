#!/usr/bin/env node
/**
 * The longer loader fuzz run (the CI run is test/unit/fuzz.test.ts with 10,000 inputs).
 *
 *   node scripts/fuzz-long.mjs [--count 200000] [--seeds 1,2,3] [--deadline 5000]
 *
 * Runs the same seeded fuzz test once per seed with WEBMOE_FUZZ_COUNT inputs (40% safetensors/index
 * files, 10% GGUF files, a quarter config.json, a quarter tokenizer.json); prints each run's counts and exits non-zero
 * if any input hung, threw an untyped error, broke a resource bound or missed its expected outcome.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : def;
};
if (args.includes('--help') || args.includes('-h')) {
  console.log('usage: node scripts/fuzz-long.mjs [--count 200000] [--seeds 1,2,3] [--deadline 5000]');
  process.exit(0);
}
const count = Number(opt('count', '200000'));
const seeds = String(opt('seeds', String(Date.now() % 100000))).split(',').map(Number);
const deadline = Number(opt('deadline', '5000'));
if (!Number.isInteger(count) || count < 4 || seeds.some((s) => !Number.isInteger(s)) || !(deadline > 0)) {
  console.error('fuzz-long: --count must be an integer ≥ 4, --seeds a comma-separated list of integers, --deadline > 0 ms');
  process.exit(2);
}

let failed = 0;
for (const seed of seeds) {
  console.log(`\n=== fuzz: seed ${seed}, ${count} inputs, ${deadline} ms deadline per input ===`);
  const t0 = Date.now();
  const r = spawnSync('npx', ['vitest', 'run', '--project', 'unit', 'test/unit/fuzz.test.ts'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, WEBMOE_FUZZ_COUNT: String(count), WEBMOE_FUZZ_SEED: String(seed), WEBMOE_FUZZ_DEADLINE_MS: String(deadline) },
  });
  console.log(`=== seed ${seed}: ${r.status === 0 ? 'passed' : 'FAILED'} in ${((Date.now() - t0) / 1000).toFixed(0)} s ===`);
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
