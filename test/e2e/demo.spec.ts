import { test, expect, type Page } from '@playwright/test';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { checkpointToGguf } from '../../src/model/gguf-convert';

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

  // A local folder (<input webkitdirectory>): the files cross into the worker as File objects.
  await page.setInputFiles('#folder-input', 'public/models/webmoe-tiny');
  await expect(page.locator('#model-panel')).toHaveAttribute('data-loads', '3', { timeout: 120_000 });
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
  await expect(page.locator('#pick-gguf')).toBeEnabled({ timeout: 60_000 });
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
