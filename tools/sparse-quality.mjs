#!/usr/bin/env node
// Sparsity quality on a trained model, one table: held-out perplexity and logit deviation against the dense
// model for 2:4, 64:2:5 and 64:2:8 with each step of issue 24 —
//   magnitude          |w| pruning (webmoe prune)
//   + permutation      the intermediate-channel permutation of src/sparse/permute.ts (webmoe prune --permute)
//   calibrated         |w|·‖x‖ (Wanda) with activation norms of --calibration text (webmoe prune --calibration)
//   calibrated + perm. the same importance for pruning and for the permutation search
//   auto V/M           webmoe prune --sparsity auto --target-ratio R, at the same density as 64:2:5 / 64:2:8
//                      (R = 0.45, 0.275) and at 64:2:8's byte ratio (R = 0.268)
//   + recovery         pre-pruned checkpoints after tools/train/recover.py (--recovered DIR/<2-4|64-2-5|64-2-8>)
// Each variant is the checkpoint `webmoe prune` writes (writePrunedCheckpoint), loaded on the sparse kernels
// through the GPU engine (Node), and runs the held-out text in --chunk-token chunks.
//   npm run build:lib && node tools/sparse-quality.mjs --model public/models/webmoe-tiny \
//     --heldout-jsonl /work/train-data/heldout.jsonl --calibration /work/train-data/train.jsonl \
//     --recovered /work/sparseq-recovered --tokens 2048 [--json quality.json] [--apply experts|all-linear]
// heldout: --heldout-jsonl (tools/train/prepare_data.py: documents' text, encoded without special tokens,
// first --tokens ids) or --heldout (uint16 ids); default the reference fixture's 64 tokens.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNodeEngine, directoryModel } from '../dist/node.js';
import { activationNorms, autoSparsity, logitDeviation, openCheckpoint, perplexity, writePrunedCheckpoint } from '../dist/index.js';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const model = args.model ?? 'public/models/webmoe-tiny';
const total = Number(args.tokens ?? 1024);
const chunk = Number(args.chunk ?? 128);
const apply = args.apply ?? 'experts';
const { Tokenizer } = await import('@huggingface/tokenizers');
const tok = new Tokenizer(JSON.parse(readFileSync(join(model, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(model, 'tokenizer_config.json'), 'utf8')));
const encodeJsonl = (file, n) => {
  const out = [];
  for (const line of readFileSync(file, 'utf8').trim().split('\n')) {
    if (out.length >= n) break;
    out.push(...tok.encode(JSON.parse(line).text, { add_special_tokens: false }).ids);
  }
  return out.slice(0, n);
};
let ids;
if (args['heldout-jsonl']) ids = encodeJsonl(args['heldout-jsonl'], total);
else if (args.heldout) {
  const b = readFileSync(args.heldout);
  ids = Array.from(new Uint16Array(b.buffer, b.byteOffset, Math.min(b.byteLength / 2, total)));
} else ids = JSON.parse(readFileSync('test/fixtures/webmoe-tiny-ref/tokens.json', 'utf8')).tokens;

async function run(dir) {
  const engine = createNodeEngine();
  await engine.load(dir, { weights: 'f32' });
  const V = engine.runner.cfg.vocabSize;
  const logits = [];
  for (let i = 0; i + 1 < ids.length; i += chunk) {
    const part = ids.slice(i, Math.min(i + chunk, ids.length));
    await engine.withRunner(async (r) => { r.truncate(0); logits.push(await r.logits(part, true)); });
  }
  await engine.unload();
  const all = new Float32Array(logits.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of logits) { all.set(c, at); at += c.length; }
  return { V, all };
}

const ckpt = await openCheckpoint(directoryModel(model));
let importance;
if (args.calibration) {
  const cal = encodeJsonl(args.calibration, Number(args['calibration-tokens'] ?? 2048));
  const batches = [];
  for (let i = 0; i < cal.length; i += 256) batches.push(cal.slice(i, i + 256));
  const norms = await activationNorms(ckpt, batches);
  importance = (name) => norms.get(name);
}

/** The pruned copy `webmoe prune` would write, in a temporary folder. */
async function pruned(option, imp) {
  const r = await writePrunedCheckpoint(ckpt, option, { importance: imp });
  const dir = mkdtempSync(join(tmpdir(), 'sparse-quality-'));
  writeFileSync(join(dir, 'model.safetensors'), r.file);
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) if (existsSync(join(model, f))) copyFileSync(join(model, f), join(dir, f));
  return { dir, r };
}

const evaluator = args.evaluator ?? 'torch';
const variants = [];
const gainLines = [];
const prunedVariant = async (pattern, pruning, option, imp) => {
  const { dir, r } = await pruned(option, imp);
  variants.push({ pattern, pruning, kept: r.keptNormFraction, dir, temporary: true });
  if (option.permute) {
    const layers = [...new Set(r.permutation.map((g) => g.layer))].sort((a, b) => a - b);
    const mean = (gs, k) => gs.reduce((t, g) => t + g[k], 0) / gs.length;
    const vnm = option.format === 'vnm';
    gainLines.push(`${pattern} ${pruning}: kept ‖W‖_F without → with permutation, mean over each layer's ${r.permutation.length / layers.length} MLPs: ` +
      layers.map((L) => { const gs = r.permutation.filter((g) => g.layer === L); return `layer ${L} down_proj ${mean(gs, 'keptBefore').toFixed(4)} → ${mean(gs, 'keptAfter').toFixed(4)}${vnm ? `, gate+up ${mean(gs, 'gateUpBefore').toFixed(4)} → ${mean(gs, 'gateUpAfter').toFixed(4)}` : ''}`; }).join('; '));
  }
};
const PATTERNS = [['2:4', { format: '2:4', apply }], ['64:2:5', { format: 'vnm', v: 64, m: 5, apply }], ['64:2:8', { format: 'vnm', v: 64, m: 8, apply }]];
for (const [label, sp] of PATTERNS) {
  await prunedVariant(label, 'magnitude', sp);
  await prunedVariant(label, '+ permutation', { ...sp, permute: true });
  if (importance) {
    await prunedVariant(label, 'calibrated \\|w\\|·‖x‖', sp, importance);
    await prunedVariant(label, 'calibrated + permutation', { ...sp, permute: true }, importance);
  }
  const rec = args.recovered && join(args.recovered, label.replaceAll(':', '-'));
  if (rec && existsSync(join(rec, 'model.safetensors'))) variants.push({ pattern: label, pruning: '+ recovery (magnitude mask)', kept: null, dir: rec });
}
const tensors = [...ckpt.tensors].map(([name, t]) => ({ name, shape: t.shape }));
for (const R of [0.45, 0.275, 0.268]) {
  const a = autoSparsity(tensors, ckpt.config, apply, R);
  await prunedVariant(a.label, `auto V/M, target ratio ${R} (${a.selection.ratio.toFixed(3)})`, a.option);
}

/** Logits of every chunk of every model: GPU engine (one load each) or model.py in one torch process. */
async function logitsOf(dirs) {
  if (evaluator === 'gpu') {
    const out = [];
    for (const d of dirs) out.push((await run(d)).all);
    return out;
  }
  const tmp = mkdtempSync(join(tmpdir(), 'sparse-quality-logits-'));
  writeFileSync(join(tmp, 'ids.u16'), Uint16Array.from(ids));
  execFileSync(args.python ?? '/usr/bin/python3', ['tools/train/score_logits.py', '--ids', join(tmp, 'ids.u16'), '--chunk', String(chunk), '--out', tmp, ...dirs], { stdio: ['ignore', 'ignore', 'inherit'] });
  const out = dirs.map((_, i) => { const b = readFileSync(join(tmp, `${i}.f32`)); return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4); });
  rmSync(tmp, { recursive: true, force: true });
  return out;
}

const all = await logitsOf([model, ...variants.map((v) => v.dir)]);
const vocab = ckpt.config.vocabSize;
const scored = (l) => perplexity(l.subarray(0, (ids.length - 1) * vocab), ids.slice(1), vocab);
const base = scored(all[0]);
const denseAll = all[0];
const results = [{ pattern: 'dense', pruning: '—', kept: 1, ppl: base.ppl, ratio: 1 }];
console.log(`tokens ${base.count}, apply ${apply}, chunks of ${chunk}, evaluator ${evaluator}${importance ? `, calibration ${args['calibration-tokens'] ?? 2048} tokens of ${args.calibration}` : ''}`);
console.log('| pattern | pruning | kept ‖W‖_F (pruned weights) | perplexity | × dense | logit rel. RMS deviation | top-1 agreement | mean KL |');
console.log('|---|---|---|---|---|---|---|---|');
console.log(`| dense | — | 1 | ${base.ppl.toFixed(2)} | 1 | 0 | 100 % | 0 |`);
variants.forEach((v, i) => {
  const l = all[i + 1];
  const s = scored(l), d = logitDeviation(denseAll.subarray(0, (ids.length - 1) * vocab), l.subarray(0, (ids.length - 1) * vocab), vocab);
  results.push({ pattern: v.pattern, pruning: v.pruning.replaceAll('\\', ''), kept: v.kept, ppl: s.ppl, ratio: s.ppl / base.ppl, relRms: d.relRms, top1: d.top1Agreement, kl: d.meanKl });
  console.log(`| ${v.pattern} | ${v.pruning} | ${v.kept === null ? '—' : v.kept.toFixed(4)} | ${s.ppl.toFixed(2)} | ${(s.ppl / base.ppl).toFixed(3)} | ${d.relRms.toFixed(3)} | ${(100 * d.top1Agreement).toFixed(1)} % | ${d.meanKl.toFixed(3)} |`);
  if (v.temporary) rmSync(v.dir, { recursive: true, force: true });
});
await ckpt.close?.();
console.log('');
for (const l of gainLines) console.log(l);
if (args.json) writeFileSync(args.json, `${JSON.stringify({ tokens: base.count, chunk, apply, heldout: args['heldout-jsonl'] ?? args.heldout ?? 'fixture', results }, null, 2)}\n`);
