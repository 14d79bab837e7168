/**
 * A checkpoint → one GGUF file (deepseek2, or the family's llama.cpp layout: gguf-families.ts), the way llama.cpp's converter and quantiser lay it out:
 *  - f32 / f16 / q8_0: every matrix in that type (llama.cpp's `--outtype f16` and `llama-quantize … Q8_0`);
 *  - q4_k_m: llama-quantize's Q4_K_M mix (`llama_tensor_get_type` in src/llama-quant.cpp): Q4_K by
 *    default; `output.weight` Q6_K; every `ffn_down*` tensor (dense, shared and stacked experts) Q6_K
 *    in the layers where `use_more_bits(layer, n_layers)` holds (the first and last eighth, and every
 *    third layer between), else Q4_K; `attn_v.weight` likewise (deepseek2's split MLA has no attn_v, so
 *    nothing matches there). Rows that are not whole 256-weight blocks fall back as llama.cpp does
 *    (Q4_K → Q5_0, Q6_K → Q8_0, else F16), except that webmoe has no Q5_0, so Q4_K falls back to Q8_0.
 * In every type the router (`ffn_gate_inp`) and the 1-D tensors (norms, exp_probs_b) stay F32, as
 * llama.cpp keeps them. Metadata: deepseek2Metadata (with the tokenizer's keys) plus general.file_type /
 * quantization_version.
 * `streamCheckpointToGguf` writes the file in order, one output tensor (a stacked expert tensor one
 * expert) at a time, so host memory stays near the largest checkpoint tensor whatever the model's size;
 * `checkpointToGguf` collects the same bytes in memory (fixtures, tests, the bench).
 */
import { AbortError, UnsupportedError } from '../errors';
import type { DecodableType } from '../formats/gguf-blocks';
import { kv, writeGgufStream } from '../formats/gguf-write';
import type { GgufKv } from '../formats/gguf';
import type { Checkpoint } from './checkpoint';
import type { ModelConfig } from './config';
import { GGUF_BLOCK_WEIGHTS, deepseek2GgufPlan, deepseek2Metadata, type GgufTensorPlan, type GgufTypeChooser } from './gguf-deepseek2';
import { familyGguf, familyGgufMetadata, gptOssGguf } from './gguf-families';

export const GGUF_QUANTS = ['f32', 'f16', 'q8_0', 'q4_k_m'] as const;
export type GgufQuant = (typeof GGUF_QUANTS)[number];

/** llama.cpp's llama_ftype numbers (general.file_type). */
const FILE_TYPE: Record<GgufQuant, number> = { f32: 0, f16: 1, q8_0: 7, q4_k_m: 15 };
/** ggml's GGML_QNT_VERSION, written by llama-quantize for quantised files. */
const QUANTIZATION_VERSION = 2;

/** llama.cpp's use_more_bits: the first and last eighth of the layers, and every third one between. */
export function useMoreBits(layer: number, nLayers: number): boolean {
  const e = Math.floor(nLayers / 8);
  return layer < e || layer >= Math.floor((7 * nLayers) / 8) || (layer - e) % 3 === 2;
}

const fits = (t: DecodableType, ne: number[]) => ne[0] % GGUF_BLOCK_WEIGHTS[t] === 0;

/** llama.cpp's fallback for rows that are not whole blocks (Q5_0 for Q4_K is Q8_0 here: see the file comment). */
function fallback(t: DecodableType, ne: number[]): DecodableType {
  if (fits(t, ne)) return t;
  if (t === 'Q4_K' || t === 'Q6_K' || t === 'Q5_K') return fits('Q8_0', ne) ? 'Q8_0' : 'F16';
  return fits('F16', ne) ? 'F16' : 'F32';
}

/** The GGUF type of each matrix for `quant` (see the file comment). */
export function ggufTypeChooser(cfg: ModelConfig, quant: GgufQuant): GgufTypeChooser {
  return (name, ne) => {
    if (name.includes('ffn_gate_inp')) return 'F32';
    if (quant === 'f32') return 'F32';
    if (quant === 'f16') return 'F16';
    if (quant === 'q8_0') return fallback('Q8_0', ne);
    const layer = /^blk\.(\d+)\./.exec(name);
    let t: DecodableType = 'Q4_K';
    if (name === 'output.weight') t = 'Q6_K';
    else if (layer && (name.includes('ffn_down') || name.includes('attn_v.weight')) && useMoreBits(Number(layer[1]), cfg.numLayers)) t = 'Q6_K';
    return fallback(t, ne);
  };
}

export interface GgufConvertOptions {
  /** Called after each checkpoint tensor is read (done of total). */
  onTensor?: (name: string, done: number, total: number) => void;
  signal?: AbortSignal;
  /** Extra metadata (e.g. general.name, tokenizer keys), written after the architecture's. */
  metadata?: [string, GgufKv][];
}

export interface GgufConvertResult {
  /** Bytes of the file. */
  fileBytes: number;
  /** Tensors per GGUF type, e.g. { Q4_K: 30, Q6_K: 9, F32: 20 }. */
  types: Record<string, number>;
  tensors: number;
}

/**
 * Writes `ck` as a deepseek2 GGUF through `write`, in file order (header, then each tensor's data as it
 * is converted). `write` is awaited before the next checkpoint tensor is read: host memory holds one
 * checkpoint tensor (as f32) and its converted bytes at a time.
 */
export async function streamCheckpointToGguf(ck: Checkpoint, quant: GgufQuant, write: (bytes: Uint8Array) => Promise<void> | void, opts: GgufConvertOptions = {}): Promise<GgufConvertResult> {
  if (!GGUF_QUANTS.includes(quant)) throw new UnsupportedError(`GGUF quantisation '${quant}' is not one webmoe writes (${GGUF_QUANTS.join(', ')})`);
  const deepseek = ck.config.family === 'deepseek';
  const chooser = ggufTypeChooser(ck.config, quant);
  // Multi-Token Prediction layers stay out (deepseek2GgufPlan leaves them out too; not read at all here).
  const total = deepseek ? new Set(deepseek2GgufPlan(ck.config, ck.tensors, chooser).flatMap((t) => t.sources)).size : ck.tensors.size;
  let done = 0;
  // kv_b_proj makes two GGUF tensors in a row: the last read is kept for the second.
  let last: { name: string; f: Float32Array } | null = null;
  const read = async (n: string) => {
    if (opts.signal?.aborted) throw new AbortError();
    if (last?.name === n) return last.f;
    last = null;
    const f = await ck.readF32(n, opts.signal);
    last = { name: n, f };
    opts.onTensor?.(n, ++done, total);
    return f;
  };
  // GPT-OSS: its MXFP4 expert blocks as bytes (never widened), the rest as f32.
  const readRaw = async (n: string) => {
    if (ck.tensors.get(n)?.dtype !== 'U8') { const f = await read(n); return { bytes: null, f32: f }; }
    if (opts.signal?.aborted) throw new AbortError();
    const raw = await ck.readRaw(n, opts.signal);
    opts.onTensor?.(n, ++done, total);
    return { bytes: raw.data, f32: null };
  };
  // DeepSeek: llama.cpp's deepseek2 layout, streamed tensor by tensor; the other families: theirs
  // (gguf-families.ts), converted in memory first (not streamed yet).
  const plan: GgufTensorPlan[] = deepseek
    ? deepseek2GgufPlan(ck.config, ck.tensors, chooser)
    : (await (ck.config.family === 'gpt_oss' ? gptOssGguf(ck.config, readRaw, ck.tensors.keys(), chooser) : familyGguf(ck.config, read, ck.tensors.keys(), chooser)))
      .map((t) => ({ ...t, type: t.type as GgufTensorPlan['type'], sources: [], async *chunks() { yield t.data; } }));
  // The tokenizer goes in as llama.cpp's tokenizer.ggml.* keys (a weights-only folder makes a weights-only file).
  const tokenizer = ck.tokenizerJson ? { json: ck.tokenizerJson, config: ck.tokenizerConfig } : undefined;
  const metadata: [string, GgufKv][] = [...(deepseek ? deepseek2Metadata : familyGgufMetadata)(ck.config, tokenizer), ['general.file_type', kv.u32(FILE_TYPE[quant])]];
  if (quant === 'q8_0' || quant === 'q4_k_m') metadata.push(['general.quantization_version', kv.u32(QUANTIZATION_VERSION)]);
  metadata.push(...(opts.metadata ?? []));
  const types: Record<string, number> = {};
  for (const t of plan) types[t.type] = (types[t.type] ?? 0) + 1;
  const fileBytes = await writeGgufStream({ metadata, tensors: plan }, (i) => plan[i].chunks(read), write);
  return { fileBytes, types, tensors: plan.length };
}

/** streamCheckpointToGguf's file, in memory. */
export async function checkpointToGguf(ck: Checkpoint, quant: GgufQuant, opts: GgufConvertOptions = {}): Promise<GgufConvertResult & { file: Uint8Array }> {
  const parts: Uint8Array[] = [];
  const r = await streamCheckpointToGguf(ck, quant, (b) => { parts.push(b); }, opts);
  const file = new Uint8Array(r.fileBytes);
  parts.reduce((o, p) => (file.set(p, o), o + p.length), 0);
  return { ...r, file };
}
