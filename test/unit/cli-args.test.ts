// The CLI's argument handling, without a GPU: every usage mistake exits 2 with one line naming the
// option (and the closest known one), help and version exit 0. Values are checked before any model
// loads, so these runs never reach the engine (the model paths do not exist).
import { describe, it, expect } from 'vitest';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli';
import { closest, editDistance, parseOptions } from '../../src/cli-args';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const VERSION = JSON.parse(readFileSync(`${ROOT}/package.json`, 'utf8')).version as string;

async function run(...argv: string[]) {
  const out: string[] = [], err: string[] = [];
  const code = await main(argv, { out: (s) => out.push(s), err: (s) => err.push(s) });
  return { code, out: out.join(''), err: err.join('') };
}

/** Exit 2 and exactly one stderr line, matching `message`. */
async function expectUsageError(argv: string[], message: string | RegExp) {
  const r = await run(...argv);
  expect(r.code, `${argv.join(' ')}: ${r.err}`).toBe(2);
  expect(r.out).toBe('');
  expect(r.err.split('\n').filter(Boolean), r.err).toHaveLength(1);
  if (typeof message === 'string') expect(r.err).toContain(message);
  else expect(r.err).toMatch(message);
}

// A valid base command line per command: each case below adds exactly one mistake to it.
const BASE: Record<string, string[]> = {
  generate: ['generate', '--model', '/nonexistent/model', '--prompt', 'hi'],
  logits: ['logits', '--model', '/nonexistent/model', '--tokens', 't.json', '--mode', 'hybrid', '--out', 'o.bin'],
  info: ['info', '--model', '/nonexistent/model'],
  calibrate: ['calibrate', '--model', '/nonexistent/model', '--text', 't.txt', '--out', 'b.safetensors'],
  prune: ['prune', '--model', '/nonexistent/model', '--out', '/nonexistent/out', '--sparsity', '2:4'],
  serve: ['serve', '--model', '/nonexistent/model'],
  convert: ['convert', '--model', '/nonexistent/model', '--to', 'gguf', '--out', '/nonexistent/out.gguf'],
};

describe('edit distance and suggestions', () => {
  it('counts insertions, deletions, substitutions and adjacent swaps', () => {
    expect(editDistance('max-token', 'max-tokens')).toBe(1);
    expect(editDistance('temprature', 'temperature')).toBe(1);
    expect(editDistance('mdoe', 'mode')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
  });
  it('suggests a near name or an abbreviated one, and nothing for an unrelated word', () => {
    const names = ['model', 'prompt', 'max-tokens', 'temperature', 'top-k', 'top-p'];
    expect(closest('max-token', names)).toBe('max-tokens');
    expect(closest('promt', names)).toBe('prompt');
    expect(closest('max', names)).toBe('max-tokens');
    expect(closest('bogus-flag', names)).toBeUndefined();
  });
});

describe('parseOptions', () => {
  const table = {
    n: { kind: 'integer', arg: 'N', min: 1, max: 10, default: 3, description: 'n' },
    x: { kind: 'number', arg: 'X', above: 0, description: 'x' },
    name: { kind: 'text', arg: 'S', required: true, description: 'name' },
    loud: { kind: 'flag', description: 'loud' },
  } as const;
  const parse = (...args: string[]) => parseOptions('demo', table, args);

  it('types values, applies defaults, accepts --name=value and negative numbers as values', () => {
    expect(parse('--name', 'a')).toEqual({ help: false, values: { n: 3, x: undefined, name: 'a', loud: false } });
    expect(parse('--name=-a', '--n=10', '--x', '2.5e-1', '--loud')).toEqual({ help: false, values: { n: 10, x: 0.25, name: '-a', loud: true } });
    expect(() => parse('--name', 'a', '--n', '-1')).toThrow("--n must be an integer in [1, 10], got '-1'");
  });
  it('the last of a repeated option counts', () => {
    expect(parse('--name', 'a', '--name', 'b')).toMatchObject({ values: { name: 'b' } });
  });
  it('rejects what is not a plain decimal of the right kind', () => {
    for (const bad of ['', ' 2', '2x', '0x10', '1.5', 'Infinity', '1e400']) expect(() => parse('--name', 'a', '--n', bad), bad).toThrow(/--n must be an integer/);
    for (const bad of ['0', '-1', 'NaN', '.', '1e']) expect(() => parse('--name', 'a', '--x', bad), bad).toThrow(/--x must be a number > 0/);
  });
  it('--help wins over every other problem', () => {
    expect(parse('--bogus', '--help')).toEqual({ help: true });
    expect(parse('-h')).toEqual({ help: true });
  });
});

describe('webmoe CLI arguments', () => {
  it('the issue: an unknown or misspelt option exits 2 instead of being ignored', async () => {
    await expectUsageError(['generate', '--model', 'public/models/webmoe-tiny', '--bogus-flag', '3', '--prompt', 'hi', '--max-tokens', '3'], /^webmoe: unknown option --bogus-flag for webmoe generate; it takes --model, --prompt, .*--help$/m);
    await expectUsageError([...BASE.generate, '--max-token', '3'], 'unknown option --max-token; did you mean --max-tokens?');
    await expectUsageError([...BASE.generate, '--temprature', '0'], 'unknown option --temprature; did you mean --temperature?');
  });

  it.each([
    ['generate', '--promt', 'x', 'did you mean --prompt?'],
    ['generate', '--top_k', '5', 'did you mean --top-k?'],
    ['logits', '--rooting', 'r.json', 'did you mean --routing?'],
    ['logits', '--mdoe', 'decode', 'did you mean --mode?'],
    ['info', '--weight', 'f16', 'did you mean --weights?'],
    ['calibrate', '--step', '4', 'did you mean --steps?'],
    ['calibrate', '--batch-token', '64', 'did you mean --batch-tokens?'],
    ['prune', '--aply', 'experts', 'did you mean --apply?'],
    ['prune', '--sparsty', '2:4', 'did you mean --sparsity?'],
  ])('%s: unknown option %s suggests the closest', async (cmd, option, value, hint) => {
    await expectUsageError([...BASE[cmd], option, value], `unknown option ${option}; ${hint}`);
  });

  it('an option another command has is still unknown here', async () => {
    await expectUsageError([...BASE.prune, '--weights', 'f16'], /unknown option --weights for webmoe prune; it takes --model, --out, --sparsity, --target-ratio, --apply, --permute, --values, --calibration, --calibration-tokens, --quiet, --help/);
    await expectUsageError([...BASE.info, '--prompt', 'x'], /unknown option --prompt for webmoe info/);
  });

  it.each([
    ['generate', ['--max-tokens', 'abc'], "--max-tokens must be an integer ≥ 0, got 'abc'"],
    ['generate', ['--max-tokens', '2.5'], "--max-tokens must be an integer ≥ 0, got '2.5'"],
    ['generate', ['--temperature', '-1'], "--temperature must be a number in [0, 100], got '-1'"],
    ['generate', ['--top-p', '1.5'], "--top-p must be a number in [0, 1], got '1.5'"],
    ['generate', ['--top-k', '-2'], "--top-k must be an integer ≥ 0, got '-2'"],
    ['generate', ['--repetition-penalty', '0'], "--repetition-penalty must be a number in [0.01, 100], got '0'"],
    ['generate', ['--seed', '4294967296'], "--seed must be an integer in [0, 4294967295], got '4294967296'"],
    ['generate', ['--weights', 'fp16'], "--weights must be auto, f32, f16, bf16, q8, q4 or gguf, got 'fp16'"],
    ['generate', ['--context', '1'], "--context must be an integer ≥ 2, got '1'"],
    ['generate', ['--prefill-chunk', '0'], "--prefill-chunk must be an integer ≥ 1, got '0'"],
    ['info', ['--prefill-chunk', '2.5'], "--prefill-chunk must be an integer ≥ 1, got '2.5'"],
    ['generate', ['--kv-cache', 'bf16'], "--kv-cache must be f16 or f32, got 'bf16'"],
    ['serve', ['--kv-cache', 'f8'], "--kv-cache must be f16 or f32, got 'f8'"],
    ['info', ['--kv-cache', 'half'], "--kv-cache must be f16 or f32, got 'half'"],
    ['generate', ['--chat=yes'], "--chat is a switch and takes no value (got '--chat=yes')"],
    ['logits', ['--mode', 'sideways'], "--mode must be prefill, decode or hybrid, got 'sideways'"],
    ['info', ['--weights', 'q3'], "--weights must be auto, f32, f16, bf16, q8, q4 or gguf, got 'q3'"],
    ['calibrate', ['--steps', '0'], "--steps must be an integer ≥ 1, got '0'"],
    ['calibrate', ['--gamma', '0'], "--gamma must be a number > 0, got '0'"],
    ['calibrate', ['--batch-tokens', 'lots'], "--batch-tokens must be an integer ≥ 1, got 'lots'"],
    ['prune', ['--sparsity', '3:4'], "--sparsity must be 2:4, V:2:M (e.g. 64:2:8) or auto, got '3:4'"],
    ['prune', ['--apply', 'everything'], "--apply must be experts or all-linear, got 'everything'"],
    ['convert', ['--to', 'onnx'], "--to must be gguf, got 'onnx'"],
    ['convert', ['--quant', 'q4_k'], "--quant must be f32, f16, q8_0 or q4_k_m, got 'q4_k'"],
    ['convert', ['--out', 'model.bin'], '--out must name a .gguf file'],
  ] as const)('%s: bad value %j', async (cmd, extra, message) => {
    await expectUsageError([...BASE[cmd], ...extra], message);
  });

  it.each(Object.keys(BASE))('%s: a missing value, a stray argument and a missing required option', async (cmd) => {
    await expectUsageError([...BASE[cmd], '--model'], '--model needs a value (DIR');
    await expectUsageError([cmd, '--model', '--out', 'x'], /--model needs a value \(DIR(\|URL)?\) but is followed by option --out; write --model=--out/);
    await expectUsageError([...BASE[cmd], 'stray'], `unexpected argument 'stray' for webmoe ${cmd}`);
    await expectUsageError([cmd], `--model is required for webmoe ${cmd}`);
  });

  it.each(Object.keys(BASE))('%s: --help, -h and `webmoe help COMMAND` print its usage and exit 0', async (cmd) => {
    const a = await run(cmd, '--help'), b = await run('help', cmd), c = await run(...BASE[cmd], '--bogus', '-h');
    for (const r of [a, b, c]) {
      expect(r.code).toBe(0);
      expect(r.err).toBe('');
    }
    expect(b.out).toBe(a.out);
    expect(c.out).toBe(a.out);
    expect(a.out).toMatch(new RegExp(`^usage: webmoe ${cmd} --model DIR`));
    // Every option the help lists is known to the parser (it is the same table), and each has a description.
    // The trailing unknown option makes every run stop at argument checking, before any model loads.
    const listed = [...a.out.matchAll(/^ {2}--([a-z-]+)(?: (\S+))? {2,}(\S.*)$/gm)];
    expect(listed.length).toBeGreaterThan(3);
    for (const [, name, arg] of listed) {
      const r = await run(...BASE[cmd], arg ? `--${name}=1` : `--${name}`, '--zzz-unknown');
      expect(r.code).toBe(2);
      expect(r.err).toContain('unknown option --zzz-unknown');
    }
  });

  it('serve checks its port and queue bound before loading anything', async () => {
    await expectUsageError([...BASE.serve, '--port', '70000'], '--port must be an integer in [0, 65535]');
    await expectUsageError([...BASE.serve, '--max-queue', '-1'], '--max-queue must be an integer ≥ 0');
    await expectUsageError([...BASE.serve, '--prot', '8000'], 'did you mean --port?');
  });

  it('generate --help lists every option with its rule and default', async () => {
    const { out } = await run('generate', '--help');
    for (const name of ['model', 'prompt', 'chat', 'max-tokens', 'temperature', 'top-k', 'top-p', 'repetition-penalty', 'seed', 'weights', 'context', 'quiet', 'help']) expect(out).toContain(`--${name}`);
    expect(out).toMatch(/--max-tokens N +.*\(an integer ≥ 0; default 128\)/);
    expect(out).toMatch(/--temperature T +.*\(a number in \[0, 100\]; default 0\.7\)/);
    expect(out).toContain('--weights auto|f32|f16|bf16|q8|q4');
  });

  it('webmoe --help, -h and help print the command list and exit 0; --version prints the package version', async () => {
    for (const argv of [['--help'], ['-h'], ['help']]) {
      const r = await run(...argv);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^usage: webmoe COMMAND \[options\]/);
      for (const cmd of Object.keys(BASE)) expect(r.out).toContain(`webmoe ${cmd} --model`);
    }
    const v = await run('--version');
    expect(v).toEqual({ code: 0, out: `${VERSION}\n`, err: '' });
  });

  it('no command prints the usage on stderr and exits 2; unknown commands and global options suggest the closest', async () => {
    const r = await run();
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^usage: webmoe COMMAND/);
    await expectUsageError(['genrate', '--model', 'x'], 'unknown command genrate; did you mean generate?');
    await expectUsageError(['help', 'logit'], 'unknown command logit; did you mean logits?');
    await expectUsageError(['frobnicate'], 'unknown command frobnicate; commands: generate, logits, info, calibrate, prune');
    await expectUsageError(['--verison'], 'unknown option --verison; did you mean --version?');
    await expectUsageError(['help', 'generate', 'logits'], 'help takes one command name');
  });

  it('an unreadable input file is a usage error naming its option', async () => {
    await expectUsageError(['logits', '--model', '/nonexistent/model', '--tokens', '/nonexistent/tokens.json', '--mode', 'prefill', '--out', 'o.bin'], '--tokens: cannot read /nonexistent/tokens.json (ENOENT)');
    await expectUsageError(['calibrate', '--model', '/nonexistent/model', '--text', '/nonexistent/t.txt', '--out', 'b'], '--text: cannot read /nonexistent/t.txt (ENOENT)');
  });
});

describe('bin/webmoe.js', () => {
  const bin = (...args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
    execFile(process.execPath, [`${ROOT}/bin/webmoe.js`, ...args], { cwd: ROOT }, (e, stdout, stderr) => done({ code: e ? (e.code as number) : 0, stdout, stderr }));
  });

  it('exits 2 with one line for the issue command line, 0 for --help and --version', async () => {
    const bad = await bin('generate', '--model', 'public/models/webmoe-tiny', '--max-token', '3', '--prompt', 'hi');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('webmoe: unknown option --max-token; did you mean --max-tokens?\n');
    const help = await bin('--help');
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^usage: webmoe COMMAND/);
    const version = await bin('--version');
    expect(version).toEqual({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
  }, 30_000);
});
