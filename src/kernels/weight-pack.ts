/**
 * Packed weight layouts and their CPU packers (quantisers): production code that the loaders and
 * uploaders run. The one description of the formats that shaders/linear.wgsl decodes; no GPU imports
 * (the CPU reference model uses it too). The dequantiser reference is weight.ref.ts.
 *
 * W is [N, K] (rows = output features, HF `[out, in]`). Every packed format stores each row as
 * Kp = roundUp(K, UNIT) elements in Kp·BITS/32 little-endian u32 words, zero-padded past K, so a row is
 * a whole number of vec4<u32> "units" of UNIT consecutive elements along K:
 *
 *   format  BITS UNIT  word j of a row holds                               scales
 *   f32     32    4    element j (raw bits; rows are NOT padded, K%4≠0 stays [N,K])     —
 *   f16     16    8    elements 2j (low half), 2j+1 (high half), IEEE binary16         —
 *   bf16    16    8    elements 2j (low half), 2j+1 (high half), bfloat16 (round to even) —
 *   q8       8   16    elements 4j+b in byte b, int8 two's complement q ∈ [−127, 127]   [N, ceil(K/gs)]
 *   q4       4   32    elements 8j+b in nibble b (bits 4b..4b+3), stored q+8, q ∈ [−7, 7] [N, ceil(K/gs)]
 *   fp8      8   16    elements 4j+b in byte b, OCP E4M3fn                              [ceil(N/128), ceil(K/128)] f32
 *   mxfp4    4   32    elements 8j+b in nibble b, OCP FP4 E2M1 (sign, 2 exp, 1 mant)    [N, ceil(K/32)] E8M0 bytes, 4 per word
 *
 * q8/q4 are symmetric group quantisation along K (groups of gs = 32 or 128): scale = max|w|/Q
 * (Q = 127 or 7, rounded to the scale dtype first), q = clamp(round(w/scale), −Q, Q), w ≈ q·scale.
 * Scales are f32, or f16 packed two per u32 (flat index i in the low half when i is even). Padding
 * nibbles of q4 are 8 (value 0). fp8 is DeepSeek-V3's native format: w = e4m3(b)·scale_inv[n/128][k/128].
 *
 * mxfp4 is OCP microscaling (GPT-OSS experts): blocks of 32 consecutive elements along K share one
 * E8M0 scale byte s (w = FP4[nibble]·2^(s − 127)); one block is exactly one 16-byte vec4<u32> unit, so
 * a row is the HF `*_blocks` bytes of that row as they are ([G, 16] per row, element 2i in the low nibble
 * of byte i: transformers' convert_moe_packed_tensors) and the scales are the `*_scales` bytes of the
 * row ([G] per row), byte i of the flat [N, G] array in byte i % 4 of word i / 4. Padding past K: nibble
 * 0 (+0.0).
 */
import { f32ToF16, f16ToF32, f32ToBf16, f32ToFp8e4m3 } from '../util/half';

export type PackedFormat = 'f32' | 'f16' | 'bf16' | 'q8' | 'q4' | 'fp8' | 'mxfp4';

export const FORMAT_BITS: Record<PackedFormat, number> = { f32: 32, f16: 16, bf16: 16, q8: 8, q4: 4, fp8: 8, mxfp4: 4 };
/** Elements per vec4<u32> unit. */
export const unitOf = (f: PackedFormat) => 128 / FORMAT_BITS[f];
/** Largest |q| of the integer formats. */
export const QMAX = { q8: 127, q4: 7 } as const;
/** FP8 block-scale tile (DeepSeek-V3 weight_block_size). */
export const FP8_BLOCK = 128;
/** Elements per MXFP4 block (one E8M0 scale; 16 bytes of nibbles). */
export const MX_BLOCK = 32;
/** OCP FP4 E2M1 values by nibble (sign bit 3), transformers' FP4_VALUES. */
export const FP4_VALUES: readonly number[] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6];
/** E8M0 scale byte → 2^(s − 127) (255 is NaN in the OCP spec; packMxfp4 rejects it). */
export const e8m0Value = (s: number) => 2 ** (s - 127);

export interface PackedWeight {
  format: PackedFormat;
  N: number;
  K: number;
  /** Padded row length in elements (K for f32). */
  Kp: number;
  /** u32 words per row (Kp·BITS/32). */
  rowWords: number;
  /** [N, rowWords] words. */
  data: Uint32Array;
  /** q8/q4: [N, groups] f32 or f16 pairs; fp8: [ceil(N/128), ceil(K/128)] f32 (raw bits); mxfp4: [N, G] E8M0 bytes, 4 per word. */
  scales?: Uint32Array;
  groupSize: number;
  scaleF16: boolean;
  /** Scale entries per scale row (groups per row, or K blocks for fp8). */
  scaleCols: number;
}

export const roundUp = (v: number, m: number) => Math.ceil(v / m) * m;

export function rowLayout(format: PackedFormat, K: number): { Kp: number; rowWords: number } {
  const Kp = format === 'f32' ? K : roundUp(K, unitOf(format));
  return { Kp, rowWords: (Kp * FORMAT_BITS[format]) / 32 };
}

const f32View = new Float32Array(1);
const u32View = new Uint32Array(f32View.buffer);
const f32Bits = (v: number) => { f32View[0] = v; return u32View[0]; };
const bitsF32 = (b: number) => { u32View[0] = b; return f32View[0]; };
const roundF16 = (v: number) => f16ToF32(f32ToF16(v));

/** Reads scale i of a packed scale array. */
export function scaleAt(p: PackedWeight, i: number): number {
  const s = p.scales!;
  if (!p.scaleF16) return bitsF32(s[i]);
  const w = s[i >> 1];
  return f16ToF32(i & 1 ? w >>> 16 : w & 0xffff);
}

export interface QuantOptions { groupSize?: 32 | 128; scaleDtype?: 'f16' | 'f32' }

/** Packs an f32 [N, K] matrix into `format` (quantising on the CPU for q8/q4). */
export function packWeight(w: Float32Array, N: number, K: number, format: 'f32' | 'f16' | 'bf16' | 'q8' | 'q4', opts: QuantOptions = {}): PackedWeight {
  if (w.length < N * K) throw new RangeError(`packWeight: ${w.length} values for [${N}, ${K}]`);
  const { Kp, rowWords } = rowLayout(format, K);
  const data = new Uint32Array(N * rowWords);
  const base: Omit<PackedWeight, 'data'> = { format, N, K, Kp, rowWords, groupSize: 0, scaleF16: false, scaleCols: 0 };
  if (format === 'f32') {
    data.set(new Uint32Array(w.buffer, w.byteOffset, N * K));
    return { ...base, data };
  }
  if (format === 'f16') {
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const h = f32ToF16(w[n * K + k]);
        if ((h & 0x7c00) === 0x7c00 && Number.isFinite(w[n * K + k])) throw new RangeError(`packWeight: |w[${n}, ${k}]| = ${Math.abs(w[n * K + k])} overflows f16 (max 65504); store this matrix as f32, q8 or q4`);
        data[n * rowWords + (k >> 1)] |= (k & 1 ? h << 16 : h) >>> 0;
      }
    }
    return { ...base, data };
  }
  if (format === 'bf16') {
    // Exact for values that came from a BF16 checkpoint (widened to f32 and back); others round to even.
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const h = f32ToBf16(w[n * K + k]);
        data[n * rowWords + (k >> 1)] |= (k & 1 ? h << 16 : h) >>> 0;
      }
    }
    return { ...base, data };
  }
  const gs = opts.groupSize ?? 32;
  if (gs !== 32 && gs !== 128) throw new RangeError(`packWeight: group size must be 32 or 128, got ${gs}`);
  const scaleF16 = (opts.scaleDtype ?? 'f16') === 'f16';
  const G = Math.ceil(K / gs);
  const Q = QMAX[format];
  const scales = new Uint32Array(scaleF16 ? Math.ceil((N * G) / 2) : N * G);
  if (format === 'q4') data.fill(0x88888888); // padding nibbles decode to 0
  // Typed-array loops without per-element calls or allocation (about 3× the per-element version): one
  // pass per row finds the group scales, then full groups go through a loop specialised per format that
  // builds each word in a local (groups start on a word boundary: gs is a multiple of 8 elements).
  // Rounding is Math.round's (halves toward +∞), computed as floor(x + offset) in the full groups.
  const invOf = new Float64Array(G);
  for (let n = 0; n < N; n++) {
    const row = n * K, wi = n * rowWords;
    for (let g = 0; g < G; g++) {
      const a0 = row + g * gs, a1 = row + Math.min(K, g * gs + gs);
      let amax = 0;
      // Math.abs / Math.max compile to branch-free instructions: random signs would mispredict a branch.
      for (let k = a0; k < a1; k++) amax = Math.max(amax, Math.abs(w[k]));
      const s = scaleF16 ? roundF16(amax / Q) : Math.fround(amax / Q);
      invOf[g] = s > 0 ? 1 / s : 0;
      const idx = n * G + g;
      if (scaleF16) scales[idx >> 1] |= (idx & 1 ? f32ToF16(s) << 16 : f32ToF16(s)) >>> 0;
      else scales[idx] = f32Bits(s);
    }
    const full = Math.floor(K / gs) * gs;
    if (format === 'q4') packQ4Row(w, row, full, gs, invOf, data, wi);
    else packQ8Row(w, row, full, gs, invOf, data, wi);
    // The last, partial group (K % gs ≠ 0), and the row padding: q8 0, q4 nibble 8 (both value 0).
    if (full < K) {
      const inv = invOf[G - 1];
      for (let k = full; k < K; k++) {
        let q = Math.round(w[row + k] * inv);
        q = q > Q ? Q : q < -Q ? -Q : q;
        if (format === 'q8') data[wi + (k >> 2)] = (data[wi + (k >> 2)] | ((q & 0xff) << ((k & 3) * 8))) >>> 0;
        else { const j = wi + (k >> 3), sh = (k & 7) * 4; data[j] = ((data[j] & ~(0xf << sh)) | ((q + 8) << sh)) >>> 0; }
      }
    }
  }
  return { ...base, data, scales, groupSize: gs, scaleF16, scaleCols: G };
}

/** q4 words of the full groups of one row: 8 nibbles (q + 8) per word. */
function packQ4Row(w: Float32Array, row: number, full: number, gs: number, invOf: Float64Array, data: Uint32Array, wi: number): void {
  for (let k = 0, j = wi; k < full; k += 8, j++) {
    const inv = invOf[(k / gs) | 0], a = row + k;
    let word = 0;
    for (let b = 0; b < 8; b++) {
      // q + 8 = floor(x + 8.5) clamped to [1, 15]: Math.round(x) + 8 without Math.round's slow path
      // (it differs only when x + 8.5 rounds in double precision, within 4e-15 of a tie).
      const t = Math.max(1, Math.min(15, w[a + b] * inv + 8.5));
      word |= (t | 0) << (b * 4);
    }
    data[j] = word >>> 0;
  }
}

/** q8 words of the full groups of one row: 4 int8 per word. */
function packQ8Row(w: Float32Array, row: number, full: number, gs: number, invOf: Float64Array, data: Uint32Array, wi: number): void {
  for (let k = 0, j = wi; k < full; k += 4, j++) {
    const inv = invOf[(k / gs) | 0], a = row + k;
    let word = 0;
    for (let b = 0; b < 4; b++) {
      // q + 128 = floor(x + 128.5) clamped to [1, 255] (as q4); its int8 byte is (q + 128) ^ 0x80.
      const t = Math.max(1, Math.min(255, w[a + b] * inv + 128.5));
      word |= ((t | 0) ^ 0x80) << (b * 8);
    }
    data[j] = word >>> 0;
  }
}

/** Packs DeepSeek-V3 FP8: [N, K] e4m3 bytes + [ceil(N/128), ceil(K/128)] f32 scale_inv. */
export function packFp8(e4m3: Uint8Array, scaleInv: Float32Array, N: number, K: number): PackedWeight {
  const SR = Math.ceil(N / FP8_BLOCK), SC = Math.ceil(K / FP8_BLOCK);
  if (e4m3.length < N * K) throw new RangeError(`packFp8: ${e4m3.length} bytes for [${N}, ${K}]`);
  if (scaleInv.length < SR * SC) throw new RangeError(`packFp8: ${scaleInv.length} scales for [${SR}, ${SC}]`);
  const { Kp, rowWords } = rowLayout('fp8', K);
  const bytes = new Uint8Array(N * rowWords * 4);
  for (let n = 0; n < N; n++) bytes.set(e4m3.subarray(n * K, n * K + K), n * rowWords * 4);
  const scales = new Uint32Array(SR * SC);
  scales.set(new Uint32Array(scaleInv.buffer, scaleInv.byteOffset, SR * SC));
  return { format: 'fp8', N, K, Kp, rowWords, data: new Uint32Array(bytes.buffer), scales, groupSize: FP8_BLOCK, scaleF16: false, scaleCols: SC };
}

/**
 * Packs one MXFP4 matrix from the HF checkpoint layout: `blocks` [N, G, 16] bytes (the `*_blocks` tensor
 * of one expert, G = ceil(K/32)) and `scales` [N, G] E8M0 bytes (`*_scales`). The block bytes are the
 * packed rows as they are; the scales are copied into words. Throws on a scale byte of 255 (NaN).
 */
export function packMxfp4(blocks: Uint8Array, scales: Uint8Array, N: number, K: number): PackedWeight {
  const G = Math.ceil(K / MX_BLOCK);
  if (blocks.length !== N * G * 16) throw new RangeError(`packMxfp4: ${blocks.length} block bytes for [${N}, ${G}, 16] (K = ${K})`);
  if (scales.length !== N * G) throw new RangeError(`packMxfp4: ${scales.length} scale bytes for [${N}, ${G}] (K = ${K})`);
  const nan = scales.indexOf(255);
  if (nan >= 0) throw new RangeError(`packMxfp4: scale byte 255 (NaN in E8M0) at row ${Math.floor(nan / G)}, block ${nan % G}`);
  const { Kp, rowWords } = rowLayout('mxfp4', K);
  const bytes = new Uint8Array(N * rowWords * 4);
  bytes.set(blocks);
  // Nibbles past K in the last block must be +0 (the kernels read whole blocks).
  if (K % MX_BLOCK) {
    for (let n = 0; n < N; n++) for (let k = K; k < Kp; k++) bytes[n * rowWords * 4 + (k >> 1)] &= k & 1 ? 0x0f : 0xf0;
  }
  const sc = new Uint8Array(Math.ceil((N * G) / 4) * 4);
  sc.set(scales);
  return { format: 'mxfp4', N, K, Kp, rowWords, data: new Uint32Array(bytes.buffer), scales: new Uint32Array(sc.buffer), groupSize: MX_BLOCK, scaleF16: false, scaleCols: G };
}

/** Nearest FP4 E2M1 nibble to x (|x| ≤ 6 after scaling; ties to the even mantissa, as OCP rounding). */
function fp4Nibble(x: number): number {
  const a = Math.min(Math.abs(x), 6);
  let best = 0;
  for (let c = 1; c < 8; c++) {
    const d = Math.abs(FP4_VALUES[c] - a), db = Math.abs(FP4_VALUES[best] - a);
    if (d < db || (d === db && (c & 1) === 0)) best = c;
  }
  return (x < 0 || Object.is(x, -0)) && best ? best | 8 : best;
}

/**
 * MXFP4 quantisation of an f32 [N, K] matrix into the HF layout (OCP MX rule: the block's shared
 * exponent is floor(log2 amax) − 2, the largest E2M1 exponent; elements rounded to the nearest E2M1
 * value and saturated at ±6). For tests, benchmarks and converting f32/bf16 experts; real GPT-OSS
 * checkpoints ship these bytes.
 */
export function quantizeMxfp4(w: Float32Array, N: number, K: number): { blocks: Uint8Array; scales: Uint8Array } {
  const G = Math.ceil(K / MX_BLOCK);
  const blocks = new Uint8Array(N * G * 16), scales = new Uint8Array(N * G);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      const k0 = g * MX_BLOCK, k1 = Math.min(K, k0 + MX_BLOCK);
      let amax = 0;
      for (let k = k0; k < k1; k++) amax = Math.max(amax, Math.abs(w[n * K + k]));
      const e = amax > 0 ? Math.max(-127, Math.min(127, Math.floor(Math.log2(amax)) - 2)) : -127;
      scales[n * G + g] = e + 127;
      const inv = 2 ** -e;
      for (let k = k0; k < k1; k++) {
        const nib = fp4Nibble(w[n * K + k] * inv);
        blocks[(n * G + g) * 16 + ((k - k0) >> 1)] |= (k & 1 ? nib << 4 : nib);
      }
    }
  }
  return { blocks, scales };
}

/** Rows [r0, r1) of a packed weight as a packed weight of their own (chunks past the binding limit). */
export function sliceRows(p: PackedWeight, r0: number, r1: number): PackedWeight {
  const data = p.data.slice(r0 * p.rowWords, r1 * p.rowWords);
  let scales: Uint32Array | undefined;
  if (p.scales) {
    if (p.format === 'mxfp4') {
      const all = new Uint8Array(p.scales.buffer, p.scales.byteOffset, p.scales.byteLength);
      const sc = new Uint8Array(Math.ceil(((r1 - r0) * p.scaleCols) / 4) * 4);
      sc.set(all.subarray(r0 * p.scaleCols, r1 * p.scaleCols));
      scales = new Uint32Array(sc.buffer);
    } else if (p.format === 'fp8') {
      if (r0 % FP8_BLOCK) throw new RangeError('sliceRows: fp8 chunks must start on a 128-row block');
      scales = p.scales.slice((r0 / FP8_BLOCK) * p.scaleCols, Math.ceil(r1 / FP8_BLOCK) * p.scaleCols);
    } else if (p.scaleF16) {
      const G = p.scaleCols;
      scales = new Uint32Array(Math.ceil(((r1 - r0) * G) / 2));
      for (let i = 0; i < (r1 - r0) * G; i++) {
        const j = r0 * G + i;
        const h = p.scales[j >> 1] >>> (j & 1 ? 16 : 0) & 0xffff;
        scales[i >> 1] |= (i & 1 ? h << 16 : h) >>> 0;
      }
    } else {
      scales = p.scales.slice(r0 * p.scaleCols, r1 * p.scaleCols);
    }
  }
  return { ...p, N: r1 - r0, data, scales };
}

/**
 * DeepSeek-V3-style FP8 quantisation of an f32 [N, K] matrix: per 128×128 block scale_inv = amax/448,
 * bytes = e4m3(w / scale_inv) (round to nearest even, saturating). For tests and for converting f32/bf16
 * checkpoints to the native FP8 path.
 */
export function quantizeFp8Blocks(w: Float32Array, N: number, K: number): { bytes: Uint8Array; scaleInv: Float32Array } {
  const SR = Math.ceil(N / FP8_BLOCK), SC = Math.ceil(K / FP8_BLOCK);
  const scaleInv = new Float32Array(SR * SC);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
    const b = Math.floor(n / FP8_BLOCK) * SC + Math.floor(k / FP8_BLOCK);
    scaleInv[b] = Math.max(scaleInv[b], Math.abs(w[n * K + k]));
  }
  for (let b = 0; b < scaleInv.length; b++) scaleInv[b] = scaleInv[b] > 0 ? scaleInv[b] / 448 : 1;
  const bytes = new Uint8Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
    bytes[n * K + k] = f32ToFp8e4m3(w[n * K + k] / scaleInv[Math.floor(n / FP8_BLOCK) * SC + Math.floor(k / FP8_BLOCK)]);
  }
  return { bytes, scaleInv };
}

/**
 * One GPT-OSS MoE layer's expert tensors as the HF checkpoint holds them (MXFP4):
 *   gateUpBlocks [E, 2I, ceil(D/32), 16] u8, gateUpScales [E, 2I, ceil(D/32)] u8, gateUpBias [E, 2I] f32,
 *   downBlocks [E, D, ceil(I/32), 16] u8,    downScales [E, D, ceil(I/32)] u8,    downBias [E, D] f32.
 * gate_up rows (and bias entries) interleave gate (even) and up (odd): HF's gate_up[..., ::2] / [..., 1::2].
 */
export interface GptOssExpertTensors {
  gateUpBlocks: Uint8Array; gateUpScales: Uint8Array; gateUpBias: Float32Array;
  downBlocks: Uint8Array; downScales: Uint8Array; downBias: Float32Array;
}

/**
 * The stacked expert layout the MoE kernels read (moe_experts.wgsl: per expert the gate rows, then the
 * up rows) from the HF interleaved gate_up rows: rows 2i → i, 2i + 1 → I + i of each expert, for the
 * block bytes, the scale bytes and the bias. An MXFP4 row is self-contained (its blocks and scales), so
 * this is a pure row permutation: no value changes. down needs none.
 */
export function deinterleaveGateUp(t: Pick<GptOssExpertTensors, 'gateUpBlocks' | 'gateUpScales' | 'gateUpBias'>, E: number, I: number, D: number): { blocks: Uint8Array; scales: Uint8Array; bias: Float32Array } {
  const G = Math.ceil(D / MX_BLOCK);
  const rows = E * 2 * I;
  if (t.gateUpBlocks.length !== rows * G * 16 || t.gateUpScales.length !== rows * G || t.gateUpBias.length !== rows) {
    throw new RangeError(`deinterleaveGateUp: want blocks [${E}, ${2 * I}, ${G}, 16], scales [${E}, ${2 * I}, ${G}], bias [${E}, ${2 * I}]; got ${t.gateUpBlocks.length}, ${t.gateUpScales.length}, ${t.gateUpBias.length} elements`);
  }
  const blocks = new Uint8Array(rows * G * 16), scales = new Uint8Array(rows * G), bias = new Float32Array(rows);
  for (let e = 0; e < E; e++) for (let r = 0; r < 2 * I; r++) {
    const src = e * 2 * I + r, dst = e * 2 * I + (r & 1 ? I : 0) + (r >> 1);
    blocks.set(t.gateUpBlocks.subarray(src * G * 16, (src + 1) * G * 16), dst * G * 16);
    scales.set(t.gateUpScales.subarray(src * G, (src + 1) * G), dst * G);
    bias[dst] = t.gateUpBias[src];
  }
  return { blocks, scales, bias };
}
