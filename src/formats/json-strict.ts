/**
 * A strict JSON parser for untrusted headers: rejects duplicate object keys (JSON.parse silently keeps
 * the last one, which would let two different tensors share a name), bounds nesting depth (no stack
 * overflow on `[[[[…`), and reports the byte-ish position of the problem. Values are plain JS values;
 * objects are created with a null prototype so keys like `__proto__` are ordinary data.
 */
import { FormatError } from '../errors';

export interface StrictJsonOptions {
  /** Maximum nesting depth of arrays/objects (default 64). */
  maxDepth?: number;
  /** What is being parsed, for messages (e.g. 'safetensors header of model.safetensors'). */
  what?: string;
}

export function parseJsonStrict(text: string, opts: StrictJsonOptions = {}): unknown {
  const maxDepth = opts.maxDepth ?? 64;
  const what = opts.what ?? 'JSON';
  let i = 0;
  const n = text.length;

  const fail = (msg: string): never => {
    throw new FormatError(`${what}: invalid JSON at character ${i}: ${msg}`, { position: i });
  };
  const ws = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
  };

  const parseString = (): string => {
    // at opening quote
    i++;
    let out = '';
    let start = i;
    for (;;) {
      if (i >= n) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(start, i);
        i++;
        return out;
      }
      if (c < 0x20) fail('control character in string');
      if (c === 0x5c) {
        out += text.slice(start, i);
        i++;
        if (i >= n) fail('unterminated escape');
        const e = text[i];
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            const hex = text.slice(i + 1, i + 5);
            if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('bad \\u escape');
            out += String.fromCharCode(parseInt(hex, 16));
            i += 4;
            break;
          }
          default: fail(`bad escape \\${e}`);
        }
        i++;
        start = i;
        continue;
      }
      i++;
    }
  };

  const NUM = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const parseNumber = (): number => {
    NUM.lastIndex = i;
    const m = NUM.exec(text);
    if (!m || m[0].length === 0 || m[0] === '-') fail('bad number');
    i += m![0].length;
    const v = Number(m![0]);
    if (!Number.isFinite(v)) fail('number out of range');
    return v;
  };

  const parseValue = (depth: number): unknown => {
    ws();
    if (i >= n) fail('unexpected end of input');
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */) {
      if (depth >= maxDepth) fail(`nesting deeper than ${maxDepth}`);
      i++;
      const obj: Record<string, unknown> = Object.create(null);
      const seen = new Set<string>();
      ws();
      if (text.charCodeAt(i) === 0x7d) { i++; return obj; }
      for (;;) {
        ws();
        if (text.charCodeAt(i) !== 0x22) fail('expected a string key');
        const keyPos = i;
        const key = parseString();
        if (seen.has(key)) {
          i = keyPos;
          throw new FormatError(`${what}: duplicate key ${JSON.stringify(key)} at character ${keyPos}`, { position: keyPos, key });
        }
        seen.add(key);
        ws();
        if (text.charCodeAt(i) !== 0x3a) fail("expected ':'");
        i++;
        obj[key] = parseValue(depth + 1);
        ws();
        const d = text.charCodeAt(i);
        if (d === 0x2c) { i++; continue; }
        if (d === 0x7d) { i++; return obj; }
        fail("expected ',' or '}'");
      }
    }
    if (c === 0x5b /* [ */) {
      if (depth >= maxDepth) fail(`nesting deeper than ${maxDepth}`);
      i++;
      const arr: unknown[] = [];
      ws();
      if (text.charCodeAt(i) === 0x5d) { i++; return arr; }
      for (;;) {
        arr.push(parseValue(depth + 1));
        ws();
        const d = text.charCodeAt(i);
        if (d === 0x2c) { i++; continue; }
        if (d === 0x5d) { i++; return arr; }
        fail("expected ',' or ']'");
      }
    }
    if (c === 0x22) return parseString();
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return parseNumber();
    if (text.startsWith('true', i)) { i += 4; return true; }
    if (text.startsWith('false', i)) { i += 5; return false; }
    if (text.startsWith('null', i)) { i += 4; return null; }
    return fail('unexpected character');
  };

  const v = parseValue(0);
  ws();
  if (i < n) fail('trailing characters after the value');
  return v;
}
