/**
 * A GGUF file's tokenizer (`tokenizer.ggml.*` metadata, as llama.cpp's llama-vocab.cpp reads it) as the
 * Hugging Face tokenizer.json + tokenizer_config.json it stands for, so a GGUF model goes through the
 * same @huggingface/tokenizers path and chat-template code as a safetensors one. And the inverse: the
 * metadata llama.cpp's converter writes for a byte-level BPE tokenizer.json, for webmoe's GGUF writer.
 *
 * `tokenizer.ggml.model = gpt2` (byte-level BPE) and `llama` (SentencePiece, see sentencePieceFiles) are
 * supported. gpt2's pre-tokenizer is named by
 * `tokenizer.ggml.pre`; llama.cpp applies that name's list of regexes one after the other, each splitting
 * every piece into matches and the text between them, which is a Sequence of HF `Split` pre-tokenizers
 * with behaviour `Isolated` followed by a ByteLevel without its own regex.
 */
import { FormatError, UnsupportedError } from '../errors';
import { kv } from './gguf-write';
import type { GgufArray, GgufKv } from './gguf';

/** llama.cpp's token types (tokenizer.ggml.token_type). */
export const GGUF_TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

/** GPT-2's split regex (HF ByteLevel with use_regex; llama.cpp has the same without the final `|\s+`, whose text it keeps as a piece anyway). */
const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

interface PreTokenizer {
  /** llama.cpp's names for it (the first is what webmoe writes). */
  names: string[];
  /** Applied in order, as llama.cpp's regex_exprs; null = GPT-2's regex inside ByteLevel. */
  regexes: string[] | null;
  /** llama.cpp sets these for the name (before the add_bos_token key, which overrides). */
  ignoreMerges?: boolean;
  addBos?: boolean;
  /** The same split as Hugging Face tokenizer.json files write it, when llama.cpp adapted the regex (for the inverse). */
  hfRegexes?: string[];
}

/** The pre-tokenizers of llama-vocab.cpp (llm_tokenizer_bpe) webmoe knows, with their regexes verbatim. */
export const GGUF_PRE_TOKENIZERS: PreTokenizer[] = [
  { names: ['gpt-2', 'phi-2', 'roberta-bpe', 'mpt', 'olmo', 'jais'], regexes: null },
  { names: ['default'], regexes: ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2, '\\p{N}+', '[0-9][0-9][0-9]'] },
  {
    names: ['llama3', 'llama-v3', 'llama-bpe', 'falcon3'], ignoreMerges: true, addBos: true,
    hfRegexes: ["(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    regexes: ["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
  },
  {
    names: ['qwen2', 'deepseek-r1-qwen', 'megrez', 'stablelm2'],
    hfRegexes: ["(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    regexes: ["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
  },
  {
    names: ['deepseek-llm'],
    regexes: [
      '[\r\n]',
      '\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+',
      '\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+',
      '\\s+$',
      '[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+',
      '\\p{N}+',
    ],
  },
  {
    names: ['deepseek-v3'],
    regexes: [
      '\\p{N}{1,3}',
      '[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+',
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    ],
  },
];

const knownPreNames = () => GGUF_PRE_TOKENIZERS.map((p) => p.names.join('/')).join(', ');

function preTokenizerNamed(name: string): PreTokenizer {
  const p = GGUF_PRE_TOKENIZERS.find((x) => x.names.includes(name));
  if (!p) throw new UnsupportedError(`GGUF tokenizer.ggml.pre '${name}' is not supported (webmoe knows ${knownPreNames()})`, { pre: name });
  return p;
}

type Meta = { metadata: Map<string, GgufKv> };

function get(h: Meta, key: string, type: GgufKv['type']): GgufKv['value'] | undefined {
  const v = h.metadata.get(key);
  if (!v) return undefined;
  if (v.type !== type && !(type === 'UINT32' && typeof v.value === 'number')) throw new FormatError(`GGUF metadata '${key}' must be ${type}, got ${v.type}`, { key });
  return v.value;
}
function stringArray(h: Meta, key: string): string[] | undefined {
  const v = get(h, key, 'ARRAY') as GgufArray | undefined;
  if (v === undefined) return undefined;
  if (v.type !== 'STRING') throw new FormatError(`GGUF metadata '${key}' must be an array of strings, got an array of ${v.type}`, { key });
  return v.values as string[];
}

/** tokenizer.json and tokenizer_config.json (as parsed objects) of a GGUF's tokenizer metadata; null when the file has none. */
export function tokenizerFilesFromGguf(h: Meta): { tokenizerJson: Record<string, unknown>; tokenizerConfig: Record<string, unknown> } | null {
  const model = get(h, 'tokenizer.ggml.model', 'STRING') as string | undefined;
  if (model === undefined || model === 'none' || model === 'no_vocab') return null;
  if (model !== 'gpt2' && model !== 'llama') {
    throw new UnsupportedError(`GGUF tokenizer.ggml.model '${model}' is not supported (webmoe reads 'gpt2', byte-level BPE, and 'llama', SentencePiece BPE)`, { model });
  }
  const tokens = stringArray(h, 'tokenizer.ggml.tokens');
  if (!tokens) throw new FormatError(`GGUF tokenizer.ggml.tokens is missing (tokenizer.ggml.model is ${model})`);
  const typesKv = get(h, 'tokenizer.ggml.token_type', 'ARRAY') as GgufArray | undefined;
  if (typesKv && (typeof (typesKv.values as ArrayLike<unknown>)[0] === 'bigint' || typesKv.values.length !== tokens.length || typesKv.type === 'STRING' || typesKv.type === 'ARRAY')) {
    throw new FormatError(`GGUF tokenizer.ggml.token_type must be ${tokens.length} integers (one per token)`);
  }
  const types = typesKv ? (typesKv.values as ArrayLike<number>) : null;

  const vocab: Record<string, number> = Object.create(null);
  const added: Record<string, unknown>[] = [];
  tokens.forEach((t, id) => {
    // llama.cpp asserts that token texts are unique (id_to_token.size() == token_to_id.size()).
    if (t in vocab) throw new FormatError(`GGUF tokenizer.ggml.tokens has '${t.slice(0, 40)}' twice (ids ${vocab[t]} and ${id})`);
    vocab[t] = id;
    const ty = types ? types[id] : GGUF_TOKEN_TYPE.NORMAL;
    // Control (and SentencePiece's unknown) tokens are special (matched in text with parse_special,
    // dropped by skip_special); user-defined ones are always matched, as HF added tokens that are not special.
    if (ty === GGUF_TOKEN_TYPE.CONTROL || ty === GGUF_TOKEN_TYPE.USER_DEFINED || (model === 'llama' && ty === GGUF_TOKEN_TYPE.UNKNOWN)) {
      added.push({ id, content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: ty !== GGUF_TOKEN_TYPE.USER_DEFINED });
    }
  });
  const tokenAt = (key: string) => {
    const id = get(h, key, 'UINT32') as number | undefined;
    if (id === undefined) return null;
    if (!Number.isInteger(id) || id < 0 || id >= tokens.length) throw new FormatError(`GGUF ${key} = ${id} is outside the ${tokens.length} tokens`, { key });
    return tokens[id];
  };
  const flag = (key: string, dflt: boolean) => (get(h, key, 'BOOL') as boolean | undefined) ?? dflt;
  if (model === 'llama') return sentencePieceFiles(h, tokens, vocab, added, types, tokenAt, flag);

  const merges = stringArray(h, 'tokenizer.ggml.merges');
  if (!merges) throw new FormatError('GGUF tokenizer.ggml.merges is missing (a gpt2 tokenizer needs them)');
  const preName = (get(h, 'tokenizer.ggml.pre', 'STRING') as string | undefined) ?? 'default';
  const pre = preTokenizerNamed(preName);
  for (const m of merges) {
    // llama.cpp splits at the first space after the first character.
    if (m.indexOf(' ', 1) < 0) throw new FormatError(`GGUF tokenizer.ggml.merges entry '${m.slice(0, 40)}' has no space between its two parts`);
  }
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: pre.regexes === null };
  const preTokenizer = pre.regexes === null ? byteLevel : {
    type: 'Sequence',
    pretokenizers: [...pre.regexes.map((r) => ({ type: 'Split', pattern: { Regex: r }, behavior: 'Isolated', invert: false })), byteLevel],
  };
  const tokenizerJson = {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: preTokenizer, post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false,
      ignore_merges: pre.ignoreMerges ?? false, vocab, merges: merges.map((m) => { const i = m.indexOf(' ', 1); return [m.slice(0, i), m.slice(i + 1)]; }),
    },
  };
  // llama.cpp's default when add_bos_token is absent: BPE adds no BOS unless the pre-tokenizer's family does.
  return { tokenizerJson, tokenizerConfig: tokenizerConfigOf(h, tokenAt, flag, pre.addBos ?? false) };
}

/** Σ length² over a SentencePiece vocabulary (Llama's 32k pieces: ~2e6; a 256k vocabulary of 10-character pieces: 2.6e7). */
const SPM_SPLIT_BUDGET = 5e8;

type Files = { tokenizerJson: Record<string, unknown>; tokenizerConfig: Record<string, unknown> };

/**
 * tokenizer_config.json from the metadata: the special tokens, the BOS/EOS flags (`addBos`: llama.cpp's
 * default for this tokenizer when the key is absent) and the chat template.
 */
function tokenizerConfigOf(h: Meta, tokenAt: (key: string) => string | null, flag: (key: string, dflt: boolean) => boolean, addBos: boolean): Record<string, unknown> {
  const config: Record<string, unknown> = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: tokenAt('tokenizer.ggml.bos_token_id'),
    eos_token: tokenAt('tokenizer.ggml.eos_token_id'),
    unk_token: tokenAt('tokenizer.ggml.unknown_token_id'),
    pad_token: tokenAt('tokenizer.ggml.padding_token_id'),
    add_bos_token: flag('tokenizer.ggml.add_bos_token', addBos),
    add_eos_token: flag('tokenizer.ggml.add_eos_token', false),
    clean_up_tokenization_spaces: false,
  };
  const template = get(h, 'tokenizer.chat_template', 'STRING');
  if (template !== undefined) config.chat_template = template;
  return config;
}

/**
 * `tokenizer.ggml.model = llama`: llama.cpp's SentencePiece tokenizer (llm_tokenizer_spm) as an HF BPE.
 * llama.cpp escapes spaces as U+2581 (after prefixing one to each text piece that starts the input or
 * follows a special token, when add_space_prefix), splits into characters and repeatedly merges the
 * adjacent pair whose concatenation is the vocabulary token of highest score (leftmost on ties);
 * characters left outside the vocabulary become <0xXX> byte tokens. As HF BPE: every pair (a, b) with
 * a, b and a+b in the vocabulary is a merge, ranked by the score of a+b; normalizer Prepend + Replace
 * (HF normalises each text section between added tokens, which is llama.cpp's prefix rule); byte_fallback.
 */
function sentencePieceFiles(
  h: Meta, tokens: string[], vocab: Record<string, number>, added: Record<string, unknown>[], types: ArrayLike<number> | null,
  tokenAt: (key: string) => string | null, flag: (key: string, dflt: boolean) => boolean,
): Files {
  const scoresKv = get(h, 'tokenizer.ggml.scores', 'ARRAY') as GgufArray | undefined;
  if (scoresKv && (scoresKv.type !== 'FLOAT32' || scoresKv.values.length !== tokens.length)) throw new FormatError(`GGUF tokenizer.ggml.scores must be ${tokens.length} FLOAT32 values (one per token)`);
  const scores = scoresKv ? (scoresKv.values as Float32Array) : new Float32Array(tokens.length); // llama.cpp: 0 when absent
  // Every split of every token is looked up (cost Σ length²): bounded, so a hostile file of long tokens is an error, not a hang.
  let work = 0;
  for (const t of tokens) work += t.length * t.length;
  if (work > SPM_SPLIT_BUDGET) throw new FormatError(`GGUF tokenizer.ggml.tokens: SentencePiece tokens this long (Σ length² = ${work}) are not a real vocabulary (limit ${SPM_SPLIT_BUDGET})`);
  const merges: { a: string; b: string; score: number; id: number; at: number }[] = [];
  tokens.forEach((t, id) => {
    if (types && types[id] === GGUF_TOKEN_TYPE.BYTE) return; // <0xXX> are reached by byte fallback, not merges
    const cps = [...t];
    let at = 0;
    for (let k = 1; k < cps.length; k++) {
      at += cps[k - 1].length;
      const a = t.slice(0, at), b = t.slice(at);
      if (a in vocab && b in vocab) merges.push({ a, b, score: scores[id], id, at });
    }
  });
  // Highest score first; one token's several splits keep the order of their left part's length.
  merges.sort((x, y) => y.score - x.score || x.id - y.id || x.at - y.at);
  const spacePrefix = flag('tokenizer.ggml.add_space_prefix', true);
  const replace = { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' };
  const tokenizerJson = {
    version: '1.0', truncation: null, padding: null, added_tokens: added,
    normalizer: spacePrefix ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, replace] } : replace,
    pre_tokenizer: null, post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' },
        ...(spacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE', dropout: null, unk_token: tokenAt('tokenizer.ggml.unknown_token_id'), continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: merges.map((m) => [m.a, m.b]),
    },
  };
  return { tokenizerJson, tokenizerConfig: tokenizerConfigOf(h, tokenAt, flag, true) }; // SentencePiece adds BOS by default (llama.cpp)
}

// --------------------------------------------------------------------------------------- inverse

/** Which llama.cpp pre-tokenizer name a tokenizer.json's pre_tokenizer is, or an UnsupportedError. */
function preNameOf(pt: unknown): string {
  const o = pt as Record<string, any> | null;
  if (o?.type === 'ByteLevel' && o.use_regex !== false && !o.add_prefix_space) return 'gpt-2';
  if (o?.type === 'Sequence' && Array.isArray(o.pretokenizers)) {
    const list = o.pretokenizers as Record<string, any>[];
    const last = list.at(-1);
    const splits = list.slice(0, -1);
    // HF's Digits pre-tokenizer (Unicode numeric characters, as runs or one by one) is a regex split too (DeepSeek-V2 uses it).
    const regexOf = (s: Record<string, any>): string | null =>
      s.type === 'Split' && s.behavior === 'Isolated' && !s.invert && typeof s.pattern?.Regex === 'string' ? s.pattern.Regex
        : s.type === 'Digits' ? (s.individual_digits ? '\\p{N}' : '\\p{N}+') : null;
    const regexes = splits.map(regexOf);
    if (last?.type === 'ByteLevel' && last.use_regex === false && !last.add_prefix_space && regexes.every((r) => r !== null)) {
      const same = (list: string[] | null | undefined) => !!list && list.length === regexes.length && list.every((r, i) => r === regexes[i]);
      const p = GGUF_PRE_TOKENIZERS.find((x) => same(x.regexes) || same(x.hfRegexes));
      if (p) return p.names[0];
    }
  }
  throw new UnsupportedError(`tokenizer.json: this pre_tokenizer has no llama.cpp pre-tokenizer name (webmoe writes ${knownPreNames()})`);
}

/**
 * GGUF tokenizer metadata (llama.cpp converter's keys) of a byte-level BPE tokenizer.json and its
 * tokenizer_config.json. `vocabSize` tokens are written (the model's embedding rows): ids the files
 * do not define become `[PAD<id>]` tokens of type UNUSED, as llama.cpp's converter writes them.
 */
export function ggufTokenizerMetadata(tokenizerJson: unknown, tokenizerConfig: Record<string, unknown> | null, vocabSize: number): [string, GgufKv][] {
  const j = tokenizerJson as Record<string, any>;
  const model = j?.model;
  if (model?.type !== 'BPE' || typeof model.vocab !== 'object') throw new UnsupportedError('tokenizer.json: webmoe writes GGUF tokenizers for byte-level BPE models only');
  if (j.decoder?.type !== 'ByteLevel') throw new UnsupportedError('tokenizer.json: the decoder is not ByteLevel (GGUF gpt2 tokenizers are byte-level)');
  const pre = preNameOf(j.pre_tokenizer);
  const tokens: (string | null)[] = new Array(vocabSize).fill(null);
  const types = new Int32Array(vocabSize).fill(GGUF_TOKEN_TYPE.NORMAL);
  const place = (t: string, id: number) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new FormatError(`tokenizer.json: token '${t.slice(0, 40)}' has id ${id}, outside vocab_size ${vocabSize}`);
    tokens[id] = t;
  };
  for (const [t, id] of Object.entries(model.vocab as Record<string, number>)) place(t, id);
  for (const a of (j.added_tokens ?? []) as { id: number; content: string; special: boolean }[]) {
    place(a.content, a.id);
    types[a.id] = a.special ? GGUF_TOKEN_TYPE.CONTROL : GGUF_TOKEN_TYPE.USER_DEFINED;
  }
  const filled = tokens.map((t, i) => {
    if (t !== null) return t;
    types[i] = GGUF_TOKEN_TYPE.UNUSED;
    return `[PAD${i}]`;
  });
  const merges = (model.merges as (string | [string, string])[]).map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`));
  const idOf = (field: string) => {
    const v = tokenizerConfig?.[field];
    const text = typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as any).content === 'string' ? (v as any).content : null;
    if (text === null) return null;
    const id = filled.indexOf(text);
    return id < 0 ? null : id;
  };
  const out: [string, GgufKv][] = [
    ['tokenizer.ggml.model', kv.str('gpt2')],
    ['tokenizer.ggml.pre', kv.str(pre)],
    ['tokenizer.ggml.tokens', kv.strings(filled)],
    ['tokenizer.ggml.token_type', kv.i32s(types)],
    ['tokenizer.ggml.merges', kv.strings(merges)],
  ];
  for (const [field, key] of [['bos_token', 'bos_token_id'], ['eos_token', 'eos_token_id'], ['unk_token', 'unknown_token_id'], ['pad_token', 'padding_token_id']] as const) {
    const id = idOf(field);
    if (id !== null) out.push([`tokenizer.ggml.${key}`, kv.u32(id)]);
  }
  // Written explicitly (llama.cpp's defaults differ by pre-tokenizer): what TextCodec adds to raw text.
  const postAddsBos = (() => {
    const single = j.post_processor?.type === 'TemplateProcessing' ? j.post_processor.single : null;
    return Array.isArray(single) && single.length > 0 && 'SpecialToken' in single[0];
  })();
  const hasFlags = tokenizerConfig && ('add_bos_token' in tokenizerConfig || 'add_eos_token' in tokenizerConfig);
  out.push(['tokenizer.ggml.add_bos_token', kv.bool(hasFlags ? tokenizerConfig!.add_bos_token === true : postAddsBos)]);
  out.push(['tokenizer.ggml.add_eos_token', kv.bool(hasFlags ? tokenizerConfig!.add_eos_token === true : false)]);
  const tpl = tokenizerConfig?.chat_template;
  const source = typeof tpl === 'string' ? tpl : Array.isArray(tpl) ? (tpl.find((t: any) => t?.name === 'default')?.template ?? null) : null;
  if (source) out.push(['tokenizer.chat_template', kv.str(source)]);
  return out;
}

/**
 * Appends a model's tokenizer keys to its metadata `m` (when its tokenizer.json is given), then sets
 * the BOS / EOS ids from config.json: they win over tokenizer_config's token names (they are what the
 * model was trained with).
 */
export function appendTokenizerMetadata(
  m: [string, GgufKv][], tokenizer: { json: unknown; config: Record<string, unknown> | null } | undefined,
  ids: { vocabSize: number; bos: number | null; eos: number | null },
): [string, GgufKv][] {
  if (tokenizer) m.push(...ggufTokenizerMetadata(tokenizer.json, tokenizer.config, ids.vocabSize));
  const set = (key: string, id: number) => {
    const i = m.findIndex(([k]) => k === key);
    if (i >= 0) m[i] = [key, kv.u32(id)];
    else m.push([key, kv.u32(id)]);
  };
  if (ids.bos !== null) set('tokenizer.ggml.bos_token_id', ids.bos);
  if (ids.eos !== null) set('tokenizer.ggml.eos_token_id', ids.eos);
  return m;
}
