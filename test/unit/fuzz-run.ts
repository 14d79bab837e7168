/**
 * One fuzz input, by category and index: generated from the seed, run through the loader, classified.
 * Used by the fuzz worker (fuzz-worker.ts); pure functions of (category, index, seed).
 */
import { isWebMoeError, WebMoeError } from '../../src/errors';
import { numel } from '../../src/formats/safetensors';
import { openCheckpoint } from '../../src/model/checkpoint';
import { loadTokenizer } from '../../src/loader/tokenizer-file';
import { parseConfig } from '../../src/model/config';
import { expectedTensors } from '../../src/model/tensors';
import { mulberry32 } from '../../src/util/random';
import { GgufCheckFailed, ggufCase, readAndCheckGguf } from './fuzz-gguf';
import { Corpus, configCase, safetensorsCase, tokenizerCase, type Expect, type FuzzCase } from './fuzz-mutators';
import { TOKENIZER_CONFIG, countingModel, dtypeBytes, fileSize, segmentedModel } from './loader-helpers';

export type Category = 'safetensors' | 'config' | 'config-parse' | 'tokenizer' | 'gguf';
export interface CaseResult {
  kind: string;
  expect: Expect;
  outcome: 'ok' | 'error';
  code?: string;
  /** Set when the input broke a rule: untyped exception, wrong outcome, resource bound exceeded, too slow. */
  problem?: string;
  ms: number;
}

class CheckFailed extends Error {}
const check = (cond: boolean, msg: string) => { if (!cond) throw new CheckFailed(msg); };

export const rngFor = (seed: number, category: Category, i: number) =>
  mulberry32((seed * 1_000_003 + ['safetensors', 'config', 'config-parse', 'tokenizer', 'gguf'].indexOf(category === 'config-parse' ? 'config' : category) * 7_919 + i * 104_729) >>> 0);

/**
 * Opens and streams a model from memory, checking the loader's resource bounds: no file byte read twice
 * or beyond the file, each streamed tensor exactly its declared size, and no more elements implied by
 * the config (what the runtime allocates on the GPU) than the tensors declared and present.
 */
async function loadAndCheck(c: FuzzCase): Promise<void> {
  const src = countingModel(segmentedModel(c.files));
  const ck = await openCheckpoint(src, { validateTokenizer: false });
  const size = (f: string) => fileSize(c.files[f]);
  let declared = 0;
  for (const t of ck.tensors.values()) {
    check(t.end <= size(t.file) && t.begin >= 0 && t.end - t.begin === numel(t.shape) * dtypeBytes(t.dtype), `tensor ${t.name} outside its file or wrong size`);
    declared += numel(t.shape);
  }
  let implied = 0;
  for (const e of expectedTensors(ck.config)) implied += numel(e.shape);
  check(implied <= declared, `config implies ${implied} elements but only ${declared} are declared`);
  const seen = new Map<string, Uint8Array>();
  let streamed = 0;
  await ck.stream(null, (name, t) => {
    check(t.data.length === numel(t.shape) * dtypeBytes(t.dtype), `streamed ${name} has ${t.data.length} bytes`);
    streamed += t.data.length;
    if (c.bytes?.has(name)) seen.set(name, t.data.slice());
  });
  let fileBytes = 0;
  for (const f of ck.files) {
    const read = src.bytesRead.get(f) ?? 0;
    check(read <= size(f), `${f}: read ${read} bytes of a ${size(f)}-byte file`);
    fileBytes += size(f);
  }
  check(streamed <= fileBytes, `streamed ${streamed} bytes from ${fileBytes} bytes of files`);
  if (c.nonFinite) {
    const got = new Map(ck.nonFinite.map((x) => [x.name, x.count]));
    check(got.size === c.nonFinite.size && [...c.nonFinite].every(([n, v]) => got.get(n) === v), `nonFinite ${JSON.stringify([...got])} != expected ${JSON.stringify([...c.nonFinite])}`);
  }
  for (const [n, b] of c.bytes ?? []) check(seen.has(n) && Buffer.compare(seen.get(n)!, b) === 0, `tensor ${n} bytes changed`);
}

function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([p, new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new CheckFailed(`no answer within ${ms} ms (async hang)`)), ms); })]).finally(() => clearTimeout(timer));
}

async function classify(kind: string, expected: Expect, deadlineMs: number, fn: () => Promise<void>): Promise<CaseResult> {
  const t0 = performance.now();
  let outcome: 'ok' | 'error' = 'ok';
  let code: string | undefined;
  let problem: string | undefined;
  try {
    await withDeadline(fn(), deadlineMs);
  } catch (e) {
    outcome = 'error';
    if (e instanceof CheckFailed || e instanceof GgufCheckFailed) problem = e.message;
    else if (!(e instanceof WebMoeError) || !isWebMoeError(e)) problem = `untyped ${(e as Error)?.constructor?.name}: ${String((e as Error)?.message ?? e).slice(0, 300)}`;
    else code = e.code;
  }
  const ms = performance.now() - t0;
  if (!problem && ms > deadlineMs) problem = `took ${ms.toFixed(0)} ms`;
  if (!problem && expected !== 'any' && outcome !== expected) problem = `expected ${expected === 'ok' ? 'a successful load' : 'a typed error'}, got ${code ?? outcome}`;
  return { kind, expect: expected, outcome, code, problem, ms };
}

let corpus: Corpus | null = null;

/** Generates input `i` of `category` from `seed` and runs it. */
export async function runCase(category: Category, i: number, seed: number, deadlineMs: number): Promise<CaseResult> {
  corpus ??= new Corpus();
  const c = corpus;
  const r = rngFor(seed, category, i);
  if (category === 'safetensors') {
    const k = safetensorsCase(r, c);
    return classify(k.kind, k.expect, deadlineMs, () => loadAndCheck(k));
  }
  if (category === 'config' || category === 'config-parse') {
    const k = configCase(r, c);
    if (category === 'config') return classify(k.kind, k.expect, deadlineMs, () => loadAndCheck(k));
    // parseConfig alone on the parsed JSON (when the text still parses).
    let json: unknown;
    try { json = JSON.parse(k.files['config.json'] as string); } catch { return { kind: `${k.kind}/parse`, expect: 'any', outcome: 'error', code: 'JSON', ms: 0 }; }
    return classify(`${k.kind}/parse`, 'any', deadlineMs, async () => { parseConfig(json); });
  }
  if (category === 'gguf') {
    const g = ggufCase(r);
    return classify(g.kind, g.expect, deadlineMs, () => readAndCheckGguf(g.file));
  }
  const k = tokenizerCase(r, c);
  if (k.text !== undefined) {
    // Text-level damage goes through the whole loader (JSON parse + tokenizer build and smoke test).
    const files = { ...c.base(), 'tokenizer.json': k.text, 'model.safetensors': c.file };
    return classify(k.kind, k.expect, deadlineMs, async () => {
      const ck = await openCheckpoint(segmentedModel(files));
      if (ck.tokenizer) ck.tokenizer.decode(ck.tokenizer.encode('fuzz 123 ünïcode').ids);
    });
  }
  return classify(k.kind, k.expect, deadlineMs, async () => {
    const tok = loadTokenizer(k.json, TOKENIZER_CONFIG, { vocabSize: 256 });
    tok.decode(tok.encode('fuzz 123 ünïcode <|eos|>').ids);
  });
}
