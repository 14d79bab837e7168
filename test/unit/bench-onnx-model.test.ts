import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-web';
import { deepseekOnnxModels, onnxStepInputs } from '../../src/bench/onnx-model';
import { forward } from '../../src/model/architectures';
import { CpuBackend } from '../../src/model/cpu-backend';
import { buildWeights } from '../../src/model/load';
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { syntheticCheckpoint, TINY_V3_CONFIG } from '../../src/model/synthetic';

// The whole-model ONNX graphs (prefill and decode with the expanded KV cache as graph inputs/outputs),
// run on onnxruntime-web's wasm backend in Node, against the CPU reference over the same checkpoint:
// random weights at the reference fixture's shapes (DeepSeek-V3 in miniature: MLA, group-limited
// bias-routed MoE, a shared expert, a dense first layer). Tolerance: 1e-4 absolute on logits of
// magnitude ~1 (f32 both sides, sums in different orders, Cos/Sin of f32 angles vs Math.cos).
ort.env.wasm.numThreads = 1;
const TOL = 1e-4;

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < b.length; i++) {
    expect(Number.isFinite(a[i])).toBe(true);
    d = Math.max(d, Math.abs(a[i] - b[i]));
  }
  return d;
};

describe('DeepSeek-V3 as ONNX prefill + decode graphs', () => {
  it.each([[1, 5], [2, 9]])('seed %i, %i-token prompt, 4 decode steps: logits match the CPU reference', async (seed, S) => {
    const files = syntheticCheckpoint(TINY_V3_CONFIG, { seed });
    const { prefill, decode, cfg } = await deepseekOnnxModels(await openCheckpoint(memoryModel(files)));
    const ref = await openCheckpoint(memoryModel(files));
    const weights = await buildWeights(new CpuBackend(ref.config), ref.config, ref);
    const be = new CpuBackend(ref.config);
    const sp = await ort.InferenceSession.create(prefill, { executionProviders: ['wasm'] });
    const sd = await ort.InferenceSession.create(decode, { executionProviders: ['wasm'] });
    try {
      const tokens = Array.from({ length: S }, (_, i) => (i * 37 + seed * 11) % cfg.vocabSize);
      let past: Record<string, ort.Tensor> = {};
      let at = 0;
      let step = tokens;
      for (let s = 0; s < 5; s++) {
        const want = forward(be, ref.config, weights, step, { past: at, lastOnly: true });
        const inp = onnxStepInputs(step, at);
        const feeds: Record<string, ort.Tensor> = {
          input_ids: new ort.Tensor('int64', inp.ids, [step.length]),
          positions: new ort.Tensor('float32', inp.positions, [step.length]),
          attention_bias: new ort.Tensor('float32', inp.bias, [step.length, inp.total]),
        };
        for (const [k, v] of Object.entries(past)) feeds[k.replace('present', 'past')] = v;
        const out = await (s === 0 ? sp : sd).run(feeds);
        const got = out.logits.data as Float32Array;
        expect(out.logits.dims).toEqual([1, cfg.vocabSize]);
        expect(maxDiff(got, want.data)).toBeLessThan(TOL);
        expect(out['present_key.0'].dims).toEqual([cfg.numHeads, inp.total, cfg.qkNopeHeadDim + cfg.qkRopeHeadDim]);
        past = Object.fromEntries(Object.entries(out).filter(([k]) => k.startsWith('present_')));
        at = inp.total;
        // Greedy: the next input is the reference's argmax (so both sides see the same tokens).
        let best = 0;
        for (let i = 1; i < want.data.length; i++) if (want.data[i] > want.data[best]) best = i;
        step = [best];
      }
    } finally {
      await sp.release();
      await sd.release();
    }
  }, 60_000);
});
