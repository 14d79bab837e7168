/**
 * The `webmoe` command line: the same engine in Node on the `webgpu` package (SwiftShader when the
 * machine has no GPU driver). Every command declares its options once (COMMANDS below); that table
 * drives parsing, value checks and the help (`webmoe help COMMAND`). Exit codes: 0 ok, 1 runtime
 * error, 2 usage error (unknown option or command, missing or bad value), with one line on stderr.
 */
import { writeFileSync, readFileSync, copyFileSync, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNodeEngine, nodeModelSource } from './node';
import { ArgumentError, WebMoeError } from './errors';
import { SAMPLING_RANGES, calibrateModel, type WebMoeEngine } from './engine/engine';
import type { LoadOptions } from './engine/types';
import { findGgufFiles, openCheckpoint, openGgufFiles } from './model/checkpoint';
import { directoryModel, localModel } from './loader/node-source';
import { urlModel } from './loader/model-source';
import { planMemory } from './model/memory-plan';
import { mtpLayersPresent } from './model/tensors';
import { GGUF_QUANTS, streamCheckpointToGguf } from './model/gguf-convert';
import { ggufSummary } from './model/gguf-info';
import { kv } from './formats/gguf-write';
import { autoSparsity, writePrunedCheckpoint, type PrunedCheckpoint } from './model/prune-checkpoint';
import { patternLabel } from './sparse/select';
import { activationNorms } from './model/activation-norms';
import { TextCodec } from './engine/text';
import type { SparsityOption } from './sparse/apply';
import { serveModel } from './server/serve';
import { totalmem } from 'node:os';
import { closest, commandHelp, parseOptions, synopsis, type OptionTable, type OptionValues } from './cli-args';

export interface CliIO { out: (s: string) => void; err: (s: string) => void }
const defaultIO: CliIO = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

// Options of every command that loads a model on the GPU (each command lists its own after --model).
const model = { kind: 'text', arg: 'DIR|URL', required: true, description: 'model folder or URL (config.json, *.safetensors, tokenizer.json), or a .gguf file or URL (the first of a split GGUF)' } as const;
const weights = { kind: 'choice', choices: ['auto', 'f32', 'f16', 'bf16', 'q8', 'q4', 'gguf'], default: 'auto', description: 'weight storage on the GPU (auto: a quantised GGUF\'s blocks as they are (gguf), f16 / bf16 for F16 / BF16 checkpoints on a real GPU, else f32)' } as const;
const context = { kind: 'integer', arg: 'N', min: 2, description: "KV cache capacity in tokens (default: the model's max_position_embeddings, at most 4096)" } as const;
const quiet = { kind: 'flag', description: 'print only results and errors (no device, progress or speed lines on stderr)' } as const;
const prefillChunk = { kind: 'integer', arg: 'N', min: 1, description: 'most prompt tokens per prefill forward: longer prompts run in chunks, which bound the activations (default: min(512, context), smaller when the device\'s bindings cannot hold a chunk\'s temporaries)' } as const;
const kvCache = { kind: 'choice', choices: ['f16', 'f32'], description: 'KV cache element format: f16 halves its bytes, values rounded to f16 when written (default: f16 on a GPU, f32 on a CPU fallback adapter)' } as const;
const device = { kind: 'choice', choices: ['webgpu', 'wasm', 'auto'], default: 'webgpu', description: 'where the model runs: webgpu; wasm (the WebAssembly engine on the CPU); auto (WebGPU on a hardware adapter, WASM on a CPU fallback adapter such as SwiftShader or without WebGPU)' } as const;
const threads = { kind: 'integer', arg: 'N', min: 1, max: 64, description: 'the WASM engine\'s threads (default: the cores, at most 8)' } as const;
const gpuBudget = { kind: 'number', arg: 'MiB', above: 0, description: 'GPU memory budget: past it, the routed experts live in a per-MoE-layer GPU expert cache sized to fit (the rest stays resident; outputs equal full residency). Below the minimum that runs, the error names it (default: no budget)' } as const;
const expertSource = { kind: 'choice', choices: ['auto', 'host', 'source'], default: 'auto', description: 'with --gpu-budget: where cold experts wait: host memory, or re-read from the model source (auto: host when they take at most half of it)' } as const;
const expertPrefetch = { kind: 'choice', choices: ['none', 'previous-token', 'next-gate'], description: "with --gpu-budget: uploads ahead of a layer's routing (default next-gate; docs/offload.md)" } as const;
const expertEviction = { kind: 'choice', choices: ['lru', 'load'], description: 'with --gpu-budget: which resident expert a miss replaces: least recently used, or least chosen so far (default load)' } as const;
const offloading = { 'gpu-budget': gpuBudget, 'expert-source': expertSource, 'expert-prefetch': expertPrefetch, 'expert-eviction': expertEviction } as const;
const loading = { model, weights, device, threads, context, 'prefill-chunk': prefillChunk, 'kv-cache': kvCache, quiet, ...offloading } as const;

const generateOptions = {
  model,
  prompt: { kind: 'text', arg: 'TEXT', required: true, description: 'the prompt (raw text; see --chat)' },
  chat: { kind: 'flag', description: "send the prompt as a user message through the model's chat template" },
  'max-tokens': { kind: 'integer', arg: 'N', min: 0, default: 128, description: 'tokens to generate at most' },
  temperature: { kind: 'number', arg: 'T', ...range(SAMPLING_RANGES.temperature), description: 'sampling temperature, 0 = greedy' },
  'top-k': { kind: 'integer', arg: 'K', ...range(SAMPLING_RANGES.topK), description: 'sample among the K most likely tokens, 0 = all' },
  'top-p': { kind: 'number', arg: 'P', ...range(SAMPLING_RANGES.topP), description: 'nucleus sampling: the smallest set of tokens with probability ≥ P' },
  'repetition-penalty': { kind: 'number', arg: 'R', ...range(SAMPLING_RANGES.repetitionPenalty), description: 'divide the logits of tokens already seen by R' },
  seed: { kind: 'integer', arg: 'S', ...range(SAMPLING_RANGES.seed), description: 'seed of the sampler (default random); the same seed gives the same tokens' },
  speculative: { kind: 'choice', choices: ['mtp', 'off'], description: "self-speculative decoding with the model's Multi-Token Prediction layer: the same tokens, two per forward when the draft is accepted (default off, docs/mtp.md)" },
  'reasoning-effort': { kind: 'choice', choices: ['low', 'medium', 'high'], description: "with --chat, GPT-OSS's reasoning level (its template's default: medium); its reasoning goes to stderr, the answer to stdout" },
  weights, device, threads, context, 'prefill-chunk': prefillChunk, 'kv-cache': kvCache, quiet, ...offloading,
} as const;

const logitsOptions = {
  model: { ...model, description: 'model folder or URL (config.json, *.safetensors; tokenizer.json not needed), or a .gguf file or URL' },
  tokens: { kind: 'text', arg: 'FILE', required: true, description: 'JSON: {"tokens": [ids], "prefill_split"?: P} or an array of ids' },
  mode: { kind: 'choice', choices: ['prefill', 'decode', 'hybrid'], required: true, description: 'prefill: all tokens in one pass; decode: one token at a time; hybrid: prefill_split (default half) then one at a time' },
  out: { kind: 'text', arg: 'FILE', required: true, description: 'where to write the logits (raw little-endian float32 [tokens, vocab])' },
  routing: { kind: 'text', arg: 'FILE', description: 'also write the experts chosen per MoE layer and token (JSON)' },
  weights, device, threads, context, quiet,
} as const;

const calibrateOptions = {
  model,
  text: { kind: 'text', arg: 'FILE', required: true, description: 'UTF-8 text to balance the expert load on' },
  out: { kind: 'text', arg: 'FILE', required: true, description: 'where to write the bias tensors (safetensors)' },
  steps: { kind: 'integer', arg: 'N', min: 1, default: 50, description: 'bias update steps' },
  gamma: { kind: 'number', arg: 'G', above: 0, default: 0.001, description: 'bias update speed γ' },
  'batch-tokens': { kind: 'integer', arg: 'T', min: 1, default: 256, description: 'tokens per batch (at most the context)' },
  weights, device, threads, context, quiet,
} as const;

const serveOptions = {
  model,
  port: { kind: 'integer', arg: 'N', min: 0, max: 65535, default: 8000, description: 'TCP port (0: any free port; the URL is printed)' },
  host: { kind: 'text', arg: 'HOST', default: '127.0.0.1', description: 'address to listen on (0.0.0.0 for every interface)' },
  name: { kind: 'text', arg: 'ID', description: "the model id clients send (default: the model folder's or URL's last segment)" },
  'max-queue': { kind: 'integer', arg: 'N', min: 0, default: 8, description: 'requests that may wait while one generates; more get HTTP 429' },
  weights, device, threads, context, 'prefill-chunk': prefillChunk, 'kv-cache': kvCache, quiet, ...offloading,
} as const;

const convertOptions = {
  model: { kind: 'text', arg: 'DIR', required: true, description: 'local safetensors model folder (config.json, *.safetensors) to convert' },
  to: { kind: 'choice', choices: ['gguf'], required: true, description: "output format: gguf (llama.cpp's deepseek2 layout)" },
  quant: { kind: 'choice', choices: GGUF_QUANTS, default: 'f16', description: "tensor types: f32, f16, q8_0, or q4_k_m (llama-quantize's Q4_K_M mix: Q4_K, with Q6_K for output.weight and part of the ffn_down layers); router and norms stay F32" },
  out: { kind: 'text', arg: 'FILE', required: true, description: 'the .gguf file to write' },
  quiet,
} as const;

/** '2:4', 'V:2:M' (e.g. '64:2:8') or 'auto' (V and M chosen for --target-ratio) → the pattern part of a SparsityOption. */
export function parseSparsityPattern(spec: string): Omit<SparsityOption, 'apply' | 'format'> & { format: SparsityOption['format'] | 'auto' } | undefined {
  if (spec === '2:4') return { format: '2:4' };
  if (spec === 'auto') return { format: 'auto' };
  const m = /^(\d+):2:(\d+)$/.exec(spec);
  return m ? { format: 'vnm', v: Number(m[1]), m: Number(m[2]) } : undefined;
}

const pruneOptions = {
  model: { kind: 'text', arg: 'DIR', required: true, description: 'local model folder to prune' },
  out: { kind: 'text', arg: 'DIR', required: true, description: 'folder for the pruned copy (another folder than --model)' },
  sparsity: { kind: 'pattern', arg: '2:4|V:2:M|auto', rule: '2:4, V:2:M (e.g. 64:2:8) or auto', parse: parseSparsityPattern, required: true, description: 'pattern: 2:4, V:2:M (2 kept of every M columns in V-row blocks), or auto (V and M for --target-ratio by mask diversity, docs/sparsity.md)' },
  'target-ratio': { kind: 'number', arg: 'R', above: 0, description: 'with --sparsity auto: the most packed bytes of the pruned weights, as a fraction of their dense f32 bytes (e.g. 0.45)' },
  apply: { kind: 'choice', choices: ['experts', 'all-linear'], default: 'experts', description: 'which weights to prune: the routed experts, or every linear layer' },
  // Off by default: it keeps ~1 point more of down_proj's norm but measured no perplexity gain on the
  // bundled model (docs/sparsity.md), at 10× the prune time.
  permute: { kind: 'flag', description: 'permute each MLP\'s intermediate channels before pruning so the pattern keeps more of down_proj (the model computes the same function; slower)' },
  values: { kind: 'choice', choices: ['f32', 'f16'], default: 'f32', description: 'stored dtype of the kept values: f32, or f16 (half the bytes; exact for an F16 model)' },
  calibration: { kind: 'text', arg: 'FILE', description: 'calibration text (UTF-8, or .jsonl of {"text"} lines): prune and permute the MLPs by |w|·‖x‖ (Wanda) with its activation norms instead of |w|' },
  'calibration-tokens': { kind: 'integer', arg: 'N', min: 1, default: 2048, description: 'tokens of --calibration to use (in windows of the model\'s context, at most 256)' },
  quiet,
} as const;

/** The engine's range (and default) of a sampling option as option bounds; an unbounded max is left out. */
function range(r: { min: number; max: number; fallback?: number }): { min: number; max?: number; default?: number } {
  return { min: r.min, ...(Number.isFinite(r.max) ? { max: r.max } : {}), ...(r.fallback !== undefined ? { default: r.fallback } : {}) };
}

interface Command {
  summary: string;
  notes?: string;
  options: OptionTable;
  run: (values: never, io: CliIO) => Promise<void>;
}
/** Ties a command's run function to its own option table's value types. */
const command = <O extends OptionTable>(options: O, summary: string, run: (v: OptionValues<O>, io: CliIO) => Promise<void>, notes?: string): Command => ({ options, summary, run, notes });

/** stderr lines that --quiet drops. */
const logger = (v: { quiet: boolean }, io: CliIO) => (v.quiet ? () => {} : (m: string) => io.err(`${m}\n`));

type LoadingValues = Omit<OptionValues<typeof loading>, 'prefill-chunk' | 'kv-cache' | keyof typeof offloading> & { 'prefill-chunk'?: number; 'kv-cache'?: 'f16' | 'f32' } & Partial<OptionValues<typeof offloading>>;

/** The expert-offload load options of --gpu-budget and its policies. */
function offloadLoad(v: Partial<OptionValues<typeof offloading>>): LoadOptions {
  if (v['gpu-budget'] === undefined) return {};
  // Node knows the host's memory: 'auto' keeps cold experts there when they take at most half of it.
  return { gpuMemoryBudget: Math.floor(v['gpu-budget'] * 2 ** 20), expertSource: v['expert-source'], expertPrefetch: v['expert-prefetch'], expertEviction: v['expert-eviction'], hostMemoryBytes: totalmem() };
}

async function withEngine<T>(v: LoadingValues, io: CliIO, load: LoadOptions, fn: (e: WebMoeEngine) => Promise<T>): Promise<T> {
  const engine = createNodeEngine({ log: logger(v, io) });
  try {
    await engine.load(v.model, { weights: v.weights, device: v.device, threads: v.threads, contextLength: v.context, prefillChunk: v['prefill-chunk'], kvCache: v['kv-cache'], ...offloadLoad(v), ...load });
    return await fn(engine);
  } finally {
    await engine.unload();
  }
}

/** A file named by an option; unreadable is a usage error that names the option. */
function readInput(option: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new ArgumentError(`--${option}: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

async function generate(v: OptionValues<typeof generateOptions>, io: CliIO) {
  const log = logger(v, io);
  await withEngine(v, io, {}, async (engine) => {
    const o = { maxTokens: v['max-tokens'], temperature: v.temperature, topK: v['top-k'], topP: v['top-p'], repetitionPenalty: v['repetition-penalty'], seed: v.seed, speculative: v.speculative, reasoningEffort: v['reasoning-effort'] };
    const it = v.chat ? engine.chat([{ role: 'user', content: v.prompt }], o) : engine.generate(v.prompt, o);
    for (;;) {
      const r = await it.next();
      if (r.done) {
        io.out('\n');
        const sp = r.value.speculation;
        const mtp = sp?.mode === 'mtp' ? `; MTP: ${sp.accepted}/${sp.drafted} drafts accepted (${(sp.acceptanceRate * 100).toFixed(0)}%), ${sp.tokensPerForward.toFixed(2)} tokens/forward` : '';
        log(`[${r.value.tokens.length} tokens, ${r.value.finishReason}; TTFT ${r.value.timeToFirstTokenMs.toFixed(0)} ms, prefill ${r.value.prefillTokPerS.toFixed(1)} tok/s, decode ${r.value.decodeTokPerS.toFixed(1)} tok/s${mtp}]`);
        const off = (await engine.stats()).offload;
        if (off) log(`[expert offload: ${off.capacity} of ${off.experts} experts per MoE layer on the GPU (cold: ${off.source}, prefetch ${off.prefetch}, eviction ${off.eviction}); hit rate ${(100 * off.hitRate).toFixed(1)}%, ${(off.bytesUploadedPerToken / 2 ** 20).toFixed(2)} MiB uploaded per token, ${off.stallsPerToken.toFixed(2)} stalls and ${off.roundTripsPerToken.toFixed(2)} GPU→CPU round trips per token]`);
        for (const call of r.value.toolCalls ?? []) log(`[tool call: ${call.recipient}(${call.arguments})]`);
        break;
      }
      // A reasoning model's thinking (GPT-OSS's analysis channel) goes to stderr: stdout is the answer.
      if (r.value.reasoning) io.err(r.value.reasoning);
      io.out(r.value.text);
    }
  });
}

/** Logits exactly like the reference fixture's files: raw little-endian float32 [S, V]. */
async function logits(v: OptionValues<typeof logitsOptions>, io: CliIO) {
  let spec;
  try {
    spec = JSON.parse(readInput('tokens', v.tokens).toString('utf8'));
  } catch (e) {
    if (e instanceof ArgumentError) throw e;
    throw new ArgumentError(`--tokens: ${v.tokens} is not JSON (${(e as Error).message})`);
  }
  const tokens: number[] = Array.isArray(spec) ? spec : spec?.tokens;
  if (!Array.isArray(tokens) || !tokens.every((t) => Number.isInteger(t) && t >= 0)) throw new ArgumentError('--tokens: expected {"tokens": [ints], "prefill_split"?: P} or a JSON array of ints');
  const split = v.mode === 'prefill' ? tokens.length : v.mode === 'decode' ? 1 : (spec.prefill_split ?? Math.floor(tokens.length / 2));
  // Token ids in, logits out: a weights-only folder without tokenizer.json is enough.
  await withEngine(v, io, { requireTokenizer: false }, async (engine) => {
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
    writeFileSync(v.out, new Uint8Array(out.buffer));
    if (v.routing) writeFileSync(v.routing, JSON.stringify(routing));
    logger(v, io)(`wrote ${tokens.length}×${V} logits to ${v.out}${v.routing ? ` and routing to ${v.routing}` : ''}`);
  });
}

const infoOptions = {
  ...loading,
  load: { kind: 'flag', description: 'also load the model on the GPU and add what was allocated (default: the plan from config.json and the tensor headers only)' },
} as const;

/** A model argument as a source: http(s) URLs (headers by small range reads, no cache), else a folder or file. */
function modelSource(model: string) {
  return /^https?:\/\//.test(model) ? urlModel(model, { cache: false, probeBytes: 64 << 10 }) : localModel(model);
}

/**
 * The memory plan from config.json and the tensor headers (no weight bytes read, no GPU needed), so it
 * works for models no device here can hold; with --load, the model is loaded and the measured figures
 * are added.
 */
async function info(v: OptionValues<typeof infoOptions>, io: CliIO) {
  // A GGUF is described from its headers (no GPU, no tensor data read): its config and tensor types.
  const src = modelSource(v.model);
  const gguf = await findGgufFiles(src);
  if (gguf && !v.load) {
    const sources = await openGgufFiles(src, gguf);
    try {
      io.out(`${JSON.stringify(await ggufSummary(sources), null, 2)}\n`);
    } finally {
      for (const s of sources) await s.close?.();
    }
    return;
  }
  const ckpt = await openCheckpoint(src, { validateTokenizer: false });
  let plan;
  try {
    const cfg = ckpt.config;
    const budget = offloadLoad(v).gpuMemoryBudget;
    plan = planMemory(cfg, ckpt.tensors.values(), { weights: v.weights, contextLength: v.context, prefillTokens: v['prefill-chunk'], kvCache: v['kv-cache'], gpuBudget: budget });
    if (plan.offload) {
      const o = plan.offload, mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
      logger(v, io)(`expert offload at a ${mib(o.budgetBytes)} budget: ${o.capacity} of ${o.experts} routed experts per MoE layer on the GPU (${o.moeLayers} layers, ${mib(o.expertBytes)} per expert: cache ${mib(o.cacheBytes)}, resident ${mib(o.residentBytes)}, plan ${mib(plan.gpuBytes)}; minimum budget ${mib(o.minimumBytes)}; the routed experts take ${mib(o.routedBytes)} in all)`);
    } else if (budget !== undefined) logger(v, io)(`the plan (${(plan.gpuBytes / 2 ** 20).toFixed(1)} MiB) fits the ${(budget / 2 ** 20).toFixed(1)} MiB budget: every expert resident`);
    const prePruned = [...ckpt.tensors.keys()].some((n) => n.endsWith('.sparse_config'));
    // Multi-Token Prediction layers: declared by num_nextn_predict_layers, loaded when the checkpoint holds them.
    const mtp = { declared: cfg.numNextnPredictLayers, inCheckpoint: mtpLayersPresent(cfg, (n) => ckpt.tensors.has(n)) };
    const out: Record<string, unknown> = {
      model: { name: v.model, ...plan.model, prePruned, mtpLayers: mtp },
      // No device is opened: 'auto' is resolved as on a real GPU and no binding limit splits anything.
      assumes: 'a GPU without binding limits (not a CPU fallback adapter, where auto and the KV cache are f32); --load plans and loads on this device',
      plan,
    };
    if (!v.load) { io.out(`${JSON.stringify(out, null, 2)}\n`); return; }
  } finally {
    await ckpt.close();
  }
  await withEngine(v, io, {}, async (engine) => {
    const s = await engine.stats();
    const { memoryPlan, ...model } = engine.info ?? {};
    io.out(`${JSON.stringify({ model, plan: memoryPlan ?? plan, device: s.device, weightBytes: s.weightBytes, gpuBytes: s.gpuBytes, kvBytesPerToken: s.kvBytesPerToken, mhaKvBytesPerToken: s.mhaKvBytesPerToken }, null, 2)}\n`);
  });
}

async function calibrate(v: OptionValues<typeof calibrateOptions>, io: CliIO) {
  const text = readInput('text', v.text).toString('utf8');
  const log = logger(v, io);
  await withEngine(v, io, {}, async (engine) => {
    const ids = engine.codec.encode(text);
    const size = Math.min(v['batch-tokens'], engine.runner.capacity);
    const batches: number[][] = [];
    for (let i = 0; i + 1 < ids.length; i += size) batches.push(ids.slice(i, i + size));
    if (!batches.length) throw new ArgumentError('--text encodes to no tokens');
    log(`calibrating on ${ids.length} tokens in ${batches.length} batches, ${v.steps} steps, γ = ${v.gamma}`);
    const r = await calibrateModel(engine, batches, { steps: v.steps, gamma: v.gamma });
    for (const [layer, before] of r.maxVioBefore) io.out(`layer ${layer}: MaxVio ${before.toFixed(3)} → ${r.maxVioAfter.get(layer)!.toFixed(3)}\n`);
    writeFileSync(v.out, r.file);
    log(`wrote ${v.out}`);
  });
}

/** Mean down_proj kept-norm fraction without and with the channel permutation, per layer. */
function permutationSummary(gains: PrunedCheckpoint['permutation']) {
  if (!gains.length) return {};
  const layers = [...new Set(gains.map((g) => g.layer))].sort((a, b) => a - b);
  const mean = (gs: typeof gains, f: (g: (typeof gains)[0]) => number) => +(gs.reduce((s, g) => s + f(g), 0) / gs.length).toFixed(4);
  return {
    permutedMlps: gains.filter((g) => g.keptAfter > g.keptBefore).length,
    downKeptNormPerLayer: layers.map((layer) => { const gs = gains.filter((g) => g.layer === layer); return { layer, before: mean(gs, (g) => g.keptBefore), after: mean(gs, (g) => g.keptAfter) }; }),
  };
}

async function prune(v: OptionValues<typeof pruneOptions>, io: CliIO) {
  const dir = resolve(v.model), outDir = resolve(v.out);
  if (!existsSync(join(dir, 'config.json'))) throw new ArgumentError(`--model: ${dir} has no config.json (prune reads a local model folder)`);
  if (outDir === dir) throw new ArgumentError('--out must be another folder than --model');
  if (v.sparsity.format === 'auto' && v['target-ratio'] === undefined) throw new ArgumentError('--sparsity auto needs --target-ratio R (packed bytes / dense f32 bytes of the pruned weights, e.g. 0.45)');
  if (v.sparsity.format !== 'auto' && v['target-ratio'] !== undefined) throw new ArgumentError('--target-ratio goes with --sparsity auto only');
  const log = logger(v, io);
  const ckpt = await openCheckpoint(directoryModel(dir));
  try {
    let o: SparsityOption, auto: { label: string; ratio: number } | undefined;
    if (v.sparsity.format === 'auto') {
      const r = autoSparsity([...ckpt.tensors].map(([name, t]) => ({ name, shape: t.shape })), ckpt.config, v.apply, v['target-ratio']);
      o = { ...r.option, permute: v.permute };
      auto = { label: r.label, ratio: +r.selection.ratio.toFixed(4) };
      log(`auto: ${r.label} (${auto.ratio} of the dense f32 bytes; feasible by mask diversity: ${r.selection.feasible.slice(0, 4).map((c) => patternLabel(c)).join(', ')})`);
    } else o = { ...v.sparsity, format: v.sparsity.format, apply: v.apply, permute: v.permute };
    let last = 0;
    let importance: ((name: string) => Float32Array | undefined) | undefined;
    if (v.calibration !== undefined) {
      if (!ckpt.tokenizer) throw new ArgumentError(`--calibration: ${dir} has no tokenizer.json to encode the text with`);
      const raw = readInput('calibration', v.calibration).toString('utf8');
      const text = /\.jsonl$/i.test(v.calibration) ? raw.split('\n').filter((l) => l.trim()).map((l) => String(JSON.parse(l).text ?? '')).join('\n\n') : raw;
      const ids = new TextCodec(ckpt.tokenizer, ckpt.tokenizerConfig, ckpt.config.eosTokenIds).encode(text, false).slice(0, v['calibration-tokens']);
      const win = Math.min(256, ckpt.config.maxPositionEmbeddings);
      const batches: number[][] = [];
      for (let i = 0; i < ids.length; i += win) batches.push(ids.slice(i, i + win));
      if (!batches.length) throw new ArgumentError('--calibration encodes to no tokens');
      log(`calibration: ${ids.length} tokens in ${batches.length} windows (CPU reference forward)`);
      const norms = await activationNorms(ckpt, batches);
      importance = (name) => norms.get(name);
    }
    const r = await writePrunedCheckpoint(ckpt, o, { importance, values: v.values === 'f16' ? 'F16' : 'F32', onTensor: (name, done, total) => { if (done - last >= 64 || done === total) { last = done; log(`  ${done}/${total} ${name}`); } } });
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'model.safetensors'), r.file);
    for (const file of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'generation_config.json']) if (existsSync(join(dir, file))) copyFileSync(join(dir, file), join(outDir, file));
    io.out(`${JSON.stringify({ out: outDir, sparsity: o, ...(auto ? { auto } : {}), importance: importance ? 'calibrated |w|·‖x‖' : '|w|', prunedWeights: r.pruned, keptNormFraction: +r.keptNormFraction.toFixed(4), prunedBytesBefore: r.bytesBefore, prunedBytesAfter: r.bytesAfter, fileBytes: r.file.length, ...permutationSummary(r.permutation) })}\n`);
  } finally {
    await ckpt.close?.();
  }
}

/** A safetensors model → one GGUF file; per-tensor progress on stderr, a JSON summary on stdout. */
async function convert(v: OptionValues<typeof convertOptions>, io: CliIO) {
  if (!/\.gguf$/i.test(v.out)) throw new ArgumentError(`--out must name a .gguf file (webmoe and llama.cpp tell GGUF files by that name), got ${v.out}`);
  const src = localModel(v.model);
  if (await findGgufFiles(src)) throw new ArgumentError(`--model: ${v.model} is a GGUF; convert reads a safetensors model folder`);
  const dir = src.named ? dirname(resolve(v.model)) : resolve(v.model);
  if (!existsSync(join(dir, 'config.json'))) throw new ArgumentError(`--model: ${v.model} has no config.json (convert reads a local safetensors model folder)`);
  const log = logger(v, io);
  const ckpt = await openCheckpoint(src);
  try {
    let last = 0;
    const t0 = performance.now();
    // Written as it is converted (host memory ≈ one tensor), to a side file renamed at the end: an
    // error or Ctrl-C never leaves a truncated .gguf under the asked name, nor replaces an older one.
    const out = resolve(v.out), partial = `${out}.partial`;
    mkdirSync(dirname(out), { recursive: true });
    const fh = await open(partial, 'w');
    let r;
    try {
      r = await streamCheckpointToGguf(ckpt, v.quant, async (b) => { await fh.write(b); }, { metadata: [['general.name', kv.str(basename(dir))]], onTensor: (name, done, total) => { if (done - last >= 64 || done === total) { last = done; log(`  ${done}/${total} ${name}`); } } });
      await fh.close();
      renameSync(partial, out);
    } catch (e) {
      await fh.close().catch(() => {});
      rmSync(partial, { force: true });
      throw e;
    }
    log(`wrote ${v.out} (${r.fileBytes} bytes, ${r.tensors} tensors) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    io.out(`${JSON.stringify({ out, to: v.to, quant: v.quant, fileBytes: r.fileBytes, tensors: r.tensors, tensorTypes: r.types })}\n`);
  } finally {
    await ckpt.close?.();
  }
}

/** Serves until SIGINT/SIGTERM; the URL goes to stdout once it listens. */
async function serve(v: OptionValues<typeof serveOptions>, io: CliIO) {
  const log = logger(v, io);
  const engine = createNodeEngine({ log });
  const server = await serveModel({ engine, model: v.model, host: v.host, port: v.port, modelId: v.name, maxQueue: v['max-queue'], load: { weights: v.weights, device: v.device, threads: v.threads, contextLength: v.context, prefillChunk: v['prefill-chunk'], kvCache: v['kv-cache'], ...offloadLoad(v) }, log });
  io.out(`webmoe: OpenAI-compatible API at ${server.url}/v1 (loading ${v.model})\n`);
  try {
    const info = await server.loaded;
    log(`webmoe: model loaded (${info.name})`);
    await new Promise<void>((resolve) => { process.once('SIGINT', resolve); process.once('SIGTERM', resolve); });
  } finally {
    await server.close();
    await engine.unload();
  }
}

const COMMANDS: Record<string, Command> = {
  generate: command(generateOptions, 'Streams a completion of the prompt to stdout; the token count and speed go to stderr.', generate),
  logits: command(logitsOptions, "Writes the logits of a token sequence in the reference fixture's layout.", logits),
  info: command(infoOptions, 'Prints the memory plan as JSON (weights by format and role, KV cache, activations, largest binding, gpuBytes) from config.json and the tensor headers (a GGUF: its config and tensor types from its headers); --load adds what a load allocates.', info,
    'Works for a folder or a URL (Hugging Face resolve/main/ URLs included) without downloading weights, also for models this device cannot hold.'),
  calibrate: command(calibrateOptions, "Balances the expert load on real text (DeepSeek-V3's auxiliary-loss-free bias update) and writes the new gate biases.", calibrate,
    'Load the result over the checkpoint with LoadOptions.overlay.'),
  prune: command(pruneOptions, 'Writes a pre-pruned copy of a local model; it loads on the sparse kernels by default.', prune),
  serve: command(serveOptions, 'Serves the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models).', serve,
    'Requests get HTTP 503 until the model has loaded; one generation runs at a time, the others queue. Stop with Ctrl-C.'),
  convert: command(convertOptions, "Writes a safetensors model as a GGUF file in llama.cpp's deepseek2 layout.", convert,
    'Load the result with --model FILE.gguf. The whole file is built in memory. Tokenizer keys are not written yet (token ids / logits only).'),
};
const COMMAND_NAMES = Object.keys(COMMANDS);

/** Options of the bare `webmoe` (it also takes --help). */
const GLOBAL_OPTIONS = { version: { kind: 'flag', description: 'print the version' } } as const;

function usage(): string {
  const width = Math.max(...COMMAND_NAMES.map((n) => n.length)) + 2;
  return [
    'usage: webmoe COMMAND [options]',
    '',
    'commands:',
    ...COMMAND_NAMES.map((n) => `  ${n.padEnd(width)}${COMMANDS[n].summary}\n  ${''.padEnd(width)}${synopsis(n, COMMANDS[n].options)}`),
    '',
    '`webmoe help COMMAND` or `webmoe COMMAND --help` lists its options; `webmoe --version` prints the version.',
  ].join('\n');
}

/** The package version, from the package.json next to src/ (tsx) or dist/ (built). */
function version(): string {
  const file = join(dirname(fileURLToPath(import.meta.url)), '..', 'package.json');
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

function findCommand(name: string): Command {
  if (Object.hasOwn(COMMANDS, name)) return COMMANDS[name];
  const guess = closest(name, COMMAND_NAMES);
  throw new ArgumentError(guess ? `unknown command ${name}; did you mean ${guess}?` : `unknown command ${name}; commands: ${COMMAND_NAMES.join(', ')}`);
}

const helpOf = (name: string) => { const c = findCommand(name); return commandHelp(name, c.summary, c.options, c.notes); };

/** Runs the CLI; returns the exit code (0 ok, 1 runtime error, 2 bad arguments). */
export async function main(argv: string[], io: CliIO = defaultIO): Promise<number> {
  try {
    const [first, ...rest] = argv;
    if (first === undefined) { io.err(`${usage()}\n`); return 2; }
    if (first === 'help') {
      if (rest.length > 1) throw new ArgumentError(`help takes one command name, got ${rest.join(' ')}`);
      io.out(`${rest.length ? helpOf(rest[0]) : usage()}\n`);
      return 0;
    }
    if (first.startsWith('-')) {
      const parsed = parseOptions('', GLOBAL_OPTIONS, argv);
      if (parsed.help) io.out(`${usage()}\n`);
      else if (parsed.values.version) io.out(`${version()}\n`);
      else { io.err(`${usage()}\n`); return 2; } // only `--`
      return 0;
    }
    const cmd = findCommand(first);
    const parsed = parseOptions(first, cmd.options, rest);
    if (parsed.help) { io.out(`${helpOf(first)}\n`); return 0; }
    await cmd.run(parsed.values as never, io);
    return 0;
  } catch (e) {
    if (e instanceof ArgumentError) { io.err(`webmoe: ${e.message}\n`); return 2; }
    if (e instanceof WebMoeError) { io.err(`webmoe: ${e.name} (${e.code}): ${e.message}\n`); return 1; }
    io.err(`webmoe: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}
