#!/usr/bin/env node
/**
 * The long hardening run: test/gpu/hardening.test.ts with big counts (CI runs it seeded and short).
 * By default 10,000 generated tokens with a 64-token context and the 'slide' policy (GPU bytes must stay
 * flat after warm-up), 60 aborts at seeded random points, 3 device losses with recovery on a new device.
 *
 *   node scripts/soak.mjs [--tokens 10000] [--context 64] [--aborts 60] [--losses 3] [--seed 1] [--browser]
 *
 * --browser also runs the worker-engine hardening test in Chromium (test/browser/hardening.test.ts).
 * The test prints "hardening counts" (faults injected, tokens generated, GPU bytes before/after) at the end.
 * On SwiftShader (no GPU) decode runs at ~10-20 tokens/s on the fixture model: the default run takes
 * 10-20 minutes.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const opts = { tokens: 10_000, context: 64, aborts: 60, losses: 3, seed: 1, browser: false };
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--browser') { opts.browser = true; continue; }
  if (a === '-h' || a === '--help') {
    console.log('usage: node scripts/soak.mjs [--tokens N] [--context N] [--aborts N] [--losses N] [--seed N] [--browser]');
    process.exit(0);
  }
  const key = a.replace(/^--/, '');
  if (!(key in opts) || key === 'browser') { console.error(`unknown option ${a}`); process.exit(2); }
  const v = Number(args[++i]);
  if (!Number.isInteger(v) || v < 0) { console.error(`${a} needs a non-negative integer`); process.exit(2); }
  opts[key] = v;
}
if (opts.context < 2) { console.error('--context must be at least 2'); process.exit(2); }

const env = {
  ...process.env,
  WEBMOE_SOAK_TOKENS: String(opts.tokens),
  WEBMOE_SOAK_CONTEXT: String(opts.context),
  WEBMOE_SOAK_ABORTS: String(opts.aborts),
  WEBMOE_SOAK_LOSSES: String(opts.losses),
  WEBMOE_SOAK_SEED: String(opts.seed),
};
console.log(`soak: ${JSON.stringify(opts)}`);
const t0 = Date.now();
const run = (project, file) =>
  spawnSync('npx', ['vitest', 'run', '--project', project, file, '--reporter', 'verbose'], { cwd: root, env, stdio: 'inherit' }).status ?? 1;
let status = run('gpu-node', 'test/gpu/hardening.test.ts');
if (opts.browser) {
  const browser = run('gpu-browser', 'test/browser/hardening.test.ts');
  status = status || browser;
}
console.log(`soak: ${status === 0 ? 'passed' : 'FAILED'} in ${((Date.now() - t0) / 60_000).toFixed(1)} min`);
process.exit(status);
