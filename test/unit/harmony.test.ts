// The harmony output parser (engine/harmony.ts) on token streams written with GPT-OSS's real tokenizer
// (o200k_harmony, test/helpers/o200k-harmony.ts): channels to reasoning/content, tool calls, the turn's
// end, text split inside UTF-8 characters, and malformed output (never a throw, never lost text).
import { describe, it, expect, beforeAll } from 'vitest';
import { loadTokenizer, type Tokenizer } from '../../src/loader/tokenizer-file';
import { HarmonyParser, harmonyTokensOf, parseHarmony, type HarmonyTokens } from '../../src/engine/harmony';
import { O200K_HARMONY_VOCAB_SIZE, gptOssTokenizerConfig, o200kHarmonyTokenizerJson } from '../helpers/o200k-harmony';

let tok: Tokenizer;
let H: HarmonyTokens;
const decode = (ids: number[], skip: boolean) => (ids.length ? tok.decode(ids, { skip_special_tokens: skip }) : '');
const ids = (text: string) => tok.encode(text, { add_special_tokens: false }).ids;
const parse = (text: string) => parseHarmony(ids(text), H, decode);

/** Streams ids one at a time and joins the deltas. */
function stream(list: number[]) {
  const p = new HarmonyParser(H, decode);
  let reasoning = '', content = '';
  const calls = [];
  const deltas: string[] = [];
  for (const id of [...list, -1]) {
    const d = id === -1 ? p.finish() : p.push(id);
    reasoning += d.reasoning; content += d.content; calls.push(...d.toolCalls);
    deltas.push(d.reasoning + d.content);
  }
  return { reasoning, content, calls, deltas, p };
}

beforeAll(() => {
  tok = loadTokenizer(o200kHarmonyTokenizerJson(), gptOssTokenizerConfig(false), { vocabSize: O200K_HARMONY_VOCAB_SIZE });
  H = harmonyTokensOf((t) => tok.token_to_id(t))!;
}, 60_000);

describe('harmonyTokensOf', () => {
  it('finds the control tokens of o200k_harmony at their ids, and null without them', () => {
    expect(H).toEqual({ start: 200006, end: 200007, message: 200008, channel: 200005, return: 200002, call: 200012, constrain: 200003 });
    expect(harmonyTokensOf((t) => (t === '<|start|>' ? 1 : undefined))).toBeNull();
  });
});

describe('HarmonyParser on well-formed output', () => {
  it('splits analysis (reasoning) from final (content) and ends at <|return|>', () => {
    const r = parse('<|channel|>analysis<|message|>The user greets. Reply politely.<|end|><|start|>assistant<|channel|>final<|message|>Hello! How can I help?<|return|>');
    expect(r).toEqual({ reasoning: 'The user greets. Reply politely.', content: 'Hello! How can I help?', toolCalls: [], ended: 'return', problems: [] });
  });

  it('a tool call on the commentary channel (recipient after the channel, <|constrain|>json) ends at <|call|>', () => {
    const r = parse('<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"location":"Tokyo, 東京"}<|call|>');
    expect(r.reasoning).toBe('Need weather.');
    expect(r.content).toBe('');
    expect(r.toolCalls).toEqual([{ name: 'get_weather', recipient: 'functions.get_weather', arguments: '{"location":"Tokyo, 東京"}', contentType: 'json' }]);
    expect(r.ended).toBe('call');
    expect(r.problems).toEqual([]);
  });

  it('a recipient in the role part and a content type after the channel (`assistant to=… <|channel|>commentary json`)', () => {
    const r = parse('<|channel|>analysis<|message|>x<|end|><|start|>assistant to=browser.search<|channel|>commentary json<|message|>{"query":"q"}<|call|>');
    expect(r.toolCalls).toEqual([{ name: 'browser.search', recipient: 'browser.search', arguments: '{"query":"q"}', contentType: 'json' }]);
    expect(r.problems).toEqual([]);
  });

  it('commentary without a recipient (a preamble) is content', () => {
    const r = parse('<|channel|>commentary<|message|>Let me check. <|end|><|start|>assistant<|channel|>final<|message|>Done.<|return|>');
    expect(r.content).toBe('Let me check. Done.');
    expect(r.reasoning).toBe('');
  });

  it('streams token by token to the same text, and never emits half a character', () => {
    const text = '<|channel|>analysis<|message|>𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ 🫠🫨 thoughts<|end|><|start|>assistant<|channel|>final<|message|>答え：𓀀𓁐 ok 🧑🏽‍🚀<|return|>';
    const list = ids(text);
    // The precondition this test is about: some tokens of the body are parts of one character.
    expect(list.some((id) => tok.decode([id], { skip_special_tokens: false }).includes('\uFFFD'))).toBe(true);
    const s = stream(list);
    expect(s.reasoning).toBe('𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ 🫠🫨 thoughts');
    expect(s.content).toBe('答え：𓀀𓁐 ok 🧑🏽‍🚀');
    for (const d of s.deltas) expect(d).not.toContain('\uFFFD');
    expect(s.p.ended).toBe('return');
  });

  it('a generation cut off in the middle of a message keeps what it wrote (no <|return|>: ended null)', () => {
    const r = parse('<|channel|>analysis<|message|>Thinking about it<|end|><|start|>assistant<|channel|>final<|message|>The answer is');
    expect(r).toMatchObject({ reasoning: 'Thinking about it', content: 'The answer is', ended: null, problems: [] });
  });
});

describe('HarmonyParser on malformed output (a note in problems, the text kept as content)', () => {
  it('plain text without any header (a model that does not write harmony) comes out whole at the end', () => {
    const r = parse('Just some text the model wrote.');
    expect(r.content).toBe('Just some text the model wrote.');
    expect(r.reasoning).toBe('');
    expect(r.problems).toEqual(['the output ended inside a message header']);
  });

  it('a header longer than 64 tokens turns to raw text there, and the rest streams as it comes', () => {
    const words = Array.from({ length: 100 }, (_, i) => `w${i}`).join(' ');
    const s = stream(ids(words));
    expect(s.content).toBe(words);
    expect(s.p.problems[0]).toMatch(/longer than 64 tokens/);
    const firstText = s.deltas.findIndex((d) => d.length > 0);
    expect(firstText).toBe(64);
    expect(s.deltas.slice(65, -1).every((d) => d.length > 0)).toBe(true);
  });

  it('<|start|> inside a body: the body so far, then the rest as raw text', () => {
    const r = parse('<|channel|>final<|message|>Hello<|start|>assistant<|channel|>final<|message|>again');
    expect(r.content).toBe('Hello<|start|>assistant<|channel|>final<|message|>again');
    expect(r.problems).toEqual(['<|start|> inside a message body']);
  });

  it('text between messages, where <|start|> belongs', () => {
    const r = parse('<|channel|>analysis<|message|>a<|end|>stray<|start|>assistant');
    expect(r.reasoning).toBe('a');
    expect(r.content).toBe('stray<|start|>assistant');
    expect(r.problems[0]).toBe('text between messages, where <|start|> belongs');
  });

  it('<|end|> in a header, a message without a channel, <|call|> without a recipient, tokens after the end', () => {
    expect(parse('<|channel|>analysis<|end|>x').problems).toEqual(['<|end|> inside a message header (before <|message|>)']);
    const noChannel = parse('<|message|>bare<|return|>');
    expect(noChannel.content).toBe('bare');
    expect(noChannel.problems[0]).toMatch(/without a channel/);
    expect(parse('<|channel|>final<|message|>x<|call|>').problems).toEqual(['<|call|> ends a message without a recipient (no tool to call)']);
    const after = parse('<|channel|>final<|message|>x<|return|>more');
    expect(after.content).toBe('xmore');
    expect(after.problems[0]).toMatch(/after the end of the turn/);
  });

  it('a tool call cut off before <|call|> is not reported as a call', () => {
    const r = parse('<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"a":');
    expect(r.toolCalls).toEqual([]);
    expect(r.problems).toEqual(['the tool call to functions.f was cut off before <|call|>']);
  });

  it('random mixes of control tokens and text never throw and never invent text (the output is at most the tokens’ own text)', () => {
    const controls = [H.start, H.end, H.message, H.channel, H.return, H.call, H.constrain!];
    const words = ids(' alpha beta gamma analysis final commentary to=functions.x json 中文');
    let seed = 7;
    const rand = (n: number) => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % n; };
    for (let k = 0; k < 400; k++) {
      const list = Array.from({ length: 1 + rand(40) }, () => (rand(3) === 0 ? controls[rand(controls.length)] : words[rand(words.length)]));
      const r = stream(list);
      const out = r.reasoning + r.content + r.calls.map((c) => c.recipient + c.arguments).join('');
      expect(out.length).toBeLessThanOrEqual(decode(list, false).length);
      expect(r.p.problems.length).toBeLessThanOrEqual(16);
    }
  });
});
