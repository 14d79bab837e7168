// The architecture file on the CPU reference backend against the official DeepSeek-V3 fixture:
// logits within 1e-4 for prefill, token-by-token decode and prefill-then-decode, identical expert sets.
import { describe, it, expect, beforeAll } from 'vitest';
import { parseConfig, type ModelConfig } from '../../src/model/config';
import { forward, type ModelWeights } from '../../src/model/deepseek';
import { CpuBackend, type CpuMoe, type CpuWeight, type CpuTensor } from '../../src/model/cpu-backend';
import { buildWeights } from '../../src/model/load';
import { openCheckpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { fixtureFile, fixtureJson, fixtureLogits, fixtureTokens } from '../helpers/fixture';
import { expectClose } from '../helpers/gpu';
import { parseSafetensors, toFloat32 } from '../../src/formats/safetensors';

const TOL = { atol: 1e-4, rtol: 0 };
let cfg: ModelConfig;
let weights: ModelWeights<CpuWeight, CpuMoe>;
const { tokens, prefill_split: split } = fixtureTokens();
const V = 256;

beforeAll(async () => {
  const ckpt = await openCheckpoint(memoryModel({ 'config.json': JSON.stringify(fixtureJson('config.json')), 'model.safetensors': fixtureFile('model.safetensors') }));
  cfg = ckpt.config;
  weights = await buildWeights(new CpuBackend(cfg), cfg, ckpt);
});

function run(be: CpuBackend, toks: number[]): CpuTensor {
  return forward(be, cfg, weights, toks, { past: be.cachedTokens });
}

function routingSets(be: CpuBackend, layer: number) {
  return be.routing.get(layer)!.ids.map((r) => [...r].sort((a, b) => a - b));
}

describe('DeepSeek-V3 CPU reference vs the official fixture', () => {
  it('prefill: logits and expert sets', () => {
    for (const mode of ['naive', 'absorb'] as const) {
      const be = new CpuBackend(cfg);
      be.mlaMode = mode;
      const logits = run(be, tokens);
      expectClose(logits.data, fixtureLogits('logits_prefill_absorb.f32.bin'), TOL, `prefill ${mode}`);
      const ref = fixtureJson('routing.json').runs.prefill_absorb;
      for (const layer of [1, 2]) {
        const want = ref[layer].indices.map((r: number[]) => [...r].sort((a, b) => a - b));
        expect(routingSets(be, layer)).toEqual(want);
        // Final multipliers too.
        be.routing.get(layer)!.ids.forEach((ids, t) => ids.forEach((id, j) => {
          const k = ref[layer].indices[t].indexOf(id);
          expect(Math.abs(be.routing.get(layer)!.weights[t][j] - ref[layer].weights[t][k])).toBeLessThan(1e-5);
        }));
      }
    }
  });

  it('decode token by token', () => {
    const be = new CpuBackend(cfg);
    const want = fixtureLogits('logits_decode_absorb.f32.bin');
    const got = new Float32Array(tokens.length * V);
    tokens.forEach((t, i) => got.set(run(be, [t]).data, i * V));
    expectClose(got, want, TOL, 'decode');
  });

  it('prefill then decode', () => {
    const be = new CpuBackend(cfg);
    const got = new Float32Array(tokens.length * V);
    got.set(run(be, tokens.slice(0, split)).data, 0);
    for (let i = split; i < tokens.length; i++) got.set(run(be, [tokens[i]]).data, i * V);
    expectClose(got, fixtureLogits('logits_hybrid_absorb.f32.bin'), TOL, 'hybrid');
  });

  it('intermediates match layer by layer', () => {
    const inter = parseSafetensors(fixtureFile('intermediates.safetensors'));
    const be = new CpuBackend(cfg);
    const seen: string[] = [];
    forward(be, cfg, weights, tokens, {
      past: 0,
      onActivation: (name, x) => {
        if (!inter.header.tensors.has(name)) return;
        seen.push(name);
        const t = inter.tensor(name);
        expectClose((x as CpuTensor).data, toFloat32(t.dtype, t.data), TOL, name);
      },
    });
    expect(seen).toContain('layers.2.ffn_out');
    expect(seen.length).toBeGreaterThan(15);
  });
});
