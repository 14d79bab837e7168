#!/usr/bin/env node
// Expert-load balance of a model measured by the webmoe runtime itself (Node) on held-out text, as
// DeepSeek-V3 defines MaxVio: per MoE layer, max_i load_i / mean_i load_i − 1 over the routed experts,
// where load_i counts the top-k assignments to expert i (shared experts excluded; 0 = perfectly
// balanced). The held-out ids are read and windowed as tools/heldout-perplexity.mjs does
// (non-overlapping --seq-token windows, each from an empty KV cache); the counts come from the runner's
// own routing telemetry (runner.expertLoad(), reset per window with runner.resetExpertLoad()).
// Reports MaxVio over the whole held-out set and per window ("batch" of --seq tokens: mean and max).
// Prints one JSON line (the model card's table: node scripts/docs-tables.mjs, id card-balance).
//
//   npm run build:lib && node tools/expert-balance.mjs --model public/models/webmoe-tiny --heldout DATA/heldout.bin [--device wasm|webgpu] [--weights f32] [--seq 256] [--windows N]
import { readFileSync } from 'node:fs';
import { createNodeEngine } from '../dist/node.js';

const argv = process.argv.slice(2);
const arg = (k, d) => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1] : d; };
const model = arg('model', 'public/models/webmoe-tiny');
const heldoutPath = arg('heldout');
if (!heldoutPath) { console.error('usage: node tools/expert-balance.mjs --model DIR --heldout heldout.bin [--seq 256] [--weights f32] [--device wasm|webgpu] [--windows N]'); process.exit(2); }
const seq = Number(arg('seq', 256));
const weights = arg('weights', 'f32');
const device = arg('device', 'wasm');
const b = readFileSync(heldoutPath);
const held = new Uint16Array(b.buffer, b.byteOffset, b.byteLength >> 1);
const windows = Math.min(Math.floor(held.length / seq), Number(arg('windows', Infinity)));
if (!(windows > 0)) { console.error(`${heldoutPath}: fewer than ${seq} tokens`); process.exit(2); }

/** DeepSeek-V3's MaxVio: max load / mean load − 1 (0 when nothing was routed). */
const maxVio = (c) => { const m = c.reduce((a, x) => a + x, 0) / c.length; return m > 0 ? Math.max(...c) / m - 1 : 0; };
const r4 = (x) => +x.toFixed(4);

const engine = createNodeEngine();
const t0 = Date.now();
await engine.load(model, { weights, device });
const cfg = engine.runner.cfg;
const total = new Map(); // layer → summed counts
const perWindow = new Map(); // layer → MaxVio of each window
for (let w = 0; w < windows; w++) {
  const ids = Array.from(held.subarray(w * seq, (w + 1) * seq));
  const load = await engine.withRunner(async (r) => { r.truncate(0); r.resetExpertLoad(); await r.logits(ids, false); return r.expertLoad(); });
  for (const { layer, counts } of load) {
    const assigned = counts.reduce((a, x) => a + x, 0);
    // Every token of the window routes to exactly top-k experts in every MoE layer.
    if (assigned !== seq * cfg.numExpertsPerTok) throw new Error(`window ${w}, layer ${layer}: ${assigned} assignments, expected ${seq} × ${cfg.numExpertsPerTok}`);
    const acc = total.get(layer) ?? new Array(counts.length).fill(0);
    counts.forEach((c, i) => { acc[i] += c; });
    total.set(layer, acc);
    (perWindow.get(layer) ?? perWindow.set(layer, []).get(layer)).push(maxVio(counts));
  }
  if (w % 50 === 49) process.stderr.write(`${w + 1}/${windows} windows\n`);
}
await engine.unload();
const layers = [...total.keys()].sort((a, b) => a - b).map((layer) => {
  const c = total.get(layer), v = perWindow.get(layer);
  return {
    layer, maxVio: r4(maxVio(c)),
    windowMaxVioMean: r4(v.reduce((a, x) => a + x, 0) / v.length), windowMaxVioMax: r4(Math.max(...v)),
    minLoadShare: r4(Math.min(...c) / c.reduce((a, x) => a + x, 0)), maxLoadShare: r4(Math.max(...c) / c.reduce((a, x) => a + x, 0)),
    counts: c,
  };
});
console.log(JSON.stringify({
  model, heldout: heldoutPath, weights, device, seq, windows, tokens: windows * seq,
  routedExperts: cfg.nRoutedExperts, topK: cfg.numExpertsPerTok, layers,
  date: new Date().toISOString().slice(0, 10), seconds: Math.round((Date.now() - t0) / 1000),
}));
