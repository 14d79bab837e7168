import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { TextCodec, StreamDecoder } from '../../src/engine/text';

describe('byte-level tokenizer through the normal tokenizer.json path', () => {
  const codec = TextCodec.fromJson(byteLevelTokenizerJson(), { eos_token: null }, [1]);
  it('round-trips text, including multi-byte characters', () => {
    const text = 'Hello, wörld — 数学 🙂';
    const ids = codec.encode(text);
    expect(ids.length).toBe(new TextEncoder().encode(text).length);
    expect(codec.decode(ids)).toBe(text);
  });
  it('streams text without splitting characters', () => {
    const ids = codec.encode('añ🙂b');
    const d = new StreamDecoder(codec);
    const deltas = ids.map((id) => d.push(id));
    expect(deltas.join('') + d.flush()).toBe('añ🙂b');
    expect(deltas.every((s) => !s.includes('\uFFFD'))).toBe(true);
  });
  it('streaming through a real BPE tokenizer (the bundled one) equals decoding all ids at once, in linear time', () => {
    const dir = new URL('../../public/models/webmoe-tiny/', import.meta.url);
    const bpe = TextCodec.fromJson(JSON.parse(readFileSync(new URL('tokenizer.json', dir), 'utf8')), JSON.parse(readFileSync(new URL('tokenizer_config.json', dir), 'utf8')), [1]);
    const text = 'The jury said, "It\'s a naïve café — 数学 🙂!"  Then  it went on.\n\nNew   paragraph; 12345 and 3.14. '.repeat(200);
    const ids = bpe.encode(text, false);
    const d = new StreamDecoder(bpe);
    let decodes = 0;
    const decode = bpe.decode.bind(bpe);
    bpe.decode = (x, skip) => { decodes += x.length; return decode(x, skip); };
    const deltas = ids.map((id) => d.push(id));
    const all = deltas.join('') + d.flush();
    expect(all).toBe(decode(ids, false));
    expect(all).toBe(text);
    expect(d.text).toBe(all);
    expect(deltas.every((s) => !s.includes('\uFFFD'))).toBe(true);
    expect(decodes).toBeLessThan(ids.length * 12); // tokens decoded in total: a bounded window per push
  });
  it('renders a plain chat layout without a template', () => {
    expect(codec.hasChatTemplate).toBe(false);
    expect(codec.renderChat([{ role: 'user', content: 'hi' }])).toBe('User: hi\nAssistant:');
  });
  it('applies a Jinja chat template when the config has one', () => {
    const c = TextCodec.fromJson(byteLevelTokenizerJson(), { chat_template: "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}" }, []);
    expect(c.renderChat([{ role: 'user', content: 'hi' }])).toBe('<user>hi<assistant>');
  });
});
