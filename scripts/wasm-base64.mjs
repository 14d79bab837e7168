/**
 * `import bytes from './kernels.wasm?base64'` → the file as a base64 string, for Vite (the demo, Vitest,
 * the bench page: vite.config.ts, vitest.config.ts) and esbuild (the library build, scripts/build-lib.mjs).
 * Inlining keeps one code path in pages, Workers and Node: no asset URL to resolve, no fetch or fs.
 */
import { readFileSync } from 'node:fs';
import { resolve, dirname } from 'node:path';

const SUFFIX = '?base64';
const moduleOf = (path) => `export default ${JSON.stringify(readFileSync(path).toString('base64'))};`;

/** The Vite plugin. */
export function wasmBase64() {
  return {
    name: 'webmoe-wasm-base64',
    enforce: 'pre',
    resolveId(id, importer) {
      if (!id.endsWith(SUFFIX)) return null;
      const file = id.slice(0, -SUFFIX.length);
      return '\0wasm-base64:' + (importer ? resolve(dirname(importer), file) : resolve(file));
    },
    load(id) {
      if (!id.startsWith('\0wasm-base64:')) return null;
      const path = id.slice('\0wasm-base64:'.length);
      this.addWatchFile?.(path);
      return moduleOf(path);
    },
  };
}

/** The esbuild plugin. */
export const wasmBase64Esbuild = {
  name: 'wasm-base64',
  setup(b) {
    b.onResolve({ filter: /\?base64$/ }, (args) => ({ path: resolve(args.resolveDir, args.path.slice(0, -SUFFIX.length)), namespace: 'wasm-base64' }));
    b.onLoad({ filter: /.*/, namespace: 'wasm-base64' }, (args) => ({ contents: moduleOf(args.path), loader: 'js', watchFiles: [args.path] }));
  },
};
