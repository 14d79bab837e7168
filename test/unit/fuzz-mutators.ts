/**
 * Seeded mutators for the loader fuzz test: hostile safetensors files (header and body), index files,
 * config.json and tokenizer.json variants built from the fixture. Each case says what it must end in:
 * 'ok' (a successful load), 'error' (a typed WebMoeError) or 'any' (either, but nothing else).
 */
import { writeSafetensors, type SafetensorsDtype, type TensorToWrite } from '../../src/formats/safetensors';
import { fixtureConfigText, fixtureFile, makeTokenizerJson, TOKENIZER_CONFIG } from './loader-helpers';

export type Expect = 'ok' | 'error' | 'any';
/** A file: text, bytes, or bytes in segments (served without concatenating: the body is shared, not copied). */
export type FileBytes = Uint8Array | Uint8Array[] | string;
export interface FuzzCase {
  kind: string;
  expect: Expect;
  files: Record<string, FileBytes>;
  /** For 'ok' cases that change values on purpose: tensor → expected number of NaN/Inf. */
  nonFinite?: Map<string, number>;
  /** For 'ok' cases: tensor → exact expected bytes. */
  bytes?: Map<string, Uint8Array>;
}

export type Rng = () => number;
const int = (r: Rng, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rng, a: readonly T[]): T => a[int(r, a.length)];

interface Entry { name: string; dtype: SafetensorsDtype; shape: number[]; begin: number; end: number }
const BPE: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, U16: 2, U32: 4, BOOL: 1 };
const DTYPES = Object.keys(BPE);

/** The seed corpus: the fixture's safetensors split into header entries and data, plus config/tokenizer. */
export class Corpus {
  readonly file = fixtureFile('model.safetensors');
  readonly entries: Entry[];
  readonly data: Uint8Array;
  readonly configText = fixtureConfigText();
  readonly config = JSON.parse(this.configText) as Record<string, unknown>;
  readonly tokenizer = makeTokenizerJson();
  readonly tokenizerText = JSON.stringify(this.tokenizer);
  readonly tokenizerConfigText = JSON.stringify(TOKENIZER_CONFIG);
  constructor() {
    const n = new DataView(this.file.buffer, this.file.byteOffset).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(this.file.subarray(8, 8 + n))) as Record<string, { dtype: SafetensorsDtype; shape: number[]; data_offsets: [number, number] }>;
    this.entries = Object.entries(header).filter(([k]) => k !== '__metadata__').map(([name, v]) => ({ name, dtype: v.dtype, shape: v.shape, begin: v.data_offsets[0], end: v.data_offsets[1] })).sort((a, b) => a.begin - b.begin);
    this.data = this.file.subarray(8 + n);
  }
  /** Where the data section starts in `file`. */
  get dataStart(): number { return this.file.length - this.data.length; }
  /** A copy of the file's first 8 + N bytes (length field and header). */
  prefix(): Uint8Array { return this.file.slice(0, this.dataStart); }
  base(): Record<string, FileBytes> {
    return { 'config.json': this.configText, 'tokenizer.json': this.tokenizerText, 'tokenizer_config.json': this.tokenizerConfigText };
  }
  tensorBytes(e: Entry): Uint8Array {
    return this.data.subarray(e.begin, e.end);
  }
  /** A valid file from entries (in the given order) via the writer. */
  write(entries: { name: string; dtype: SafetensorsDtype; shape: number[]; bytes: Uint8Array }[], metadata?: Record<string, string>): Uint8Array {
    const t: Record<string, TensorToWrite> = {};
    for (const e of entries) t[e.name] = { dtype: e.dtype, shape: e.shape, data: e.bytes };
    return writeSafetensors(t, metadata);
  }
}

/** Assembles a file from a raw header (object or text) and a data section, with an optional length override. */
export function assemble(header: unknown, data: Uint8Array | Uint8Array[], opts: { text?: string; headerBytes?: Uint8Array } = {}): Uint8Array[] {
  const json = opts.headerBytes ?? new TextEncoder().encode(opts.text ?? JSON.stringify(header));
  const head = new Uint8Array(8 + json.length);
  new DataView(head.buffer).setUint32(0, json.length, true);
  head.set(json, 8);
  return [head, ...(Array.isArray(data) ? data : [data])];
}

function headerObject(entries: Entry[], edit?: (name: string, v: Record<string, unknown>) => void): Record<string, unknown> {
  const h: Record<string, unknown> = {};
  for (const e of entries) {
    const v: Record<string, unknown> = { dtype: e.dtype, shape: e.shape.slice(), data_offsets: [e.begin, e.end] };
    edit?.(e.name, v);
    h[e.name] = v;
  }
  return h;
}

const WEIRD_VALUES: unknown[] = [-1, 0, 1, 2, 3, 7, 1.5, -0.5, 1e9, 2 ** 53, 2 ** 31, Number.MAX_SAFE_INTEGER, 1e300, '', 'x', '64', null, true, false, [], [1, 2], {}, { a: 1 }, 'F32', -(2 ** 31)];

/** Text-level mutations: truncate, delete/insert/replace characters, duplicate a slice. */
export function mutateText(r: Rng, s: string): string {
  const k = int(r, 6);
  const pos = int(r, s.length + 1);
  switch (k) {
    case 0: return s.slice(0, pos);
    case 1: return s.slice(0, pos) + s.slice(pos + 1 + int(r, 8));
    case 2: return s.slice(0, pos) + pick(r, ['{', '}', '[', ']', '"', ',', ':', '\\', 'null', '0', '-', 'e', ' ', '\u0000', '\ud800', 'é']) + s.slice(pos);
    case 3: { const a = int(r, s.length), b = a + int(r, 64); return s.slice(0, pos) + s.slice(a, b) + s.slice(pos); }
    case 4: { const c = s.charCodeAt(pos) ^ (1 << int(r, 7)); return s.slice(0, pos) + String.fromCharCode(c) + s.slice(pos + 1); }
    default: return s.slice(0, pos) + s.slice(pos).replace(/\d/, String(int(r, 10)));
  }
}

// ---- safetensors ----------------------------------------------------------------------------------

export function safetensorsCase(r: Rng, c: Corpus): FuzzCase {
  const E = c.entries;
  const files = c.base();
  const kinds = [
    'len-past-end', 'len-over-limit', 'len-small', 'overlap', 'past-end', 'gap', 'bytecount', 'dtype-same-size', 'bad-dim', 'unknown-dtype',
    'duplicate', 'missing', 'extra', 'permute', 'metadata-bad', 'metadata-ok', 'utf8', 'json-text', 'truncate', 'append',
    'flip-header', 'flip-body', 'nan-body', 'index', 'offsets-type', 'bad-shape-type', 'empty', 'not-object',
  ] as const;
  const kind = pick(r, kinds);
  const i = int(r, E.length);
  const e = E[i];
  const put = (f: FileBytes, ex: Expect, extra: Partial<FuzzCase> = {}): FuzzCase => ({ kind, expect: ex, files: { ...files, 'model.safetensors': f }, ...extra });
  switch (kind) {
    case 'len-past-end': {
      const f = c.prefix();
      new DataView(f.buffer).setUint32(0, c.file.length - 8 + 1 + int(r, 1 << 20), true);
      return put([f, c.data], 'error');
    }
    case 'len-over-limit': {
      const f = c.prefix();
      const dv = new DataView(f.buffer);
      if (r() < 0.5) dv.setUint32(0, 100_000_001 + int(r, 2 ** 31), true);
      else dv.setUint32(4, 1 + int(r, 2 ** 20), true);
      return put([f, c.data], 'error');
    }
    case 'len-small': {
      const f = c.prefix();
      const dv = new DataView(f.buffer);
      dv.setUint32(0, int(r, dv.getUint32(0, true)), true);
      return put([f, c.data], 'error');
    }
    case 'overlap': {
      const j = 1 + int(r, E.length - 1); // shift tensor j down into its predecessor
      const k = 1 + int(r, E[j - 1].end - E[j - 1].begin);
      return put(assemble(headerObject(E, (n, v) => { if (n === E[j].name) v.data_offsets = [E[j].begin - k, E[j].end - k]; }), c.data), 'error');
    }
    case 'past-end': {
      const k = 1 + int(r, 4096);
      return put(assemble(headerObject(E, (n, v) => { if (n === e.name) v.data_offsets = [e.begin, c.data.length + k]; }), c.data), 'error');
    }
    case 'gap': {
      const k = 1 + int(r, 64);
      const data = [c.data.subarray(0, e.begin), new Uint8Array(k), c.data.subarray(e.begin)];
      return put(assemble(headerObject(E, (n, v) => { const t = E.find((x) => x.name === n)!; if (t.begin >= e.begin) v.data_offsets = [t.begin + k, t.end + k]; }), data), 'error');
    }
    case 'bytecount': {
      return put(assemble(headerObject(E, (n, v) => {
        if (n !== e.name) return;
        const s = (v.shape as number[]).slice();
        if (s.length && r() < 0.7) s[int(r, s.length)] += pick(r, [-1, 1, 2]);
        else { s.push(2); }
        v.shape = s;
      }), c.data), 'error');
    }
    case 'dtype-same-size': {
      // F32 → I32/U32: structurally valid, but not a float weight → typed error from the config check.
      return put(assemble(headerObject(E, (n, v) => { if (n === e.name) v.dtype = pick(r, ['I32', 'U32']); }), c.data), 'error');
    }
    case 'bad-dim': {
      return put(assemble(headerObject(E, (n, v) => { if (n === e.name) { const s = (v.shape as unknown[]).slice(); s[int(r, s.length)] = pick(r, [-1, 1.5, '4', null, 2 ** 53 + 2, 1e300, -0.5, [], {}]); v.shape = s; } }), c.data), 'error');
    }
    case 'unknown-dtype': {
      return put(assemble(headerObject(E, (n, v) => { if (n === e.name) v.dtype = pick(r, ['F33', 'f32', '', 'Q4_K', 'float32', 0, null, ['F32'], 'F8_E5M2', 'U64']); }), c.data), 'error');
    }
    case 'duplicate': {
      const j = (i + 1 + int(r, E.length - 1)) % E.length;
      const text = JSON.stringify(headerObject(E)).replace(`"${E[j].name}":`, `"${e.name}":`);
      return put(assemble(null, c.data, { text }), 'error');
    }
    case 'missing': {
      const keep = E.filter((x) => x !== e);
      return put(c.write(keep.map((x) => ({ ...x, bytes: c.tensorBytes(x) }))), 'error');
    }
    case 'extra': {
      const n = 1 + int(r, 64);
      const extra = { name: pick(r, ['model.layers.3.enorm.weight', 'model.layers.3.eh_proj.weight', 'some.other.tensor', '']), dtype: pick(r, ['F32', 'BF16', 'U8', 'I64']) as SafetensorsDtype, shape: [n], bytes: new Uint8Array(n * 0) };
      extra.bytes = new Uint8Array(n * BPE[extra.dtype]).map(() => int(r, 256));
      const all: { name: string; dtype: SafetensorsDtype; shape: number[]; bytes: Uint8Array }[] = E.map((x) => ({ ...x, bytes: c.tensorBytes(x) }));
      all.splice(int(r, all.length + 1), 0, extra);
      return put(c.write(all), 'ok');
    }
    case 'permute': {
      const all = E.map((x) => ({ ...x, bytes: c.tensorBytes(x) }));
      for (let k = all.length - 1; k > 0; k--) { const j = int(r, k + 1); [all[k], all[j]] = [all[j], all[k]]; }
      return put(c.write(all, r() < 0.5 ? { format: 'pt' } : undefined), 'ok', { bytes: new Map(E.slice(0, 5).map((x) => [x.name, c.tensorBytes(x)])) });
    }
    case 'metadata-bad': {
      const h = headerObject(E);
      h.__metadata__ = pick(r, [{ a: 1 }, { a: null }, 'x', [], 5, { a: { b: 'c' } }, null]);
      return put(assemble(h, c.data), 'error');
    }
    case 'metadata-ok': {
      const h: Record<string, unknown> = { __metadata__: { format: 'pt', note: 'x'.repeat(int(r, 100)) }, ...headerObject(E) };
      return put(assemble(h, c.data), 'ok');
    }
    case 'utf8': {
      const json = new TextEncoder().encode(JSON.stringify(headerObject(E)));
      const bad = pick(r, [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0x80], [0xf5, 0x80, 0x80, 0x80]]);
      // Inside a tensor name (still valid JSON syntax, invalid UTF-8).
      const at = json.indexOf(0x22, int(r, json.length - 1)) + 1 || 1;
      const hb = new Uint8Array(json.length + bad.length);
      hb.set(json.subarray(0, at));
      hb.set(bad, at);
      hb.set(json.subarray(at), at + bad.length);
      return put(assemble(null, c.data, { headerBytes: hb }), 'error');
    }
    case 'json-text': {
      let t = JSON.stringify(headerObject(E));
      for (let k = 1 + int(r, 3); k > 0; k--) t = mutateText(r, t);
      return put(assemble(null, c.data, { text: t }), 'any');
    }
    case 'truncate': {
      const at = int(r, c.file.length);
      return put(at < c.dataStart ? c.file.subarray(0, at) : [c.file.subarray(0, c.dataStart), c.data.subarray(0, at - c.dataStart)], 'error');
    }
    case 'append': return put([c.file, new Uint8Array(1 + int(r, 4096)).fill(int(r, 256))], 'error');
    case 'flip-header': {
      const f = c.prefix();
      const n = f.length - 8;
      for (let k = 1 + int(r, 4); k > 0; k--) f[8 + int(r, n)] ^= 1 << int(r, 8);
      return put([f, c.data], 'any');
    }
    case 'flip-body': {
      // Random bytes anywhere in the data: structure intact, so it must load; NaN/Inf counted exactly.
      const f = c.data.slice();
      const touched = new Set<Entry>();
      for (let k = 1 + int(r, 16); k > 0; k--) {
        const at = int(r, f.length);
        f[at] = int(r, 256);
        touched.add(E.find((x) => x.begin <= at && at < x.end)!);
      }
      return put([c.file.subarray(0, c.dataStart), f], 'ok', { nonFinite: countF32NonFinite(f, touched) });
    }
    case 'nan-body': {
      const f = c.data.slice();
      const dv = new DataView(f.buffer);
      const touched = new Set<Entry>();
      for (let k = 1 + int(r, 8); k > 0; k--) {
        const t = pick(r, E);
        touched.add(t);
        dv.setFloat32(t.begin + 4 * int(r, (t.end - t.begin) / 4), pick(r, [NaN, Infinity, -Infinity]), true);
      }
      return put([c.file.subarray(0, c.dataStart), f], 'ok', { nonFinite: countF32NonFinite(f, touched) });
    }
    case 'index': return indexCase(r, c, files);
    case 'offsets-type': {
      return put(assemble(headerObject(E, (n, v) => { if (n === e.name) v.data_offsets = pick(r, [[e.begin], [e.begin, e.end, 0], ['0', e.end], [e.begin, null], { 0: e.begin }, null, [e.begin + 0.5, e.end], [-4, e.end - 4]]); }), c.data), 'error');
    }
    case 'bad-shape-type': {
      return put(assemble(headerObject(E, (n, v) => { if (n === e.name) v.shape = pick(r, [null, 'x', 64, { 0: 64 }, [[64]]]); }), c.data), 'error');
    }
    case 'empty': return put(pick(r, [new Uint8Array(0), new Uint8Array(7), assemble(null, new Uint8Array(0), { text: '{}' }), assemble(null, new Uint8Array(0), { text: '' })]), 'error');
    case 'not-object': return put(assemble(null, c.data, { text: pick(r, ['[]', 'null', '"x"', '1', '{"a":1}', '{"a":[]}']) }), 'error');
  }
}

/** Expected NaN/Inf counts of the touched tensors (the fixture's F32 values are all finite). */
function countF32NonFinite(data: Uint8Array, touched: Set<Entry>): Map<string, number> {
  const m = new Map<string, number>();
  const f32 = new Float32Array(data.buffer, data.byteOffset, data.byteLength >> 2);
  for (const e of touched) {
    let n = 0;
    for (let p = e.begin >> 2; p < e.end >> 2; p++) if (!Number.isFinite(f32[p])) n++;
    if (n) m.set(e.name, n);
  }
  return m;
}

function indexCase(r: Rng, c: Corpus, files: Record<string, FileBytes>): FuzzCase {
  const E = c.entries;
  const cut = 1 + int(r, E.length - 1);
  const a = 'model-00001-of-00002.safetensors', b = 'model-00002-of-00002.safetensors';
  const wm: Record<string, string> = {};
  E.forEach((e, k) => (wm[e.name] = k < cut ? a : b));
  const out: Record<string, FileBytes> = {
    ...files,
    [a]: c.write(E.slice(0, cut).map((x) => ({ ...x, bytes: c.tensorBytes(x) }))),
    [b]: c.write(E.slice(cut).map((x) => ({ ...x, bytes: c.tensorBytes(x) }))),
  };
  const v = int(r, 8);
  const name = pick(r, E).name;
  let ex: Expect = 'error';
  let index: unknown = { metadata: { total_size: c.data.length }, weight_map: wm };
  switch (v) {
    case 0: ex = 'ok'; break;
    case 1: index = { weight_map: { ...wm, [name]: wm[name] === a ? b : a } }; break; // points at the wrong shard
    case 2: delete out[pick(r, [a, b])]; break; // a shard is missing
    case 3: index = { weight_map: { ...wm, [name]: pick(r, ['../x.safetensors', '/etc/passwd', '', 'a\\b', 5, null]) } }; break;
    case 4: index = pick(r, [{}, { weight_map: [] }, { weight_map: null }, [], 'x', { weight_map: {} }]); break;
    case 5: out['model.safetensors.index.json'] = mutateText(r, JSON.stringify(index)); return { kind: 'index', expect: 'any', files: out };
    case 6: index = { weight_map: { ...wm, 'extra.tensor': a } }; break; // names a tensor the shard lacks
    case 7: out[b] = c.write([...E.slice(cut), E[0]].map((x) => ({ ...x, bytes: c.tensorBytes(x) }))); break; // a tensor in both shards
  }
  out['model.safetensors.index.json'] = JSON.stringify(index);
  return { kind: 'index', expect: ex, files: out };
}

// ---- config.json ----------------------------------------------------------------------------------

/** Fields whose any change makes some tensor shape disagree with the fixture's. */
const SHAPE_FIELDS = ['hidden_size', 'vocab_size', 'kv_lora_rank', 'qk_rope_head_dim', 'qk_nope_head_dim', 'v_head_dim', 'moe_intermediate_size', 'intermediate_size', 'q_lora_rank', 'num_attention_heads'];

export function configCase(r: Rng, c: Corpus): FuzzCase {
  const files = { ...c.base(), 'model.safetensors': c.file };
  const cfg = structuredClone(c.config);
  const keys = Object.keys(cfg);
  const kind = pick(r, ['drop', 'weird', 'contradict', 'more-layers', 'text', 'unsupported', 'rope', 'quant', 'ok-variants'] as const);
  let ex: Expect = 'any';
  switch (kind) {
    case 'drop': delete cfg[pick(r, keys)]; break;
    case 'weird': for (let k = 1 + int(r, 3); k > 0; k--) cfg[pick(r, keys)] = pick(r, WEIRD_VALUES); break;
    case 'contradict': {
      const f = pick(r, SHAPE_FIELDS);
      cfg[f] = (cfg[f] as number) + pick(r, [-8, -2, 2, 8, 16]);
      ex = 'error';
      break;
    }
    case 'more-layers': cfg.num_hidden_layers = 4 + int(r, 1000); ex = 'error'; break;
    case 'text': return { kind: 'config-text', expect: 'any', files: { ...files, 'config.json': mutateText(r, c.configText) } };
    case 'unsupported': {
      const f = pick(r, ['model_type', 'architectures', 'hidden_act', 'scoring_func', 'topk_method']);
      cfg[f] = pick(r, ['llama', ['LlamaForCausalLM'], 'gelu', 'relu', 'sqrt', 42]);
      ex = 'error';
      break;
    }
    case 'rope': cfg.rope_scaling = pick(r, [{ type: 'yarn' }, { type: 'linear', factor: 2 }, { type: 'yarn', factor: 40, original_max_position_embeddings: 64 }, { rope_type: 'yarn', factor: -1, original_max_position_embeddings: 64 }, 'yarn', [], { type: 'yarn', factor: 4, original_max_position_embeddings: 64, beta_fast: 1, beta_slow: 32 }]); break;
    case 'quant': cfg.quantization_config = pick(r, [{ quant_method: 'fp8' }, { quant_method: 'gptq' }, { quant_method: 'fp8', weight_block_size: [0, 128] }, { quant_method: 'fp8', fmt: 'e5m2' }, 'fp8', null]); break;
    case 'ok-variants': {
      // Changes that keep the fixture valid: fewer layers (extra tensors ignored), tied embeddings (lm_head ignored), other routing options.
      const v = int(r, 5);
      if (v === 0) cfg.num_hidden_layers = 1 + int(r, 3);
      if (v === 1) cfg.tie_word_embeddings = true;
      if (v === 2) { cfg.topk_method = 'group_limited_greedy'; cfg.scoring_func = 'softmax'; }
      if (v === 3) { cfg.n_group = pick(r, [1, 2, 4]); cfg.topk_group = 1; }
      if (v === 4) cfg.eos_token_id = [1, 2];
      if (v === 3 && (cfg.n_group as number) < 4) cfg.topk_group = cfg.n_group;
      ex = 'ok';
      break;
    }
  }
  return { kind: `config-${kind}`, expect: ex, files: { ...files, 'config.json': JSON.stringify(cfg) } };
}

// ---- tokenizer.json -------------------------------------------------------------------------------

export function tokenizerCase(r: Rng, c: Corpus): { kind: string; expect: Expect; json: unknown; text?: string } {
  const kind = pick(r, ['drop', 'weird', 'model', 'vocab', 'merges', 'regex', 'added', 'decoder', 'normalizer', 'text', 'ok'] as const);
  const t = structuredClone(c.tokenizer) as Record<string, any>;
  const keys = Object.keys(t);
  switch (kind) {
    case 'drop': delete t[pick(r, keys)]; break;
    case 'weird': t[pick(r, keys)] = pick(r, WEIRD_VALUES); break;
    case 'model': t.model = pick(r, [null, {}, { ...t.model, type: pick(r, ['WordPiece', 'Unigram', 'Nope', 5]) }, { type: 'BPE' }, { ...t.model, vocab: pick(r, WEIRD_VALUES) }]); break;
    case 'vocab': {
      const v = t.model.vocab as Record<string, unknown>;
      const ks = Object.keys(v);
      for (let k = 1 + int(r, 4); k > 0; k--) v[pick(r, ks)] = pick(r, [-1, 1.5, 'x', null, 1e9, 0, 2 ** 40]);
      break;
    }
    case 'merges': t.model.merges = pick(r, [['a'], ['Ġ t', 'zz yy'], [['a', 'b', 'c']], 'x', [5], null, [['Ġ', 't']]]); break;
    case 'regex': t.pre_tokenizer.pretokenizers[0].pattern = pick(r, [{ Regex: '(' }, { Regex: '[' }, { Regex: '(?<x' }, { Regex: '\\p{Nope}' }, { Regex: '(a+)+$' }, { String: '' }, {}, null, { Regex: 5 }]); break;
    case 'added': t.added_tokens = pick(r, [null, [{}], [{ id: -1, content: 'x' }], [{ id: 0, content: null }], 'x', [{ id: 1e12, content: '<x>', special: true }]]); break;
    case 'decoder': t.decoder = pick(r, [null, {}, { type: 'Nope' }, { type: 'Sequence', decoders: null }, 5]); break;
    case 'normalizer': t.normalizer = pick(r, [{ type: 'Nope' }, { type: 'NFC' }, { type: 'Replace', pattern: { Regex: '(' }, content: '' }, { type: 'Sequence', normalizers: [null] }, []]); break;
    case 'text': return { kind: `tokenizer-${kind}`, expect: 'any', json: null, text: mutateText(r, c.tokenizerText) };
    case 'ok': return { kind: 'tokenizer-ok', expect: 'ok', json: t };
  }
  return { kind: `tokenizer-${kind}`, expect: 'any', json: t };
}
