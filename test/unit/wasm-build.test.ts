// The committed src/kernels/wasm/kernels.wasm and kernels-mt.wasm are kernels.c built with scripts/build-wasm.mjs: a fresh
// build (clang's wasm32 target + wasm-ld; .ci/run installs Debian's clang and lld) must equal it byte for
// byte. A failure means kernels.c changed without `npm run build:wasm`, or a different clang (the binary
// was built with Debian clang 14.0.6; another version may emit other bytes: rebuild and commit).
import { it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');

it('kernels.wasm and kernels-mt.wasm equal a fresh build of kernels.c', () => {
  const out = execFileSync(process.execPath, [join(ROOT, 'scripts', 'build-wasm.mjs'), '--check'], { cwd: ROOT, encoding: 'utf8' });
  expect(out).toMatch(/matches a fresh build/);
}, 60_000);
