/**
 * Seeded mutators for GGUF files (the fuzz test's 'gguf' category): a valid file with every metadata
 * type (including a tokenizer-sized string array) and tensors of several block types, damaged field
 * by field or byte by byte. Each case must end in a successful read or a typed WebMoeError; a read
 * must never reach past the file, and every tensor the reader accepts must lie inside the file with
 * exactly the bytes its shape and type need.
 */
import { readGgufHeader, readGgufTensor, type GgufKv } from '../../src/formats/gguf';
import { dequantize, ggmlTypeByName, isDecodable } from '../../src/formats/gguf-blocks';
import { kv, writeGguf, type GgufTensorToWrite } from '../../src/formats/gguf-write';
import { bytesSource } from '../../src/loader/source';
import type { Expect } from './fuzz-mutators';

type Rng = () => number;
const int = (r: Rng, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rng, a: readonly T[]): T => a[int(r, a.length)];

export interface GgufCase { kind: string; expect: Expect; file: Uint8Array }

function seedFile(): Uint8Array {
  const t = (name: string, type: GgufTensorToWrite['type'], ne: number[], seed: number): GgufTensorToWrite => {
    const layout = ggmlTypeByName(type)!;
    const bytes = (ne.reduce((a, d) => a * d, 1) / layout.blockSize) * layout.blockBytes;
    // Block bytes from a PRNG-free pattern; the f16 scales of the quantised blocks are finite (bit 14 clear).
    const data = new Uint8Array(bytes).map((_, i) => ((i * 131 + seed * 17) & 0xbf));
    return { name, type, ne, data };
  };
  const meta: [string, GgufKv][] = [
    ['general.architecture', kv.str('deepseek2')],
    ['general.name', kv.str('fuzz')],
    ['deepseek2.block_count', kv.u32(2)],
    ['deepseek2.rope.freq_base', kv.f32(10000)],
    ['deepseek2.expert_weights_norm', kv.bool(true)],
    ['general.size', kv.u64(123456789)],
    ['tokenizer.ggml.tokens', kv.strings(Array.from({ length: 300 }, (_, i) => `t${i}`))],
    ['tokenizer.ggml.token_type', kv.i32s(Array.from({ length: 300 }, () => 1))],
    ['tokenizer.ggml.scores', kv.f32s(Array.from({ length: 300 }, (_, i) => -i))],
    ['tokenizer.chat_template', kv.str('{% for m in messages %}{{ m.content }}{% endfor %}')],
  ];
  const file = writeGguf({
    metadata: meta,
    tensors: [
      t('token_embd.weight', 'F16', [64, 8], 1), t('blk.0.attn_q.weight', 'Q8_0', [64, 4], 2), t('blk.0.ffn_down_exps.weight', 'Q4_K', [256, 2, 2], 3),
      t('blk.0.ffn_up_exps.weight', 'Q6_K', [256, 3], 4), t('blk.0.ffn_gate_exps.weight', 'Q5_K', [256, 2], 5), t('blk.1.attn_k.weight', 'Q4_0', [32, 3], 6),
      t('output_norm.weight', 'F32', [8], 7), t('blk.1.bf', 'BF16', [6], 8),
    ],
  });
  // The data section starts after the last tensor info (name, n_dims, ne[1], type, offset), aligned to 32.
  const last = new TextEncoder().encode('blk.1.bf');
  let at = file.length - last.length;
  while (at > 0 && !last.every((b, i) => file[at + i] === b)) at--;
  dataStart = Math.ceil((at + last.length + 4 + 8 + 4 + 8) / 32) * 32;
  return file;
}

let seed: Uint8Array | null = null;
let dataStart = 0;

const EXTREMES = [0n, 1n, 2n, 3n, 4n, 31n, 32n, 33n, 255n, 256n, 0x7fffffffn, 0xffffffffn, 0x100000000n, 2n ** 53n, 2n ** 63n - 1n, 2n ** 64n - 1n];

export function ggufCase(r: Rng): GgufCase {
  seed ??= seedFile();
  const base = seed;
  const kinds = ['intact', 'flip-header', 'flip-any', 'u32-header', 'u64-header', 'truncate', 'append', 'insert', 'delete', 'swap-slices'] as const;
  const kind = pick(r, kinds);
  const f = base.slice();
  const d = new DataView(f.buffer);
  // Most damage goes to the header, where every byte is a length, count, type or offset.
  const hdr = () => int(r, dataStart);
  switch (kind) {
    case 'intact': return { kind, expect: 'ok', file: f };
    case 'flip-header': {
      for (let n = 1 + int(r, 4); n > 0; n--) f[hdr()] ^= 1 << int(r, 8);
      return { kind, expect: 'any', file: f };
    }
    case 'flip-any': {
      f[int(r, f.length)] ^= 1 << int(r, 8);
      return { kind, expect: 'any', file: f };
    }
    case 'u32-header': {
      const at = Math.min(hdr(), f.length - 4);
      d.setUint32(at, Number(pick(r, EXTREMES) & 0xffffffffn), true);
      return { kind, expect: 'any', file: f };
    }
    case 'u64-header': {
      const at = Math.min(hdr(), f.length - 8);
      d.setBigUint64(at, pick(r, EXTREMES), true);
      return { kind, expect: 'any', file: f };
    }
    case 'truncate': // the last tensor ends at the end of the file: any cut loses bytes
      return { kind, expect: 'error', file: f.slice(0, int(r, f.length)) };
    case 'append': {
      const out = new Uint8Array(f.length + 1 + int(r, 100));
      out.set(f);
      return { kind, expect: 'ok', file: out };
    }
    case 'insert': {
      const at = hdr(), n = 1 + int(r, 16);
      const out = new Uint8Array(f.length + n);
      out.set(f.subarray(0, at));
      for (let i = 0; i < n; i++) out[at + i] = int(r, 256);
      out.set(f.subarray(at), at + n);
      return { kind, expect: 'any', file: out };
    }
    case 'delete': {
      const at = hdr(), n = 1 + int(r, 16);
      const out = new Uint8Array(f.length - n);
      out.set(f.subarray(0, at));
      out.set(f.subarray(at + n), at);
      return { kind, expect: 'any', file: out };
    }
    default: {
      const a = hdr(), b = hdr(), n = 1 + int(r, 12);
      const tmp = f.slice(a, a + n);
      f.copyWithin(a, b, b + n);
      f.set(tmp.subarray(0, Math.min(tmp.length, f.length - b)), b);
      return { kind, expect: 'any', file: f };
    }
  }
}

class CheckFailed extends Error {}
const check = (cond: boolean, msg: string) => { if (!cond) throw new CheckFailed(msg); };
export { CheckFailed as GgufCheckFailed };

/** Reads the header and every tensor (dequantising the types webmoe decodes), checking the bounds. */
export async function readAndCheckGguf(file: Uint8Array): Promise<void> {
  let read = 0;
  const inner = bytesSource('fuzz.gguf', file);
  const src = { name: 'fuzz.gguf', size: inner.size, read: (o: number, n: number, s?: AbortSignal) => { read += n; return inner.read(o, n, s); } };
  const h = await readGgufHeader(src);
  check(h.dataStart <= file.length && h.dataStart % h.alignment === 0, `data start ${h.dataStart}`);
  for (const t of h.tensors.values()) {
    const n = t.ne.reduce((a, x) => a * x, 1);
    check(t.begin >= h.dataStart && t.end <= file.length && t.end - t.begin === (n / t.type.blockSize) * t.type.blockBytes, `tensor ${t.name} [${t.begin}, ${t.end}) of ${t.type.name} [${t.ne}]`);
    const bytes = await readGgufTensor([src], t);
    check(bytes.length === t.end - t.begin, `read ${bytes.length} bytes of ${t.name}`);
    if (isDecodable(t.type.name) && n <= 1 << 16) check(dequantize(t.type.name, bytes, n).length === n, `dequantised ${t.name}`);
  }
  check(read <= 2 * file.length + (1 << 20), `read ${read} bytes of a ${file.length}-byte file`);
}
