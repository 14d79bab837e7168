#!/usr/bin/env node
// Sparsity quality on a trained model: logit deviation against the dense model and held-out perplexity
// for 2:4, 64:2:5 and 64:2:8 (load-time pruning of the routed experts, or of every linear layer).
//   npm run build:lib && node tools/sparse-quality.mjs --model public/models/webmoe-tiny --heldout heldout.bin [--tokens 1024] [--apply experts|all-linear]
// heldout.bin: uint16 token ids (tools/train/prepare_data.py writes one); default: the reference fixture's 64 tokens.
import { readFileSync } from 'node:fs';
import { createNodeEngine } from '../dist/node.js';
import { logitDeviation, perplexity } from '../dist/index.js';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const model = args.model ?? 'public/models/webmoe-tiny';
const total = Number(args.tokens ?? 1024);
const chunk = Number(args.chunk ?? 128);
const apply = args.apply ?? 'experts';
let ids;
if (args.heldout) {
  const b = readFileSync(args.heldout);
  ids = Array.from(new Uint16Array(b.buffer, b.byteOffset, Math.min(b.byteLength / 2, total)));
} else {
  ids = JSON.parse(readFileSync('test/fixtures/webmoe-tiny-ref/tokens.json', 'utf8')).tokens;
}

async function run(sparsity) {
  const engine = createNodeEngine();
  await engine.load(model, { weights: 'f32', sparsity });
  const V = engine.runner.cfg.vocabSize;
  const logits = [];
  for (let i = 0; i + 1 < ids.length; i += chunk) {
    const part = ids.slice(i, Math.min(i + chunk, ids.length));
    await engine.withRunner(async (r) => { r.truncate(0); logits.push({ at: i, n: part.length, v: await r.logits(part, true) }); });
  }
  await engine.unload();
  return { V, logits };
}

/** All chunks' logits as one [S, V] array; perplexity scores each row against the next held-out id. */
const joined = (r) => {
  const all = new Float32Array(r.logits.reduce((n, c) => n + c.v.length, 0));
  let at = 0;
  for (const c of r.logits) { all.set(c.v, at); at += c.v.length; }
  return all;
};
const scored = (all, V) => perplexity(all.subarray(0, (ids.length - 1) * V), ids.slice(1), V);

const dense = await run(null);
const V = dense.V, denseAll = joined(dense);
const base = scored(denseAll, V);
console.log(`tokens ${base.count}, apply ${apply}`);
console.log(`dense      ppl ${base.ppl.toFixed(2)}`);
for (const [label, sp] of [['2:4', { format: '2:4', apply }], ['64:2:5', { format: 'vnm', v: 64, m: 5, apply }], ['64:2:8', { format: 'vnm', v: 64, m: 8, apply }]]) {
  const all = joined(await run(sp));
  const s = scored(all, V), d = logitDeviation(denseAll, all, V);
  console.log(`${label.padEnd(10)} ppl ${s.ppl.toFixed(2)} (×${(s.ppl / base.ppl).toFixed(3)})  logit rel-rms dev ${d.relRms.toFixed(3)}  top-1 agreement ${(100 * d.top1Agreement).toFixed(1)}%  mean KL ${d.meanKl.toFixed(3)}`);
}
