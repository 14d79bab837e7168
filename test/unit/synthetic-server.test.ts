import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSafetensors, parseSafetensorsHeader, readHeaderLength, toFloat32 } from '../../src/formats/safetensors';
import { urlModel } from '../../src/loader/model-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { TINY_V3_CONFIG } from '../../src/model/synthetic';
import { expectedTensorCount } from '../../src/model/tensors';
import { elementBits, mix, parseRange, PATTERN_LENGTH, patternElementBits, serveSyntheticRepo, syntheticRepo, tensorBytes, type SyntheticServer, type SyntheticTensor } from '../../src/bench/synthetic-server';

const realConfig = (model: string): Record<string, unknown> =>
  JSON.parse(readFileSync(new URL(`../data/configs/${model}/config.json`, import.meta.url), 'utf8'));
const FP8_TINY = { ...TINY_V3_CONFIG, torch_dtype: 'bfloat16', quantization_config: { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128] } };
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function get(url: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await fetch(url, { headers, method });
  return { status: res.status, headers: res.headers, body: new Uint8Array(await res.arrayBuffer()) };
}

describe('synthetic checkpoint layout', () => {
  it('shards like transformers: model-0000k-of-0000n, an index naming every tensor, headers our reader accepts', () => {
    const repo = syntheticRepo(TINY_V3_CONFIG, { shardBytes: 64 << 10 });
    expect(repo.shards.length).toBeGreaterThan(2);
    expect(repo.shards[0]).toBe(`model-00001-of-${String(repo.shards.length).padStart(5, '0')}.safetensors`);
    const index = JSON.parse(new TextDecoder().decode(repo.files.get('model.safetensors.index.json')!.read(0, repo.files.get('model.safetensors.index.json')!.size)));
    expect(Object.keys(index.weight_map).length).toBe(expectedTensorCount(repo.config));
    let total = 0;
    for (const s of repo.shards) {
      const f = repo.files.get(s)!;
      const whole = f.read(0, f.size);
      const st = parseSafetensors(whole, s); // strict: tensors tile the data exactly
      for (const t of st.header.tensors.values()) {
        expect(index.weight_map[t.name]).toBe(s);
        total += t.end - t.begin;
      }
    }
    expect(total).toBe(index.metadata.total_size);
    expect(total).toBe(repo.tensorBytes);
  });

  it('values are small, finite and deterministic per seed; F32 routers and biases, BF16 elsewhere', () => {
    const a = syntheticRepo(TINY_V3_CONFIG, { shardBytes: 1 << 30, seed: 7 }), b = syntheticRepo(TINY_V3_CONFIG, { shardBytes: 1 << 30, seed: 7 });
    const c = syntheticRepo(TINY_V3_CONFIG, { shardBytes: 1 << 30, seed: 8 });
    const f = a.files.get(a.shards[0])!;
    expect(sha(f.read(0, f.size))).toBe(sha(b.files.get(b.shards[0])!.read(0, f.size)));
    expect(sha(f.read(0, f.size))).not.toBe(sha(c.files.get(c.shards[0])!.read(0, f.size)));
    const st = parseSafetensors(f.read(0, f.size));
    // The fixture config says float32: F32 storage.
    expect(st.header.tensors.get('model.layers.1.mlp.experts.0.up_proj.weight')!.dtype).toBe('F32');
    const bf = syntheticRepo({ ...TINY_V3_CONFIG, torch_dtype: 'bfloat16' }, { shardBytes: 1 << 30 });
    const g = bf.files.get(bf.shards[0])!;
    const sb = parseSafetensors(g.read(0, g.size));
    expect(sb.header.tensors.get('model.layers.1.mlp.experts.0.up_proj.weight')!.dtype).toBe('BF16');
    expect(sb.header.tensors.get('model.layers.1.mlp.gate.weight')!.dtype).toBe('F32');
    expect(sb.header.tensors.get('model.layers.1.mlp.gate.e_score_correction_bias')!.dtype).toBe('F32');
    const f32 = (n: string) => { const v = sb.tensor(n); return toFloat32(v.dtype, v.data); };
    const w = f32('model.layers.1.mlp.experts.0.up_proj.weight');
    const norm = f32('model.layers.0.input_layernorm.weight');
    expect(w.every((v) => Number.isFinite(v) && Math.abs(v) >= 2 ** -8 && Math.abs(v) < 2 ** -4)).toBe(true);
    expect(w.some((v) => v < 0) && w.some((v) => v > 0)).toBe(true);
    expect(norm.every((v) => v >= 1 && v < 1.07)).toBe(true);
  });

  it('fp8 configs: F8_E4M3 projections with F32 weight_scale_inv blocks; the router, embedding and head stay BF16/F32', () => {
    const repo = syntheticRepo(FP8_TINY, { shardBytes: 1 << 30 });
    const f = repo.files.get(repo.shards[0])!;
    const st = parseSafetensors(f.read(0, f.size));
    const t = (n: string) => st.header.tensors.get(n)!;
    expect(t('model.layers.1.mlp.experts.3.down_proj.weight').dtype).toBe('F8_E4M3');
    expect(t('model.layers.1.mlp.experts.3.down_proj.weight_scale_inv')).toMatchObject({ dtype: 'F32', shape: [1, 1] });
    expect(t('model.layers.0.self_attn.kv_b_proj.weight').dtype).toBe('F8_E4M3');
    expect(t('model.embed_tokens.weight').dtype).toBe('BF16');
    expect(t('lm_head.weight').dtype).toBe('BF16');
    expect(t('model.layers.1.mlp.gate.weight').dtype).toBe('F32');
  });

  it('matrix bytes (a rotated table) equal the per-element rule at any offset and alignment, in every matrix dtype', () => {
    for (const dtype of ['BF16', 'F16', 'F32', 'F8_E4M3'] as const) {
      const size = { BF16: 2, F16: 2, F32: 4, F8_E4M3: 1 }[dtype];
      // Longer than the table (the copy wraps), an odd key.
      const n = PATTERN_LENGTH + 3001;
      const t: SyntheticTensor = { name: 'w', dtype, shape: [n], begin: 0, end: n * size, kind: 'matrix', key: 12345 + size };
      const want = new Uint8Array(n * size);
      const dv = new DataView(want.buffer);
      for (let e = 0; e < n; e++) {
        const v = patternElementBits(t, e);
        if (size === 4) dv.setUint32(4 * e, v, true); else if (size === 2) dv.setUint16(2 * e, v, true); else want[e] = v;
      }
      for (const [from, len, at] of [[3, n * size - 5, 1], [0, n * size, 0], [(PATTERN_LENGTH - 2) * size + 1, 2000, 3], [7, 9, 2]]) {
        const buf = new Uint8Array(len + 8);
        const out = buf.subarray(at, at + len); // misaligned views too
        tensorBytes(t, from, out);
        expect(sha(out), `${dtype} [${from}, +${len}) at ${at}`).toBe(sha(want.subarray(from, from + len)));
      }
    }
  });

  it('matrices: tensors differ, values stay in the band (finite, exponent from the hash, not the mask)', () => {
    const mk = (key: number): SyntheticTensor => ({ name: 'w', dtype: 'BF16', shape: [4096], begin: 0, end: 8192, kind: 'matrix', key });
    const a = new Uint8Array(8192), b = new Uint8Array(8192);
    tensorBytes(mk(1), 0, a);
    tensorBytes(mk(2), 0, b);
    expect(sha(a)).not.toBe(sha(b));
    const v = toFloat32('BF16', a);
    expect(v.every((x) => Math.abs(x) >= 2 ** -8 && Math.abs(x) < 2 ** -4)).toBe(true);
    expect(new Set(Array.from(new Uint16Array(a.buffer))).size).toBeGreaterThan(900); // of the 1024 values in the band
  });

  it('norms, biases and scales: one hash per element (elementBits)', () => {
    const t: SyntheticTensor = { name: 'n', dtype: 'BF16', shape: [1000], begin: 0, end: 2000, kind: 'norm', key: 99 };
    const out = new Uint8Array(1995);
    tensorBytes(t, 3, out); // odd start: the first element split
    const want = new Uint8Array(2000);
    const dv = new DataView(want.buffer);
    for (let e = 0; e < 1000; e++) dv.setUint16(2 * e, elementBits(t, mix(t.key, e)), true);
    expect(Array.from(out)).toEqual(Array.from(want.subarray(3, 1998)));
  });

  it('parses single byte ranges like HTTP servers do', () => {
    expect(parseRange(undefined, 10)).toBeNull();
    expect(parseRange('bytes=0-3', 10)).toEqual([0, 3]);
    expect(parseRange('bytes=4-', 10)).toEqual([4, 9]);
    expect(parseRange('bytes=-3', 10)).toEqual([7, 9]);
    expect(parseRange('bytes=8-100', 10)).toEqual([8, 9]);
    expect(parseRange('bytes=10-11', 10)).toBe('bad');
    expect(parseRange('bytes=5-2', 10)).toBe('bad');
    expect(parseRange('items=0-1', 10)).toBe('bad');
  });
});

describe('synthetic checkpoint server', () => {
  let s: SyntheticServer;
  beforeAll(async () => { s = await serveSyntheticRepo(FP8_TINY, { shardBytes: 48 << 10, extraFiles: { 'README.md': 'synthetic' } }); });
  afterAll(async () => { await s.close(); });

  it('range reads are byte-identical to the full download; HEAD, 404 and 416 as HTTP says', async () => {
    const name = s.repo.shards[1];
    const full = await get(s.url + name);
    expect(full.status).toBe(200);
    expect(Number(full.headers.get('content-length'))).toBe(s.repo.files.get(name)!.size);
    expect(full.body.length).toBe(s.repo.files.get(name)!.size);
    // The server sends matrices as views of its tables (SyntheticFile.parts): the bytes read() makes.
    expect(sha(full.body)).toBe(sha(s.repo.files.get(name)!.read(0, full.body.length)));
    const n = full.body.length;
    for (const [a, b] of [[0, 7], [5, 5000], [n - 100, n - 1], [1234, 40000], [8, n - 1]]) {
      const r = await get(s.url + name, { Range: `bytes=${a}-${b}` });
      expect(r.status).toBe(206);
      expect(r.headers.get('content-range')).toBe(`bytes ${a}-${b}/${n}`);
      expect(sha(r.body)).toBe(sha(full.body.subarray(a, b + 1)));
    }
    const head = await get(s.url + name, {}, 'HEAD');
    expect([head.status, head.headers.get('content-length'), head.body.length]).toEqual([200, String(n), 0]);
    expect((await get(s.url + 'nope.safetensors')).status).toBe(404);
    expect((await get(s.url + name, { Range: `bytes=${n}-${n + 5}` })).status).toBe(416);
    expect(new TextDecoder().decode((await get(s.url + 'README.md')).body)).toBe('synthetic');
  });

  it('opens as a sharded checkpoint through the URL loader; FP8 tensors dequantise with their scales', async () => {
    const ck = await openCheckpoint(urlModel(s.url, { cache: false }));
    expect(ck.files).toEqual(s.repo.shards);
    expect(ck.tensors.get('model.layers.2.mlp.experts.7.gate_proj.weight')!.dtype).toBe('F8_E4M3');
    const w = await ck.readF32('model.layers.2.mlp.experts.7.gate_proj.weight');
    // e4m3 magnitudes [2^-3, 2) times power-of-two scales 2^-9..2^-6
    expect(w.every((v) => Number.isFinite(v) && Math.abs(v) >= 2 ** -12 && Math.abs(v) < 2 ** -5)).toBe(true);
    const seen = new Map<string, number>();
    await ck.stream(null, (name, t) => { seen.set(name, t.data.length); });
    expect(seen.size).toBe(ck.tensors.size);
    await ck.close();
  });

  it('the bytes are the same across two servers (two runs)', async () => {
    const t = await serveSyntheticRepo(FP8_TINY, { shardBytes: 48 << 10 });
    try {
      for (const name of s.repo.shards) {
        const [x, y] = await Promise.all([get(s.url + name), get(t.url + name)]);
        expect(sha(x.body)).toBe(sha(y.body));
      }
    } finally {
      await t.close();
    }
  });

  it("DeepSeek-V3's 671B checkpoint (FP8, 163 shards): headers parse at real size, no weight bytes needed", () => {
    const repo = syntheticRepo(realConfig('DeepSeek-V3'));
    expect(repo.tensorBytes).toBeGreaterThan(600e9);
    expect(repo.shards.length).toBeGreaterThan(100);
    const f = repo.files.get(repo.shards[40])!;
    const first = f.read(0, 8);
    const n = readHeaderLength(first, f.size);
    const h = parseSafetensorsHeader(f.read(0, 8 + n), f.size, repo.shards[40]);
    expect(h.tensors.size).toBeGreaterThan(100);
    const last = [...h.tensors.values()].at(-1)!;
    expect(last.end).toBe(f.size);
  });
});
