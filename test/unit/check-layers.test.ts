// The folder-level import check (scripts/check-layers.mjs): it passes on src/ and fails on trees that
// import upward, form a cycle or use a CPU reference in production code.
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

const SCRIPT = resolve(__dirname, '../../scripts/check-layers.mjs');

function run(args: string[]): { code: number; out: string } {
  try {
    const out = execFileSync(process.execPath, [SCRIPT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return { code: 0, out };
  } catch (e) {
    const err = e as { status: number; stdout: string; stderr: string };
    return { code: err.status, out: err.stdout + err.stderr };
  }
}

/** A src/ tree in a temp folder from path → source; returns its root. */
function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'check-layers-'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

function check(files: Record<string, string>) {
  const root = tree(files);
  try {
    return run(['--root', root]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

describe('check-layers', () => {
  it('passes on src/', () => {
    const r = run([]);
    expect(r.out).toContain('follows the layer order');
    expect(r.code).toBe(0);
  });

  it('passes on a tree that only imports downward', () => {
    const r = check({
      'errors.ts': 'export class E extends Error {}\n',
      'gpu/device.ts': "import { E } from '../errors';\nexport const d = E;\n",
      'kernels/add.ts': "import type { d } from '../gpu/device';\nexport const add = 1;\n",
      'kernels/add.ref.ts': "import { add } from './add';\nexport const addRef = add;\n",
      'model/run.ts': "import { add } from '../kernels/add';\nexport { add };\n",
    });
    expect(r.out).toContain('follows the layer order');
    expect(r.code).toBe(0);
  });

  it('fails on an upward import, a folder cycle and a file cycle, and prints them', () => {
    const r = check({
      'gpu/device.ts': "import { rec } from './recorder';\nexport const device = rec;\n",
      'gpu/recorder.ts': "import {\n  device,\n} from './device';\nexport const rec = 1;\nexport const d = device;\n",
      'kernels/attention.ts': "// import { x } from '../engine/x'; (a comment does not count)\nimport type { Cache } from '../model/kvcache';\nexport type A = Cache;\n",
      'model/kvcache.ts': "export { attentionBytes } from '../kernels/bytes';\nexport type Cache = number;\n",
      'kernels/bytes.ts': 'export const attentionBytes = 4;\n',
    });
    expect(r.code).toBe(1);
    expect(r.out).toContain('upward import: kernels/attention.ts imports model/kvcache.ts');
    expect(r.out).not.toContain('engine/x');
    expect(r.out).toMatch(/folder cycle: kernels -> model -> kernels/);
    expect(r.out).toMatch(/file cycle: gpu\/device\.ts -> gpu\/recorder\.ts -> gpu\/device\.ts/);
  });

  it('fails on production code importing a .ref.ts, and on dynamic imports upward', () => {
    const r = check({
      'kernels/rope.ref.ts': 'export const ropeRef = 1;\n',
      'kernels/rope.ts': "export { ropeRef } from './rope.ref';\n",
      'loader/open.ts': "export const open = () => import('../model/config');\n",
      'model/config.ts': 'export const config = 1;\n',
    });
    expect(r.code).toBe(1);
    expect(r.out).toContain('reference import: kernels/rope.ts imports kernels/rope.ref.ts');
    expect(r.out).toContain('upward import: loader/open.ts imports model/config.ts');
  });
});
