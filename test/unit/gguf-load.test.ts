// Loading a GGUF through openCheckpoint from every model reference: a folder holding one GGUF (or a split
// set), a named file (Node path, picked File, URL with range requests), and the ambiguous cases that
// must be typed errors (GGUF beside safetensors, several GGUF models, missing splits, a named file that
// is not GGUF), with progress events and abort.
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kv, writeGguf } from '../../src/formats/gguf-write';
import { readGgufHeader } from '../../src/formats/gguf';
import { bytesSource } from '../../src/loader/source';
import { fileListModel, memoryModel, urlModel } from '../../src/loader/model-source';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint, type Checkpoint, type LoadProgress } from '../../src/model/checkpoint';
import { checkpointToGguf, ggufTypeChooser, useMoreBits } from '../../src/model/gguf-convert';
import { fixtureFile, fixtureJson } from '../helpers/fixture';

let st: Checkpoint;
let gguf: Uint8Array;
const config = JSON.stringify(fixtureJson('config.json'));

beforeAll(async () => {
  st = await openCheckpoint(memoryModel({ 'config.json': config, 'model.safetensors': fixtureFile('model.safetensors') }));
  gguf = (await checkpointToGguf(st, 'f32')).file;
});

/** The same tensors, bit for bit, as the safetensors checkpoint (F32 file). */
async function expectSameAsSafetensors(ck: Checkpoint) {
  expect([...ck.tensors.keys()].sort()).toEqual([...st.tensors.keys()].sort());
  for (const n of ['model.embed_tokens.weight', 'model.layers.1.mlp.experts.3.down_proj.weight', 'model.layers.0.self_attn.kv_b_proj.weight']) {
    expect(Buffer.compare(Buffer.from((await ck.readF32(n)).buffer), Buffer.from((await st.readF32(n)).buffer)), n).toBe(0);
  }
}

/** The file as two splits (llama.cpp's gguf-split layout: metadata in the first, split.* in each). */
async function splitFiles(): Promise<Uint8Array[]> {
  const h = await readGgufHeader(bytesSource('x.gguf', gguf));
  const all = [...h.tensors.values()].map((t) => ({ name: t.name, type: t.type.name, ne: t.ne, data: gguf.subarray(t.begin, t.end) }));
  const half = Math.floor(all.length / 2);
  const split = (i: number) => [['split.no', kv.u16(i)], ['split.count', kv.u16(2)], ['split.tensors.count', kv.i32(all.length)]] as [string, ReturnType<typeof kv.u16>][];
  return [
    writeGguf({ metadata: [...h.metadata.entries(), ...split(0)], tensors: all.slice(0, half) }),
    writeGguf({ metadata: split(1), tensors: all.slice(half) }),
  ];
}

describe('openCheckpoint on GGUF references', () => {
  it('a folder holding one .gguf and no config.json: progress config → headers → weights → done', async () => {
    const events: LoadProgress[] = [];
    const ck = await openCheckpoint(memoryModel({ 'model.gguf': gguf, 'README.md': 'x' }), { onProgress: (p) => events.push(p) });
    expect(ck.files).toEqual(['model.gguf']);
    await expectSameAsSafetensors(ck);
    expect(events.map((e) => e.phase)).toEqual(['config', 'headers', 'headers']);
    expect(events[2].tensorsTotal).toBe(st.tensors.size);
    const phases: string[] = [];
    await ck.stream(null, () => {}, { onProgress: (p) => phases.push(p.phase) });
    expect(phases[phases.length - 1]).toBe('done');
    expect(phases.filter((p) => p === 'weights').length).toBe(st.tensors.size);
  });

  it('a split set in a folder; a missing split is NOT_FOUND naming it', async () => {
    const [a, b] = await splitFiles();
    const ck = await openCheckpoint(memoryModel({ 'm-00001-of-00002.gguf': a, 'm-00002-of-00002.gguf': b }));
    expect(ck.files).toEqual(['m-00001-of-00002.gguf', 'm-00002-of-00002.gguf']);
    await expectSameAsSafetensors(ck);
    await expect(openCheckpoint(memoryModel({ 'm-00001-of-00002.gguf': a }))).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringMatching(/lacks m-00002-of-00002\.gguf/) });
  });

  it('GGUF beside a safetensors model, or several GGUF models: a typed error listing them and how to choose', async () => {
    const both = memoryModel({ 'config.json': config, 'model.safetensors': fixtureFile('model.safetensors'), 'model-q8.gguf': gguf }, 'dir');
    await expect(openCheckpoint(both)).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/dir holds a safetensors model \(config\.json\) and GGUF model-q8\.gguf: name the one to load.*dir\/model-q8\.gguf.*config\.json/) });
    const [a, b] = await splitFiles();
    const several = memoryModel({ 'a.gguf': gguf, 'b-00001-of-00002.gguf': a, 'b-00002-of-00002.gguf': b }, 'dir');
    await expect(openCheckpoint(several)).rejects.toMatchObject({ code: 'BAD_ARGUMENT', message: expect.stringMatching(/dir holds 2 GGUF models \(a\.gguf, b-00001-of-00002\.gguf \(2 splits\)\): name the file/) });
  });

  it('Node paths: a .gguf file, the first split, config.json naming the safetensors beside a GGUF, a file that is not GGUF', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webmoe-gguf-load-'));
    writeFileSync(join(dir, 'config.json'), config);
    writeFileSync(join(dir, 'model.safetensors'), fixtureFile('model.safetensors'));
    writeFileSync(join(dir, 'tiny.gguf'), gguf);
    const [a, b] = await splitFiles();
    writeFileSync(join(dir, 's-00001-of-00002.gguf'), a);
    writeFileSync(join(dir, 's-00002-of-00002.gguf'), b);
    writeFileSync(join(dir, 'not-gguf.bin'), 'hello world');
    const one = await openCheckpoint(localModel(join(dir, 'tiny.gguf')));
    expect(one.files).toEqual([join(dir, 'tiny.gguf')]);
    await expectSameAsSafetensors(one);
    await one.close();
    const splits = await openCheckpoint(localModel(join(dir, 's-00001-of-00002.gguf')));
    expect(splits.files.length).toBe(2);
    await splits.close();
    const safetensors = await openCheckpoint(localModel(join(dir, 'config.json')));
    expect(safetensors.files).toEqual(['model.safetensors']);
    await safetensors.close();
    await expect(openCheckpoint(localModel(dir))).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await expect(openCheckpoint(localModel(join(dir, 'not-gguf.bin')))).rejects.toMatchObject({ code: 'BAD_FORMAT', message: expect.stringMatching(/not a GGUF file/) });
  });

  it('a picked File (browser) and a FileList-like array of splits', async () => {
    const ck = await openCheckpoint(fileListModel([new File([gguf as Uint8Array<ArrayBuffer>], 'tiny.gguf')]));
    await expectSameAsSafetensors(ck);
    const [a, b] = await splitFiles();
    const sp = await openCheckpoint(fileListModel([new File([b as Uint8Array<ArrayBuffer>], 'm-00002-of-00002.gguf'), new File([a as Uint8Array<ArrayBuffer>], 'm-00001-of-00002.gguf')]));
    expect(sp.files).toEqual(['m-00001-of-00002.gguf', 'm-00002-of-00002.gguf']);
  });

  it('a .gguf URL is read with range requests: the header, then tensor by tensor, never the whole file in one request', async () => {
    const requests: string[] = [];
    const fakeFetch = (async (url: string, init?: RequestInit) => {
      const range = new Headers(init?.headers).get('range');
      requests.push(`${url} ${range}`);
      if (!url.endsWith('/models/tiny.gguf')) return new Response('nope', { status: 404 });
      const m = /bytes=(\d+)-(\d+)/.exec(range ?? '');
      if (!m) return new Response(gguf as Uint8Array<ArrayBuffer>, { status: 200, headers: { 'content-length': String(gguf.length) } });
      const from = Number(m[1]), to = Math.min(Number(m[2]), gguf.length - 1);
      return new Response(gguf.slice(from, to + 1), { status: 206, headers: { 'content-range': `bytes ${from}-${to}/${gguf.length}`, 'content-length': String(to - from + 1) } });
    }) as typeof fetch;
    const src = urlModel('https://example.test/models/tiny.gguf?download=true', { fetch: fakeFetch, cache: false, probeBytes: 4096 });
    expect(src.named).toBe('tiny.gguf');
    const ck = await openCheckpoint(src);
    await expectSameAsSafetensors(ck);
    expect(requests.every((r) => /bytes=\d+-\d+$/.test(r)), requests.join('\n')).toBe(true);
    expect(requests.length).toBeGreaterThan(3);
  });

  it('abort before or during the open is ABORTED', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(openCheckpoint(memoryModel({ 'model.gguf': gguf }), { signal: ac.signal })).rejects.toMatchObject({ code: 'ABORTED' });
    const ck = await openCheckpoint(memoryModel({ 'model.gguf': gguf }));
    const ac2 = new AbortController();
    let n = 0;
    await expect(ck.stream(null, () => { if (++n === 3) ac2.abort(); }, { signal: ac2.signal })).rejects.toMatchObject({ code: 'ABORTED' });
  });
});

describe('checkpointToGguf', () => {
  it("q4_k_m follows llama.cpp's rule: output Q6_K, ffn_down Q6_K where use_more_bits, Q4_K else, router and vectors F32, ragged rows Q8_0", async () => {
    // use_more_bits over 4 and 32 layers (llama.cpp: i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2)
    expect([0, 1, 2, 3].map((i) => useMoreBits(i, 4))).toEqual([false, false, true, true]);
    expect(Array.from({ length: 32 }, (_, i) => i).filter((i) => useMoreBits(i, 32))).toEqual([0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
    const choose = ggufTypeChooser({ ...st.config, numLayers: 4 }, 'q4_k_m');
    expect(choose('output.weight', [256, 10])).toBe('Q6_K');
    expect(choose('output.weight', [96, 10])).toBe('Q8_0');
    expect(choose('token_embd.weight', [256, 10])).toBe('Q4_K');
    expect(choose('blk.2.ffn_down_exps.weight', [256, 10, 4])).toBe('Q6_K');
    expect(choose('blk.1.ffn_down_exps.weight', [256, 10, 4])).toBe('Q4_K');
    expect(choose('blk.3.ffn_down_shexp.weight', [256, 10])).toBe('Q6_K');
    expect(choose('blk.1.ffn_gate_inp.weight', [256, 8])).toBe('F32');
    expect(choose('blk.1.attn_q_b.weight', [96, 10])).toBe('Q8_0');
    expect(choose('blk.1.attn_q_b.weight', [40, 10])).toBe('F16');
    const r = await checkpointToGguf(st, 'q8_0');
    const h = await readGgufHeader(bytesSource('q8.gguf', r.file));
    expect(h.metadata.get('general.file_type')!.value).toBe(7);
    expect(Object.keys(r.types).sort()).toEqual(['F16', 'F32', 'Q8_0']); // the fixture has rows that are not whole 32-weight blocks: F16, as llama.cpp falls back
    expect([...h.tensors.values()].filter((t) => t.name.includes('ffn_gate_inp')).every((t) => t.type.name === 'F32')).toBe(true);
  });
});
