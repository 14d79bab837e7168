/**
 * Whole-model peer: the bundled model (public/models/webmoe-tiny) as a GGUF Q8_0 file written by our
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

export const modelPeersSuite: BenchSuite = {
  name: 'model-peers',
  order: 96,
  nodeOk: false,
  async run(ctx) {
    if (!ctx.peers) return;
    if (!ctx.baseUrl) { ctx.error('model-peers: the bundled model needs the URL public/ is served at (ctx.baseUrl)'); return; }
    const url = new URL('models/webmoe-tiny/', ctx.baseUrl).href;
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
