import { test, expect, type Page } from '@playwright/test';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { buildWeights } from '../../src/model/load';
import { CpuBackend } from '../../src/model/cpu-backend';
import { CpuRunner } from '../../src/model/cpu-runner';
import { TextCodec } from '../../src/engine/text';

// Regression test for the "all-zero logits" demo (issue 21). Root cause: the weight loader probes a
// file with a 1 MiB Range request, reads it with a full GET, and reads by range again when that body
// stops short. The preview server (vite preview's compression) gzips the full GET, and even 206
// answers, under the same weak ETag as the identity probe; Chromium's HTTP cache then mixes the
// encodings in one entry: the full body came back short and the following Range request was
// answered with status 206 and the right Content-Range but wrong bytes past the cached first MiB.
// The weights were garbage (the first norm vector held NaN), the logits NaN, greedy decoding gave
// token 0 at every step, and no error was raised. It depended on timing (seen after the benchmark
// page, which is why the bench had been moved last into a browser of its own; never from the dev
// server, which does not compress). The loader now fetches with cache: 'no-store' (the Cache API
// copy is its cache; src/loader/source.ts).
//
// Here the demo loads the model in fresh contexts of one browser (this file runs after the bench
// page in the natural order), once right away and twice after the page fetched the file the way the
// old loader did; each greedy continuation must equal the CPU reference runner's on the same file.
// The old loader failed most loads from a long-running preview server but not every run (timing), so
// test/unit/loader-no-store.test.ts also checks that every weight request is sent with cache: 'no-store'.
const PROMPT = 'The Fulton County Grand Jury said';
const TOKENS = 8;

async function cpuGreedy(): Promise<number[]> {
  const ckpt = await openCheckpoint(localModel('public/models/webmoe-tiny'));
  const cfg = ckpt.config;
  const weights = await buildWeights(new CpuBackend(cfg), cfg, ckpt);
  const codec = new TextCodec(ckpt.tokenizer!, ckpt.tokenizerConfig, cfg.eosTokenIds);
  await ckpt.close();
  const runner = new CpuRunner(cfg, weights, cfg.maxPositionEmbeddings);
  const out: number[] = [];
  let feed = codec.encode(PROMPT);
  for (let i = 0; i < TOKENS; i++) {
    const logits = await runner.logits(feed, false);
    let best = 0;
    for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
    out.push(best);
    feed = [best];
  }
  return out;
}

async function demoGreedy(page: Page): Promise<number[]> {
  await page.goto('/');
  await expect(page.locator('#status[data-state="ready"], #status[data-state="error"]')).toBeVisible({ timeout: 180_000 });
  await expect(page.locator('#status')).toHaveAttribute('data-state', 'ready');
  await page.click('#mode button[data-mode="raw"]');
  await page.fill('#temperature', '0');
  await page.fill('#rep-penalty', '1');
  await page.fill('#max-tokens', String(TOKENS));
  await page.uncheck('#stop-eos');
  await page.fill('#prompt', PROMPT);
  await page.click('#send');
  await expect(page.locator('#output[data-state="error"], #output[data-state="done"]')).toBeVisible({ timeout: 180_000 });
  expect(await page.locator('#output').getAttribute('data-state'), await page.locator('#error-banner').innerText()).toBe('done');
  return (await page.locator('#output .tok').evaluateAll((els) => els.map((e) => Number((e as HTMLElement).dataset.token))));
}

/** What the loader did before the fix, from the page: a 1 MiB probe, then a full GET read to its end. */
async function fetchLikeTheOldLoader(page: Page): Promise<void> {
  await page.goto('/bench.html');
  await page.evaluate(async (url) => {
    const probe = await fetch(url, { headers: { Range: 'bytes=0-1048575' } });
    await probe.arrayBuffer();
    const full = await fetch(url);
    await full.arrayBuffer();
  }, '/models/webmoe-tiny/model.safetensors');
}

test('the bundled model loads intact after the same origin fetched its weights: greedy tokens equal the CPU reference', async ({ browser }) => {
  test.setTimeout(600_000);
  const want = await cpuGreedy();
  for (const history of [false, true, true]) {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      if (history) await fetchLikeTheOldLoader(page);
      const got = await demoGreedy(page);
      expect(got, history ? 'after a probe and a full GET of the weights in this context' : 'in a fresh context').toEqual(want);
    } finally {
      await context.close();
    }
  }
});
