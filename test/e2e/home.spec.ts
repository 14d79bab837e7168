import { test, expect } from '@playwright/test';

test('the page shows the WebGPU adapter and its limits', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('#gpu-status')).toHaveAttribute('data-ready', '1', { timeout: 60_000 });
  await expect(page.locator('#gpu-status')).toContainText('Max storage binding');
});
