// The GGUF tokenizer (tokenizer.ggml.* metadata) as tokenizer.json + tokenizer_config.json: the bundled
// model's tokenizer written as GGUF metadata by the inverse writer and read back gives the same ids as
// the safetensors path on held-out text, the same chat prompt and the same BOS handling; llama.cpp's
// pre-tokenizer names give their regex splits; unknown names and models are typed errors.
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { TextCodec } from '../../src/engine/text';
import { readGgufHeader, type GgufKv } from '../../src/formats/gguf';
import { kv, writeGguf } from '../../src/formats/gguf-write';
import { GGUF_PRE_TOKENIZERS, GGUF_TOKEN_TYPE, ggufTokenizerMetadata, tokenizerFilesFromGguf } from '../../src/formats/gguf-tokenizer';
import { bytesSource } from '../../src/loader/source';
import { memoryModel } from '../../src/loader/model-source';
import { loadTokenizer } from '../../src/loader/tokenizer-file';
import { openCheckpoint, type Checkpoint } from '../../src/model/checkpoint';
import { WebMoeError } from '../../src/errors';
import { deepseek2Gguf, deepseek2Metadata, openGgufCheckpoint } from '../../src/model/gguf-deepseek2';
import { spmMetadataFromByteLevel } from '../helpers/spm-vocab';

const dir = new URL('../../public/models/webmoe-tiny/', import.meta.url);
const file = (n: string) => readFileSync(new URL(n, dir));
const json = (n: string) => JSON.parse(file(n).toString('utf8')) as Record<string, unknown>;

/** Text the tokenizer was not trained on: prose from the repo's docs, other scripts, whitespace runs, digits, specials. */
const CORPUS: string[] = [
  readFileSync(new URL('../../docs/sparsity.md', import.meta.url), 'utf8').slice(0, 4000),
  'The quick brown fox jumps over the lazy dog. 1234567890 3.14159 -42 1e-6 0x1F',
  'Ünïcödé: naïve café, Straße, Ελληνικά, русский текст, 中文分词测试, 日本語のテキスト, 한국어 문장, עברית, العربية, हिन्दी',
  'emoji 😀👍🏽 🇺🇸 family 👨‍👩‍👧 and math ∑∫√∞ ≤ ≥ ≠',
  'tabs\tand\t\ttabs, spaces  two   three    four     five\n\nnewlines\r\nCRLF \n \n  trailing   ',
  "contractions: don't, I'm, we've, they'll, she'd, it's, DON'T, I'M",
  '<|bos|>starts with bos<|user|>hi<|assistant|>hello<|eos|> mid <|bos|> text',
  'code: function f(x) { return x * 2 + 1; } // 100% of $5.00 at 12:30pm',
  '   leading spaces and trailing tab\t',
  '',
  ' ',
  '\n',
  'a',
];

let st: Checkpoint;
let stCodec: TextCodec;

beforeAll(async () => {
  st = await openCheckpoint(memoryModel({
    'config.json': file('config.json'), 'model.safetensors': file('model.safetensors'),
    'tokenizer.json': file('tokenizer.json'), 'tokenizer_config.json': file('tokenizer_config.json'),
  }));
  stCodec = new TextCodec(st.tokenizer!, st.tokenizerConfig, st.config.eosTokenIds);
});

/** The bundled model as a deepseek2 GGUF (F32) with its tokenizer, opened through openGgufCheckpoint. */
async function ggufOfBundled(): Promise<Checkpoint> {
  const tensors = await deepseek2Gguf(st.config, (n) => st.readF32(n), st.tensors, 'F32');
  const bytes = writeGguf({ metadata: deepseek2Metadata(st.config, { json: st.tokenizerJson, config: st.tokenizerConfig }), tensors });
  return openGgufCheckpoint([bytesSource('tiny.gguf', bytes)]);
}

/** GPT-2's byte-level alphabet, inverted: character → byte. */
const BYTE_OF = (() => {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const m = new Map<string, number>();
  let n = 0;
  for (let b = 0; b < 256; b++) m.set(String.fromCodePoint(keep(b) ? b : 256 + n++), b);
  return m;
})();

const metaOf = (entries: [string, GgufKv][]) => ({ metadata: new Map(entries) });

describe('GGUF tokenizer metadata ↔ tokenizer.json', () => {
  it('the writer puts the llama.cpp keys in the file', async () => {
    const tensors = await deepseek2Gguf(st.config, (n) => st.readF32(n), st.tensors, 'F32');
    const bytes = writeGguf({ metadata: deepseek2Metadata(st.config, { json: st.tokenizerJson, config: st.tokenizerConfig }), tensors });
    const h = await readGgufHeader(bytesSource('tiny.gguf', bytes));
    const m = h.metadata;
    expect(m.get('tokenizer.ggml.model')!.value).toBe('gpt2');
    expect(m.get('tokenizer.ggml.pre')!.value).toBe('gpt-2'); // ByteLevel with GPT-2's regex
    const tokens = (m.get('tokenizer.ggml.tokens')!.value as { values: string[] }).values;
    expect(tokens.length).toBe(st.config.vocabSize);
    expect(tokens.slice(0, 4)).toEqual(['<|bos|>', '<|eos|>', '<|user|>', '<|assistant|>']);
    const types = (m.get('tokenizer.ggml.token_type')!.value as { values: Int32Array }).values;
    expect([...types.slice(0, 5)]).toEqual([3, 3, 3, 3, 1]);
    expect((m.get('tokenizer.ggml.merges')!.value as { values: string[] }).values.slice(0, 2)).toEqual(['Ġ t', 'h e']);
    expect(m.get('tokenizer.ggml.bos_token_id')!.value).toBe(0);
    expect(m.get('tokenizer.ggml.eos_token_id')!.value).toBe(1);
    expect(m.get('tokenizer.ggml.add_bos_token')!.value).toBe(true);
    expect(m.get('tokenizer.ggml.add_eos_token')!.value).toBe(false);
    expect(m.get('tokenizer.chat_template')!.value).toBe(json('tokenizer_config.json').chat_template);
  });

  it('read back: identical ids to the safetensors path on held-out text, with and without special tokens', async () => {
    const gg = await ggufOfBundled();
    expect(gg.tokenizer).not.toBeNull();
    const ggCodec = new TextCodec(gg.tokenizer!, gg.tokenizerConfig, gg.config.eosTokenIds);
    let n = 0;
    for (const text of CORPUS) {
      for (const special of [false, true]) {
        const a = stCodec.encode(text, special), b = ggCodec.encode(text, special);
        expect(b, JSON.stringify(text.slice(0, 60))).toEqual(a);
        n += a.length;
      }
      expect(ggCodec.decode(ggCodec.encode(text, false), false)).toBe(stCodec.decode(stCodec.encode(text, false), false));
    }
    expect(n).toBeGreaterThan(2000); // the corpus is not trivially short
    expect(ggCodec.addsBos).toBe(true);
    expect(ggCodec.bosId).toBe(0);
    expect(ggCodec.eosIds).toEqual(stCodec.eosIds);
  });

  it('read back: the same chat prompt and BOS handling (one BOS, never doubled)', async () => {
    const gg = await ggufOfBundled();
    const ggCodec = new TextCodec(gg.tokenizer!, gg.tokenizerConfig, gg.config.eosTokenIds);
    const chat = [{ role: 'user' as const, content: 'Hello there, 123!' }, { role: 'assistant' as const, content: 'Hi.' }, { role: 'user' as const, content: 'Ünïcödé  spaces' }];
    expect(ggCodec.hasChatTemplate).toBe(true);
    expect(ggCodec.renderChat(chat)).toBe(stCodec.renderChat(chat));
    const ids = ggCodec.encodeChat(chat);
    expect(ids).toEqual(stCodec.encodeChat(chat));
    expect(ids.filter((t) => t === 0)).toHaveLength(1);
    expect(ids[0]).toBe(0);
    for (const t of ['The old man', '<|bos|>The old man', '<|bos|><|bos|>x', '']) expect(ggCodec.encode(t), t).toEqual(stCodec.encode(t));
    expect(ggCodec.encode('<|bos|>The old man')).toEqual(ggCodec.encode('The old man'));
  });

  it('add_bos_token false in the metadata: no BOS, as llama.cpp', async () => {
    const meta = ggufTokenizerMetadata(st.tokenizerJson, { ...st.tokenizerConfig, add_bos_token: false }, st.config.vocabSize);
    const files = tokenizerFilesFromGguf(metaOf(meta))!;
    const c = TextCodec.fromJson(files.tokenizerJson, files.tokenizerConfig, [1]);
    expect(c.addsBos).toBe(false);
    expect(c.encode('The old man')).toEqual(stCodec.encode('The old man', false));
  });

  it('token types: CONTROL tokens are special (skipped in decode), USER_DEFINED ones are matched in text but kept', () => {
    const meta = ggufTokenizerMetadata(st.tokenizerJson, st.tokenizerConfig, st.config.vocabSize).map(([k, v]): [string, GgufKv] => {
      if (k !== 'tokenizer.ggml.token_type') return [k, v];
      const types = Int32Array.from((v.value as { values: Int32Array }).values);
      types[2] = GGUF_TOKEN_TYPE.USER_DEFINED; // <|user|>
      return [k, kv.i32s(types)];
    });
    const files = tokenizerFilesFromGguf(metaOf(meta))!;
    const c = TextCodec.fromJson(files.tokenizerJson, files.tokenizerConfig, [1]);
    const ids = c.encode('a<|user|>b<|assistant|>c', false);
    expect(ids).toContain(2);
    expect(ids).toContain(3);
    expect(c.decode(ids, true)).toBe('a<|user|>bc');
    expect(c.decode(ids, false)).toBe('a<|user|>b<|assistant|>c');
  });

  it('ids the files do not define are written as UNUSED [PAD<id>] tokens up to vocab_size', () => {
    const meta = new Map(ggufTokenizerMetadata(st.tokenizerJson, st.tokenizerConfig, st.config.vocabSize + 3));
    const tokens = (meta.get('tokenizer.ggml.tokens')!.value as { values: string[] }).values;
    const types = (meta.get('tokenizer.ggml.token_type')!.value as { values: Int32Array }).values;
    expect(tokens.slice(-3)).toEqual([3072, 3073, 3074].map((i) => `[PAD${i}]`));
    expect([...types.slice(-3)]).toEqual([GGUF_TOKEN_TYPE.UNUSED, GGUF_TOKEN_TYPE.UNUSED, GGUF_TOKEN_TYPE.UNUSED]);
  });
});

describe('llama.cpp pre-tokenizer names → split regexes', () => {
  /** The bundled vocabulary with another pre-tokenizer name: its pre_tokenizer's pieces of `text`. */
  function pieces(pre: string, text: string): string[] {
    const meta = ggufTokenizerMetadata(st.tokenizerJson, st.tokenizerConfig, st.config.vocabSize).map(([k, v]): [string, GgufKv] => (k === 'tokenizer.ggml.pre' ? [k, kv.str(pre)] : [k, v]));
    const files = tokenizerFilesFromGguf(metaOf(meta))!;
    const tok = loadTokenizer(files.tokenizerJson, files.tokenizerConfig) as unknown as { pre_tokenizer: { pre_tokenize(t: string): string[] } };
    // Pieces come out byte-level mapped (GPT-2's byte → character table); map back to text.
    return tok.pre_tokenizer.pre_tokenize(text).map((p) => new TextDecoder().decode(Uint8Array.from([...p].map((c) => BYTE_OF.get(c)!))));
  }

  it('every known name builds a working tokenizer', () => {
    for (const p of GGUF_PRE_TOKENIZERS) for (const name of p.names) expect(pieces(name, 'Hello world 12345 中文\n').join(''), name).toBe('Hello world 12345 中文\n');
  });

  it('gpt-2: letters, digit runs and spaces as GPT-2 splits them', () => {
    expect(pieces('gpt-2', "Hello world 12345 it's")).toEqual(['Hello', ' world', ' 12345', ' it', "'s"]);
  });

  it('llama3 and deepseek-v3 split digits in threes, qwen2 one by one, deepseek-llm keeps runs', () => {
    expect(pieces('llama3', 'a 12345')).toEqual(['a', ' ', '123', '45']);
    expect(pieces('deepseek-v3', 'a 12345')).toEqual(['a', ' ', '123', '45']);
    expect(pieces('qwen2', 'a 123')).toEqual(['a', ' ', '1', '2', '3']);
    expect(pieces('deepseek-llm', 'a 12345')).toEqual(['a', ' ', '12345']);
  });

  it('deepseek-v3 isolates CJK runs and newlines; default isolates punctuation', () => {
    expect(pieces('deepseek-v3', 'ab中文cd\n\nx')).toEqual(['ab', '中文', 'cd', '\n\n', 'x']);
    expect(pieces('default', 'a, b!')).toEqual(['a', ',', ' b', '!']);
  });

  it('the writer names the pre-tokenizer back: its own tokenizer.json, HF-written Llama 3 / Qwen2 regexes, DeepSeek-V2 Digits', () => {
    const preOf = (json: unknown) => new Map(ggufTokenizerMetadata(json, st.tokenizerConfig, st.config.vocabSize)).get('tokenizer.ggml.pre')!.value;
    const withPre = (pre: unknown) => ({ ...(st.tokenizerJson as object), pre_tokenizer: pre });
    const bl = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false };
    const split = (r: string) => ({ type: 'Split', pattern: { Regex: r }, behavior: 'Isolated', invert: false });
    for (const p of GGUF_PRE_TOKENIZERS) {
      const meta = ggufTokenizerMetadata(st.tokenizerJson, st.tokenizerConfig, st.config.vocabSize).map(([k, v]): [string, GgufKv] => [k, k === 'tokenizer.ggml.pre' ? kv.str(p.names[0]) : v]);
      expect(preOf(tokenizerFilesFromGguf(metaOf(meta))!.tokenizerJson), p.names[0]).toBe(p.names[0]);
      if (p.hfRegexes) expect(preOf(withPre({ type: 'Sequence', pretokenizers: [...p.hfRegexes.map(split), bl] }))).toBe(p.names[0]);
    }
    const v2 = GGUF_PRE_TOKENIZERS.find((p) => p.names[0] === 'deepseek-llm')!.regexes!;
    expect(preOf(withPre({ type: 'Sequence', pretokenizers: [...v2.slice(0, -1).map(split), { type: 'Digits', individual_digits: false }, bl] }))).toBe('deepseek-llm');
    expect(() => preOf(withPre({ type: 'Sequence', pretokenizers: [split('\\p{L}+'), bl] }))).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    expect(() => preOf(withPre({ type: 'Metaspace', replacement: '\u2581' }))).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
  });

  it('an unknown pre-tokenizer name is UNSUPPORTED and names the known ones', () => {
    const meta = ggufTokenizerMetadata(st.tokenizerJson, st.tokenizerConfig, st.config.vocabSize).map(([k, v]): [string, GgufKv] => (k === 'tokenizer.ggml.pre' ? [k, kv.str('tekken')] : [k, v]));
    expect(() => tokenizerFilesFromGguf(metaOf(meta))).toThrow(expect.objectContaining({ code: 'UNSUPPORTED', message: expect.stringMatching(/'tekken'.*gpt-2.*deepseek-llm.*deepseek-v3/) }));
  });

  it('other tokenizer models (bert, t5, rwkv) are UNSUPPORTED; a file without one has no tokenizer', () => {
    for (const m of ['bert', 't5', 'rwkv']) expect(() => tokenizerFilesFromGguf(metaOf([['tokenizer.ggml.model', kv.str(m)], ['tokenizer.ggml.tokens', kv.strings(['a'])]])), m).toThrow(expect.objectContaining({ code: 'UNSUPPORTED', message: expect.stringMatching(/'gpt2'.*'llama'/) }));
    expect(tokenizerFilesFromGguf(metaOf([]))).toBeNull();
  });

  it('hostile metadata is BAD_FORMAT: duplicate tokens, bad merges, out-of-range BOS, wrong types', () => {
    const base = (over: [string, GgufKv][]) => metaOf([['tokenizer.ggml.model', kv.str('gpt2')], ['tokenizer.ggml.pre', kv.str('gpt-2')], ['tokenizer.ggml.tokens', kv.strings(['a', 'b', 'ab'])], ['tokenizer.ggml.merges', kv.strings(['a b'])], ...over]);
    expect(tokenizerFilesFromGguf(base([]))).not.toBeNull();
    const bad: [string, GgufKv][][] = [
      [['tokenizer.ggml.tokens', kv.strings(['a', 'a'])]],
      [['tokenizer.ggml.merges', kv.strings(['ab'])]],
      [['tokenizer.ggml.bos_token_id', kv.u32(3)]],
      [['tokenizer.ggml.tokens', kv.i32s([1, 2])]],
      [['tokenizer.ggml.token_type', kv.i32s([1])]],
      [['tokenizer.ggml.add_bos_token', kv.str('yes')]],
    ];
    for (const over of bad) expect(() => tokenizerFilesFromGguf(base(over)), over[0][0]).toThrow(expect.objectContaining({ code: 'BAD_FORMAT' }));
  });
});

describe('SentencePiece (tokenizer.ggml.model = llama)', () => {
  const codecOf = (opts: { addSpacePrefix?: boolean } = {}) => {
    const files = tokenizerFilesFromGguf(metaOf(spmMetadataFromByteLevel(st.tokenizerJson, opts)))!;
    return TextCodec.fromJson(files.tokenizerJson, files.tokenizerConfig, [2]);
  };

  it('a space prefix, ▁ for spaces, merges by score, <s> first, and decode back to the text', () => {
    const c = codecOf();
    const ids = c.encode('Hello world, the old man');
    expect(ids[0]).toBe(1);
    const pieces = ids.slice(1).map((i) => c.tokenizer.id_to_token(i));
    expect(pieces.join('')).toBe('\u2581Hello\u2581world,\u2581the\u2581old\u2581man');
    expect(pieces).toContain('\u2581the'); // merged, not characters
    for (const t of CORPUS) expect(c.decode(c.encode(t, false)), JSON.stringify(t.slice(0, 40))).toBe(t);
  });

  it('characters outside the vocabulary fall back to <0xXX> byte tokens', () => {
    const c = codecOf();
    const ids = c.encode('中', false);
    expect(ids.map((i) => c.tokenizer.id_to_token(i))).toEqual(['\u2581', '<0xE4>', '<0xB8>', '<0xAD>']);
  });

  it('add_space_prefix false: no leading ▁', () => {
    const c = codecOf({ addSpacePrefix: false });
    const pieces = c.encode('Hello world', false).map((i) => c.tokenizer.id_to_token(i));
    expect(pieces[0]!.startsWith('\u2581')).toBe(false);
    expect(pieces.join('')).toBe('Hello\u2581world');
    expect(c.decode(c.encode('Hello world', false))).toBe('Hello world');
  });

  it('a vocabulary of very long pieces is BAD_FORMAT, not a hang', () => {
    const long = Array.from({ length: 300 }, (_, i) => `${i}`.padEnd(2000, 'x'));
    const meta: [string, GgufKv][] = [['tokenizer.ggml.model', kv.str('llama')], ['tokenizer.ggml.tokens', kv.strings(long)]];
    expect(() => tokenizerFilesFromGguf(metaOf(meta))).toThrow(expect.objectContaining({ code: 'BAD_FORMAT' }));
  });

  it('scores of the wrong length are BAD_FORMAT', () => {
    const meta = spmMetadataFromByteLevel(st.tokenizerJson).map(([k, v]): [string, GgufKv] => [k, k === 'tokenizer.ggml.scores' ? kv.f32s([0]) : v]);
    expect(() => tokenizerFilesFromGguf(metaOf(meta))).toThrow(expect.objectContaining({ code: 'BAD_FORMAT' }));
  });
});

describe('hostile tokenizer metadata, randomly', () => {
  it('every mutation of a valid gpt2 or llama tokenizer either loads and runs or is a typed error', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const pick = <T,>(a: T[]): T => a[Math.floor(rand() * a.length)];
    const gpt2 = ggufTokenizerMetadata(st.tokenizerJson, st.tokenizerConfig, st.config.vocabSize);
    const spm = spmMetadataFromByteLevel(st.tokenizerJson);
    const values: (() => GgufKv)[] = [
      () => kv.str(pick(['', 'gpt2', 'llama', 'gpt-2', 'deepseek-v3', 'x'.repeat(1000), '\u0000'])),
      () => kv.u32(Math.floor(rand() * 5000)), () => kv.i32(-1), () => kv.f32(NaN), () => kv.bool(rand() < 0.5),
      () => kv.strings(Array.from({ length: Math.floor(rand() * 50) }, () => pick(['', ' ', 'a', 'a b', 'Ġ', '<0x41>', '\u2581', 'ab']))),
      () => kv.i32s(Array.from({ length: Math.floor(rand() * 50) }, () => Math.floor(rand() * 8) - 1)),
      () => kv.f32s([1, 2, 3]),
    ];
    let loaded = 0, typed = 0;
    for (let i = 0; i < 300; i++) {
      const base = (i % 2 ? spm : gpt2).map(([k, v]): [string, GgufKv] => [k, v]);
      for (let m = 0; m < 1 + Math.floor(rand() * 3); m++) {
        const j = Math.floor(rand() * base.length);
        if (rand() < 0.2) base.splice(j, 1);
        else base[j] = [base[j][0], pick(values)()];
      }
      try {
        const files = tokenizerFilesFromGguf(metaOf(base));
        if (files) {
          const c = TextCodec.fromJson(files.tokenizerJson, files.tokenizerConfig, []);
          c.decode(c.encode('Hello world 123 中文 <|bos|> <s>'));
          c.renderChat([{ role: 'user', content: 'hi' }]);
        }
        loaded++;
      } catch (e) {
        expect(e, `mutation ${i}: ${(e as Error).message}`).toBeInstanceOf(WebMoeError);
        typed++;
      }
    }
    expect(loaded).toBeGreaterThan(10);
    expect(typed).toBeGreaterThan(10);
  });
});
