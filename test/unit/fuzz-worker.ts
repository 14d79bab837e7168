/**
 * Fuzz worker: runs inputs [from, to) of one category and reports each one's start and result, so the
 * test (fuzz.test.ts) can enforce a per-input deadline even on a synchronous hang by terminating it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { runCase, type Category } from './fuzz-run';

const { category, from, to, seed, deadlineMs } = workerData as { category: Category; from: number; to: number; seed: number; deadlineMs: number };
// Third-party code (the tokenizer library) logs warnings for odd inputs; keep the test output readable.
let logged = 0;
console.warn = console.error = console.log = console.info = () => { logged++; };
for (let i = from; i < to; i++) {
  parentPort!.postMessage({ type: 'start', i });
  const r = await runCase(category, i, seed, deadlineMs);
  parentPort!.postMessage({ type: 'done', i, r });
}
parentPort!.postMessage({ type: 'end', logged });
