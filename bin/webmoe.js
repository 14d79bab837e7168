#!/usr/bin/env node
// The CLI runs the built library (npm run build:lib produces dist/; the published package ships it).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
if (!existsSync(cli)) {
  process.stderr.write('webmoe: dist/cli.js is missing; run `npm run build:lib` first\n');
  process.exit(1);
}
const { main } = await import(cli);
process.exitCode = await main(process.argv.slice(2));
