// GPT-OSS's tokenizer (o200k_harmony) through webmoe's tokenizer path (loader/tokenizer-file.ts →
// @huggingface/tokenizers, engine/text.ts TextCodec) against OpenAI's own BPE core: the `tiktoken` npm
// package (the Rust tiktoken compiled to WASM) with o200k_base's ranks and the harmony special tokens.
// Ids must be equal on every text of a varied corpus, and decoding must give the text back.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { Tiktoken } from 'tiktoken/lite';
import { loadTokenizer, type Tokenizer } from '../../src/loader/tokenizer-file';
import { TextCodec } from '../../src/engine/text';
import { HARMONY_SPECIALS, O200K_HARMONY_VOCAB_SIZE, gptOssTokenizerConfig, harmonySpecialTokens, o200kBaseRanksFile, o200kHarmonyTokenizerJson } from '../helpers/o200k-harmony';

const CORPUS: string[] = [
  'Hello, world!',
  "I'm sure you'll see they've gone; it's what we'd DO. DON'T SHOUT, I'LL WAIT, HE'S here",
  'The year 2024 had 365 days; 1234567890 and 3.14159 and -42 and 1,000,000 and 0x1F',
  '    leading spaces, trailing spaces    ',
  'tabs\tand\ttabs\t\tand a newline\nand two\n\nthen CRLF\r\nend',
  '\n\n\n   \n\t \n',
  '中文分词测试：今天天气很好，我们去公园吧。日本語のテキストも。한국어 문장입니다.',
  'Emoji: 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️‍🔥 😀😃😄 and a lone 🤖.',
  'Ünïcödé àccents: naïve café résumé façade; Ελληνικά; русский текст; עברית; العربية; हिन्दी',
  'function fib(n: number): number {\n  return n < 2 ? n : fib(n - 1) + fib(n - 2);\n}\n',
  'def f(x):\n    if x:\n        return [i**2 for i in range(10)]  # squares\n',
  '<div class="a">&amp;&lt;</div> {"key": [1, 2, {"nested": null}]} $HOME/path/to/file.txt',
  'CamelCaseIdentifiers andSnake_case_names, HTTPServerError, iPhone, McDonald',
  '!!!???...---___===+++***',
  'x'.repeat(300) + ' ' + 'ab'.repeat(200),
  '1'.repeat(50) + ' ' + '٣٤٥' + ' ' + '²³',
  'Mixed\u00a0non-breaking\u2003em\u3000ideographic spaces and zero\u200bwidth',
  'combining: e\u0301 a\u0308 n\u0303, and Hangul jamo \u1100\u1161',
  'A sentence with a <|fake|> token-like string and <|endoftext without close',
];

describe('o200k_harmony tokenizer.json through webmoe’s tokenizer path', () => {
  let tok: Tokenizer;
  let ref: Tiktoken;

  beforeAll(() => {
    const file = o200kBaseRanksFile();
    ref = new Tiktoken(file.bpe_ranks, harmonySpecialTokens(), file.pat_str);
    tok = loadTokenizer(o200kHarmonyTokenizerJson(), gptOssTokenizerConfig(false), { vocabSize: O200K_HARMONY_VOCAB_SIZE });
  }, 60_000);
  afterAll(() => ref?.free());

  it('has the harmony special tokens at their published ids', () => {
    for (const [t, id] of Object.entries(HARMONY_SPECIALS)) {
      expect(tok.token_to_id(t)).toBe(id);
      expect(tok.id_to_token(id)).toBe(t);
    }
  });

  it.each(CORPUS.map((t, i) => [i, t]))('text %i: the ids are tiktoken’s o200k ids, and decode gives the text back', (_, text) => {
    const want = Array.from(ref.encode(text as string, [], []));
    const got = tok.encode(text as string, { add_special_tokens: false }).ids;
    expect(got).toEqual(want);
    expect(tok.decode(got, { skip_special_tokens: false })).toBe(text);
    expect(new TextDecoder().decode(ref.decode(Uint32Array.from(got)))).toBe(text);
  });

  it('the whole corpus as one text (pieces across boundaries) gives tiktoken’s ids', () => {
    const text = CORPUS.join('\n');
    expect(tok.encode(text, { add_special_tokens: false }).ids).toEqual(Array.from(ref.encode(text, [], [])));
  });

  it('300 random texts over a mixed pool (letters of several scripts, digits, marks, spaces, emoji, punctuation) give tiktoken’s ids', () => {
    const pool = [...'aZe Ée\u0301 ßçñ 中文字 かな 한글 Ωλ жЖ ٣4٥ 0123456789 \t\n\r  \u00a0 .,;:!?\'"`~@#$%^&*()[]{}<>/\\|-_=+ 😀👍🏽🇫🇷'];
    let seed = 12345;
    const rand = (n: number) => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % n; };
    for (let k = 0; k < 300; k++) {
      let text = '';
      const len = 1 + rand(60);
      for (let i = 0; i < len; i++) text += pool[rand(pool.length)];
      const want = Array.from(ref.encode(text, [], []));
      expect(tok.encode(text, { add_special_tokens: false }).ids, JSON.stringify(text)).toEqual(want);
    }
  });

  it('special tokens written in the text are single ids, as tiktoken with allowed_special="all"', () => {
    const text = '<|start|>user<|message|>Hi there<|end|><|start|>assistant<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a":1}<|call|>';
    const want = Array.from(ref.encode(text, 'all'));
    const got = tok.encode(text, { add_special_tokens: false }).ids;
    expect(got).toEqual(want);
    expect(got.filter((i) => i >= 199998)).toEqual([200006, 200008, 200007, 200006, 200005, 200008, 200007, 200006, 200005, 200003, 200008, 200012]);
  });

  it('TextCodec adds nothing around raw text (no BOS: the post-processor is ByteLevel) and takes <|return|> as EOS', () => {
    const codec = new TextCodec(tok, gptOssTokenizerConfig(false), [200002, 199999, 200012]);
    expect(codec.addsBos).toBe(false);
    expect(codec.encode('Hello, world!')).toEqual(Array.from(ref.encode('Hello, world!', [], [])));
    expect(codec.eosIds).toEqual(expect.arrayContaining([200002, 199999, 200012]));
  });
});
