// The demo on the WebAssembly engine (issue 23): `?device=wasm` runs the bundled model in the page's
// Worker on the CPU (its worker pool over SharedArrayBuffer: the preview server sends COOP/COEP), streams
// a greedy completion, and the device panel says which engine runs it and why; without WebGPU,
// `?device=auto` picks WASM and says so.
import { test, expect, type Page } from '@playwright/test';

async function generate(page: Page, tokens: number) {
  await page.click('#mode button[data-mode="raw"]');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', String(tokens));
  await page.uncheck('#stop-eos');
  await page.fill('#prompt', 'The Fulton County Grand Jury said');
  await page.click('#send');
  await expect(page.locator('#output[data-state="error"], #output[data-state="done"]')).toBeVisible({ timeout: 120_000 });
  expect(await page.locator('#output').getAttribute('data-state'), await page.locator('#error-banner').innerText()).toBe('done');
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');
  await expect.poll(async () => Number(await page.locator('#output').getAttribute('data-tokens'))).toBe(tokens);
}

test('?device=wasm: the bundled model streams on the WebAssembly engine; the device panel says so', async ({ page }) => {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto('/?device=wasm');
  await expect(page.locator('#status[data-state="ready"], #status[data-state="error"]')).toBeVisible({ timeout: 120_000 });
  await expect(page.locator('#error-banner'), await page.locator('#error-banner').innerText()).toBeHidden();
  await generate(page, 20);
  expect(Number(await page.locator('#tokps').getAttribute('data-value'))).toBeGreaterThan(0);
  const backend = page.locator('#backend-status');
  await expect(backend).toHaveAttribute('data-backend', 'wasm');
  await expect(backend).toContainText('WebAssembly');
  await expect(backend).toContainText('device wasm was asked for');
  // Cross-origin isolated: the worker pool runs (more than one thread on a multi-core machine).
  expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
  const cores = await page.evaluate(() => navigator.hardwareConcurrency);
  if (cores > 1) await expect(backend).toContainText(/\d+ threads/);
  expect(errors).toEqual([]);
});

// (The init script hides navigator.gpu from the page only: its Worker may still find SwiftShader, which
// 'auto' also turns down. Either reason is right here; both mean no hardware GPU.)
test('without WebGPU in the page, ?device=auto runs the WebAssembly engine and says why', async ({ page }) => {
  await page.addInitScript(() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true }));
  await page.goto('/?device=auto');
  await expect(page.locator('#status[data-state="ready"], #status[data-state="error"]')).toBeVisible({ timeout: 120_000 });
  await expect(page.locator('#error-banner'), await page.locator('#error-banner').innerText()).toBeHidden();
  await expect(page.locator('#nogpu')).toHaveCount(0);
  await generate(page, 8);
  const backend = page.locator('#backend-status');
  await expect(backend).toHaveAttribute('data-backend', 'wasm');
  await expect(backend).toContainText(/auto: (no usable WebGPU|the WebGPU adapter .* is a (CPU fallback adapter|software renderer))/);
});

test('without WebGPU the explanation links the WebAssembly engine', async ({ page }) => {
  await page.addInitScript(() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true }));
  await page.goto('/');
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'unsupported');
  await expect(page.locator('#use-wasm')).toHaveAttribute('href', '?device=wasm');
});
