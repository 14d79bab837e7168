// Each Llama-style MoE family's architecture file on the CPU reference backend against its PyTorch
// float32 reference (tools/families/make_fixtures.py, following the family's HF modeling file): logits
// within 1e-4 in prefill, token-by-token decode and prefill-then-decode, and the same experts in the same
// order for every token of every MoE layer.
import { describe, it, expect } from 'vitest';
import { forward } from '../../src/model/architectures';
import { CpuBackend, type CpuTensor } from '../../src/model/cpu-backend';
import { buildWeights } from '../../src/model/load';
import { ConfigError, UnsupportedError } from '../../src/errors';
import { parseConfig } from '../../src/model/config';
import { defaultContextLength, parameterCounts } from '../../src/model/assemble';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { familyDir } from '../helpers/families';
import { expectedTensorCount, modelTensors, parseTensorName, isSparsityTarget } from '../../src/model/tensors';
import { expectClose } from '../helpers/gpu';
import { FAMILY_FIXTURES, SLIDING_WINDOW_FIXTURES, familyCheckpoint, familyFixture, gptOssDequantisedFiles } from '../helpers/families';
import { openCheckpoint } from '../../src/model/checkpoint';
import { TextCodec } from '../../src/engine/text';
import { writeSafetensors, type TensorToWrite } from '../../src/formats/safetensors';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { memoryModel } from '../../src/loader/model-source';

const TOL = { atol: 1e-4, rtol: 0 };

describe.each([...FAMILY_FIXTURES, ...SLIDING_WINDOW_FIXTURES])('%s: CPU reference vs the PyTorch fixture', (family) => {
  const { ref, logits: want, routing } = familyFixture(family);
  const { tokens, prefill_split: split, vocab_size: V } = ref;
  const setup = async () => {
    const ckpt = await familyCheckpoint(family);
    const cfg = ckpt.config;
    const weights = await buildWeights(new CpuBackend(cfg), cfg, ckpt);
    const run = (be: CpuBackend, toks: number[]): CpuTensor => forward(be, cfg, weights, toks, { past: be.cachedTokens });
    return { cfg, run };
  };

  it('parses as its family', async () => {
    const { cfg } = await setup();
    expect(cfg.modelType).toBe(ref.model_type);
    expect(cfg.attention).toBe('gqa');
  });

  it('prefill: logits and routing', async () => {
    const { run } = await setup();
    const be = new CpuBackend((await familyCheckpoint(family)).config);
    expectClose(run(be, tokens).data, want, TOL, `${family} prefill`);
    expect(Object.keys(routing).length).toBeGreaterThan(0);
    for (const [layer, ids] of Object.entries(routing)) expect(be.routing.get(+layer)!.ids, `layer ${layer}`).toEqual(ids);
  });

  it('decode token by token', async () => {
    const { cfg, run } = await setup();
    const be = new CpuBackend(cfg);
    const got = new Float32Array(tokens.length * V);
    const ids: Record<string, number[][]> = {};
    tokens.forEach((t, i) => {
      got.set(run(be, [t]).data, i * V);
      for (const [l, r] of be.routing) (ids[l] ??= []).push(r.ids[0]);
    });
    expectClose(got, want, TOL, `${family} decode`);
    expect(ids).toEqual(routing);
  });

  it('prefill then decode', async () => {
    const { cfg, run } = await setup();
    const be = new CpuBackend(cfg);
    const got = new Float32Array(tokens.length * V);
    got.set(run(be, tokens.slice(0, split)).data, 0);
    for (let i = split; i < tokens.length; i++) got.set(run(be, [tokens[i]]).data, i * V);
    expectClose(got, want, TOL, `${family} prefill+decode`);
  });
});

describe('family registry', () => {
  it('an unsupported model_type names every supported family', () => {
    let err: unknown;
    try { parseConfig({ model_type: 'llama4', architectures: ['Llama4ForCausalLM'] }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    for (const t of ['deepseek_v3', 'deepseek_v2', 'qwen2_moe', 'qwen3_moe', 'olmoe', 'mixtral', 'granitemoe', 'gpt_oss']) expect(msg).toContain(t);
  });
  it('a model_type with another family\'s architectures is refused', () => {
    const { ref } = familyFixture('mixtral');
    expect(ref.model_type).toBe('mixtral');
    expect(() => parseConfig({ model_type: 'mixtral', architectures: ['Qwen3MoeForCausalLM'], vocab_size: 8, hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 2, num_experts_per_tok: 1 })).toThrow(/MixtralForCausalLM/);
  });
});

describe('sliding windows', () => {
  const mixtral = (window: number | null) => parseConfig({ ...JSON.parse(readFileSync(join(familyDir('mixtral'), 'config.json'), 'utf8')), sliding_window: window });
  it('a configured window windows every Mixtral layer and does not cap the context', () => {
    expect(defaultContextLength(mixtral(null))).toBe(256); // max_position_embeddings
    expect(defaultContextLength(mixtral(64))).toBe(256);
    expect(mixtral(null).layerTypes).toBeNull();
    expect(mixtral(64).layerTypes).toEqual(['sliding_attention', 'sliding_attention']);
  });
  it('Qwen3-MoE windows every layer with use_sliding_window; Qwen2-MoE the layer_types it lists, by default even layers below max_window_layers', () => {
    const q3 = JSON.parse(readFileSync(join(familyDir('qwen3_moe'), 'config.json'), 'utf8'));
    expect(parseConfig({ ...q3, use_sliding_window: true, sliding_window: 6 }).layerTypes).toEqual(['sliding_attention', 'sliding_attention']);
    expect(parseConfig({ ...q3, use_sliding_window: false, sliding_window: 6 }).layerTypes).toBeNull();
    const q2 = { ...JSON.parse(readFileSync(join(familyDir('qwen2_moe'), 'config.json'), 'utf8')), use_sliding_window: true, sliding_window: 6 };
    expect(parseConfig({ ...q2, num_hidden_layers: 2, max_window_layers: 2 }).layerTypes).toEqual(['sliding_attention', 'full_attention']);
    expect(parseConfig({ ...q2, max_window_layers: 0 }).layerTypes).toEqual(['full_attention', 'full_attention']);
    expect(parseConfig({ ...q2, layer_types: ['full_attention', 'sliding_attention'] }).layerTypes).toEqual(['full_attention', 'sliding_attention']);
    expect(() => parseConfig({ ...q2, layer_types: ['sliding_attention'] })).toThrow(/layer_types/);
  });
  it.each(SLIDING_WINDOW_FIXTURES)('%s: the window matters for the fixture (without it the logits move by more than 1e-2)', async (family) => {
    const { ref, logits: want } = familyFixture(family);
    const ckpt = await familyCheckpoint(family);
    const cfg = { ...ckpt.config, slidingWindow: null, layerTypes: null };
    const be = new CpuBackend(cfg);
    const got = forward(be, cfg, await buildWeights(be, cfg, ckpt), ref.tokens, { past: 0 }).data;
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    expect(worst).toBeGreaterThan(1e-2);
  });
  it('head_dim null means hidden_size / heads (Mistral-style configs write it so)', () => {
    expect(mixtral(null).headDim).toBe(8);
    expect(parseConfig({ ...JSON.parse(readFileSync(join(familyDir('mixtral'), 'config.json'), 'utf8')), head_dim: null }).headDim).toBe(8);
  });
  it('Qwen configs use their sliding_window only with use_sliding_window', () => {
    const q = JSON.parse(readFileSync(join(familyDir('qwen2_moe'), 'config.json'), 'utf8'));
    expect(parseConfig(q).slidingWindow).toBeNull(); // use_sliding_window false, sliding_window 32768
    expect(parseConfig({ ...q, use_sliding_window: true, sliding_window: 128 }).slidingWindow).toBe(128);
  });
});

describe('family tensor tables', () => {
  it.each(FAMILY_FIXTURES)('%s: every name the table lists parses back to its entry; the checkpoint holds exactly these', async (family) => {
    const ck = await familyCheckpoint(family);
    const all = [...modelTensors(ck.config)];
    expect(all.length).toBe(expectedTensorCount(ck.config));
    expect(new Set(all.map((t) => t.name))).toEqual(new Set(ck.tensors.keys()));
    for (const t of all) expect(parseTensorName(t.name)?.spec.role, t.name).toBe(t.spec.role);
    // Routed experts are 'experts' sparsity targets under their family's names (Granite's and GPT-OSS's stacked ones are not).
    const expert = all.find((t) => t.expert === 0 && t.spec.proj === 'gate');
    if (family === 'granitemoe' || family === 'gpt_oss') expect(expert).toBeUndefined();
    else expect(isSparsityTarget(expert!.name, 'experts')).toBe(true);
  });
});

describe('GPT-OSS config', () => {
  const published = () => JSON.parse(readFileSync(join(import.meta.dirname, '..', 'data', 'configs', 'gpt-oss-20b', 'config.json'), 'utf8'));
  it('gpt-oss-20b parses with its windows, sinks, YaRN (truncate false), clamped SwiGLU and MXFP4 experts', () => {
    const c = parseConfig(published());
    expect(c.family).toBe('gpt_oss');
    expect([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.vocabSize]).toEqual([2880, 24, 64, 8, 64, 201088]);
    expect([c.nRoutedExperts, c.numExpertsPerTok, c.moeIntermediateSize]).toEqual([32, 4, 2880]);
    expect(c.layerTypes!.filter((t) => t === 'sliding_attention').length).toBe(12);
    expect(c.layerTypes![0]).toBe('sliding_attention');
    expect(c.layerTypes![1]).toBe('full_attention');
    expect(c.slidingWindow).toBe(128);
    expect(c.attentionSinks).toBe(true);
    expect(c.expertActivation).toEqual({ kind: 'swiglu_oai', alpha: 1.702, limit: 7 });
    expect(c.ropeScaling).toMatchObject({ type: 'yarn', factor: 32, originalMaxPositionEmbeddings: 4096, truncate: false });
    expect(c.quantization).toEqual({ method: 'mxfp4' });
    expect(c.ropeStyle).toBe('half');
  });
  it('runs its windows itself: the sliding window does not cap the context', () => {
    expect(defaultContextLength(parseConfig(published()))).toBe(4096);
  });
  it('bad layer_types, and MXFP4 for another family, are refused naming the field', () => {
    expect(() => parseConfig({ ...published(), layer_types: ['sliding_attention'] })).toThrow(/layer_types/);
    expect(() => parseConfig({ ...published(), layer_types: Array(24).fill('chunked_attention') })).toThrow(ConfigError);
    const mix = JSON.parse(readFileSync(join(familyDir('mixtral'), 'config.json'), 'utf8'));
    expect(() => parseConfig({ ...mix, quantization_config: { quant_method: 'mxfp4' } })).toThrow(/mxfp4/);
  });
  it('parameter count as the model card gives it (21B total, 3.6B active; MXFP4 blocks hold two parameters a byte)', () => {
    const c = parseConfig(published());
    const p = parameterCounts(c);
    expect(p.total / 1e9).toBeCloseTo(20.9, 1);
    // The card's active count leaves out the input embedding (201088 × 2880 = 0.58B); the unembedding is in it.
    expect((p.active - c.vocabSize * c.hiddenSize) / 1e9).toBeCloseTo(3.6, 1);
  });
});

describe('GPT-OSS chunked prefill across the sliding window (CPU)', () => {
  it('chunks of 5 tokens (window 8): every row within 1e-4', async () => {
    const { ref, logits: want } = familyFixture('gpt_oss');
    const ck = await familyCheckpoint('gpt_oss');
    const be = new CpuBackend(ck.config);
    const w = await buildWeights(be, ck.config, ck);
    const got = new Float32Array(want.length);
    for (let a = 0; a < ref.tokens.length; a += 5) got.set(forward(be, ck.config, w, ref.tokens.slice(a, a + 5), { past: a }).data, a * ref.vocab_size);
    expectClose(got, want, TOL, 'gpt_oss chunks of 5');
  });
});

describe('GPT-OSS unquantised checkpoint (gate_up_proj [E, D, 2I], down_proj [E, I, D])', () => {
  it('the CPU reference gives the MXFP4 fixture\'s logits and routing (same decoded weights)', async () => {
    const { ref, logits: want, routing } = familyFixture('gpt_oss');
    const ck = await openCheckpoint(memoryModel(await gptOssDequantisedFiles()));
    expect(ck.config.quantization).toBeNull();
    expect(ck.tensors.get('model.layers.0.mlp.experts.gate_up_proj')?.shape).toEqual([8, 64, 64]);
    const be = new CpuBackend(ck.config);
    const w = await buildWeights(be, ck.config, ck);
    expectClose(forward(be, ck.config, w, ref.tokens, { past: 0 }).data, want, TOL, 'gpt_oss unquantised prefill');
    for (const [layer, ids] of Object.entries(routing)) expect(be.routing.get(+layer)!.ids, `layer ${layer}`).toEqual(ids);
  });
});

describe('GPT-OSS chat template file', () => {
  // gpt-oss ships its (harmony) template as chat_template.jinja, not inside tokenizer_config.json. A
  // harmony-shaped stand-in: webmoe reads the file and renders it with the chat messages.
  const harmony = "{% for m in messages %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}<|start|>assistant{% endif %}";
  const files = async (extra: Record<string, string>) => ({
    'config.json': readFileSync(join(familyDir('gpt_oss'), 'config.json'), 'utf8'),
    'model.safetensors': new Uint8Array(readFileSync(join(familyDir('gpt_oss'), 'model.safetensors'))),
    ...extra,
  });
  it('chat_template.jinja is the template when tokenizer_config.json has none; one in tokenizer_config.json wins', async () => {
    const a = await openCheckpoint(memoryModel(await files({ 'tokenizer_config.json': '{}', 'chat_template.jinja': harmony })));
    expect(a.tokenizerConfig?.chat_template).toBe(harmony);
    const b = await openCheckpoint(memoryModel(await files({ 'tokenizer_config.json': JSON.stringify({ chat_template: 'X' }), 'chat_template.jinja': harmony })));
    expect(b.tokenizerConfig?.chat_template).toBe('X');
    const c = await openCheckpoint(memoryModel(await files({ 'tokenizer_config.json': '{}' })));
    expect(c.tokenizerConfig?.chat_template).toBeUndefined();
  });
  it('the template from the file renders a conversation', async () => {
    const a = await openCheckpoint(memoryModel(await files({ 'tokenizer_config.json': '{}', 'chat_template.jinja': harmony })));
    const codec = TextCodec.fromJson(byteLevelTokenizerJson(), a.tokenizerConfig, []);
    expect(codec.renderChat([{ role: 'user', content: 'Hi' }])).toBe('<|start|>user<|message|>Hi<|end|><|start|>assistant');
  });
});

describe('GPT-OSS bad checkpoints fail with typed errors naming the tensor', () => {
  const base = async () => {
    const ck = await familyCheckpoint('gpt_oss');
    const out: Record<string, TensorToWrite> = {};
    for (const n of ck.tensors.keys()) { const r = await ck.readRaw(n); out[n] = { dtype: r.dtype, shape: r.shape, data: r.data.slice() }; }
    return out;
  };
  const open = (t: Record<string, TensorToWrite>) => openCheckpoint(memoryModel({ 'config.json': readFileSync(join(familyDir('gpt_oss'), 'config.json'), 'utf8'), 'model.safetensors': writeSafetensors(t) }));
  it('MXFP4 blocks stored as F16 are refused (U8 expected)', async () => {
    const t = await base();
    const b = t['model.layers.0.mlp.experts.down_proj_blocks'];
    t['model.layers.0.mlp.experts.down_proj_blocks'] = { dtype: 'F16', shape: b.shape, data: new Uint16Array(b.data.byteLength) };
    await expect(open(t)).rejects.toThrow(UnsupportedError);
    await expect(open(t)).rejects.toThrow(/down_proj_blocks.*expected U8/);
  });
  it('a missing sinks tensor is named', async () => {
    const t = await base();
    delete t['model.layers.1.self_attn.sinks'];
    await expect(open(t)).rejects.toThrow(/model\.layers\.1\.self_attn\.sinks' is missing/);
  });
  it('an E8M0 scale byte 255 (NaN) is refused at load', async () => {
    const t = await base();
    (t['model.layers.1.mlp.experts.gate_up_proj_scales'].data as Uint8Array)[5] = 255;
    const ck = await open(t);
    await expect(buildWeights(new CpuBackend(ck.config), ck.config, ck)).rejects.toThrow(/gate_up_proj_scales': scale byte 5 is 255/);
  });
});
