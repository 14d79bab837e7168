/**
 * The WebAssembly backend: the architecture file's operations on the SIMD kernels of
 * src/kernels/wasm (one module instance, its linear memory holding weights, the KV cache — MLA's latent
 * one or K and V per kv head — and activations), for every family's architecture file. For machines
 * without a usable GPU: no WebGPU, or only a CPU fallback adapter.
 *
 * Memory: weights and the cache are permanent blocks taken at load; a forward pass opens a heap mark
 * (begin) and frees its activations at the end (finish), and each layer's temporaries at endLayer.
 */
import { UnsupportedError } from '../errors';
import { dequantize, ggmlTypeByName, isDecodable, rowBytes } from '../formats/gguf-blocks';
import type { GgufBlocks } from '../loader/checkpoint';
import { hostMatrixToF32, type AttentionExtras, type Backend, type GqaShape, type HostMatrix, type HostMoe, type MatrixRole, type MlaShape, type RopeStyle } from './deepseek';
import { gptOssCpuExperts } from './cpu-backend';
import { routingOf, type ModelConfig } from './config';
import { ropeInvFreq } from '../kernels/rope-params';
import { WasmKernels, ropeTable, type WasmWeight, type WasmWeightFormat } from '../kernels/wasm/kernels';
import { hasRole, isSparsityTarget, tensorName } from './tensors';
import { prunePacked, type SparsityOption } from '../sparse/apply';
import { permuteMlp } from '../sparse/permute';

export interface WasmTensor { ptr: number; rows: number; cols: number }

/**
 * A routed or shared expert: gate and up rows fused as one [2I, D] matrix (one pass over x), down [D, I];
 * a sparse shared expert keeps gate and up apart (pruned as the GPU prunes them: each on its own).
 * GPT-OSS experts add biases: gate|up [2I] (in the fused order) and down [D] (f32 pointers).
 */
export type WasmExpert = ({ gateUp: WasmWeight; down: WasmWeight } | { gate: WasmWeight; up: WasmWeight; down: WasmWeight }) & { gateUpBias?: number; downBias?: number };

export interface WasmMoe {
  /** Router [E, D], f32. */
  gate: WasmWeight;
  /** e_score_correction_bias [E] (f32), 0 without. */
  bias: number;
  experts: WasmExpert[];
  shared: WasmExpert | null;
  /** Qwen2-MoE's shared_expert_gate [1, D] (f32): the shared expert's row is scaled by sigmoid(gate · x). */
  sharedGate: WasmWeight | null;
  /** GPT-OSS: the router's linear bias [E] (f32; 0 without), added to the logits before top-k. */
  routerBias: number;
  /** GPT-OSS's clamped SwiGLU for the routed experts (null: plain SwiGLU). */
  act: { alpha: number; limit: number } | null;
}

/** A storage on WASM: a weight-pack.ts format, or 'gguf' (a GGUF tensor's blocks as in the file: kernels gguf.c). */
export type WasmStorage = WasmWeightFormat | 'gguf';

export interface WasmWeightPolicy {
  /**
   * Storage of the linear weights by role (the router, kv_b and norms stay f32; the embedding table f32,
   * or its GGUF blocks under 'gguf'). 'gguf' keeps matrices that arrive as GGUF blocks as they are;
   * matrices that arrive as f32 (F32 tensors of the file) stay f32.
   */
  storage(role: MatrixRole | 'experts'): WasmStorage;
  /** Structured sparsity at load (kept values f32): the matrices it applies to run on the sparse kernels. */
  sparsity?: (Required<Pick<SparsityOption, 'format' | 'v' | 'm' | 'apply'>> & { permute?: boolean }) | null;
}

export class WasmBackend implements Backend<WasmTensor, WasmWeight, WasmMoe> {
  /** Tokens in the KV cache (the main model's layers). */
  length = 0;
  /** Rows in the MTP layers' caches (they trail the main cache: model/speculative.ts). */
  mtpLength = 0;
  readonly capacity: number;
  /** MLA, per layer: RMSNorm(c_KV) [capacity, kvLora] and roped k_pe [capacity, rope], f32. */
  private latent: number[] = [];
  private pe: number[] = [];
  /** GQA, per layer: roped keys and values per kv head [capacity, kvHeads·headDim], f32. */
  private kCache: number[] = [];
  private vCache: number[] = [];
  private ropeCs: number;
  private forwardMark = -1;
  private layerMark = -1;
  weightBytes = 0;
  /** Keep each MoE layer's expert ids of the forward (routing view, tests). */
  captureRouting = false;
  /** Per MoE layer, the ids [rows][K] of the last forward (when captureRouting). */
  readonly routing = new Map<number, number[][]>();
  /** Per MoE layer, how often each routed expert was chosen since the last reset. */
  readonly counts = new Map<number, Float64Array>();

  constructor(readonly k: WasmKernels, readonly cfg: ModelConfig, private policy: WasmWeightPolicy, capacity: number) {
    this.capacity = capacity;
    this.ropeCs = k.putF32(ropeTable(ropeInvFreq(cfg.qkRopeHeadDim, cfg.ropeTheta, cfg.ropeScaling), capacity), 'the RoPE table');
    for (let l = 0; l < cfg.numLayers; l++) {
      if (cfg.attention === 'gqa') {
        this.kCache.push(k.alloc(capacity * this.kvWidth * 4, 'the KV cache'));
        this.vCache.push(k.alloc(capacity * this.kvWidth * 4, 'the KV cache'));
      } else {
        this.latent.push(k.alloc(capacity * cfg.kvLoraRank * 4, 'the latent KV cache'));
        this.pe.push(k.alloc(capacity * cfg.qkRopeHeadDim * 4, 'the latent KV cache'));
      }
    }
  }

  /** GQA: values per token and layer in each of K and V. */
  private get kvWidth(): number { return this.cfg.numKvHeads * this.cfg.headDim; }

  /** Bytes of the KV cache as allocated (every layer, MTP layers included, the full capacity). */
  get kvBytes(): number {
    const layers = this.cfg.attention === 'gqa' ? this.kCache.length : this.latent.filter((p) => p !== undefined).length;
    return layers * this.capacity * wasmKvValuesPerToken(this.cfg) * 4;
  }

  /** A latent cache for an MTP layer (index ≥ numLayers), taken at load (no forward pass open). MTP is DeepSeek's: MLA only. */
  addCacheLayer(layer: number): void {
    if (this.forwardMark >= 0) throw new Error('WasmBackend.addCacheLayer: a forward pass is open');
    if (this.cfg.attention === 'gqa') throw new UnsupportedError(`WasmBackend.addCacheLayer: MTP layers on WASM are DeepSeek's (MLA latent cache); this model's attention is GQA`);
    if (layer < this.cfg.numLayers || this.latent[layer] !== undefined) return;
    this.latent[layer] = this.k.alloc(this.capacity * this.cfg.kvLoraRank * 4, 'the MTP layer\'s latent cache');
    this.pe[layer] = this.k.alloc(this.capacity * this.cfg.qkRopeHeadDim * 4, 'the MTP layer\'s latent cache');
  }

  /** Opens a forward pass: its activations are freed by finish(). */
  begin(): void {
    if (this.forwardMark >= 0) throw new Error('WasmBackend.begin: a forward pass is already open');
    this.forwardMark = this.k.mark();
    this.layerMark = -1;
  }

  finish(): void {
    if (this.forwardMark < 0) return;
    this.k.release(this.forwardMark);
    this.forwardMark = -1;
    this.layerMark = -1;
  }

  private temp(rows: number, cols: number): WasmTensor {
    return { ptr: this.k.alloc(Math.max(1, rows * cols) * 4), rows, cols };
  }

  private store(name: string, data: Float32Array, N: number, K: number, format: WasmStorage): WasmWeight {
    const w = this.k.weight(data, N, K, format === 'gguf' ? 'f32' : format, `weight '${name}'`);
    this.weightBytes += w.bytes;
    return w;
  }

  /** GGUF blocks (pieces of one type, row-major, concatenated) as the kernels read them. */
  private storeGguf(name: string, type: string, parts: Uint8Array[], N: number, K: number): WasmWeight {
    const w = this.k.ggufWeight(type, parts, N, K, `weight '${name}'`);
    this.weightBytes += w.bytes;
    return w;
  }

  // ----------------------------------------------------------------------------------------- weights

  vector(name: string, data: Float32Array): WasmWeight { return this.store(name, data, data.length, 1, 'f32'); }

  matrix(name: string, m: HostMatrix, role: MatrixRole): WasmWeight {
    // kv_b is read by the MLA kernel as f32 rows (W_UK, W_UV), whatever the storage.
    if (role === 'kv_b') return this.store(name, hostMatrixToF32(m), m.N, m.K, 'f32');
    const sp = this.policy.sparsity;
    if (sp && isSparsityTarget(name, sp.apply)) return this.sparse(name, hostMatrixToF32(m), m.N, m.K);
    const s = this.policy.storage(role);
    if (s === 'gguf' && m.gguf) return this.storeGguf(name, m.gguf.type, [m.gguf.bytes], m.N, m.K);
    return this.store(name, hostMatrixToF32(m), m.N, m.K, s);
  }

  private sparse(name: string, data: Float32Array, N: number, K: number): WasmWeight {
    const w = this.k.sparseWeight(prunePacked(data, N, K, this.policy.sparsity!).packed, `weight '${name}'`);
    this.weightBytes += w.bytes;
    return w;
  }

  /**
   * The table stays f32 (embed() copies rows of it; a tied head reads it as a matrix), or under 'gguf'
   * its blocks as in the file (embed() decodes the rows it gathers; a tied head runs the GGUF kernel).
   */
  embedding(name: string, m: HostMatrix): WasmWeight {
    if (m.gguf && this.policy.storage('lm_head') === 'gguf') return this.storeGguf(name, m.gguf.type, [m.gguf.bytes], m.N, m.K);
    return this.store(name, hostMatrixToF32(m), m.N, m.K, 'f32');
  }

  moe(layer: number, p: HostMoe): WasmMoe {
    const D = this.cfg.hiddenSize, I = this.cfg.moeIntermediateSize, E = this.cfg.nRoutedExperts;
    const fmt = this.policy.storage('experts');
    const sp = this.policy.sparsity;
    // Under the family's own tensor names (Granite's stacked experts are no sparsity target, as on the GPU).
    const cfg = this.cfg;
    const routedRole = hasRole(cfg, 'expert_gate') ? 'expert_gate' : hasRole(cfg, 'experts_gate_up') ? 'experts_gate_up' : null;
    const sparseRouted = !!sp && !!routedRole && isSparsityTarget(tensorName(routedRole, layer, routedRole === 'expert_gate' ? 0 : -1, cfg), sp.apply);
    const sparseShared = !!sp && hasRole(cfg, 'shared_gate') && isSparsityTarget(tensorName('shared_gate', layer, -1, cfg), sp.apply);
    const fused = (label: string, gate: Float32Array, up: Float32Array, down: Float32Array, Iw: number, f: WasmStorage, sparse: boolean): WasmExpert => {
      const gu = new Float32Array(2 * Iw * D);
      gu.set(gate.subarray(0, Iw * D));
      gu.set(up.subarray(0, Iw * D), Iw * D);
      // Sparse routed experts: gate|up pruned as one [2I, D] matrix, as the GPU's sparse expert stacks are.
      if (sparse) return { gateUp: this.sparse(`${label}.gate_up`, gu, 2 * Iw, D), down: this.sparse(`${label}.down`, down, D, Iw) };
      return { gateUp: this.store(`${label}.gate_up`, gu, 2 * Iw, D, f), down: this.store(`${label}.down`, down, D, Iw, f) };
    };
    if (p.gptOss) return this.gptOssMoe(layer, p);
    // GGUF routed experts under 'gguf': each expert's gate and up blocks one [2I, D] matrix, down its own
    // (the bytes of the file's stacked tensors, one expert's slice each).
    if (p.ggufExperts && fmt === 'gguf' && !sparseRouted) {
      const ge = p.ggufExperts;
      if (ge.gate.length !== E) throw new Error(`WasmBackend.moe: layer ${layer} has ${ge.gate.length} routed experts, config says ${E}`);
      const blocks = (label: string, g: GgufBlocks, u: GgufBlocks, d: GgufBlocks, Iw: number): WasmExpert => ({
        gateUp: g.type === u.type ? this.storeGguf(`${label}.gate_up`, g.type, [g.bytes, u.bytes], 2 * Iw, D) : this.store(`${label}.gate_up`, concatF32(hostMatrixToF32({ N: Iw, K: D, gguf: g }), hostMatrixToF32({ N: Iw, K: D, gguf: u })), 2 * Iw, D, 'f32'),
        down: this.storeGguf(`${label}.down`, d.type, [d.bytes], D, Iw),
      });
      const experts = ge.gate.map((g, e) => blocks(`layers.${layer}.experts.${e}`, g, ge.up[e], ge.down[e], I));
      const Is = this.cfg.sharedExpertIntermediateSize;
      let shared: WasmExpert | null = null;
      if (p.ggufShared && !sparseShared) shared = blocks(`layers.${layer}.shared`, p.ggufShared.gate, p.ggufShared.up, p.ggufShared.down, Is);
      else if (p.shared || p.ggufShared) {
        const sh = p.shared ?? { gate: hostMatrixToF32({ N: Is, K: D, gguf: p.ggufShared!.gate }), up: hostMatrixToF32({ N: Is, K: D, gguf: p.ggufShared!.up }), down: hostMatrixToF32({ N: D, K: Is, gguf: p.ggufShared!.down }) };
        shared = sparseShared
          ? { gate: this.sparse(tensorName('shared_gate', layer, -1, cfg), sh.gate, Is, D), up: this.sparse(tensorName('shared_up', layer, -1, cfg), sh.up, Is, D), down: this.sparse(tensorName('shared_down', layer, -1, cfg), sh.down, D, Is) }
          : fused(`layers.${layer}.shared`, sh.gate, sh.up, sh.down, Is, 'f32', false);
      }
      return this.router(layer, p, experts, shared);
    }
    let routed = p.experts;
    if (p.ggufExperts) {
      const ge = p.ggufExperts;
      routed = ge.gate.map((_, e) => ({ gate: hostMatrixToF32({ N: I, K: D, gguf: ge.gate[e] }), up: hostMatrixToF32({ N: I, K: D, gguf: ge.up[e] }), down: hostMatrixToF32({ N: D, K: I, gguf: ge.down[e] }) }));
    }
    if (routed.length !== E) throw new Error(`WasmBackend.moe: layer ${layer} has ${routed.length} routed experts, config says ${E}`);
    // sparsity.permute: each expert's intermediate channels permuted for its down_proj's pattern first (exact).
    if (sparseRouted && sp!.permute) routed = routed.map((x) => permuteMlp(x, D, I, sp!));
    const experts = routed.map((x, e) => fused(`layers.${layer}.experts.${e}`, x.gate, x.up, x.down, I, fmt, sparseRouted));
    const Is = this.cfg.sharedExpertIntermediateSize;
    let sh = p.shared;
    if (!sh && p.ggufShared) {
      const g = p.ggufShared;
      sh = { gate: hostMatrixToF32({ N: Is, K: D, gguf: g.gate }), up: hostMatrixToF32({ N: Is, K: D, gguf: g.up }), down: hostMatrixToF32({ N: D, K: Is, gguf: g.down }) };
    }
    let shared: WasmExpert | null = null;
    if (sh && sparseShared) {
      shared = {
        gate: this.sparse(tensorName('shared_gate', layer, -1, cfg), sh.gate, Is, D),
        up: this.sparse(tensorName('shared_up', layer, -1, cfg), sh.up, Is, D),
        down: this.sparse(tensorName('shared_down', layer, -1, cfg), sh.down, D, Is),
      };
    } else if (sh) shared = fused(`layers.${layer}.shared`, sh.gate, sh.up, sh.down, Is, this.policy.storage('shared'), false);
    return this.router(layer, p, experts, shared);
  }

  private router(layer: number, p: HostMoe, experts: WasmExpert[], shared: WasmExpert | null): WasmMoe {
    const gate = this.store(`layers.${layer}.gate`, p.gate, this.cfg.nRoutedExperts, this.cfg.hiddenSize, 'f32');
    const bias = p.bias ? this.k.putF32(p.bias, 'the router bias') : 0;
    if (p.bias) this.weightBytes += p.bias.length * 4;
    const sharedGate = p.sharedGate ? this.store(`layers.${layer}.shared_expert_gate`, p.sharedGate, 1, this.cfg.hiddenSize, 'f32') : null;
    return { gate, bias, experts, shared, sharedGate, routerBias: 0, act: null };
  }

  /**
   * A GPT-OSS layer: the experts (MXFP4 blocks decoded at load as transformers' convert_moe_packed_tensors,
   * or unquantised) in the fused gate|up layout (HF interleaves gate and up rows: they are split here)
   * with their biases, in the experts' storage; the router [E, D] and its bias f32.
   */
  private gptOssMoe(layer: number, p: HostMoe): WasmMoe {
    const D = this.cfg.hiddenSize, I = this.cfg.moeIntermediateSize, E = this.cfg.nRoutedExperts;
    const fmt = this.policy.storage('experts');
    const oss = gptOssCpuExperts(p.gptOss!, E, D, I);
    const bias = (data: Float32Array, what: string) => { this.weightBytes += data.length * 4; return this.k.putF32(data, what); };
    const experts = oss.experts.map((x, e): WasmExpert => {
      const gu = new Float32Array(2 * I * D), gub = new Float32Array(2 * I);
      for (let i = 0; i < I; i++) {
        gu.set(x.gateUp.subarray(2 * i * D, (2 * i + 1) * D), i * D);
        gu.set(x.gateUp.subarray((2 * i + 1) * D, (2 * i + 2) * D), (I + i) * D);
        gub[i] = x.gateUpBias[2 * i];
        gub[I + i] = x.gateUpBias[2 * i + 1];
      }
      const label = `layers.${layer}.experts.${e}`;
      return {
        gateUp: this.store(`${label}.gate_up`, gu, 2 * I, D, fmt), down: this.store(`${label}.down`, x.down, D, I, fmt),
        gateUpBias: bias(gub, `${label}.gate_up_bias`), downBias: bias(Float32Array.from(x.downBias), `${label}.down_bias`),
      };
    });
    const gate = this.store(`layers.${layer}.router`, p.gate, E, D, 'f32');
    const act = this.cfg.expertActivation!;
    return { gate, bias: 0, experts, shared: null, sharedGate: null, routerBias: bias(oss.routerBias, `layers.${layer}.router_bias`), act: { alpha: act.alpha, limit: act.limit } };
  }

  // ------------------------------------------------------------------------------------- activations

  embed(table: WasmWeight, tokens: ArrayLike<number>, D: number): WasmTensor {
    const out = this.temp(tokens.length, D);
    const f = this.k.f32, base = table.ptr >> 2, o = out.ptr >> 2;
    // A GGUF table (blocks, or F16/BF16 rows) is decoded row by row as ggml decodes it.
    const type = table.format === 'gguf' ? table.ggufType! : table.format === 'f16' ? 'F16' : table.format === 'bf16' ? 'BF16' : null;
    const rb = type && isDecodable(type) ? rowBytes(ggmlTypeByName(type)!, D) : 0;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (!(t >= 0 && t < table.N)) throw new RangeError(`token id ${t} is outside the vocabulary [0, ${table.N})`);
      if (type && isDecodable(type)) f.set(dequantize(type, this.k.u8.subarray(table.ptr + t * rb, table.ptr + (t + 1) * rb), D), o + i * D);
      else f.copyWithin(o + i * D, base + t * D, base + (t + 1) * D);
    }
    this.layerMark = this.k.heapBytes;
    return out;
  }

  endLayer(): void {
    if (this.layerMark >= 0) this.k.rewind(this.layerMark);
  }

  rmsNorm(x: WasmTensor, w: WasmWeight, eps: number): WasmTensor {
    const y = this.temp(x.rows, x.cols);
    this.k.rmsNorm(x.ptr, w.ptr, y.ptr, x.rows, x.cols, eps);
    return y;
  }

  rmsNormSlice(x: WasmTensor, offset: number, dim: number, w: WasmWeight, eps: number): void {
    const p = x.ptr + offset * 4;
    this.k.rmsNorm(p, w.ptr, p, x.rows, dim, eps, x.cols, x.cols);
  }

  linear(x: WasmTensor, w: WasmWeight): WasmTensor {
    const y = this.temp(x.rows, w.N);
    this.k.matmul(x.ptr, w, y.ptr, x.rows);
    return y;
  }

  rope(x: WasmTensor, heads: number, headStride: number, offset: number, ropeDim: number, past: number, style?: RopeStyle): void {
    if (past + x.rows > this.capacity) throw new RangeError(`rope: positions up to ${past + x.rows} exceed the context (${this.capacity})`);
    this.k.rope(x.ptr, { rows: x.rows, heads, rowStride: x.cols, headStride, offset, ropeDim, pos0: past }, this.ropeCs, style);
  }

  rmsNormHeads(x: WasmTensor, heads: number, w: WasmWeight, eps: number): void {
    const d = x.cols / heads;
    this.k.rmsNorm(x.ptr, w.ptr, x.ptr, x.rows * heads, d, eps);
  }

  addBias(x: WasmTensor, b: WasmWeight): void { this.k.addBiasRows(x.ptr, b.ptr, x.rows, x.cols); }

  scale(x: WasmTensor, s: number): void { this.k.scale(x.ptr, s, x.rows * x.cols); }

  /** GQA: appends k, v [S, kvHeads·d] to layer's cache at `past`, then attends causally (window, sinks: GPT-OSS). */
  attention(layer: number, q: WasmTensor, k: WasmTensor, v: WasmTensor, shape: GqaShape, past: number, scale: number, extras?: AttentionExtras<WasmWeight>): WasmTensor {
    const S = q.rows, w = shape.kvHeads * shape.headDim;
    if (past !== this.length) throw new Error(`WasmBackend.attention: the cache holds ${this.length} tokens, the forward expects ${past}`);
    if (past + S > this.capacity) throw new RangeError(`attention: ${past + S} tokens exceed the context (${this.capacity})`);
    if (k.cols !== w || v.cols !== w || q.cols !== shape.heads * shape.headDim) throw new Error(`WasmBackend.attention: q [${q.rows}, ${q.cols}], k [${k.rows}, ${k.cols}], v [${v.rows}, ${v.cols}] for ${shape.heads}/${shape.kvHeads} heads of ${shape.headDim}`);
    const f = this.k.f32;
    f.copyWithin((this.kCache[layer] >> 2) + past * w, k.ptr >> 2, (k.ptr >> 2) + S * w);
    f.copyWithin((this.vCache[layer] >> 2) + past * w, v.ptr >> 2, (v.ptr >> 2) + S * w);
    const out = this.temp(S, shape.heads * shape.headDim);
    this.k.gqa({ q: q.ptr, k: this.kCache[layer], v: this.vCache[layer], sinks: extras?.sinks?.ptr ?? 0, out: out.ptr, S, heads: shape.heads, kvHeads: shape.kvHeads, d: shape.headDim, past, scale, window: extras?.window ?? 0 });
    return out;
  }

  mla(layer: number, q: WasmTensor, kvA: WasmTensor, kvB: WasmWeight, d: MlaShape, past: number, scale: number): WasmTensor {
    const S = q.rows, r = d.kvLora, rope = d.qkRope;
    const held = layer < this.cfg.numLayers ? this.length : this.mtpLength;
    if (this.latent[layer] === undefined) throw new Error(`WasmBackend.mla: layer ${layer} has no latent cache (addCacheLayer)`);
    if (past !== held) throw new Error(`WasmBackend.mla: layer ${layer}'s cache holds ${held} tokens, the forward expects ${past}`);
    if (past + S > this.capacity) throw new RangeError(`mla: ${past + S} tokens exceed the context (${this.capacity})`);
    // Append the new rows' latent and k_pe to the cache.
    const f = this.k.f32, lat = this.latent[layer] >> 2, pe = this.pe[layer] >> 2, src = kvA.ptr >> 2;
    for (let i = 0; i < S; i++) {
      const row = src + i * kvA.cols;
      f.copyWithin(lat + (past + i) * r, row, row + r);
      f.copyWithin(pe + (past + i) * rope, row + r, row + r + rope);
    }
    const out = this.temp(S, d.heads * d.vHead);
    this.k.mla({ q: q.ptr, kvB: kvB.ptr, latent: this.latent[layer], pe: this.pe[layer], out: out.ptr, S, heads: d.heads, nope: d.qkNope, rope, v: d.vHead, r, past, scale });
    return out;
  }

  mlp(x: WasmTensor, gate: WasmWeight, up: WasmWeight, down: WasmWeight): WasmTensor {
    const g = this.linear(x, gate), u = this.linear(x, up);
    this.k.siluMul(g.ptr, u.ptr, g.ptr, x.rows * gate.N);
    return this.linear({ ptr: g.ptr, rows: x.rows, cols: gate.N }, down);
  }

  /** SwiGLU (or GPT-OSS's clamped SwiGLU, `act`) of a fused expert on `rows` rows at x → y [rows, D]. */
  private expertForward(x: number, rows: number, e: WasmExpert, act: WasmMoe['act'] = null): number {
    const I = e.down.K;
    const h = this.k.alloc(rows * I * 4), y = this.k.alloc(rows * e.down.N * 4);
    if ('gateUp' in e) {
      const gu = this.k.alloc(rows * 2 * I * 4);
      this.k.matmul(x, e.gateUp, gu, rows);
      if (e.gateUpBias) this.k.addBiasRows(gu, e.gateUpBias, rows, 2 * I);
      if (act) this.k.swigluOaiFused(gu, h, rows, I, act.alpha, act.limit);
      else this.k.siluMulFused(gu, h, rows, I);
    } else {
      const u = this.k.alloc(rows * I * 4);
      this.k.matmul(x, e.gate, h, rows);
      this.k.matmul(x, e.up, u, rows);
      this.k.siluMul(h, u, h, rows * I);
    }
    this.k.matmul(h, e.down, y, rows);
    if (e.downBias) this.k.addBiasRows(y, e.downBias, rows, e.down.N);
    return y;
  }

  moeForward(layer: number, x: WasmTensor, e: WasmMoe, cfg: ModelConfig): WasmTensor {
    const T = x.rows, D = x.cols, K = cfg.numExpertsPerTok, E = cfg.nRoutedExperts;
    const k = this.k;
    const logits = k.alloc(T * E * 4), ids = k.alloc(T * K * 4), weights = k.alloc(T * K * 4);
    k.matmul(x.ptr, e.gate, logits, T);
    // GPT-OSS: softmax over the top-k of (logits + bias) = the full softmax renormalised over the top-k.
    if (e.routerBias) k.addBiasRows(logits, e.routerBias, T, E);
    k.moeRoute(logits, e.bias, T, e.routerBias ? { ...routingOf(cfg), scoring: 'softmax', normTopkProb: true, routedScalingFactor: 1 } : routingOf(cfg), ids, weights);
    const idv = new Int32Array(k.u8.buffer, ids, T * K).slice();
    const wv = k.readF32(weights, T * K);
    const out = this.temp(T, D);
    if (e.shared) {
      const m = k.mark();
      const y = this.expertForward(x.ptr, T, e.shared);
      if (e.sharedGate) {
        const g = k.alloc(T * 4);
        k.matmul(x.ptr, e.sharedGate, g, T);
        k.sigmoidGateRows(y, g, T, D);
      }
      k.f32.copyWithin(out.ptr >> 2, y >> 2, (y >> 2) + T * D);
      k.release(m);
    } else k.f32.fill(0, out.ptr >> 2, (out.ptr >> 2) + T * D);
    // Each expert runs once on the rows routed to it (gathered), then scatters its weighted output.
    const rowsOf: number[][] = Array.from({ length: E }, () => []);
    for (let i = 0; i < T * K; i++) rowsOf[idv[i]].push(i);
    for (let ex = 0; ex < E; ex++) {
      const entries = rowsOf[ex];
      if (!entries.length) continue;
      const m = k.mark();
      const n = entries.length;
      let xin = x.ptr;
      if (!(n === 1 && T === 1)) {
        xin = k.alloc(n * D * 4);
        const f = k.f32;
        for (let j = 0; j < n; j++) { const t = (entries[j] / K) | 0; f.copyWithin((xin >> 2) + j * D, (x.ptr >> 2) + t * D, (x.ptr >> 2) + (t + 1) * D); }
      }
      const y = this.expertForward(xin, n, e.experts[ex], e.act);
      for (let j = 0; j < n; j++) { const t = (entries[j] / K) | 0; k.axpy(out.ptr + t * D * 4, y + j * D * 4, wv[entries[j]], D); }
      k.release(m);
    }
    let c = this.counts.get(layer);
    if (!c) { c = new Float64Array(E); this.counts.set(layer, c); }
    for (let i = 0; i < T * K; i++) c[idv[i]]++;
    if (this.captureRouting) this.routing.set(layer, Array.from({ length: T }, (_, t) => [...idv.subarray(t * K, (t + 1) * K)]));
    return out;
  }

  addInPlace(h: WasmTensor, r: WasmTensor): void { this.k.addInPlace(h.ptr, r.ptr, h.rows * h.cols); }

  lastRow(x: WasmTensor): WasmTensor {
    return { ptr: x.ptr + (x.rows - 1) * x.cols * 4, rows: 1, cols: x.cols };
  }

  zeroRows(x: WasmTensor, rows: number): void {
    this.k.viewF32(x.ptr, Math.min(rows, x.rows) * x.cols).fill(0);
  }
}

/** Values one token adds to one layer's KV cache on WASM: MLA's latent and k_pe, or GQA's K and V of every kv head. */
export function wasmKvValuesPerToken(cfg: ModelConfig): number {
  return cfg.attention === 'gqa' ? 2 * cfg.numKvHeads * cfg.headDim : cfg.kvLoraRank + cfg.qkRopeHeadDim;
}

function concatF32(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
