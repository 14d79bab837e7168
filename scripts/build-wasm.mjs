#!/usr/bin/env node
/**
 * Builds the WebAssembly kernels (src/kernels/wasm/kernels.c) with clang's wasm32 target and wasm-ld
 * (Debian: `apt-get install clang lld`; the checked-in binaries were built with Debian clang 14.0.6):
 *   kernels.wasm     single-threaded: its own memory
 *   kernels-mt.wasm  the worker pool's (src/kernels/wasm/pool.ts): atomics, an imported shared memory
 *
 *   node scripts/build-wasm.mjs            (= npm run build:wasm)   build and write both
 *   node scripts/build-wasm.mjs --check    build to a temporary folder and fail if either differs
 *
 * The pool's instances share one memory and so one stack region: kernels.c must not use the stack. The
 * build checks that no function touches __stack_pointer (llvm-objdump on the object file).
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

/** The build commands (also in docs/wasm.md): the common flags, then each binary's. */
export const CLANG_ARGS = [
  '--target=wasm32', '-nostdlib', '-msimd128', '-O3', '-ffreestanding', '-fno-builtin-memset',
  '-Wall', '-Werror',
  '-Wl,--no-entry', '-Wl,--strip-all', '-Wl,--export=__heap_base', '-Wl,--stack-first', '-Wl,-z,stack-size=1048576',
];
export const TARGETS = {
  'kernels.wasm': [],
  'kernels-mt.wasm': ['-matomics', '-mbulk-memory', '-Wl,--import-memory', '-Wl,--shared-memory', '-Wl,--max-memory=4294967296'],
};

function clang() {
  for (const c of [process.env.CLANG, 'clang', 'clang-14', 'clang-15', 'clang-16']) {
    if (!c) continue;
    try { execFileSync(c, ['--version'], { stdio: 'ignore' }); return c; } catch { /* next */ }
  }
  throw new Error('build:wasm needs clang with the wasm32 target and lld (Debian/Ubuntu: apt-get install clang lld)');
}

export function buildWasm(outDir) {
  const cc = clang();
  const out = {};
  for (const [name, extra] of Object.entries(TARGETS)) {
    // Relative paths from the repo root: nothing machine-specific reaches the binary.
    const file = join(outDir, name);
    execFileSync(cc, [...CLANG_ARGS, ...extra, '-o', file, 'src/kernels/wasm/kernels.c'], { cwd: root, stdio: 'inherit' });
    out[name] = readFileSync(file);
  }
  checkNoStack(cc, outDir);
  return out;
}

/** Fails when a kernel uses the stack (the pool's instances would share it). */
function checkNoStack(cc, tmp) {
  const obj = join(tmp, 'kernels.o');
  execFileSync(cc, ['--target=wasm32', '-msimd128', '-O3', '-ffreestanding', '-c', '-o', obj, 'src/kernels/wasm/kernels.c'], { cwd: root });
  let dump;
  try {
    dump = execFileSync('llvm-objdump', ['-d', obj], { encoding: 'utf8', maxBuffer: 64 << 20 });
  } catch {
    console.warn('build:wasm: llvm-objdump not found; the no-stack check was skipped');
    return;
  } finally {
    rmSync(obj, { force: true });
  }
  if (dump.includes('__stack_pointer')) throw new Error('kernels.c uses the stack (__stack_pointer): the worker pool shares one stack region, so kernels must keep their data in registers or in heap scratch');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (!existsSync(source)) throw new Error(`${source} is missing`);
  const check = process.argv.includes('--check');
  const tmp = mkdtempSync(join(tmpdir(), 'webmoe-wasm-'));
  try {
    const built = buildWasm(tmp);
    for (const [name, bytes] of Object.entries(built)) {
      const target = join(dir, name);
      if (check) {
        const committed = existsSync(target) ? readFileSync(target) : Buffer.alloc(0);
        if (!bytes.equals(committed)) {
          console.error(`${name} differs from a fresh build of kernels.c (${bytes.length} vs ${committed.length} bytes): run npm run build:wasm and commit it`);
          process.exit(1);
        }
        console.log(`${name} matches a fresh build (${bytes.length} bytes)`);
      } else {
        writeFileSync(target, bytes);
        console.log(`wrote src/kernels/wasm/${name} (${bytes.length} bytes)`);
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
