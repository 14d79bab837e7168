// The CLI end to end on the fixture model (written to a temp directory): logits in the fixture's own
// format and layout, routing.json, generate, calibrate + overlay, and argument errors.
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, writeFileSync, readFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { main } from '../../src/cli';
import { FIXTURE_DIR, fixtureJson, fixtureLogits } from '../helpers/fixture';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { expectClose } from '../helpers/gpu';
import { parseSafetensors } from '../../src/formats/safetensors';

let dir: string;
function io() {
  const out: string[] = [], err: string[] = [];
  return { io: { out: (s: string) => out.push(s), err: (s: string) => err.push(s) }, out, err };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'webmoe-cli-'));
  for (const f of ['config.json', 'model.safetensors', 'tokens.json']) copyFileSync(join(FIXTURE_DIR, f), join(dir, f));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJson()));
});

describe('webmoe CLI', () => {
  it('logits --mode hybrid matches the fixture file byte layout and values; routing.json has the expert sets', async () => {
    const c = io();
    const out = join(dir, 'out.f32.bin'), routing = join(dir, 'routing.json');
    const code = await main(['logits', '--model', dir, '--tokens', join(dir, 'tokens.json'), '--mode', 'hybrid', '--out', out, '--routing', routing, '--weights', 'f32'], c.io);
    expect(code, c.err.join('')).toBe(0);
    const b = readFileSync(out);
    const got = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
    expectClose(got, fixtureLogits('logits_hybrid_absorb.f32.bin'), { atol: 1e-4, rtol: 0 }, 'cli hybrid');
    const r = JSON.parse(readFileSync(routing, 'utf8'));
    const want = fixtureJson('routing.json').runs.hybrid_absorb;
    const sets = (rows: number[][]) => rows.map((x) => [...x].sort((a, b) => a - b));
    for (const l of ['1', '2']) expect(sets(r[l].indices)).toEqual(sets(want[l].indices));
  });

  it('logits runs on a weights-only folder (no tokenizer.json); --quiet leaves stderr empty; text commands there fail with the reason', async () => {
    const c = io();
    const out = join(dir, 'prefill.f32.bin');
    const code = await main(['logits', '--model', FIXTURE_DIR, '--tokens', join(FIXTURE_DIR, 'tokens.json'), '--mode', 'prefill', '--out', out, '--weights', 'f32', '--quiet'], c.io);
    expect(code, c.err.join('')).toBe(0);
    expect(c.err.join('')).toBe('');
    const b = readFileSync(out);
    expectClose(new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4), fixtureLogits('logits_prefill_absorb.f32.bin'), { atol: 1e-4, rtol: 0 }, 'cli prefill without tokenizer');
    const g = io();
    expect(await main(['generate', '--model', FIXTURE_DIR, '--prompt', 'abc', '--max-tokens', '2', '--quiet'], g.io)).toBe(1);
    expect(g.err.join('')).toMatch(/BAD_FORMAT.*tokenizer\.json is missing/);
  });

  it('generate streams text and reports speed', async () => {
    const c = io();
    const code = await main(['generate', '--model', dir, '--prompt', 'abc', '--max-tokens', '5', '--temperature', '0', '--weights', 'f32'], c.io);
    expect(code, c.err.join('')).toBe(0);
    expect(c.err.join('')).toMatch(/\d+ tokens, (length|eos)/);
  });

  it('generate on the bundled model: a raw prompt gets the <|bos|> its tokenizer declares, not a second one when written', async () => {
    const bundled = join(import.meta.dirname, '..', '..', 'public', 'models', 'webmoe-tiny');
    const run = async (prompt: string) => {
      const c = io();
      const code = await main(['generate', '--model', bundled, '--prompt', prompt, '--max-tokens', '10', '--temperature', '0', '--weights', 'f32'], c.io);
      expect(code, c.err.join('')).toBe(0);
      return c.out.join('');
    };
    const raw = await run('The old man');
    expect(raw.trim().length).toBeGreaterThan(0);
    // Before the tokenizer declared the BOS these differed (" of the world. He is a good deal…" without it).
    expect(await run('<|bos|>The old man')).toBe(raw);
  });

  it('calibrate writes bias tensors that load over the checkpoint', async () => {
    const c = io();
    const text = join(dir, 'text.txt'), out = join(dir, 'bias.safetensors');
    writeFileSync(text, 'the quick brown fox jumps over the lazy dog; '.repeat(5));
    const code = await main(['calibrate', '--model', dir, '--text', text, '--out', out, '--steps', '4', '--gamma', '0.01', '--batch-tokens', '64', '--weights', 'f32'], c.io);
    expect(code, c.err.join('')).toBe(0);
    expect(c.out.join('')).toMatch(/layer 1: MaxVio [\d.]+ → [\d.]+/);
    const st = parseSafetensors(new Uint8Array(readFileSync(out)));
    expect([...st.header.tensors.keys()].sort()).toEqual(['model.layers.1.mlp.gate.e_score_correction_bias', 'model.layers.2.mlp.gate.e_score_correction_bias']);
  });

  it('prune writes a pre-pruned copy that info reports as sparse, and logits still run', async () => {
    const out = join(dir, 'pruned-2-4');
    const c = io();
    expect(await main(['prune', '--model', dir, '--out', out, '--sparsity', '2:4', '--apply', 'experts'], c.io), c.err.join('')).toBe(0);
    const r = JSON.parse(c.out.join(''));
    expect(r.prunedWeights).toBe(48);
    expect(r.prunedBytesAfter / r.prunedBytesBefore).toBeLessThan(0.6);
    expect(readFileSync(join(out, 'tokenizer.json'), 'utf8')).toBe(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
    const i = io();
    expect(await main(['info', '--model', out, '--load'], i.io), i.err.join('')).toBe(0);
    expect(JSON.parse(i.out.join('')).model.sparsity).toBe('2:4 (experts, pre-pruned)');
  });

  it('bad arguments exit with 2 and say what is wrong', async () => {
    for (const [args, msg] of [
      [['prune', '--model', dir, '--out', join(dir, 'p'), '--sparsity', '3:4'], /--sparsity must be 2:4, V:2:M \(e.g. 64:2:8\) or auto/],
      [['prune', '--model', dir, '--out', join(dir, 'p'), '--sparsity', '2:4', '--apply', 'everything'], /--apply must be experts or all-linear/],
      [['logits', '--model', dir], /--tokens is required/],
      [['logits', '--model', dir, '--tokens', join(dir, 'tokens.json'), '--mode', 'sideways', '--out', 'x'], /--mode must be/],
      [['frobnicate'], /unknown command/],
      [['generate', '--model', dir, '--prompt', 'x', '--max-tokens', 'many'], /--max-tokens must be an integer/],
    ] as const) {
      const c = io();
      expect(await main([...args], c.io)).toBe(2);
      expect(c.err.join('')).toMatch(msg);
    }
    const u = io();
    expect(await main(['generate', '--model', dir, '--prompt', 'x', '--max-token', '3'], u.io)).toBe(2);
    expect(u.err.join('')).toBe('webmoe: unknown option --max-token; did you mean --max-tokens?\n');
    const c = io();
    expect(await main(['info', '--model', join(dir, 'missing')], c.io)).toBe(1);
    expect(c.err.join('')).toMatch(/NOT_FOUND|BAD_FORMAT|not found|missing/i);
  });

  it('serve: a process that answers /v1/models once loaded and exits 0 on SIGTERM', async () => {
    const bundled = join(import.meta.dirname, '..', '..', 'public', 'models', 'webmoe-tiny');
    const bin = join(import.meta.dirname, '..', '..', 'bin', 'webmoe.js');
    const child = spawn(process.execPath, [bin, 'serve', '--model', bundled, '--port', '0', '--name', 'tiny', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    try {
      for (let i = 0; i < 300 && !/http:\/\/\S+\/v1/.test(out); i++) await new Promise((r) => setTimeout(r, 100));
      const url = /(http:\/\/\S+\/v1)/.exec(out)?.[1];
      expect(url, out + err).toBeDefined();
      let models: Response | null = null;
      for (let i = 0; i < 300; i++) {
        models = await fetch(`${url}/models`);
        if (models.status !== 503) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(models!.status, err).toBe(200);
      expect((await models!.json()).data[0].id).toBe('tiny');
    } finally {
      child.kill('SIGTERM');
    }
    const [code] = await once(child, 'exit');
    expect(code, err).toBe(0);
    expect(err).toBe(''); // --quiet
  });
});
