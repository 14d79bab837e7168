/**
 * The CPU reference backend: the architecture file's forward pass on plain Float32Arrays, built from
 * the kernels' CPU references. Slow and simple on purpose; it checks the GPU path on configurations the
 * official fixture does not cover (no q_lora, YaRN, several dense layers, half-precision storage).
 */
import { hostMatrixToF32, type AttentionExtras, type GptOssHostExperts, type Backend, type GqaShape, type HostExpert, type HostMatrix, type HostMoe, type MlaShape, type MatrixRole, type RopeStyle } from './deepseek';
import { routingOf, type ModelConfig } from './config';
import { matmulRef } from '../kernels/matmul.ref';
import { rmsNormRef } from '../kernels/rmsnorm.ref';
import { ropeRef } from '../kernels/rope.ref';
import { ropeInvFreq } from '../kernels/rope-params';
import { moeGateRef, routerLogitsRef, moeExpertsRef, sharedExpertRef, gptOssRouterRef, gptOssExpertsRef } from '../kernels/moe.ref';
import { mxfp4DequantHfRef } from '../kernels/weight.ref';
import { mlaAttentionRef } from '../kernels/mla.ref';
import { attentionRef } from '../kernels/attention.ref';
import { addBiasRef, scaleRef, sigmoidGateRowsRef } from '../kernels/elementwise.ref';

export interface CpuTensor { data: Float32Array; rows: number; cols: number }
export interface CpuWeight { data: Float32Array; N: number; K: number }
export interface CpuMoe { gate: CpuWeight; bias: Float32Array | null; experts: HostExpert[]; shared: HostExpert | null; sharedGate: Float32Array | null; I: number; oss?: CpuGptOssExperts }
/** GPT-OSS experts in the layout gptOssExpertsRef takes: per expert gate_up [2I, D] (gate/up rows interleaved) and down [D, I], with biases. */
export interface CpuGptOssExperts { routerBias: Float32Array; experts: { gateUp: Float32Array; gateUpBias: Float32Array; down: Float32Array; downBias: Float32Array }[] }

/** [E, K, N] (HF's x @ W parameter) → per expert [N, K] row-major, as f32. */
function transposeStack(w: ArrayLike<number>, E: number, K: number, N: number): Float32Array[] {
  return Array.from({ length: E }, (_, e) => {
    const out = new Float32Array(N * K), base = e * K * N;
    for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) out[n * K + k] = w[base + k * N + n];
    return out;
  });
}

/** A GPT-OSS layer's experts (MXFP4 decoded as transformers' convert_moe_packed_tensors, or unquantised) → per-expert f32 matrices. */
export function gptOssCpuExperts(g: GptOssHostExperts, E: number, D: number, I: number): CpuGptOssExperts {
  const G = (k: number) => Math.ceil(k / 32);
  // [E, K, N] stacks: gate_up [E, D, 2I], down [E, I, D] (MXFP4 rows padded to whole blocks are cut back).
  const gateUp = g.mxfp4 ? mxfp4DequantHfRef(g.mxfp4.gateUpBlocks, g.mxfp4.gateUpScales, E, 2 * I, G(D)) : g.dense!.gateUp;
  const down = g.mxfp4 ? mxfp4DequantHfRef(g.mxfp4.downBlocks, g.mxfp4.downScales, E, D, G(I)) : g.dense!.down;
  const gu = transposeStack(gateUp, E, g.mxfp4 ? G(D) * 32 : D, 2 * I), dn = transposeStack(down, E, g.mxfp4 ? G(I) * 32 : I, D);
  const cut = (m: Float32Array, N: number, Kp: number, K: number) => (Kp === K ? m : Float32Array.from({ length: N * K }, (_, i) => m[Math.floor(i / K) * Kp + (i % K)]));
  return {
    routerBias: g.routerBias,
    experts: Array.from({ length: E }, (_, e) => ({
      gateUp: cut(gu[e], 2 * I, g.mxfp4 ? G(D) * 32 : D, D), gateUpBias: g.gateUpBias.subarray(e * 2 * I, (e + 1) * 2 * I),
      down: cut(dn[e], D, g.mxfp4 ? G(I) * 32 : I, I), downBias: g.downBias.subarray(e * D, (e + 1) * D),
    })),
  };
}

interface LayerCache { latent: Float32Array; pe: Float32Array; length: number }
/** GQA: per layer and token, k and v of every kv head ([tokens, kvHeads·d]). */
interface KvLayerCache { k: Float32Array; v: Float32Array; length: number }

export class CpuBackend implements Backend<CpuTensor, CpuWeight, CpuMoe> {
  /** Latent KV cache: per layer and token, RMSNorm(c_KV) and roped k_pe. */
  cache: LayerCache[] = [];
  /** GQA KV cache (families with attention 'gqa'). */
  kv: KvLayerCache[] = [];
  /** Expert ids and weights chosen by each MoE layer in the last forward: [layer] → rows of [ids, weights]. */
  routing = new Map<number, { ids: number[][]; weights: number[][] }>();
  private invFreq: Float32Array;

  constructor(private cfg: ModelConfig) {
    this.invFreq = ropeInvFreq(cfg.qkRopeHeadDim, cfg.ropeTheta, cfg.ropeScaling);
  }

  mlaMode: 'naive' | 'absorb' = 'naive';

  get cachedTokens(): number { return this.cache[0]?.length ?? this.kv[0]?.length ?? 0; }
  truncate(n: number): void { for (const c of [...this.cache, ...this.kv]) c.length = Math.min(c.length, n); }

  vector(_name: string, data: Float32Array): CpuWeight { return { data, N: data.length, K: 1 }; }
  matrix(_name: string, m: HostMatrix, _role: MatrixRole): CpuWeight { return { data: hostMatrixToF32(m), N: m.N, K: m.K }; }
  embedding(_name: string, m: HostMatrix): CpuWeight { return { data: hostMatrixToF32(m), N: m.N, K: m.K }; }
  moe(_layer: number, p: HostMoe): CpuMoe {
    return {
      gate: { data: p.gate, N: this.cfg.nRoutedExperts, K: this.cfg.hiddenSize },
      bias: p.bias, experts: p.experts, shared: p.shared, sharedGate: p.sharedGate ?? null,
      I: this.cfg.moeIntermediateSize,
      ...(p.gptOss ? { oss: gptOssCpuExperts(p.gptOss, this.cfg.nRoutedExperts, this.cfg.hiddenSize, this.cfg.moeIntermediateSize) } : {}),
    };
  }

  embed(table: CpuWeight, tokens: ArrayLike<number>, D: number): CpuTensor {
    const out = new Float32Array(tokens.length * D);
    for (let i = 0; i < tokens.length; i++) out.set(table.data.subarray(tokens[i] * D, (tokens[i] + 1) * D), i * D);
    return { data: out, rows: tokens.length, cols: D };
  }

  rmsNorm(x: CpuTensor, w: CpuWeight, eps: number): CpuTensor {
    return { data: rmsNormRef(x.data, w.data, x.rows, x.cols, eps), rows: x.rows, cols: x.cols };
  }

  rmsNormSlice(x: CpuTensor, offset: number, dim: number, w: CpuWeight, eps: number): void {
    const slice = new Float32Array(x.rows * dim);
    for (let r = 0; r < x.rows; r++) slice.set(x.data.subarray(r * x.cols + offset, r * x.cols + offset + dim), r * dim);
    const y = rmsNormRef(slice, w.data, x.rows, dim, eps);
    for (let r = 0; r < x.rows; r++) x.data.set(y.subarray(r * dim, (r + 1) * dim), r * x.cols + offset);
  }

  linear(x: CpuTensor, w: CpuWeight): CpuTensor {
    return { data: matmulRef(x.data, w.data, x.rows, w.N, w.K), rows: x.rows, cols: w.N };
  }

  rope(x: CpuTensor, heads: number, headStride: number, offset: number, ropeDim: number, past: number, style?: RopeStyle): void {
    ropeRef(x.data, { rows: x.rows, heads, rowStride: x.cols, headStride, offset, ropeDim, invFreq: this.invFreq, pos0: past, style });
  }

  rmsNormHeads(x: CpuTensor, heads: number, w: CpuWeight, eps: number): void {
    const d = x.cols / heads;
    x.data.set(rmsNormRef(x.data, w.data, x.rows * heads, d, eps));
  }

  addBias(x: CpuTensor, b: CpuWeight): void { x.data.set(addBiasRef(x.data, b.data, x.cols)); }

  scale(x: CpuTensor, s: number): void { x.data.set(scaleRef(x.data, s)); }

  /** GQA over the per-kv-head cache: appends k/v rows, then the materialised softmax reference. */
  attention(layer: number, q: CpuTensor, k: CpuTensor, v: CpuTensor, shape: GqaShape, past: number, scale: number, extras?: AttentionExtras<CpuWeight>): CpuTensor {
    const c = (this.kv[layer] ??= { k: new Float32Array(0), v: new Float32Array(0), length: 0 });
    if (c.length !== past) throw new Error(`CPU cache holds ${c.length} tokens, forward expects ${past}`);
    const w = shape.kvHeads * shape.headDim, T = past + q.rows;
    const kk = new Float32Array(T * w), vv = new Float32Array(T * w);
    kk.set(c.k.subarray(0, past * w)); kk.set(k.data, past * w);
    vv.set(c.v.subarray(0, past * w)); vv.set(v.data, past * w);
    Object.assign(c, { k: kk, v: vv, length: T });
    const out = attentionRef(q.data, kk, vv, { S: q.rows, T, past, heads: shape.heads, kvHeads: shape.kvHeads, dQk: shape.headDim, dV: shape.headDim, scale, causal: true, window: extras?.window || undefined }, extras?.sinks?.data);
    return { data: out, rows: q.rows, cols: shape.heads * shape.headDim };
  }

  /** MLA over the latent cache (the CPU reference computes the expanded, naive form; `mlaMode` picks). */
  mla(layer: number, q: CpuTensor, kvA: CpuTensor, kvB: CpuWeight, dims: MlaShape, past: number, scale: number): CpuTensor {
    const c = (this.cache[layer] ??= { latent: new Float32Array(0), pe: new Float32Array(0), length: 0 });
    if (c.length !== past) throw new Error(`CPU cache holds ${c.length} tokens, forward expects ${past}`);
    const T = past + q.rows, r = dims.kvLora, rope = dims.qkRope;
    const latent = new Float32Array(T * r), pe = new Float32Array(T * rope);
    latent.set(c.latent.subarray(0, past * r));
    pe.set(c.pe.subarray(0, past * rope));
    for (let i = 0; i < q.rows; i++) {
      latent.set(kvA.data.subarray(i * kvA.cols, i * kvA.cols + r), (past + i) * r);
      pe.set(kvA.data.subarray(i * kvA.cols + r, i * kvA.cols + r + rope), (past + i) * rope);
    }
    Object.assign(c, { latent, pe, length: T });
    const out = mlaAttentionRef({ dims, q: q.data, latent, kPe: pe, kvB: kvB.data, past, S: q.rows, scale, mode: this.mlaMode });
    return { data: out, rows: q.rows, cols: dims.heads * dims.vHead };
  }

  mlp(x: CpuTensor, gate: CpuWeight, up: CpuWeight, down: CpuWeight): CpuTensor {
    return { data: sharedExpertRef(x.data, x.rows, x.cols, { gate: gate.data, up: up.data, down: down.data }), rows: x.rows, cols: x.cols };
  }

  moeForward(layer: number, x: CpuTensor, e: CpuMoe, cfg: ModelConfig): CpuTensor {
    const D = x.cols;
    if (e.oss) {
      const route = gptOssRouterRef(x.data, e.gate.data, e.oss.routerBias, x.rows, D, cfg.nRoutedExperts, cfg.numExpertsPerTok);
      this.routing.set(layer, route);
      return { data: gptOssExpertsRef(x.data, x.rows, D, e.I, e.oss.experts, route.ids, route.weights, cfg.expertActivation ?? undefined), rows: x.rows, cols: D };
    }
    const logits = routerLogitsRef(x.data, e.gate.data, x.rows, D, cfg.nRoutedExperts);
    const route = moeGateRef(logits, e.bias, routingOf(cfg), x.rows);
    this.routing.set(layer, { ids: route.ids, weights: route.weights });
    let shared = e.shared ? sharedExpertRef(x.data, x.rows, D, e.shared) : null;
    // Qwen2-MoE: sigmoid(shared_expert_gate · x) scales the shared expert's row.
    if (shared && e.sharedGate) shared = sigmoidGateRowsRef(shared, routerLogitsRef(x.data, e.sharedGate, x.rows, D, 1), D);
    return { data: moeExpertsRef(x.data, x.rows, D, e.I, e.experts, route.ids, route.weights, shared), rows: x.rows, cols: D };
  }

  zeroRows(x: CpuTensor, rows: number): void {
    x.data.fill(0, 0, Math.min(rows, x.rows) * x.cols);
  }

  addInPlace(h: CpuTensor, r: CpuTensor): void {
    for (let i = 0; i < h.data.length; i++) h.data[i] += r.data[i];
  }

  lastRow(x: CpuTensor): CpuTensor {
    return { data: x.data.slice((x.rows - 1) * x.cols), rows: 1, cols: x.cols };
  }
}
