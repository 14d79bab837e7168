// The demo's GPU budget control: a budget below the minimum says the minimum (typed error, the loaded
// model stays); a budget between it and the full plan reloads the bundled model with expert offload,
// and a reply then shows the offload figures while the routing map marks the experts on the GPU.
import { test, expect } from '@playwright/test';
import { existsSync } from 'node:fs';

const BUNDLED = 'public/models/webmoe-tiny/config.json';

test('a GPU budget reloads the model with expert offload; the routing map marks resident experts', async ({ page }) => {
  test.skip(!existsSync(BUNDLED), 'bundled model not exported yet');
  test.setTimeout(300_000);
  await page.goto('/');
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready', { timeout: 180_000 });
  await expect(page.locator('#offload-table')).toBeHidden();
  const fullMiB = Number(await page.locator('#memory-plan-gpu').getAttribute('data-value')) / 2 ** 20;
  expect(fullMiB).toBeGreaterThan(1);

  // 1 MiB: below the minimum, which the error names.
  await page.fill('#gpu-budget', '1');
  await page.click('#budget-apply');
  await expect(page.locator('#error-banner')).toBeVisible({ timeout: 60_000 });
  await expect(page.locator('#error-code')).toHaveText('GPU_LIMIT_EXCEEDED');
  const message = await page.locator('#error-message').innerText();
  const minMiB = Number(/the minimum is ([\d.]+) MiB/.exec(message)?.[1]);
  expect(minMiB, message).toBeGreaterThan(1);
  expect(minMiB).toBeLessThan(fullMiB);
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');
  await page.click('#error-dismiss');

  // Halfway between the minimum and the full plan.
  await page.fill('#gpu-budget', String(Math.ceil((minMiB + fullMiB) / 2)));
  await page.click('#budget-apply');
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'loading');
  await expect(page.locator('#status[data-state="ready"], #status[data-state="error"]')).toBeVisible({ timeout: 180_000 });
  await expect(page.locator('#error-banner')).toBeHidden();

  await page.click('#mode button[data-mode="raw"]');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '8');
  await page.fill('#prompt', 'The old man');
  await page.click('#send');
  await expect(page.locator('#output[data-state="error"], #output[data-state="done"]')).toBeVisible({ timeout: 240_000 });
  expect(await page.locator('#output').getAttribute('data-state')).toBe('done');
  await expect(page.locator('#offload-table')).toBeVisible();
  const capacity = Number(/^(\d+) of 16 per MoE layer$/.exec(await page.locator('#offload-capacity').innerText())?.[1]);
  expect(capacity).toBeGreaterThanOrEqual(4); // top-4 of 16
  expect(capacity).toBeLessThan(16);
  const hit = Number(await page.locator('#offload-hit').getAttribute('data-value'));
  expect(hit).toBeGreaterThan(0);
  expect(hit).toBeLessThanOrEqual(1);
  // 3 MoE layers, `capacity` experts each on the GPU, marked in the reply's map.
  await expect(page.locator('#routing-resident')).toBeVisible();
  await expect(page.locator('#heatmap')).toHaveAttribute('data-resident', String(3 * capacity));
});
