#!/usr/bin/env node
// `npm run bench`: serves the site with Vite, opens bench.html in headless Chromium (WebGPU on the
// machine's GPU, or SwiftShader without one), waits for the run and prints one table.
//
//   npm run bench -- [--quick] [--json FILE] [--suites a,b] [--no-peers] [--node] [--timeout MIN]
//
// --quick      small shapes, few iterations (about two minutes on a software GPU)
// --json FILE  also writes the report (the same JSON the page's "Download JSON" exports)
// --suites     only these suites (names as in src/bench/suites/*)
// --no-peers   skip the onnxruntime-web peers
// --node       run in Node on dawn.node (the `webgpu` package) instead of Chromium; no peers
// --busy-wait  (--node) wait for the queue as dawn.node does, its JS thread spinning (default: it yields
//              after 10 ms; src/gpu/wait.ts, used by every Gpu wait)
// --timestamps time kernels with GPU timestamp queries when the device has them (default: wall clock)
// --screenshot FILE  saves a full-page screenshot of the finished benchmark page
// Exits non-zero when the run crashes or times out (a failing suite is reported, not fatal).
import { createServer as createNetServer } from 'node:net';
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromiumPath, chromiumArgs } from './chromium.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function parseArgs(argv) {
  const o = { quick: false, json: null, suites: [], peers: true, node: false, timeoutMin: null, screenshot: null, timestamps: false, busyWait: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--gpu-budget') { process.env.WEBMOE_BENCH_GPU_BUDGET_MIB = value(); continue; }
    if (a === '--quick') o.quick = true;
    else if (a === '--json') o.json = value();
    else if (a.startsWith('--json=')) o.json = a.slice(7);
    else if (a === '--suites') o.suites = value().split(',').filter(Boolean);
    else if (a.startsWith('--suites=')) o.suites = a.slice(9).split(',').filter(Boolean);
    else if (a === '--no-peers') o.peers = false;
    else if (a === '--node') o.node = true;
    else if (a === '--timestamps') o.timestamps = true;
    else if (a === '--busy-wait') o.busyWait = true;
    else if (a === '--timeout') o.timeoutMin = Number(value());
    else if (a === '--screenshot') o.screenshot = value();
    else if (a === '--help' || a === '-h') {
      console.log('usage: npm run bench -- [--quick] [--json FILE] [--gpu-budget MiB] [--suites a,b] [--no-peers] [--node] [--timeout MIN] [--timestamps] [--busy-wait] [--screenshot FILE]');
      process.exit(0);
    } else throw new Error(`unknown option ${a} (see --help)`);
  }
  o.timeoutMin ??= o.quick ? 10 : 90;
  return o;
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createNetServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const t0 = Date.now();
const stamp = () => `[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s]`;

async function runInBrowser(server, url, o) {
  const { chromium } = await import('playwright');
  const browser = await chromium.launch({ executablePath: chromiumPath(), args: chromiumArgs(), headless: true });
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    page.on('pageerror', (e) => console.error(`${stamp()} page error: ${e.message}`));
    page.on('crash', () => console.error(`${stamp()} the page crashed`));
    browser.on('disconnected', () => console.error(`${stamp()} the browser disconnected`));
    page.on('console', (m) => { if (m.type() === 'error' || process.env.WEBMOE_BENCH_VERBOSE) console.error(`${stamp()} console: ${m.text()} ${m.location()?.url ?? ''}`); });
    const q = new URLSearchParams({ auto: '1' });
    if (o.quick) q.set('quick', '1');
    if (o.suites.length) q.set('suites', o.suites.join(','));
    if (!o.peers) q.set('peers', '0');
    if (o.timestamps) q.set('timestamps', '1');
    await page.goto(`${url}bench.html?${q}`);
    const deadline = Date.now() + o.timeoutMin * 60_000;
    let seen = 0;
    for (;;) {
      const s = await page.evaluate(() => {
        const b = window.__webmoeBench;
        return b ? { status: b.status, fraction: b.fraction, log: b.log.slice(), error: b.error } : null;
      });
      if (s) {
        const fresh = s.log.length >= seen ? s.log.slice(seen) : s.log;
        for (const line of fresh) console.log(`${stamp()} ${(100 * s.fraction).toFixed(0).padStart(3)}%  ${line}`);
        seen = s.log.length;
        if (s.status === 'done') {
          if (o.screenshot) await page.screenshot({ path: resolve(process.cwd(), o.screenshot), fullPage: true });
          return await page.evaluate(() => window.__webmoeBench.result);
        }
        if (s.status === 'error' || s.status === 'unavailable') throw new Error(`the benchmark page reports: ${s.error}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out after ${o.timeoutMin} min`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    await browser.close();
  }
}

async function runInNode(server, url, o) {
  // As in vitest.config.ts: without a real GPU, point Dawn's Vulkan loader at SwiftShader.
  if (!process.env.WEBMOE_REAL_GPU) process.env.VK_ICD_FILENAMES ??= '/usr/lib/chromium/vk_swiftshader_icd.json';
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  const { acquireNodeGpu } = await server.ssrLoadModule('/src/node.ts');
  const { runBench } = await server.ssrLoadModule('/src/bench/runner.ts');
  const gpu = await acquireNodeGpu({ label: 'webmoe-bench', log: (m) => console.log(`${stamp()} ${m}`) });
  try {
    return await runBench(gpu, {
      quick: o.quick, suites: o.suites, peers: false, env: 'node', timestamps: o.timestamps, busyWait: o.busyWait, baseUrl: url,
      onProgress: (f, step) => console.log(`${stamp()} ${(100 * f).toFixed(0).padStart(3)}%  ${step}`),
    });
  } finally {
    gpu.destroy();
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const { createServer } = await import('vite');
  const port = await freePort();
  const server = await createServer({
    root,
    configFile: resolve(root, 'vite.config.ts'),
    logLevel: 'warn',
    clearScreen: false,
    server: { host: '127.0.0.1', port, strictPort: true, hmr: false },
    // onnxruntime-web is loaded lazily by the peers: served as is rather than discovered and
    // pre-bundled mid-run (which would reload the page).
    optimizeDeps: { exclude: ['onnxruntime-web'] },
  });
  let code = 0;
  try {
    await server.listen();
    const url = `http://127.0.0.1:${port}/`;
    console.log(`${stamp()} webmoe bench (${o.quick ? 'quick' : 'full'}${o.node ? ', node' : ''}) — serving ${url}`);
    const report = o.node ? await runInNode(server, url, o) : await runInBrowser(server, url, o);
    const { formatReport, validateReport } = await server.ssrLoadModule('/src/bench/report.ts');
    console.log('\n' + formatReport(report));
    const problems = validateReport(JSON.parse(JSON.stringify(report)));
    if (problems.length) console.warn(`\nreport schema problems:\n  ${problems.join('\n  ')}`);
    if (o.json) {
      const file = resolve(process.cwd(), o.json);
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
      console.log(`\nwrote ${file}`);
    }
  } catch (e) {
    console.error(`\nbench failed: ${e?.stack ?? e}`);
    code = 1;
  } finally {
    await server.close();
  }
  process.exit(code);
}

main();
