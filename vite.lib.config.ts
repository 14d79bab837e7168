import { defineConfig } from 'vite';
import { resolve } from 'node:path';

// The library: what `npm i webmoe` gets. WGSL is inlined through `?raw`, so the same bundle runs in a
// page, a Worker, Node (with the `webgpu` package) and the CLI.
export default defineConfig({
  publicDir: false,
  worker: { format: 'es' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    minify: false,
    sourcemap: true,
    lib: {
      entry: {
        index: resolve(import.meta.dirname, 'src/index.ts'),
        worker: resolve(import.meta.dirname, 'src/worker.ts'),
        node: resolve(import.meta.dirname, 'src/node.ts'),
        cli: resolve(import.meta.dirname, 'src/cli.ts'),
      },
      formats: ['es'],
    },
    rollupOptions: {
      external: [/^node:/, 'webgpu', 'comlink', '@huggingface/tokenizers'],
    },
  },
});
