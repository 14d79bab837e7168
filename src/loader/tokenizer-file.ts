/**
 * tokenizer.json (+ tokenizer_config.json) → the maintained @huggingface/tokenizers Tokenizer, with
 * every failure of an untrusted file turned into a typed FormatError. The tokenizer is smoke-tested
 * (encode + decode of a short mixed-script text) so a file that constructs but cannot run fails here,
 * at load, rather than at the first prompt.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { FormatError } from '../errors';

export { Tokenizer };

const SMOKE_TEXT = 'Hello, world! 123 héllo 中文 \n\t';

export function loadTokenizer(json: unknown, configJson?: unknown, opts: { vocabSize?: number } = {}): Tokenizer {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError('tokenizer.json: must be a JSON object', { file: 'tokenizer.json' });
  if (configJson !== undefined && configJson !== null && (typeof configJson !== 'object' || Array.isArray(configJson))) {
    throw new FormatError('tokenizer_config.json: must be a JSON object', { file: 'tokenizer_config.json' });
  }
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, (configJson ?? {}) as object);
  } catch (e) {
    throw new FormatError(`tokenizer.json: not a usable tokenizer: ${message(e)}`, { file: 'tokenizer.json' });
  }
  try {
    const ids = tok.encode(SMOKE_TEXT, { add_special_tokens: false }).ids;
    if (!Array.isArray(ids) || ids.some((i) => typeof i !== 'number' || !Number.isInteger(i) || i < 0)) throw new Error(`encode returned invalid ids`);
    tok.decode(ids);
  } catch (e) {
    throw new FormatError(`tokenizer.json: the tokenizer fails on a test text: ${message(e)}`, { file: 'tokenizer.json' });
  }
  if (opts.vocabSize !== undefined) {
    let max = -1;
    let badToken: string | null = null;
    try {
      for (const [t, id] of tok.get_vocab(true)) {
        if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) { badToken = t; break; }
        if (id > max) max = id;
      }
    } catch (e) {
      throw new FormatError(`tokenizer.json: cannot read the vocabulary: ${message(e)}`, { file: 'tokenizer.json' });
    }
    if (badToken !== null) throw new FormatError(`tokenizer.json: token ${JSON.stringify(badToken)} has an invalid id`, { file: 'tokenizer.json' });
    if (max >= opts.vocabSize) throw new FormatError(`tokenizer.json: token id ${max} is outside the model's vocabulary (vocab_size ${opts.vocabSize} in config.json)`, { file: 'tokenizer.json', maxId: max });
  }
  return tok;
}

function message(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.length > 300 ? m.slice(0, 300) + '…' : m;
}
