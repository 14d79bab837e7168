import type { BenchSuite } from './types';

/**
 * Every suite in src/bench/suites/, found at build time: a new suite file is picked up without being
 * listed anywhere. A module may export one or more suites (any export with `name` and `run`).
 */
const modules = import.meta.glob('./suites/*.ts', { eager: true }) as Record<string, Record<string, unknown>>;

function isSuite(x: unknown): x is BenchSuite {
  return !!x && typeof x === 'object' && typeof (x as BenchSuite).name === 'string' && typeof (x as BenchSuite).run === 'function';
}

/** Suites from module exports, deduplicated, ordered by `order` (default 50) then name. */
export function collectSuites(mods: Record<string, Record<string, unknown>>): BenchSuite[] {
  const seen = new Set<BenchSuite>();
  const out: BenchSuite[] = [];
  for (const path of Object.keys(mods).sort()) {
    for (const value of Object.values(mods[path])) {
      if (!isSuite(value) || seen.has(value)) continue;
      seen.add(value);
      out.push(value);
    }
  }
  return out.sort((a, b) => (a.order ?? 50) - (b.order ?? 50) || a.name.localeCompare(b.name));
}

export const suites: BenchSuite[] = collectSuites(modules);

/** Suites whose name is in `filter` (all when empty); unknown names are an error listing the known ones. */
export function selectSuites(all: BenchSuite[], filter: string[] | undefined): BenchSuite[] {
  const want = (filter ?? []).map((s) => s.trim()).filter(Boolean);
  if (!want.length) return all;
  const unknown = want.filter((w) => !all.some((s) => s.name === w));
  if (unknown.length) throw new Error(`unknown benchmark suite(s): ${unknown.join(', ')} (known: ${all.map((s) => s.name).join(', ')})`);
  return all.filter((s) => want.includes(s.name));
}

/**
 * The suites a run executes: selected by name, then those that run in `env` (nodeOk / browserOk), and
 * without the full-only suites in a quick run unless they were named.
 */
export function runnableSuites(all: BenchSuite[], o: { suites?: string[]; env: 'browser' | 'node'; quick: boolean }): BenchSuite[] {
  const named = (o.suites ?? []).map((s) => s.trim());
  return selectSuites(all, o.suites)
    .filter((s) => (o.env === 'browser' ? s.browserOk !== false : s.nodeOk !== false))
    .filter((s) => !(o.quick && s.fullOnly && !named.includes(s.name)));
}
