/**
 * Builds a backend's weights from a checkpoint, streaming tensors in file order. Each tensor is turned
 * into its backend form as soon as it (and its FP8 scale, for FP8 weights) has arrived. Routed experts go
 * to the backend's expertSink one matrix at a time when it has one (the GPU backend: packed and written
 * straight into the layer's stacks), so the host holds a few tensors at once, never a layer; a backend
 * without one (the CPU reference) gets a layer's experts together.
 */
import { ggufToF32, hostMatrixToF32, type AttentionWeights, type Backend, type ExpertSink, type HostExpert, type HostMatrix, type HostMoe, type LayerWeights, type ModelWeights, type MtpWeights } from './deepseek';
import type { GgufBlocks } from '../loader/checkpoint';
import type { ModelConfig } from './config';
import { isMoeLayer } from './config';
import { expectedTensorShapes, mtpLayersPresent, mtpTensorName, mtpTensors, parseMtpTensorName, parseTensorName, tensorName, tensorsToLoad } from './tensors';
import { SPARSE_SUFFIXES, sparseFromTensors, sameSparsity } from '../sparse/tensors';
import { sparsityLabel, type SparsityOption } from '../sparse/apply';
import { unpack } from '../sparse/formats';
import type { Checkpoint, LoadProgress } from '../model/checkpoint';
import { toFloat32, type SafetensorsDtype } from '../formats/safetensors';
import { FormatError, ShapeError, UnsupportedError } from '../errors';

interface RawTensor { dtype: SafetensorsDtype; shape: number[]; data: Uint8Array; gguf?: GgufBlocks; /** Set when a sink counted its NaN / ±Inf values (loader/checkpoint.ts RawTensor). */ nonFinite?: number }

/** Checkpoint dtypes a backend may take as bytes (HostMatrix.raw, ExpertSink.putRaw). */
const RAW_SOURCE = { BF16: 'bf16', F16: 'f16', F32: 'f32' } as const;

/** A raw tensor as f32 (GGUF blocks decoded on the host: vectors, the router, when a backend needs f32). */
const f32Of = (raw: RawTensor): Float32Array => (raw.gguf ? ggufToF32(raw.gguf, raw.shape.reduce((a, d) => a * d, 1)) : toFloat32(raw.dtype, raw.data));
type Part = Float32Array | GgufBlocks;
const isBlocks = (p: Part | undefined): p is GgufBlocks => !!p && !(p instanceof Float32Array);

/** What buildWeights staged on the host: its own buffers (raw tensors it holds, f32 copies), not the source's read buffers. */
export interface LoadStaging {
  /** Most bytes the loader held at once. */
  peakHostBytes: number;
  /** The largest single tensor as f32 (the unit host memory is bounded by). */
  largestTensorF32Bytes: number;
  /** Checkpoint bytes that went through the loader. */
  checkpointBytes: number;
}

export async function buildWeights<T, W, E>(
  be: Backend<T, W, E>,
  cfg: ModelConfig,
  ckpt: Checkpoint,
  opts: {
    onProgress?: (p: LoadProgress) => void; signal?: AbortSignal;
    /** Every pre-pruned weight must have this pattern (the sparsity was taken from the file). */ storedPattern?: SparsityOption;
    /** Hand GGUF quantised blocks to the backend as they are (its kernels decode them): HostMatrix.gguf, HostMoe.ggufExperts. */
    ggufBlocks?: boolean;
    /** Filled with the host staging figures. */ staging?: LoadStaging;
  } = {},
): Promise<ModelWeights<W, E>> {
  // Host bytes the loader holds between tensors (held) and for the tensor in hand (transient).
  const staging: LoadStaging = opts.staging ?? { peakHostBytes: 0, largestTensorF32Bytes: 0, checkpointBytes: 0 };
  let held = 0;
  // The checkpoint stream's read buffers (the chunk in hand and the one read ahead) count too.
  const readBuffers = { bytes: 0, peakBytes: 0 };
  const note = (transient: number) => { staging.peakHostBytes = Math.max(staging.peakHostBytes, held + transient + readBuffers.bytes); };
  const wanted = tensorsToLoad(cfg, (n) => ckpt.tensors.has(n), SPARSE_SUFFIXES);
  const expected = expectedTensorShapes(cfg);
  const mtpLayers = mtpLayersPresent(cfg, (n) => ckpt.tensors.has(n));
  for (const l of mtpLayers) for (const t of mtpTensors(cfg, l, (n) => ckpt.tensors.has(n))) expected.set(t.name, t.shape);
  const byName = new Map<string, W>();
  const pendingFp8 = new Map<string, RawTensor>();
  const scales = new Map<string, Float32Array>();
  type Parts = Partial<Record<keyof HostExpert, Part>>;
  interface MoeParts { gate?: Float32Array; bias?: Float32Array | null; sharedGate?: Float32Array; experts: Parts[]; shared: Parts; sink: ExpertSink | null; streamed: number; heldBytes: number; oss?: Map<string, Float32Array | Uint8Array> }
  const moeParts = new Map<number, MoeParts>();
  const moeDone = new Map<number, E>();
  const shapeOf = (raw: RawTensor): [number, number] => [raw.shape[0], raw.shape.length > 1 ? raw.shape[1] : 1];

  // `asBytes`: BF16 / F16 / F32 matrices stay the file's bytes (HostMatrix.raw; the backend packs or widens them).
  const matrixOf = (name: string, raw: RawTensor, into?: Float32Array<ArrayBuffer>, asBytes = false): HostMatrix | null => {
    const [N, K] = shapeOf(raw);
    if (raw.dtype === 'F8_E4M3') {
      const scaleInv = scales.get(name);
      if (!scaleInv) { pendingFp8.set(name, raw); held += raw.data.byteLength; return null; }
      return { N, K, fp8: { bytes: raw.data, scaleInv } };
    }
    if (raw.gguf) return { N, K, gguf: raw.gguf };
    const source = asBytes ? RAW_SOURCE[raw.dtype as 'BF16'] : undefined;
    if (source) return { N, K, raw: { source, bytes: raw.data } };
    return { N, K, f32: toFloat32(raw.dtype, raw.data, undefined, raw.dtype === 'F32' ? undefined : into) };
  };
  // Routed experts handed to a sink are packed before put() returns: their f32 form reuses one scratch
  // array (no 11 MB allocation and collection per V2-Lite expert matrix).
  let scratch = new Float32Array(0);
  const scratchOf = (n: number) => {
    if (scratch.length < n) scratch = new Float32Array(n);
    return scratch.subarray(0, n);
  };

  const moeLayerOf = (name: string) => {
    const t = parseTensorName(name);
    if (!t || t.spec.layers !== 'moe') return null;
    return { layer: t.layer, role: t.spec.role, expert: t.expert, proj: t.spec.proj, stacked: t.spec.stacked };
  };

  // GPT-OSS: the router, its bias and the six (or four) expert stacks of a layer arrive whole; the
  // backend gets them together, in the HF layout.
  const ossRoles = (): string[] => ['router_linear_bias', 'oss_gate_up_bias', 'oss_down_bias', ...(cfg.quantization?.method === 'mxfp4' ? ['oss_gate_up_blocks', 'oss_gate_up_scales', 'oss_down_blocks', 'oss_down_scales'] : ['oss_gate_up', 'oss_down'])];
  const finishGptOss = (layer: number, p: MoeParts) => {
    const o = p.oss;
    if (!p.gate || !o || ossRoles().some((r) => !o.has(r))) return;
    const f = (r: string) => o.get(r) as Float32Array, u = (r: string) => o.get(r) as Uint8Array;
    // E8M0 byte 255 is NaN: no weight of a released checkpoint; refused before any backend decodes it.
    for (const r of ['oss_gate_up_scales', 'oss_down_scales']) {
      const at = o.has(r) ? u(r).indexOf(255) : -1;
      if (at >= 0) throw new FormatError(`tensor '${tensorName(r as 'oss_down_scales', layer, -1, cfg)}': scale byte ${at} is 255 (NaN in E8M0); MXFP4 scales are 0…254`, { tensor: tensorName(r as 'oss_down_scales', layer, -1, cfg) });
    }
    const gptOss: HostMoe['gptOss'] = {
      routerBias: f('router_linear_bias'), gateUpBias: f('oss_gate_up_bias'), downBias: f('oss_down_bias'),
      ...(cfg.quantization?.method === 'mxfp4'
        ? { mxfp4: { gateUpBlocks: u('oss_gate_up_blocks'), gateUpScales: u('oss_gate_up_scales'), downBlocks: u('oss_down_blocks'), downScales: u('oss_down_scales') } }
        : { dense: { gateUp: f('oss_gate_up'), down: f('oss_down') } }),
    };
    moeDone.set(layer, be.moe(layer, { gate: p.gate, bias: null, experts: [], shared: null, gptOss }));
    moeParts.delete(layer);
    held -= p.heldBytes;
  };

  const finishMoe = (layer: number) => {
    const p = moeParts.get(layer)!;
    if (cfg.family === 'gpt_oss') { finishGptOss(layer, p); return; }
    const complete = (e: Parts) => !!(e.gate && e.up && e.down);
    const hasBias = cfg.family === 'deepseek' && ckpt.tensors.has(tensorName('router_bias', layer));
    const routedDone = p.sink ? p.streamed === 3 * cfg.nRoutedExperts : p.experts.length >= cfg.nRoutedExperts && p.experts.every(complete);
    if (!p.gate || (hasBias && !p.bias) || !routedDone) return;
    if (cfg.nSharedExperts > 0 && !complete(p.shared)) return;
    if (cfg.sharedExpertGate && !p.sharedGate) return;
    const D = cfg.hiddenSize, I = cfg.moeIntermediateSize, Is = cfg.sharedExpertIntermediateSize;
    const f32 = (x: Part, n: number) => (isBlocks(x) ? ggufToF32(x, n) : x);
    const hostExpert = (e: Parts, i: number): HostExpert => ({ gate: f32(e.gate!, i * D), up: f32(e.up!, i * D), down: f32(e.down!, D * i) });
    // The GGUF expert kernel holds every routed expert's blocks, gate and up in one type.
    const t0 = p.experts[0]?.gate;
    const blocks = isBlocks(t0) && p.experts.every((e) => isBlocks(e.gate) && isBlocks(e.up) && isBlocks(e.down) && e.gate.type === t0.type && e.up.type === t0.type && e.down.type === (p.experts[0].down as GgufBlocks).type);
    const parts: HostMoe = {
      gate: p.gate, bias: p.bias ?? null, sharedGate: p.sharedGate ?? null,
      experts: p.sink || blocks ? [] : p.experts.map((e) => hostExpert(e, I)),
      shared: null,
    };
    if (blocks) parts.ggufExperts = { gate: p.experts.map((e) => e.gate as GgufBlocks), up: p.experts.map((e) => e.up as GgufBlocks), down: p.experts.map((e) => e.down as GgufBlocks) };
    if (cfg.nSharedExperts > 0) {
      const s = p.shared;
      if (isBlocks(s.gate) && isBlocks(s.up) && isBlocks(s.down)) parts.ggufShared = { gate: s.gate, up: s.up, down: s.down };
      else parts.shared = hostExpert(s, Is);
    }
    moeDone.set(layer, be.moe(layer, parts));
    moeParts.delete(layer);
    held -= p.heldBytes;
  };

  // Parts of pre-pruned weights until all have arrived; then the weight goes on as the dense matrix it
  // stands for (a backend with a sparsity policy packs it again, and finds exactly the stored pattern).
  const sparseParts = new Map<string, Map<string, RawTensor>>();
  const acceptSparsePart = (name: string, raw: RawTensor) => {
    const base = name.slice(0, name.lastIndexOf('.sparse_'));
    const parts = sparseParts.get(base) ?? new Map<string, RawTensor>();
    sparseParts.set(base, parts);
    parts.set(name, raw);
    if (SPARSE_SUFFIXES.some((s) => ckpt.tensors.has(base + s) && !parts.has(base + s))) return;
    sparseParts.delete(base);
    const packed = sparseFromTensors(base, (t) => parts.get(t));
    const want = expected.get(base);
    if (want && (packed.N !== want[0] || packed.K !== want[1])) throw new ShapeError(`sparse weight '${base}' is [${packed.N}, ${packed.K}], but config.json implies [${want}]`);
    if (opts.storedPattern && !sameSparsity(packed, opts.storedPattern)) {
      const label = sparsityLabel(packed.format === '2:4' ? packed : { format: 'vnm', v: packed.V, m: packed.M });
      throw new UnsupportedError(`sparse weight '${base}' is ${label}, other pre-pruned weights ${sparsityLabel(opts.storedPattern)}: one pattern per checkpoint (or pass a sparsity option)`, { tensor: base });
    }
    const dense = unpack(packed);
    accept(base, { dtype: 'F32', shape: [packed.N, packed.K], data: new Uint8Array(dense.buffer) });
  };

  const accept = (name: string, raw: RawTensor) => {
    const f32Bytes = raw.shape.reduce((a, b) => a * b, 1) * 4;
    staging.largestTensorF32Bytes = Math.max(staging.largestTensorF32Bytes, f32Bytes);
    // The raw bytes in hand and their f32 form (for FP8 or a CPU-side conversion).
    note(raw.data.byteLength + f32Bytes);
    if (SPARSE_SUFFIXES.some((s) => name.endsWith(s))) { acceptSparsePart(name, raw); return; }
    if (name.endsWith('.weight_scale_inv')) {
      const w = name.replace(/\.weight_scale_inv$/, '.weight');
      scales.set(w, f32Of(raw));
      const pending = pendingFp8.get(w);
      if (pending) { pendingFp8.delete(w); held -= pending.data.byteLength; accept(w, pending); }
      return;
    }
    const moe = moeLayerOf(name);
    if (moe) {
      let p = moeParts.get(moe.layer);
      if (!p) {
        const sink = cfg.family === 'gpt_oss' ? null : be.expertSink?.(moe.layer) ?? null;
        p = { experts: sink ? [] : Array.from({ length: cfg.nRoutedExperts }, () => ({})), shared: {}, sink, streamed: 0, heldBytes: 0 };
        moeParts.set(moe.layer, p);
      }
      const keep = (a: Float32Array) => { p!.heldBytes += a.byteLength; held += a.byteLength; return a; };
      if (moe.role === 'router') p.gate = keep(f32Of(raw));
      else if (cfg.family === 'gpt_oss') {
        // MXFP4 blocks and scales stay bytes (copied: the source's read buffer is not ours); biases and unquantised stacks become f32.
        const v = raw.dtype === 'U8' ? raw.data.slice() : f32Of(raw);
        p.heldBytes += v.byteLength; held += v.byteLength;
        (p.oss ??= new Map()).set(moe.role, v);
      } else if (moe.role === 'router_bias') p.bias = keep(f32Of(raw));
      else if (moe.role === 'shared_expert_gate') p.sharedGate = keep(f32Of(raw));
      else if (moe.stacked) {
        // Granite's ParallelExperts: every expert's matrix in one [E, rows, cols] tensor, handed on per
        // expert as the per-expert checkpoints would be (input_linear rows = [gate; up]).
        const all = f32Of(raw), [E, rows, cols] = raw.shape, n = rows * cols;
        for (let e = 0; e < E; e++) {
          const m = all.subarray(e * n, (e + 1) * n);
          const projs: [('gate' | 'up' | 'down'), Float32Array][] = moe.stacked === 'down' ? [['down', m]] : [['gate', m.subarray(0, n / 2)], ['up', m.subarray(n / 2)]];
          for (const [proj, data] of projs) {
            if (p.sink) { p.sink.put(e, proj, data); p.streamed++; }
            else p.experts[e][proj] = keep(data.slice());
          }
        }
      } else {
        // A BF16/F16/F32 expert matrix goes to the sink as the file's bytes when it takes them (the GPU
        // stacks copy them, or quantise them on the device or with the WebAssembly packer): no f32 copy.
        const source = raw.gguf ? undefined : RAW_SOURCE[raw.dtype as 'BF16'];
        const rm = source ? { source, bytes: raw.data, nonFinite: undefined as number | undefined } : null;
        if (moe.expert >= 0 && p.sink?.putRaw && rm && p.sink.putRaw(moe.expert, moe.proj!, rm)) {
          // The packer counted NaN / ±Inf while quantising: the checkpoint reader need not scan again.
          if (rm.nonFinite !== undefined) raw.nonFinite = rm.nonFinite;
          p.streamed++;
          finishMoe(moe.layer);
          return;
        }
        if (moe.expert >= 0 && p.sink?.putFp8 && raw.dtype === 'F8_E4M3') {
          // FP8 with its scales: packed from the bytes when the sink can (the WebAssembly packer).
          const m = matrixOf(name, raw);
          if (!m) return;
          if (p.sink.putFp8(moe.expert, moe.proj!, m.fp8!.bytes, m.fp8!.scaleInv)) {
            p.streamed++;
            finishMoe(moe.layer);
            return;
          }
          p.sink.put(moe.expert, moe.proj!, toFloat32('F8_E4M3', m.fp8!.bytes, { scaleInv: m.fp8!.scaleInv, shape: [m.N, m.K] }, scratchOf(m.N * m.K)));
          p.streamed++;
          finishMoe(moe.layer);
          return;
        }
        const into = moe.expert >= 0 && p.sink ? scratchOf(raw.shape.reduce((a, b) => a * b, 1)) : undefined;
        const m = matrixOf(name, raw, into);
        if (!m) return;
        if (moe.expert >= 0 && p.sink) {
          // (GGUF blocks reach a sink when the experts' storage is not 'gguf': decoded here, one matrix at a time.)
          const f32 = m.gguf ? ggufToF32(m.gguf, m.N * m.K) : m.f32 ?? toFloat32('F8_E4M3', m.fp8!.bytes, { scaleInv: m.fp8!.scaleInv, shape: [m.N, m.K] }, into);
          p.sink.put(moe.expert, moe.proj!, f32);
          p.streamed++;
        } else {
          const part: Part = m.gguf ?? m.f32 ?? toFloat32('F8_E4M3', m.fp8!.bytes, { scaleInv: m.fp8!.scaleInv, shape: [m.N, m.K] });
          if (isBlocks(part)) { p.heldBytes += part.bytes.byteLength; held += part.bytes.byteLength; } else keep(part);
          if (moe.expert >= 0) p.experts[moe.expert][moe.proj!] = part;
          else p.shared[moe.proj!] = part;
        }
      }
      finishMoe(moe.layer);
      return;
    }
    const isVector = raw.shape.length === 1;
    if (isVector) { byName.set(name, be.vector(name, f32Of(raw))); return; }
    const m = matrixOf(name, raw, undefined, true);
    if (!m) return;
    // A backend that packed the bytes itself counted their NaN / ±Inf: the checkpoint reader need not scan.
    const counted = () => { if (m.raw?.nonFinite !== undefined) raw.nonFinite = m.raw.nonFinite; };
    const mtpPart = parseMtpTensorName(name);
    if (mtpPart) {
      if (mtpPart.role === 'mtp_embed') byName.set(name, be.embedding(name, m));
      else if (mtpPart.role === 'mtp_head') byName.set(name, be.matrix(name, m, 'lm_head'));
      else if (mtpPart.role === 'mtp_eh_proj') {
        // [D, 2D] → its column halves [D, D] (embedding part, hidden part): two GEMMs and an add replace the concat.
        const full = hostMatrixToF32(m), D = m.N, half = m.K / 2;
        const e = new Float32Array(D * half), h = new Float32Array(D * half);
        for (let r = 0; r < D; r++) {
          e.set(full.subarray(r * m.K, r * m.K + half), r * half);
          h.set(full.subarray(r * m.K + half, (r + 1) * m.K), r * half);
        }
        byName.set(`${name}[:, :D]`, be.matrix(`${name}[:, :D]`, { N: D, K: half, f32: e }, 'attn'));
        byName.set(`${name}[:, D:]`, be.matrix(`${name}[:, D:]`, { N: D, K: half, f32: h }, 'attn'));
      } else throw new FormatError(`tensor '${name}' is not a matrix of the model`, { tensor: name });
      counted();
      return;
    }
    const spec = parseTensorName(name)?.spec;
    if (spec?.role === 'embed') byName.set(name, be.embedding(name, m));
    else if (spec?.matrixRole) byName.set(name, be.matrix(name, m, spec.matrixRole));
    else throw new FormatError(`tensor '${name}' is not a matrix of the model`, { tensor: name });
    counted();
  };

  // Borrowed bytes (valid during the callback; the stream reuses its read buffers): every path above
  // converts, copies or uploads a tensor before accept returns, except FP8 weights waiting for their
  // scale or kept as bytes and parts of pre-pruned weights, which are copied here.
  const owned = (name: string, t: RawTensor): RawTensor =>
    t.dtype === 'F8_E4M3' || SPARSE_SUFFIXES.some((s) => name.endsWith(s)) ? { ...t, data: t.data.slice() } : t;
  await ckpt.stream(wanted, (name, t) => { staging.checkpointBytes += (t as RawTensor).data.byteLength; accept(name, owned(name, t as RawTensor)); }, { onProgress: opts.onProgress, signal: opts.signal, ggufBlocks: opts.ggufBlocks, borrow: true, readBuffers });

  const get = (name: string): W => {
    const w = byName.get(name);
    if (w === undefined) throw new FormatError(`tensor ${name} was not loaded`, { tensor: name });
    return w;
  };
  const layerWeights = (i: number): LayerWeights<W, E> => {
    const at = (role: Parameters<typeof tensorName>[0]) => get(tensorName(role, i, -1, cfg));
    const attn: AttentionWeights<W> = cfg.attention === 'mla'
      ? {
          ...(cfg.qLoraRank ? { qA: at('q_a'), qANorm: at('q_a_norm'), qB: at('q_b') } : { q: at('q') }),
          kvA: at('kv_a'),
          kvANorm: at('kv_a_norm'),
          kvB: at('kv_b'),
          o: at('o'),
        }
      : {
          q: at('q'), k: at('k'), v: at('v'), o: at('o'),
          ...(cfg.attentionBias ? { qBias: at('q_bias'), kBias: at('k_bias'), vBias: at('v_bias') } : {}),
          ...(cfg.family === 'gpt_oss' ? { oBias: at('o_bias'), sinks: at('sinks') } : {}),
          ...(cfg.qkNorm !== 'none' ? { qNorm: at('q_norm'), kNorm: at('k_norm') } : {}),
        };
    const L: LayerWeights<W, E> = { inputNorm: at('input_norm'), postNorm: at('post_attention_norm'), attn };
    if (isMoeLayer(cfg, i)) {
      const e = moeDone.get(i);
      if (e === undefined) throw new FormatError(`MoE layer ${i}: some expert tensors are missing`, { layer: i });
      L.moe = e;
    } else {
      L.mlp = { gate: at('mlp_gate'), up: at('mlp_up'), down: at('mlp_down') };
    }
    return L;
  };
  const layers: LayerWeights<W, E>[] = [];
  for (let i = 0; i < cfg.numLayers; i++) layers.push(layerWeights(i));
  const embed = get(tensorName('embed', -1, -1, cfg));
  // Tied embeddings: the head reads the embedding table as a [V, D] matrix.
  const lmHead = cfg.tieWordEmbeddings ? embed : get(tensorName('lm_head', -1, -1, cfg));
  const mtp: MtpWeights<W, E>[] = mtpLayers.map((l) => {
    const eh = mtpTensorName('mtp_eh_proj', l);
    return {
      layer: l,
      enorm: get(mtpTensorName('mtp_enorm', l)),
      hnorm: get(mtpTensorName('mtp_hnorm', l)),
      ehE: get(`${eh}[:, :D]`),
      ehH: get(`${eh}[:, D:]`),
      headNorm: get(mtpTensorName('mtp_head_norm', l)),
      embed: byName.get(mtpTensorName('mtp_embed', l)) ?? embed,
      head: byName.get(mtpTensorName('mtp_head', l)) ?? lmHead,
      block: layerWeights(l),
    };
  });
  return { embed, norm: get(tensorName('final_norm', -1, -1, cfg)), lmHead, layers, ...(mtp.length ? { mtp } : {}) };
}
