/**
 * A whole DeepSeek-V3 model (MLA attention, DeepSeekMoE with the bias-routed sigmoid gate) as ONNX
 * graphs, for the onnxruntime-web whole-model peer (suites/model-peers.ts).
 *
 * The graphs are emitted by the model's own forward pass (model/deepseek.ts through architectures.ts)
 * run on a Backend whose "tensors" are ONNX value names: every backend call appends the nodes that
 * compute it, so the ONNX model is the architecture file's computation, not a second transcription of
 * it. Weights come from buildWeights (model/load.ts) as f32 initializers.
 *
 * Two graphs, as an exporter of a causal LM with a KV cache emits them:
 *  - prefill: input_ids [S] (int64), positions [S] (f32), attention_bias [S, S] (additive causal mask)
 *    → logits [1, V] of the last row, present_key.{l} [H, S, nope+rope], present_value.{l} [H, S, v];
 *  - decode: the same plus past_key.{l} [H, P, nope+rope], past_value.{l} [H, P, v] (P symbolic),
 *    attention_bias [S, P + S] → logits and the presents [H, P + S, ·].
 * The cache holds each head's expanded keys and values (Hugging Face's DeepseekV3Attention caches
 * key_states / value_states after kv_b_proj, so that is what its export carries), not MLA's latent.
 *
 * Op choices (plain ONNX ops, opset 21, so the WebGPU and the wasm EP can both run them):
 *  - RMSNorm as Mul/ReduceMean/Add/Sqrt/Div/Mul; RoPE (interleaved pairs) from Cos/Sin of
 *    positions × inv_freq, computed in the graph;
 *  - attention as MatMul / Softmax / MatMul over the concatenated cache with the additive mask;
 *  - the router as Sigmoid, + bias, group scores (sum of each group's top 2, TopK), the group mask, TopK
 *    of the masked scores, GatherElements of the unbiased scores, renormalised and scaled;
 *  - routed experts without a MoE contrib op (ORT's WebGPU EP has none): in the decode graph by Gather
 *    of the chosen experts' stacked weights [S, k, ·, ·] and batched MatMuls (only k experts read); in
 *    the prefill graph every expert on every token as batched MatMuls [E, S, ·] weighted by the dense
 *    routing weights (E/k times the routed flops, each weight read once: on a 25-token prompt the
 *    per-token gather was ~25× slower on ORT's WebGPU EP).
 */
import type { AttentionExtras, Backend, GqaShape, HostMatrix, HostMoe, MlaShape, ModelWeights, RopeStyle } from '../model/deepseek';
import { attentionConstants, hostMatrixToF32 } from '../model/deepseek';
import type { MatrixRole } from '../model/tensors';
import type { ModelConfig } from '../model/config';
import { routingOf } from '../model/config';
import { forward } from '../model/architectures';
import { buildWeights } from '../model/load';
import type { Checkpoint } from '../model/checkpoint';
import { UnsupportedError } from '../errors';
import { buildModel, type Initializer, type NodeSpec, type TensorSpec, type AttributeValue } from './onnx-builder';

/** An activation: the ONNX value holding it and its column count (rows are the symbolic S). */
export interface GraphTensor { name: string; cols: number }
/** A weight: an initializer's name. */
export interface GraphWeight { name: string; dims: number[] }
export interface GraphMoe {
  gate: GraphWeight; bias: GraphWeight | null;
  /** Routed experts stacked for MatMul: gate / up [E, D, I], down [E, I, D]. */
  wg: GraphWeight; wu: GraphWeight; wd: GraphWeight;
  shared: { gate: GraphWeight; up: GraphWeight; down: GraphWeight } | null;
  I: number;
}

function transpose(w: Float32Array, N: number, K: number): Float32Array {
  const t = new Float32Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) t[k * N + n] = w[n * K + k];
  return t;
}

const MASKED = -1e9;

export class OnnxGraphBackend implements Backend<GraphTensor, GraphWeight, GraphMoe> {
  readonly initializers = new Map<string, Initializer>();
  private nodes: NodeSpec[] = [];
  private counter = 0;
  private decode = false;
  private ropeTables: { cos: string; sin: string } | null = null;
  private readonly consts = new Map<string, string>();

  constructor(readonly cfg: ModelConfig) {
    if (cfg.family !== 'deepseek' || cfg.attention === 'gqa') throw new UnsupportedError(`the ONNX graph backend builds DeepSeek-V2/V3 (MLA) models, not ${cfg.family}`);
  }

  // ---- graph plumbing ------------------------------------------------------------------------------

  private fresh(prefix: string): string { return `${prefix}_${this.counter++}`; }

  private op(opType: string, inputs: string[], attributes?: Record<string, AttributeValue>, outputs = 1, domain?: string): string[] {
    const outs = Array.from({ length: outputs }, () => this.fresh(opType.toLowerCase()));
    this.nodes.push({ opType, inputs, outputs: outs, ...(attributes ? { attributes } : {}), ...(domain ? { domain } : {}) });
    return outs;
  }
  private op1(opType: string, inputs: string[], attributes?: Record<string, AttributeValue>): string { return this.op(opType, inputs, attributes)[0]; }

  private init(name: string, dims: number[], data: Float32Array | BigInt64Array): GraphWeight {
    this.initializers.set(name, { name, type: data instanceof BigInt64Array ? 'INT64' : 'FLOAT', dims, data });
    return { name, dims };
  }
  /** An int64 constant [values.length] (shapes, axes, slice bounds), shared within a graph. */
  private ints(values: number[]): string {
    const key = `i64:${values.join(',')}`;
    let n = this.consts.get(key);
    if (!n) { n = `const_${this.consts.size}_i64`; this.init(n, [values.length], BigInt64Array.from(values.map(BigInt))); this.consts.set(key, n); }
    return n;
  }
  private scalar(v: number): string {
    const key = `f32:${v}`;
    let n = this.consts.get(key);
    if (!n) { n = `const_${this.consts.size}_f32`; this.init(n, [], Float32Array.of(v)); this.consts.set(key, n); }
    return n;
  }
  private slice(x: string, start: number, end: number, axis: number): string { return this.op1('Slice', [x, this.ints([start]), this.ints([end]), this.ints([axis])]); }
  private reshape(x: string, shape: number[]): string { return this.op1('Reshape', [x, this.ints(shape)]); }
  private silu(x: string): string { return this.op1('Mul', [x, this.op1('Sigmoid', [x])]); }
  private norm(x: string, w: string, eps: number): string {
    const ms = this.op1('ReduceMean', [this.op1('Mul', [x, x]), this.ints([-1])], { keepdims: 1 });
    return this.op1('Mul', [this.op1('Div', [x, this.op1('Sqrt', [this.op1('Add', [ms, this.scalar(eps)])])]), w]);
  }

  // ---- weights --------------------------------------------------------------------------------------

  vector(name: string, data: Float32Array): GraphWeight { return this.init(name, [data.length], data); }
  /** Stored transposed, [K, N], so a linear is MatMul(x [S, K], W) with no Transpose node. */
  matrix(name: string, m: HostMatrix, _role: MatrixRole): GraphWeight { return this.init(name, [m.K, m.N], transpose(hostMatrixToF32(m), m.N, m.K)); }
  embedding(name: string, m: HostMatrix): GraphWeight { return this.init(name, [m.N, m.K], hostMatrixToF32(m)); }
  moe(layer: number, p: HostMoe): GraphMoe {
    if (p.gptOss || p.ggufExperts || p.ggufShared || p.sharedGate) throw new UnsupportedError('the ONNX graph backend takes DeepSeek MoE layers with f32-decodable experts only');
    const E = p.experts.length, D = this.cfg.hiddenSize;
    const I = p.experts[0].gate.length / D;
    const wg = new Float32Array(E * D * I), wu = new Float32Array(E * D * I), wd = new Float32Array(E * I * D);
    p.experts.forEach((e, i) => {
      wg.set(transpose(e.gate, I, D), i * D * I);
      wu.set(transpose(e.up, I, D), i * D * I);
      wd.set(transpose(e.down, D, I), i * I * D);
    });
    const pre = `layers.${layer}.moe`;
    const sh = p.shared;
    const SI = sh ? sh.gate.length / D : 0;
    return {
      gate: this.init(`${pre}.gate`, [D, E], transpose(p.gate, E, D)),
      bias: p.bias ? this.init(`${pre}.bias`, [E], p.bias) : null,
      wg: this.init(`${pre}.wg`, [E, D, I], wg), wu: this.init(`${pre}.wu`, [E, D, I], wu), wd: this.init(`${pre}.wd`, [E, I, D], wd),
      shared: sh ? {
        gate: this.init(`${pre}.shared.gate`, [D, SI], transpose(sh.gate, SI, D)),
        up: this.init(`${pre}.shared.up`, [D, SI], transpose(sh.up, SI, D)),
        down: this.init(`${pre}.shared.down`, [SI, D], transpose(sh.down, D, SI)),
      } : null,
      I,
    };
  }

  // ---- activations ----------------------------------------------------------------------------------

  embed(table: GraphWeight, _tokens: ArrayLike<number>, D: number): GraphTensor {
    return { name: this.op1('Gather', [table.name, 'input_ids'], { axis: 0 }), cols: D };
  }
  rmsNorm(x: GraphTensor, w: GraphWeight, eps: number): GraphTensor { return { name: this.norm(x.name, w.name, eps), cols: x.cols }; }
  rmsNormSlice(x: GraphTensor, offset: number, dim: number, w: GraphWeight, eps: number): void {
    const parts: string[] = [];
    if (offset > 0) parts.push(this.slice(x.name, 0, offset, 1));
    parts.push(this.norm(this.slice(x.name, offset, offset + dim, 1), w.name, eps));
    if (offset + dim < x.cols) parts.push(this.slice(x.name, offset + dim, x.cols, 1));
    x.name = parts.length === 1 ? parts[0] : this.op1('Concat', parts, { axis: 1 });
  }
  linear(x: GraphTensor, w: GraphWeight): GraphTensor { return { name: this.op1('MatMul', [x.name, w.name]), cols: w.dims[1] }; }

  /** cos / sin [S, 1, ropeDim/2, 1] of positions × inv_freq (f32 product, as torch computes the angles). */
  private ropeTable(ropeDim: number) {
    if (!this.ropeTables) {
      const { invFreq } = attentionConstants(this.cfg);
      if (invFreq.length !== ropeDim / 2) throw new UnsupportedError(`RoPE over ${ropeDim} columns but ${invFreq.length} frequencies`);
      const inv = this.init('rope.inv_freq', [1, invFreq.length], invFreq);
      const ang = this.op1('Mul', [this.op1('Unsqueeze', ['positions', this.ints([1])]), inv.name]);
      this.ropeTables = { cos: this.reshape(this.op1('Cos', [ang]), [-1, 1, ropeDim / 2, 1]), sin: this.reshape(this.op1('Sin', [ang]), [-1, 1, ropeDim / 2, 1]) };
    }
    return this.ropeTables;
  }
  rope(x: GraphTensor, heads: number, headStride: number, offset: number, ropeDim: number, _past: number, style?: RopeStyle): void {
    if (style === 'half') throw new UnsupportedError('the ONNX graph backend rotates interleaved pairs only (DeepSeek)');
    const { cos, sin } = this.ropeTable(ropeDim);
    const x3 = this.reshape(x.name, [-1, heads, headStride]);
    const r4 = this.reshape(this.slice(x3, offset, offset + ropeDim, 2), [-1, heads, ropeDim / 2, 2]);
    const a = this.slice(r4, 0, 1, 3), b = this.slice(r4, 1, 2, 3);
    const a2 = this.op1('Sub', [this.op1('Mul', [a, cos]), this.op1('Mul', [b, sin])]);
    const b2 = this.op1('Add', [this.op1('Mul', [a, sin]), this.op1('Mul', [b, cos])]);
    const parts: string[] = [];
    if (offset > 0) parts.push(this.slice(x3, 0, offset, 2));
    parts.push(this.reshape(this.op1('Concat', [a2, b2], { axis: 3 }), [-1, heads, ropeDim]));
    if (offset + ropeDim < headStride) parts.push(this.slice(x3, offset + ropeDim, headStride, 2));
    x.name = this.reshape(parts.length === 1 ? parts[0] : this.op1('Concat', parts, { axis: 2 }), [-1, heads * headStride]);
  }
  rmsNormHeads(): void { throw new UnsupportedError('the ONNX graph backend has no per-head norm (not a DeepSeek op)'); }
  addBias(): void { throw new UnsupportedError('the ONNX graph backend has no projection bias (not a DeepSeek op)'); }
  scale(): void { throw new UnsupportedError('the ONNX graph backend has no activation scale (not a DeepSeek op)'); }
  zeroRows(): void { throw new UnsupportedError('the ONNX graph backend does not build MTP modules'); }
  attention(_l: number, _q: GraphTensor, _k: GraphTensor, _v: GraphTensor, _s: GqaShape, _p: number, _sc: number, _e?: AttentionExtras<GraphWeight>): GraphTensor {
    throw new UnsupportedError('the ONNX graph backend builds MLA attention only');
  }

  /** MLA with the expanded per-head cache (see the file comment); `past` > 0 marks the decode graph. */
  mla(layer: number, q: GraphTensor, kvA: GraphTensor, kvB: GraphWeight, d: MlaShape, _past: number, scale: number): GraphTensor {
    const { heads: H, qkNope: nope, qkRope: rope, vHead: dv, kvLora: r } = d;
    const qt = this.op1('Transpose', [this.reshape(q.name, [-1, H, nope + rope])], { perm: [1, 0, 2] });
    const latent = this.slice(kvA.name, 0, r, 1), pe = this.slice(kvA.name, r, r + rope, 1);
    const kv = this.reshape(this.op1('MatMul', [latent, kvB.name]), [-1, H, nope + dv]);
    const peH = this.op1('Expand', [this.op1('Unsqueeze', [pe, this.ints([1])]), this.ints([1, H, 1])]);
    const k = this.op1('Concat', [this.slice(kv, 0, nope, 2), peH], { axis: 2 });
    let kt = this.op1('Transpose', [k], { perm: [1, 0, 2] });
    let vt = this.op1('Transpose', [this.slice(kv, nope, nope + dv, 2)], { perm: [1, 0, 2] });
    if (this.decode) {
      kt = this.op1('Concat', [`past_key.${layer}`, kt], { axis: 1 });
      vt = this.op1('Concat', [`past_value.${layer}`, vt], { axis: 1 });
    }
    this.nodes.push({ opType: 'Identity', inputs: [kt], outputs: [`present_key.${layer}`] });
    this.nodes.push({ opType: 'Identity', inputs: [vt], outputs: [`present_value.${layer}`] });
    const scores = this.op1('Add', [this.op1('Mul', [this.op1('MatMul', [qt, this.op1('Transpose', [kt], { perm: [0, 2, 1] })]), this.scalar(scale)]), 'attention_bias']);
    const o = this.op1('MatMul', [this.op1('Softmax', [scores], { axis: -1 }), vt]);
    return { name: this.reshape(this.op1('Transpose', [o], { perm: [1, 0, 2] }), [-1, H * dv]), cols: H * dv };
  }

  mlp(x: GraphTensor, gate: GraphWeight, up: GraphWeight, down: GraphWeight): GraphTensor {
    const a = this.op1('Mul', [this.silu(this.op1('MatMul', [x.name, gate.name])), this.op1('MatMul', [x.name, up.name])]);
    return { name: this.op1('MatMul', [a, down.name]), cols: down.dims[1] };
  }

  moeForward(_layer: number, x: GraphTensor, e: GraphMoe, cfg: ModelConfig): GraphTensor {
    const R = routingOf(cfg);
    const E = R.experts, K = R.topK, D = x.cols, gs = E / R.nGroup;
    const logits = this.op1('MatMul', [x.name, e.gate.name]);
    const s = R.scoring === 'sigmoid' ? this.op1('Sigmoid', [logits]) : this.op1('Softmax', [logits], { axis: -1 });
    let c = R.hasBias && e.bias ? this.op1('Add', [s, e.bias.name]) : s;
    if (R.nGroup > 1 && R.topkGroup < R.nGroup) {
      // Group score: the sum of a group's top 2 (with the bias, noaux_tc) or its max; keep the best topk_group groups.
      const c3 = this.reshape(c, [-1, R.nGroup, gs]);
      const g = R.hasBias
        ? this.op1('ReduceSum', [this.op(`TopK`, [c3, this.ints([Math.min(2, gs)])], { axis: -1 }, 2)[0], this.ints([-1])], { keepdims: 0 })
        : this.op1('ReduceMax', [c3, this.ints([-1])], { keepdims: 0 });
      const [gv] = this.op('TopK', [g, this.ints([R.topkGroup])], { axis: -1 }, 2);
      // Kept groups score at least the topk_group-th best group score.
      const threshold = this.slice(gv, R.topkGroup - 1, R.topkGroup, 1);
      const keep = this.op1('Cast', [this.op1('GreaterOrEqual', [g, threshold])], { to: 1 });
      const penalty = this.op1('Mul', [this.op1('Sub', [keep, this.scalar(1)]), this.scalar(-MASKED)]);
      c = this.reshape(this.op1('Add', [c3, this.op1('Unsqueeze', [penalty, this.ints([2])])]), [-1, E]);
    }
    const [topVals, ids] = this.op('TopK', [c, this.ints([K])], { axis: -1 }, 2);
    // The chosen experts' weights: the unbiased scores, renormalised over the chosen, scaled. Decode takes
    // them per slot [S, K] (GatherElements at the TopK ids); prefill as a dense [S, E] row that is zero
    // off the chosen experts (those scoring at least the k-th selection score: no int64 ids, which ORT's
    // WebGPU EP cannot compare).
    const normed = (v: string) => this.op1('Mul', [
      R.normTopkProb ? this.op1('Div', [v, this.op1('Add', [this.op1('ReduceSum', [v, this.ints([-1])], { keepdims: 1 }), this.scalar(1e-20)])]) : v,
      this.scalar(R.routedScalingFactor),
    ]);
    let routed: string;
    if (this.decode) {
      // Decode (one token): the chosen experts' weights gathered, [S, K, D, I] and [S, K, I, D]; only k experts are read.
      const w = normed(this.op1('GatherElements', [s, ids], { axis: 1 }));
      const x4 = this.reshape(x.name, [-1, 1, 1, D]);
      const gsel = this.op1('Gather', [e.wg.name, ids], { axis: 0 });
      const usel = this.op1('Gather', [e.wu.name, ids], { axis: 0 });
      const dsel = this.op1('Gather', [e.wd.name, ids], { axis: 0 });
      const a = this.op1('Mul', [this.silu(this.op1('MatMul', [x4, gsel])), this.op1('MatMul', [x4, usel])]);
      const y = this.op1('Mul', [this.op1('MatMul', [a, dsel]), this.reshape(w, [-1, K, 1, 1])]);
      routed = this.op1('ReduceSum', [y, this.ints([1])], { keepdims: 0 });
    } else {
      // Prefill: every expert on every token as batched MatMuls [E, S, ·] weighted by the dense routing
      // weights (zero for experts a token did not choose): E/k times the routed flops, but the weights are
      // read once instead of once per token.
      const chosen = this.op1('Cast', [this.op1('GreaterOrEqual', [c, this.slice(topVals, K - 1, K, 1)])], { to: 1 });
      const dense = normed(this.op1('Mul', [chosen, s]));
      const x3 = this.op1('Unsqueeze', [x.name, this.ints([0])]);
      const a = this.op1('Mul', [this.silu(this.op1('MatMul', [x3, e.wg.name])), this.op1('MatMul', [x3, e.wu.name])]);
      const y = this.op1('Mul', [this.op1('MatMul', [a, e.wd.name]), this.op1('Unsqueeze', [this.op1('Transpose', [dense], { perm: [1, 0] }), this.ints([2])])]);
      routed = this.op1('ReduceSum', [y, this.ints([0])], { keepdims: 0 });
    }
    let out = this.reshape(routed, [-1, D]);
    if (e.shared) out = this.op1('Add', [out, this.mlp(x, e.shared.gate, e.shared.up, e.shared.down).name]);
    return { name: out, cols: D };
  }

  addInPlace(h: GraphTensor, r: GraphTensor): void { h.name = this.op1('Add', [h.name, r.name]); }
  lastRow(x: GraphTensor): GraphTensor { return { name: this.slice(x.name, -1, 2 ** 31 - 1, 0), cols: x.cols }; }

  // ---- the two graphs -------------------------------------------------------------------------------

  /** The prefill (decode = false) or decode graph of the model whose weights buildWeights made here. */
  graph(w: ModelWeights<GraphWeight, GraphMoe>, decode: boolean): Uint8Array {
    this.nodes = [];
    this.ropeTables = null;
    this.decode = decode;
    const cfg = this.cfg;
    // `past` only has to be > 0 for the decode graph; the tokens' values are graph inputs.
    const logits = forward(this, cfg, w, [0], { past: decode ? 1 : 0, lastOnly: true });
    this.nodes.push({ opType: 'Identity', inputs: [logits.name], outputs: ['logits'] });
    const { shape } = attentionConstants(cfg);
    const qk = shape.qkNope + shape.qkRope, H = shape.heads;
    const L = decode ? 'total' : 'S';
    const inputs: TensorSpec[] = [
      { name: 'input_ids', type: 'INT64', dims: ['S'] },
      { name: 'positions', type: 'FLOAT', dims: ['S'] },
      { name: 'attention_bias', type: 'FLOAT', dims: ['S', L] },
    ];
    const outputs: TensorSpec[] = [{ name: 'logits', type: 'FLOAT', dims: [1, cfg.vocabSize] }];
    for (let l = 0; l < cfg.numLayers; l++) {
      if (decode) inputs.push({ name: `past_key.${l}`, type: 'FLOAT', dims: [H, 'past', qk] }, { name: `past_value.${l}`, type: 'FLOAT', dims: [H, 'past', shape.vHead] });
      outputs.push({ name: `present_key.${l}`, type: 'FLOAT', dims: [H, L, qk] }, { name: `present_value.${l}`, type: 'FLOAT', dims: [H, L, shape.vHead] });
    }
    const used = new Set(this.nodes.flatMap((n) => n.inputs));
    const initializers = [...this.initializers.values()].filter((i) => used.has(i.name));
    return buildModel({ nodes: this.nodes, inputs, outputs, initializers, name: decode ? 'webmoe-decode' : 'webmoe-prefill' });
  }
}

/** The checkpoint's main model (no MTP modules) as prefill and decode ONNX models. */
export async function deepseekOnnxModels(ckpt: Checkpoint): Promise<{ prefill: Uint8Array; decode: Uint8Array; cfg: ModelConfig }> {
  const cfg = ckpt.config;
  const be = new OnnxGraphBackend(cfg);
  const w = await buildWeights(be, cfg, ckpt);
  return { prefill: be.graph(w, false), decode: be.graph(w, true), cfg };
}

/** Host-side inputs of one forward: positions [past, past + S) and the additive causal mask [S, past + S]. */
export function onnxStepInputs(tokens: number[], past: number): { ids: BigInt64Array; positions: Float32Array; bias: Float32Array; total: number } {
  const S = tokens.length, total = past + S;
  const bias = new Float32Array(S * total);
  for (let i = 0; i < S; i++) for (let j = past + i + 1; j < total; j++) bias[i * total + j] = MASKED;
  return { ids: BigInt64Array.from(tokens.map(BigInt)), positions: Float32Array.from({ length: S }, (_, i) => past + i), bias, total };
}
