// Which special tokens TextCodec puts around raw text and conversations: the model's files decide
// (tokenizer_config.json add_bos_token/add_eos_token, else tokenizer.json's post-processor), a BOS the
// text or chat template already wrote is never doubled, and models that declare no BOS get none.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { TextCodec } from '../../src/engine/text';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { FormatError } from '../../src/errors';

const dir = new URL('../../public/models/webmoe-tiny/', import.meta.url);
const bundledJson = () => JSON.parse(readFileSync(new URL('tokenizer.json', dir), 'utf8')) as Record<string, unknown>;
const bundledConfig = () => JSON.parse(readFileSync(new URL('tokenizer_config.json', dir), 'utf8')) as Record<string, unknown>;
const BOS = 0, EOS = 1, USER = 2, ASSISTANT = 3;
const chat = [{ role: 'user' as const, content: 'Hello' }];

/** The bundled files with the BOS declarations replaced. */
function variant(opts: { postProcessor: boolean; config: Record<string, unknown> }): TextCodec {
  const json = bundledJson();
  if (!opts.postProcessor) json.post_processor = null;
  const config = bundledConfig();
  delete config.add_bos_token;
  delete config.add_eos_token;
  return TextCodec.fromJson(json, { ...config, ...opts.config }, [EOS]);
}

describe('BOS on the bundled model (declared by add_bos_token and the post-processor)', () => {
  const codec = TextCodec.fromJson(bundledJson(), bundledConfig(), [EOS]);
  const bare = codec.encode('The old man', false);

  it('the files declare it the Hugging Face way', () => {
    expect(bundledConfig().add_bos_token).toBe(true);
    expect((bundledJson().post_processor as { type: string }).type).toBe('TemplateProcessing');
    expect(codec.addsBos).toBe(true);
    expect(codec.bosId).toBe(BOS);
  });

  it('raw text gets exactly one BOS, also when the text starts with one', () => {
    expect(bare[0]).not.toBe(BOS);
    expect(codec.encode('The old man')).toEqual([BOS, ...bare]);
    expect(codec.encode('<|bos|>The old man')).toEqual([BOS, ...bare]);
    // BOS the user wrote twice stays twice (nothing is added on top); a BOS later in the text is text.
    expect(codec.encode('<|bos|><|bos|>The old man')).toEqual([BOS, BOS, ...bare]);
    expect(codec.encode('The old man<|bos|>')).toEqual([BOS, ...bare, BOS]);
    expect(codec.encode('')).toEqual([BOS]);
  });

  it('the chat template output starts with exactly one BOS', () => {
    expect(codec.renderChat(chat).startsWith('<|bos|>')).toBe(true);
    const ids = codec.encodeChat(chat);
    expect(ids[0]).toBe(BOS);
    expect(ids[1]).toBe(USER);
    expect(ids.filter((t) => t === BOS)).toHaveLength(1);
    expect(ids.at(-1)).toBe(ASSISTANT);
  });

  it('a chat template that does not write bos_token still gets the declared BOS, once', () => {
    const c = TextCodec.fromJson(bundledJson(), { ...bundledConfig(), chat_template: "{% for m in messages %}<|user|>{{ m.content }}{% endfor %}<|assistant|>" }, [EOS]);
    const ids = c.encodeChat(chat);
    expect(ids[0]).toBe(BOS);
    expect(ids[1]).toBe(USER);
    expect(ids.filter((t) => t === BOS)).toHaveLength(1);
  });

  it('the post-processor alone (no add_bos_token in the config) declares BOS too', () => {
    const c = variant({ postProcessor: true, config: {} });
    expect(c.addsBos).toBe(true);
    expect(c.encode('The old man')).toEqual([BOS, ...bare]);
    expect(c.encode('<|bos|>The old man')).toEqual([BOS, ...bare]);
  });

  it('add_bos_token: true alone (no post-processor, as LlamaTokenizerFast files may be) declares BOS', () => {
    const c = variant({ postProcessor: false, config: { add_bos_token: true } });
    expect(c.addsBos).toBe(true);
    expect(c.encode('The old man')).toEqual([BOS, ...bare]);
    expect(c.encode('<|bos|>The old man')).toEqual([BOS, ...bare]);
  });

  it('add_eos_token: true ends raw text with EOS (as transformers does) but never a chat prompt', () => {
    const c = variant({ postProcessor: false, config: { add_bos_token: true, add_eos_token: true } });
    expect(c.encode('The old man')).toEqual([BOS, ...bare, EOS]);
    expect(c.encodeChat(chat).at(-1)).toBe(ASSISTANT);
  });
});

describe('models whose files declare no BOS get none', () => {
  it('no post-processor and no add_bos_token', () => {
    const c = variant({ postProcessor: false, config: {} });
    expect(c.addsBos).toBe(false);
    const bare = c.encode('The old man', false);
    expect(c.encode('The old man')).toEqual(bare);
    expect(c.encode('<|bos|>The old man')).toEqual([BOS, ...bare]); // what the user wrote stays
  });

  it('add_bos_token: false overrides a BOS post-processor (transformers rebuilds it from the flags)', () => {
    const c = variant({ postProcessor: true, config: { add_bos_token: false } });
    expect(c.addsBos).toBe(false);
    expect(c.encode('The old man')).toEqual(c.encode('The old man', false));
  });

  it('add_bos_token: true without a bos_token adds nothing', () => {
    const c = variant({ postProcessor: false, config: { add_bos_token: true, bos_token: null } });
    expect(c.addsBos).toBe(false);
    expect(c.encode('The old man')).toEqual(c.encode('The old man', false));
  });

  it('a chat template without bos_token on a model without BOS: the rendered text only', () => {
    const c = variant({ postProcessor: false, config: { chat_template: "{% for m in messages %}<|user|>{{ m.content }}{% endfor %}<|assistant|>" } });
    expect(c.encodeChat(chat)[0]).toBe(USER);
  });

  it('the byte-level test tokenizer (fixture and synthetic models): bytes only', () => {
    const c = TextCodec.fromJson(byteLevelTokenizerJson(), {}, []);
    expect(c.addsBos).toBe(false);
    expect(c.encode('abc')).toEqual([97, 98, 99]);
    expect(c.encodeChat([{ role: 'user', content: 'a' }])).toEqual(c.encode('User: a\nAssistant:', false));
  });
});

describe('a broken post-processor', () => {
  it('is a FormatError at construction, not at the first prompt', () => {
    const json = bundledJson();
    json.post_processor = { type: 'TemplateProcessing', single: 7, pair: [], special_tokens: {} };
    const config = bundledConfig();
    delete config.add_bos_token;
    delete config.add_eos_token;
    expect(() => TextCodec.fromJson(json, config, [EOS])).toThrow(FormatError);
  });
});
