/**
 * GPT-OSS's output format, harmony (openai/harmony): a generation after the chat template's
 * `<|start|>assistant` is a sequence of messages, each a header and a body:
 *
 *   <|channel|>analysis<|message|>…reasoning…<|end|>
 *   <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>
 *   <|start|>assistant<|channel|>final<|message|>…the answer…<|return|>
 *
 * The channel says who a message is for: `analysis` is the chain of thought (reasoning, not for the
 * user), `final` the answer, `commentary` tool calls (with a recipient, `to=…`) or preambles the user may
 * see (without one). `<|return|>` ends the turn, `<|call|>` ends it with a tool call for the caller to run.
 *
 * HarmonyParser turns the stream of sampled token ids into deltas of reasoning and content and complete
 * tool calls, one token at a time. Body text is decoded incrementally and never split inside a UTF-8
 * character. It never throws on what a model writes: a malformed sequence (text where a header belongs,
 * a header that never reaches `<|message|>`, a token out of place) is noted in `problems` and its text
 * goes to the content as raw text, so a model that ignores the format still shows its output.
 */

/** The ids of harmony's control tokens in a vocabulary. */
export interface HarmonyTokens {
  start: number; end: number; message: number; channel: number; return: number; call: number;
  /** `<|constrain|>` (the content type of a tool call's arguments); absent from some vocabularies. */
  constrain: number | null;
}

export const HARMONY_TOKEN_TEXT = {
  start: '<|start|>', end: '<|end|>', message: '<|message|>', channel: '<|channel|>', return: '<|return|>', call: '<|call|>', constrain: '<|constrain|>',
} as const;

/**
 * The harmony control tokens of a vocabulary, or null when it lacks any of them. `tokenToId` is the
 * tokenizer's lookup.
 */
export function harmonyTokensOf(tokenToId: (t: string) => number | undefined): HarmonyTokens | null {
  const id = (k: keyof typeof HARMONY_TOKEN_TEXT) => tokenToId(HARMONY_TOKEN_TEXT[k]);
  const start = id('start'), end = id('end'), message = id('message'), channel = id('channel'), ret = id('return'), call = id('call');
  if (start === undefined || end === undefined || message === undefined || channel === undefined || ret === undefined || call === undefined) return null;
  return { start, end, message, channel, return: ret, call, constrain: id('constrain') ?? null };
}

/** A tool call the model made (a commentary message with a recipient). */
export interface HarmonyToolCall {
  /** The function's name: the recipient without its `functions.` namespace (`browser.search`, `python` stay whole). */
  name: string;
  /** The recipient as written (`functions.get_weather`). */
  recipient: string;
  /** The arguments as the model wrote them (JSON text for `<|constrain|>json`). */
  arguments: string;
  /** The content type of the arguments (`json`), when the header names one. */
  contentType: string | null;
}

/** What one token (or the end) adds. */
export interface HarmonyDelta {
  /** Text of analysis messages. */
  reasoning: string;
  /** Text of final messages and of commentary without a recipient (and raw text of malformed output). */
  content: string;
  /** Tool calls completed by this token (at `<|call|>`, or `<|end|>` after a message to a recipient). */
  toolCalls: HarmonyToolCall[];
}

type State = 'header' | 'body' | 'between' | 'done' | 'raw';

/** Longest header (tokens) before the output is taken as not harmony: real headers are a few tokens. */
const MAX_HEADER_TOKENS = 64;

export class HarmonyParser {
  private state: State = 'header';
  /** Ids of the header being read (control tokens included, for the raw fallback). */
  private header: number[] = [];
  private channel = '';
  private recipient: string | null = null;
  private contentType: string | null = null;
  /** Body ids not yet emitted, and those before them in the same message (decode window, as StreamDecoder). */
  private body: number[] = [];
  private bodyRead = 0;
  private bodyPrefix = 0;
  private args = '';
  /** Why the output is not well-formed harmony, in order (empty for well-formed output). */
  readonly problems: string[] = [];
  /** How the turn ended: 'return' (`<|return|>`), 'call' (`<|call|>`), or null while open / cut off. */
  ended: 'return' | 'call' | null = null;
  readonly reasoning: string[] = [];
  readonly content: string[] = [];
  readonly toolCalls: HarmonyToolCall[] = [];

  /**
   * `decode(ids, skipSpecial)` is the tokenizer's decode. The generation starts inside a header whose
   * role the prompt wrote (`<|start|>assistant`), the chat template's generation prompt.
   */
  constructor(private readonly tokens: HarmonyTokens, private readonly decode: (ids: number[], skipSpecial: boolean) => string) {}

  /** Feeds one sampled token. */
  push(id: number): HarmonyDelta {
    const d: HarmonyDelta = { reasoning: '', content: '', toolCalls: [] };
    const t = this.tokens;
    switch (this.state) {
      case 'done':
        this.problem(`token ${id} after the end of the turn`);
        this.state = 'raw';
        this.raw(d, [id]);
        break;
      case 'raw':
        this.raw(d, [id]);
        break;
      case 'between':
        if (id === t.start) { this.state = 'header'; this.header = [id]; break; }
        if (id === t.return || id === t.call) { this.finishTurn(id === t.return ? 'return' : 'call'); break; }
        this.problem(`${this.describe(id)} between messages, where <|start|> belongs`);
        this.state = 'raw';
        this.raw(d, [id]);
        break;
      case 'header':
        if (id === t.message) { this.openBody(); break; }
        if (id === t.start || id === t.end || id === t.return || id === t.call || this.header.length >= MAX_HEADER_TOKENS) {
          this.problem(id === t.start || id === t.end || id === t.return || id === t.call
            ? `${this.describe(id)} inside a message header (before <|message|>)`
            : `a message header longer than ${MAX_HEADER_TOKENS} tokens: the output is not harmony`);
          this.state = 'raw';
          this.raw(d, [...this.header, id]);
          this.header = [];
          break;
        }
        this.header.push(id);
        break;
      case 'body':
        if (id === t.end || id === t.return || id === t.call) {
          this.flushBody(d, true);
          this.closeMessage(d, id === t.call);
          if (id === t.end) this.state = 'between';
          else this.finishTurn(id === t.return ? 'return' : 'call');
          break;
        }
        if (id === t.start || id === t.message || id === t.channel || (t.constrain !== null && id === t.constrain)) {
          // A control token inside a body: the model lost the format. Keep the text it wrote.
          this.problem(`${this.describe(id)} inside a message body`);
          this.flushBody(d, true);
          this.closeMessage(d, false);
          this.state = 'raw';
          this.raw(d, [id]);
          break;
        }
        this.body.push(id);
        this.flushBody(d, false);
        break;
    }
    this.record(d);
    return d;
  }

  /** The end of the generation (EOS other than <|return|>/<|call|>, a token limit, a stop string): what is left. */
  finish(): HarmonyDelta {
    const d: HarmonyDelta = { reasoning: '', content: '', toolCalls: [] };
    if (this.state === 'body') {
      this.flushBody(d, true);
      if (this.recipient !== null) this.problem(`the tool call to ${this.recipient} was cut off before <|call|>`);
    } else if (this.state === 'header' && this.header.length > 0) {
      // A header without <|message|> (often a model that does not write harmony at all): its text is output.
      this.problem('the output ended inside a message header');
      this.raw(d, this.header);
      this.header = [];
    }
    this.record(d);
    return d;
  }

  private finishTurn(how: 'return' | 'call'): void {
    this.ended = how;
    this.state = 'done';
  }

  private openBody(): void {
    const text = this.decode(this.header, false);
    const t = HARMONY_TOKEN_TEXT;
    const ch = text.indexOf(t.channel);
    const rolePart = ch >= 0 ? text.slice(0, ch) : text;
    let channelPart = ch >= 0 ? text.slice(ch + t.channel.length) : '';
    // The role part is `<|start|>assistant` (or empty for the first message, whose role the prompt wrote).
    const role = rolePart.replace(t.start, '').trim();
    let recipient: string | null = null;
    let contentType: string | null = null;
    const cons = channelPart.indexOf(t.constrain);
    if (cons >= 0) {
      contentType = channelPart.slice(cons + t.constrain.length).trim() || null;
      channelPart = channelPart.slice(0, cons);
    }
    const words = channelPart.trim().split(/\s+/).filter(Boolean);
    const channel = words.shift() ?? '';
    for (const w of [...role.split(/\s+/), ...words]) {
      if (w.startsWith('to=')) recipient = w.slice(3);
      else if (words.includes(w) && contentType === null) contentType = w; // `commentary json` (a content type without <|constrain|>)
    }
    if (role && !role.startsWith('assistant')) this.problem(`a message from ${JSON.stringify(role)} in the model's output (expected assistant)`);
    if (!channel) this.problem('a message without a channel (harmony requires one): its text is taken as the answer');
    this.channel = channel;
    this.recipient = recipient;
    this.contentType = contentType;
    this.header = [];
    this.body = [];
    this.bodyRead = 0;
    this.bodyPrefix = 0;
    this.args = '';
    this.state = 'body';
  }

  /** Emits the body text decoded so far (holding back a partial UTF-8 character unless final). */
  private flushBody(d: HarmonyDelta, final: boolean): void {
    const before = this.bodyRead > this.bodyPrefix ? this.decode(this.body.slice(this.bodyPrefix, this.bodyRead), true) : '';
    const now = this.body.length > this.bodyPrefix ? this.decode(this.body.slice(this.bodyPrefix), true) : '';
    if (now.length <= before.length || (!final && now.endsWith('\uFFFD'))) return;
    const delta = now.slice(before.length);
    this.bodyPrefix = this.bodyRead;
    this.bodyRead = this.body.length;
    this.route(d, delta);
  }

  private route(d: HarmonyDelta, text: string): void {
    if (!text) return;
    if (this.recipient !== null) this.args += text;
    else if (this.channel === 'analysis') d.reasoning += text;
    else d.content += text;
  }

  private closeMessage(d: HarmonyDelta, isCall: boolean): void {
    if (this.recipient !== null) {
      const name = this.recipient.startsWith('functions.') ? this.recipient.slice('functions.'.length) : this.recipient;
      d.toolCalls.push({ name, recipient: this.recipient, arguments: this.args, contentType: this.contentType });
    } else if (isCall) this.problem('<|call|> ends a message without a recipient (no tool to call)');
    this.recipient = null;
    this.args = '';
    this.body = [];
    this.bodyRead = 0;
    this.bodyPrefix = 0;
  }

  /** Text of ids outside the format, as content (control tokens shown, so nothing the model wrote is lost). */
  private raw(d: HarmonyDelta, ids: number[]): void {
    if (ids.length === 0) return;
    // Decoded per push: a character split across two raw tokens shows as U+FFFD halves (rare, and only in malformed output).
    d.content += this.decode(ids, false);
  }

  private describe(id: number): string {
    const name = Object.entries(this.tokens).find(([, v]) => v === id)?.[0];
    return name ? HARMONY_TOKEN_TEXT[name as keyof typeof HARMONY_TOKEN_TEXT] : 'text';
  }

  private problem(p: string): void {
    if (this.problems.length < 16) this.problems.push(p);
  }

  private record(d: HarmonyDelta): void {
    if (d.reasoning) this.reasoning.push(d.reasoning);
    if (d.content) this.content.push(d.content);
    this.toolCalls.push(...d.toolCalls);
  }
}

/** Parses a whole generation (token ids after the generation prompt) at once. */
export function parseHarmony(ids: number[], tokens: HarmonyTokens, decode: (ids: number[], skipSpecial: boolean) => string): {
  reasoning: string; content: string; toolCalls: HarmonyToolCall[]; ended: 'return' | 'call' | null; problems: string[];
} {
  const p = new HarmonyParser(tokens, decode);
  for (const id of ids) p.push(id);
  p.finish();
  return { reasoning: p.reasoning.join(''), content: p.content.join(''), toolCalls: p.toolCalls, ended: p.ended, problems: p.problems };
}
