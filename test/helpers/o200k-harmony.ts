/**
 * GPT-OSS's tokenizer files (o200k_harmony) built from the o200k_base ranks the `tiktoken` npm package
 * ships (encoders/o200k_base.json: OpenAI's ranks, pattern and base specials), since the hub cannot be
 * reached here. The conversion is the one Hugging Face made gpt-oss's tokenizer.json with
 * (transformers models/gpt_oss/convert_gpt_oss_weights_to_hf.py, GptOssConverter + TikTokenConverter):
 * vocab = each rank's bytes through GPT-2's byte→unicode map; merges = every split of a token into two
 * tokens, ordered by the merged token's rank (then by the parts' ranks); pre-tokenizer = Split on o200k's
 * pattern (Isolated) then ByteLevel without its own regex; ByteLevel decoder; the harmony specials
 * 199998–200018 as added tokens. The chat template is the published one (test/data/gpt-oss/).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** The harmony special tokens of o200k_harmony with their ids (openai/harmony, gpt-oss tokenizer_config.json). */
export const HARMONY_SPECIALS: Record<string, number> = {
  '<|startoftext|>': 199998,
  '<|endoftext|>': 199999,
  '<|return|>': 200002,
  '<|constrain|>': 200003,
  '<|channel|>': 200005,
  '<|start|>': 200006,
  '<|end|>': 200007,
  '<|message|>': 200008,
  '<|call|>': 200012,
  '<|endofprompt|>': 200018,
};
/** Every special id of the file: the named ones and `<|reserved_N|>` for the free ids of 199999–200017 (as the converter fills them). */
export function harmonySpecialTokens(): Record<string, number> {
  const all = { ...HARMONY_SPECIALS };
  const used = new Set(Object.values(all));
  for (let k = 199999; k < 200018; k++) if (!used.has(k)) all[`<|reserved_${k}|>`] = k;
  return all;
}
/** gpt-oss config.json vocab_size (the embedding rows; ids past 200018 are padding). */
export const O200K_HARMONY_VOCAB_SIZE = 201088;

const require = createRequire(import.meta.url);

interface TiktokenRanks { pat_str: string; special_tokens: Record<string, number>; bpe_ranks: string }

/** tiktoken's o200k_base.json as shipped (ranks in its compact "! offset base64…" line format). */
export function o200kBaseRanksFile(): TiktokenRanks {
  return JSON.parse(readFileSync(join(require.resolve('tiktoken/encoders/o200k_base.json')), 'utf8')) as TiktokenRanks;
}

/** Rank → token bytes, from the compact line format (each line: "! <first rank> <base64 token> …"). */
function decodeRanks(bpeRanks: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const line of bpeRanks.split('\n')) {
    if (!line) continue;
    const [, offsetText, ...tokens] = line.split(' ');
    let rank = Number(offsetText);
    for (const t of tokens) out[rank++] = Uint8Array.from(Buffer.from(t, 'base64'));
  }
  return out;
}

/** GPT-2's byte → printable character map (bytes_to_unicode). */
function byteToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const map: string[] = [];
  for (const b of bs) map[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (map[b] === undefined) map[b] = String.fromCharCode(256 + n++);
  return map;
}

let cached: { tokenizerJson: Record<string, unknown>; pattern: string } | null = null;

/** The o200k_harmony tokenizer.json object (built once per process: ~1 s). */
export function o200kHarmonyTokenizerJson(): Record<string, unknown> {
  if (cached) return cached.tokenizerJson;
  const file = o200kBaseRanksFile();
  const ranks = decodeRanks(file.bpe_ranks);
  const latin1 = (b: Uint8Array) => Buffer.from(b).toString('latin1');
  const rankOf = new Map<string, number>();
  ranks.forEach((b, r) => rankOf.set(latin1(b), r));
  const b2u = byteToUnicode();
  const show = (s: string) => { let o = ''; for (let i = 0; i < s.length; i++) o += b2u[s.charCodeAt(i)]; return o; };
  const vocab: Record<string, number> = {};
  const merges: [string, string][] = [];
  ranks.forEach((bytes, rank) => {
    const s = latin1(bytes);
    vocab[show(s)] = rank;
    if (s.length === 1) return;
    const local: [string, string][] = [];
    for (let i = 1; i < s.length; i++) {
      const l = s.slice(0, i), r = s.slice(i);
      if (rankOf.has(l) && rankOf.has(r)) local.push([l, r]);
    }
    local.sort((a, b) => rankOf.get(a[0])! - rankOf.get(b[0])! || rankOf.get(a[1])! - rankOf.get(b[1])!);
    for (const [l, r] of local) merges.push([show(l), show(r)]);
  });
  const specials = harmonySpecialTokens();
  const added = Object.entries(specials).sort((a, b) => a[1] - b[1]).map(([content, id]) => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: file.pat_str }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
  cached = { tokenizerJson, pattern: file.pat_str };
  return tokenizerJson;
}

/** The published chat template (test/data/gpt-oss/chat_template.jinja). */
export function gptOssChatTemplate(): string {
  return readFileSync(join(import.meta.dirname, '..', 'data', 'gpt-oss', 'chat_template.jinja'), 'utf8');
}

/** gpt-oss's tokenizer_config.json keys webmoe reads (bos/eos/pad as published), with the chat template inline or not. */
export function gptOssTokenizerConfig(withTemplate = true): Record<string, unknown> {
  return {
    bos_token: '<|startoftext|>',
    clean_up_tokenization_spaces: false,
    eos_token: '<|return|>',
    extra_special_tokens: {},
    model_input_names: ['input_ids', 'attention_mask'],
    model_max_length: 1000000000000000019884624838656,
    pad_token: '<|endoftext|>',
    tokenizer_class: 'PreTrainedTokenizerFast',
    ...(withTemplate ? { chat_template: gptOssChatTemplate() } : {}),
  };
}
