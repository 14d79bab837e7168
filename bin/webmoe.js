#!/usr/bin/env node
// Installed from npm, the CLI runs the built library (dist/cli.js). In a source checkout (src/ next to
// bin/, dev dependencies installed) it runs the TypeScript through tsx instead, so it never runs a stale
// build and needs no `npm run build:lib` first.
import { existsSync } from 'node:fs';
import { register } from 'node:module';
import { fileURLToPath } from 'node:url';

async function sourceEntry() {
  const source = new URL('../src/cli.ts', import.meta.url);
  if (!existsSync(fileURLToPath(source))) return null;
  let tsx;
  try {
    tsx = await import('tsx/esm/api');
  } catch (e) {
    if (e?.code === 'ERR_MODULE_NOT_FOUND') return null; // a source tree without dev dependencies
    throw e;
  }
  tsx.register();
  // Registered after tsx, so it sees `?raw` imports first.
  register('../scripts/raw-import-hooks.mjs', import.meta.url);
  return source.href;
}

let entry = await sourceEntry();
if (!entry) {
  const dist = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
  if (!existsSync(dist)) {
    process.stderr.write('webmoe: dist/cli.js is missing; run `npm run build:lib` first\n');
    process.exit(1);
  }
  entry = new URL('../dist/cli.js', import.meta.url).href;
}
const { main } = await import(entry);
process.exitCode = await main(process.argv.slice(2));
