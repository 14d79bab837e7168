import { test, expect } from '@playwright/test';
import { readFileSync } from 'node:fs';
import { validateReport } from '../../src/bench/report';

// The benchmark page (bench.html) on the built site: quick mode runs to the end in headless Chromium
// (SwiftShader without a GPU), its JSON export parses and has the report's shape. Timing is never
// asserted. Screenshots go to test-results/ (kept on failure by the config; the full-page shot of a
// finished run is saved on success too, to look at).

test('the benchmark page finishes its quick mode and exports well-formed JSON', async ({ page }, testInfo) => {
  // Generous: the quick run includes two whole-model peers (wllama, and ONNX on ORT's WebGPU EP at about
  // a second per decode step on SwiftShader), and shared CI machines run it under load.
  test.setTimeout(1_200_000);
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto('/bench.html');
  await expect(page.locator('#device table.kv')).toBeVisible({ timeout: 30_000 });
  const quick = page.locator('#run-quick');
  await expect(quick).toBeEnabled();
  await quick.click();
  await expect.poll(() => page.evaluate(() => (window as any).__webmoeBench.status), { timeout: 1_140_000, intervals: [1000] }).toMatch(/done|error/);
  const state = await page.evaluate(() => ({ status: (window as any).__webmoeBench.status, error: (window as any).__webmoeBench.error }));
  expect(state.error).toBeNull();
  expect(state.status).toBe('done');

  // The rendered page: tables, roofline, ceilings filled in.
  await expect(page.locator('#results table.data tbody tr')).not.toHaveCount(0);
  await expect(page.locator('#roofline svg .roof')).toHaveCount(1);
  await expect(page.locator('#ceilings .value[data-k="fmaGflops"]')).not.toHaveText('–');
  // The whole-model peers are on the page: the ONNX prefill / decode rows (WebGPU and wasm EPs) and wllama's.
  for (const row of ['webmoe-tiny ONNX prefill', 'webmoe-tiny ONNX decode', 'llama.cpp wasm (wllama']) await expect(page.locator('#peers')).toContainText(row);
  await expect(page.locator('#peers tr', { hasText: 'webmoe-tiny ONNX decode' })).toHaveCount(2);
  await page.screenshot({ path: testInfo.outputPath('bench-page.png'), fullPage: true });

  // The JSON export.
  const downloadButton = page.locator('#download');
  await expect(downloadButton).toBeEnabled();
  const [download] = await Promise.all([page.waitForEvent('download'), downloadButton.click()]);
  expect(download.suggestedFilename()).toMatch(/^webmoe-bench-.*\.json$/);
  const report = JSON.parse(readFileSync((await download.path())!, 'utf8'));
  expect(validateReport(report)).toEqual([]);
  expect(report.quick).toBe(true);
  expect(report.env).toBe('browser');
  expect(report.ceilings.fmaGflops).toBeGreaterThan(0);
  expect(report.ceilings.copyGBps).toBeGreaterThan(0);
  expect(report.results.some((r: { suite: string }) => r.suite === 'matmul-f32')).toBe(true);
  // The run fails loudly: no suite may have failed or recorded a problem (a peer that could not run,
  // a model that did not load, ...), whatever the tables show.
  expect(report.suites.length).toBeGreaterThan(0);
  expect(report.errors, report.errors.map((e: { suite: string; message: string }) => `${e.suite}: ${e.message}`).join('\n')).toEqual([]);
  // Peers: some ran, each checked against our kernels, and every timed peer op passed its output check.
  expect(report.peers.length, 'no peer comparison ran').toBeGreaterThan(0);
  expect(report.peerChecks.length, 'no peer output check ran').toBeGreaterThan(0);
  for (const c of report.peerChecks) expect(c.ok, `${c.peer} ${c.op} ${c.shape}: ${c.note ?? c.maxAbsDiff}`).toBe(true);
  for (const p of report.peers) {
    const checked = report.peerChecks.some((c: { peer: string; op: string; ok: boolean }) => c.peer === p.peer && c.op === p.op && c.ok);
    expect(checked, `${p.peer} ${p.op} (${p.suite} ${p.name}) was timed without a passing output check`).toBe(true);
    expect(p.symmetric, `${p.peer} ${p.name}: ours and the peer were not timed with one protocol`).toBe(true);
  }
  // Peers for every kernel family: matmul, int4 / int8 GEMV, attention (prefill, decode), MoE.
  const ops = new Set(report.peers.map((p: { op: string }) => p.op));
  for (const op of ['MatMul f32', 'MatMulNBits int4 b32', 'MatMulNBits int8 b32', 'MultiHeadAttention causal', 'GroupQueryAttention', 'MoE SwiGLU', 'MoE dense expert graph', 'whole model, GGUF Q8_0, greedy', 'whole model, ONNX f32, KV cache, greedy']) expect(ops.has(op), `no ${op} peer row`).toBe(true);
  // The ONNX whole-model peer on both of onnxruntime-web's EPs, prefill and decode rows each.
  for (const peer of ['ort-webgpu', 'ort-wasm']) expect(report.peers.filter((p: { peer: string; op: string }) => p.peer === peer && p.op === 'whole model, ONNX f32, KV cache, greedy').length, `${peer} whole-model rows`).toBe(2);

  // Two saved reports side by side (here the same one twice: every row matched, B ÷ A = 1).
  const saved = (await download.path())!;
  await page.setInputFiles('#compare-a', saved);
  await page.setInputFiles('#compare-b', saved);
  await expect(page.locator('#compare table.data')).not.toHaveCount(0);
  expect(Number(await page.locator('#compare').getAttribute('data-rows'))).toBe(report.results.length + report.peers.length + report.e2e.length);
  await expect(page.locator('#compare')).not.toContainText('not comparable');
  expect(pageErrors).toEqual([]);
});

test('without WebGPU the benchmark page explains why instead of going blank', async ({ page }) => {
  await page.addInitScript(() => {
    delete (Navigator.prototype as any).gpu;
  });
  await page.goto('/bench.html');
  const notice = page.locator('#unavailable');
  await expect(notice).toBeVisible();
  await expect(notice).toContainText('WebGPU is not available');
  await expect(page.locator('#run-quick')).toBeDisabled();
  expect(await page.evaluate(() => (window as any).__webmoeBench.status)).toBe('unavailable');
});
