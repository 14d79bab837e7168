import { test, expect, type Page } from '@playwright/test';

// The service-worker engine in the demo (/sw.js runs the engine): the bundled model loads once and
// stays loaded across page navigations; if the browser stops the service worker, the next call loads
// the model again and says so.

const SW_CHOICE = JSON.stringify({ kind: 'service-worker', baseURL: '', apiKey: '', model: '' });

async function ready(page: Page): Promise<void> {
  await expect(page.locator('#status[data-state="ready"], #status[data-state="error"], #status[data-state="unsupported"]')).toBeVisible({ timeout: 180_000 });
  await expect(page.locator('#error-banner'), await page.locator('#error-banner').innerText()).toBeHidden();
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');
}

/** A greedy raw completion of 8 tokens; returns its text. */
async function complete(page: Page, prompt: string): Promise<string> {
  await page.click('#mode button[data-mode="raw"]');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '8');
  await page.uncheck('#stop-eos');
  await page.fill('#prompt', prompt);
  await page.click('#send');
  await expect(page.locator('#output[data-state="error"], #output[data-state="done"]')).toBeVisible({ timeout: 180_000 });
  expect(await page.locator('#output').getAttribute('data-state'), await page.locator('#error-banner').innerText()).toBe('done');
  expect(await page.locator('#output').getAttribute('data-tokens')).toBe('8');
  return (await page.locator('#output .tok').allTextContents()).join('');
}

test('the service-worker engine keeps the model loaded across navigations, and reloads it after the service worker is stopped', async ({ page, context }) => {
  test.setTimeout(420_000);
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.addInitScript((choice) => localStorage.setItem('webmoe.demo.engine', choice), SW_CHOICE);

  await page.goto('/');
  await ready(page);
  const status = page.locator('#engine-status');
  await expect(status).toHaveAttribute('data-engine', 'service-worker');
  await expect(status).toHaveAttribute('data-sw-loads', '1');
  const instance = await status.getAttribute('data-instance');
  expect(instance).toBeTruthy();
  expect(await page.evaluate(async () => !!(await navigator.serviceWorker.getRegistration())?.active)).toBe(true);
  const first = await complete(page, 'The jury said that');
  expect(first.length).toBeGreaterThan(0);

  // Another page (a new document): the model is the one already loaded in the service worker.
  await page.goto('/?visit=2');
  await ready(page);
  await expect(status).toHaveAttribute('data-sw-loads', '1');
  await expect(status).toHaveAttribute('data-instance', instance!);
  expect(await complete(page, 'The jury said that')).toBe(first);
  await expect(status).toHaveAttribute('data-sw-loads', '1');

  // The browser stops the service worker (as it does with idle ones): the next call loads the model again, says so, and answers.
  const cdp = await context.newCDPSession(page);
  await cdp.send('ServiceWorker.enable');
  await cdp.send('ServiceWorker.stopAllWorkers');
  expect(await complete(page, 'The jury said that')).toBe(first);
  await expect(page.locator('#load-notices li[data-kind="service-worker-reload"]')).toBeVisible();
  await expect(status).not.toHaveAttribute('data-instance', instance!);
  await expect(status).toHaveAttribute('data-sw-loads', '1');
  expect(errors).toEqual([]);
});
