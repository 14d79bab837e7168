// Independent check against llama.cpp (node-llama-cpp 3.21.1, CPU build, F32 KV cache): the bundled model
// written by webmoe's GGUF writer as F32, F16, Q8_0 and a Q4_K_M-like mix, each file run by llama.cpp and
// by webmoe (openGgufCheckpoint on the CPU reference runner). The same prompt ids (llama.cpp's tokenizer
// on the file's metadata agrees with webmoe's), the same greedy tokens, and first-step next-token
// log-probabilities within a per-type tolerance (see TOL). llama.cpp refusing a file would be a writer bug.
// And llama.cpp's tokenizer on the written tokenizer metadata, under every pre-tokenizer name webmoe
// knows, gives webmoe's ids on mixed text (checks the regex translation against llama.cpp itself).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TextCodec } from '../../src/engine/text';
import { type DecodableType } from '../../src/formats/gguf-blocks';
import { writeGguf } from '../../src/formats/gguf-write';
import { bytesSource } from '../../src/loader/source';
import { memoryModel } from '../../src/loader/model-source';
import { openCheckpoint, type Checkpoint } from '../../src/model/checkpoint';
import { CpuBackend } from '../../src/model/cpu-backend';
import { CpuRunner } from '../../src/model/cpu-runner';
import { kv } from '../../src/formats/gguf-write';
import type { GgufKv } from '../../src/formats/gguf';
import { GGUF_PRE_TOKENIZERS } from '../../src/formats/gguf-tokenizer';
import { deepseek2Gguf, deepseek2Metadata, openGgufCheckpoint } from '../../src/model/gguf-deepseek2';
import { checkpointToGguf, type GgufQuant } from '../../src/model/gguf-convert';
import { buildWeights } from '../../src/model/load';
import { nodeLlamaCpp, type NodeLlamaCpp } from '../helpers/llama-cpp';
import { spmMetadataFromByteLevel } from '../helpers/spm-vocab';
import { tokenizerFilesFromGguf } from '../../src/formats/gguf-tokenizer';

const dir = new URL('../../public/models/webmoe-tiny/', import.meta.url);
const file = (n: string) => readFileSync(new URL(n, dir));

const PROMPTS = ['The old man', 'Once upon a time, there was a little girl who', 'She opened the door and saw', 'In the morning the children went to the park, and 3 dogs'];
const NEW_TOKENS = 16;

/**
 * Largest |Δ log p| allowed between llama.cpp and webmoe over the tokens llama.cpp gives p > 1e-4 at the
 * first step; also the largest webmoe log p gap allowed where their greedy choices first differ (a near
 * tie). F32: both sides compute in f32 with different summation orders (measured 4e-6). The other files
 * hold the same blocks on both sides, but llama.cpp also rounds each matmul's activations to the weight
 * type's dot-product type (F16 → f16, an 11-bit mantissa; Q8_0 → Q8_0 and K-quants → Q8_K, 8-bit blocks)
 * while webmoe keeps them f32: an error of the size of 8-bit weight rounding, which this test measures as
 * webmoe-on-Q8_0 vs webmoe-on-f32 (4.5e-2). The bounds are a few times the measured differences. Q4_K_M
 * (the converter's mix: Q4_K with the router F32 and Q6_K/Q8_0 where llama.cpp's rule says): llama.cpp's
 * Q8_K activations against webmoe's f32 ones move the first step's log p of the p > 1e-4 tail by 1.02,
 * about what the 4-bit weights themselves move it (webmoe on the file vs on f32 weights: 0.905); the
 * greedy tokens agree up to near ties. The bound is 1.5× the measured difference.
 */
const TOL: Record<string, number> = { F32: 1e-4, F16: 1e-2, Q8_0: 0.2, Q4_K_M: 1.5 };
/** The files `webmoe convert --to gguf --quant …` writes (model/gguf-convert.ts). */
const FILES: [string, GgufQuant][] = [['F32', 'f32'], ['F16', 'f16'], ['Q8_0', 'q8_0'], ['Q4_K_M', 'q4_k_m']];

let st: Checkpoint;
let llamaMod: NodeLlamaCpp;
let tmp: string;
/** webmoe's first-step log p on the safetensors checkpoint (f32 weights), per prompt. */
const refLp = new Map<string, Float64Array>();

beforeAll(async () => {
  llamaMod = await nodeLlamaCpp();
  st = await openCheckpoint(memoryModel({
    'config.json': file('config.json'), 'model.safetensors': file('model.safetensors'),
    'tokenizer.json': file('tokenizer.json'), 'tokenizer_config.json': file('tokenizer_config.json'),
  }));
  tmp = mkdtempSync(join(tmpdir(), 'webmoe-llama-check-'));
  const codec = new TextCodec(st.tokenizer!, st.tokenizerConfig, st.config.eosTokenIds);
  const weights = await buildWeights(new CpuBackend(st.config), st.config, st);
  for (const p of PROMPTS) refLp.set(p, logSoftmax(await new CpuRunner(st.config, weights, st.config.maxPositionEmbeddings).logits(codec.encode(p), false)));
}, 300_000);

afterAll(() => { if (tmp) rmSync(tmp, { recursive: true, force: true }); });

const logSoftmax = (x: Float32Array) => {
  let m = -Infinity;
  for (const v of x) m = Math.max(m, v);
  let s = 0;
  for (const v of x) s += Math.exp(v - m);
  const lse = m + Math.log(s);
  return Float64Array.from(x, (v) => v - lse);
};
const argmax = (x: Float32Array) => x.reduce((b, v, i) => (v > x[b] ? i : b), 0);

describe('llama.cpp runs webmoe-written GGUFs of the bundled model like webmoe does', () => {
  for (const [label, type] of FILES) {
    it(`${label}: same prompt ids, same greedy tokens up to near ties, first-step log p within ${TOL[label]}`, async () => {
      const path = join(tmp, `webmoe-tiny-${label}.gguf`);
      writeFileSync(path, (await checkpointToGguf(st, type)).file);

      const gg = await openGgufCheckpoint([bytesSource(path, readFileSync(path))]);
      const codec = new TextCodec(gg.tokenizer!, gg.tokenizerConfig, gg.config.eosTokenIds);
      const weights = await buildWeights(new CpuBackend(gg.config), gg.config, gg);

      const llama = await llamaMod.getLlama({ gpu: false, build: 'never', logLevel: 'error' });
      const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
      let agree = 0, prefix = 0, total = 0, worst = 0, own = 0, tie = 0;
      try {
        for (const prompt of PROMPTS) {
          const ids = codec.encode(prompt);
          // llama.cpp's tokenizer, built from the same metadata: BOS (add_bos_token) + the same BPE ids.
          expect([model.tokens.bos, ...model.tokenize(prompt, false)], prompt).toEqual(ids);

          const ctx = await model.createContext({ contextSize: 256, threads: 1, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
          const theirs: number[] = [];
          let firstP: Map<number, number> | null = null;
          for await (const r of ctx.getSequence().evaluateWithMetadata(ids, { probabilities: true }, { temperature: 0 })) {
            firstP ??= r.probabilities;
            theirs.push(r.token);
            if (theirs.length === NEW_TOKENS) break;
          }
          await ctx.dispose();

          const runner = new CpuRunner(gg.config, weights, gg.config.maxPositionEmbeddings);
          const ours: number[] = [];
          const stepLp: Float64Array[] = [];
          let logits = await runner.logits(ids, false);
          const lp = logSoftmax(logits);
          for (let i = 0; i < NEW_TOKENS; i++) {
            const t = argmax(logits);
            ours.push(t);
            stepLp.push(logSoftmax(logits));
            if (i + 1 < NEW_TOKENS) logits = await runner.logits([t], false);
          }

          let d = 0, q = 0;
          const ref = refLp.get(prompt)!;
          for (const [tok, p] of firstP!) {
            if (p <= 1e-4) continue;
            d = Math.max(d, Math.abs(Math.log(p) - lp[tok]));
            q = Math.max(q, Math.abs(ref[tok] - lp[tok]));
          }
          worst = Math.max(worst, d);
          own = Math.max(own, q);
          agree += ours.filter((t, i) => t === theirs[i]).length;
          total += NEW_TOKENS;
          const k = ours.findIndex((t, i) => t !== theirs[i]);
          prefix += k < 0 ? NEW_TOKENS : k;
          const what = `${label} ${JSON.stringify(prompt)}: webmoe ${ours} vs llama.cpp ${theirs}`;
          if (label === 'F32') expect(ours, what).toEqual(theirs);
          else if (k >= 0) {
            // Past the first difference the two continue from different text; the difference itself must be a near tie.
            const gap = stepLp[k][ours[k]] - stepLp[k][theirs[k]];
            tie = Math.max(tie, gap);
            expect(gap, `${what}: first difference at ${k} is not a near tie`).toBeLessThan(TOL[label]);
          }
        }
      } finally {
        await model.dispose();
        await llama.dispose();
        console.log(`llama.cpp vs webmoe, ${label}: greedy tokens ${prefix}/${total} before the first difference (${agree}/${total} positions equal; widest first-difference gap ${tie.toExponential(2)}); first-step max |Δ log p| (p > 1e-4) = ${worst.toExponential(2)}; webmoe ${label} vs webmoe safetensors f32: ${own.toExponential(2)}`);
      }
      expect(worst).toBeLessThan(TOL[label]);
    }, 300_000);
  }
});

/** Text for the tokenizer comparison: prose, other scripts, whitespace runs, digits, special tokens in text. */
const TOKENIZER_TEXT = [
  readFileSync(new URL('../../docs/sparsity.md', import.meta.url), 'utf8').slice(0, 3000),
  'Ünïcödé: naïve café, Straße, Ελληνικά ώΐ, русский, 中文分词测试, 日本語のテキスト カタカナ, 한국어, עברית, العربية, हिन्दी',
  'emoji 😀👍🏽 🇺🇸 👨‍👩‍👧 math ∑∫√∞ ≤ ≥ ≠ ＡＢＣ！？',
  'tabs\tand\t\ttabs, spaces  two   three    four     five\n\nnewlines\r\nCRLF \n \n  trailing   ',
  "don't I'M we've they'll she'd IT'S 1234567890 3.14159 -42 1e-6 0x1F 12,345,678",
  '<|bos|>starts with bos<|user|>hi<|assistant|>hello<|eos|> mid <|bos|> text',
  'code: function f(x) { return x * 2 + 1; } // 100% of $5.00 at 12:30pm',
];

describe("llama.cpp's tokenizer on webmoe-written tokenizer metadata", () => {
  // The bundled vocabulary and merges under every pre-tokenizer name webmoe knows: llama.cpp's split
  // regexes (applied by llama.cpp) and webmoe's HF-Split translation of them must cut the text alike.
  for (const p of GGUF_PRE_TOKENIZERS) {
    it(`tokenizer.ggml.pre = ${p.names[0]}: the same ids as webmoe on mixed text`, async () => {
      const meta = deepseek2Metadata(st.config, { json: st.tokenizerJson, config: st.tokenizerConfig }).map(([k, v]): [string, GgufKv] => [k, k === 'tokenizer.ggml.pre' ? kv.str(p.names[0]) : v]);
      // A whole model file (webmoe opens only those); llama.cpp reads just its vocabulary (vocabOnly).
      const tensors = await deepseek2Gguf(st.config, (n) => st.readF32(n), st.tensors, 'Q8_0');
      const bytes = writeGguf({ metadata: meta, tensors });
      const path = join(tmp, `vocab-${p.names[0]}.gguf`);
      writeFileSync(path, bytes);
      const gg = await openGgufCheckpoint([bytesSource(path, bytes)]);
      const codec = new TextCodec(gg.tokenizer!, gg.tokenizerConfig, gg.config.eosTokenIds);
      const llama = await llamaMod.getLlama({ gpu: false, build: 'never', logLevel: 'error' });
      const model = await llama.loadModel({ modelPath: path, vocabOnly: true });
      let n = 0;
      try {
        for (const text of TOKENIZER_TEXT) {
          const ours = codec.encode(text, false);
          expect(model.tokenize(text, true), `${p.names[0]}: ${JSON.stringify(text.slice(0, 50))}`).toEqual(ours);
          n += ours.length;
        }
      } finally {
        await model.dispose();
        await llama.dispose();
      }
      console.log(`llama.cpp vs webmoe tokenizer, pre ${p.names[0]}: ${n} ids equal`);
    }, 120_000);
  }
});

describe("llama.cpp's SentencePiece tokenizer (tokenizer.ggml.model = llama) against webmoe's", () => {
  for (const addSpacePrefix of [true, false]) {
    it(`add_space_prefix ${addSpacePrefix}: the same ids on mixed text`, async () => {
      const meta: [string, GgufKv][] = [...deepseek2Metadata(st.config), ...spmMetadataFromByteLevel(st.tokenizerJson, { addSpacePrefix })];
      const tensors = await deepseek2Gguf(st.config, (n) => st.readF32(n), st.tensors, 'Q8_0');
      const path = join(tmp, `vocab-spm-${addSpacePrefix}.gguf`);
      writeFileSync(path, writeGguf({ metadata: meta, tensors }));
      const files = tokenizerFilesFromGguf({ metadata: new Map(meta) })!;
      const codec = TextCodec.fromJson(files.tokenizerJson, files.tokenizerConfig, [2]);
      const llama = await llamaMod.getLlama({ gpu: false, build: 'never', logLevel: 'error' });
      const model = await llama.loadModel({ modelPath: path, vocabOnly: true });
      let n = 0;
      try {
        for (const text of [...TOKENIZER_TEXT, '<s>starts with s</s> and <s> in the middle']) {
          const ours = codec.encode(text, false);
          expect(model.tokenize(text, true), `${JSON.stringify(text.slice(0, 50))}`).toEqual(ours);
          n += ours.length;
        }
        expect([model.tokens.bos, ...model.tokenize('The old man', true)]).toEqual(codec.encode('The old man'));
      } finally {
        await model.dispose();
        await llama.dispose();
      }
      console.log(`llama.cpp vs webmoe tokenizer, SentencePiece add_space_prefix ${addSpacePrefix}: ${n} ids equal`);
    }, 120_000);
  }
});
