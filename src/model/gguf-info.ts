/**
 * What a GGUF holds, from its headers only (no tensor data read): the architecture, the config webmoe
 * reads from the metadata (deepseek2, or one of the families of gguf-families.ts), and the tensors per ggml type with their bytes — what
 * `webmoe info --model x.gguf` prints.
 */
import { WebMoeError } from '../errors';
import { metaNumber, metaString, readGgufModel, type RangeReader } from '../formats/gguf';
import { deepseek2ConfigFromGguf } from './gguf-deepseek2';
import { familyConfigFromGguf, isFamilyGgufArch } from './gguf-families';

export interface GgufSummary {
  format: 'gguf';
  files: string[];
  version: number;
  architecture: string | null;
  name: string | null;
  /** llama.cpp's general.file_type (llama_ftype: 0 F32, 1 F16, 7 Q8_0, 15 Q4_K_M, …), when written. */
  fileType: number | null;
  /** The HF-style config webmoe reads from the metadata, or null with `unsupported` saying why. */
  config: Record<string, unknown> | null;
  unsupported?: string;
  tokenizer: string | null;
  metadataKeys: number;
  tensors: number;
  /** Per ggml type: tensors, weights, bytes. */
  tensorTypes: Record<string, { tensors: number; weights: number; bytes: number }>;
  tensorBytes: number;
  weights: number;
  bitsPerWeight: number;
  fileBytes: number;
}

export async function ggufSummary(sources: RangeReader[], signal?: AbortSignal): Promise<GgufSummary> {
  const h = await readGgufModel(sources, { signal });
  const tensorTypes: GgufSummary['tensorTypes'] = {};
  let tensorBytes = 0, weights = 0;
  for (const t of h.tensors.values()) {
    const n = t.ne.reduce((a, d) => a * d, 1);
    const e = (tensorTypes[t.type.name] ??= { tensors: 0, weights: 0, bytes: 0 });
    e.tensors++;
    e.weights += n;
    e.bytes += t.end - t.begin;
    tensorBytes += t.end - t.begin;
    weights += n;
  }
  let config: Record<string, unknown> | null = null, unsupported: string | undefined;
  try {
    config = isFamilyGgufArch(metaString(h, 'general.architecture')) ? familyConfigFromGguf(h) : deepseek2ConfigFromGguf(h);
  } catch (e) {
    if (!(e instanceof WebMoeError)) throw e;
    unsupported = e.message;
  }
  return {
    format: 'gguf',
    files: sources.map((s) => s.name),
    version: h.splits[0].version,
    architecture: metaString(h, 'general.architecture') ?? null,
    name: metaString(h, 'general.name') ?? null,
    fileType: metaNumber(h, 'general.file_type') ?? null,
    config,
    ...(unsupported ? { unsupported } : {}),
    tokenizer: metaString(h, 'tokenizer.ggml.model') ?? null,
    metadataKeys: h.metadata.size,
    tensors: h.tensors.size,
    tensorTypes,
    tensorBytes,
    weights,
    bitsPerWeight: weights ? +((tensorBytes * 8) / weights).toFixed(4) : 0,
    fileBytes: h.splits.reduce((a, s) => a + s.fileSize, 0),
  };
}
