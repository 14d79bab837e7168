// Self-speculative decoding with an MTP draft leaves the sampled distribution unchanged (issue #18): on a
// 6-token vocabulary the joint distribution of the first three sampled tokens is computed exactly from the
// model's logits and compared with 4000 speculative generations (one seed each) by a chi-square test at
// p = 0.001. The test can fail: the same statistic rejects samples drawn at temperature 1.3 instead of 1
// (power check), and speculative steps must have both accepted and rejected drafts.
import { describe, it, expect } from 'vitest';
import { memoryModel } from '../../src/loader/model-source';
import { syntheticCheckpoint, TINY_V3_CONFIG } from '../../src/model/synthetic';
import { openCheckpoint } from '../../src/model/checkpoint';
import { buildWeights } from '../../src/model/load';
import { CpuBackend } from '../../src/model/cpu-backend';
import { CpuRunner } from '../../src/model/cpu-runner';
import type { SamplingParams } from '../../src/model/runner';

const V = 6;
const PROMPT = [0, 3, 2];
const N = 4000;

async function runner(): Promise<CpuRunner> {
  // A smaller model than the fixture's (the test runs ~16000 CPU-reference steps).
  const files = syntheticCheckpoint({
    ...TINY_V3_CONFIG, vocab_size: V, num_nextn_predict_layers: 1, hidden_size: 32, intermediate_size: 64, moe_intermediate_size: 16,
    num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 2, kv_lora_rank: 16, q_lora_rank: 16, n_routed_experts: 4, n_group: 2, topk_group: 1,
  }, { seed: 3 }); // (a seed whose random MTP layer drafts well: ~19% of drafts accepted)
  const ckpt = await openCheckpoint(memoryModel(files), { validateTokenizer: false });
  const w = await buildWeights(new CpuBackend(ckpt.config), ckpt.config, ckpt);
  expect(w.mtp?.length).toBe(1);
  return new CpuRunner(ckpt.config, w, 64);
}

const softmax = (l: Float32Array, t = 1) => { const m = Math.max(...l); const e = Array.from(l, (x) => Math.exp((x - m) / t)); const s = e.reduce((a, b) => a + b, 0); return e.map((x) => x / s); };

/** Three tokens as the engine's loop draws them (a speculative step may yield two). */
async function draw(r: CpuRunner, seed: number, temperature: number, speculative: boolean): Promise<number[]> {
  r.truncate(0);
  const sampling: SamplingParams = { temperature, topK: 0, topP: 1, repetitionPenalty: 1, seed };
  const out: number[] = [];
  const history = PROMPT.slice();
  let pending = PROMPT.slice();
  while (out.length < 3) {
    const s = await r.step(pending, sampling, out.length, history, false, speculative && 3 - out.length >= 2 ? { speculative: true } : undefined);
    for (const t of [s.token, ...(s.extra ?? [])]) { out.push(t); history.push(t); }
    pending = [out[out.length - 1]];
  }
  return out.slice(0, 3);
}

/** Chi-square statistic and degrees of freedom, cells with expected count < 5 merged into one. */
function chiSquare(observed: Map<number, number>, expected: number[], n: number) {
  let stat = 0, dof = -1, restO = 0, restE = 0;
  expected.forEach((p, cell) => {
    const e = p * n, o = observed.get(cell) ?? 0;
    if (e < 5) { restO += o; restE += e; return; }
    stat += (o - e) ** 2 / e; dof++;
  });
  if (restE > 0) { stat += (restO - restE) ** 2 / restE; dof++; }
  return { stat, dof };
}
/** The chi-square quantile at 1 − 0.001 (Wilson–Hilferty). */
const critical = (k: number) => k * (1 - 2 / (9 * k) + 3.0902 * Math.sqrt(2 / (9 * k))) ** 3;

describe('speculative sampling keeps the output distribution', () => {
  it(`${N} speculative generations match the exact joint distribution of 3 tokens (chi-square, p = 0.001); temperature 1.3 is rejected`, { timeout: 600_000 }, async () => {
    const r = await runner();
    // Exact joint distribution of (t1, t2, t3) at temperature 1 from the model's logits.
    const joint = new Array(V ** 3).fill(0);
    r.truncate(0);
    const p1 = softmax(await r.logits(PROMPT, false));
    for (let a = 0; a < V; a++) {
      r.truncate(0);
      const p2 = softmax(await r.logits([...PROMPT, a], false));
      for (let b = 0; b < V; b++) {
        r.truncate(0);
        const p3 = softmax(await r.logits([...PROMPT, a, b], false));
        for (let c = 0; c < V; c++) joint[a * V * V + b * V + c] = p1[a] * p2[b] * p3[c];
      }
    }
    const sample = async (temperature: number, speculative: boolean) => {
      const counts = new Map<number, number>();
      for (let seed = 1; seed <= N; seed++) {
        const [a, b, c] = await draw(r, seed, temperature, speculative);
        counts.set(a * V * V + b * V + c, (counts.get(a * V * V + b * V + c) ?? 0) + 1);
      }
      return counts;
    };
    r.spec.drafted = 0; r.spec.accepted = 0;
    const spec = chiSquare(await sample(1, true), joint, N);
    const { drafted, accepted } = r.spec;
    expect(drafted).toBe(N);                    // one verify step per generation (tokens 2–3)
    expect(accepted).toBeGreaterThan(N * 0.1);  // both branches are exercised
    expect(accepted).toBeLessThan(N * 0.95);
    console.info(`speculative: chi-square ${spec.stat.toFixed(1)}, ${spec.dof} dof (critical ${critical(spec.dof).toFixed(1)}); ${accepted}/${drafted} drafts accepted`);
    expect(spec.stat, `chi-square ${spec.stat.toFixed(1)} with ${spec.dof} dof, critical ${critical(spec.dof).toFixed(1)}`).toBeLessThan(critical(spec.dof));
    // Power check: a modestly different distribution is detected by the same test.
    const hot = chiSquare(await sample(1.3, true), joint, N);
    console.info(`temperature 1.3: chi-square ${hot.stat.toFixed(1)}, ${hot.dof} dof`);
    expect(hot.stat, `temperature 1.3: chi-square ${hot.stat.toFixed(1)} with ${hot.dof} dof`).toBeGreaterThan(critical(hot.dof));
  });
});
