/**
 * A minimal ONNX protobuf encoder: enough to build one-node models in-process for the onnxruntime-web
 * peers (MatMul, MatMulNBits, MultiHeadAttention, MoE) without shipping .onnx files.
 *
 * Field numbers follow onnx/onnx.proto3 (ModelProto, GraphProto, NodeProto, AttributeProto,
 * TensorProto, ValueInfoProto, TypeProto.Tensor, TensorShapeProto).
 */

export const DataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, FLOAT16: 10 } as const;
export type DataTypeName = keyof typeof DataType;

export interface TensorSpec {
  name: string;
  type: DataTypeName;
  /** Numbers for fixed dimensions, strings for symbolic ones. */
  dims: (number | string)[];
}

export interface Initializer {
  name: string;
  type: DataTypeName;
  dims: number[];
  data: ArrayBufferView;
}

export type AttributeValue = number | string | number[] | { float: number } | { floats: number[] };

export interface NodeSpec {
  opType: string;
  domain?: string;
  name?: string;
  inputs: string[];
  outputs: string[];
  /** Integers as numbers (int64), floats as { float } / { floats }, strings as strings. */
  attributes?: Record<string, AttributeValue>;
}

export interface ModelSpec {
  nodes: NodeSpec[];
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  initializers?: Initializer[];
  /** Opsets: default { '': 21 } plus 'com.microsoft': 1 when a node uses it. */
  opsets?: Record<string, number>;
  name?: string;
  irVersion?: number;
}

/** Protobuf wire writer: varints, length-delimited fields, fixed32 floats. */
export class ProtoWriter {
  private chunks: number[] = [];
  private bufs: Uint8Array[] = [];
  private size = 0;

  private flush() {
    if (this.chunks.length) {
      this.bufs.push(Uint8Array.from(this.chunks));
      this.size += this.chunks.length;
      this.chunks = [];
    }
  }

  varint(v: number | bigint): this {
    let x = BigInt.asUintN(64, BigInt(v));
    do {
      let b = Number(x & 0x7fn);
      x >>= 7n;
      if (x) b |= 0x80;
      this.chunks.push(b);
    } while (x);
    return this;
  }

  tag(field: number, wire: 0 | 1 | 2 | 5): this {
    return this.varint((field << 3) | wire);
  }

  int(field: number, v: number | bigint): this {
    return this.tag(field, 0).varint(v);
  }

  float(field: number, v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.tag(field, 5);
    this.chunks.push(...b);
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, 2).varint(data.length);
    this.flush();
    this.bufs.push(data);
    this.size += data.length;
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  message(field: number, build: (w: ProtoWriter) => void): this {
    const w = new ProtoWriter();
    build(w);
    return this.bytes(field, w.finish());
  }

  finish(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.size);
    let o = 0;
    for (const b of this.bufs) { out.set(b, o); o += b.length; }
    return out;
  }
}

function bytesOf(v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

function writeTensor(w: ProtoWriter, t: Initializer) {
  for (const d of t.dims) w.int(1, d); // dims
  w.int(2, DataType[t.type]); // data_type
  w.string(8, t.name); // name
  w.bytes(9, bytesOf(t.data)); // raw_data (little-endian)
}

function writeValueInfo(w: ProtoWriter, t: TensorSpec) {
  w.string(1, t.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, DataType[t.type]); // elem_type
      tensor.message(2, (shape) => {
        for (const d of t.dims) shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
      });
    }),
  );
}

// AttributeProto.AttributeType
const ATTR = { FLOAT: 1, INT: 2, STRING: 3, FLOATS: 6, INTS: 7 } as const;

function writeAttribute(w: ProtoWriter, name: string, v: AttributeValue) {
  w.string(1, name);
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: integer expected (use { float } for floats)`);
    w.int(3, v).int(20, ATTR.INT);
  } else if (typeof v === 'string') w.string(4, v).int(20, ATTR.STRING);
  else if (Array.isArray(v)) { for (const i of v) w.int(8, i); w.int(20, ATTR.INTS); }
  else if ('float' in v) w.float(2, v.float).int(20, ATTR.FLOAT);
  else { for (const f of v.floats) w.float(7, f); w.int(20, ATTR.FLOATS); }
}

function writeNode(w: ProtoWriter, n: NodeSpec, i: number) {
  for (const s of n.inputs) w.string(1, s);
  for (const s of n.outputs) w.string(2, s);
  w.string(3, n.name ?? `${n.opType}_${i}`);
  w.string(4, n.opType);
  for (const [k, v] of Object.entries(n.attributes ?? {})) w.message(5, (a) => writeAttribute(a, k, v));
  if (n.domain) w.string(7, n.domain);
}

/** Serialises a ModelProto with one graph. */
export function buildModel(spec: ModelSpec): Uint8Array {
  const opsets: Record<string, number> = { '': 21, ...(spec.opsets ?? {}) };
  if (spec.nodes.some((n) => n.domain === 'com.microsoft') && !('com.microsoft' in opsets)) opsets['com.microsoft'] = 1;
  const w = new ProtoWriter();
  w.int(1, spec.irVersion ?? 10); // ir_version
  w.string(2, 'webmoe-bench'); // producer_name
  w.message(7, (g) => {
    spec.nodes.forEach((n, i) => g.message(1, (nw) => writeNode(nw, n, i)));
    g.string(2, spec.name ?? 'graph');
    for (const t of spec.initializers ?? []) g.message(5, (tw) => writeTensor(tw, t));
    for (const t of spec.inputs) g.message(11, (vw) => writeValueInfo(vw, t));
    for (const t of spec.outputs) g.message(12, (vw) => writeValueInfo(vw, t));
  });
  for (const [domain, version] of Object.entries(opsets)) w.message(8, (o) => { if (domain) o.string(1, domain); o.int(2, version); });
  return w.finish();
}

// ---- the peer models ------------------------------------------------------------------------------

/** Y[M, N] = X[M, K] · B[K, N] (ONNX MatMul: B is [K, N], i.e. our W[N, K] transposed). */
export function matmulModel(M: number, N: number, K: number, wT: Float32Array): Uint8Array {
  return buildModel({
    nodes: [{ opType: 'MatMul', inputs: ['X', 'B'], outputs: ['Y'] }],
    inputs: [{ name: 'X', type: 'FLOAT', dims: [M, K] }],
    outputs: [{ name: 'Y', type: 'FLOAT', dims: [M, N] }],
    initializers: [{ name: 'B', type: 'FLOAT', dims: [K, N], data: wT }],
  });
}

export interface NBitsWeights {
  /** [N, blocksPerRow, block·bits/8] packed codes, low nibble first for 4-bit. */
  packed: Uint8Array;
  /** [N · blocksPerRow] per-block scales. */
  scales: Float32Array;
  /** Dequantised weights [N, K] (what the peer should multiply by). */
  dequant: Float32Array;
}

/**
 * Symmetric block quantisation of W [N, K] to `bits` (4 or 8) with blocks of `block` along K, in
 * MatMulNBits' layout with the default zero point 2^(bits−1): w ≈ (q − zp) · scale.
 */
export function quantizeNBits(w: Float32Array, N: number, K: number, bits: 4 | 8, block: number): NBitsWeights {
  if (K % block) throw new Error(`K ${K} must be a multiple of the block ${block}`);
  const blocks = K / block;
  const blob = (block * bits) / 8;
  const zp = 1 << (bits - 1);
  const qmax = (1 << bits) - 1;
  const packed = new Uint8Array(N * blocks * blob);
  const scales = new Float32Array(N * blocks);
  const dequant = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      let amax = 0;
      for (let i = 0; i < block; i++) amax = Math.max(amax, Math.abs(w[n * K + b * block + i]));
      const scale = amax > 0 ? amax / (zp - 1) : 1; // q − zp ∈ [−zp, zp − 1]: the largest magnitude maps to ±(zp − 1), never clipped
      scales[n * blocks + b] = Math.fround(scale);
      for (let i = 0; i < block; i++) {
        const k = b * block + i;
        const q = Math.max(0, Math.min(qmax, Math.round(w[n * K + k] / scales[n * blocks + b]) + zp));
        dequant[n * K + k] = (q - zp) * scales[n * blocks + b];
        const o = (n * blocks + b) * blob;
        if (bits === 8) packed[o + i] = q;
        else packed[o + (i >> 1)] |= i & 1 ? q << 4 : q;
      }
    }
  }
  return { packed, scales, dequant };
}

/** com.microsoft MatMulNBits: Y[M, N] = X[M, K] · dequant(W)[N, K]ᵀ. */
export function matmulNBitsModel(M: number, N: number, K: number, bits: 4 | 8, block: number, q: NBitsWeights): Uint8Array {
  const blocks = K / block;
  return buildModel({
    nodes: [{ opType: 'MatMulNBits', domain: 'com.microsoft', inputs: ['X', 'Wq', 'S'], outputs: ['Y'], attributes: { K, N, bits, block_size: block, accuracy_level: 0 } }],
    inputs: [{ name: 'X', type: 'FLOAT', dims: [M, K] }],
    outputs: [{ name: 'Y', type: 'FLOAT', dims: [M, N] }],
    initializers: [
      { name: 'Wq', type: 'UINT8', dims: [N, blocks, (block * bits) / 8], data: q.packed },
      { name: 'S', type: 'FLOAT', dims: [N * blocks], data: q.scales },
    ],
  });
}

/**
 * com.microsoft MultiHeadAttention with separate Q [B, S, H·D], K [B, L, H·D], V [B, L, H·Dv] inputs;
 * output [B, S, H·Dv]. `causal` sets unidirectional (a query at i sees keys up to i + L − S).
 */
export function attentionModel(B: number, S: number, L: number, H: number, D: number, Dv: number, causal: boolean): Uint8Array {
  return buildModel({
    nodes: [{ opType: 'MultiHeadAttention', domain: 'com.microsoft', inputs: ['Q', 'K', 'V'], outputs: ['O'], attributes: { num_heads: H, scale: { float: 1 / Math.sqrt(D) }, unidirectional: causal ? 1 : 0 } }],
    inputs: [
      { name: 'Q', type: 'FLOAT', dims: [B, S, H * D] },
      { name: 'K', type: 'FLOAT', dims: [B, L, H * D] },
      { name: 'V', type: 'FLOAT', dims: [B, L, H * Dv] },
    ],
    outputs: [{ name: 'O', type: 'FLOAT', dims: [B, S, H * Dv] }],
  });
}

/**
 * com.microsoft MoE with SwiGLU experts, y = Σ_top-k p̂_e · down_e(silu(gate_e x) ⊙ up_e x), where
 * router_probs are logits and p̂ is the softmax over the k largest (softmax, top-k, renormalised; to
 * impose routing weights w on chosen experts pass log w there and −1e9 elsewhere). ORT fuses gate and up into fc1 [E, 2·inter, hidden] with rows
 * interleaved (gate_0, up_0, gate_1, ...; swiglu_fusion = 1) and computes g·σ(α·g)·(u + β) with the
 * gate clamped at swiglu_limit: α = 1, β = 0 and a large limit give SiLU(g)·u.
 * input [T, hidden], router_probs [T, E]; gate / up [E, inter, hidden], down [E, hidden, inter]
 * (Hugging Face [out, in] layout per expert).
 */
export function moeModel(T: number, hidden: number, inter: number, E: number, k: number, gate: Float32Array, up: Float32Array, down: Float32Array): Uint8Array {
  const fc1 = new Float32Array(E * 2 * inter * hidden);
  for (let e = 0; e < E; e++) {
    for (let i = 0; i < inter; i++) {
      const src = (e * inter + i) * hidden;
      fc1.set(gate.subarray(src, src + hidden), (e * 2 * inter + 2 * i) * hidden);
      fc1.set(up.subarray(src, src + hidden), (e * 2 * inter + 2 * i + 1) * hidden);
    }
  }
  return buildModel({
    nodes: [{
      opType: 'MoE', domain: 'com.microsoft', inputs: ['X', 'R', 'W1', '', 'W2'], outputs: ['Y'],
      attributes: {
        k, activation_type: 'swiglu', normalize_routing_weights: 1, swiglu_fusion: 1,
        activation_alpha: { float: 1 }, activation_beta: { float: 0 }, swiglu_limit: { float: 1e9 },
      },
    }],
    inputs: [
      { name: 'X', type: 'FLOAT', dims: [T, hidden] },
      { name: 'R', type: 'FLOAT', dims: [T, E] },
    ],
    outputs: [{ name: 'Y', type: 'FLOAT', dims: [T, hidden] }],
    initializers: [
      { name: 'W1', type: 'FLOAT', dims: [E, 2 * inter, hidden], data: fc1 },
      { name: 'W2', type: 'FLOAT', dims: [E, hidden, inter], data: down },
    ],
  });
}

/**
 * com.microsoft GroupQueryAttention for one sequence with a KV cache: query [1, S, H·D], the S new
 * key / value rows [1, S, kvH·D], the cache before them past_key / past_value [1, kvH, past, D] (BNSH),
 * seqlens_k [1] = past + S − 1, total_sequence_length (scalar) = past + S; output [1, S, H·D] (and the
 * present caches). Always causal: query i sees keys up to past + i. Query head h reads KV head
 * h / (H / kvH).
 */
export function gqaModel(S: number, past: number, H: number, kvH: number, D: number): Uint8Array {
  return buildModel({
    nodes: [{
      opType: 'GroupQueryAttention', domain: 'com.microsoft',
      inputs: ['Q', 'K', 'V', 'PK', 'PV', 'SEQLENS', 'TOTAL'], outputs: ['O', 'PRESENT_K', 'PRESENT_V'],
      attributes: { num_heads: H, kv_num_heads: kvH, scale: { float: 1 / Math.sqrt(D) } },
    }],
    inputs: [
      { name: 'Q', type: 'FLOAT', dims: [1, S, H * D] },
      { name: 'K', type: 'FLOAT', dims: [1, S, kvH * D] },
      { name: 'V', type: 'FLOAT', dims: [1, S, kvH * D] },
      { name: 'PK', type: 'FLOAT', dims: [1, kvH, past, D] },
      { name: 'PV', type: 'FLOAT', dims: [1, kvH, past, D] },
      { name: 'SEQLENS', type: 'INT32', dims: [1] },
      { name: 'TOTAL', type: 'INT32', dims: [] },
    ],
    outputs: [
      { name: 'O', type: 'FLOAT', dims: [1, S, H * D] },
      // Symbolic length: shape inference cannot see total_sequence_length (an input).
      { name: 'PRESENT_K', type: 'FLOAT', dims: [1, kvH, 'present', D] },
      { name: 'PRESENT_V', type: 'FLOAT', dims: [1, kvH, 'present', D] },
    ],
  });
}

/**
 * The MoE layer as the plain op graph an exporter emits when the runtime has no MoE op (ORT's WebGPU
 * EP has none): every expert on every token, weighted by dense routing weights and summed,
 *   y = Σ_e w[e, t] · down_e(silu(gate_e x_t) ⊙ up_e x_t)
 * with batched MatMuls over the expert axis. Inputs X [T, hidden] and W [E, T, 1] (the routing
 * weights, zero for experts a token did not choose); gate / up [E, inter, hidden], down [E, hidden,
 * inter] in Hugging Face's [out, in] layout, stored transposed for MatMul. E/k times the routed work.
 */
export function moeDenseGraphModel(T: number, hidden: number, inter: number, E: number, gate: Float32Array, up: Float32Array, down: Float32Array): Uint8Array {
  const transposeEach = (w: Float32Array, rows: number, cols: number) => {
    const t = new Float32Array(w.length);
    for (let e = 0; e < E; e++) for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[e * rows * cols + c * rows + r] = w[e * rows * cols + r * cols + c];
    return t;
  };
  return buildModel({
    nodes: [
      { opType: 'Unsqueeze', inputs: ['X', 'AXIS0'], outputs: ['X3'] },
      { opType: 'MatMul', inputs: ['X3', 'WG'], outputs: ['G'] },
      { opType: 'MatMul', inputs: ['X3', 'WU'], outputs: ['U'] },
      { opType: 'Sigmoid', inputs: ['G'], outputs: ['SG'] },
      { opType: 'Mul', inputs: ['G', 'SG'], outputs: ['SILU'] },
      { opType: 'Mul', inputs: ['SILU', 'U'], outputs: ['A'] },
      { opType: 'MatMul', inputs: ['A', 'WD'], outputs: ['YE'] },
      { opType: 'Mul', inputs: ['YE', 'W'], outputs: ['YW'] },
      { opType: 'ReduceSum', inputs: ['YW', 'AXIS0'], outputs: ['Y'], attributes: { keepdims: 0 } },
    ],
    inputs: [
      { name: 'X', type: 'FLOAT', dims: [T, hidden] },
      { name: 'W', type: 'FLOAT', dims: [E, T, 1] },
    ],
    outputs: [{ name: 'Y', type: 'FLOAT', dims: [T, hidden] }],
    initializers: [
      { name: 'AXIS0', type: 'INT64', dims: [1], data: BigInt64Array.of(0n) },
      { name: 'WG', type: 'FLOAT', dims: [E, hidden, inter], data: transposeEach(gate, inter, hidden) },
      { name: 'WU', type: 'FLOAT', dims: [E, hidden, inter], data: transposeEach(up, inter, hidden) },
      { name: 'WD', type: 'FLOAT', dims: [E, inter, hidden], data: transposeEach(down, hidden, inter) },
    ],
  });
}
