/**
 * q8 / q4 quantisation at load on the host, in WebAssembly SIMD (weight-pack.c in kernels.wasm): a
 * checkpoint matrix's BF16 / F16 / F32 bytes go in, packWeight's words and f16 group scales come out,
 * bit for bit (test/unit/host-pack.test.ts), with no f32 copy in between and its NaN / ±Inf count on the
 * side; and BF16 / F32 → f16 storage (an embedding table) the same way. Many times the JS path
 * (toFloat32 + packWeight): the `host-quant` bench suite.
 *
 * One instance of the single-threaded kernels.wasm per realm, created by loadHostPacker (compiling a
 * module is asynchronous in browsers past 4 KB on the main thread, so the loader awaits it once before
 * streaming; packing itself is synchronous). Its memory grows to the largest matrix packed and is reused.
 * Where WebAssembly SIMD is missing (engines before 2021) loadHostPacker gives null and callers keep
 * packWeight, the reference this packer equals.
 */
import { ShapeError } from '../../errors';
import { FP8_BLOCK, rowLayout, type PackedWeight } from '../weight-pack';
import { SOURCE_BYTES as QUANT_SOURCE_BYTES, type QuantSource } from '../weight-quant';
import { kernelsModule, wasmSimdSupported } from './kernels';

interface PackExports {
  memory: WebAssembly.Memory;
  __heap_base: WebAssembly.Global;
  pack_quant(src: number, source: number, K: number, q4: number, gs: number, data: number, scales: number, n0: number, n1: number, sinv: number, SC: number, row0: number): number;
  half_rows(src: number, source: number, K: number, Kp: number, dst: number, n0: number, n1: number): number;
  bf16_rows(src: number, K: number, Kp: number, dst: number, n0: number, n1: number): number;
}

/** Checkpoint element formats the packer reads: weight-quant.ts' sources and DeepSeek-V3's FP8 E4M3. */
export type PackSource = QuantSource | 'fp8';
const SOURCE_CODE: Record<PackSource, number> = { bf16: 0, f16: 1, f32: 2, fp8: 3 };
const SOURCE_BYTES: Record<PackSource, number> = { ...QUANT_SOURCE_BYTES, fp8: 1 };

/** FP8 weights' block scales: the whole matrix's [ceil(N/128), ceil(K/128)] weight_scale_inv, and the first row's index in it. */
export interface Fp8Scales { scaleInv: Float32Array; row0?: number }

/** Whether the packer takes FP8 with these scales: every scale finite (others go to the JS path, which the packer's max shortcut does not model). */
export const fp8ScalesPackable = (scaleInv: Float32Array) => scaleInv.every(Number.isFinite);
const PAGE = 65536;
const align64 = (v: number) => Math.ceil(v / 64) * 64;

/** One packed matrix: views into the packer's memory, valid until its next pack call. */
export interface HostPacked {
  /** [rows, rowWords] u32 words (weight-pack.ts layout). */
  data: Uint32Array;
  /** ceil(rows·groups / 2) u32 words of f16 scale pairs (flat index r·groups + g, low half first). */
  scales: Uint32Array;
  /** NaN / ±Inf values among the source's. */
  nonFinite: number;
}

export class HostPacker {
  private constructor(private e: PackExports) {}

  /** The packer (created once per realm), or null when this engine has no WebAssembly SIMD. */
  static async load(): Promise<HostPacker | null> {
    if (!wasmSimdSupported()) return null;
    instance ??= kernelsModule(false).then(async (m) => new HostPacker((await WebAssembly.instantiate(m, {})).exports as unknown as PackExports));
    return instance;
  }

  /**
   * Packs the [rows, K] matrix `bytes` (little-endian `source` elements, row-major) into `format` with
   * f16 scales in groups of `groupSize`: packWeight(toFloat32(source, bytes), rows, K, format,
   * { groupSize, scaleDtype: 'f16' })'s data and scales. FP8 ('fp8', one byte an element): with `fp8`'s
   * block scales applied as toFloat32(…, { scaleInv, shape }) does (scales must be finite:
   * fp8ScalesPackable).
   */
  pack(source: PackSource, bytes: Uint8Array, rows: number, K: number, format: 'q8' | 'q4', groupSize: 32 | 128 = 32, fp8?: Fp8Scales): HostPacked {
    if (!Number.isInteger(rows) || !Number.isInteger(K) || rows <= 0 || K <= 0) throw new ShapeError(`HostPacker: shape must be positive integers, got [${rows}, ${K}]`);
    if (groupSize !== 32 && groupSize !== 128) throw new ShapeError(`HostPacker: group size must be 32 or 128, got ${String(groupSize)}`);
    if (bytes.byteLength !== rows * K * SOURCE_BYTES[source]) throw new ShapeError(`HostPacker: ${bytes.byteLength} bytes for [${rows}, ${K}] ${source}`);
    const { rowWords } = rowLayout(format, K);
    const G = Math.ceil(K / groupSize);
    const scaleWords = Math.ceil((rows * G) / 2);
    const SC = Math.ceil(K / FP8_BLOCK), row0 = fp8?.row0 ?? 0;
    if (source === 'fp8') {
      if (!fp8) throw new ShapeError('HostPacker: FP8 weights need their weight_scale_inv');
      if (!Number.isInteger(row0) || row0 < 0 || fp8.scaleInv.length < Math.ceil((row0 + rows) / FP8_BLOCK) * SC) throw new ShapeError(`HostPacker: ${fp8.scaleInv.length} FP8 block scales for rows [${row0}, ${row0 + rows}) of K = ${K}`);
    }
    const src = this.put(bytes), data = align64(src + bytes.byteLength), scales = align64(data + rows * rowWords * 4);
    const sinv = align64(scales + scaleWords * 4), sinvBytes = source === 'fp8' ? fp8!.scaleInv.byteLength : 0;
    const mem = this.reserve(sinv + sinvBytes);
    if (source === 'fp8') new Float32Array(mem.buffer, sinv, fp8!.scaleInv.length).set(fp8!.scaleInv);
    // An odd rows·groups leaves the last scale word's high half: zero, as packWeight's.
    if ((rows * G) % 2) new Uint16Array(mem.buffer, scales, scaleWords * 2)[rows * G] = 0;
    const nonFinite = this.e.pack_quant(src, SOURCE_CODE[source], K, format === 'q4' ? 1 : 0, groupSize, data, scales, 0, rows, sinv, SC, row0);
    return { data: new Uint32Array(mem.buffer, data, rows * rowWords), scales: new Uint32Array(mem.buffer, scales, scaleWords), nonFinite };
  }

  /** The memory, at least `end` bytes (grown once to the largest need, then reused). */
  private reserve(end: number): WebAssembly.Memory {
    const mem = this.e.memory;
    if (end > mem.buffer.byteLength) mem.grow(Math.ceil((end - mem.buffer.byteLength) / PAGE));
    return mem;
  }

  /** Copies `bytes` to the start of the heap; their address. */
  private put(bytes: Uint8Array): number {
    const src = align64(this.e.__heap_base.value as number);
    new Uint8Array(this.reserve(src + bytes.byteLength).buffer).set(bytes, src);
    return src;
  }

  /**
   * packWeight(toFloat32(source, bytes), N, K, 'f16') for BF16 or F32 bytes (an embedding table stored
   * as f16), in row slices of at most `sliceBytes` source bytes; null when a finite value overflows f16
   * (the caller takes packWeight, which refuses it with the value named).
   */
  halfMatrix(source: 'bf16' | 'f32', bytes: Uint8Array, N: number, K: number, sliceBytes = 16 << 20): (PackedWeight & { nonFinite: number }) | null {
    return this.rows16('f16', source, bytes, N, K, sliceBytes, (src, Kp, dst, n) => this.e.half_rows(src, SOURCE_CODE[source], K, Kp, dst, 0, n));
  }

  /**
   * packWeight(toFloat32('BF16', bytes), N, K, 'bf16') (bf16 storage of a BF16 checkpoint: the bits as
   * they are, NaNs quieted, rows padded to 8), in row slices of at most `sliceBytes`; with the NaN / ±Inf
   * count.
   */
  bf16Matrix(bytes: Uint8Array, N: number, K: number, sliceBytes = 16 << 20): PackedWeight & { nonFinite: number } {
    return this.rows16('bf16', 'bf16', bytes, N, K, sliceBytes, (src, Kp, dst, n) => this.e.bf16_rows(src, K, Kp, dst, 0, n))!;
  }

  /**
   * A 16-bit storage of [N, K] `source` bytes through `convert` (one of the module's row converters: rows
   * 0..n of the slice at `src` to `dst`, its NaN / ±Inf count, negative when a value does not fit), in
   * row slices of at most `sliceBytes` source bytes; null when a slice does not fit.
   */
  private rows16(format: 'f16' | 'bf16', source: 'bf16' | 'f32', bytes: Uint8Array, N: number, K: number, sliceBytes: number, convert: (src: number, Kp: number, dst: number, n: number) => number): (PackedWeight & { nonFinite: number }) | null {
    if (!Number.isInteger(N) || !Number.isInteger(K) || N <= 0 || K <= 0) throw new ShapeError(`HostPacker: shape must be positive integers, got [${N}, ${K}]`);
    if (bytes.byteLength !== N * K * SOURCE_BYTES[source]) throw new ShapeError(`HostPacker: ${bytes.byteLength} bytes for [${N}, ${K}] ${source}`);
    const { Kp, rowWords } = rowLayout(format, K);
    const rowBytes = K * SOURCE_BYTES[source];
    const per = Math.max(1, Math.floor(sliceBytes / rowBytes));
    const data = new Uint32Array(N * rowWords);
    let nonFinite = 0;
    for (let r0 = 0; r0 < N; r0 += per) {
      const n = Math.min(per, N - r0);
      const src = this.put(bytes.subarray(r0 * rowBytes, (r0 + n) * rowBytes)), dst = align64(src + n * rowBytes);
      const mem = this.reserve(dst + n * rowWords * 4);
      const c = convert(src, Kp, dst, n);
      if (c < 0) return null;
      nonFinite += c;
      data.set(new Uint32Array(mem.buffer, dst, n * rowWords), r0 * rowWords);
    }
    return { format, N, K, Kp, rowWords, data, groupSize: 0, scaleF16: false, scaleCols: 0, nonFinite };
  }

  /**
   * packWeight's PackedWeight of a whole [N, K] matrix (arrays of the caller's own), packed in slices of
   * rows of at most `sliceBytes` source bytes, so the packer's memory stays bounded by the slice (an
   * lm_head is 400 MB of BF16), not the largest matrix. Also gives the NaN / ±Inf count.
   */
  packMatrix(source: PackSource, bytes: Uint8Array, N: number, K: number, format: 'q8' | 'q4', groupSize: 32 | 128 = 32, sliceBytes = 16 << 20, fp8?: Fp8Scales): PackedWeight & { nonFinite: number } {
    if (bytes.byteLength !== N * K * SOURCE_BYTES[source]) throw new ShapeError(`HostPacker: ${bytes.byteLength} bytes for [${N}, ${K}] ${source}`);
    const { Kp, rowWords } = rowLayout(format, K);
    const G = Math.ceil(K / groupSize);
    const rowBytes = K * SOURCE_BYTES[source];
    // An even number of rows per slice, so every slice's scales start on a whole u32 word.
    const per = Math.max(2, Math.floor(sliceBytes / rowBytes / 2) * 2);
    const data = new Uint32Array(N * rowWords), scales = new Uint32Array(Math.ceil((N * G) / 2));
    let nonFinite = 0;
    for (let r0 = 0; r0 < N; r0 += per) {
      const n = Math.min(per, N - r0);
      const p = this.pack(source, bytes.subarray(r0 * rowBytes, (r0 + n) * rowBytes), n, K, format, groupSize, fp8 && { scaleInv: fp8.scaleInv, row0: (fp8.row0 ?? 0) + r0 });
      data.set(p.data, r0 * rowWords);
      scales.set(p.scales, (r0 * G) / 2);
      nonFinite += p.nonFinite;
    }
    return { format, N, K, Kp, rowWords, data, scales, groupSize, scaleF16: true, scaleCols: G, nonFinite };
  }
}

let instance: Promise<HostPacker | null> | undefined;
