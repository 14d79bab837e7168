// The official DeepSeek-V3 fixture written as a deepseek2 GGUF (llama.cpp's layout: stacked experts,
// kv_b split into k_b / v_b, exp_probs_b) and read back through openGgufCheckpoint: the same config,
// the same F32 tensors, and on the CPU reference backend the same logits as its safetensors path
// (bit-identical for F32; quantised files within a tolerance measured against the quantisation error).
import { describe, it, expect, beforeAll } from 'vitest';
import { ggufSplitNames, readGgufHeader, type GgufKv } from '../../src/formats/gguf';
import { dequantize, quantize, type DecodableType } from '../../src/formats/gguf-blocks';
import { kv, writeGguf } from '../../src/formats/gguf-write';
import { bytesSource } from '../../src/loader/source';
import { memoryModel } from '../../src/loader/model-source';
import { openCheckpoint, type Checkpoint } from '../../src/model/checkpoint';
import { CpuBackend, type CpuMoe, type CpuWeight } from '../../src/model/cpu-backend';
import { forward, type ModelWeights } from '../../src/model/deepseek';
import { deepseek2ConfigFromGguf, deepseek2Gguf, deepseek2Metadata, openGgufCheckpoint } from '../../src/model/gguf-deepseek2';
import { buildWeights } from '../../src/model/load';
import { fixtureFile, fixtureJson, fixtureLogits, fixtureTokens } from '../helpers/fixture';

let st: Checkpoint;
const { tokens } = fixtureTokens();

beforeAll(async () => {
  st = await openCheckpoint(memoryModel({ 'config.json': JSON.stringify(fixtureJson('config.json')), 'model.safetensors': fixtureFile('model.safetensors') }));
});

async function toGguf(type: DecodableType): Promise<Uint8Array> {
  const tensors = await deepseek2Gguf(st.config, (n) => st.readF32(n), st.tensors, type);
  return writeGguf({ metadata: deepseek2Metadata(st.config), tensors });
}

async function logits(ck: Checkpoint): Promise<Float32Array> {
  const be = new CpuBackend(ck.config);
  const w: ModelWeights<CpuWeight, CpuMoe> = await buildWeights(be, ck.config, ck);
  return forward(be, ck.config, w, tokens, { past: 0 }).data;
}

const withoutRaw = (c: Record<string, unknown>) => Object.fromEntries(Object.entries(c).filter(([k]) => k !== 'raw'));

describe('deepseek2 GGUF ↔ the DeepSeek tensor table', () => {
  it('F32: llama.cpp tensor names and shapes, same config, same tensors, bit-identical logits', async () => {
    const file = await toGguf('F32');
    const h = await readGgufHeader(bytesSource('tiny.gguf', file));
    const names = [...h.tensors.keys()];
    // llama.cpp's names: split MLA kv_b, stacked experts, router bias
    for (const n of ['token_embd.weight', 'output_norm.weight', 'output.weight', 'blk.0.attn_q_a.weight', 'blk.0.attn_kv_a_mqa.weight', 'blk.0.attn_k_b.weight', 'blk.0.attn_v_b.weight', 'blk.0.ffn_gate.weight', 'blk.1.ffn_gate_exps.weight', 'blk.1.ffn_down_shexp.weight', 'blk.1.exp_probs_b.bias', 'blk.1.ffn_gate_inp.weight']) {
      expect(names, n).toContain(n);
    }
    const c = st.config;
    expect(h.tensors.get('blk.1.ffn_gate_exps.weight')!.ne).toEqual([c.hiddenSize, c.moeIntermediateSize, c.nRoutedExperts]);
    expect(h.tensors.get('blk.0.attn_k_b.weight')!.ne).toEqual([c.qkNopeHeadDim, c.kvLoraRank, c.numHeads]);
    expect(h.tensors.get('blk.0.attn_v_b.weight')!.ne).toEqual([c.kvLoraRank, c.vHeadDim, c.numHeads]);
    expect(deepseek2ConfigFromGguf(h).model_type).toBe('deepseek_v3');

    const gg = await openGgufCheckpoint([bytesSource('tiny.gguf', file)]);
    const ga = withoutRaw(gg.config as unknown as Record<string, unknown>), sa = withoutRaw(st.config as unknown as Record<string, unknown>);
    expect(ga).toEqual(sa);
    expect([...gg.tensors.keys()].sort()).toEqual([...st.tensors.keys()].sort());
    for (const n of st.tensors.keys()) {
      expect(gg.tensors.get(n)!.shape, n).toEqual(st.tensors.get(n)!.shape);
      expect(Buffer.compare(Buffer.from((await gg.readF32(n)).buffer), Buffer.from((await st.readF32(n)).buffer)), n).toBe(0);
    }
    const a = await logits(gg), b = await logits(st);
    expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer))).toBe(0);
    // and both match the official fixture's logits (the CPU reference's own tolerance)
    const ref = fixtureLogits('logits_prefill_absorb.f32.bin');
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(a[i] - ref[i]));
    expect(worst).toBeLessThan(1e-4);
  });

  // Quantised files. Tensors: each HF tensor must be exactly the dequantised blocks of its F32 values
  // (rows with whole blocks; others stay F32 in the file, as llama.cpp falls back) — kv_b, whose k half
  // is transposed before quantising, within the type's rel-RMS. Logits move by the quantisation error
  // (amplified by routing flips in this random-weight model): bounded at ~2× the max |Δ| measured when
  // written (printed), relative to the largest logit; Q4_0's is printed only (it changes routing).
  const LOGIT_BOUND: Partial<Record<DecodableType, number>> = { F16: 2e-3, Q8_0: 3e-2 };
  const REL_RMS: Partial<Record<DecodableType, number>> = { F16: 1e-3, Q8_0: 1e-2, Q4_0: 0.15 };
  it.each(['F16', 'Q8_0', 'Q4_0'] as DecodableType[])('%s: every tensor is its F32 values through the blocks; logits', async (type) => {
    const gg = await openGgufCheckpoint([bytesSource(`tiny-${type}.gguf`, await toGguf(type))]);
    const block = type === 'F16' ? 1 : 32;
    for (const n of st.tensors.keys()) {
      const x = await st.readF32(n), y = await gg.readF32(n);
      const shape = st.tensors.get(n)!.shape;
      const cols = shape[shape.length - 1];
      if (n.endsWith('kv_b_proj.weight')) {
        let e = 0, s2 = 0;
        for (let i = 0; i < x.length; i++) { e += (x[i] - y[i]) ** 2; s2 += x[i] ** 2; }
        expect(Math.sqrt(e / s2), n).toBeLessThan(REL_RMS[type]!);
      } else {
        const matrix = shape.length === 2 && !n.endsWith('norm.weight');
        const want = matrix && cols % block === 0 ? dequantize(type, quantize(type, x), x.length) : x;
        expect(Buffer.compare(Buffer.from(y.buffer, y.byteOffset, y.byteLength), Buffer.from(want.buffer, want.byteOffset, want.byteLength)), n).toBe(0);
      }
    }
    const a = await logits(gg), b = await logits(st);
    let worst = 0, range = 0;
    for (let i = 0; i < b.length; i++) { worst = Math.max(worst, Math.abs(a[i] - b[i])); range = Math.max(range, Math.abs(b[i])); }
    console.log(`${type}: max |Δ logit| ${worst.toExponential(2)} (max |logit| ${range.toFixed(2)})`);
    if (LOGIT_BOUND[type] !== undefined) expect(worst / range).toBeLessThan(LOGIT_BOUND[type]!);
  });

  it('quantised tensors say so, and stream as their blocks with ggufBlocks (an expert: its rows of the stacked tensor)', async () => {
    const file = await toGguf('Q8_0');
    const gg = await openGgufCheckpoint([bytesSource('tiny-q8.gguf', file)]);
    const h = await readGgufHeader(bytesSource('tiny-q8.gguf', file));
    let blocks = 0, delivered = 0;
    const seen: string[] = [];
    const progress: number[] = [];
    await gg.stream(null, async (n, raw) => {
      delivered += raw.gguf ? raw.gguf.bytes.length : raw.data.length;
      const t = gg.tensors.get(n)!;
      if (!t.gguf) {
        // F32 in the file (norms, the router, rows that are not whole blocks) or rebuilt (kv_b): F32 as before.
        expect(raw.gguf, n).toBeUndefined();
        expect(raw.data.length, n).toBe(t.end - t.begin);
        return;
      }
      blocks++;
      seen.push(n);
      expect(raw.gguf!.type, n).toBe('Q8_0');
      expect(raw.gguf!.bytes.length, n).toBe(t.gguf.bytes);
      expect(raw.data.length, n).toBe(0);
      // The blocks decode to what readF32 gives.
      const f = await gg.readF32(n);
      expect(Buffer.compare(Buffer.from(dequantize('Q8_0', raw.gguf!.bytes, f.length).buffer), Buffer.from(f.buffer, f.byteOffset, f.byteLength)), n).toBe(0);
    }, { ggufBlocks: true, onProgress: (p) => { progress.push(p.bytesLoaded); if (p.phase === 'done') progress.push(p.bytesTotal); } });
    expect(blocks).toBeGreaterThan(0);
    // Progress counts the bytes delivered (blocks, not their F32 size).
    expect(progress.slice(-2)).toEqual([delivered, delivered]);
    expect(seen).not.toContain('model.layers.0.self_attn.kv_b_proj.weight');
    expect(seen.some((n) => n.includes('.mlp.experts.'))).toBe(true);
    // An expert's blocks are its slice of the stacked tensor, as in the file.
    const e = 'model.layers.1.mlp.experts.1.down_proj.weight';
    expect(gg.tensors.get(e)?.gguf).toBeDefined();
    const stacked = h.tensors.get('blk.1.ffn_down_exps.weight')!;
    const slice = (stacked.end - stacked.begin) / stacked.ne[2];
    let got: Uint8Array | undefined;
    await gg.stream([e], (_, r) => { got = r.gguf?.bytes; }, { ggufBlocks: true });
    expect(Buffer.compare(Buffer.from(got!), Buffer.from(file.subarray(stacked.begin + slice, stacked.begin + 2 * slice)))).toBe(0);
    // Without the option (the CPU backend, f32/q8/q4 storage): every tensor is F32.
    await gg.stream(null, (n, raw) => { expect(raw.gguf, n).toBeUndefined(); expect(raw.data.length, n).toBe(gg.tensors.get(n)!.end - gg.tensors.get(n)!.begin); });
  });

  it('split files (-00001-of-00002.gguf) load to the same tensors', async () => {
    const tensors = await deepseek2Gguf(st.config, (n) => st.readF32(n), st.tensors, 'Q8_0');
    const half = Math.floor(tensors.length / 2);
    const split = (i: number): [string, GgufKv][] => [['split.no', kv.u16(i)], ['split.count', kv.u16(2)], ['split.tensors.count', kv.i32(tensors.length)]];
    const names = ggufSplitNames('tiny-00001-of-00002.gguf');
    const files = [
      writeGguf({ metadata: [...deepseek2Metadata(st.config), ...split(0)], tensors: tensors.slice(0, half) }),
      writeGguf({ metadata: split(1), tensors: tensors.slice(half) }),
    ];
    const one = await openGgufCheckpoint([bytesSource('tiny.gguf', writeGguf({ metadata: deepseek2Metadata(st.config), tensors }))]);
    const two = await openGgufCheckpoint(files.map((f, i) => bytesSource(names[i], f)));
    expect(two.files).toEqual(names);
    for (const n of st.tensors.keys()) expect(Buffer.compare(Buffer.from((await two.readF32(n)).buffer), Buffer.from((await one.readF32(n)).buffer)), n).toBe(0);
  });

  it('rejects other architectures and broken MLA pairs with typed errors', async () => {
    const tensors = await deepseek2Gguf(st.config, (n) => st.readF32(n), st.tensors, 'F32');
    const meta = deepseek2Metadata(st.config);
    const other = writeGguf({ metadata: meta.map(([k, v]) => (k === 'general.architecture' ? [k, { type: 'STRING', value: 'llama' }] : [k, v])), tensors });
    await expect(openGgufCheckpoint([bytesSource('llama.gguf', other)])).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    const noV = writeGguf({ metadata: meta, tensors: tensors.filter((t) => t.name !== 'blk.2.attn_v_b.weight') });
    await expect(openGgufCheckpoint([bytesSource('nov.gguf', noV)])).rejects.toThrow(/attn_k_b but no attn_v_b/);
    const extra = writeGguf({ metadata: meta, tensors: [...tensors, { name: 'blk.0.mystery.weight', type: 'F32', ne: [4], data: new Uint8Array(16) }] });
    await expect(openGgufCheckpoint([bytesSource('x.gguf', extra)])).rejects.toMatchObject({ code: 'BAD_FORMAT' });
  });
});
