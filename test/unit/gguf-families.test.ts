// GGUF files of the Llama-style families (src/model/gguf-families.ts): webmoe's converter writes each tiny
// fixture in llama.cpp's layout for its family, and webmoe's GGUF loader reads it back — F32: every tensor
// bit-identical to the safetensors checkpoint (q/k rows of the NORM-rope layouts un-permuted, Granite's
// experts re-stacked) and the PyTorch reference's logits within 1e-4 on the CPU reference runner; Q8_0:
// every tensor equal to its Q8_0 round trip, the quantised expert blocks handed on as they are.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesSource } from '../../src/loader/source';
import { memoryModel } from '../../src/loader/model-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { checkpointToGguf } from '../../src/model/gguf-convert';
import { openGgufCheckpoint } from '../../src/model/gguf-deepseek2';
import { byteLevelTokenizerJson } from '../../src/model/byte-tokenizer';
import { CpuBackend } from '../../src/model/cpu-backend';
import { CpuRunner } from '../../src/model/cpu-runner';
import { buildWeights } from '../../src/model/load';
import { dequantize, quantize } from '../../src/formats/gguf-blocks';
import { expectClose } from '../helpers/gpu';
import { GGUF_FAMILY_FIXTURES, SLIDING_WINDOW_FIXTURES, familyDir, familyFixture, gptOssDequantisedFiles } from '../helpers/families';
import { metaString, readGgufModel } from '../../src/formats/gguf';
import { ggufSummary } from '../../src/model/gguf-info';

const tokenizer = { ...byteLevelTokenizerJson(), pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true } };
const openSafetensors = (f: string) => openCheckpoint(memoryModel({
  'config.json': readFileSync(join(familyDir(f as never), 'config.json'), 'utf8'),
  'model.safetensors': new Uint8Array(readFileSync(join(familyDir(f as never), 'model.safetensors'))),
  'tokenizer.json': JSON.stringify(tokenizer),
}));

// The sliding-window fixtures too: the window travels in llama.cpp's attention.sliding_window(_pattern) keys.
describe.each([...GGUF_FAMILY_FIXTURES, ...SLIDING_WINDOW_FIXTURES])('%s GGUF', (family) => {
  it('F32: written and read back bit-identical; the reference logits within 1e-4', async () => {
    const st = await openSafetensors(family);
    const file = (await checkpointToGguf(st, 'f32')).file;
    const gg = await openGgufCheckpoint([bytesSource(`${family}.gguf`, file)]);
    // webmoe info on the file: its config from the headers.
    const summary = await ggufSummary([bytesSource(`${family}.gguf`, file)]);
    expect(summary.unsupported).toBeUndefined();
    expect(summary.config).toMatchObject({ model_type: st.config.modelType, num_hidden_layers: st.config.numLayers });
    const { raw: _a, ...want } = st.config;
    const { raw: _b, ...got } = gg.config;
    expect(got).toMatchObject({ ...want, eosTokenIds: want.eosTokenIds, bosTokenId: want.bosTokenId });
    expect([...gg.tensors.keys()].sort()).toEqual([...st.tensors.keys()].sort());
    for (const n of st.tensors.keys()) expect(await gg.readF32(n), n).toEqual(await st.readF32(n));
    const { ref, logits } = familyFixture(family);
    const runner = new CpuRunner(gg.config, await buildWeights(new CpuBackend(gg.config), gg.config, gg), 256);
    expectClose(await runner.logits(ref.tokens, true), logits, { atol: 1e-4, rtol: 0 }, `${family} from GGUF`);
  });

});

describe.each(GGUF_FAMILY_FIXTURES)('%s GGUF', (family) => {
  it('Q8_0: every tensor is its Q8_0 round trip; routed experts stream as the file\'s blocks', async () => {
    const st = await openSafetensors(family);
    const gg = await openGgufCheckpoint([bytesSource(`${family}.gguf`, (await checkpointToGguf(st, 'q8_0')).file)]);
    for (const n of st.tensors.keys()) {
      const f = await st.readF32(n), t = gg.tensors.get(n)!;
      const isMatrix = t.shape.length >= 2 && !n.endsWith('gate.weight') && !n.endsWith('router.layer.weight') && !n.endsWith('shared_expert_gate.weight');
      // Rows of 32 weights or more are Q8_0 blocks (checkpointToGguf's rule); a permutation of q/k rows commutes with the row-wise quantiser.
      const want = isMatrix && t.shape[t.shape.length - 1] % 32 === 0 ? dequantize('Q8_0', quantize('Q8_0', f), f.length) : f;
      expect(await gg.readF32(n), n).toEqual(want);
    }
    // (Rows of 32 weights: gate and up; down's rows are the tiny expert width 16, F32.)
    const perExpert = [...gg.tensors.values()].filter((t) => /\.experts\.\d+\./.test(t.name) && t.shape[1] % 32 === 0);
    if (family !== 'granitemoe') expect(perExpert.length > 0 && perExpert.every((t) => t.gguf?.type === 'Q8_0')).toBe(true);
  });
});

// GPT-OSS in llama.cpp's gpt-oss layout: experts MXFP4 (GGML type 39, 17-byte blocks: the checkpoint's
// scale byte and its nibbles moved), gate and up split from HF's interleaved rows, sinks and biases beside.
describe('gpt_oss GGUF', () => {
  it('F32: experts written as MXFP4 blocks, read back bit-identical; logits equal the safetensors checkpoint\'s', async () => {
    const st = await openSafetensors('gpt_oss');
    const cfg = st.config;
    const file = (await checkpointToGguf(st, 'f32')).file;
    const h = await readGgufModel([bytesSource('gpt_oss.gguf', file)]);
    expect(metaString(h, 'general.architecture')).toBe('gpt-oss');
    const E = cfg.nRoutedExperts, D = cfg.hiddenSize, I = cfg.moeIntermediateSize;
    for (const L of [0, 1]) {
      for (const [p, ne] of [['gate', [D, I, E]], ['up', [D, I, E]], ['down', [I, D, E]]] as const) {
        const t = h.tensors.get(`blk.${L}.ffn_${p}_exps.weight`)!;
        expect([t.type.name, t.ne, t.end - t.begin]).toEqual(['MXFP4', ne, (ne[0] / 32) * 17 * ne[1] * ne[2]]);
      }
      expect(h.tensors.get(`blk.${L}.attn_sinks.weight`)!.ne).toEqual([cfg.numHeads]);
      expect(h.tensors.get(`blk.${L}.ffn_gate_exps.bias`)!.ne).toEqual([I, E]);
    }
    const gg = await openGgufCheckpoint([bytesSource('gpt_oss.gguf', file)]);
    const { raw: _a, ...want } = st.config;
    const { raw: _b, ...got } = gg.config;
    expect(got).toMatchObject({ ...want, eosTokenIds: want.eosTokenIds, bosTokenId: want.bosTokenId });
    expect([...gg.tensors.keys()].sort()).toEqual([...st.tensors.keys()].sort());
    for (const n of st.tensors.keys()) {
      const a = await st.readRaw(n), b = await gg.readRaw(n);
      if (a.dtype === 'U8') expect([b.dtype, b.shape, b.data], n).toEqual(['U8', a.shape, a.data]);
      else expect(await gg.readF32(n), n).toEqual(await st.readF32(n));
    }
    const run = async (ck: typeof st) => new CpuRunner(ck.config, await buildWeights(new CpuBackend(ck.config), ck.config, ck), 256).logits(familyFixture('gpt_oss').ref.tokens, true);
    expect(await run(gg)).toEqual(await run(st));
  });

  it('Q8_0: attention and head in Q8_0, the experts still MXFP4 bit for bit', async () => {
    const st = await openSafetensors('gpt_oss');
    const gg = await openGgufCheckpoint([bytesSource('gpt_oss.gguf', (await checkpointToGguf(st, 'q8_0')).file)]);
    for (const n of st.tensors.keys()) if (/_proj_(blocks|scales)$/.test(n)) expect((await gg.readRaw(n)).data, n).toEqual((await st.readRaw(n)).data);
    expect(gg.tensors.get('model.layers.0.self_attn.q_proj.weight')!.gguf?.type).toBe('Q8_0');
  });

  it('what llama.cpp\'s gpt-oss graph cannot express is a typed UNSUPPORTED naming it', async () => {
    const base = JSON.parse(readFileSync(join(familyDir('gpt_oss'), 'config.json'), 'utf8'));
    const with_ = async (config: object) => openCheckpoint(memoryModel({ 'config.json': JSON.stringify(config), 'model.safetensors': new Uint8Array(readFileSync(join(familyDir('gpt_oss'), 'model.safetensors'))) }));
    await expect(checkpointToGguf(await with_({ ...base, layer_types: ['full_attention', 'sliding_attention'] }), 'f32')).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/even layers/) });
    await expect(checkpointToGguf(await with_({ ...base, swiglu_limit: 5 }), 'f32')).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/limit 7/) });
    const { 'config.json': cj, 'model.safetensors': ms } = await gptOssDequantisedFiles();
    await expect(checkpointToGguf(await openCheckpoint(memoryModel({ 'config.json': cj, 'model.safetensors': ms })), 'f32')).rejects.toMatchObject({ code: 'UNSUPPORTED', message: expect.stringMatching(/MXFP4/) });
  });
});
