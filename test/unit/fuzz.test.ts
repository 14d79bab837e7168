/**
 * Seeded, bounded fuzzing of the loader (issue: hardening). Mutated and truncated safetensors files
 * (header and body), index files, config.json and tokenizer.json variants built from the fixture are
 * fed to openCheckpoint / parseConfig / loadTokenizer. Every input must end, within a deadline, in a
 * successful load or a typed WebMoeError: never a hang, an untyped exception, or reading more than the
 * files hold / implying more than the tensors declared. Cases with a known answer are checked for it
 * (overlapping offsets must fail; flipped body bytes must load with their NaN/Inf counted exactly; …).
 *
 * Inputs run in a worker thread that reports each input's start: if one takes longer than the deadline,
 * even in synchronous code, the worker is terminated and the input is reported as a hang.
 *
 * GGUF files (test/unit/fuzz-gguf.ts) take 10% of the budget, safetensors 40%, config 25%, tokenizer 25%.
 * CI: WEBMOE_FUZZ_COUNT inputs (default 10,000: ~20 s here). Longer: `node scripts/fuzz-long.mjs`.
 * Reproduce one input: WEBMOE_FUZZ_SEED=<seed> and look up category/index in the failure message.
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import type { CaseResult, Category } from './fuzz-run';

const COUNT = Number(process.env.WEBMOE_FUZZ_COUNT ?? 10_000);
const SEED = Number(process.env.WEBMOE_FUZZ_SEED ?? 0x5eed);
const DEADLINE_MS = Number(process.env.WEBMOE_FUZZ_DEADLINE_MS ?? 5_000);

interface Problem { category: Category; index: number; kind: string; problem: string }
interface Stats {
  inputs: number;
  ok: number;
  typed: number;
  byKind: Map<string, { n: number; ok: number; err: number }>;
  codes: Map<string, number>;
  maxMs: number;
  totalMs: number;
  problems: Problem[];
}

/** Runs inputs [0, n) of a category in workers; a silent worker past the deadline is killed and the input reported. */
async function fuzz(category: Category, n: number): Promise<Stats> {
  const s: Stats = { inputs: 0, ok: 0, typed: 0, byKind: new Map(), codes: new Map(), maxMs: 0, totalMs: 0, problems: [] };
  let from = 0;
  while (from < n) {
    from = await new Promise<number>((resolve, reject) => {
      const w = new Worker(new URL('./fuzz-boot.mjs', import.meta.url), {
        workerData: { module: new URL('./fuzz-worker.ts', import.meta.url).href, category, from, to: n, seed: SEED, deadlineMs: DEADLINE_MS },
        resourceLimits: { maxOldGenerationSizeMb: 1024 }, // an input that allocates wildly kills the worker instead of the machine
      });
      let current = from;
      let timer: ReturnType<typeof setTimeout> | null = null;
      const arm = (ms: number) => {
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => {
          s.problems.push({ category, index: current, kind: '?', problem: `no result within ${ms} ms (hang): worker terminated` });
          s.inputs++;
          void w.terminate();
          resolve(current + 1);
        }, ms);
      };
      arm(60_000); // worker start-up (TypeScript loader, fixture)
      w.on('message', (m: { type: string; i: number; r?: CaseResult }) => {
        if (m.type === 'start') { current = m.i; arm(DEADLINE_MS * 2); return; }
        if (m.type === 'end') { if (timer) clearTimeout(timer); void w.terminate(); resolve(n); return; }
        const r = m.r!;
        s.inputs++;
        s.maxMs = Math.max(s.maxMs, r.ms);
        s.totalMs += r.ms;
        if (r.outcome === 'ok') s.ok++; else s.typed++;
        if (r.code) s.codes.set(r.code, (s.codes.get(r.code) ?? 0) + 1);
        const k = s.byKind.get(r.kind) ?? { n: 0, ok: 0, err: 0 };
        k.n++;
        if (r.outcome === 'ok') k.ok++; else k.err++;
        s.byKind.set(r.kind, k);
        if (r.problem) s.problems.push({ category, index: m.i, kind: r.kind, problem: r.problem });
      });
      w.on('error', (e) => {
        if (timer) clearTimeout(timer);
        // A crash (e.g. out of memory) is a failure of the input being run.
        s.problems.push({ category, index: current, kind: '?', problem: `worker died: ${e.message}` });
        s.inputs++;
        resolve(current + 1);
      });
      w.on('exit', () => { if (timer) clearTimeout(timer); resolve(n); });
      void reject;
    });
  }
  return s;
}

function summary(name: string, s: Stats): string {
  const kinds = [...s.byKind].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k} ${v.n} (${v.ok} ok/${v.err} err)`).join(', ');
  const codes = [...s.codes].map(([k, v]) => `${k} ${v}`).join(', ');
  return `${name}: ${s.inputs} inputs, ${s.ok} loaded, ${s.typed} typed errors [${codes}], mean ${(s.totalMs / Math.max(1, s.inputs)).toFixed(2)} ms, max ${s.maxMs.toFixed(1)} ms/input\n  ${kinds}`;
}

// The input budget is split so the CI run time stays where it was before GGUF joined (GGUF inputs are
// header parses of a ~10 KB file: cheaper than a safetensors load).
const nSafetensors = Math.ceil(COUNT * 0.4);
const nGguf = Math.ceil(COUNT * 0.1);
const nConfig = Math.ceil(COUNT * 0.25);
const nTokenizer = Math.max(0, COUNT - nSafetensors - nGguf - nConfig);
const timeout = Math.max(120_000, COUNT * 40);

function report(name: string, s: Stats, n: number) {
  console.log(summary(name, s));
  expect(s.problems.slice(0, 20)).toEqual([]);
  expect(s.inputs).toBe(n);
}

describe(`loader fuzz (seed ${SEED}, ${COUNT} inputs, ${DEADLINE_MS} ms deadline each)`, () => {
  it(`safetensors files and index files: ${nSafetensors} inputs`, { timeout }, async () => {
    const s = await fuzz('safetensors', nSafetensors);
    report('safetensors', s, nSafetensors);
    if (nSafetensors >= 2000) {
      expect(s.byKind.size).toBe(28); // every mutation kind was exercised
      expect(s.ok).toBeGreaterThan(0);
    }
  });

  it(`GGUF files: ${nGguf} inputs`, { timeout }, async () => {
    const s = await fuzz('gguf', nGguf);
    report('gguf', s, nGguf);
    if (nGguf >= 500) {
      expect(s.byKind.size).toBe(10); // every mutation kind was exercised
      expect(s.ok).toBeGreaterThan(0);
      expect(s.typed).toBeGreaterThan(0);
    }
  });

  it(`config.json files: ${nConfig} inputs, each through parseConfig alone and through the whole load`, { timeout }, async () => {
    report('config (parseConfig)', await fuzz('config-parse', nConfig), nConfig);
    report('config (load)', await fuzz('config', nConfig), nConfig);
  });

  it(`tokenizer.json files: ${nTokenizer} inputs`, { timeout }, async () => {
    report('tokenizer', await fuzz('tokenizer', nTokenizer), nTokenizer);
  });
});
