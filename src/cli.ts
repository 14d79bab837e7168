/**
 * The `webmoe` command line: the same engine in Node on the `webgpu` package (SwiftShader when the
 * machine has no GPU driver).
 *
 *   webmoe generate --model DIR --prompt "..." [--chat] [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--weights f32|f16|q8|q4]
 *   webmoe logits   --model DIR --tokens tokens.json --mode prefill|decode|hybrid --out logits.f32.bin [--routing routing.json]
 *   webmoe info     --model DIR
 *   webmoe calibrate --model DIR --text FILE --out bias.safetensors [--steps N] [--gamma G] [--batch-tokens T]
 *   webmoe prune    --model DIR --out DIR --sparsity 2:4|V:2:M [--apply experts|all-linear]
 */
import { writeFileSync, readFileSync, copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { createNodeEngine } from './node';
import { ArgumentError, WebMoeError } from './errors';
import type { WebMoeEngine } from './engine/engine';
import type { LoadOptions, WeightStorage } from './engine/types';
import { calibrateModel } from './engine/calibrate';
import { join, resolve } from 'node:path';
import { openCheckpoint } from './model/checkpoint';
import { directoryModel } from './loader/node-source';
import { writePrunedCheckpoint } from './model/prune-checkpoint';
import type { SparsityOption } from './sparse/apply';

const USAGE = `usage:
  webmoe generate --model DIR|URL --prompt TEXT [--chat] [--max-tokens N] [--temperature T] [--top-k K]
                  [--top-p P] [--repetition-penalty R] [--seed S] [--weights auto|f32|f16|q8|q4]
  webmoe logits   --model DIR|URL --tokens tokens.json --mode prefill|decode|hybrid --out FILE.f32.bin
                  [--routing routing.json] [--weights ...]
  webmoe info     --model DIR|URL
  webmoe calibrate --model DIR|URL --text FILE --out bias.safetensors [--steps 50] [--gamma 0.001] [--batch-tokens 256]
                  (DeepSeek-V3 auxiliary-loss-free bias balancing; load the result with LoadOptions.overlay)
  webmoe prune    --model DIR --out DIR --sparsity 2:4|V:2:M (e.g. 64:2:8) [--apply experts|all-linear]
                  (writes a pre-pruned copy of a local model; it loads on the sparse kernels by default)`;

type Flags = Record<string, string | boolean>;

const BOOLEAN_FLAGS = new Set(['chat', 'help', 'quiet']);

export function parseArgs(argv: string[]): { command: string; flags: Flags } {
  const [command, ...rest] = argv;
  const flags: Flags = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (!a.startsWith('--')) throw new ArgumentError(`unexpected argument '${a}'`);
    const [key, inline] = a.slice(2).split(/=(.*)/s, 2);
    if (BOOLEAN_FLAGS.has(key)) { flags[key] = true; continue; }
    const value = inline ?? rest[++i];
    if (value === undefined) throw new ArgumentError(`--${key} needs a value`);
    flags[key] = value;
  }
  return { command: command ?? '', flags };
}

function str(f: Flags, key: string, required = true): string | undefined {
  const v = f[key];
  if (v === undefined) { if (required) throw new ArgumentError(`--${key} is required`); return undefined; }
  if (typeof v !== 'string') throw new ArgumentError(`--${key} needs a value`);
  return v;
}

function num(f: Flags, key: string, integer = false): number | undefined {
  const v = str(f, key, false);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new ArgumentError(`--${key} must be ${integer ? 'an integer' : 'a number'}, got '${v}'`);
  return n;
}

function loadOptions(f: Flags): LoadOptions {
  const weights = str(f, 'weights', false) as WeightStorage | undefined;
  return { weights, contextLength: num(f, 'context', true) };
}

export interface CliIO { out: (s: string) => void; err: (s: string) => void }
const defaultIO: CliIO = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

async function withEngine<T>(f: Flags, io: CliIO, fn: (e: WebMoeEngine) => Promise<T>): Promise<T> {
  const engine = createNodeEngine({ log: (m) => io.err(`${m}\n`) });
  try {
    await engine.load(str(f, 'model')!, loadOptions(f));
    return await fn(engine);
  } finally {
    await engine.unload();
  }
}

async function generate(f: Flags, io: CliIO) {
  const prompt = str(f, 'prompt')!;
  await withEngine(f, io, async (engine) => {
    const o = {
      maxTokens: num(f, 'max-tokens', true) ?? 128, temperature: num(f, 'temperature'), topK: num(f, 'top-k', true),
      topP: num(f, 'top-p'), repetitionPenalty: num(f, 'repetition-penalty'), seed: num(f, 'seed', true),
    };
    const it = f.chat ? engine.chat([{ role: 'user', content: prompt }], o) : engine.generate(prompt, o);
    for (;;) {
      const r = await it.next();
      if (r.done) {
        io.out('\n');
        io.err(`[${r.value.tokens.length} tokens, ${r.value.finishReason}; TTFT ${r.value.timeToFirstTokenMs.toFixed(0)} ms, prefill ${r.value.prefillTokPerS.toFixed(1)} tok/s, decode ${r.value.decodeTokPerS.toFixed(1)} tok/s]\n`);
        break;
      }
      io.out(r.value.text);
    }
  });
}

/** Logits exactly like the reference fixture's files: raw little-endian float32 [S, V]. */
async function logits(f: Flags, io: CliIO) {
  const spec = JSON.parse(readFileSync(str(f, 'tokens')!, 'utf8'));
  const tokens: number[] = Array.isArray(spec) ? spec : spec.tokens;
  if (!Array.isArray(tokens) || !tokens.every((t) => Number.isInteger(t) && t >= 0)) throw new ArgumentError('--tokens: expected {"tokens": [ints], "prefill_split"?: P} or a JSON array of ints');
  const mode = str(f, 'mode')!;
  if (!['prefill', 'decode', 'hybrid'].includes(mode)) throw new ArgumentError(`--mode must be prefill, decode or hybrid, got '${mode}'`);
  const split = mode === 'prefill' ? tokens.length : mode === 'decode' ? 1 : (spec.prefill_split ?? Math.floor(tokens.length / 2));
  const outPath = str(f, 'out')!;
  const routingPath = str(f, 'routing', false);
  await withEngine(f, io, async (engine) => {
    const runner = engine.runner;
    if (tokens.some((t) => t >= runner.cfg.vocabSize)) throw new ArgumentError(`--tokens: ids must be < vocab_size ${runner.cfg.vocabSize}`);
    const V = runner.cfg.vocabSize;
    const out = new Float32Array(tokens.length * V);
    const routing: Record<string, { indices: number[][] }> = {};
    const chunks: [number, number][] = [[0, split]];
    for (let i = split; i < tokens.length; i++) chunks.push([i, i + 1]);
    for (const [a, b] of chunks) {
      if (a >= b) continue;
      out.set(await runner.logits(tokens.slice(a, b), true), a * V);
      for (const [layer, rows] of await runner.lastRouting()) (routing[layer] ??= { indices: [] }).indices.push(...rows);
    }
    writeFileSync(outPath, new Uint8Array(out.buffer));
    if (routingPath) writeFileSync(routingPath, JSON.stringify(routing));
    io.err(`wrote ${tokens.length}×${V} logits to ${outPath}${routingPath ? ` and routing to ${routingPath}` : ''}\n`);
  });
}

async function info(f: Flags, io: CliIO) {
  await withEngine(f, io, async (engine) => {
    const s = await engine.stats();
    io.out(`${JSON.stringify({ model: engine.info, device: s.device, weightBytes: s.weightBytes, gpuBytes: s.gpuBytes, kvBytesPerToken: s.kvBytesPerToken, mhaKvBytesPerToken: s.mhaKvBytesPerToken }, null, 2)}\n`);
  });
}

async function calibrate(f: Flags, io: CliIO) {
  const text = readFileSync(str(f, 'text')!, 'utf8');
  const outPath = str(f, 'out')!;
  const steps = num(f, 'steps', true) ?? 50;
  const gamma = num(f, 'gamma') ?? 1e-3;
  const batchTokens = num(f, 'batch-tokens', true) ?? 256;
  await withEngine(f, io, async (engine) => {
    const ids = engine.codec.encode(text);
    const size = Math.min(batchTokens, engine.runner.capacity);
    const batches: number[][] = [];
    for (let i = 0; i + 1 < ids.length; i += size) batches.push(ids.slice(i, i + size));
    if (!batches.length) throw new ArgumentError('--text encodes to no tokens');
    io.err(`calibrating on ${ids.length} tokens in ${batches.length} batches, ${steps} steps, γ = ${gamma}\n`);
    const r = await calibrateModel(engine, batches, { steps, gamma });
    for (const [layer, before] of r.maxVioBefore) io.out(`layer ${layer}: MaxVio ${before.toFixed(3)} → ${r.maxVioAfter.get(layer)!.toFixed(3)}\n`);
    writeFileSync(outPath, r.file);
    io.err(`wrote ${outPath}\n`);
  });
}

/** Parses '2:4' or 'V:2:M' (e.g. '64:2:8'). */
export function parseSparsity(spec: string, apply: string): SparsityOption {
  if (apply !== 'experts' && apply !== 'all-linear') throw new ArgumentError(`--apply must be experts or all-linear, got '${apply}'`);
  if (spec === '2:4') return { format: '2:4', apply };
  const m = /^(\d+):2:(\d+)$/.exec(spec);
  if (!m) throw new ArgumentError(`--sparsity must be 2:4 or V:2:M (e.g. 64:2:8), got '${spec}'`);
  return { format: 'vnm', v: Number(m[1]), m: Number(m[2]), apply };
}

async function prune(f: Flags, io: CliIO) {
  const dir = resolve(str(f, 'model')!), outDir = resolve(str(f, 'out')!);
  const o = parseSparsity(str(f, 'sparsity')!, str(f, 'apply', false) ?? 'experts');
  if (!existsSync(join(dir, 'config.json'))) throw new ArgumentError(`--model: ${dir} has no config.json (prune reads a local model folder)`);
  if (outDir === dir) throw new ArgumentError('--out must be another folder than --model');
  const ckpt = await openCheckpoint(directoryModel(dir));
  try {
    let last = 0;
    const r = await writePrunedCheckpoint(ckpt, o, { onTensor: (name, done, total) => { if (done - last >= 64 || done === total) { last = done; io.err(`  ${done}/${total} ${name}\n`); } } });
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'model.safetensors'), r.file);
    for (const file of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) if (existsSync(join(dir, file))) copyFileSync(join(dir, file), join(outDir, file));
    io.out(`${JSON.stringify({ out: outDir, sparsity: o, prunedWeights: r.pruned, keptNormFraction: +r.keptNormFraction.toFixed(4), prunedBytesBefore: r.bytesBefore, prunedBytesAfter: r.bytesAfter, fileBytes: r.file.length })}\n`);
  } finally {
    await ckpt.close?.();
  }
}

/** Runs the CLI; returns the exit code (0 ok, 1 runtime error, 2 bad arguments). */
export async function main(argv: string[], io: CliIO = defaultIO): Promise<number> {
  try {
    const { command, flags } = parseArgs(argv);
    if (!command || flags.help || command === 'help') { io.out(`${USAGE}\n`); return command ? 0 : 2; }
    if (command === 'generate') await generate(flags, io);
    else if (command === 'logits') await logits(flags, io);
    else if (command === 'info') await info(flags, io);
    else if (command === 'calibrate') await calibrate(flags, io);
    else if (command === 'prune') await prune(flags, io);
    else throw new ArgumentError(`unknown command '${command}'`);
    return 0;
  } catch (e) {
    if (e instanceof ArgumentError) { io.err(`webmoe: ${e.message}\n${USAGE}\n`); return 2; }
    if (e instanceof WebMoeError) { io.err(`webmoe: ${e.name} (${e.code}): ${e.message}\n`); return 1; }
    io.err(`webmoe: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}
