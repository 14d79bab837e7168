/**
 * Whole-model peers on the bundled model (public/models/webmoe-tiny), in the same page.
 *
 * 1. onnxruntime-web on the model as ONNX prefill + decode graphs (bench/onnx-model.ts: emitted by the
 *    model's own forward pass, f32 weights, the KV cache as past/present graph inputs/outputs), on its
 *    WebGPU EP (its own GPUDevice on the same adapter, no CPU fallback; the cache stays in GPU tensors
 *    between steps) and on its wasm EP (1 thread). Ours: the GPU runner with f32 weights. Before timing,
 *    the last-row prefill logits are compared with ours and both decode greedily (16 tokens for
 *    each of the PROMPTS; quick: 8 tokens, 2 prompts): the check is how many leading tokens agree. Timing: both sides with
 *    timeCalls (src/bench/peers.ts), one call = one forward of the prompt (prefill) or of one token at
 *    position P (decode, the cache truncated back to P between calls) with its last-row logits read back
 *    to the CPU, the same warm-up and iterations.
 *
 * 2. Whole-model peer: the bundled model (public/models/webmoe-tiny) as a GGUF Q8_0 file written by our
 * converter (src/model/gguf-convert.ts), run in the same page by webmoe (WebGPU, 'gguf' storage:
 * the Q8_0 blocks on the GPU) and by llama.cpp's WebAssembly build through @wllama/wllama (CPU, one
 * thread), with the same prompt and greedy decoding. Rows: prefill and decode milliseconds per token
 * (each runtime's own clock: webmoe's generate() result, llama.cpp's prompt / predicted timings, after
 * one warm-up generation of the same prompt); check: how many leading greedy tokens agree.
 *
 * Quick runs too (about 25 s on SwiftShader: the conversion, a 10 MB wasm module, 16 tokens each).
 */
import type { BenchContext, BenchSuite } from '../types';
import { createEngine, type WebMoeEngine } from '../../engine/engine';
import { memoryModel, urlModel } from '../../loader/model-source';
import { openCheckpoint } from '../../model/checkpoint';
import { checkpointToGguf } from '../../model/gguf-convert';
import type * as Ort from 'onnxruntime-web';
import { gpuLoader } from '../../engine/engine';
import { deepseekOnnxModels, onnxStepInputs } from '../onnx-model';
import { loadOrt, timeCalls, PEER_NAMES, type PeerProvider } from '../peers';
import type { ModelRunner } from '../../model/runner';

const PEER = 'llama.cpp wasm (wllama, 1 thread)';
const OP = 'whole model, GGUF Q8_0, greedy';

async function oursGreedy(ctx: BenchContext, gguf: Uint8Array, prompt: string, maxTokens: number) {
  const engine: WebMoeEngine = createEngine({}, { acquire: async () => ctx.gpu, resolve: () => memoryModel({}) });
  try {
    await engine.load(memoryModel({ 'webmoe-tiny-q8_0.gguf': gguf }), { weights: 'gguf', contextLength: 256 });
    for await (const _ of engine.generate(prompt, { temperature: 0, maxTokens: 2, stopAtEos: false })) void _;
    const it = engine.generate(prompt, { temperature: 0, maxTokens, stopAtEos: false });
    const texts: string[] = [];
    let r;
    for (;;) {
      r = await it.next();
      if (r.done) break;
      texts.push(r.value.text);
    }
    return { texts, prefillTokPerS: r.value.prefillTokPerS, decodeTokPerS: r.value.decodeTokPerS };
  } finally {
    await engine.unload();
  }
}

async function peerGreedy(ctx: BenchContext, gguf: Uint8Array, prompt: string, maxTokens: number) {
  const [{ Wllama }, wasm] = await Promise.all([import('@wllama/wllama'), import('@wllama/wllama/esm/wasm/wllama.wasm?url')]);
  const wllama = new Wllama({ default: new URL(wasm.default, ctx.baseUrl ?? (globalThis as any).location?.href).href }, { suppressNativeLog: true, logger: { debug: () => {}, log: () => {}, warn: () => {}, error: (...a: unknown[]) => console.error(...a) } as any });
  try {
    await wllama.loadModel([new Blob([gguf as BlobPart])], { n_ctx: 256, n_threads: 1 });
    await wllama.createCompletion({ prompt, max_tokens: 2, temperature: 0 });
    const r = await wllama.createCompletion({ prompt, max_tokens: maxTokens, temperature: 0 });
    const t = r.timings;
    if (!t) throw new Error('wllama returned no timings');
    return { text: r.choices[0]?.text ?? '', prefillTokPerS: t.prompt_per_second, decodeTokPerS: t.predicted_per_second, predicted: t.predicted_n };
  } finally {
    await wllama.exit().catch(() => {});
  }
}

const ONNX_OP = 'whole model, ONNX f32, KV cache, greedy';
const PROMPTS = [
  'Once upon a time, there was a little girl who loved to play in the park with her friends.',
  'Tom had a big red ball. One day, he',
  'The sun was shining and the birds were singing.',
];

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/** Our greedy tokens by forward + argmax on the host (the same loop the peer runs), and the prefill logits. */
async function oursTokens(runner: ModelRunner, ids: number[], n: number): Promise<{ tokens: number[]; logits: Float32Array }> {
  runner.truncate(0);
  const logits = await runner.logits(ids, false);
  const tokens = [argmax(logits)];
  while (tokens.length < n) tokens.push(argmax(await runner.logits([tokens[tokens.length - 1]], false)));
  return { tokens, logits };
}

/** One ONNX model pair on one EP: runs a forward with the cache `past` (null: prefill) and returns logits and the presents. */
class OnnxModelPeer {
  private constructor(private ort: typeof Ort, readonly provider: PeerProvider, private prefill: Ort.InferenceSession, private decode: Ort.InferenceSession) {}

  static async create(ort: typeof Ort, provider: PeerProvider, models: { prefill: Uint8Array; decode: Uint8Array }, layers: number): Promise<OnnxModelPeer> {
    const presents = Array.from({ length: layers }, (_, l) => [`present_key.${l}`, `present_value.${l}`]).flat();
    const opts: Ort.InferenceSession.SessionOptions = provider === 'wasm'
      ? { executionProviders: ['wasm'], graphOptimizationLevel: 'all' }
      : {
        executionProviders: ['webgpu'], graphOptimizationLevel: 'all',
        // Every op on the WebGPU EP (none silently on the CPU under the ort-webgpu name); the cache stays on the GPU.
        extra: { session: { disable_cpu_ep_fallback: '1' } },
        preferredOutputLocation: Object.fromEntries([['logits', 'cpu'], ...presents.map((p) => [p, 'gpu-buffer'])]),
      };
    const prefill = await ort.InferenceSession.create(models.prefill, opts);
    try {
      return new OnnxModelPeer(ort, provider, prefill, await ort.InferenceSession.create(models.decode, opts));
    } catch (e) {
      await prefill.release();
      throw e;
    }
  }

  async run(tokens: number[], past: { length: number; tensors: Record<string, Ort.Tensor> } | null) {
    const at = past?.length ?? 0;
    const inp = onnxStepInputs(tokens, at);
    const feeds: Record<string, Ort.Tensor> = {
      input_ids: new this.ort.Tensor('int64', inp.ids, [tokens.length]),
      positions: new this.ort.Tensor('float32', inp.positions, [tokens.length]),
      attention_bias: new this.ort.Tensor('float32', inp.bias, [tokens.length, inp.total]),
    };
    for (const [k, v] of Object.entries(past?.tensors ?? {})) feeds[k.replace('present', 'past')] = v;
    const out = await (past ? this.decode : this.prefill).run(feeds);
    const logits = (await out.logits.getData()) as Float32Array;
    const tensors = Object.fromEntries(Object.entries(out).filter(([k]) => k.startsWith('present_')));
    return { logits, cache: { length: inp.total, tensors } };
  }

  static dispose(cache: { tensors: Record<string, Ort.Tensor> } | null) {
    for (const t of Object.values(cache?.tensors ?? {})) if (t.location === 'gpu-buffer') t.dispose();
  }

  async greedy(ids: number[], n: number): Promise<{ tokens: number[]; logits: Float32Array }> {
    let r = await this.run(ids, null);
    const first = r.logits;
    const tokens = [argmax(r.logits)];
    while (tokens.length < n) {
      const next = await this.run([tokens[tokens.length - 1]], r.cache);
      OnnxModelPeer.dispose(r.cache);
      r = next;
      tokens.push(argmax(r.logits));
    }
    OnnxModelPeer.dispose(r.cache);
    return { tokens, logits: first };
  }

  async release() {
    await this.prefill.release();
    await this.decode.release();
  }
}

/** The ONNX whole-model peer on each EP, against our GPU runner with f32 weights (see the file comment). */
async function onnxPeers(ctx: BenchContext, url: string) {
  const ort = await loadOrt();
  ctx.progress('model-peers: building the bundled model as ONNX graphs');
  const ck = await openCheckpoint(urlModel(url, { cache: false }));
  let models: Awaited<ReturnType<typeof deepseekOnnxModels>>;
  try { models = await deepseekOnnxModels(ck); } finally { await ck.close(); }
  ctx.progress('model-peers: webmoe (WebGPU, f32 weights)');
  const loaded = await gpuLoader({ acquire: async () => ctx.gpu, resolve: () => memoryModel({}) }, {})(urlModel(url, { cache: false }), { weights: 'f32', contextLength: 256 });
  const { runner, codec } = loaded;
  // Quick runs: 2 prompts × 8 tokens (ORT's WebGPU EP takes about a second per decode step on SwiftShader).
  const n = ctx.quick ? 8 : 16;
  const protocol = { warmup: ctx.quick ? 1 : 2, iters: ctx.quick ? 3 : 5, repeat: 1 };
  try {
    if (!codec) throw new Error('the bundled model loaded without its tokenizer');
    const prompts = PROMPTS.slice(0, ctx.quick ? 2 : PROMPTS.length).map((p) => codec.encode(p));
    const ours = [];
    for (const ids of prompts) ours.push(await oursTokens(runner, ids, n));
    for (const provider of ['webgpu', 'wasm'] as const) {
      const name = PEER_NAMES[provider];
      let peer: OnnxModelPeer | null = null;
      try {
        ctx.progress(`model-peers: ${name} whole model`);
        peer = await OnnxModelPeer.create(ort, provider, models, models.cfg.numLayers);
        // Checks before timing: the prefill logits of the first prompt, then greedy agreement on every prompt.
        const agree: number[] = [];
        let maxAbsDiff = NaN;
        for (const [i, ids] of prompts.entries()) {
          const got = await peer.greedy(ids, n);
          if (i === 0) {
            maxAbsDiff = got.logits.length === ours[0].logits.length ? 0 : NaN;
            for (let j = 0; j < got.logits.length && !Number.isNaN(maxAbsDiff); j++) {
              const d = Math.abs(got.logits[j] - ours[0].logits[j]);
              maxAbsDiff = Number.isFinite(d) ? Math.max(maxAbsDiff, d) : NaN;
            }
          }
          let k = 0;
          while (k < n && got.tokens[k] === ours[i].tokens[k]) k++;
          agree.push(k);
        }
        const shape = `${prompts.length} prompts of ${prompts.map((p) => p.length).join('/')} tokens, ${n} greedy tokens each`;
        // f32 on both sides: logits (magnitude ~10) differ by summation order only.
        const tol = 1e-2;
        ctx.peerCheck({ peer: name, op: ONNX_OP, shape: `prefill logits [1, ${models.cfg.vocabSize}], prompt 1 (${prompts[0].length} tokens)`, maxAbsDiff, tolerance: tol, ok: maxAbsDiff <= tol });
        const disagree = agree.reduce((a, k) => a + (n - k), 0);
        ctx.peerCheck({
          peer: name, op: ONNX_OP, shape, maxAbsDiff: disagree, tolerance: 0, ok: disagree === 0,
          note: `leading greedy tokens agreeing with webmoe per prompt: ${agree.map((k) => `${k}/${n}`).join(', ')} (maxAbsDiff = tokens not agreeing)`,
        });
        // Timing, same protocol both sides: prefill of prompt 1, then decode of one token at position P.
        const ids = prompts[0], P = ids.length, next = ours[0].tokens[0];
        const io = provider === 'webgpu' ? 'peer KV cache in GPU tensors' : 'peer on the CPU (wasm EP, 1 thread), KV cache in wasm memory';
        const timing = `wall; 1 forward per call with its last-row logits read back and awaited (ours runner.logits, the peer session.run), token ids uploaded per call; ours KV cache on the GPU, ${io}; warm-up ${protocol.warmup}, median of ${protocol.iters}`;
        const oursPrefill = await timeCalls(async () => { runner.truncate(0); await runner.logits(ids, false); }, async () => {}, protocol);
        const peerPrefill = await timeCalls(async () => OnnxModelPeer.dispose((await peer!.run(ids, null)).cache), async () => {}, protocol);
        runner.truncate(0);
        await runner.logits(ids, false);
        const oursDecode = await timeCalls(async () => { runner.truncate(P); await runner.logits([next], false); }, async () => {}, protocol);
        const cache = (await peer.run(ids, null)).cache;
        const peerDecode = await timeCalls(async () => OnnxModelPeer.dispose((await peer!.run([next], cache)).cache), async () => {}, protocol);
        OnnxModelPeer.dispose(cache);
        const agreeNote = `greedy agreement ${agree.map((k) => `${k}/${n}`).join(', ')}`;
        ctx.peer({ suite: 'model-peers', name: `webmoe-tiny ONNX prefill (ms per prompt token)`, peer: name, op: ONNX_OP, oursMs: oursPrefill / P, peerMs: peerPrefill / P, shape: `f32, ${P}-token prompt`, symmetric: true, timing, note: `tok/s: ours ${(1000 * P / oursPrefill).toFixed(1)}, peer ${(1000 * P / peerPrefill).toFixed(1)}; ${agreeNote}` });
        ctx.peer({ suite: 'model-peers', name: `webmoe-tiny ONNX decode (ms per token)`, peer: name, op: ONNX_OP, oursMs: oursDecode, peerMs: peerDecode, shape: `f32, 1 token at position ${P}`, symmetric: true, timing, note: `tok/s: ours ${(1000 / oursDecode).toFixed(1)}, peer ${(1000 / peerDecode).toFixed(1)}; ${agreeNote}` });
      } catch (e) {
        ctx.error(`${name} whole model (ONNX): ${(e as Error).message}`);
      } finally {
        await peer?.release().catch(() => {});
      }
    }
  } finally {
    loaded.runner.destroy();
  }
}

export const modelPeersSuite: BenchSuite = {
  name: 'model-peers',
  order: 96,
  nodeOk: false,
  async run(ctx) {
    if (!ctx.peers) return;
    if (!ctx.baseUrl) { ctx.error('model-peers: the bundled model needs the URL public/ is served at (ctx.baseUrl)'); return; }
    const url = new URL('models/webmoe-tiny/', ctx.baseUrl).href;
    await onnxPeers(ctx, url);
    ctx.progress('model-peers: writing the bundled model as GGUF Q8_0');
    const ck = await openCheckpoint(urlModel(url, { cache: false }));
    let gguf: Uint8Array;
    try { gguf = (await checkpointToGguf(ck, 'q8_0')).file; } finally { await ck.close(); }
    const prompt = 'Once upon a time, there was a little girl who loved to play in the park with her friends.';
    const maxTokens = ctx.quick ? 16 : 32;
    ctx.progress('model-peers: webmoe (WebGPU, gguf storage)');
    const ours = await oursGreedy(ctx, gguf, prompt, maxTokens);
    ctx.progress(`model-peers: ${PEER}`);
    const peer = await peerGreedy(ctx, gguf, prompt, maxTokens);
    // Agreement: our tokens whose text lies wholly inside the common prefix of the two continuations.
    const oursText = ours.texts.join('');
    let common = 0;
    while (common < oursText.length && common < peer.text.length && oursText[common] === peer.text[common]) common++;
    let agree = 0, at = 0;
    for (const t of ours.texts) { at += t.length; if (at > common) break; agree++; }
    const need = Math.min(8, maxTokens);
    ctx.peerCheck({
      peer: PEER, op: OP, shape: `prompt ${JSON.stringify(prompt.slice(0, 24))}…, ${maxTokens} greedy tokens`,
      maxAbsDiff: maxTokens - agree, tolerance: maxTokens - need, ok: agree >= need,
      note: `${agree} of ${maxTokens} leading greedy tokens agree (maxAbsDiff = tokens not agreeing)`,
    });
    const timing = 'wall; each runtime\'s own prefill / decode clock for one generate of the same prompt after a warm-up generation; ours WebGPU, peer wasm CPU';
    for (const [name, o, p] of [['prefill (ms per prompt token)', ours.prefillTokPerS, peer.prefillTokPerS], ['decode (ms per token)', ours.decodeTokPerS, peer.decodeTokPerS]] as const) {
      ctx.peer({ suite: 'model-peers', name: `webmoe-tiny ${name}`, peer: PEER, op: OP, oursMs: 1000 / o, peerMs: 1000 / p, shape: `GGUF Q8_0, ${maxTokens} tokens`, symmetric: true, timing, note: `tok/s: ours ${o.toFixed(1)}, peer ${p.toFixed(1)}; greedy agreement ${agree}/${maxTokens}` });
    }
  },
};
