import { defineConfig } from '@playwright/test';
// @ts-ignore plain ESM helper
import { chromiumPath, chromiumArgs } from './scripts/chromium.mjs';

// WEBMOE_E2E_PORT: another port when 4178 is taken (e.g. several checkouts testing on one machine).
const port = Number(process.env.WEBMOE_E2E_PORT ?? 4178);
export default defineConfig({
  testDir: './test/e2e',
  timeout: 180_000,
  workers: 1,
  reporter: [['list']],
  outputDir: 'test-results',
  use: {
    browserName: 'chromium',
    headless: true,
    baseURL: `http://127.0.0.1:${port}`,
    screenshot: 'only-on-failure',
    viewport: { width: 1440, height: 900 },
    launchOptions: { executablePath: chromiumPath(), args: chromiumArgs() },
  },
  // One browser for the pages in their natural (file) order: the benchmark page first, then the demo.
  // (The bench once ran last in a browser of its own, because a demo page after it computed all-zero
  // logits; the cause was Chromium's HTTP cache corrupting range reads of the weights, fixed in the
  // loader: test/e2e/weights-intact.spec.ts.)
  // `package` packs the library and builds consumer apps in a temp folder, each served on a port the OS picks
  // (test/e2e/package.spec.ts); it does not use the demo server.
  projects: [
    { name: 'pages', testIgnore: [/package\.spec\.ts/] },
    { name: 'package', testMatch: /package\.spec\.ts/ },
  ],
  webServer: {
    command: `npx vite build --logLevel warn && npx vite preview --host 127.0.0.1 --port ${port} --strictPort`,
    url: `http://127.0.0.1:${port}`,
    reuseExistingServer: false,
    timeout: 180_000,
  },
});
