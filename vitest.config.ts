import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';
import { playwright } from '@vitest/browser-playwright';
// @ts-ignore plain ESM helper shared with Playwright and the bench script
import { chromiumPath, chromiumArgs, findChromium } from './scripts/chromium.mjs';
// @ts-ignore plain ESM helper shared with vite.config.ts
import { serviceWorkerAtRoot } from './scripts/sw-at-root.mjs';
// @ts-ignore plain ESM helper shared with vite.config.ts and the library build
import { wasmBase64 } from './scripts/wasm-base64.mjs';

// Set in the main process so every worker's Vulkan loader sees SwiftShader when there is no GPU driver
// (see src/node.ts, which also does this by itself for library users).
if (!process.env.WEBMOE_REAL_GPU) {
  process.env.VK_ICD_FILENAMES ??= '/usr/lib/chromium/vk_swiftshader_icd.json';
}
process.env.XDG_RUNTIME_DIR ??= '/tmp';

const browserProject = findChromium()
  ? [
      {
        extends: true as const,
        test: {
          name: 'gpu-browser',
          include: ['test/browser/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          browser: {
            enabled: true,
            headless: true,
            screenshotFailures: false,
            provider: playwright({ launchOptions: { executablePath: chromiumPath(), args: chromiumArgs() } }),
            instances: [{ browser: 'chromium' as const }],
          },
        },
      },
    ]
  : [];

export default defineConfig({
  plugins: [serviceWorkerAtRoot(), wasmBase64()],
  optimizeDeps: { include: ['comlink', '@huggingface/tokenizers'] },
  server: { headers: { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' } },
  worker: { format: 'es', plugins: () => [wasmBase64()] },
  test: {
    // Every core (vitest's default leaves one idle): the GPU tests spend much of their time in
    // SwiftShader's own threads and the unit tests in JavaScript, so two files at once keep both cores busy.
    maxWorkers: availableParallelism(),
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'], environment: 'node' } },
      {
        extends: true,
        test: {
          name: 'gpu-node',
          include: ['test/gpu/**/*.test.ts'],
          environment: 'node',
          pool: 'forks',
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      ...browserProject,
      // Real-size runs (minutes, GBs of memory): only when asked for, so the default run does not list them as skipped.
      ...(process.env.WEBMOE_LARGE
        ? [{ extends: true as const, test: { name: 'large', include: ['test/large/**/*.test.ts'], environment: 'node' as const, pool: 'forks' as const, testTimeout: 900_000, hookTimeout: 120_000 } }]
        : []),
    ],
  },
});
