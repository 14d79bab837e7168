/**
 * Linear-layer weights on the GPU. A GpuWeight is a logical [N, K] matrix (rows = output features) in
 * one of the packed formats of weight-pack.ts, plus what the kernels need to decode it.
 *
 * buffers, by format (layouts: src/kernels/weight-pack.ts, decoded by shaders/linear.wgsl):
 *   'f32'  [w]          w: [N, K] f32 (unpadded, the layout of src/kernels/matmul.ts)
 *   'f16'  [w]          w: [N, rowWords] u32, two binary16 per word
 *   'bf16' [w]          w: [N, rowWords] u32, two bfloat16 per word (decoded by a shift: exact for BF16 checkpoints)
 *   'q8'   [w, scales]  w: [N, rowWords] u32 (4 × int8),  scales: [N, ceil(K/gs)] f16 pairs or f32
 *   'q4'   [w, scales]  w: [N, rowWords] u32 (8 × int4),  scales: as q8
 *   'fp8'  [w, scales]  w: [N, rowWords] u32 (4 × e4m3),  scales: [ceil(N/128), ceil(K/128)] f32
 *   'mxfp4' [w, scales] w: [N, rowWords] u32 (8 × FP4 E2M1, one 32-value MX block per vec4), scales: [N, ceil(K/32)] E8M0 bytes
 *   '2:4' / 'vnm'       owned by src/kernels/sparse.ts
 *   'gguf' [blocks]     a GGUF tensor's quantised blocks, owned by src/kernels/gguf-linear.ts
 * params: { Kp, rowWords, groupSize, scaleF16 (0|1), scaleCols }.
 *
 * f16 storage works on every device: the kernels decode it with unpack2x16float (no shader-f16
 * needed) and accumulate in f32, so 'f16' never falls back to f32 and always halves the bytes.
 * A tensor larger than maxStorageBufferBindingSize is split into row chunks (multiples of 128 rows,
 * each with its own buffers); then `buffers` is empty and `chunks` lists them in row order.
 */
import type { Gpu } from '../gpu/device';
import { ArgumentError, LimitExceededError, ShapeError } from '../errors';
import { FP8_BLOCK, MX_BLOCK, packFp8, packMxfp4, packWeight, sliceRows, type PackedWeight } from './weight-pack';

/** 'gguf': a GGUF tensor's blocks as in the file, decoded by gguf-linear.ts (the backend routes it there). */
export type WeightFormat = 'f32' | 'f16' | 'bf16' | 'q8' | 'q4' | 'fp8' | 'mxfp4' | '2:4' | 'vnm' | 'gguf';

export interface GpuWeight {
  label: string;
  format: WeightFormat;
  /** Logical [out, in]. */
  N: number;
  K: number;
  buffers: GPUBuffer[];
  params: Record<string, number>;
  /** GPU bytes held (all chunks). */
  bytes: number;
  /** Row chunks when one tensor exceeds maxStorageBufferBindingSize (then `buffers` is empty). */
  chunks?: GpuWeight[];
  /** First row of this chunk in the whole tensor (chunks only). */
  rowStart?: number;
}

export interface UploadOptions {
  format?: 'f32' | 'f16' | 'bf16' | 'q8' | 'q4';
  groupSize?: 32 | 128;
  scaleDtype?: 'f16' | 'f32';
  /** Cap on one buffer's bytes (default: the device's maxStorageBufferBindingSize); tests use it to force chunks. */
  maxBindingBytes?: number;
}

function checkShape(what: string, N: number, K: number) {
  if (!Number.isInteger(N) || !Number.isInteger(K) || N <= 0 || K <= 0) throw new ShapeError(`${what}: weight shape must be positive integers, got [${N}, ${K}]`);
}

/** Uploads an already packed weight, chunked by rows to fit the binding limit. */
export function uploadPacked(gpu: Gpu, label: string, p: PackedWeight, maxBindingBytes?: number): GpuWeight {
  const limit = Math.min(maxBindingBytes ?? Infinity, gpu.caps.maxStorageBufferBindingSize, gpu.caps.maxBufferSize);
  const rowBytes = p.rowWords * 4;
  if (p.data.byteLength <= limit && (p.scales?.byteLength ?? 0) <= limit) return uploadOne(gpu, label, p, 0);
  // Chunk rows: a multiple of 128 (fp8 scale blocks) that fits the limit.
  const rows = Math.floor(limit / rowBytes / FP8_BLOCK) * FP8_BLOCK;
  if (rows <= 0) throw new LimitExceededError('maxStorageBufferBindingSize', rowBytes * FP8_BLOCK, limit, `weight '${label}' (128 rows of ${p.K} values)`);
  const chunks: GpuWeight[] = [];
  for (let r0 = 0; r0 < p.N; r0 += rows) {
    const r1 = Math.min(p.N, r0 + rows);
    chunks.push(uploadOne(gpu, `${label}[${r0}:${r1}]`, sliceRows(p, r0, r1), r0));
  }
  return {
    label, format: p.format, N: p.N, K: p.K, buffers: [], params: chunks[0].params,
    bytes: chunks.reduce((s, c) => s + c.bytes, 0), chunks,
  };
}

function uploadOne(gpu: Gpu, label: string, p: PackedWeight, rowStart: number): GpuWeight {
  // Padded to 16 bytes: the kernels read whole vec4<u32> (f32 rows with N·K % 4 ≠ 0 end mid-vector).
  const data = p.data.length % 4 ? new Uint32Array(Math.ceil(p.data.length / 4) * 4) : p.data;
  if (data !== p.data) data.set(p.data);
  const buffers = [gpu.buffers.upload(`${label}.w`, data)];
  if (p.scales) buffers.push(gpu.buffers.upload(`${label}.scales`, p.scales));
  return {
    label, format: p.format, N: p.N, K: p.K, buffers, rowStart,
    params: { Kp: p.Kp, rowWords: p.rowWords, groupSize: p.groupSize, scaleF16: p.scaleF16 ? 1 : 0, scaleCols: p.scaleCols },
    bytes: buffers.reduce((s, b) => s + b.size, 0),
  };
}

/**
 * Uploads an f32 [N, K] matrix as `opts.format` (default f32), quantising on the CPU for q8/q4
 * (groups of 32 by default, f16 scales by default).
 */
export function uploadWeight(gpu: Gpu, label: string, data: Float32Array, N: number, K: number, opts: UploadOptions = {}): GpuWeight {
  checkShape(`uploadWeight '${label}'`, N, K);
  if (data.length !== N * K) throw new ShapeError(`uploadWeight '${label}': ${data.length} values for [${N}, ${K}]`);
  const format = opts.format ?? 'f32';
  if (!['f32', 'f16', 'bf16', 'q8', 'q4'].includes(format)) throw new ArgumentError(`uploadWeight '${label}': unknown format '${format}'`);
  return uploadPacked(gpu, label, packWeight(data, N, K, format, opts), opts.maxBindingBytes);
}

/** DeepSeek-V3 native FP8: [N, K] e4m3 bytes + [ceil(N/128), ceil(K/128)] f32 block scales, decoded in the shader. */
export function uploadFp8Weight(gpu: Gpu, label: string, e4m3: Uint8Array, scaleInv: Float32Array, N: number, K: number, opts: { maxBindingBytes?: number } = {}): GpuWeight {
  checkShape(`uploadFp8Weight '${label}'`, N, K);
  if (e4m3.length !== N * K) throw new ShapeError(`uploadFp8Weight '${label}': ${e4m3.length} bytes for [${N}, ${K}]`);
  const want = Math.ceil(N / FP8_BLOCK) * Math.ceil(K / FP8_BLOCK);
  if (scaleInv.length !== want) throw new ShapeError(`uploadFp8Weight '${label}': ${scaleInv.length} scales, want [${Math.ceil(N / FP8_BLOCK)}, ${Math.ceil(K / FP8_BLOCK)}]`);
  return uploadPacked(gpu, label, packFp8(e4m3, scaleInv, N, K), opts.maxBindingBytes);
}

/**
 * MXFP4 (GPT-OSS experts, OCP microscaling) from the HF layout of one matrix: `blocks` [N, ceil(K/32), 16]
 * bytes and `scales` [N, ceil(K/32)] E8M0 bytes (one expert's slice of `*_blocks` / `*_scales`), decoded in
 * the shader. The block bytes are uploaded as they are (see weight-pack.ts packMxfp4).
 */
export function uploadMxfp4Weight(gpu: Gpu, label: string, blocks: Uint8Array, scales: Uint8Array, N: number, K: number, opts: { maxBindingBytes?: number } = {}): GpuWeight {
  checkShape(`uploadMxfp4Weight '${label}'`, N, K);
  const G = Math.ceil(K / MX_BLOCK);
  if (blocks.length !== N * G * 16 || scales.length !== N * G) {
    throw new ShapeError(`uploadMxfp4Weight '${label}': ${blocks.length} block bytes and ${scales.length} scale bytes for [${N}, ${K}]; want [${N}, ${G}, 16] and [${N}, ${G}]`);
  }
  let p: PackedWeight;
  try { p = packMxfp4(blocks, scales, N, K); } catch (e) { throw new ArgumentError(`uploadMxfp4Weight '${label}': ${(e as Error).message}`); }
  return uploadPacked(gpu, label, p, opts.maxBindingBytes);
}

export function destroyWeight(gpu: Gpu, w: GpuWeight): void {
  for (const b of w.buffers) gpu.buffers.destroy(b);
  for (const c of w.chunks ?? []) destroyWeight(gpu, c);
  w.buffers = [];
  w.chunks = undefined;
  w.bytes = 0;
}
