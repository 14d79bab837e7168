// The tiny family checkpoints of tools/families/make_fixtures.py (test/fixtures/families/<family>/).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../../src/model/checkpoint';
import { memoryModel } from '../../src/loader/model-source';
import { writeSafetensors, type TensorToWrite } from '../../src/formats/safetensors';
import { mxfp4DequantHfRef } from '../../src/kernels/weight.ref';
import { mulberry32 } from '../../src/util/random';
import { randomMxfp4 } from './mxfp4';

export const FAMILY_FIXTURES = ['qwen2_moe', 'qwen3_moe', 'olmoe', 'mixtral', 'granitemoe', 'gpt_oss'] as const;
/** Mixtral, Qwen2-MoE and Qwen3-MoE configured with sliding_window 6, under a 13-token prefill of a 24-token sequence. */
export const SLIDING_WINDOW_FIXTURES = ['mixtral_swa', 'qwen2_moe_swa', 'qwen3_moe_swa'] as const;
export type FamilyFixture = (typeof FAMILY_FIXTURES)[number] | (typeof SLIDING_WINDOW_FIXTURES)[number];
/** The Llama-style families webmoe writes and reads in llama.cpp's GGUF layouts (GPT-OSS's gpt-oss layout has tests of its own). */
export const GGUF_FAMILY_FIXTURES = FAMILY_FIXTURES.filter((f) => f !== 'gpt_oss');

export const familyDir = (f: FamilyFixture) => join(import.meta.dirname, '..', 'fixtures', 'families', f);
const file = (f: FamilyFixture, name: string) => new Uint8Array(readFileSync(join(familyDir(f), name)));

export interface FamilyReference {
  family: string; model_type: string; tokens: number[]; seq_len: number; prefill_split: number; vocab_size: number; greedy_next: number;
}

export function familyFixture(f: FamilyFixture) {
  const ref = JSON.parse(readFileSync(join(familyDir(f), 'reference.json'), 'utf8')) as FamilyReference;
  const b = file(f, 'logits.f32.bin');
  const logits = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  const routing = JSON.parse(readFileSync(join(familyDir(f), 'routing.json'), 'utf8')) as Record<string, number[][]>;
  return { ref, logits, routing };
}

export function familyCheckpoint(f: FamilyFixture): Promise<Checkpoint> {
  return openCheckpoint(memoryModel({ 'config.json': readFileSync(join(familyDir(f), 'config.json'), 'utf8'), 'model.safetensors': file(f, 'model.safetensors') }));
}

/**
 * The gpt_oss fixture as an unquantised checkpoint (the layout of BF16 conversions of gpt-oss, HF
 * GptOssExperts' own parameters): each layer's MXFP4 experts decoded by transformers'
 * convert_moe_packed_tensors (mxfp4DequantHfRef) into `gate_up_proj` [E, D, 2I] and `down_proj` [E, I, D]
 * (F32: every decoded value is exact), no quantization_config. Same model, so the same reference logits.
 */
export async function gptOssDequantisedFiles(): Promise<{ 'config.json': string; 'model.safetensors': Uint8Array }> {
  const ck = await familyCheckpoint('gpt_oss');
  const config = JSON.parse(readFileSync(join(familyDir('gpt_oss'), 'config.json'), 'utf8'));
  delete config.quantization_config;
  const E = config.num_local_experts, D = config.hidden_size, I = config.intermediate_size;
  const out: Record<string, TensorToWrite> = {};
  for (const name of ck.tensors.keys()) {
    const m = /^(model\.layers\.\d+\.mlp\.experts\.)(gate_up|down)_proj_(blocks|scales)$/.exec(name);
    if (!m) { const r = await ck.readRaw(name); out[name] = { dtype: r.dtype, shape: r.shape, data: r.data.slice() }; continue; }
    if (m[3] === 'scales') continue;
    const blocks = (await ck.readRaw(name)).data, scales = (await ck.readRaw(`${m[1]}${m[2]}_proj_scales`)).data;
    const [N, K] = m[2] === 'gate_up' ? [2 * I, D] : [D, I];
    out[`${m[1]}${m[2]}_proj`] = { dtype: 'F32', shape: [E, K, N], data: Float32Array.from(mxfp4DequantHfRef(blocks, scales, E, N, Math.ceil(K / 32))) };
  }
  await ck.close();
  return { 'config.json': JSON.stringify(config), 'model.safetensors': writeSafetensors(out) };
}

/**
 * The gpt_oss fixture widened to E routed experts (webmoe-only tests: no PyTorch reference): attention,
 * norms, embedding and head as in the fixture; per layer a new router [E, D] and bias, and E experts of
 * random MXFP4 bytes (every nibble; scales 2^-5 … 2^-3 for gate_up, 2^-7 … 2^-5 for down, as the fixture's)
 * with random biases. The fixture's 8 experts weigh less than the expert cache's scratch, so offload would
 * save nothing there; at E = 32 the minimum (top-4 slots) holds an eighth of them.
 */
export async function gptOssWideFiles(E: number, seed = 7): Promise<{ 'config.json': string; 'model.safetensors': Uint8Array }> {
  const ck = await familyCheckpoint('gpt_oss');
  const config = { ...JSON.parse(readFileSync(join(familyDir('gpt_oss'), 'config.json'), 'utf8')), num_local_experts: E };
  const D = config.hidden_size, I = config.intermediate_size;
  const r = mulberry32(seed);
  const gauss = (n: number, std: number) => Float32Array.from({ length: n }, () => (r() + r() + r() - 1.5) * 2 * std);
  const out: Record<string, TensorToWrite> = {};
  for (const name of ck.tensors.keys()) {
    if (/\.mlp\./.test(name)) continue;
    const t = await ck.readRaw(name);
    out[name] = { dtype: t.dtype, shape: t.shape, data: t.data.slice() };
  }
  for (let L = 0; L < config.num_hidden_layers; L++) {
    const m = `model.layers.${L}.mlp.`;
    out[`${m}router.weight`] = { dtype: 'F32', shape: [E, D], data: gauss(E * D, 2 / Math.sqrt(D)) };
    out[`${m}router.bias`] = { dtype: 'F32', shape: [E], data: gauss(E, 0.5) };
    const gu = randomMxfp4(E, 2 * I, D / 32, seed * 100 + 2 * L, 122, 3), dn = randomMxfp4(E, D, I / 32, seed * 100 + 2 * L + 1, 120, 3);
    out[`${m}experts.gate_up_proj_blocks`] = { dtype: 'U8', shape: [E, 2 * I, D / 32, 16], data: gu.blocks };
    out[`${m}experts.gate_up_proj_scales`] = { dtype: 'U8', shape: [E, 2 * I, D / 32], data: gu.scales };
    out[`${m}experts.gate_up_proj_bias`] = { dtype: 'F32', shape: [E, 2 * I], data: gauss(E * 2 * I, 1) };
    out[`${m}experts.down_proj_blocks`] = { dtype: 'U8', shape: [E, D, I / 32, 16], data: dn.blocks };
    out[`${m}experts.down_proj_scales`] = { dtype: 'U8', shape: [E, D, I / 32], data: dn.scales };
    out[`${m}experts.down_proj_bias`] = { dtype: 'F32', shape: [E, D], data: gauss(E * D, 0.3) };
  }
  await ck.close();
  return { 'config.json': JSON.stringify(config), 'model.safetensors': writeSafetensors(out) };
}
