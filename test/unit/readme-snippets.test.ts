// Every code snippet (ts/js) of the README's "Using the runtime" section is the code of a test: its lines,
// import lines aside, are exactly the lines between `// README:begin <name>` and `// README:end` in a file
// under test/ or src/ (tests run them there; src/pages/sw.ts is the site's service worker, run by
// test/e2e/service-worker.spec.ts and test/browser/readme-snippets.test.ts). Import lines are checked
// against the package: each imported name is exported by that entry point.
import { describe, it, expect } from 'vitest';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');
const ENTRIES: Record<string, string> = { webmoe: 'src/index.ts', 'webmoe/service-worker': 'src/service-worker.ts', 'webmoe/node': 'src/node.ts' };
/** Packages a snippet may import besides webmoe's entries (dependencies of the tests that run them). */
const OTHER_PACKAGES = new Set(['openai']);

const IMPORT = /^import\s+(.+?)\s+from\s+'([^']+)';?\s*$/;

function dedent(text: string): string[] {
  const lines = text.replace(/\s+$/, '').split('\n');
  const indent = Math.min(...lines.filter((l) => l.trim()).map((l) => /^ */.exec(l)![0].length));
  return lines.map((l) => l.slice(indent));
}

/** A snippet as its import lines and the rest (trimmed of blank lines at either end). */
function split(text: string): { imports: string[]; body: string } {
  const lines = dedent(text);
  return { imports: lines.filter((l) => IMPORT.test(l)), body: lines.filter((l) => !IMPORT.test(l)).join('\n').trim() };
}

function section(readme: string, title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  expect(start, `README has no "## ${title}"`).toBeGreaterThan(0);
  const end = readme.indexOf('\n## ', start + 4);
  return readme.slice(start, end < 0 ? undefined : end);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? (n === 'fixtures' || n === 'node_modules' ? [] : filesUnder(p)) : /\.(ts|mjs|js)$/.test(n) ? [p] : [];
  });
}

function regions(): { name: string; file: string; body: string }[] {
  const out: { name: string; file: string; body: string }[] = [];
  for (const file of [...filesUnder(join(ROOT, 'test')), ...filesUnder(join(ROOT, 'src'))]) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/\/\/ README:begin (\S+)\n([\s\S]*?)\n\s*\/\/ README:end/g)) out.push({ name: m[1], file: relative(ROOT, file), body: split(m[2]).body });
  }
  return out;
}

/** Whether `entry` (a source file) exports `name` by name. */
function exportsName(entry: string, name: string): boolean {
  const text = readFileSync(join(ROOT, entry), 'utf8');
  const n = name.replace(/[$]/g, '\\$');
  return new RegExp(`export\\s*(type\\s*)?\\{[^}]*\\b${n}\\b[^}]*\\}`).test(text) || new RegExp(`export\\s+(async\\s+)?(function|const|class|let)\\s+${n}\\b`).test(text);
}

describe('README "Using the runtime"', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const blocks = [...section(readme, 'Using the runtime').matchAll(/```(ts|js|typescript|javascript)\n([\s\S]*?)```/g)].map((m) => split(m[2]));
  const found = regions();

  it('has snippets, and every marked region has a distinct name and appears in the README', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(7);
    const names = found.map((r) => r.name);
    expect(new Set(names).size, names.join(', ')).toBe(names.length);
    for (const r of found) expect(blocks.some((b) => b.body === r.body), `${r.file}: region ${r.name} is not a README snippet (changed on one side only?)`).toBe(true);
  });

  it('every snippet is the code of a test, verbatim', () => {
    for (const b of blocks) {
      const where = found.find((r) => r.body === b.body);
      expect(where, `no test runs this README snippet (mark it with // README:begin NAME … // README:end):\n${b.body}`).toBeTruthy();
    }
  });

  it("every snippet's imports name what the package exports", () => {
    for (const line of blocks.flatMap((b) => b.imports)) {
      const [, what, from] = IMPORT.exec(line)!;
      if (OTHER_PACKAGES.has(from)) continue;
      expect(Object.keys(ENTRIES), line).toContain(from);
      const names = /^\{(.+)\}$/.exec(what.trim())?.[1].split(',').map((s) => s.trim().replace(/^type\s+/, '').split(/\s+as\s+/)[0]).filter(Boolean);
      expect(names, `${line}: only named imports are checked`).toBeTruthy();
      for (const n of names!) expect(exportsName(ENTRIES[from], n), `${ENTRIES[from]} does not export ${n} (${line})`).toBe(true);
    }
  });
});
