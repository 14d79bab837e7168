#!/usr/bin/env node
// Sparsity quality on a trained model: logit deviation against the dense model and held-out perplexity
// for 2:4, 64:2:5 and 64:2:8 (load-time pruning of the routed experts, or of every linear layer).
//   npm run build:lib && node tools/sparse-quality.mjs --model public/models/webmoe-tiny --heldout heldout.bin [--tokens 1024] [--apply experts|all-linear]
// heldout.bin: uint16 token ids (tools/train/prepare_data.py writes one); default: the reference fixture's 64 tokens.
import { readFileSync } from 'node:fs';
import { createNodeEngine } from '../dist/node.js';

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

function stats(dense, test) {
  let nll = 0, n = 0, se = 0, sr = 0, agree = 0, rows = 0;
  for (let c = 0; c < test.logits.length; c++) {
    const { at, n: len, v } = test.logits[c];
    const d = dense.logits[c].v;
    for (let r = 0; r < len; r++) {
      const row = v.subarray(r * test.V, (r + 1) * test.V), dr = d.subarray(r * test.V, (r + 1) * test.V);
      let m = -Infinity, am = 0, dm = -Infinity, dam = 0;
      for (let j = 0; j < test.V; j++) {
        if (row[j] > m) { m = row[j]; am = j; }
        if (dr[j] > dm) { dm = dr[j]; dam = j; }
        se += (row[j] - dr[j]) ** 2; sr += dr[j] ** 2;
      }
      agree += am === dam ? 1 : 0; rows++;
      const next = ids[at + r + 1];
      if (next === undefined) continue;
      let s = 0;
      for (let j = 0; j < test.V; j++) s += Math.exp(row[j] - m);
      nll += -(row[next] - m - Math.log(s)); n++;
    }
  }
  return { ppl: Math.exp(nll / n), relRmsLogitDev: Math.sqrt(se / sr), top1Agree: agree / rows, tokens: n };
}

const dense = await run(null);
const base = stats(dense, dense);
console.log(`tokens ${base.tokens}, apply ${apply}`);
console.log(`dense      ppl ${base.ppl.toFixed(2)}`);
for (const [label, sp] of [['2:4', { format: '2:4', apply }], ['64:2:5', { format: 'vnm', v: 64, m: 5, apply }], ['64:2:8', { format: 'vnm', v: 64, m: 8, apply }]]) {
  const s = stats(dense, await run(sp));
  console.log(`${label.padEnd(10)} ppl ${s.ppl.toFixed(2)} (×${(s.ppl / base.ppl).toFixed(3)})  logit rel-rms dev ${s.relRmsLogitDev.toFixed(3)}  top-1 agreement ${(100 * s.top1Agree).toFixed(1)}%`);
}
