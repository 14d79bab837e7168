/**
 * The published package as a new user gets it: `npm pack` the library, install the tarball into a fresh
 * consumer folder, and build apps that `import { createWorkerEngine } from 'webmoe'` with no worker option
 * (Vite, esbuild, webpack 5 and a plain static folder). Each app is served by its own server with the
 * bundled model under /models/, and must generate text in headless Chromium with no page error and no
 * unhandled rejection. The declaration files are type-checked as a consumer would, strict and without
 * skipLibCheck, under Bundler and NodeNext resolution, by TypeScript 5 (from the registry) and the repo's own.
 *
 *   npx playwright test --project package
 *
 * Everything lives in one temp folder, installed once for the whole file (npm's cache makes reinstalls
 * fast; the registry is only asked for what the cache lacks).
 */
import { test, expect, type Page } from '@playwright/test';
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const models = join(repo, 'public/models');
const bin = (name: string) => join(repo, 'node_modules/.bin', name);

test.describe.configure({ mode: 'serial' });

let tmp = '';
/** The consumer project: package.json + node_modules with the tarball installed; apps are subfolders. */
let consumer = '';
let tarball = '';
const servers: Server[] = [];

function run(cmd: string, args: string[], cwd: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' } });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed:\n${err.stdout ?? ''}\n${err.stderr ?? err.message}`);
  }
}

const MIME: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json', '.css': 'text/css' };

/** A plain static server (no Range support, as many are) for `root`, with the repo's models under /models/. */
async function serve(root: string): Promise<string> {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const [base, rel] = path.startsWith('/models/') ? [models, path.slice('/models/'.length)] : [root, path.slice(1) || 'index.html'];
    const file = resolve(base, rel);
    if (!file.startsWith(base + sep) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': MIME[extname(file)] ?? 'application/octet-stream', 'content-length': statSync(file).size });
    createReadStream(file).pipe(res);
  });
  servers.push(server);
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}

/** The app every bundler builds: the README's default worker engine, no options. */
const APP = `import { createWorkerEngine } from 'webmoe';
const out = document.getElementById('out');
try {
  const engine = createWorkerEngine();
  await engine.load(new URL('/models/webmoe-tiny/', location.href).href);
  let text = '';
  for await (const chunk of engine.generate('The old man', { maxTokens: 6, temperature: 0 })) text += chunk.text;
  out.textContent = text;
  out.dataset.state = 'done';
} catch (e) {
  out.textContent = (e.code ?? e.name) + ': ' + e.message;
  out.dataset.state = 'error';
}
`;
const HTML = (script: string) =>
  `<!doctype html><html><head><meta charset="utf-8"><title>webmoe consumer</title></head><body><pre id="out" data-state="running"></pre>${script}</body></html>\n`;

/** Opens the app and waits for its result; fails on page errors and unhandled rejections. */
async function runApp(page: Page, url: string): Promise<{ state: string; text: string; problems: string[] }> {
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  await page.addInitScript(() => {
    addEventListener('unhandledrejection', (ev) => {
      const w = window as unknown as { __rejections: string[] };
      (w.__rejections ??= []).push(String((ev as PromiseRejectionEvent).reason?.message ?? (ev as PromiseRejectionEvent).reason));
    });
  });
  await page.goto(url);
  const out = page.locator('#out');
  await expect(out).not.toHaveAttribute('data-state', 'running', { timeout: 120_000 });
  // Unhandled rejections are reported a task after they happen: give them that task.
  await page.waitForTimeout(200);
  problems.push(...(await page.evaluate(() => (window as unknown as { __rejections?: string[] }).__rejections ?? [])).map((r) => `unhandledrejection: ${r}`));
  return { state: (await out.getAttribute('data-state')) ?? '', text: await out.innerText(), problems };
}

function app(name: string, files: Record<string, string>): string {
  const dir = join(consumer, name);
  mkdirSync(dir, { recursive: true });
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
  return dir;
}

test.beforeAll(async () => {
  test.setTimeout(180_000);
  tmp = mkdtempSync(join(tmpdir(), 'webmoe-package-'));
  // prepack builds the library (scripts/build-lib.mjs).
  run('npm', ['pack', '--pack-destination', tmp], repo);
  tarball = join(tmp, readdirSync(tmp).find((f) => f.endsWith('.tgz'))!);
  consumer = join(tmp, 'consumer');
  mkdirSync(consumer);
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2));
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball, 'typescript@5', '@types/node@22'], consumer);
});

test.afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((ok) => s.close(ok))));
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('the tarball ships the built library only, and creates its worker with a literal bundlers follow', () => {
  const files = run('tar', ['tzf', tarball], tmp).trim().split('\n').map((f) => f.replace(/^package\//, ''));
  expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'bin/webmoe.js', 'dist/index.js', 'dist/worker.js', 'dist/service-worker.js', 'dist/node.js', 'dist/cli.js', 'dist/index.d.ts', 'dist/ts5/index.d.ts']));
  const unexpected = files.filter((f) => /\.map$|^shaders\/|^src\/|\/bench\/|\.wgsl$/.test(f) || !/^(package\.json|README\.md|bin\/webmoe\.js|dist\/)/.test(f));
  expect(unexpected).toEqual([]);
  const installed = join(consumer, 'node_modules/webmoe');
  const index = readFileSync(join(installed, 'dist/index.js'), 'utf8');
  expect(index).toMatch(/new Worker\(new URL\("\.\/worker\.js", import\.meta\.url\), \{ type: "module"/);
  // Self-contained: no bare imports a static folder or a module worker could not resolve (node: only in the Node entries).
  const js = files.filter((f) => f.endsWith('.js') && f.startsWith('dist/'));
  for (const f of js) {
    const text = readFileSync(join(installed, f), 'utf8');
    const bare = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s*["']([^"'.][^"']*)["']/g)].map((m) => m[1]).filter((s) => !s.startsWith('node:'));
    expect(bare, f).toEqual([]);
  }
  expect(JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')).dependencies ?? {}).toEqual({});
  // Every relative specifier in the declarations names its .js file (NodeNext), also in files no test program reaches.
  for (const f of files.filter((f) => f.endsWith('.d.ts'))) {
    const text = readFileSync(join(installed, f), 'utf8');
    const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*["'](\.[^"']*)["']/g)].map((m) => m[1]);
    expect(specs.filter((s) => !s.endsWith('.js')), f).toEqual([]);
  }
});

test('declarations pass tsc --strict without skipLibCheck under Bundler and NodeNext (TypeScript 5 and the repo\'s)', () => {
  const dir = app('types', {
    'browser.ts': `import { createWorkerEngine, createServiceWorkerEngine, createEngine, WebMoeError, type ModelInfo, type GenerationChunk, type LoadProgress } from 'webmoe';
import { installServiceWorkerEngine } from 'webmoe/service-worker';
export async function run(out: HTMLElement): Promise<ModelInfo> {
  const engine = createWorkerEngine();
  const info = await engine.load('/models/webmoe-tiny/', { onProgress: (p: LoadProgress) => console.log(p.phase) });
  for await (const chunk of engine.generate('The old man', { maxTokens: 4 })) {
    const c: GenerationChunk = chunk;
    out.textContent += c.text;
  }
  const reply = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 });
  out.textContent += reply.choices[0]?.message.content ?? '';
  // Types are real, not \`any\`: these must not compile.
  // @ts-expect-error layers is a number
  const layers: string = info.layers;
  // @ts-expect-error no such option
  createEngine({ nonsense: 1 });
  void layers;
  return info;
}
export const isCrash = (e: unknown): boolean => e instanceof WebMoeError && e.code === 'WORKER_CRASHED';
export const kept = (): Promise<ModelInfo> => createServiceWorkerEngine({ scriptURL: '/sw.js' }).load('/models/webmoe-tiny/');
export const installInServiceWorker = (): void => { installServiceWorkerEngine(); };
`,
    'node.ts': `import { createNodeEngine, startServer } from 'webmoe/node';
import 'webmoe/worker';
const engine = createNodeEngine({ onNotice: () => {} });
const info = await engine.load('./model');
let text = '';
for await (const c of engine.generate('x', { maxTokens: 2 })) text += c.text;
console.log(info.name, text, typeof startServer);
`,
    'tsconfig.bundler.json': JSON.stringify({ compilerOptions: { strict: true, noEmit: true, skipLibCheck: false, target: 'ES2022', module: 'ESNext', moduleResolution: 'Bundler', lib: ['ES2022', 'DOM', 'DOM.Iterable'], types: [] }, files: ['browser.ts'] }),
    'tsconfig.nodenext.json': JSON.stringify({ compilerOptions: { strict: true, noEmit: true, skipLibCheck: false, target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022', 'DOM', 'DOM.Iterable'], types: ['node'] }, files: ['browser.ts', 'node.ts'] }),
  });
  const ts5 = join(consumer, 'node_modules/typescript/bin/tsc');
  expect(JSON.parse(readFileSync(join(consumer, 'node_modules/typescript/package.json'), 'utf8')).version).toMatch(/^5\./);
  for (const config of ['tsconfig.bundler.json', 'tsconfig.nodenext.json']) {
    run(process.execPath, [ts5, '-p', config], dir); // TypeScript 5: WebGPU types from @webgpu/types (the types@<6 entry)
    run(bin('tsc'), ['-p', config], dir); // the repo's TypeScript (7): WebGPU types from lib.dom
  }
});

test('Node: `npm i webmoe webgpu` as the README says; createNodeEngine generates, says when it uses SwiftShader, and the CLI runs', () => {
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', 'webgpu@0.6'], consumer);
  const script = `import { createNodeEngine } from 'webmoe/node';
const notices = [];
const engine = createNodeEngine({ onNotice: (m) => notices.push(m) });
await engine.load(${JSON.stringify(join(models, 'webmoe-tiny'))});
let text = '';
for await (const c of engine.generate('The old man', { maxTokens: 6, temperature: 0 })) text += c.text;
process.stdout.write(JSON.stringify({ text, notices }));
`;
  writeFileSync(join(consumer, 'node-app.mjs'), script);
  const env = { ...process.env };
  delete env.VK_ICD_FILENAMES; // as a user's shell has it: the library picks the adapter
  const out = JSON.parse(execFileSync(process.execPath, ['node-app.mjs'], { cwd: consumer, env, encoding: 'utf8' })) as { text: string; notices: string[] };
  expect(out.text.trim().length).toBeGreaterThan(0);
  // The SwiftShader notice when there is no GPU driver (exactly which, in test/gpu/node-engine.test.ts); nothing else.
  expect(out.notices.length).toBeLessThanOrEqual(1);
  for (const n of out.notices) expect(n).toContain('SwiftShader');
  console.log(`node consumer: ${JSON.stringify(out)}`);
  expect(run(join(consumer, 'node_modules/.bin/webmoe'), ['--help'], consumer)).toContain('usage: webmoe');
});

test('Vite: a fresh app finds the default worker and generates text, built and in the dev server', async ({ page }) => {
  const dir = app('vite-app', { 'index.html': HTML('<script type="module" src="./main.js"></script>'), 'main.js': APP });
  const vite = join(repo, 'node_modules/vite/bin/vite.js');
  run(process.execPath, [vite, 'build', '--logLevel', 'warn', '--outDir', 'out'], dir);
  expect(readdirSync(join(dir, 'out/assets')).some((f) => f.startsWith('worker'))).toBe(true);
  const r = await runApp(page, await serve(join(dir, 'out')));
  expect(r.problems).toEqual([]);
  expect(r.state, r.text).toBe('done');
  expect(r.text.trim().length).toBeGreaterThan(0);

  // The dev server pre-bundles dependencies (optimizeDeps): the worker must still be found. Models come
  // from the app's public/ folder there.
  mkdirSync(join(dir, 'public'));
  symlinkSync(models, join(dir, 'public/models'), 'dir');
  const dev = spawn(process.execPath, [vite, '--host', '127.0.0.1', '--port', '0', '--clearScreen', 'false'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const url = await new Promise<string>((ok, fail) => {
      let seen = '';
      const onData = (b: Buffer) => {
        seen += b.toString();
        const m = /http:\/\/127\.0\.0\.1:\d+\//.exec(seen.replace(/\x1b\[[0-9;]*m/g, ''));
        if (m) ok(m[0]);
      };
      dev.stdout!.on('data', onData);
      dev.stderr!.on('data', onData);
      dev.on('exit', (code) => fail(new Error(`vite dev exited (${code}): ${seen}`)));
    });
    const page2 = await page.context().newPage();
    const d = await runApp(page2, url);
    expect(d.problems).toEqual([]);
    expect(d.state, d.text).toBe('done');
    expect(d.text.trim().length).toBeGreaterThan(0);
  } finally {
    dev.kill();
  }
});

test('esbuild: the worker entry built next to the bundle is found; without it, a typed error says what to do', async ({ page }) => {
  const dir = app('esbuild-app', { 'index.html': HTML('<script type="module" src="./app.js"></script>'), 'main.js': APP });
  // esbuild leaves `new URL('./worker.js', import.meta.url)` alone (evanw/esbuild#312): the worker must sit
  // next to the bundle, which one more entry point does.
  run(bin('esbuild'), ['app=main.js', 'worker=webmoe/worker', '--bundle', '--format=esm', '--outdir=out', '--log-level=warning'], dir);
  writeFileSync(join(dir, 'out/index.html'), readFileSync(join(dir, 'index.html')));
  const r = await runApp(page, await serve(join(dir, 'out')));
  expect(r.problems).toEqual([]);
  expect(r.state, r.text).toBe('done');
  expect(r.text.trim().length).toBeGreaterThan(0);

  // Without the worker entry the script 404s: WORKER_CRASHED naming the cause and the fix, nothing unhandled.
  run(bin('esbuild'), ['app=main.js', '--bundle', '--format=esm', '--outdir=out-missing', '--log-level=warning'], dir);
  writeFileSync(join(dir, 'out-missing/index.html'), readFileSync(join(dir, 'index.html')));
  const page2 = await page.context().newPage();
  const missing = await runApp(page2, await serve(join(dir, 'out-missing')));
  expect(missing.problems).toEqual([]);
  expect(missing.state).toBe('error');
  expect(missing.text).toContain('WORKER_CRASHED');
  expect(missing.text).toContain('failed to load');
  expect(missing.text).toContain('esbuild');
  console.log(`esbuild app without the worker entry: ${missing.text}`);
});

test('webpack 5: a fresh app (default config) finds the default worker and generates text', async ({ page }) => {
  test.setTimeout(180_000);
  // Its own project: webpack and its CLI come from the registry (or npm's cache), with the same tarball.
  const dir = app('webpack-app', { 'package.json': JSON.stringify({ name: 'webpack-app', private: true }), 'main.js': APP });
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball, 'webpack@5', 'webpack-cli@6'], dir);
  run(process.execPath, [join(dir, 'node_modules/webpack-cli/bin/cli.js'), '--mode', 'production', '--entry', './main.js', '--output-path', 'out'], dir);
  writeFileSync(join(dir, 'out/index.html'), HTML('<script src="./main.js"></script>'));
  const r = await runApp(page, await serve(join(dir, 'out')));
  expect(r.problems).toEqual([]);
  expect(r.state, r.text).toBe('done');
  expect(r.text.trim().length).toBeGreaterThan(0);
});

test('static folder: dist/ copied as is, imported from <script type="module">; a worker that throws names its error', async ({ page }) => {
  const dir = app('static-app', {
    'index.html': HTML(`<script type="module">${APP.replace("from 'webmoe'", "from './webmoe/index.js'")}</script>`),
    'crash.html': HTML(`<script type="module">
import { createWorkerEngine } from './webmoe/index.js';
const out = document.getElementById('out');
const url = URL.createObjectURL(new Blob(['throw new Error("boom in the worker")'], { type: 'text/javascript' }));
const engine = createWorkerEngine({ worker: new Worker(url, { type: 'module' }) });
try { await engine.load(new URL('/models/webmoe-tiny/', location.href).href); out.textContent = 'loaded?'; out.dataset.state = 'done'; }
catch (e) { out.textContent = e.code + ': ' + e.message; out.dataset.state = 'error'; }
</script>`),
  });
  cpSync(join(consumer, 'node_modules/webmoe/dist'), join(dir, 'webmoe'), { recursive: true });
  const base = await serve(dir);
  const r = await runApp(page, base);
  expect(r.problems).toEqual([]);
  expect(r.state, r.text).toBe('done');
  expect(r.text.trim().length).toBeGreaterThan(0);

  const page2 = await page.context().newPage();
  const crash = await runApp(page2, `${base}crash.html`);
  expect(crash.problems).toEqual([]);
  expect(crash.state).toBe('error');
  expect(crash.text).toContain('WORKER_CRASHED');
  expect(crash.text).toContain('boom in the worker');
  console.log(`a worker that throws: ${crash.text}`);
});
