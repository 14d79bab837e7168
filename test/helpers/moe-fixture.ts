/**
 * The deepseek-v3-tiny fixture's MoE pieces for the MoE tests: router/expert weights per MoE layer,
 * the prefill intermediates (ffn_in / ffn_out / router scores+weights) and routing.json.
 * A tiny F32-only safetensors reader is kept here so these tests do not depend on src/formats.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import type { MoeRouting } from '../../src/kernels/moe-routing';
import { routingFromConfig } from '../../src/model/config';

export const FIXTURE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'deepseek-v3-tiny');

export function readF32Safetensors(path: string): Map<string, { shape: number[]; data: Float32Array }> {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, any>;
  const base = 8 + n;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (t.dtype !== 'F32') throw new Error(`${name}: dtype ${t.dtype} (test reader handles F32 only)`);
    const [a, b] = t.data_offsets as [number, number];
    const copy = new Uint8Array(b - a);
    copy.set(bytes.subarray(base + a, base + b));
    out.set(name, { shape: t.shape, data: new Float32Array(copy.buffer) });
  }
  return out;
}

export interface FixtureMoeLayer {
  layer: number;
  gate: Float32Array;
  bias: Float32Array;
  experts: { gate: Float32Array; up: Float32Array; down: Float32Array }[];
  shared: { gate: Float32Array; up: Float32Array; down: Float32Array };
  ffnIn: Float32Array;
  ffnOut: Float32Array;
  routerScores: Float32Array;
  routerWeights: Float32Array;
  /** routing.json runs.prefill_absorb[layer] */
  indices: number[][];
  weights: number[][];
  /** routing.json runs.prefill_absorb_zero_bias[layer] */
  zeroBiasIndices: number[][];
}

export interface MoeFixture {
  config: Record<string, any>;
  routing: MoeRouting;
  S: number;
  D: number;
  I: number;
  layers: FixtureMoeLayer[];
  routingJson: any;
}

let cached: MoeFixture | null = null;

export function loadMoeFixture(): MoeFixture {
  if (cached) return cached;
  const config = JSON.parse(readFileSync(join(FIXTURE_DIR, 'config.json'), 'utf8'));
  const routingJson = JSON.parse(readFileSync(join(FIXTURE_DIR, 'routing.json'), 'utf8'));
  const model = readF32Safetensors(join(FIXTURE_DIR, 'model.safetensors'));
  const inter = readF32Safetensors(join(FIXTURE_DIR, 'intermediates.safetensors'));
  const get = (m: Map<string, { data: Float32Array }>, k: string) => {
    const t = m.get(k);
    if (!t) throw new Error(`fixture tensor ${k} missing`);
    return t.data;
  };
  const D = config.hidden_size, I = config.moe_intermediate_size, E = config.n_routed_experts;
  const S = inter.get('embed')!.shape[0];
  const layers: FixtureMoeLayer[] = [];
  for (let l = config.first_k_dense_replace; l < config.num_hidden_layers; l++) {
    const p = `model.layers.${l}.mlp`;
    layers.push({
      layer: l,
      gate: get(model, `${p}.gate.weight`),
      bias: get(model, `${p}.gate.e_score_correction_bias`),
      experts: Array.from({ length: E }, (_, e) => ({
        gate: get(model, `${p}.experts.${e}.gate_proj.weight`),
        up: get(model, `${p}.experts.${e}.up_proj.weight`),
        down: get(model, `${p}.experts.${e}.down_proj.weight`),
      })),
      shared: { gate: get(model, `${p}.shared_experts.gate_proj.weight`), up: get(model, `${p}.shared_experts.up_proj.weight`), down: get(model, `${p}.shared_experts.down_proj.weight`) },
      ffnIn: get(inter, `layers.${l}.ffn_in`),
      ffnOut: get(inter, `layers.${l}.ffn_out`),
      routerScores: get(inter, `layers.${l}.router_scores`),
      routerWeights: get(inter, `layers.${l}.router_weights`),
      indices: routingJson.runs.prefill_absorb[String(l)].indices,
      weights: routingJson.runs.prefill_absorb[String(l)].weights,
      zeroBiasIndices: routingJson.runs.prefill_absorb_zero_bias[String(l)].indices,
    });
  }
  cached = { config, routing: routingFromConfig(config), S, D, I, layers, routingJson };
  return cached;
}

export const sameSet = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.from(a).sort((x, y) => x - y).join() === Array.from(b).sort((x, y) => x - y).join();
