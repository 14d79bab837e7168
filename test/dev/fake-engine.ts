/**
 * DEV ONLY: a fake engine with the Engine interface, for working on the demo's UI without a GPU or a
 * model (`npx vite --port 5199` then open /test/dev/demo-fake.html). Never imported by the page.
 */
import type { DemoEngine } from '../../src/pages/demo/app';
import type { EngineStats, GenerateOptions, GenerationChunk, GenerationResult, LoadOptions, ModelInfo } from '../../src/engine/types';
import { WebMoeError } from '../../src/errors';
import { openAIApi } from '../../src/engine/openai';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const WORDS = 'the jury said that it had been a very good year for the county and the city of Atlanta where the election was held on Friday'.split(' ');

export function fakeEngine(): DemoEngine {
  let info: ModelInfo | null = null;
  let aborted = false;
  let cached = 0;
  const E = 16, K = 4, layers = [1, 2, 3];
  const load = new Map(layers.map((l) => [l, new Array(E).fill(0)]));
  let last = { decode: 0, ttft: 0, prefill: 0 };
  async function* run(n: number, o: GenerateOptions): AsyncGenerator<GenerationChunk, GenerationResult> {
    aborted = false;
    const t0 = performance.now();
    await sleep(250);
    const t1 = performance.now();
    const tokens: number[] = [];
    let text = '';
    for (let i = 0; i < (o.maxTokens ?? 64) && !aborted; i++) {
      await sleep(40);
      const w = (i ? ' ' : ' ') + WORDS[(i * 7 + n) % WORDS.length];
      const experts: Record<number, number[]> = {};
      for (const l of layers) {
        const s = new Set<number>();
        while (s.size < K) s.add(Math.floor((Math.random() ** (1 + l * 0.5)) * E));
        experts[l] = [...s];
        for (const e of s) load.get(l)![e]++;
      }
      cached++;
      tokens.push(i);
      text += w;
      yield { token: i, text: w, index: i, ...(o.routing ? { experts } : {}) };
    }
    const t2 = performance.now();
    last = { decode: (tokens.length - 1) / ((t2 - t1) / 1000), ttft: t1 - t0, prefill: n / ((t1 - t0) / 1000) };
    return { text, tokens, completionTokens: tokens.length, promptTokens: n, reusedTokens: 0, finishReason: aborted ? 'aborted' : 'length', timeToFirstTokenMs: last.ttft, prefillTokPerS: last.prefill, decodeTokPerS: last.decode };
  }
  const api = openAIApi({
    generate(prompt, o = {}) { cached += prompt.split(' ').length; return run(prompt.split(' ').length, o); },
    chat(messages, o = {}) { cached += 10 * messages.length; return run(10 * messages.length, o); },
    modelId: () => info?.name ?? '',
  });
  return {
    async load(model, o: LoadOptions = {}) {
      const total = 26_000_000;
      for (const phase of ['config', 'index', 'headers'] as const) {
        o.onProgress?.({ phase, bytesLoaded: 0, bytesTotal: 0, tensorsLoaded: 0, tensorsTotal: 0 });
        await sleep(120);
      }
      if (typeof model === 'string' && model.includes('missing')) throw new WebMoeError('NOT_FOUND', `${model}config.json: HTTP 404 Not Found`);
      for (let i = 0; i <= 20; i++) {
        o.onProgress?.({ phase: 'weights', bytesLoaded: (total * i) / 20, bytesTotal: total, tensorsLoaded: i * 6, tensorsTotal: 120 });
        await sleep(40);
      }
      const sp = o.sparsity;
      info = {
        name: typeof model === 'string' ? model : 'local', modelType: 'deepseek_v3', family: 'DeepSeek-V3', layers: 4, hiddenSize: 256, vocabSize: 3072, experts: E, expertsPerToken: K,
        moeLayers: layers, parameters: 13_100_000, activeParameters: 5_300_000, weightStorage: 'f16', sparsity: sp ? (sp.format === '2:4' ? '2:4 (experts)' : '64:2:8 (experts)') : 'dense', contextLength: 512, chatTemplate: false,
      };
      cached = 0;
      return info;
    },
    generate(prompt, o = {}) { cached += prompt.split(' ').length; return run(prompt.split(' ').length, o); },
    chat: api.chat,
    completions: api.completions,
    abort() { aborted = true; },
    async stats(): Promise<EngineStats> {
      const kvpt = 4 * (32 + 8) * 4, mha = 4 * 4 * (24 + 16) * 4 * 4;
      return {
        loaded: !!info, loadTimeMs: 900, prefillTokPerS: last.prefill, decodeTokPerS: last.decode, timeToFirstTokenMs: last.ttft,
        kvCacheBytes: 1024 * kvpt, kvBytesPerToken: kvpt, mhaKvBytesPerToken: mha, cachedTokens: cached, weightBytes: 26_000_000, gpuBytes: 29_500_000,
        dispatchesPerToken: 61, readbacksPerToken: 1, offload: null,
        expertLoad: layers.map((l) => {
          const counts = load.get(l)!.slice(), tot = counts.reduce((a, b) => a + b, 0);
          const mean = tot / E;
          return { layer: l, counts, frequency: counts.map((c) => (tot ? c / tot : 0)), maxVio: mean ? (Math.max(...counts) - mean) / mean : 0 };
        }),
        device: 'fake', speculation: { mode: 'off', drafted: 0, accepted: 0, acceptanceRate: 0, tokensPerForward: 1 },
      };
    },
    async resetExpertLoad() { for (const c of load.values()) c.fill(0); },
    async unload() { info = null; },
  };
}
