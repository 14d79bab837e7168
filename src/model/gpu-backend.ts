/**
 * The GPU backend: the architecture file's operations as WGSL kernels recorded into one command buffer
 * per forward pass. Activations live in per-step temporaries (gpu.temps), released after the submit;
 * weights are uploaded once in the storage the load options ask for.
 */
import { ggufToF32, hostMatrixToF32, type AttentionExtras, type Backend, type ExpertSink, type GqaShape, type HostMatrix, type HostMoe, type MatrixRole, type MlaShape, type RopeStyle } from './deepseek';
import { isMoeLayer, routingOf, type ModelConfig } from './config';
import type { Gpu } from '../gpu/device';
import type { Recorder } from '../gpu/recorder';
import { STORAGE } from '../gpu/buffers';
import { rmsNorm, rmsNormInPlace } from '../kernels/rmsnorm';
import { addBias, addInPlace, scaleInPlace, sigmoidGateRows, siluMul } from '../kernels/elementwise';
import { linear } from '../kernels/linear';
import { uploadPacked, uploadWeight, uploadFp8Weight, destroyWeight, type GpuWeight, type UploadOptions } from '../kernels/weight';
import { fp8ScalesPackable, type HostPacker } from '../kernels/wasm/host-pack';
import type { PackedWeight } from '../kernels/weight-pack';
import { rope } from '../kernels/rope';
import { embedding } from '../kernels/embedding';
import { mlaAttention } from '../kernels/mla';
import { moeGate, moeExperts, moeExpertsMode, moeExpertGroupsForward, uploadExpertGroups, destroyExpertGroups, expertGroupsWriter, uploadMxfp4ExpertGroups, uploadExpertBiases, type ExpertGroupsWriter, type MoeExpertGroups } from '../kernels/moe';
import { gptOssCpuExperts } from './cpu-backend';
import { LatentKvCache, MhaKvCache } from './kvcache';
import { slidingWindowOf } from './decoder-blocks';
import { mhaAttention } from '../kernels/attention';
import type { KvFormat } from '../kernels/attention-plan';
import type { SparsityOption } from '../sparse/apply';
import { hasRole, isSparsityTarget, moeLayers, tensorName } from './tensors';
import { sparsifyWeight, type SparseValues } from '../kernels/sparse';
import { permuteMlp } from '../sparse/permute';
import { sparsifyExperts, sparseMoeExperts, type SparseExpertWeights } from '../kernels/sparse-moe';
import { ExpertLoad } from './moe-telemetry';
import { ropeInvFreq } from '../kernels/rope-params';
import { ggufBuffers, ggufEmbedding, ggufLinear, uploadGgufWeight, type GgufWeight } from '../kernels/gguf-linear';
import { destroyGgufExperts, ggufMoeExperts, uploadGgufExperts, type GgufMoeExpertWeights, type GgufTensorBytes } from '../kernels/gguf-moe';
import type { GgufBlocks } from '../loader/checkpoint';
import { moeSlotRemap, packMxfp4Experts } from '../kernels/moe-slots';
import { HostExpertStore, LayerExpertCache, expertCounts, tokenRuns, zeroCounters, type OffloadConfig, type OffloadCounters } from './expert-cache';
import { UnsupportedError } from '../errors';

/** A linear weight held as GGUF blocks (format 'gguf'): `buffers` = [the blocks], decoded by gguf-linear.ts. */
export type GgufGpuWeight = GpuWeight & { format: 'gguf'; gguf: GgufWeight };
const ggufOf = (w: GpuWeight): GgufWeight | null => (w.format === 'gguf' ? (w as GgufGpuWeight).gguf : null);

/** Expert matrices (one per expert, whole rows each) as one stacked tensor [E, rows, cols], as the file had them. */
function stackBlocks(parts: GgufBlocks[]): GgufTensorBytes {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.bytes.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p.bytes, at); at += p.bytes.length; }
  return { type: parts[0].type, bytes: out };
}

export interface GpuTensor { buf: GPUBuffer; rows: number; cols: number }

export interface GpuMoe {
  gate: GPUBuffer;
  bias: GPUBuffer | null;
  /** Dense: one or more stacks of consecutive experts, each within the binding limit. */
  experts: { sparse: false; w: MoeExpertGroups; gguf?: undefined } | { sparse: true; w: SparseExpertWeights; gguf?: undefined } | { sparse: false; gguf: true; w: GgufMoeExpertWeights };
  shared: { gate: GpuWeight; up: GpuWeight; down: GpuWeight } | null;
  /** Qwen2-MoE's shared_expert_gate [1, D] (f32): sigmoid(gate · x) scales the shared expert's rows. */
  sharedGate: GpuWeight | null;
  bytes: number;
  /** Expert offload: the routed experts live in this cache's slots (`experts` is then unused). */
  cached?: LayerExpertCache;
  /** GPT-OSS: the router's linear bias [E] (f32), added to the router logits before the top-k. */
  routerBias?: GPUBuffer;
}

export interface WeightPolicy {
  /**
   * Storage for linear weights by role ('experts': the routed-expert stacks, f32/f16/bf16/q8/q4; the router
   * and kv_b stay f32). 'gguf': matrices that arrive as GGUF blocks stay those blocks, the rest is f32.
   */
  storage(role: MatrixRole | 'embed' | 'experts'): UploadOptions['format'] | 'gguf';
  /** Structured sparsity at load: the matrices it applies to (src/sparse/apply.ts) run on the sparse kernels. */
  sparsity: (Required<Pick<SparsityOption, 'format' | 'v' | 'm' | 'apply'>> & { values: SparseValues; permute?: boolean }) | null;
  /** Keep FP8 checkpoints in FP8 on the GPU (decoded in the shader) instead of converting. */
  nativeFp8: boolean;
  /** Quantise q8/q4 routed experts on the GPU from the checkpoint's bytes (LoadOptions.quantizeAt); default true. */
  quantizeOnDevice?: boolean;
  /** The WebAssembly packer that quantises q8/q4 matrices from the checkpoint's bytes (routed experts only when not on the device); null: the JS packer on f32 copies. */
  hostPacker?: HostPacker | null;
  /** Cap on one routed-expert stack buffer (default: the device's binding limits); tests force several stacks with it. */
  maxExpertBindingBytes?: number;
}

export class GpuBackend implements Backend<GpuTensor, GpuWeight, GpuMoe> {
  rec: Recorder | null = null;
  /** MLA: the latent cache; GQA: K/V per kv head (MhaKvCache). */
  readonly cache: LatentKvCache | MhaKvCache;
  readonly load: ExpertLoad;
  private invFreq: GPUBuffer;
  private weights: GpuWeight[] = [];
  private moes: GpuMoe[] = [];
  /** Routed-expert stacks being filled by a streaming load, by layer (moe() takes them over). */
  private writers = new Map<number, ExpertGroupsWriter>();
  weightBytes = 0;
  /** With 'gguf' storage: whether every MoE layer's routed experts so far stayed GGUF blocks (null before the first). */
  private ggufExperts: boolean | null = null;
  /** Per MoE layer, the expert ids [rows, K] of the current forward (read after submit). */
  readonly routingIds = new Map<number, { buf: GPUBuffer; rows: number }>();
  /** Keep every MoE layer's ids of the forward in persistent buffers (routing view, CLI --routing). */
  captureRouting = false;
  /** Expert offload (set before the weights load): the routed experts go to per-layer expert caches. */
  offload: OffloadConfig | null = null;
  readonly offloadCounters: OffloadCounters = zeroCounters();
  private stores = new Map<number, HostExpertStore>();
  private moeByLayer = new Map<number, GpuMoe>();

  /** `kvCache`: the latent cache's element format (model/kvcache.ts; the load option, f32 unless given). */
  /**
   * `kvCache`: the cache's element format (model/kvcache.ts; the load option, f32 unless given).
   * `maxRows`: the most rows one forward writes (the prefill chunk): sliding-window layers keep that
   * many rows beyond their window (kvcache.ts windowRows).
   */
  constructor(readonly gpu: Gpu, readonly cfg: ModelConfig, private policy: WeightPolicy, capacity: number, kvCache: KvFormat = 'f32', maxRows = 1) {
    const rows = { layers: cfg.numLayers, capacity: Math.min(capacity, 256), maxCapacity: capacity, label: 'kv', format: kvCache };
    this.cache = cfg.attention === 'mla'
      ? new LatentKvCache(gpu, { ...rows, kvLoraRank: cfg.kvLoraRank, ropeDim: cfg.qkRopeHeadDim })
      : new MhaKvCache(gpu, { ...rows, kvHeads: cfg.numKvHeads, kDim: cfg.headDim, vDim: cfg.headDim, windows: Array.from({ length: cfg.numLayers }, (_, l) => slidingWindowOf(cfg, l)), maxRows });
    this.load = new ExpertLoad(gpu, moeLayers(cfg), cfg.nRoutedExperts, cfg.numExpertsPerTok);
    this.invFreq = gpu.buffers.upload('rope.invFreq', ropeInvFreq(cfg.qkRopeHeadDim, cfg.ropeTheta, cfg.ropeScaling));
  }

  private r(): Recorder {
    if (!this.rec) throw new Error('GpuBackend: no recorder (call begin())');
    return this.rec;
  }

  begin(label: string): Recorder {
    this.rec = this.gpu.recorder(label);
    return this.rec;
  }

  /** Submits the recorded step; its temporaries return to the pool (queue order keeps reuse safe). */
  submit(): void {
    this.r().submit();
    this.rec = null;
    this.layerMark = -1;
    this.gpu.temps.releaseAll();
  }

  private temp(rows: number, cols: number): GpuTensor {
    return { buf: this.gpu.temps.acquire(Math.max(1, rows * cols) * 4), rows, cols };
  }

  private track(w: GpuWeight): GpuWeight {
    this.weights.push(w);
    this.weightBytes += w.bytes;
    return w;
  }

  // ----------------------------------------------------------------------------------------- weights

  vector(name: string, data: Float32Array): GpuWeight {
    return this.track(uploadWeight(this.gpu, name, data, data.length, 1, { format: 'f32' }));
  }

  matrix(name: string, m: HostMatrix, role: MatrixRole): GpuWeight {
    // The MLA kernels read W_UK and W_UV straight out of kv_b (absorbed q, latent → v), in f32: it stays
    // f32 whatever the storage policy (it is small: heads·(nope+v)·kv_lora_rank).
    if (role === 'kv_b') return this.track(uploadWeight(this.gpu, name, hostMatrixToF32(m), m.N, m.K, { format: 'f32' }));
    if (m.fp8 && this.policy.nativeFp8) return this.track(uploadFp8Weight(this.gpu, name, m.fp8.bytes, m.fp8.scaleInv, m.N, m.K));
    const sp = this.policy.sparsity;
    const format = this.policy.storage(role);
    if (m.gguf && format === 'gguf' && !(sp && isSparsityTarget(name, sp.apply))) return this.ggufMatrix(name, m);
    const packed = sp && isSparsityTarget(name, sp.apply) ? null : this.packRaw(m, format);
    if (packed) return this.track(uploadPacked(this.gpu, name, packed));
    const data = hostMatrixToF32(m);
    if (sp && isSparsityTarget(name, sp.apply)) return this.track(sparsifyWeight(this.gpu, name, data, m.N, m.K, sp).weight as GpuWeight);
    return this.track(uploadWeight(this.gpu, name, data, m.N, m.K, { format: format === 'gguf' ? 'f32' : format }));
  }

  private ggufMatrix(name: string, m: HostMatrix): GpuWeight {
    const g = uploadGgufWeight(this.gpu, name, m.gguf!.type, m.gguf!.bytes, m.N, m.K);
    const w: GgufGpuWeight = { label: name, format: 'gguf', N: m.N, K: m.K, buffers: ggufBuffers(g), params: {}, bytes: g.bytes, gguf: g };
    return this.track(w);
  }

  embedding(name: string, m: HostMatrix): GpuWeight {
    const s = this.policy.storage('embed');
    // GGUF blocks: gathered by ggufEmbedding (and, with tied embeddings, the head's ggufLinear).
    if (m.gguf && s === 'gguf') return this.ggufMatrix(name, m);
    const format = s === 'f16' || s === 'bf16' ? s : 'f32';
    const packed = this.packRaw(m, format);
    if (packed) return this.track(uploadPacked(this.gpu, name, packed));
    return this.track(uploadWeight(this.gpu, name, hostMatrixToF32(m), m.N, m.K, { format }));
  }

  /**
   * The checkpoint's bytes (HostMatrix.raw, or HostMatrix.fp8 with its block scales) packed by the
   * WebAssembly packer when it covers the format: q8 / q4 (groups of 32, f16 scales) from BF16 / F16 /
   * F32 / FP8, f16 from BF16 / F32, bf16 from BF16; uploadWeight's
   * packWeight result bit for bit, without the f32 copy. Records the NaN / ±Inf count it took on the
   * way (HostMatrix.raw.nonFinite). Null: take the f32 path (no packer, another format, or an f16
   * overflow, which packWeight then reports).
   */
  private packRaw(m: HostMatrix, format: string | undefined): PackedWeight | null {
    const packer = this.policy.hostPacker, raw = m.raw;
    // FP8 with its block scales (when not kept FP8): q8 / q4 from the bytes, as hostMatrixToF32 + packWeight.
    if (packer && m.fp8 && (format === 'q8' || format === 'q4') && fp8ScalesPackable(m.fp8.scaleInv)) return packer.packMatrix('fp8', m.fp8.bytes, m.N, m.K, format, 32, undefined, { scaleInv: m.fp8.scaleInv });
    if (!packer || !raw) return null;
    let p: (PackedWeight & { nonFinite: number }) | null = null;
    if (format === 'q8' || format === 'q4') p = packer.packMatrix(raw.source, raw.bytes, m.N, m.K, format);
    else if (format === 'f16' && raw.source !== 'f16') p = packer.halfMatrix(raw.source, raw.bytes, m.N, m.K);
    else if (format === 'bf16' && raw.source === 'bf16') p = packer.bf16Matrix(raw.bytes, m.N, m.K);
    if (p) raw.nonFinite = p.nonFinite;
    return p;
  }

  /** Routed experts (dense stacks): f16 / q8 / q4 as the policy asks when the shapes allow vec4 loads, else f32. */
  get expertFormat(): 'f32' | 'f16' | 'bf16' | 'q8' | 'q4' | 'gguf' {
    const f = this.policy.storage('experts');
    if (f === 'gguf') return this.ggufExperts === false ? 'f32' : 'gguf';
    const vec4 = this.cfg.hiddenSize % 4 === 0 && this.cfg.moeIntermediateSize % 4 === 0;
    return vec4 && (f === 'f16' || f === 'bf16' || f === 'q8' || f === 'q4') ? f : 'f32';
  }

  /**
   * Dense expert stacks are allocated up front and each expert matrix is packed (quantised) and written
   * as it arrives: host memory holds one expert matrix, not a layer. Sparse experts are packed per layer
   * (the 2:4 / V:N:M packer takes the whole stack): those take the experts in moe().
   */
  /** The name of layer `layer`'s first routed-expert matrix (what the sparsity scope is asked about). */
  private expertName(layer: number, proj: 'gate' | 'down'): string {
    const per = hasRole(this.cfg, 'expert_gate');
    return per ? tensorName(proj === 'gate' ? 'expert_gate' : 'expert_down', layer, 0, this.cfg) : tensorName(proj === 'gate' ? 'experts_gate_up' : 'experts_down', layer, -1, this.cfg);
  }

  expertSink(layer: number): ExpertSink | null {
    const sp = this.policy.sparsity;
    if (sp && isSparsityTarget(this.expertName(layer, 'gate'), sp.apply)) return null;
    // 'gguf' storage gathers a layer's experts: GGUF blocks for the GGUF expert kernel (or f32 stacks when a layer's types differ).
    if (this.policy.storage('experts') === 'gguf') return null;
    if (this.writers.has(layer)) throw new Error(`GpuBackend: layer ${layer}'s experts are already streaming`);
    const format = this.expertFormat;
    if (format === 'gguf') return null; // (not reached: 'gguf' storage returned above)
    // MTP layers (index ≥ num_hidden_layers) keep their experts resident: the cache serves the main layers.
    if (this.offload && layer < this.cfg.numLayers) {
      // Expert offload: every expert packed on the host ('host'), or only those the slots start with ('source').
      const C = this.offload.capacity, keepAll = this.offload.source === 'host';
      const store = new HostExpertStore(this.cfg.nRoutedExperts, this.cfg.hiddenSize, this.cfg.moeIntermediateSize, format, (e) => keepAll || e < C, this.policy.hostPacker);
      this.stores.set(layer, store);
      return store.sink();
    }
    const w = expertGroupsWriter(this.gpu, `layers.${layer}.experts`, this.cfg.nRoutedExperts, this.cfg.hiddenSize, this.cfg.moeIntermediateSize, format, { maxBindingBytes: this.policy.maxExpertBindingBytes, quantizeOnDevice: this.policy.quantizeOnDevice ?? true, hostPacker: this.policy.hostPacker });
    this.writers.set(layer, w);
    return w;
  }

  /**
   * GPT-OSS: MXFP4 experts stay MXFP4 (decoded in WGSL; gate/up de-interleaved at upload), whatever the
   * storage asked for the other matrices; unquantised ones are stored in the experts' storage with their
   * biases. The router and its bias stay f32.
   */
  private gptOssMoe(layer: number, p: HostMoe): GpuMoe {
    const g = this.gpu, D = this.cfg.hiddenSize, I = this.cfg.moeIntermediateSize, E = this.cfg.nRoutedExperts, o = p.gptOss!;
    const label = `layers.${layer}.experts`;
    if (this.offload && layer < this.cfg.numLayers) {
      // Expert offload: the MXFP4 experts as slot bytes (every expert on the host with 'host', the
      // slots' first fill only with 'source'), C of them in GPU slots with their biases.
      if (!o.mxfp4) throw new UnsupportedError(`expert offload covers GPT-OSS's MXFP4 experts; layer ${layer}'s are unquantised: load without a GPU budget, or the MXFP4 release`);
      const C = this.offload.capacity, keepAll = this.offload.source === 'host';
      const store = HostExpertStore.ofPacked(packMxfp4Experts({ ...o.mxfp4, gateUpBias: o.gateUpBias, downBias: o.downBias }, E, D, I), D, I, 'mxfp4', (e) => keepAll || e < C);
      const cached = new LayerExpertCache(g, layer, E, C, D, I, 'mxfp4', keepAll ? store : null, this.offload, this.offloadCounters);
      cached.fill(store);
      const gate = g.buffers.upload(`layers.${layer}.router`, p.gate);
      const routerBias = g.buffers.upload(`layers.${layer}.router.bias`, o.routerBias);
      const e: GpuMoe = { gate, bias: null, routerBias, experts: { sparse: false, w: { format: 'mxfp4', groups: [], E: 0, I, D, bytes: 0 } }, shared: null, sharedGate: null, bytes: cached.bytes + gate.size + routerBias.size, cached };
      this.moes.push(e);
      this.moeByLayer.set(layer, e);
      this.weightBytes += e.bytes;
      return e;
    }
    let w: MoeExpertGroups;
    if (o.mxfp4) w = uploadMxfp4ExpertGroups(g, label, { ...o.mxfp4, gateUpBias: o.gateUpBias, downBias: o.downBias }, E, D, I, { maxBindingBytes: this.policy.maxExpertBindingBytes });
    else {
      // gate_up [E, D, 2I] → per expert gate rows (even columns) and up rows (odd ones), HF layout in.
      const host = gptOssCpuExperts(o, E, D, I).experts;
      const rows = (m: Float32Array, parity: number) => { const out = new Float32Array(I * D); for (let i = 0; i < I; i++) out.set(m.subarray((2 * i + parity) * D, (2 * i + parity + 1) * D), i * D); return out; };
      const fmt = this.expertFormat === 'gguf' ? 'f32' : this.expertFormat;
      w = uploadExpertGroups(g, label, host.map((x) => ({ gate: rows(x.gateUp, 0), up: rows(x.gateUp, 1), down: x.down })), D, I, fmt, { maxBindingBytes: this.policy.maxExpertBindingBytes });
      const gub = new Float32Array(E * 2 * I);
      for (let e = 0; e < E; e++) for (let i = 0; i < I; i++) { gub[e * 2 * I + i] = o.gateUpBias[e * 2 * I + 2 * i]; gub[e * 2 * I + I + i] = o.gateUpBias[e * 2 * I + 2 * i + 1]; }
      uploadExpertBiases(g, w, gub, o.downBias);
    }
    const gate = g.buffers.upload(`layers.${layer}.router`, p.gate);
    const routerBias = g.buffers.upload(`layers.${layer}.router.bias`, o.routerBias);
    const e: GpuMoe = { gate, bias: null, routerBias, experts: { sparse: false, w }, shared: null, sharedGate: null, bytes: w.bytes + gate.size + routerBias.size };
    this.moes.push(e);
    this.moeByLayer.set(layer, e);
    this.weightBytes += e.bytes;
    return e;
  }

  moe(layer: number, p: HostMoe): GpuMoe {
    if (p.gptOss) return this.gptOssMoe(layer, p);
    const g = this.gpu, D = this.cfg.hiddenSize, I = this.cfg.moeIntermediateSize, Is = this.cfg.sharedExpertIntermediateSize;
    const sp = this.policy.sparsity;
    // sparsity.permute: each expert's intermediate channels are permuted for its down_proj's pattern
    // first (an exact rewrite of the expert; src/sparse/permute.ts), then pruned as usual.
    if (sp?.permute && isSparsityTarget(this.expertName(layer, 'down'), sp.apply)) p = { ...p, experts: p.experts.map((x) => permuteMlp(x, D, I, sp)) };
    // Routed experts: stacked dense, or stacked sparse when sparsity covers them (both 'apply' modes do).
    const label = `layers.${layer}.experts`;
    // GGUF blocks go to the GGUF expert kernel, unless sparsity covers the experts (then they are decoded
    // to f32 and sparsified like any other checkpoint's).
    const sparseExperts = !!sp && isSparsityTarget(this.expertName(layer, 'gate'), sp.apply);
    let routed = p.experts;
    if (p.ggufExperts && (sparseExperts || this.policy.storage('experts') !== 'gguf')) {
      const ge = p.ggufExperts;
      routed = ge.gate.map((_, e) => ({ gate: ggufToF32(ge.gate[e], I * D), up: ggufToF32(ge.up[e], I * D), down: ggufToF32(ge.down[e], D * I) }));
    }
    const streamed = this.writers.get(layer);
    this.writers.delete(layer);
    const store = this.stores.get(layer);
    this.stores.delete(layer);
    if (this.offload && layer < this.cfg.numLayers && !store) throw new UnsupportedError(`expert offload needs the routed experts in webmoe's dense stacks (f32, f16, bf16, q8, q4); layer ${layer}'s are ${sparseExperts ? 'sparse' : 'GGUF blocks'}: load without a GPU budget, or with --weights q4 / q8 and no sparsity`);
    let experts: GpuMoe['experts'];
    let cached: LayerExpertCache | undefined;
    if (store) {
      const C = this.offload!.capacity;
      cached = new LayerExpertCache(g, layer, this.cfg.nRoutedExperts, C, D, I, store.format, this.offload!.source === 'host' ? store : null, this.offload!, this.offloadCounters);
      cached.fill(store);
      experts = { sparse: false, w: { format: store.format, groups: [], E: 0, I, D, bytes: 0 } };
    } else if (streamed) experts = { sparse: false, w: streamed.finish() };
    else if (sparseExperts) experts = { sparse: true, w: sparsifyExperts(g, label, routed, D, I, sp!).experts };
    else if (p.ggufExperts && routed === p.experts) {
      const ge = p.ggufExperts;
      experts = { sparse: false, gguf: true, w: uploadGgufExperts(g, label, stackBlocks(ge.gate), stackBlocks(ge.up), stackBlocks(ge.down), ge.gate.length, I, D, { maxBindingBytes: this.policy.maxExpertBindingBytes }) };
      if (this.ggufExperts === null) this.ggufExperts = true;
    } else {
      if (this.policy.storage('experts') === 'gguf') this.ggufExperts = false;
      experts = { sparse: false, w: uploadExpertGroups(g, label, routed, D, I, this.expertFormat === 'gguf' ? 'f32' : this.expertFormat as 'f32', { maxBindingBytes: this.policy.maxExpertBindingBytes }) };
    }
    const sh = (proj: 'gate' | 'up' | 'down', N: number, K: number): HostMatrix => (p.ggufShared ? { N, K, gguf: p.ggufShared[proj] } : { N, K, f32: p.shared![proj] });
    const shared = p.shared || p.ggufShared
      ? {
          gate: this.matrix(tensorName('shared_gate', layer, -1, this.cfg), sh('gate', Is, D), 'shared'),
          up: this.matrix(tensorName('shared_up', layer, -1, this.cfg), sh('up', Is, D), 'shared'),
          down: this.matrix(tensorName('shared_down', layer, -1, this.cfg), sh('down', D, Is), 'shared'),
        }
      : null;
    // A [1, D] projection: f32 whatever the storage (D values; the gate is as sensitive as the router).
    const sharedGate = p.sharedGate ? this.track(uploadWeight(g, `layers.${layer}.shared_expert_gate`, p.sharedGate, 1, D, { format: 'f32' })) : null;
    const gate = g.buffers.upload(`layers.${layer}.gate`, p.gate);
    const bias = p.bias ? g.buffers.upload(`layers.${layer}.gate.bias`, p.bias) : null;
    const bytes = (cached ? cached.bytes : experts.w.bytes) + gate.size + (bias?.size ?? 0);
    const e: GpuMoe = { gate, bias, experts, shared, sharedGate, bytes, cached };
    this.moes.push(e);
    this.moeByLayer.set(layer, e);
    this.weightBytes += bytes;
    return e;
  }

  // ------------------------------------------------------------------------------------- activations

  /** Token ids come from the CPU (4 bytes each): one writeBuffer, not a round trip. */
  embed(table: GpuWeight, tokens: ArrayLike<number>, D: number): GpuTensor {
    const ids = this.gpu.temps.acquire(tokens.length * 4);
    this.gpu.buffers.write(ids, Uint32Array.from(tokens));
    const out = this.temp(tokens.length, D);
    const g = ggufOf(table);
    if (g) ggufEmbedding(this.gpu, this.r(), { table: g, ids, out: out.buf, T: tokens.length });
    else embedding(this.gpu, this.r(), { table, ids, out: out.buf, T: tokens.length, D });
    // Everything after the residual stream is per layer (endLayer releases it).
    this.layerMark = this.gpu.temps.mark();
    return out;
  }

  private layerMark = -1;

  endLayer(): void {
    if (this.layerMark >= 0) this.gpu.temps.releaseFrom(this.layerMark);
  }

  rmsNorm(x: GpuTensor, w: GpuWeight, eps: number): GpuTensor {
    const y = this.temp(x.rows, x.cols);
    rmsNorm(this.gpu, this.r(), { x: x.buf, w: w.buffers[0], y: y.buf, rows: x.rows, dim: x.cols, eps });
    return y;
  }

  rmsNormSlice(x: GpuTensor, offset: number, dim: number, w: GpuWeight, eps: number): void {
    rmsNormInPlace(this.gpu, this.r(), { w: w.buffers[0], y: x.buf, rows: x.rows, dim, eps, yStride: x.cols, yOffset: offset });
  }

  linear(x: GpuTensor, w: GpuWeight): GpuTensor {
    const y = this.temp(x.rows, w.N);
    // GGUF blocks: the GGUF GEMV for every M (decode and prefill; it takes x rows in blocks of 4).
    const g = ggufOf(w);
    if (g) ggufLinear(this.gpu, this.r(), { x: x.buf, w: g, y: y.buf, M: x.rows });
    else linear(this.gpu, this.r(), { x: x.buf, w, y: y.buf, M: x.rows });
    return y;
  }

  rope(x: GpuTensor, heads: number, headStride: number, offset: number, ropeDim: number, past: number, style?: RopeStyle): void {
    rope(this.gpu, this.r(), { x: x.buf, rows: x.rows, heads, rowStride: x.cols, headStride, offset, ropeDim, invFreq: this.invFreq, pos0: past, style });
  }

  rmsNormHeads(x: GpuTensor, heads: number, w: GpuWeight, eps: number): void {
    const d = x.cols / heads;
    rmsNormInPlace(this.gpu, this.r(), { w: w.buffers[0], y: x.buf, rows: x.rows * heads, dim: d, eps, yStride: d, yOffset: 0 });
  }

  addBias(x: GpuTensor, b: GpuWeight): void {
    addBias(this.gpu, this.r(), b.buffers[0], x.buf, x.rows, x.cols);
  }

  scale(x: GpuTensor, s: number): void {
    if (s !== 1) scaleInPlace(this.gpu, this.r(), x.buf, x.rows * x.cols, s);
  }

  attention(layer: number, q: GpuTensor, k: GpuTensor, v: GpuTensor, shape: GqaShape, past: number, scale: number, extras?: AttentionExtras<GpuWeight>): GpuTensor {
    if (!(this.cache instanceof MhaKvCache)) throw new Error('attention: this model has an MLA latent cache');
    const out = this.temp(q.rows, shape.heads * shape.headDim);
    // A sliding-window layer's rows hold positions base… (kvcache.ts windowPast): the kernels see past − base.
    const c = this.cache, at = c.windowPast(layer, past, q.rows);
    mhaAttention(this.gpu, this.r(), { q: q.buf, k: k.buf, v: v.buf, out: out.buf, cache: c.binding(layer), layer, past: at, S: q.rows, heads: shape.heads, scale, window: extras?.window || undefined, sinks: extras?.sinks?.buffers[0] });
    return out;
  }

  mla(layer: number, q: GpuTensor, kvA: GpuTensor, kvB: GpuWeight, dims: MlaShape, past: number, scale: number): GpuTensor {
    if (kvB.format !== 'f32' || kvB.chunks) throw new Error(`mla: kv_b must be one f32 buffer, got ${kvB.format}${kvB.chunks ? ' in chunks' : ''}`);
    const out = this.temp(q.rows, dims.heads * dims.vHead);
    // MTP layers (index ≥ num_hidden_layers) attend over their own cache, whose length trails the main one.
    const mtp = layer >= this.cfg.numLayers;
    const cache = mtp ? this.mtpCache : this.cache;
    if (!(cache instanceof LatentKvCache)) throw new Error('mla: this model has a GQA cache');
    mlaAttention(this.gpu, this.r(), { dims, q: q.buf, kvA: kvA.buf, kvB: kvB.buffers[0], cache, layer: mtp ? layer - this.cfg.numLayers : layer, past, S: q.rows, out: out.buf, scale });
    return out;
  }

  private mtpCacheStore: LatentKvCache | null = null;
  /** The latent KV cache of the MTP layers (num_nextn_predict_layers of them), allocated at first use. */
  get mtpCache(): LatentKvCache {
    const cfg = this.cfg;
    this.mtpCacheStore ??= new LatentKvCache(this.gpu, { layers: Math.max(1, cfg.numNextnPredictLayers), kvLoraRank: cfg.kvLoraRank, ropeDim: cfg.qkRopeHeadDim, capacity: this.cache.capacity, maxCapacity: this.cache.maxCapacity, label: 'kv.mtp', format: this.cache.format });
    return this.mtpCacheStore;
  }

  private mtpLoadStore: ExpertLoad | null = null;
  /** Routing counters of the MTP layers: kept apart from the main model's expert load (stats, heatmap). */
  private countersFor(layer: number) {
    if (layer < this.cfg.numLayers) return this.load.counters(layer);
    const cfg = this.cfg;
    this.mtpLoadStore ??= new ExpertLoad(this.gpu, Array.from({ length: cfg.numNextnPredictLayers }, (_, k) => cfg.numLayers + k).filter((l) => isMoeLayer(cfg, l)), cfg.nRoutedExperts, cfg.numExpertsPerTok);
    return this.mtpLoadStore.counters(layer);
  }

  /** Embedding rows of token ids already on the device (u32 [T] at `ids`, e.g. tokens the sampler wrote). */
  embedIds(table: GpuWeight, ids: GPUBuffer, T: number): GpuTensor {
    const out = this.temp(T, this.cfg.hiddenSize);
    const g = ggufOf(table);
    if (g) ggufEmbedding(this.gpu, this.r(), { table: g, ids, out: out.buf, T });
    else embedding(this.gpu, this.r(), { table, ids, out: out.buf, T, D: this.cfg.hiddenSize });
    return out;
  }

  zeroRows(x: GpuTensor, rows: number): void {
    this.r().clear(x.buf, 0, Math.min(rows, x.rows) * x.cols * 4);
  }

  mlp(x: GpuTensor, gate: GpuWeight, up: GpuWeight, down: GpuWeight): GpuTensor {
    const g = this.linear(x, gate), u = this.linear(x, up);
    const h = this.temp(x.rows, gate.N);
    siluMul(this.gpu, this.r(), g.buf, u.buf, h.buf, x.rows * gate.N);
    return this.linear(h, down);
  }

  moeForward(layer: number, x: GpuTensor, e: GpuMoe, cfg: ModelConfig): GpuTensor {
    if (e.cached) throw new Error(`GpuBackend: layer ${layer}'s experts are offloaded: run the forward with forwardAsync (moeSteps)`);
    const T = x.rows, K = cfg.numExpertsPerTok, D = x.cols;
    const ids = this.captureRouting ? this.routingBuffer(layer, T * K) : this.gpu.temps.acquire(T * K * 4);
    const weights = this.gpu.temps.acquire(T * K * 4);
    moeGate(this.gpu, this.r(), { x: x.buf, T, D, gateW: e.gate, bias: e.bias, routerBias: e.routerBias, routing: routingOf(cfg), ids, weights, counts: this.countersFor(layer) });
    const shared = e.shared ? this.mlp(x, e.shared.gate, e.shared.up, e.shared.down) : null;
    // Qwen2-MoE: sigmoid(shared_expert_gate · x) scales each row of the shared expert's output.
    if (shared && e.sharedGate) sigmoidGateRows(this.gpu, this.r(), this.linear(x, e.sharedGate).buf, shared.buf, T, D);
    const out = this.temp(T, D);
    const args = { x: x.buf, T, ids, weights, K, shared: shared?.buf ?? null, out: out.buf, ...(cfg.expertActivation ? { activation: cfg.expertActivation } : {}) };
    if (e.experts.sparse) sparseMoeExperts(this.gpu, this.r(), { ...args, experts: e.experts.w });
    else if (e.experts.gguf) ggufMoeExperts(this.gpu, this.r(), { ...args, experts: e.experts.w });
    else moeExpertGroupsForward(this.gpu, this.r(), { ...args, experts: e.experts.w });
    if (this.captureRouting) this.routingIds.set(layer, { buf: ids, rows: T });
    return out;
  }

  /** Submits what is recorded so far and goes on recording: the step's temporaries stay acquired. */
  private flush(): void {
    const rec = this.r();
    rec.submit();
    this.rec = this.gpu.recorder(rec.label);
  }

  /**
   * The MoE layer with expert offload: record the gate (and the shared experts), submit, read the
   * routing back (the one GPU→CPU round trip of the layer; with 'next-gate' prefetch the next MoE
   * layer's gate on this layer's input comes back with it), make the chosen experts resident, then run
   * the expert kernels on the slots. Tokens whose experts together need more slots than the cache has
   * run in consecutive runs that each fit, uploading between them. Without a cache: moeForward.
   */
  *moeSteps(layer: number, x: GpuTensor, e: GpuMoe, cfg: ModelConfig): Generator<Promise<unknown>, GpuTensor, void> {
    const cache = e.cached;
    if (!cache) return this.moeForward(layer, x, e, cfg);
    const gpu = this.gpu, T = x.rows, K = cfg.numExpertsPerTok, D = x.cols, N = T * K, E = cfg.nRoutedExperts;
    const ids = this.captureRouting ? this.routingBuffer(layer, N) : gpu.temps.acquire(N * 4);
    const weights = gpu.temps.acquire(N * 4);
    moeGate(gpu, this.r(), { x: x.buf, T, D, gateW: e.gate, bias: e.bias, routerBias: e.routerBias, routing: routingOf(cfg), ids, weights, counts: this.load.counters(layer) });
    // The shared expert (and Qwen2-MoE's sigmoid gate on it) stays resident and runs as in moeForward.
    const shared = e.shared ? this.mlp(x, e.shared.gate, e.shared.up, e.shared.down) : null;
    if (shared && e.sharedGate) sigmoidGateRows(gpu, this.r(), this.linear(x, e.sharedGate).buf, shared.buf, T, D);
    const policy = this.offload!;
    const next = this.nextMoe(layer);
    const predict = policy.prefetch === 'next-gate' && next?.cached ? next : null;
    const readback = gpu.temps.acquire(N * 4 * (predict ? 2 : 1));
    this.r().copy(ids, 0, readback, 0, N * 4);
    if (predict) {
      const pIds = gpu.temps.acquire(N * 4), pW = gpu.temps.acquire(N * 4);
      moeGate(gpu, this.r(), { x: x.buf, T, D, gateW: predict.gate, bias: predict.bias, routerBias: predict.routerBias, routing: routingOf(cfg), ids: pIds, weights: pW });
      this.r().copy(pIds, 0, readback, N * 4, N * 4);
    }
    this.flush();
    let routing: Uint32Array = new Uint32Array(0);
    yield gpu.buffers.readU32(readback, 0, N * (predict ? 2 : 1)).then((r) => { routing = r; });
    const chosen = routing.subarray(0, N);
    const counts = expertCounts(chosen);
    const runs = tokenRuns(chosen, T, K, cache.capacity);
    cache.lookup([...counts.keys()], counts);
    // The mode full residency would take for these T tokens, so every run's arithmetic is the same.
    const mode = moeExpertsMode(gpu, T, K, E);
    const activation = cfg.expertActivation ? { activation: cfg.expertActivation } : {};
    const out = this.temp(T, D);
    for (let i = 0; i < runs.length; i++) {
      const run = runs[i];
      if (i > 0) this.flush(); // the previous run's kernels read slots this run may overwrite
      yield cache.ensure(run.experts);
      const rows = run.t1 - run.t0, n = rows * K;
      const sIds = gpu.temps.acquire(n * 4), sW = gpu.temps.acquire(n * 4);
      moeSlotRemap(gpu, this.r(), { ids, weights, first: run.t0 * K, N: n, slotTable: cache.table, E, idsOut: sIds, weightsOut: sW });
      if (runs.length === 1) {
        moeExperts(gpu, this.r(), { x: x.buf, T, experts: cache.slots, ids: sIds, weights: sW, K, shared: shared?.buf ?? null, out: out.buf, mode, ...activation });
        continue;
      }
      const bytes = rows * D * 4, at = run.t0 * D * 4;
      const xs = gpu.temps.acquire(bytes), os = gpu.temps.acquire(bytes);
      this.r().copy(x.buf, at, xs, 0, bytes);
      let ss: GPUBuffer | null = null;
      if (shared) { ss = gpu.temps.acquire(bytes); this.r().copy(shared.buf, at, ss, 0, bytes); }
      moeExperts(gpu, this.r(), { x: xs, T: rows, experts: cache.slots, ids: sIds, weights: sW, K, shared: ss, out: os, mode, ...activation });
      this.r().copy(os, 0, out.buf, at, bytes);
    }
    // Prefetch for the next MoE layer, at most its slots, most chosen first: queued after this layer's
    // expert kernels are submitted, so its uploads stay off this layer's critical path (readback →
    // upload → experts) and the next layer's routing finds them resident.
    if (next?.cached && policy.prefetch !== 'none') {
      const want = policy.prefetch === 'next-gate' ? [...expertCounts(routing.subarray(N)).keys()] : next.cached.lastExperts;
      this.flush();
      yield next.cached.ensure(want.slice(0, next.cached.capacity), true);
    }
    if (this.captureRouting) this.routingIds.set(layer, { buf: ids, rows: T });
    return out;
  }

  /** Expert offload: per MoE layer, the experts in GPU slots now (ascending). */
  residentExperts(): Record<number, number[]> {
    const out: Record<number, number[]> = {};
    for (const [l, m] of this.moeByLayer) if (m.cached) out[l] = [...m.cached.expertAt].filter((e) => e >= 0).sort((a, b) => a - b);
    return out;
  }

  private nextMoe(layer: number): GpuMoe | null {
    let best: GpuMoe | null = null, at = Infinity;
    for (const [l, m] of this.moeByLayer) if (l > layer && l < at) { at = l; best = m; }
    return best;
  }

  private routingBuffers = new Map<number, GPUBuffer>();
  private routingBuffer(layer: number, n: number): GPUBuffer {
    let b = this.routingBuffers.get(layer);
    if (!b || b.size < n * 4) {
      if (b) this.gpu.buffers.destroy(b);
      b = this.gpu.buffers.create(`layers.${layer}.routing`, Math.max(n, 64) * 4, STORAGE);
      this.routingBuffers.set(layer, b);
    }
    return b;
  }

  addInPlace(h: GpuTensor, r: GpuTensor): void {
    addInPlace(this.gpu, this.r(), r.buf, h.buf, h.rows * h.cols);
  }

  lastRow(x: GpuTensor): GpuTensor {
    const y = this.temp(1, x.cols);
    this.r().copy(x.buf, (x.rows - 1) * x.cols * 4, y.buf, 0, x.cols * 4);
    return y;
  }

  destroy(): void {
    for (const w of this.weights) destroyWeight(this.gpu, w);
    for (const m of this.moes) {
      if (m.cached) m.cached.destroy();
      else if (m.experts.sparse) for (const w of [m.experts.w.gateUp, m.experts.w.down]) destroyWeight(this.gpu, w as GpuWeight);
      else if (m.experts.gguf) destroyGgufExperts(this.gpu, m.experts.w);
      else destroyExpertGroups(this.gpu, m.experts.w);
      this.gpu.buffers.destroy(m.gate);
      this.gpu.buffers.destroy(m.bias);
      if (m.routerBias) this.gpu.buffers.destroy(m.routerBias);
    }
    for (const w of this.writers.values()) w.destroy();
    this.writers.clear();
    for (const b of this.routingBuffers.values()) this.gpu.buffers.destroy(b);
    this.gpu.buffers.destroy(this.invFreq);
    this.cache.destroy();
    this.load.destroy();
    this.mtpCacheStore?.destroy();
    this.mtpLoadStore?.destroy();
    this.weights = [];
    this.moes = [];
    this.moeByLayer.clear();
    this.stores.clear();
    this.weightBytes = 0;
  }
}
