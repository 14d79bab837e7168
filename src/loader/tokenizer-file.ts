/**
 * tokenizer.json (+ tokenizer_config.json) → the maintained @huggingface/tokenizers Tokenizer, with
 * every failure of an untrusted file turned into a typed FormatError. The tokenizer is smoke-tested
 * (encode + decode of a short mixed-script text) so a file that constructs but cannot run fails here,
 * at load, rather than at the first prompt.
 */
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { FormatError } from '../errors';

/**
 * The tokenizer webmoe runs (@huggingface/tokenizers' Tokenizer), typed by the members webmoe and its
 * users need. The published declarations name this interface rather than the library's class: the library
 * is bundled into dist/, and its own .d.ts files do not resolve under `moduleResolution: NodeNext`
 * (extensionless relative imports), which would fail a consumer's type check.
 */
export interface Tokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean; text_pair?: string | null }): { ids: number[]; tokens: string[]; attention_mask: number[] };
  decode(ids: number[], options?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean | null }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
}

const SMOKE_TEXT = 'Hello, world! 123 héllo 中文 \n\t';

export function loadTokenizer(json: unknown, configJson?: unknown, opts: { vocabSize?: number } = {}): Tokenizer {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError('tokenizer.json: must be a JSON object', { file: 'tokenizer.json' });
  if (configJson !== undefined && configJson !== null && (typeof configJson !== 'object' || Array.isArray(configJson))) {
    throw new FormatError('tokenizer_config.json: must be a JSON object', { file: 'tokenizer_config.json' });
  }
  preValidate(json as Record<string, unknown>, opts.vocabSize);
  let tok: Tokenizer;
  try {
    tok = new HfTokenizer(json, (configJson ?? {}) as object);
  } catch (e) {
    throw new FormatError(`tokenizer.json: not a usable tokenizer: ${message(e)}`, { file: 'tokenizer.json' });
  }
  try {
    // Also with the post-processor, which raw-text prompts go through (it may add BOS/EOS tokens).
    for (const add_special_tokens of [false, true]) {
      const ids = tok.encode(SMOKE_TEXT, { add_special_tokens }).ids;
      if (!Array.isArray(ids) || ids.some((i) => typeof i !== 'number' || !Number.isInteger(i) || i < 0)) throw new Error(`encode returned invalid ids`);
      tok.decode(ids);
    }
  } catch (e) {
    throw new FormatError(`tokenizer.json: the tokenizer fails on a test text: ${message(e)}`, { file: 'tokenizer.json' });
  }
  return tok;
}

/**
 * Checks token ids before the library sees them: it stores the vocabulary in an array indexed by id, so
 * one id of 1e9 makes a billion-slot array that every vocabulary walk then iterates (found by fuzzing:
 * an effective hang). Ids must be integers in [0, limit), where limit is the model's vocab_size when
 * known, else the number of tokens the file defines.
 */
function preValidate(json: Record<string, unknown>, vocabSize?: number): void {
  const bad = (msg: string): never => { throw new FormatError(`tokenizer.json: ${msg}`, { file: 'tokenizer.json' }); };
  const model = json.model;
  if (typeof model !== 'object' || model === null || Array.isArray(model)) bad('"model" must be an object');
  const vocab = (model as Record<string, unknown>).vocab;
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) bad('"added_tokens" must be a list');
  const addedList = added as unknown[];
  let entries = 0;
  const ids: [string, unknown][] = [];
  if (Array.isArray(vocab)) entries = vocab.length; // Unigram: [token, score] pairs, ids are positions
  else if (typeof vocab === 'object' && vocab !== null) {
    for (const [t, id] of Object.entries(vocab)) ids.push([t, id]);
    entries = ids.length;
  } else if (vocab !== undefined) bad('"model.vocab" must be an object or a list');
  const limit = vocabSize ?? entries + addedList.length;
  const checkId = (what: string, id: unknown) => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) bad(`${what} has invalid id ${JSON.stringify(id)}`);
    if ((id as number) >= limit) bad(`${what} has id ${id}, outside the vocabulary (${vocabSize !== undefined ? `vocab_size ${vocabSize} in config.json` : `${limit} tokens defined`})`);
  };
  for (const [t, id] of ids) checkId(`token ${JSON.stringify(t).slice(0, 40)}`, id);
  if (Array.isArray(vocab) && vocab.length > limit) bad(`${vocab.length} tokens, outside the vocabulary (vocab_size ${limit})`);
  for (const a of addedList) {
    if (typeof a !== 'object' || a === null) bad('added_tokens entries must be objects');
    const o = a as Record<string, unknown>;
    if (typeof o.content !== 'string') bad(`added token ${JSON.stringify(o.id)} has no string content`);
    checkId(`added token ${JSON.stringify(o.content).slice(0, 40)}`, o.id);
  }
}

function message(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.length > 300 ? m.slice(0, 300) + '…' : m;
}
