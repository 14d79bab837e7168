import { defineConfig } from 'vite';
import { resolve } from 'node:path';
import { existsSync } from 'node:fs';
// @ts-ignore plain ESM helper
import { serviceWorkerAtRoot } from './scripts/sw-at-root.mjs';
// @ts-ignore plain ESM helper
import { wasmBase64 } from './scripts/wasm-base64.mjs';

// The site: the demo (index.html) and the benchmark page (bench.html). Cross-origin isolation gives
// fine-grained performance.now() and SharedArrayBuffer (onnxruntime-web's threaded wasm peer).
const isolation = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

export default defineConfig({
  plugins: [serviceWorkerAtRoot(), wasmBase64()],
  server: { headers: isolation },
  preview: { headers: isolation },
  worker: { format: 'es', plugins: () => [wasmBase64()] },
  optimizeDeps: { include: ['comlink'] },
  build: {
    outDir: 'dist-site',
    target: 'es2022',
    rollupOptions: {
      input: {
        ...Object.fromEntries(['index', 'bench'].filter((p) => existsSync(resolve(import.meta.dirname, `${p}.html`))).map((p) => [p, resolve(import.meta.dirname, `${p}.html`)])),
        // The demo's service-worker engine: at the site's root (/sw.js) so its scope covers every page.
        sw: resolve(import.meta.dirname, 'src/pages/sw.ts'),
      },
      output: { entryFileNames: (chunk) => (chunk.name === 'sw' ? 'sw.js' : 'assets/[name]-[hash].js') },
    },
  },
});
