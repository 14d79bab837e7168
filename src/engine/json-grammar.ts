/**
 * JSON mode: a character-level state machine for "a prefix of one JSON object" (RFC 8259 grammar, the
 * top-level value an object), and the token mask built on it. At each step the mask allows only tokens
 * whose text keeps the output a valid prefix AND leaves a closing that fits in the tokens still allowed:
 * `completion()` is the shortest text that closes the current prefix, and every character of it exists
 * as a single token, so a prefix whose completion is at most the remaining budget can always be closed.
 * The output of a JSON-mode generation therefore always parses (unless a stop string cuts it).
 */
import { UnsupportedError } from '../errors';

type Mode =
  | 'start' // before the top-level '{'
  | 'keyOrEnd' // after '{': a key or '}'
  | 'key' // after ',' in an object: a key
  | 'colon' // after a key
  | 'value' // after ':' or ',' in an array
  | 'valueOrEnd' // after '[': a value or ']'
  | 'afterValue' // after a value: ',' or the container's close
  | 'string' // inside a string (key or value: see inKey)
  | 'escape' // after a backslash
  | 'unicode' // inside \uXXXX (hexLeft digits to go)
  | 'minus' | 'zero' | 'int' | 'fracStart' | 'frac' | 'expStart' | 'expSign' | 'exp' // numbers
  | 'literal' // inside true/false/null (literalLeft to go)
  | 'done';

const WS = new Set([' ', '\t', '\n', '\r']);
const DIGIT = /[0-9]/;
const HEX = /[0-9a-fA-F]/;
/** Number states in which the number may end. */
const NUMBER_END_OK = new Set<Mode>(['zero', 'int', 'frac', 'exp']);
const NUMBER_MODES = new Set<Mode>(['minus', 'zero', 'int', 'fracStart', 'frac', 'expStart', 'expSign', 'exp']);

export class JsonObjectPrefix {
  private mode: Mode = 'start';
  /** Open containers, innermost last: '}' for an object, ']' for an array (their closing characters). */
  private stack: string[] = [];
  private inKey = false;
  private hexLeft = 0;
  private literalLeft = '';
  /** The previous character was whitespace outside a string: runs of it are refused (see char()). */
  private afterSpace = false;

  clone(): JsonObjectPrefix {
    const c = new JsonObjectPrefix();
    c.mode = this.mode; c.stack = this.stack.slice(); c.inKey = this.inKey; c.hexLeft = this.hexLeft; c.literalLeft = this.literalLeft; c.afterSpace = this.afterSpace;
    return c;
  }

  /** The top-level object is closed: the text so far is a complete JSON object. */
  get done(): boolean { return this.mode === 'done'; }

  /** Feeds `text`; false (and the state is then undefined) when it leaves the JSON-object-prefix language. */
  feed(text: string): boolean {
    for (const ch of text) if (!this.char(ch)) return false;
    return true;
  }

  private closeValue(): void {
    this.mode = 'afterValue';
  }

  private startValue(ch: string, allowClose: boolean): boolean {
    if (WS.has(ch)) return true;
    if (allowClose && ch === ']') return this.close(ch);
    switch (ch) {
      case '{': this.stack.push('}'); this.mode = 'keyOrEnd'; return true;
      case '[': this.stack.push(']'); this.mode = 'valueOrEnd'; return true;
      case '"': this.mode = 'string'; this.inKey = false; return true;
      case '-': this.mode = 'minus'; return true;
      case '0': this.mode = 'zero'; return true;
      case 't': this.mode = 'literal'; this.literalLeft = 'rue'; return true;
      case 'f': this.mode = 'literal'; this.literalLeft = 'alse'; return true;
      case 'n': this.mode = 'literal'; this.literalLeft = 'ull'; return true;
    }
    if (DIGIT.test(ch)) { this.mode = 'int'; return true; }
    return false;
  }

  private close(ch: string): boolean {
    if (this.stack[this.stack.length - 1] !== ch) return false;
    this.stack.pop();
    this.mode = this.stack.length ? 'afterValue' : 'done';
    return true;
  }

  /**
   * One character. Whitespace between tokens is valid JSON, but a model that likes spaces (as the tiny
   * bundled one does) would spend its whole budget on it, so at most one whitespace character in a row is
   * accepted outside strings: the output is then compact, still standard JSON.
   */
  private char(ch: string): boolean {
    const inString = this.mode === 'string' || this.mode === 'escape' || this.mode === 'unicode';
    if (!inString && WS.has(ch)) {
      if (this.afterSpace) return false;
      if (this.mode === 'done') return false;
      this.afterSpace = true;
    } else {
      this.afterSpace = false;
    }
    return this.step(ch);
  }

  private step(ch: string): boolean {
    if (NUMBER_MODES.has(this.mode)) {
      const m = this.mode;
      if (DIGIT.test(ch)) {
        if (m === 'zero') return false; // no leading zeros
        this.mode = m === 'minus' ? (ch === '0' ? 'zero' : 'int') : m === 'fracStart' ? 'frac' : m === 'expStart' || m === 'expSign' ? 'exp' : m;
        return true;
      }
      if (ch === '.' && (m === 'zero' || m === 'int')) { this.mode = 'fracStart'; return true; }
      if ((ch === 'e' || ch === 'E') && (m === 'zero' || m === 'int' || m === 'frac')) { this.mode = 'expStart'; return true; }
      if ((ch === '+' || ch === '-') && m === 'expStart') { this.mode = 'expSign'; return true; }
      if (!NUMBER_END_OK.has(m)) return false;
      this.closeValue(); // the number ended: the character belongs to what follows it
    }
    switch (this.mode) {
      case 'start':
        if (WS.has(ch)) return true;
        if (ch !== '{') return false;
        this.stack.push('}');
        this.mode = 'keyOrEnd';
        return true;
      case 'keyOrEnd':
      case 'key':
        if (WS.has(ch)) return true;
        if (ch === '}' && this.mode === 'keyOrEnd') return this.close(ch);
        if (ch !== '"') return false;
        this.mode = 'string';
        this.inKey = true;
        return true;
      case 'colon':
        if (WS.has(ch)) return true;
        if (ch !== ':') return false;
        this.mode = 'value';
        return true;
      case 'value': return this.startValue(ch, false);
      case 'valueOrEnd': return this.startValue(ch, true);
      case 'afterValue':
        if (WS.has(ch)) return true;
        if (ch === ',') { this.mode = this.stack[this.stack.length - 1] === '}' ? 'key' : 'value'; return true; }
        return this.close(ch);
      case 'string':
        if (ch === '"') { this.mode = this.inKey ? 'colon' : 'afterValue'; return true; }
        if (ch === '\\') { this.mode = 'escape'; return true; }
        return ch.codePointAt(0)! >= 0x20;
      case 'escape':
        if (ch === 'u') { this.mode = 'unicode'; this.hexLeft = 4; return true; }
        if (!'"\\/bfnrt'.includes(ch)) return false;
        this.mode = 'string';
        return true;
      case 'unicode':
        if (!HEX.test(ch)) return false;
        if (--this.hexLeft === 0) this.mode = 'string';
        return true;
      case 'literal':
        if (ch !== this.literalLeft[0]) return false;
        this.literalLeft = this.literalLeft.slice(1);
        if (!this.literalLeft) this.closeValue();
        return true;
      case 'done':
        return false; // generation stops at the close; nothing may follow
      default:
        return false;
    }
  }

  /**
   * The shortest text that completes the prefix to one JSON object. Feeding its first character gives a
   * state whose completion is the rest, so it can be written one character (one token) at a time.
   */
  completion(): string {
    const closers = this.stack.slice().reverse().join('');
    switch (this.mode) {
      case 'start': return '{}';
      case 'keyOrEnd': case 'valueOrEnd': case 'afterValue': case 'zero': case 'int': case 'frac': case 'exp': return closers;
      case 'key': return '"":0' + closers;
      case 'colon': return ':0' + closers;
      case 'value': case 'minus': case 'fracStart': case 'expStart': case 'expSign': return '0' + closers;
      case 'string': return '"' + (this.inKey ? ':0' : '') + closers;
      case 'escape': return 'n"' + (this.inKey ? ':0' : '') + closers;
      case 'unicode': return '0'.repeat(this.hexLeft) + '"' + (this.inKey ? ':0' : '') + closers;
      case 'literal': return this.literalLeft + closers;
      case 'done': return '';
    }
  }
}

/** Every character a completion() can contain: each must be a token by itself. */
const COMPLETION_CHARS = '{}[]":0nrueals';

/**
 * The text each token adds in the middle of a sequence (what the stream decoder emits for it), or null
 * for tokens JSON mode never picks: special tokens (no text) and tokens ending inside a UTF-8 character.
 */
export function tokenTexts(decode: (ids: number[]) => string, anchor: number, vocabSize: number): (string | null)[] {
  const base = decode([anchor]);
  const out: (string | null)[] = new Array(vocabSize);
  for (let id = 0; id < vocabSize; id++) {
    const both = decode([anchor, id]);
    const t = both.startsWith(base) ? both.slice(base.length) : null;
    out[id] = t && !t.includes('\uFFFD') ? t : null;
  }
  return out;
}

/** The per-step token mask of JSON mode over a vocabulary's token texts. */
export class JsonObjectMask {
  readonly state = new JsonObjectPrefix();
  constructor(private texts: (string | null)[]) {
    for (const ch of COMPLETION_CHARS) {
      if (!texts.includes(ch)) throw new UnsupportedError(`JSON mode needs a token for '${ch}' alone; this tokenizer has none`);
    }
  }

  /**
   * Flags of the tokens allowed now, with `budget` tokens left including this one: the text stays a
   * JSON-object prefix and its shortest completion fits in the tokens left after it.
   */
  allowed(budget: number): Uint8Array {
    const ok = new Uint8Array(this.texts.length);
    for (let id = 0; id < this.texts.length; id++) {
      const t = this.texts[id];
      if (!t) continue;
      const s = this.state.clone();
      if (s.feed(t) && s.completion().length <= budget - 1) ok[id] = 1;
    }
    return ok;
  }

  /** Shortest number of tokens that can close the current prefix. */
  get tokensToClose(): number { return this.state.completion().length; }
}
