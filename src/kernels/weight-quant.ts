/**
 * Quantisation at load on the GPU (shaders/weight_quant.wgsl): a checkpoint matrix uploaded in its own
 * element format (BF16, F16 or F32 bytes as they came from the file) is packed into q8 / q4 words and f16
 * group scales in place, in packWeight's layout (groups of 32, f16 scales; weight-pack.ts). The host does
 * no widening and no quantising: it copies the checkpoint bytes into a staging buffer.
 *
 * Same codes as the host packer except at exact ties x = (k + 1/2)·s, where the host's double-precision
 * 1/s may round the other way (see the shader); the CPU reference is weight-quant.ref.ts.
 */
import code from '../../shaders/weight_quant.wgsl?raw';
import type { Gpu } from '../gpu/device';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { ShapeError } from '../errors';
import { specialise } from './shader-source';
import { rowLayout } from './weight-pack';

export type QuantSource = 'bf16' | 'f16' | 'f32';
/** A matrix as the checkpoint stores it: its element format and its bytes (row-major). */
export interface RawMatrix {
  source: QuantSource;
  bytes: Uint8Array;
  /** Set by a sink that counted the NaN / ±Inf values while packing (the loader then skips its own scan). */
  nonFinite?: number;
}
export const QUANT_GROUP = 32;

export const WEIGHT_QUANT_PARAMS = defineUniforms({ rows: 'u32', k: 'u32', groups: 'u32', row_words: 'u32', dst_offset: 'u32', scale_offset: 'u32', pairs: 'u32', _p: 'u32' });

/** Bytes per element of each source format. */
export const SOURCE_BYTES: Record<QuantSource, number> = { bf16: 2, f16: 2, f32: 4 };

export interface GpuQuantArgs {
  /** The matrix [rows, K] in `source` format, row-major (a checkpoint tensor's bytes). */
  src: Uint8Array;
  source: QuantSource;
  rows: number;
  K: number;
  format: 'q8' | 'q4';
  /** Destination of the packed rows ([rows, rowWords] u32) and of the f16 scale pairs, in u32 words. */
  dst: GPUBuffer;
  dstOffsetWords: number;
  scales: GPUBuffer;
  scaleOffsetWords: number;
  /** Most source bytes staged and quantised per submit (default: 64 MiB, at most the binding limit). */
  sliceBytes?: number;
}

/**
 * Packs `src` on the GPU into `dst`/`scales` (submitted, not awaited: later queue work sees the result).
 * Runs in slices of whole rows so the staging buffer stays bounded; a slice's scales start on a word
 * (an even number of groups before it), so rows·groups must be even unless the scales end the buffer
 * region (a single slice, or the final one).
 */
export function quantizeOnGpu(gpu: Gpu, a: GpuQuantArgs): void {
  const { rows, K, source, format } = a;
  const bytes = SOURCE_BYTES[source];
  if (!Number.isInteger(rows) || !Number.isInteger(K) || rows <= 0 || K <= 0) throw new ShapeError(`quantizeOnGpu: shape must be positive integers, got [${rows}, ${K}]`);
  if (a.src.byteLength !== rows * K * bytes) throw new ShapeError(`quantizeOnGpu: ${a.src.byteLength} bytes for [${rows}, ${K}] ${source}`);
  const G = Math.ceil(K / QUANT_GROUP);
  const { rowWords } = rowLayout(format, K);
  const limit = Math.min(a.sliceBytes ?? 64 * 2 ** 20, gpu.caps.maxStorageBufferBindingSize, gpu.caps.maxBufferSize);
  // Whole rows per slice, even when G is odd (so each slice starts on a scale word).
  const rowAlign = G % 2 ? 2 : 1;
  let per = Math.max(rowAlign, Math.floor(limit / (K * bytes) / rowAlign) * rowAlign);
  per = Math.min(per, rows);
  const pipeline = gpu.pipelines.get({ label: `weight_quant ${source}→${format}`, code: specialise(code, { src: source, dst: format }), entryPoint: 'quantize' });
  for (let r0 = 0; r0 < rows; r0 += per) {
    const n = Math.min(per, rows - r0);
    const part = a.src.subarray(r0 * K * bytes, (r0 + n) * K * bytes);
    // Staging holds whole u32 words (bf16/f16 rows may end mid-word).
    const staging = gpu.buffers.create(`weight_quant.staging`, Math.max(16, Math.ceil(part.byteLength / 16) * 16));
    try {
      if (part.byteLength % 4 === 0 && part.byteOffset % 4 === 0) gpu.buffers.write(staging, part);
      else {
        const padded = new Uint8Array(Math.ceil(part.byteLength / 4) * 4);
        padded.set(part);
        gpu.buffers.write(staging, padded);
      }
      const pairs = ceilDiv(n * G, 2);
      const rec = gpu.recorder('weight_quant');
      rec.dispatch({
        pipeline,
        bindings: [staging, a.dst, a.scales],
        uniforms: WEIGHT_QUANT_PARAMS.pack({ rows: n, k: K, groups: G, row_words: rowWords, dst_offset: a.dstOffsetWords + r0 * rowWords, scale_offset: a.scaleOffsetWords + (r0 * G) / 2, pairs, _p: 0 }),
        workgroups: ceilDiv(pairs, 64),
        label: 'weight_quant',
      });
      rec.submit();
    } finally {
      // Destroyed after the submit: WebGPU keeps it alive until the queued work that uses it completes.
      gpu.buffers.destroy(staging);
    }
  }
}
