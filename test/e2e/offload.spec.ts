// The demo's GPU budget control: a budget below the bundled model's plan reloads it with expert
// offload; a reply then shows the offload figures and the routing map marks the experts on the GPU.
import { test, expect } from '@playwright/test';
import { existsSync } from 'node:fs';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { planMemory } from '../../src/model/memory-plan';
import { GpuBudgetError } from '../../src/errors';

const BUNDLED = 'public/models/webmoe-tiny/config.json';

test('a GPU budget reloads the model with expert offload; the routing map marks resident experts', async ({ page }) => {
  test.skip(!existsSync(BUNDLED), 'bundled model not exported yet');
  test.setTimeout(300_000);
  // The minimum budget of the bundled model on a CPU fallback adapter ('auto' is f32 there, context 256).
  const ckpt = await openCheckpoint(localModel('public/models/webmoe-tiny'));
  const opts = { weights: 'f32' as const, contextLength: 256, device: { isFallbackAdapter: true } };
  let minimum = 0;
  try { planMemory(ckpt.config, ckpt.tensors.values(), { ...opts, gpuBudget: 1 }); } catch (e) { minimum = (e as GpuBudgetError).details!.minimumBytes as number; }
  const full = planMemory(ckpt.config, ckpt.tensors.values(), opts);
  await ckpt.close();
  expect(minimum).toBeGreaterThan(0);
  // Halfway between the minimum and the full plan, in whole MiB.
  const mib = Math.floor((minimum + full.gpuBytes) / 2 / 2 ** 20);
  const capacity = planMemory(ckpt.config, null, { ...opts, gpuBudget: mib * 2 ** 20 }).offload!.capacity;

  await page.goto('/');
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready', { timeout: 180_000 });
  await expect(page.locator('#offload-table')).toBeHidden();
  await page.fill('#gpu-budget', String(mib));
  await page.click('#budget-apply');
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'loading');
  await expect(page.locator('#status[data-state="ready"], #status[data-state="error"]')).toBeVisible({ timeout: 180_000 });
  await expect(page.locator('#error-banner'), await page.locator('#error-banner').innerText()).toBeHidden();

  await page.click('#mode button[data-mode="raw"]');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '8');
  await page.fill('#prompt', 'The old man');
  await page.click('#send');
  await expect(page.locator('#output[data-state="error"], #output[data-state="done"]')).toBeVisible({ timeout: 240_000 });
  expect(await page.locator('#output').getAttribute('data-state')).toBe('done');
  await expect(page.locator('#offload-table')).toBeVisible();
  await expect(page.locator('#offload-capacity')).toHaveText(`${capacity} of 16 per MoE layer`);
  const hit = Number(await page.locator('#offload-hit').getAttribute('data-value'));
  expect(hit).toBeGreaterThan(0);
  expect(hit).toBeLessThanOrEqual(1);
  // 3 MoE layers, `capacity` experts each on the GPU, marked in the reply's map.
  await expect(page.locator('#routing-resident')).toBeVisible();
  await expect(page.locator('#heatmap')).toHaveAttribute('data-resident', String(3 * capacity));
});
