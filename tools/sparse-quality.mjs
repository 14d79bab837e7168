#!/usr/bin/env node
// Sparsity quality on a trained model: logit deviation against the dense model and held-out perplexity
// for 2:4, 64:2:5 and 64:2:8, magnitude pruning alone and after the channel permutation
// (src/sparse/permute.ts), of the routed experts or of every linear layer. Each sparse variant is the
// checkpoint `webmoe prune` writes (writePrunedCheckpoint, with and without permute), loaded on the sparse
// kernels; the permuted rows also print down_proj's kept-norm fraction per layer without → with.
//   npm run build:lib && node tools/sparse-quality.mjs --model public/models/webmoe-tiny --heldout heldout.bin [--tokens 1024] [--apply experts|all-linear]
// heldout.bin: uint16 token ids; or --heldout-jsonl heldout.jsonl (tools/train/prepare_data.py writes it): the
// documents' text in order, encoded with the model's tokenizer without special tokens, first --tokens ids;
// default: the reference fixture's 64 tokens.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNodeEngine, directoryModel } from '../dist/node.js';
import { logitDeviation, openCheckpoint, perplexity, writePrunedCheckpoint } from '../dist/index.js';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const model = args.model ?? 'public/models/webmoe-tiny';
const total = Number(args.tokens ?? 1024);
const chunk = Number(args.chunk ?? 128);
const apply = args.apply ?? 'experts';
let ids;
if (args['heldout-jsonl']) {
  const { Tokenizer } = await import('@huggingface/tokenizers');
  const tok = new Tokenizer(JSON.parse(readFileSync(join(model, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(model, 'tokenizer_config.json'), 'utf8')));
  ids = [];
  for (const line of readFileSync(args['heldout-jsonl'], 'utf8').trim().split('\n')) {
    if (ids.length >= total) break;
    ids.push(...tok.encode(JSON.parse(line).text, { add_special_tokens: false }).ids);
  }
  ids = ids.slice(0, total);
} else if (args.heldout) {
  const b = readFileSync(args.heldout);
  ids = Array.from(new Uint16Array(b.buffer, b.byteOffset, Math.min(b.byteLength / 2, total)));
} else {
  ids = JSON.parse(readFileSync('test/fixtures/webmoe-tiny-ref/tokens.json', 'utf8')).tokens;
}

async function run(dir) {
  const engine = createNodeEngine();
  await engine.load(dir, { weights: 'f32' });
  const V = engine.runner.cfg.vocabSize;
  const logits = [];
  for (let i = 0; i + 1 < ids.length; i += chunk) {
    const part = ids.slice(i, Math.min(i + chunk, ids.length));
    await engine.withRunner(async (r) => { r.truncate(0); logits.push({ at: i, n: part.length, v: await r.logits(part, true) }); });
  }
  await engine.unload();
  return { V, logits };
}

/** The pruned copy `webmoe prune` would write, in a temporary folder. */
async function pruned(option) {
  const ckpt = await openCheckpoint(directoryModel(model));
  const r = await writePrunedCheckpoint(ckpt, option);
  await ckpt.close?.();
  const dir = mkdtempSync(join(tmpdir(), 'sparse-quality-'));
  writeFileSync(join(dir, 'model.safetensors'), r.file);
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) if (existsSync(join(model, f))) copyFileSync(join(model, f), join(dir, f));
  return { dir, r };
}

/** All chunks' logits as one [S, V] array; perplexity scores each row against the next held-out id. */
const joined = (r) => {
  const all = new Float32Array(r.logits.reduce((n, c) => n + c.v.length, 0));
  let at = 0;
  for (const c of r.logits) { all.set(c.v, at); at += c.v.length; }
  return all;
};
const scored = (all, V) => perplexity(all.subarray(0, (ids.length - 1) * V), ids.slice(1), V);

const dense = await run(model);
const V = dense.V, denseAll = joined(dense);
const base = scored(denseAll, V);
console.log(`tokens ${base.count}, apply ${apply}, chunks of ${chunk}`);
console.log('| pattern | pruning | kept ‖W‖_F (pruned weights) | perplexity | × dense | logit rel. RMS deviation | top-1 agreement | mean KL |');
console.log('|---|---|---|---|---|---|---|---|');
console.log(`| dense | — | 1 | ${base.ppl.toFixed(2)} | 1 | 0 | 100 % | 0 |`);
const gainLines = [];
for (const [label, sp] of [['2:4', { format: '2:4', apply }], ['64:2:5', { format: 'vnm', v: 64, m: 5, apply }], ['64:2:8', { format: 'vnm', v: 64, m: 8, apply }]]) {
  for (const permute of [false, true]) {
    const { dir, r } = await pruned({ ...sp, permute });
    const all = joined(await run(dir));
    rmSync(dir, { recursive: true, force: true });
    const s = scored(all, V), d = logitDeviation(denseAll, all, V);
    console.log(`| ${label} | ${permute ? '+ permutation' : 'magnitude'} | ${r.keptNormFraction.toFixed(4)} | ${s.ppl.toFixed(2)} | ${(s.ppl / base.ppl).toFixed(3)} | ${d.relRms.toFixed(3)} | ${(100 * d.top1Agreement).toFixed(1)} % | ${d.meanKl.toFixed(3)} |`);
    if (permute) {
      const layers = [...new Set(r.permutation.map((g) => g.layer))].sort((a, b) => a - b);
      const mean = (gs, k) => gs.reduce((t, g) => t + g[k], 0) / gs.length;
      gainLines.push(`${label}: down_proj kept ‖W‖_F without → with permutation, mean over each layer's ${r.permutation.length / layers.length} MLPs: ` +
        layers.map((L) => { const gs = r.permutation.filter((g) => g.layer === L); return `layer ${L} ${mean(gs, 'keptBefore').toFixed(4)} → ${mean(gs, 'keptAfter').toFixed(4)}`; }).join(', '));
    }
  }
}
console.log('');
for (const l of gainLines) console.log(l);
