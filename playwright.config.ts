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
  // The benchmark page runs last and in a browser of its own: after its quick run, a demo page in the
  // same browser process has been seen to compute all-zero logits on SwiftShader (no WebGPU error;
  // not reproduced in a fresh browser; an open issue).
  // `package` packs the library and builds consumer apps in a temp folder, each served on a port the OS picks
  // (test/e2e/package.spec.ts); it does not use the demo server.
  projects: [
    { name: 'pages', testIgnore: [/bench\.spec\.ts/, /package\.spec\.ts/] },
    { name: 'bench', testMatch: /bench\.spec\.ts/, dependencies: ['pages'] },
    { name: 'package', testMatch: /package\.spec\.ts/ },
  ],
  webServer: {
    command: `npx vite build --logLevel warn && npx vite preview --host 127.0.0.1 --port ${port} --strictPort`,
    url: `http://127.0.0.1:${port}`,
    reuseExistingServer: false,
    timeout: 180_000,
  },
});
