import { describe, it, expect } from 'vitest';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { TextCodec, StreamDecoder } from '../../src/engine/text';

describe('byte-level tokenizer through the normal tokenizer.json path', () => {
  const codec = new TextCodec(byteLevelTokenizerJson(), { eos_token: null }, [1]);
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
  it('renders a plain chat layout without a template', () => {
    expect(codec.hasChatTemplate).toBe(false);
    expect(codec.renderChat([{ role: 'user', content: 'hi' }])).toBe('User: hi\nAssistant:');
  });
  it('applies a Jinja chat template when the config has one', () => {
    const c = new TextCodec(byteLevelTokenizerJson(), { chat_template: "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}" }, []);
    expect(c.renderChat([{ role: 'user', content: 'hi' }])).toBe('<user>hi<assistant>');
  });
});
