import { test, expect, type Page } from '@playwright/test';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { checkpointToGguf } from '../../src/model/gguf-convert';
import { planMemory } from '../../src/model/memory-plan';
import { parseRange, syntheticRepo } from '../../src/bench/synthetic-server';
import { readFileSync } from 'node:fs';

const BUNDLED = 'public/models/webmoe-tiny/config.json';

async function numberOf(page: Page, selector: string, attr = 'data-value'): Promise<number> {
  return Number(await page.locator(selector).getAttribute(attr));
}

test('without WebGPU the page explains why and what to do', async ({ page }) => {
  await page.addInitScript(() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true }));
  await page.goto('/');
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'unsupported');
  await expect(page.locator('#nogpu')).toBeVisible();
  await expect(page.locator('#nogpu')).toContainText('does not expose WebGPU');
  await expect(page.locator('#nogpu')).toContainText('chrome://flags/#enable-unsafe-webgpu');
  await expect(page.locator('#send')).toBeDisabled();
});

test('a model that cannot be loaded shows a typed, dismissable error', async ({ page }) => {
  await page.goto('/?model=./models/no-such-model/');
  const banner = page.locator('#error-banner');
  await expect(banner).toBeVisible({ timeout: 60_000 });
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'error');
  expect((await page.locator('#error-code').textContent())?.length).toBeGreaterThan(0);
  expect((await page.locator('#error-message').textContent())?.length).toBeGreaterThan(0);
  await page.click('#error-dismiss');
  await expect(banner).toBeHidden();
  await expect(page.locator('#send')).toBeDisabled();
});

test('MTP draft: the bundled model decodes speculatively and the acceptance shows', async ({ page }) => {
  test.skip(!existsSync(BUNDLED), 'bundled model not exported yet');
  test.setTimeout(300_000);
  await page.goto('/');
  await expect(page.locator('#status[data-state="ready"], #status[data-state="error"]')).toBeVisible({ timeout: 180_000 });
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');
  await page.click('#mode button[data-mode="raw"]');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '24');
  await page.uncheck('#stop-eos');
  await page.uncheck('#routing-toggle'); // replies that record routing decode plainly
  await expect(page.locator('#speculative-toggle')).toBeChecked();
  await page.fill('#prompt', 'The jury said it did find that the city executive committee');
  await page.click('#send');
  await expect(page.locator('#output[data-state="error"], #output[data-state="done"]')).toBeVisible({ timeout: 240_000 });
  expect(await page.locator('#output').getAttribute('data-state'), await page.locator('#error-banner').innerText()).toBe('done');
  await expect(page.locator('#mtp-accept')).toHaveText(/^\d+% · \d\.\d\d\/fwd$/);
  const rate = await numberOf(page, '#mtp-accept');
  expect(rate).toBeGreaterThan(0);
  expect(rate).toBeLessThanOrEqual(1);
});

test('the bundled model streams tokens; routing and memory show numbers', async ({ page }) => {
  test.skip(!existsSync(BUNDLED), 'bundled model not exported yet');
  test.setTimeout(300_000);
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto('/');
  await expect(page.locator('#status[data-state="ready"], #status[data-state="error"]')).toBeVisible({ timeout: 180_000 });
  await expect(page.locator('#error-banner'), await page.locator('#error-banner').innerText()).toBeHidden();
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');
  await expect(page.locator('#model-info')).toContainText('Parameters');
  await expect(page.locator('#model-info')).toContainText('DeepSeek-V3'); // the family (the bundled model is deepseek_v3)

  // The memory plan shown before the weights downloaded: the numbers planMemory gives for this
  // checkpoint on a CPU fallback adapter ('auto' is f32 there; context 256, the config's maximum).
  const ckpt = await openCheckpoint(localModel('public/models/webmoe-tiny'));
  const plan = planMemory(ckpt.config, ckpt.tensors.values(), { weights: 'f32', contextLength: 256, device: { isFallbackAdapter: true } });
  await ckpt.close();
  await expect(page.locator('#memory-plan')).toHaveAttribute('data-state', 'fits');
  expect(await numberOf(page, '#memory-plan-weights-f32')).toBe(plan.weights.byFormat.f32);
  expect(await numberOf(page, '#memory-plan-kv')).toBe(plan.kvCache.bytes);
  expect(await numberOf(page, '#memory-plan-activations')).toBe(plan.activations.bytes);
  expect(await numberOf(page, '#memory-plan-binding')).toBe(plan.largestBinding.bytes);
  // The runtime buffers depend on the device's offset alignment: the total within 1%.
  expect(Math.abs(await numberOf(page, '#memory-plan-gpu') - plan.gpuBytes) / plan.gpuBytes).toBeLessThan(0.01);

  // Greedy raw completion of at least 16 tokens, not cut short by an end-of-sequence token.
  await page.click('#mode button[data-mode="raw"]');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '20');
  await page.uncheck('#stop-eos');
  await expect(page.locator('#routing-toggle')).toBeChecked();
  await page.fill('#prompt', 'The Fulton County Grand Jury said');
  await page.click('#send');
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'generating');
  await expect(page.locator('#stop')).toBeVisible();
  // Tokens arrive one by one while the reply streams; a failed generation ends the wait at once.
  const output = page.locator('#output');
  await expect(page.locator('#output[data-state="error"], #output:not([data-tokens="0"])')).toBeVisible({ timeout: 180_000 });
  await expect(page.locator('#output[data-state="error"], #output[data-state="done"]')).toBeVisible({ timeout: 240_000 });
  expect(await output.getAttribute('data-state'), await page.locator('#error-banner').innerText()).toBe('done');
  expect(await numberOf(page, '#output', 'data-tokens')).toBeGreaterThanOrEqual(16);
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');
  expect(await numberOf(page, '#output', 'data-tokens')).toBe(20);
  const ids = await page.locator('#output .tok').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.token));
  expect((await page.locator('#output .tok').allTextContents()).join('').length, `token ids ${ids.join(',')}`).toBeGreaterThan(0);

  // Live numbers: decode speed, time to first token.
  expect(await numberOf(page, '#tokps')).toBeGreaterThan(0);
  await expect(page.locator('#ttft')).toHaveText(/\d/);

  // Routing: every token chose experts in every MoE layer; the cumulative load counted them.
  const heat = page.locator('#heatmap');
  expect(Number(await heat.getAttribute('data-tokens'))).toBe(20);
  expect(Number(await heat.getAttribute('data-cells'))).toBeGreaterThan(0);
  expect(Number(await heat.getAttribute('data-layers'))).toBeGreaterThan(0);
  await expect.poll(() => numberOf(page, '#load-heatmap', 'data-tokens')).toBeGreaterThanOrEqual(20);
  expect(Number.isFinite(await numberOf(page, '#maxvio'))).toBe(true);

  // Memory: the latent cache is smaller than an MHA cache would be; weights and GPU bytes are counted.
  const mla = await numberOf(page, '#memory-kv-token');
  const mha = await numberOf(page, '#memory-mha-token');
  expect(mla).toBeGreaterThan(0);
  expect(mha).toBeGreaterThan(mla);
  expect(await numberOf(page, '#memory-cached')).toBeGreaterThanOrEqual(20);
  expect(await numberOf(page, '#memory-kv')).toBeGreaterThan(0);
  expect(await numberOf(page, '#memory-weights')).toBeGreaterThan(0);
  expect(await numberOf(page, '#memory-gpu')).toBeGreaterThanOrEqual(await numberOf(page, '#memory-weights'));

  mkdirSync('test-results', { recursive: true });
  await page.screenshot({ path: 'test-results/demo.png' });

  // The page stays responsive while the worker generates: Stop ends a long reply early.
  await page.fill('#max-tokens', '200');
  await page.fill('#prompt', 'The jury said that');
  await page.click('#send');
  await expect(page.locator('#output[data-state="error"], #output:not([data-tokens="0"]):not([data-tokens="1"])')).toBeVisible({ timeout: 120_000 });
  await page.click('#stop');
  await expect(page.locator('#output')).toHaveAttribute('data-finish', 'aborted', { timeout: 60_000 });
  expect(await numberOf(page, '#output', 'data-tokens')).toBeLessThan(200);
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');

  // Sparse mode reloads the model with 2:4 expert weights.
  await page.click('#sparse-mode button[data-mode="2:4"]');
  await expect(page.locator('#model-panel')).toHaveAttribute('data-loads', '2', { timeout: 120_000 });
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');
  await expect(page.locator('#model-info')).toContainText('2:4');
  await expect(page.locator('#sparse-table tr.current')).toHaveAttribute('data-mode', '2:4');
  // The measured held-out perplexity next to dense (public/models/sparsity-quality.json).
  await expect(page.locator('#sparse-table tr[data-mode="dense"] td').nth(1)).toHaveAttribute('data-value', /^\d/);
  await expect(page.locator('#sparse-table tr[data-mode="2:4-recovered"] td').nth(1)).toContainText('×');

  // The recovered 2:4 variant: a pre-pruned sibling of the bundled model, on the sparse kernels.
  await page.click('#sparse-mode button[data-mode="2:4-recovered"]');
  await expect(page.locator('#model-panel')).toHaveAttribute('data-loads', '3', { timeout: 120_000 });
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');
  await expect(page.locator('#model-info')).toContainText('2:4 (experts, pre-pruned)');
  await expect(page.locator('#sparse-table tr.current')).toHaveAttribute('data-mode', '2:4-recovered');

  // A local folder (<input webkitdirectory>): the files cross into the worker as File objects.
  await page.setInputFiles('#folder-input', 'public/models/webmoe-tiny');
  await expect(page.locator('#model-panel')).toHaveAttribute('data-loads', '4', { timeout: 120_000 });
  await expect(page.locator('#model-panel')).toHaveAttribute('data-source', 'webmoe-tiny');
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');
  await expect(page.locator('#error-banner')).toBeHidden();
  expect(errors).toEqual([]);
});

/** `webmoe serve` on the bundled model (a free port: --port 0; the URL is read from its first line). */
async function startServe(): Promise<{ baseURL: string; child: ChildProcess; log: string[] }> {
  const child = spawn(process.execPath, ['bin/webmoe.js', 'serve', '--model', 'public/models/webmoe-tiny', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  child.stderr!.on('data', (d) => log.push(String(d)));
  let out = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += String(d);
      const m = /API at (http:\/\/\S+\/v1)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`webmoe serve exited (${code}): ${out}${log.join('')}`)));
  });
  return { baseURL: url, child, log };
}

test('the demo switches to a remote server (webmoe serve), gets a reply, and keeps the choice', async ({ page }) => {
  test.skip(!existsSync(BUNDLED), 'bundled model not exported yet');
  test.setTimeout(300_000);
  const serve = await startServe();
  try {
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto('/?model='); // the local engine loads nothing
    await expect(page.locator('#status')).toHaveAttribute('data-state', 'idle', { timeout: 60_000 });

    // A server that is not there: a typed error in the banner.
    await page.click('#engine-kind button[data-kind="remote"]');
    await expect(page.locator('#remote-form')).toBeVisible();
    await page.fill('#remote-url', 'http://127.0.0.1:9/v1');
    await page.click('#remote-connect');
    await expect(page.locator('#error-banner')).toBeVisible({ timeout: 60_000 });
    await expect(page.locator('#error-code')).toHaveText('NETWORK');
    await page.click('#error-dismiss');

    // webmoe serve (503 while it loads: the remote engine waits), then a reply streamed over SSE.
    await page.fill('#remote-url', serve.baseURL);
    await page.fill('#remote-key', 'unused');
    await page.click('#remote-connect');
    await expect(page.locator('#status[data-state="ready"], #status[data-state="error"]')).toBeVisible({ timeout: 180_000 });
    await expect(page.locator('#error-banner'), await page.locator('#error-banner').innerText()).toBeHidden();
    await expect(page.locator('#engine-status')).toHaveAttribute('data-engine', 'remote');
    await expect(page.locator('#model-name')).toHaveText('webmoe-tiny');
    await page.fill('#temperature', '0');
    await page.fill('#max-tokens', '8');
    await page.fill('#prompt', 'Hello!');
    await page.click('#send');
    await expect(page.locator('#output[data-state="error"], #output[data-state="done"]')).toBeVisible({ timeout: 180_000 });
    expect(await page.locator('#output').getAttribute('data-state'), await page.locator('#error-banner').innerText()).toBe('done');
    expect(Number(await page.locator('#output').getAttribute('data-tokens'))).toBeGreaterThan(0);
    expect((await page.locator('#output').innerText()).trim().length).toBeGreaterThan(0);
    expect(await numberOf(page, '#tokps')).toBeGreaterThan(0); // from the server's usage.extra

    // The choice is kept: a new visit connects to the same server.
    await page.goto('/?model=');
    await expect(page.locator('#engine-kind button[data-kind="remote"]')).toHaveAttribute('aria-checked', 'true');
    await expect(page.locator('#remote-url')).toHaveValue(serve.baseURL);
    await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready', { timeout: 60_000 });
    expect(errors).toEqual([]);
  } finally {
    serve.child.kill('SIGTERM');
    if (serve.child.exitCode === null) await once(serve.child, 'exit');
  }
});

test('a .gguf picked with "Open .gguf…" loads in the worker (tokenizer from its metadata) and generates', async ({ page }) => {
  test.setTimeout(240_000);
  // The bundled model as a Q8_0 GGUF, written by the converter behind `webmoe convert`.
  const ck = await openCheckpoint(localModel('public/models/webmoe-tiny'));
  mkdirSync('test-results', { recursive: true });
  const file = 'test-results/webmoe-tiny-q8_0.gguf';
  writeFileSync(file, (await checkpointToGguf(ck, 'q8_0')).file);
  await ck.close();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto('/?model=');
  // The engine exists once the page is idle (the pickers are enabled in the markup before that).
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'idle', { timeout: 60_000 });
  await expect(page.locator('#pick-gguf')).toBeEnabled();
  await page.setInputFiles('#gguf-input', file);
  await expect(page.locator('#status[data-state="ready"], #status[data-state="error"]')).toBeVisible({ timeout: 180_000 });
  await expect(page.locator('#error-banner'), await page.locator('#error-banner').innerText()).toBeHidden();
  await expect(page.locator('#model-panel')).toHaveAttribute('data-source', 'webmoe-tiny-q8_0.gguf');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '8');
  await page.fill('#prompt', 'The old man');
  await page.click('#send');
  await expect(page.locator('#output[data-state="error"], #output[data-state="done"]')).toBeVisible({ timeout: 180_000 });
  expect(await page.locator('#output').getAttribute('data-state'), await page.locator('#error-banner').innerText()).toBe('done');
  expect((await page.locator('#output').innerText()).trim().length).toBeGreaterThan(0);
  expect(errors).toEqual([]);
});

test('a model that cannot fit says why from config.json and the headers, before its weights download', async ({ page }) => {
  // DeepSeek-V3 (671B) as a real repo would serve it (163 shards of ~5 GB, generated on the fly): the
  // page's requests are answered here, with range support, counting the bytes each file sends.
  const repo = syntheticRepo(JSON.parse(readFileSync('test/data/configs/DeepSeek-V3/config.json', 'utf8')));
  const sent = new Map<string, number>();
  const whole: string[] = [];
  await page.context().route((url) => url.pathname.startsWith('/huge-v3/'), async (route) => {
    const req = route.request();
    const name = decodeURIComponent(new URL(req.url()).pathname.split('/').pop() ?? '');
    const f = repo.files.get(name);
    if (!f) return route.fulfill({ status: 404, contentType: 'text/plain', body: `${name}: not found` });
    const r = parseRange(req.headers()['range'], f.size);
    if (r === 'bad') return route.fulfill({ status: 416, headers: { 'Content-Range': `bytes */${f.size}` } });
    if (!r && f.size > 16 << 20 && req.method() !== 'HEAD') { whole.push(name); return route.fulfill({ status: 500, body: 'a whole shard was asked for' }); }
    const [a, b] = r ?? [0, f.size - 1];
    const body = req.method() === 'HEAD' ? Buffer.alloc(0) : Buffer.from(f.read(a, b - a + 1));
    sent.set(name, (sent.get(name) ?? 0) + body.length);
    await route.fulfill({
      status: r ? 206 : 200, body,
      headers: { 'Content-Type': name.endsWith('.json') ? 'application/json' : 'application/octet-stream', 'Content-Length': String(b - a + 1), 'Accept-Ranges': 'bytes', ...(r ? { 'Content-Range': `bytes ${a}-${b}/${f.size}` } : {}) },
    });
  });
  await page.goto('/?model=/huge-v3/');
  await expect(page.locator('#memory-plan[data-state="too-big"], #memory-plan[data-state="fits"]')).toBeVisible({ timeout: 120_000 });
  await expect(page.locator('#memory-plan')).toHaveAttribute('data-state', 'too-big');
  await expect(page.locator('#memory-plan')).toHaveAttribute('data-code', 'GPU_LIMIT_EXCEEDED');
  await expect(page.locator('#memory-plan-model')).toHaveText('huge-v3');
  const why = page.locator('#memory-plan-error');
  await expect(why).toBeVisible();
  await expect(why).toContainText('weights were not downloaded');
  await expect(why).toContainText(/GPU memory = \d+, but the device grants \d+/);
  await expect(why).toContainText(/What fits: --weights|No weight storage or context length makes it fit this device/);
  expect(await numberOf(page, '#memory-plan-gpu')).toBeGreaterThan(100e9);
  await expect(page.locator('#error-banner')).toBeVisible();
  await expect(page.locator('#error-code')).toHaveText('GPU_LIMIT_EXCEEDED');
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'error');
  mkdirSync('test-results', { recursive: true });
  await page.screenshot({ path: 'test-results/demo-too-big.png' });
  // Only config.json, the index and each shard's header were read: the URL loader's first range
  // request (1 MiB probe) and the rest of a longer header, and no load started after the plan.
  expect(whole).toEqual([]);
  for (const name of repo.shards) {
    const f = repo.files.get(name)!;
    const headerEnd = 8 + new DataView(f.read(0, 8).buffer).getUint32(0, true);
    expect(sent.get(name) ?? 0, name).toBeLessThanOrEqual(Math.max(1 << 20, headerEnd) + headerEnd);
  }
  const total = [...sent.values()].reduce((a, b) => a + b, 0);
  console.info(`DeepSeek-V3 in the demo: ${total} bytes read of ${repo.tensorBytes} tensor bytes before the plan said no`);
  expect(total).toBeLessThan(repo.tensorBytes / 1000);
});
