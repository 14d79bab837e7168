#!/usr/bin/env node
/**
 * Folder-level import check for src/ (issue 15). Fails (exit 1, one line per finding) on
 * - an import from a folder that the importing folder may not use (see LAYERS: everything points down),
 * - a cycle between folders or between files (the cycle is printed),
 * - production code importing a `.ref.ts` CPU reference (only tests and REF_RUNNERS may).
 *
 *   node scripts/check-layers.mjs [--root DIR]     (DIR defaults to ./src)
 *
 * Imports are read as text: `import … from '…'`, `export … from '…'`, `import '…'` and `import('…')`,
 * after comments are removed. Only relative specifiers count (packages and `?raw` shader files are
 * outside src/). Type-only imports count too: a type import upward still ties a lower room to a higher one.
 */
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * What each folder (or top-level file's "folder", `.` for src/*.ts other than errors.ts) may import,
 * bottom to top. A folder may always import its own files. The order:
 *   errors → util → formats → gpu → kernels → model → engine → top (pages, bench, cli, index, node, worker),
 * with sparse and loader beside each other below kernels/model: they use errors/util/formats only and
 * never each other (sparse: formats and pruners; loader: byte sources, cache, checkpoint containers).
 */
export const LAYERS = {
  errors: [],
  util: ['errors'],
  formats: ['errors', 'util'],
  gpu: ['errors', 'util', 'formats'],
  sparse: ['errors', 'util', 'formats'],
  loader: ['errors', 'util', 'formats'],
  kernels: ['errors', 'util', 'formats', 'gpu', 'sparse'],
  model: ['errors', 'util', 'formats', 'gpu', 'sparse', 'loader', 'kernels'],
  engine: ['errors', 'util', 'formats', 'loader', 'sparse', 'model'],
  server: ['errors', 'util', 'formats', 'loader', 'sparse', 'model', 'engine'],
  bench: ['*'],
  pages: ['*'],
  '.': ['*'],
};

/**
 * Production files (or folders, ending in '/') whose job is to run the CPU references, so they may import
 * `.ref.ts`: the CPU reference backend, and the bench suites that check GPU results against them.
 */
export const REF_RUNNERS = ['model/cpu-backend.ts', 'model/cpu-runner.ts', 'model/cpu-sampler.ts', 'bench/suites/'];
const mayRunRefs = (file) => REF_RUNNERS.some((r) => (r.endsWith('/') ? file.startsWith(r) : file === r));


/** The folder a file belongs to: its first path segment below src/, `.` for src/*.ts, `errors` for errors.ts. */
export function folderOf(rel) {
  const parts = rel.split('/');
  if (parts.length === 1) return rel === 'errors.ts' ? 'errors' : '.';
  return parts[0];
}

function listTs(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...listTs(p));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Source with comments blanked out; string contents kept (specifiers live in strings). */
function stripComments(src) {
  let out = '';
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    const n = src[i + 1];
    if (c === '/' && n === '/') {
      while (i < src.length && src[i] !== '\n') i++;
    } else if (c === '/' && n === '*') {
      i += 2;
      while (i < src.length && !(src[i] === '*' && src[i + 1] === '/')) i++;
      i += 2;
    } else if (c === "'" || c === '"' || c === '`') {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += src[j] === '\\' ? 2 : 1;
      out += src.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const STATIC = /(?:^|[;\n}])\s*(?:import|export)\s+(?:type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?['"]([^'"\n]+)['"]/g;
const DYNAMIC = /\bimport\(\s*['"]([^'"\n]+)['"]\s*\)/g;

/** Relative import specifiers of one TypeScript source. */
export function importsOf(source) {
  const text = stripComments(source);
  const specs = [];
  for (const re of [STATIC, DYNAMIC]) {
    for (const m of text.matchAll(re)) if (m[1].startsWith('.')) specs.push(m[1]);
  }
  return specs;
}

function resolveSpec(root, fromAbs, spec) {
  const base = resolve(dirname(fromAbs), spec.replace(/\?.*$/, ''));
  for (const cand of [base, `${base}.ts`, join(base, 'index.ts')]) {
    if (existsSync(cand) && statSync(cand).isFile()) return cand;
  }
  return null;
}

/** A cycle through `graph` (Map node → Set of nodes) as a list of nodes, each cycle once; Tarjan SCC. */
export function findCycles(graph) {
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const stack = [];
  const onStack = new Set();
  const sccs = [];
  const strong = (v) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const scc = [];
      let w;
      do {
        w = stack.pop();
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) sccs.push(scc);
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) strong(v);
  // One concrete cycle per strongly connected component: a shortest path back to its smallest member.
  return sccs.map((scc) => {
    const members = new Set(scc);
    const start = [...scc].sort()[0];
    const prev = new Map([[start, null]]);
    const queue = [start];
    let end = null;
    while (queue.length && end === null) {
      const v = queue.shift();
      for (const w of [...(graph.get(v) ?? [])].sort()) {
        if (!members.has(w)) continue;
        if (w === start) {
          end = v;
          break;
        }
        if (!prev.has(w)) {
          prev.set(w, v);
          queue.push(w);
        }
      }
    }
    const path = [];
    for (let v = end; v !== null; v = prev.get(v)) path.unshift(v);
    return [...path, start];
  });
}

/** All findings for the tree at `root` (a src/ folder), as printable lines; empty when it passes. */
export function checkLayers(root) {
  const problems = [];
  const files = listTs(root).sort();
  const fileGraph = new Map();
  const folderGraph = new Map();
  const folderEdgeWitness = new Map();
  for (const abs of files) {
    const from = relative(root, abs).split(sep).join('/');
    const fromFolder = folderOf(from);
    const edges = new Set();
    fileGraph.set(from, edges);
    for (const spec of importsOf(readFileSync(abs, 'utf8'))) {
      const target = resolveSpec(root, abs, spec);
      if (target === null) {
        if (!spec.includes('?')) problems.push(`unresolved: ${from} imports '${spec}'`);
        continue;
      }
      const to = relative(root, target).split(sep).join('/');
      if (to.startsWith('..')) continue; // outside src/ (shaders, package.json)
      edges.add(to);
      const toFolder = folderOf(to);
      if (to.endsWith('.ref.ts') && !from.endsWith('.ref.ts') && !mayRunRefs(from)) {
        problems.push(`reference import: ${from} imports ${to} (production code must not use a .ref.ts CPU reference)`);
      }
      if (toFolder === fromFolder) continue;
      const may = LAYERS[fromFolder];
      if (may === undefined) {
        problems.push(`unknown folder: ${fromFolder} (${from}); add it to LAYERS in scripts/check-layers.mjs`);
        continue;
      }
      if (!may.includes('*') && !may.includes(toFolder)) {
        problems.push(`upward import: ${from} imports ${to} (${fromFolder} may import: ${may.join(', ') || 'nothing'})`);
      }
      if (!folderGraph.has(fromFolder)) folderGraph.set(fromFolder, new Set());
      folderGraph.get(fromFolder).add(toFolder);
      const key = `${fromFolder} -> ${toFolder}`;
      if (!folderEdgeWitness.has(key)) folderEdgeWitness.set(key, `${from} -> ${to}`);
    }
  }
  for (const cycle of findCycles(folderGraph)) {
    const witnesses = cycle.slice(1).map((f, i) => folderEdgeWitness.get(`${cycle[i]} -> ${f}`));
    problems.push(`folder cycle: ${cycle.join(' -> ')} (${witnesses.join('; ')})`);
  }
  for (const cycle of findCycles(fileGraph)) problems.push(`file cycle: ${cycle.join(' -> ')}`);
  return problems;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf('--root');
  const root = resolve(at >= 0 ? process.argv[at + 1] : join(dirname(fileURLToPath(import.meta.url)), '..', 'src'));
  const problems = checkLayers(root);
  if (problems.length) {
    for (const p of problems) console.error(p);
    console.error(`check-layers: ${problems.length} problem(s) in ${root}`);
    process.exit(1);
  }
  console.log(`check-layers: ${root} follows the layer order (no upward imports, no cycles, no .ref.ts in production)`);
}
