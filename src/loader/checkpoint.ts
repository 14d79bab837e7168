/**
 * Opening a Hugging Face checkpoint container: config.json (parsed and validated by the model family's
 * ConfigReader), the tokenizer files, and the safetensors tensor table (one model.safetensors, or shards
 * named by model.safetensors.index.json), all checked against the config before anything is allocated
 * on the GPU. Tensor bytes are then streamed in file order: sequential reads in bounded chunks, each
 * tensor's bytes read once. The loader knows no model: model/checkpoint.ts opens DeepSeek checkpoints.
 */
import { FormatError, ShapeError, WebMoeError } from '../errors';
import {
  countNonFinite, parseSafetensorsHeader, readHeaderLength, toFloat32, type SafetensorsDtype, type TensorInfo,
} from '../formats/safetensors';
import { checkFileName, type ModelSource } from './model-source';
import { asTypedAbort, throwIfAborted, type ByteSource, type LoadNotice } from './source';
import { loadTokenizer, type Tokenizer } from './tokenizer-file';

export type { LoadNotice };

export interface LoadProgress {
  phase: 'config' | 'index' | 'headers' | 'weights' | 'upload' | 'done';
  /** Tensor bytes delivered so far (weights phase); never decreases within one operation. */
  bytesLoaded: number;
  bytesTotal: number;
  tensorsLoaded: number;
  tensorsTotal: number;
  file?: string;
  /** Something the user should know about this load (a progress event may carry one; see LoadNotice). */
  notice?: LoadNotice;
}


export interface CheckpointTensor extends TensorInfo {
  /** The file holding the tensor ('overlay:<name>' for tensors from the overlay source). */
  file: string;
  /**
   * GGUF tensors stored in quantised blocks (Q8_0, Q4_K, …): the ggml type and the bytes of the blocks
   * (dtype/begin/end then describe the F32 view that readF32 gives).
   */
  gguf?: { type: string; bytes: number };
}

/** A GGUF tensor's quantised blocks as they are in the file (rows of whole blocks, ggml's layout). */
export interface GgufBlocks { type: string; bytes: Uint8Array }

export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Little-endian bytes. Owned by the receiver: the loader never reuses or mutates it. */
  data: Uint8Array;
  /**
   * Only when streamed with `ggufBlocks`: the tensor's quantised GGUF blocks, undecoded; `data` is then
   * empty (decode with formats/gguf-blocks.ts dequantize where F32 is needed).
   */
  gguf?: GgufBlocks;
  /**
   * stream(): the receiver may set this to the tensor's NaN / ±Inf count when it counted them in a pass
   * of its own (the WebAssembly packer does, while quantising); the loader then skips its scan of `data`.
   */
  nonFinite?: number;
}

/** The stream's read buffers (filled by stream(): see StreamOptions.readBuffers). */
export interface ReadBufferStats {
  /** Bytes of read buffers alive now: the chunk whose tensors are being handed out and the one being read ahead. */
  bytes: number;
  /** The most at once. */
  peakBytes: number;
}

export interface StreamOptions {
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /**
   * Borrowed tensor bytes: RawTensor.data is valid only until onTensor returns (or its promise settles);
   * the stream then reuses its memory for a later read. Saves allocating (and the page faults and
   * collection of) a fresh array per read; a receiver that keeps bytes copies them. Checkpoints that
   * cannot reuse buffers give owned bytes, which satisfies this too.
   */
  borrow?: boolean;
  /** Filled as the stream reads: its read buffers' bytes (a source whose reads are views counts none). */
  readBuffers?: ReadBufferStats;
  /**
   * Deliver GGUF tensors held in quantised blocks (CheckpointTensor.gguf) as those blocks (RawTensor.gguf)
   * instead of F32: for backends whose kernels decode the blocks (GPU 'gguf' storage). Other checkpoints ignore it.
   */
  ggufBlocks?: boolean;
}

/** What the loader needs of a model family's config.json (model/checkpoint.ts gives DeepSeek's). */
export interface ConfigReader<C> {
  /** Typed, validated config from the parsed config.json (throws ConfigError). */
  parse(raw: unknown): C;
  vocabSize(config: C): number;
  /** Throws when the checkpoint's tensors (names, shapes, dtypes) do not match the config. */
  checkTensors(config: C, tensors: Map<string, CheckpointTensor>): void;
  /** The FP8 scale tensor of weight `name`. */
  scaleInvName(name: string): string;
  /** The FP8 block-scale tile [rows, cols] of the config. */
  fp8BlockSize(config: C): [number, number];
}

export interface CheckpointOf<C> {
  config: C;
  tokenizerJson: unknown | null;
  tokenizerConfig: Record<string, unknown> | null;
  generationConfig: Record<string, unknown> | null;
  /** The tokenizer built from tokenizer.json (validated at open), or null when the model has none. */
  tokenizer: Tokenizer | null;
  /** Every tensor, in file order. */
  tensors: Map<string, CheckpointTensor>;
  /** Weight files in read order (base files, then overlay files). */
  files: string[];
  /**
   * Streams tensors in file order (sequential reads, each tensor's bytes read once, never the whole
   * file held twice), calling `onTensor` for each requested name (null = all); abortable.
   */
  stream(names: string[] | null, onTensor: (name: string, t: RawTensor) => void | Promise<void>, opts?: StreamOptions): Promise<void>;
  /** One tensor's raw bytes. */
  readRaw(name: string, signal?: AbortSignal): Promise<RawTensor>;
  /** One tensor as float32 (FP8 dequantised with its weight_scale_inv, BF16/F16 widened). */
  readF32(name: string, signal?: AbortSignal): Promise<Float32Array>;
  /** NaN/Inf found in tensors read so far: loaded, but reported. */
  nonFinite: { name: string; count: number }[];
  close(): Promise<void>;
}

export interface OpenOptions extends StreamOptions {
  /** Tensors here replace same-named ones (e.g. a calibrated gate bias saved as safetensors). */
  overlay?: ModelSource;
  /** Build and smoke-test the tokenizer at open (default true). */
  validateTokenizer?: boolean;
  /** Largest single read while streaming (default 64 MiB; one bigger tensor is read alone). */
  chunkBytes?: number;
}

const INDEX = 'model.safetensors.index.json';
const SINGLE = 'model.safetensors';

function parseJsonFile(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FormatError(`${file}: invalid JSON (${(e as Error).message})`, { file });
  }
}

function jsonObject(text: string | null, file: string): Record<string, unknown> | null {
  if (text === null) return null;
  const v = parseJsonFile(text, file);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new FormatError(`${file}: must be a JSON object`, { file });
  return v as Record<string, unknown>;
}

/** The index's weight_map, validated: tensor name → shard file name. */
function parseIndex(text: string, file: string): Map<string, string> {
  const o = jsonObject(text, file)!;
  const wm = o.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) throw new FormatError(`${file}: weight_map must be an object of tensor name → file`, { file });
  const map = new Map<string, string>();
  for (const [k, v] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof v !== 'string') throw new FormatError(`${file}: weight_map['${k}'] must be a file name, got ${JSON.stringify(v)}`, { file, tensor: k });
    checkFileName(v);
    map.set(k, v);
  }
  if (map.size === 0) throw new FormatError(`${file}: weight_map is empty`, { file });
  return map;
}

interface OpenFile {
  key: string;
  src: ByteSource;
}

async function readHeader(src: ByteSource, name: string, signal?: AbortSignal) {
  const size = await src.size();
  const first = await src.read(0, Math.min(8, size), signal);
  const n = readHeaderLength(first, size, name);
  const rest = await src.read(8, n, signal);
  const prefix = new Uint8Array(8 + n);
  prefix.set(first.subarray(0, 8));
  prefix.set(rest, 8);
  return parseSafetensorsHeader(prefix, size, name);
}

/** The weight files of a source: the index's shards, model.safetensors, or (overlay only) any *.safetensors. */
async function discover(src: ModelSource, what: string, anyName: boolean, signal?: AbortSignal): Promise<{ files: string[]; weightMap: Map<string, string> | null }> {
  const indexText = await src.text(INDEX);
  throwIfAborted(signal);
  if (indexText !== null) {
    const weightMap = parseIndex(indexText, `${what}${INDEX}`);
    return { files: [...new Set(weightMap.values())].sort(), weightMap };
  }
  if (anyName && src.list) {
    const files = (await src.list()).filter((f) => f.endsWith('.safetensors')).sort();
    if (files.length) return { files, weightMap: null };
  }
  return { files: [SINGLE], weightMap: null };
}

/** Opens the checkpoint at `src`, reading its config.json with `reader`. */
export async function openCheckpointWith<C>(reader: ConfigReader<C>, src: ModelSource, opts: OpenOptions = {}): Promise<CheckpointOf<C>> {
  const { signal } = opts;
  try {
    return await openInner(reader, src, opts);
  } catch (e) {
    throw asTypedAbort(e, signal);
  }
}

async function openInner<C>(reader: ConfigReader<C>, src: ModelSource, opts: OpenOptions): Promise<CheckpointOf<C>> {
  const { signal, onProgress } = opts;
  const emit = (p: Partial<LoadProgress> & { phase: LoadProgress['phase'] }) =>
    onProgress?.({ bytesLoaded: 0, bytesTotal: 0, tensorsLoaded: 0, tensorsTotal: 0, ...p });

  throwIfAborted(signal);
  emit({ phase: 'config', file: 'config.json' });
  const configText = await src.text('config.json');
  if (configText === null) throw new WebMoeError('NOT_FOUND', `${src.description}: no config.json`, { file: 'config.json' });
  const config = reader.parse(parseJsonFile(configText, 'config.json'));
  throwIfAborted(signal);

  const tokText = await src.text('tokenizer.json');
  const tokenizerJson = tokText === null ? null : parseJsonFile(tokText, 'tokenizer.json');
  let tokenizerConfig = jsonObject(await src.text('tokenizer_config.json'), 'tokenizer_config.json');
  // Newer checkpoints (gpt-oss among them) keep the chat template in its own file, chat_template.jinja, as
  // transformers saves it: read it when tokenizer_config.json has no chat_template.
  if (tokenizerConfig && tokenizerConfig.chat_template === undefined) {
    const jinja = await src.text('chat_template.jinja');
    if (jinja !== null) tokenizerConfig = { ...tokenizerConfig, chat_template: jinja };
  }
  const generationConfig = jsonObject(await src.text('generation_config.json'), 'generation_config.json');
  const tokenizer = tokenizerJson !== null && opts.validateTokenizer !== false ? loadTokenizer(tokenizerJson, tokenizerConfig, { vocabSize: reader.vocabSize(config) }) : null;
  throwIfAborted(signal);

  emit({ phase: 'index' });
  const base = await discover(src, '', false, signal);
  const overlay = opts.overlay ? await discover(opts.overlay, 'overlay ', true, signal) : null;

  const tensors = new Map<string, CheckpointTensor>();
  const files: OpenFile[] = [];
  let bytesTotal = 0;
  const addFile = async (ms: ModelSource, name: string, key: string, isOverlay: boolean) => {
    throwIfAborted(signal);
    emit({ phase: 'headers', file: key, bytesTotal, tensorsTotal: tensors.size });
    const bs = await ms.open(name);
    if (!bs) {
      if (name === SINGLE && !isOverlay) throw new WebMoeError('NOT_FOUND', `${ms.description}: no ${SINGLE} and no ${INDEX}`, { file: name });
      throw new WebMoeError('NOT_FOUND', `${isOverlay ? 'overlay ' : ''}${name} is missing from ${ms.description}`, { file: name });
    }
    files.push({ key, src: bs });
    const h = await readHeader(bs, key, signal);
    for (const t of h.tensors.values()) {
      const prev = tensors.get(t.name);
      if (prev && !isOverlay) throw new FormatError(`tensor '${t.name}' is in both ${prev.file} and ${key}`, { tensor: t.name });
      if (prev && isOverlay) {
        if (prev.file.startsWith('overlay:')) throw new FormatError(`tensor '${t.name}' is in both ${prev.file} and ${key}`, { tensor: t.name });
        if (prev.shape.length !== t.shape.length || prev.shape.some((d, i) => d !== t.shape[i])) {
          throw new ShapeError(`overlay tensor '${t.name}' has shape [${t.shape}] but the checkpoint's is [${prev.shape}]`);
        }
        bytesTotal -= prev.end - prev.begin;
        tensors.delete(t.name);
      }
      tensors.set(t.name, { ...t, file: key });
      bytesTotal += t.end - t.begin;
    }
    return h;
  };

  const headerNames = new Map<string, Set<string>>();
  for (const f of base.files) {
    const h = await addFile(src, f, f, false);
    headerNames.set(f, new Set(h.tensors.keys()));
  }
  if (base.weightMap) {
    for (const [t, f] of base.weightMap) {
      if (!headerNames.get(f)!.has(t)) throw new FormatError(`${INDEX} puts '${t}' in ${f}, but ${f} has no such tensor`, { tensor: t, file: f });
    }
  }
  if (overlay && opts.overlay) {
    for (const f of overlay.files) {
      const h = await addFile(opts.overlay, f, `overlay:${f}`, true);
      if (overlay.weightMap) {
        for (const [t, ff] of overlay.weightMap) if (ff === f && !h.tensors.has(t)) throw new FormatError(`overlay ${INDEX} puts '${t}' in ${f}, but ${f} has no such tensor`, { tensor: t, file: f });
      }
    }
  }
  reader.checkTensors(config, tensors);

  // File order for streaming: files in read order, then offsets.
  const fileRank = new Map(files.map((f, i) => [f.key, i]));
  const ordered = [...tensors.values()].sort((a, b) => fileRank.get(a.file)! - fileRank.get(b.file)! || a.begin - b.begin);
  const table = new Map(ordered.map((t) => [t.name, t]));
  const sourceOf = new Map(files.map((f) => [f.key, f.src]));
  const nonFinite: { name: string; count: number }[] = [];
  const nfSeen = new Set<string>();
  const noteNonFinite = (name: string, dtype: SafetensorsDtype, data: Uint8Array, counted?: number) => {
    if (nfSeen.has(name)) return;
    const c = counted ?? countNonFinite(dtype, data);
    if (c > 0) {
      nfSeen.add(name);
      nonFinite.push({ name, count: c });
    }
  };
  const lookup = (name: string) => {
    const t = table.get(name);
    if (!t) throw new WebMoeError('NOT_FOUND', `checkpoint has no tensor '${name}'`, { tensor: name });
    return t;
  };
  const chunkBytes = Math.max(1, opts.chunkBytes ?? 64 << 20);
  const maxGap = Math.min(1 << 20, chunkBytes);

  const readRaw = async (name: string, sig?: AbortSignal): Promise<RawTensor> => {
    const t = lookup(name);
    throwIfAborted(sig);
    try {
      const data = await sourceOf.get(t.file)!.read(t.begin, t.end - t.begin, sig);
      noteNonFinite(name, t.dtype, data);
      return { dtype: t.dtype, shape: t.shape.slice(), data };
    } catch (e) {
      throw asTypedAbort(e, sig);
    }
  };

  emit({ phase: 'headers', bytesTotal, tensorsTotal: table.size });

  const ckpt: CheckpointOf<C> = {
    config, tokenizerJson, tokenizerConfig, generationConfig, tokenizer,
    tensors: table,
    files: files.map((f) => f.key),
    nonFinite,
    readRaw,
    async readF32(name, sig) {
      const t = await readRaw(name, sig);
      if (t.dtype === 'F8_E4M3') {
        const sn = reader.scaleInvName(name);
        if (!table.has(sn)) throw new FormatError(`FP8 tensor '${name}' has no '${sn}'`, { tensor: name });
        const s = await readRaw(sn, sig);
        const scaleInv = toFloat32(s.dtype, s.data);
        return toFloat32(t.dtype, t.data, { scaleInv, shape: t.shape, block: reader.fp8BlockSize(config) });
      }
      return toFloat32(t.dtype, t.data);
    },
    async stream(names, onTensor, sopts = {}) {
      const sig = sopts.signal;
      try {
        await streamInner(names, onTensor, sopts);
      } catch (e) {
        throw asTypedAbort(e, sig);
      }
    },
    async close() {
      for (const f of files) await f.src.close?.();
    },
  };

  async function streamInner(names: string[] | null, onTensor: (name: string, t: RawTensor) => void | Promise<void>, sopts: StreamOptions) {
    const sig = sopts.signal;
    let list: CheckpointTensor[];
    if (names === null) list = ordered;
    else {
      const wanted = new Set(names);
      for (const n of wanted) lookup(n);
      list = ordered.filter((t) => wanted.has(t.name));
    }
    const p: LoadProgress = { phase: 'weights', bytesLoaded: 0, bytesTotal: list.reduce((a, t) => a + (t.end - t.begin), 0), tensorsLoaded: 0, tensorsTotal: list.length };
    const report = (file?: string) => sopts.onProgress?.({ ...p, file });
    report(list[0]?.file);

    // Chunks: consecutive tensors of one file, small gaps read through, bounded size (one bigger tensor alone).
    const chunks: { i: number; j: number; file: string; begin: number; end: number }[] = [];
    for (let i = 0; i < list.length; ) {
      const first = list[i];
      let j = i + 1;
      while (j < list.length && list[j].file === first.file && list[j].begin - list[j - 1].end <= maxGap && list[j].end - first.begin <= chunkBytes) j++;
      chunks.push({ i, j, file: first.file, begin: first.begin, end: list[j - 1].end });
      i = j;
    }

    // Read buffers. The next chunk is read while the tensors of the current one are handed out (one
    // chunk ahead, never more), so host memory for reading stays ≤ 2 × max(chunkBytes, largest tensor).
    // Borrowed: at most two buffers, reused from chunk to chunk (a free one too small for a bigger
    // tensor is dropped for a bigger one).
    const stats = sopts.readBuffers;
    const account = (n: number) => {
      if (!stats) return;
      stats.bytes += n;
      stats.peakBytes = Math.max(stats.peakBytes, stats.bytes);
    };
    const maxChunk = chunks.reduce((a, c) => Math.max(a, c.end - c.begin), 0);
    const free: Uint8Array[] = [];
    const acquire = (n: number): Uint8Array => {
      let best = -1;
      for (let k = 0; k < free.length; k++) if (free[k].length >= n && (best < 0 || free[k].length < free[best].length)) best = k;
      if (best >= 0) return free.splice(best, 1)[0];
      free.length = 0;
      return new Uint8Array(Math.max(n, Math.min(chunkBytes, maxChunk)));
    };
    interface Pending { bytes: Promise<Uint8Array>; buffer?: Uint8Array; counted: number }
    // Our own signal for the reads: a read ahead is cancelled when the stream stops early (an error in onTensor).
    const ac = new AbortController();
    const onAbort = () => ac.abort(sig!.reason);
    sig?.addEventListener('abort', onAbort, { once: true });
    if (sig?.aborted) onAbort();
    const start = (c: (typeof chunks)[number]): Pending => {
      const src = sourceOf.get(c.file)!;
      const n = c.end - c.begin;
      const buffer = sopts.borrow && !src.views ? acquire(n) : undefined;
      const counted = src.views ? 0 : buffer ? buffer.length : n;
      account(counted);
      const bytes = src.read(c.begin, n, ac.signal, buffer);
      bytes.catch(() => {}); // awaited below, or abandoned when the stream stops first
      return { bytes, buffer, counted };
    };
    let next: Pending | null = chunks.length ? start(chunks[0]) : null;
    let cur: Pending | null = null;
    try {
      for (let c = 0; c < chunks.length; c++) {
        throwIfAborted(sig);
        const { i, j, file, begin, end } = chunks[c];
        cur = next!;
        next = null;
        const bytes = await cur.bytes;
        if (bytes.length !== end - begin) throw new FormatError(`${file}: read ${bytes.length} of ${end - begin} bytes`, { file });
        // Done with a file: release its stream (lets a cache-filling download continue on its own).
        const lastOfFile = c + 1 === chunks.length || chunks[c + 1].file !== file;
        if (lastOfFile) await sourceOf.get(file)!.close?.();
        if (c + 1 < chunks.length) next = start(chunks[c + 1]);
        for (let k = i; k < j; k++) {
          throwIfAborted(sig);
          const t = list[k];
          const data = j - i === 1 ? bytes : bytes.subarray(t.begin - begin, t.end - begin);
          const raw: RawTensor = { dtype: t.dtype, shape: t.shape.slice(), data };
          await onTensor(t.name, raw);
          // After the receiver: it may have counted the non-finite values already (RawTensor.nonFinite).
          noteNonFinite(t.name, t.dtype, data, raw.nonFinite);
          p.bytesLoaded += t.end - t.begin;
          p.tensorsLoaded++;
          report(t.file);
        }
        // Chunk c + 1 is being read already; this buffer would serve chunk c + 2. One bigger than that
        // chunk and than the usual chunk (a large tensor's, the embedding's) is dropped, not kept
        // through the layers.
        const size = (k: number) => (k < chunks.length ? chunks[k].end - chunks[k].begin : 0);
        if (cur.buffer && cur.buffer.length <= Math.max(size(c + 2), Math.min(chunkBytes, maxChunk))) free.push(cur.buffer);
        account(-cur.counted);
        cur = null;
      }
    } finally {
      sig?.removeEventListener('abort', onAbort);
      if (cur) account(-cur.counted);
      if (next) {
        // Stopped early: cancel the read ahead and let it settle before its buffer is dropped.
        ac.abort();
        await next.bytes.catch(() => {});
        account(-next.counted);
      }
    }
    p.phase = 'done';
    report();
  }

  return ckpt;
}
