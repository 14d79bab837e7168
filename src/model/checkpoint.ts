/**
 * DeepSeek checkpoints: the loader's container opening (loader/checkpoint.ts) with config.json read as
 * a ModelConfig and the tensors checked against the architecture's tensor table — or a llama.cpp GGUF
 * (model/gguf-deepseek2.ts), chosen here from what the model reference names (see openCheckpoint).
 */
import { ArgumentError, FormatError, UnsupportedError, WebMoeError } from '../errors';
import { GGUF_MAGIC, ggufSplitNames, parseSplitName } from '../formats/gguf';
import { openCheckpointWith, type CheckpointOf, type ConfigReader, type LoadProgress, type OpenOptions } from '../loader/checkpoint';
import { isGgufName, type ModelSource } from '../loader/model-source';
import { asTypedAbort, throwIfAborted, type ByteSource } from '../loader/source';
import { fp8BlockSize, parseConfig, scaleInvName, type ModelConfig } from './config';
import { openGgufCheckpoint } from './gguf-deepseek2';
import { checkTensorsAgainstConfig } from './tensors';

export type { LoadProgress, LoadNotice, OpenOptions, RawTensor, StreamOptions, CheckpointTensor } from '../loader/checkpoint';

/** An opened DeepSeek-V2/V3 checkpoint. */
export type Checkpoint = CheckpointOf<ModelConfig>;

export const deepseekConfigReader: ConfigReader<ModelConfig> = {
  parse: parseConfig,
  vocabSize: (c) => c.vocabSize,
  checkTensors: checkTensorsAgainstConfig,
  scaleInvName,
  fp8BlockSize,
};

/** A file naming a safetensors model (its folder is the model). */
const SAFETENSORS_FILE = /^config\.json$|\.safetensors$|\.safetensors\.index\.json$/;

/** One GGUF model in a file list: a single file, or the complete split set named by its first split. */
function ggufModelsIn(names: string[]): string[][] {
  const sets = new Map<string, string[]>();
  for (const n of names.filter((x) => isGgufName(x) && !x.includes('/')).sort()) {
    const s = parseSplitName(n);
    const key = s ? ggufSplitNames(n)[0] : n;
    if (!sets.has(key)) sets.set(key, s ? ggufSplitNames(n) : [n]);
  }
  return [...sets.values()];
}

const describeSet = (set: string[]) => (set.length > 1 ? `${set[0]} (${set.length} splits)` : set[0]);

/**
 * The GGUF files (in split order) to open for `src`, or null for a safetensors model:
 *  - a named file: a safetensors model's config.json / *.safetensors → null; a .gguf name → it (a
 *    split name brings its siblings); any other name must start with the GGUF magic;
 *  - a folder: no .gguf in it → null; one GGUF model (file or split set) and no config.json → it;
 *    a GGUF beside a safetensors model, or several GGUF models → ArgumentError saying how to name one.
 *  Sources that cannot list (a folder URL) are safetensors folders.
 */
export async function findGgufFiles(src: ModelSource, signal?: AbortSignal): Promise<string[] | null> {
  if (src.named !== undefined) {
    if (SAFETENSORS_FILE.test(src.named)) return null;
    // A .gguf name is taken at its word (the reader checks the magic; over HTTP another open here
    // would cost a second header probe); another name must show the magic.
    if (isGgufName(src.named)) return ggufSplitNames(src.named);
    const bs = await src.open(src.named);
    if (!bs) throw new WebMoeError('NOT_FOUND', `${src.description}: not found`, { file: src.named });
    try {
      const size = await bs.size();
      const head = size >= 4 ? await bs.read(0, 4, signal) : new Uint8Array(0);
      const magic = head.length === 4 ? new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) : -1;
      if (magic !== GGUF_MAGIC) {
        throw new FormatError(`${src.description} is not a GGUF file (it does not start with "GGUF"); name a .gguf file, or the folder (or config.json) of a safetensors model`, { file: src.named });
      }
    } finally {
      await bs.close?.();
    }
    return ggufSplitNames(src.named);
  }
  if (!src.list) return null;
  let names: string[];
  try {
    names = await src.list();
  } catch (e) {
    // An unreadable folder: the safetensors path says what is missing (no config.json).
    if (e instanceof WebMoeError && e.code === 'NOT_FOUND') return null;
    throw e;
  }
  throwIfAborted(signal);
  const models = ggufModelsIn(names);
  if (models.length === 0) return null;
  const listed = models.map(describeSet).join(', ');
  if (names.includes('config.json')) {
    throw new ArgumentError(`${src.description} holds a safetensors model (config.json) and GGUF ${listed}: name the one to load — the .gguf file (${src.description}/${models[0][0]}), or the folder's config.json for the safetensors model`);
  }
  if (models.length > 1) throw new ArgumentError(`${src.description} holds ${models.length} GGUF models (${listed}): name the file to load, e.g. ${src.description}/${models[0][0]}`);
  const missing = models[0].filter((n) => !names.includes(n));
  if (missing.length) throw new WebMoeError('NOT_FOUND', `${src.description}: the split GGUF ${models[0][0]} lacks ${missing.join(', ')}`, { file: missing[0] });
  return models[0];
}

/** Byte sources of `files` (findGgufFiles' list) in `src`; a missing one is NOT_FOUND (the opened ones are closed). */
export async function openGgufFiles(src: ModelSource, files: string[], signal?: AbortSignal): Promise<ByteSource[]> {
  const sources: ByteSource[] = [];
  try {
    for (const f of files) {
      throwIfAborted(signal);
      const bs = await src.open(f);
      if (!bs) throw new WebMoeError('NOT_FOUND', `${f} is missing from ${src.description}`, { file: f });
      sources.push(bs);
    }
    return sources;
  } catch (e) {
    for (const s of sources) await s.close?.();
    throw e;
  }
}

async function openGguf(src: ModelSource, files: string[], opts: OpenOptions): Promise<Checkpoint> {
  const { signal, onProgress } = opts;
  const emit = (p: Partial<LoadProgress> & { phase: LoadProgress['phase'] }) => onProgress?.({ bytesLoaded: 0, bytesTotal: 0, tensorsLoaded: 0, tensorsTotal: 0, ...p });
  if (opts.overlay) throw new UnsupportedError(`${src.description}: an overlay (e.g. calibrated gate biases) loads over safetensors models only, not over a GGUF`);
  emit({ phase: 'config', file: files[0] });
  const sources = await openGgufFiles(src, files, signal);
  try {
    emit({ phase: 'headers', file: files[0] });
    const ck = await openGgufCheckpoint(sources, { signal });
    // As the safetensors stream does: release the files once streamed (a later read reopens them), so
    // a model whose upload finished holds no file handles.
    const stream = ck.stream.bind(ck);
    ck.stream = async (names, onTensor, sopts = {}) => {
      try {
        await stream(names, onTensor, sopts);
      } catch (e) {
        throw asTypedAbort(e, sopts.signal);
      }
      for (const s of sources) await s.close?.();
    };
    let bytesTotal = 0;
    for (const t of ck.tensors.values()) bytesTotal += t.end - t.begin;
    emit({ phase: 'headers', bytesTotal, tensorsTotal: ck.tensors.size });
    return ck;
  } catch (e) {
    for (const s of sources) await s.close?.();
    throw e;
  }
}

/**
 * Opens a DeepSeek checkpoint: config, tokenizer files and tensor table, validated before any GPU work.
 * A safetensors folder (config.json, *.safetensors), or a llama.cpp deepseek2 GGUF: the file the
 * reference names (`…/model.gguf`, the first split, a picked File), or the only GGUF model of a folder
 * that has no config.json (see findGgufFiles for the ambiguous cases, which are errors).
 */
export async function openCheckpoint(src: ModelSource, opts: OpenOptions = {}): Promise<Checkpoint> {
  let gguf: string[] | null;
  try {
    throwIfAborted(opts.signal);
    gguf = await findGgufFiles(src, opts.signal);
    if (gguf) return await openGguf(src, gguf, opts);
  } catch (e) {
    throw asTypedAbort(e, opts.signal);
  }
  return openCheckpointWith(deepseekConfigReader, src, opts);
}
