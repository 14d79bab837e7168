#!/usr/bin/env node
/**
 * The library build: what `npm i webmoe` gets (see package.json `exports` and `files`).
 *
 *   node scripts/build-lib.mjs          (= npm run build:lib)
 *
 * - JavaScript: esbuild bundles the entries index (browser), worker (the engine's Worker), service-worker, node and cli
 *   (Node) as ES modules with code splitting, so the engine exists once in dist/chunks/. The runtime
 *   dependencies (comlink, @huggingface/jinja, @huggingface/tokenizers) are bundled in: dist/ is then a
 *   self-contained folder that also runs from a plain static server or CDN, where a Worker cannot resolve
 *   bare specifiers (module workers have no import maps). Only `node:*` and the optional `webgpu` package
 *   stay external. WGSL is inlined as strings (the `?raw` imports, as Vite does for the demo).
 * - The default worker: dist/index.js creates it with the literal
 *   `new Worker(new URL('./worker.js', import.meta.url), …)`, the one form Vite and webpack 5 follow to
 *   emit the worker and that a static folder resolves by itself. The build fails if that literal is missing.
 * - Types: tsc emits declarations for the public entries only, then every relative specifier gets
 *   its `.js` (or `/index.js`) so NodeNext resolution finds it. WebGPU's types (GPUDevice, …) come from
 *   lib.dom in TypeScript 6 and later; for TypeScript 5, the `types@<6` export condition points at
 *   dist/ts5/*.d.ts, which add `/// <reference types="@webgpu/types" />` (a peer dependency).
 */
import { build } from 'esbuild';
import { wasmBase64Esbuild } from './wasm-base64.mjs';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src');
const dist = join(root, 'dist');

/** In source (for Vite's dev server and the demo) the worker is the .ts entry; in dist it is worker.js. */
const SOURCE_WORKER_URL = "new URL('../worker.ts', import.meta.url)";
const BUILT_WORKER_URL = "new URL('./worker.js', import.meta.url)";

/** `import code from '../../shaders/x.wgsl?raw'` → the file's text (what Vite's `?raw` gives). */
const rawText = {
  name: 'raw-text',
  setup(b) {
    b.onResolve({ filter: /\?raw$/ }, (args) => ({ path: resolve(args.resolveDir, args.path.slice(0, -'?raw'.length)), namespace: 'raw-text' }));
    b.onLoad({ filter: /.*/, namespace: 'raw-text' }, (args) => ({ contents: readFileSync(args.path, 'utf8'), loader: 'text', watchFiles: [args.path] }));
  },
};

/** Points the default worker at the built worker entry, keeping the `new Worker(new URL(…))` form. */
const workerUrl = {
  name: 'worker-url',
  setup(b) {
    b.onLoad({ filter: /[\\/]engine[\\/]worker-client\.ts$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      if (!text.includes(SOURCE_WORKER_URL)) throw new Error(`${args.path}: expected ${SOURCE_WORKER_URL} (the default worker's URL)`);
      return { contents: text.replace(SOURCE_WORKER_URL, BUILT_WORKER_URL), loader: 'ts' };
    });
  },
};

/**
 * Entries that import other entries (node.ts: `export * from './index'`; cli.ts: `from './node'`) import
 * the built entry file at run time instead of sharing its module through a chunk. The worker-client code
 * (and its worker URL) so stays in dist/index.js itself, where bundlers and readers look for it, and
 * node.js keeps its `export *` (esbuild cannot re-export an external `export *` from a shared chunk).
 */
const ENTRY_IMPORTS = { './index': './index.js', './node': './node.js' };
const entriesAsExternal = {
  name: 'entries-as-external',
  setup(b) {
    b.onResolve({ filter: /^\.\/(index|node)$/ }, (args) => (resolve(args.resolveDir) === src ? { path: ENTRY_IMPORTS[args.path], external: true } : undefined));
  },
};

rmSync(dist, { recursive: true, force: true });

await build({
  absWorkingDir: root,
  entryPoints: { index: 'src/index.ts', worker: 'src/worker.ts', 'service-worker': 'src/service-worker.ts', node: 'src/node.ts', cli: 'src/cli.ts' },
  outdir: 'dist',
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'neutral',
  mainFields: ['module', 'main'],
  target: 'es2022',
  external: ['node:*', 'webgpu'],
  plugins: [rawText, wasmBase64Esbuild, workerUrl, entriesAsExternal],
  charset: 'utf8',
  legalComments: 'eof',
  minify: false,
  sourcemap: false,
  logLevel: 'warning',
});

const indexJs = readFileSync(join(dist, 'index.js'), 'utf8');
const literal = /new Worker\(new URL\((["'])\.\/worker\.js\1, import\.meta\.url\), \{\s*type: "module"/;
if (!literal.test(indexJs)) throw new Error(`dist/index.js must create the default worker with ${BUILT_WORKER_URL} and type "module"`);
for (const f of walk(dist).filter((f) => f.endsWith('.js'))) {
  const text = readFileSync(f, 'utf8');
  if (/\.wgsl\?raw|from ["'](comlink|@huggingface\/)/.test(text)) throw new Error(`${relative(root, f)}: an unbundled import is left`);
}

// Declarations: tsc from the public entries (tsconfig.build.json), then NodeNext-proof specifiers.
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
for (const f of walk(dist).filter((f) => f.endsWith('.d.ts'))) {
  const text = readFileSync(f, 'utf8');
  writeFileSync(f, text.replace(/((?:from|import)\s*\(?\s*)(["'])(\.{1,2}(?:\/[^"']*)?)\2/g, (m, pre, q, spec) => `${pre}${q}${withJsExtension(f, spec)}${q}`));
}
mkdirSync(join(dist, 'ts5'));
// WebGPU's types: TypeScript 6+ has them in lib.dom / lib.webworker (where @webgpu/types would now
// collide with them); TypeScript 5 has not. Its `types@<6` export condition gets an entry that adds them.
for (const entry of ['index', 'worker', 'service-worker', 'node']) {
  writeFileSync(join(dist, 'ts5', `${entry}.d.ts`), `/// <reference types="@webgpu/types" />\nexport * from '../${entry}.js';\n`, { flag: 'w' });
}

/**
 * './x' → './x.js' or './x/index.js', whichever declaration file exists; '..' → '../index.js' (tsgo writes
 * inferred types as `import("..").T` when a parent index re-exports T: a directory import NodeNext rejects).
 */
function withJsExtension(fromFile, spec) {
  if (/\.(js|mjs|cjs|json)$/.test(spec)) return spec;
  const base = resolve(dirname(fromFile), spec);
  if (existsSync(`${base}.d.ts`)) return `${spec}.js`;
  if (existsSync(join(base, 'index.d.ts'))) return `${spec}/index.js`;
  throw new Error(`${relative(root, fromFile)}: cannot resolve ${spec} to a declaration file`);
}

function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const bytes = walk(dist).reduce((a, f) => a + statSync(f).size, 0);
console.log(`dist/: ${walk(dist).length} files, ${(bytes / 1024).toFixed(0)} KiB`);
