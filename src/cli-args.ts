/**
 * Declarative command-line options for the `webmoe` CLI. Each command declares its options once (name,
 * kind, value rule, description); that one table gives Node's `util.parseArgs` its option types, checks
 * every value, and writes the command's help. Usage mistakes throw ArgumentError with a one-line message
 * that names the option (and the closest known one for a typo).
 */
import { parseArgs } from 'node:util';
import { ArgumentError } from './errors';

interface Described {
  /** One line for the help text. */
  readonly description: string;
  readonly required?: boolean;
}

/** A boolean switch (`--chat`); it takes no value. */
export interface FlagSpec extends Described { readonly kind: 'flag' }
/** Any string; `arg` names the value in the help (`DIR|URL`, `TEXT`). */
export interface TextSpec extends Described { readonly kind: 'text'; readonly arg: string; readonly default?: string }
/** A decimal number in [min, max]; `above` is an exclusive lower bound. */
export interface NumberSpec extends Described {
  readonly kind: 'integer' | 'number';
  readonly arg: string;
  readonly min?: number;
  readonly max?: number;
  readonly above?: number;
  readonly default?: number;
}
/** One of a fixed set of words. */
export interface ChoiceSpec extends Described { readonly kind: 'choice'; readonly choices: readonly string[]; readonly default?: string }
/** A value with its own syntax: `parse` returns undefined for a value that does not match `rule`. */
export interface PatternSpec<T = unknown> extends Described {
  readonly kind: 'pattern';
  readonly arg: string;
  readonly rule: string;
  readonly parse: (raw: string) => T | undefined;
  readonly default?: string;
}
export type OptionSpec = FlagSpec | TextSpec | NumberSpec | ChoiceSpec | PatternSpec;
export type OptionTable = Readonly<Record<string, OptionSpec>>;

type ValueOf<S> = S extends { kind: 'flag' } ? boolean
  : S extends { kind: 'integer' | 'number' } ? number
  : S extends { kind: 'choice'; choices: readonly (infer C)[] } ? C
  : S extends { kind: 'pattern'; parse: (raw: string) => infer T } ? Exclude<T, undefined>
  : string;
/** The parsed values: present for flags, required options and options with a default; optional otherwise. */
export type OptionValues<O extends OptionTable> = {
  -readonly [K in keyof O]: O[K] extends { kind: 'flag' } | { required: true } | { default: string | number } ? ValueOf<O[K]> : ValueOf<O[K]> | undefined;
};

/** Every command (and the bare `webmoe`) also takes --help / -h. */
const HELP = 'help';

/** Levenshtein distance with adjacent transpositions (optimal string alignment): "temprature" → 1, "mdoe" → 1. */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The known name a mistyped one most likely meant: the nearest by edit distance if it is within a third
 * of the name's length (at least 2 edits), or a known name it abbreviates; undefined when nothing is close.
 */
export function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined, bestDistance = Infinity;
  for (const k of known) {
    const dist = editDistance(name, k);
    if (dist < bestDistance) { best = k; bestDistance = dist; }
  }
  if (best !== undefined && bestDistance <= Math.max(2, Math.floor(name.length / 3))) return best;
  return name.length >= 3 ? known.find((k) => k.startsWith(name)) : undefined;
}

/** "a, b or c" */
const orList = (words: readonly string[]) => (words.length < 2 ? words.join('') : `${words.slice(0, -1).join(', ')} or ${words[words.length - 1]}`);

/** The value rule in words, for the help text and for error messages: "an integer ≥ 1", "a number in [0, 1]". */
export function ruleText(spec: OptionSpec): string {
  switch (spec.kind) {
    case 'flag': return 'no value';
    case 'text': return 'a value';
    case 'choice': return orList(spec.choices);
    case 'pattern': return spec.rule;
    case 'integer':
    case 'number': {
      const noun = spec.kind === 'integer' ? 'an integer' : 'a number';
      const { min, max, above } = spec;
      if (min !== undefined && max !== undefined) return `${noun} in [${min}, ${max}]`;
      if (above !== undefined && max !== undefined) return `${noun} in (${above}, ${max}]`;
      if (min !== undefined) return `${noun} ≥ ${min}`;
      if (above !== undefined) return `${noun} > ${above}`;
      if (max !== undefined) return `${noun} ≤ ${max}`;
      return noun;
    }
  }
}

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** One option's raw string → its typed value, or ArgumentError naming the option and its rule. */
function convert(name: string, spec: Exclude<OptionSpec, FlagSpec>, raw: string): unknown {
  const bad = () => new ArgumentError(`--${name} must be ${ruleText(spec)}, got '${raw}'`);
  switch (spec.kind) {
    case 'text':
      if (raw === '') throw new ArgumentError(`--${name} needs a non-empty value`);
      return raw;
    case 'choice':
      if (!spec.choices.includes(raw)) throw bad();
      return raw;
    case 'pattern': {
      const v = spec.parse(raw);
      if (v === undefined) throw bad();
      return v;
    }
    case 'integer':
    case 'number': {
      const n = Number(raw);
      if (!(spec.kind === 'integer' ? INTEGER.test(raw) && Number.isSafeInteger(n) : DECIMAL.test(raw) && Number.isFinite(n))) throw bad();
      if ((spec.min !== undefined && n < spec.min) || (spec.above !== undefined && n <= spec.above) || (spec.max !== undefined && n > spec.max)) throw bad();
      return n;
    }
  }
}

/** An argument that reads as an option rather than a value ("--chat", "-x"); negative numbers are values. */
const looksLikeOption = (s: string) => /^--?[A-Za-z]/.test(s);

export type Parsed<O extends OptionTable> = { help: true } | { help: false; values: OptionValues<O> };

/**
 * Parses `args` (what follows the command name) against the command's option table. `--help`/`-h`
 * anywhere wins (the help is what someone unsure of the options needs). Otherwise the first problem
 * throws: an unknown option (with the closest known one), a flag given a value, an option without its
 * value, a stray positional argument, a missing required option, or a value outside its rule.
 *
 * util.parseArgs tokenises (long options, `--name=value`, `-h`, `--`); it runs non-strict because its
 * strict-mode errors name neither the closest option nor the value rule, and it rejects `--temperature -1`
 * as "ambiguous" instead of saying that the temperature must be ≥ 0.
 */
export function parseOptions<O extends OptionTable>(command: string, table: O, args: readonly string[]): Parsed<O> {
  const parserOptions: Record<string, { type: 'boolean' | 'string'; short?: string }> = { [HELP]: { type: 'boolean', short: 'h' } };
  for (const [name, spec] of Object.entries(table)) parserOptions[name] = { type: spec.kind === 'flag' ? 'boolean' : 'string' };
  const { tokens } = parseArgs({ args: [...args], options: parserOptions, strict: false, allowPositionals: true, tokens: true });
  if (tokens.some((t) => t.kind === 'option' && t.name === HELP)) return { help: true };

  const names = Object.keys(table);
  const raw = new Map<string, string | true>();
  for (const t of tokens) {
    if (t.kind === 'option-terminator') continue;
    if (t.kind === 'positional') {
      throw new ArgumentError(`unexpected argument '${t.value}' for ${command ? `webmoe ${command}` : 'webmoe'}: options are written --name VALUE`);
    }
    const spec = Object.hasOwn(table, t.name) ? table[t.name] : undefined;
    if (!spec) {
      const guess = t.rawName.startsWith('--') ? closest(t.name, names) : undefined;
      const where = command ? `webmoe ${command}` : 'webmoe';
      throw new ArgumentError(guess
        ? `unknown option ${t.rawName}; did you mean --${guess}?`
        : `unknown option ${t.rawName} for ${where}; it takes ${[...names, HELP].map((n) => `--${n}`).join(', ')}`);
    }
    if (spec.kind === 'flag') {
      if (t.inlineValue) throw new ArgumentError(`--${t.name} is a switch and takes no value (got '${t.rawName}=${t.value}')`);
      raw.set(t.name, true);
      continue;
    }
    const arg = 'arg' in spec ? spec.arg : spec.choices.join('|');
    if (t.value === undefined) throw new ArgumentError(`--${t.name} needs a value (${arg})`);
    if (!t.inlineValue && looksLikeOption(t.value)) {
      throw new ArgumentError(`--${t.name} needs a value (${arg}) but is followed by option ${t.value}; write --${t.name}=${t.value} for a value that starts with -`);
    }
    raw.set(t.name, t.value); // repeated options: the last one counts, so scripts can append overrides
  }

  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(table)) {
    const given = raw.get(name);
    if (spec.kind === 'flag') { values[name] = given === true; continue; }
    if (given === undefined) {
      if (spec.required) throw new ArgumentError(`--${name} is required${command ? ` for webmoe ${command}` : ''}`);
      values[name] = spec.default === undefined ? undefined : convert(name, spec, String(spec.default));
      continue;
    }
    values[name] = convert(name, spec, given as string);
  }
  return { help: false, values: values as OptionValues<O> };
}

/** `--name ARG` as the help writes it. */
function signature(name: string, spec: OptionSpec): string {
  if (spec.kind === 'flag') return `--${name}`;
  return `--${name} ${'arg' in spec ? spec.arg : spec.choices.join('|')}`;
}

/** "webmoe generate --model DIR|URL --prompt TEXT [options]": the required options, then the rest. */
export function synopsis(command: string, table: OptionTable): string {
  const required = Object.entries(table).filter(([, s]) => s.required).map(([n, s]) => signature(n, s));
  const optional = Object.values(table).some((s) => !s.required);
  return ['webmoe', command, ...required, ...(optional ? ['[options]'] : [])].join(' ');
}

/** A command's help: synopsis, summary, then one line per option with its rule and default. */
export function commandHelp(command: string, summary: string, table: OptionTable, notes?: string): string {
  const rows: [string, string][] = Object.entries(table).map(([name, spec]) => {
    const facts: string[] = [];
    if (spec.required) facts.push('required');
    if (spec.kind === 'integer' || spec.kind === 'number') facts.push(ruleText(spec));
    if (spec.kind !== 'flag' && spec.default !== undefined) facts.push(`default ${spec.default}`);
    return [signature(name, spec), facts.length ? `${spec.description} (${facts.join('; ')})` : spec.description];
  });
  rows.push([`--${HELP}, -h`, 'print this help']);
  const width = Math.max(...rows.map(([s]) => s.length)) + 2;
  return [
    `usage: ${synopsis(command, table)}`,
    '',
    summary,
    ...(notes ? [notes] : []),
    '',
    'options:',
    ...rows.map(([s, d]) => `  ${s.padEnd(width)}${d}`),
  ].join('\n');
}
