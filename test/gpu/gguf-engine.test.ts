// engine.load of a GGUF written from the bundled model (public/models/webmoe-tiny) by the GGUF writer:
// the same logits as its safetensors folder (F32 file within 1e-5; Q8_0 within a bound measured from the
// quantisation error), through the Node engine's own path resolution (a .gguf path, the folder holding
// it); text through the tokenizer the converter writes into the file's metadata.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNodeEngine } from '../../src/node';
import type { WebMoeEngine } from '../../src/engine/engine';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { checkpointToGguf, type GgufQuant } from '../../src/model/gguf-convert';
import { compare } from '../helpers/gpu';

const ROOT = join(import.meta.dirname, '..', '..');
const MODEL = join(ROOT, 'public', 'models', 'webmoe-tiny');
const TOKENS: number[] = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'webmoe-tiny-ref', 'tokens.json'), 'utf8')).tokens.slice(0, 48);

let dir: string;
let engine: WebMoeEngine;
let want: Float32Array;

async function logitsOf(model: string): Promise<Float32Array> {
  await engine.load(model, { weights: 'f32', requireTokenizer: false });
  return engine.runner.logits(TOKENS, true);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'webmoe-gguf-engine-'));
  const ck = await openCheckpoint(localModel(MODEL));
  for (const q of ['f32', 'q8_0'] as GgufQuant[]) {
    mkdirSync(join(dir, q));
    writeFileSync(join(dir, q, `webmoe-tiny-${q}.gguf`), (await checkpointToGguf(ck, q)).file);
  }
  await ck.close();
  engine = createNodeEngine();
  want = await logitsOf(MODEL);
});
afterAll(async () => { await engine?.unload(); });

const maxAbs = (a: Float32Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
const argmaxRows = (a: Float32Array, V: number) => Array.from({ length: a.length / V }, (_, r) => {
  let best = 0;
  for (let i = 1; i < V; i++) if (a[r * V + i] > a[r * V + best]) best = i;
  return best;
});

describe('engine.load of a .gguf', () => {
  it('F32 GGUF (named by path): the safetensors logits within 1e-5', async () => {
    const got = await logitsOf(join(dir, 'f32', 'webmoe-tiny-f32.gguf'));
    expect(engine.info!.name).toContain('webmoe-tiny-f32.gguf');
    const { maxAbs: d } = compare(got, want, { atol: 1e-5, rtol: 0 });
    console.log(`GGUF F32 vs safetensors (f32 storage, ${TOKENS.length} tokens): max |Δlogits| = ${d.toExponential(2)}`);
    expect(d).toBeLessThanOrEqual(1e-5);
  });

  // Q8_0's per-weight rel-RMS is 5.4e-3 (docs/gguf.md); through 4 layers it moves logits by a few 1e-3
  // of their range. Bound: 2e-2 of max |logit|, and the greedy token the same at ≥ 90% of positions
  // (measured values printed; see docs/gguf.md).
  it('Q8_0 GGUF (named by its folder): logits within 2e-2 of max |logit|, the same argmax at ≥ 90% of positions', async () => {
    const got = await logitsOf(join(dir, 'q8_0'));
    const { maxAbs: d, nonFinite } = compare(got, want, { atol: Infinity, rtol: 0 });
    expect(nonFinite).toBe(0);
    const V = got.length / TOKENS.length;
    const a = argmaxRows(got, V), b = argmaxRows(want, V);
    const same = a.filter((x, i) => x === b[i]).length / a.length;
    console.log(`GGUF Q8_0 vs safetensors: max |Δlogits| = ${d.toExponential(2)} (${(d / maxAbs(want)).toExponential(2)} of max |logit| ${maxAbs(want).toFixed(2)}), same argmax at ${(same * 100).toFixed(1)}% of ${TOKENS.length}`);
    expect(d / maxAbs(want)).toBeLessThan(2e-2);
    expect(same).toBeGreaterThanOrEqual(0.9);
  });

  it("text: the GGUF's own tokenizer (from its metadata) gives the safetensors folder's greedy text and token ids", async () => {
    const run = async (model: string) => {
      await engine.load(model, { weights: 'f32' });
      let text = '';
      const ids: number[] = [];
      for await (const c of engine.generate('The old man', { maxTokens: 12, temperature: 0 })) { text += c.text; ids.push(c.token); }
      return { text, ids };
    };
    const ours = await run(join(dir, 'f32', 'webmoe-tiny-f32.gguf'));
    const theirs = await run(MODEL);
    expect(ours.ids.length).toBe(12);
    expect(ours).toEqual(theirs);
  });
});
