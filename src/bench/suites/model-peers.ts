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
 * thread), with the same prompt and greedy decoding. Both sides are timed the same way (timeGeneration):
 * timeCalls' wall clock around whole generate calls from an empty KV cache (prompt cache off on both),
 * a 1-token call (time to first token → the prefill row, per prompt token) and an n-token call
 * (decode row: the difference over n − 1 tokens), the same warm-up and iterations. Check: how many
 * leading greedy tokens agree (one untimed n-token call per side, after the timed ones).
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

/** What one whole generate call returned: the text per generated token (ours) or the whole text (peer). */
interface Generation { texts: string[]; promptTokens: number; generated: number; /** the runtime's own prefill / decode clock (tok/s), for the note */ own: { prefillTokPerS: number; decodeTokPerS: number } }

/**
 * Our side of the GGUF peer: the engine with 'gguf' storage. generate(n) is one whole greedy generate
 * call of n tokens from an empty KV cache (the engine's cross-turn prefix reuse is cleared first, as
 * the peer's prompt cache is off).
 */
async function oursGguf(ctx: BenchContext, gguf: Uint8Array, prompt: string) {
  const engine: WebMoeEngine = createEngine({}, { acquire: async () => ctx.gpu, resolve: () => memoryModel({}) });
  await engine.load(memoryModel({ 'webmoe-tiny-q8_0.gguf': gguf }), { weights: 'gguf', contextLength: 256 });
  return {
    async generate(n: number): Promise<Generation> {
      // withRunner forgets the cached prefix (cachedIds), so the prompt is prefilled in full.
      await engine.withRunner(async () => {});
      const it = engine.generate(prompt, { temperature: 0, maxTokens: n, stopAtEos: false });
      const texts: string[] = [];
      for (;;) {
        const r = await it.next();
        if (r.done) {
          if (r.value.reusedTokens !== 0) throw new Error(`webmoe reused ${r.value.reusedTokens} cached prompt tokens`);
          return { texts, promptTokens: r.value.promptTokens, generated: r.value.completionTokens, own: { prefillTokPerS: r.value.prefillTokPerS, decodeTokPerS: r.value.decodeTokPerS } };
        }
        texts.push(r.value.text);
      }
    },
    close: () => engine.unload(),
  };
}

/** The peer's side: llama.cpp (wllama, 1 thread); generate(n) is one createCompletion of n greedy tokens, prompt cache off. */
async function peerGguf(ctx: BenchContext, gguf: Uint8Array, prompt: string) {
  const [{ Wllama }, wasm] = await Promise.all([import('@wllama/wllama'), import('@wllama/wllama/esm/wasm/wllama.wasm?url')]);
  const wllama = new Wllama({ default: new URL(wasm.default, ctx.baseUrl ?? (globalThis as any).location?.href).href }, { suppressNativeLog: true, logger: { debug: () => {}, log: () => {}, warn: () => {}, error: (...a: unknown[]) => console.error(...a) } as any });
  try {
    await wllama.loadModel([new Blob([gguf as BlobPart])], { n_ctx: 256, n_threads: 1 });
  } catch (e) {
    await wllama.exit().catch(() => {});
    throw e;
  }
  return {
    async generate(n: number): Promise<Generation> {
      // cache_prompt: false (llama-server's field, passed through): every call prefills the whole prompt;
      // ignore_eos: n tokens as ours (stopAtEos: false).
      const r = await wllama.createCompletion({ prompt, max_tokens: n, temperature: 0, ignore_eos: true, cache_prompt: false } as Parameters<typeof wllama.createCompletion>[0] & { stream?: false });
      const t = r.timings;
      if (!t) throw new Error('wllama returned no timings');
      if (t.cache_n !== 0) throw new Error(`wllama reused ${t.cache_n} cached prompt tokens (cache_prompt: false was ignored)`);
      return { texts: [r.choices[0]?.text ?? ''], promptTokens: t.prompt_n, generated: t.predicted_n, own: { prefillTokPerS: t.prompt_per_second, decodeTokPerS: t.predicted_per_second } };
    },
    close: () => wllama.exit().catch(() => {}),
  };
}

/**
 * Times one side of the GGUF peer (the same for both): timeCalls around whole generate calls, first
 * of 1 token (prefill + the first token: time to first token), then of n tokens; decode per token =
 * (t(n) − t(1)) / (n − 1). After timing, one untimed n-token call gives the greedy text (and the
 * runtime's own clock, quoted in the note for reference).
 */
async function timeGeneration(side: { generate(n: number): Promise<Generation> }, n: number, protocol: { warmup: number; iters: number; repeat: number }) {
  const generate = async (k: number) => {
    const g = await side.generate(k);
    if (g.generated !== k) throw new Error(`${g.generated} of ${k} tokens generated`);
    return g;
  };
  const first = await timeCalls(() => generate(1), async () => {}, protocol);
  const whole = await timeCalls(() => generate(n), async () => {}, protocol);
  const greedy = await generate(n);
  return { greedy, firstMs: first, decodeMs: (whole - first) / (n - 1) };
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
    // Medians of 5 even in quick runs: decode is a difference of two medians, noisy on a shared machine.
    const protocol = { warmup: 1, iters: ctx.quick ? 5 : 9, repeat: 1 };
    ctx.progress('model-peers: webmoe (WebGPU, gguf storage)');
    const oursSide = await oursGguf(ctx, gguf, prompt);
    let ours: Awaited<ReturnType<typeof timeGeneration>>;
    try { ours = await timeGeneration(oursSide, maxTokens, protocol); } finally { await oursSide.close(); }
    ctx.progress(`model-peers: ${PEER}`);
    const peerSide = await peerGguf(ctx, gguf, prompt);
    let peer: Awaited<ReturnType<typeof timeGeneration>>;
    try { peer = await timeGeneration(peerSide, maxTokens, protocol); } finally { await peerSide.close(); }
    // Agreement: our tokens whose text lies wholly inside the common prefix of the two continuations.
    const oursText = ours.greedy.texts.join(''), peerText = peer.greedy.texts.join('');
    let common = 0;
    while (common < oursText.length && common < peerText.length && oursText[common] === peerText[common]) common++;
    let agree = 0, at = 0;
    for (const t of ours.greedy.texts) { at += t.length; if (at > common) break; agree++; }
    const need = Math.min(8, maxTokens);
    ctx.peerCheck({
      peer: PEER, op: OP, shape: `prompt ${JSON.stringify(prompt.slice(0, 24))}…, ${maxTokens} greedy tokens`,
      maxAbsDiff: maxTokens - agree, tolerance: maxTokens - need, ok: agree >= need,
      note: `${agree} of ${maxTokens} leading greedy tokens agree (maxAbsDiff = tokens not agreeing)`,
    });
    const P = ours.greedy.promptTokens;
    if (peer.greedy.promptTokens !== P) ctx.error(`model-peers: the prompt is ${P} tokens for webmoe, ${peer.greedy.promptTokens} for llama.cpp`);
    const timing = `wall; timeCalls around whole generate calls of the same prompt, greedy, from an empty KV cache (prompt cache off on both sides): prefill = a 1-token generate (time to first token) ÷ prompt tokens, decode = (a ${maxTokens}-token generate − the 1-token one) ÷ ${maxTokens - 1}; ours webmoe generate() on WebGPU, peer wllama createCompletion() on the wasm CPU; warm-up ${protocol.warmup}, median of ${protocol.iters}`;
    const rows = [
      ['prefill (ms per prompt token)', ours.firstMs / P, peer.firstMs / P, `GGUF Q8_0, ${P}-token prompt, time to first token`],
      ['decode (ms per token)', ours.decodeMs, peer.decodeMs, `GGUF Q8_0, tokens 2–${maxTokens} of a ${maxTokens}-token generate`],
    ] as const;
    const own = (g: Generation) => `prefill ${g.own.prefillTokPerS.toFixed(1)}, decode ${g.own.decodeTokPerS.toFixed(1)} tok/s`;
    const ownNote = `webmoe ${own(ours.greedy)}, llama.cpp ${own(peer.greedy)}`;
    for (const [name, o, p, shape] of rows) {
      ctx.peer({ suite: 'model-peers', name: `webmoe-tiny ${name}`, peer: PEER, op: OP, oursMs: o, peerMs: p, shape, symmetric: true, timing, note: `tok/s: ours ${(1000 / o).toFixed(1)}, peer ${(1000 / p).toFixed(1)}; greedy agreement ${agree}/${maxTokens}; for reference, each runtime's own prefill / decode clock in an untimed ${maxTokens}-token call after the timed ones (not comparable: each stops its clock elsewhere): ${ownNote}` });
    }
  },
};
