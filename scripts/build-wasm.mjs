#!/usr/bin/env node
/**
 * Builds the WebAssembly kernels (src/kernels/wasm/kernels.c → kernels.wasm) with clang's wasm32 target
 * and wasm-ld (Debian: `apt-get install clang lld`; the checked-in binary was built with Debian clang 14.0.6).
 *
 *   node scripts/build-wasm.mjs            (= npm run build:wasm)   build and write kernels.wasm
 *   node scripts/build-wasm.mjs --check    build to a temporary file and fail if it differs from kernels.wasm
 *
 * kernels.wasm is committed so the runtime, the demo and `npm i webmoe` work without a C toolchain; the
 * check (run by test/unit/wasm-build.test.ts) proves the committed binary is this source built with this
 * command. No libc: the kernels need none (maths in kernels.c), so the module imports nothing.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'src', 'kernels', 'wasm');
const source = join(dir, 'kernels.c');
const target = join(dir, 'kernels.wasm');

/** The one build command (also printed in docs/wasm.md). */
export const CLANG_ARGS = [
  '--target=wasm32', '-nostdlib', '-msimd128', '-O3', '-ffreestanding', '-fno-builtin-memset',
  '-Wall', '-Werror',
  '-Wl,--no-entry', '-Wl,--strip-all', '-Wl,--export=__heap_base', '-Wl,--stack-first', '-Wl,-z,stack-size=1048576',
];

function clang() {
  for (const c of [process.env.CLANG, 'clang', 'clang-14', 'clang-15', 'clang-16']) {
    if (!c) continue;
    try { execFileSync(c, ['--version'], { stdio: 'ignore' }); return c; } catch { /* next */ }
  }
  throw new Error('build:wasm needs clang with the wasm32 target and lld (Debian/Ubuntu: apt-get install clang lld)');
}

export function buildWasm(out) {
  // Relative paths from the repo root: nothing machine-specific reaches the binary.
  execFileSync(clang(), [...CLANG_ARGS, '-o', out, 'src/kernels/wasm/kernels.c'], { cwd: root, stdio: 'inherit' });
  return readFileSync(out);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (!existsSync(source)) throw new Error(`${source} is missing`);
  if (process.argv.includes('--check')) {
    const tmp = mkdtempSync(join(tmpdir(), 'webmoe-wasm-'));
    try {
      const built = buildWasm(join(tmp, 'kernels.wasm'));
      const committed = readFileSync(target);
      if (!built.equals(committed)) {
        console.error(`kernels.wasm differs from a fresh build of kernels.c (${built.length} vs ${committed.length} bytes): run npm run build:wasm and commit it`);
        process.exit(1);
      }
      console.log(`kernels.wasm matches a fresh build (${built.length} bytes)`);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  } else {
    const b = buildWasm(target);
    console.log(`wrote src/kernels/wasm/kernels.wasm (${b.length} bytes)`);
  }
}
