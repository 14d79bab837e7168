/**
 * The WebAssembly kernels (kernels.c, built by scripts/build-wasm.mjs) behind typed wrappers: one
 * instance, its linear memory managed here as a bump heap with marks, and one method per kernel with
 * shape checks. Every tensor lives in the module's memory and is named by its byte offset ("ptr").
 *
 * Heap: permanent blocks (weights, the KV cache) are taken while no mark is open; a forward pass opens
 * a mark, takes its activations above it and releases them at the end (WasmBackend). Memory grows on
 * demand up to wasm32's 4 GiB; past that a LimitExceededError names what did not fit.
 */
import { CONTROL_BYTES, KernelPool, defaultThreads, threadsAvailable } from './pool';
import { ArgumentError, LimitExceededError, ShapeError } from '../../errors';
import { packWeight, scaleAt } from '../weight-pack';
import type { SparsePacked } from '../../sparse/formats';
import { DECODABLE, GGML_TYPE, dequantize, ggmlTypeByName, isDecodable, rowBytes } from '../../formats/gguf-blocks';

interface Exports {
  memory: WebAssembly.Memory;
  __heap_base: WebAssembly.Global;
  exp_f32(x: number): number;
  matmul_f32(x: number, w: number, y: number, M: number, N: number, K: number, n0: number, n1: number): void;
  prep_x(x: number, xp: number, M: number, K: number, Kp: number, mode: number): void;
  quant_x16(x: number, xq: number, xs: number, M: number, K: number, Kp: number, q4: number): void;
  matmul_q8x16(xq: number, xs: number, w: number, s: number, y: number, M: number, N: number, Kp: number, scaleCols: number, n0: number, n1: number): void;
  matmul_q4x16(xq: number, xs: number, w: number, s: number, y: number, M: number, N: number, Kp: number, scaleCols: number, n0: number, n1: number): void;
  matmul_f16(xp: number, w: number, y: number, M: number, N: number, Kp: number, n0: number, n1: number): void;
  matmul_bf16(xp: number, w: number, y: number, M: number, N: number, Kp: number, n0: number, n1: number): void;
  matmul_q8(xp: number, w: number, s: number, y: number, M: number, N: number, Kp: number, gs: number, scaleCols: number, n0: number, n1: number): void;
  matmul_q4(xp: number, w: number, s: number, y: number, M: number, N: number, Kp: number, gs: number, scaleCols: number, n0: number, n1: number): void;
  rmsnorm(x: number, w: number, y: number, rows: number, dim: number, xStride: number, yStride: number, eps: number): void;
  add_inplace(h: number, r: number, n: number): void;
  axpy(out: number, x: number, a: number, n: number): void;
  silu_mul_fused(gu: number, h: number, rows: number, I: number): void;
  silu_mul(g: number, u: number, h: number, n: number): void;
  rope(x: number, rows: number, heads: number, rowStride: number, headStride: number, offset: number, ropeDim: number, cs: number, pos0: number): void;
  mla_attention(q: number, kvB: number, lat: number, pe: number, out: number, scratch: number, S: number, H: number, nope: number, rope: number, dv: number, r: number, past: number, scale: number, s0: number, s1: number, h0: number, h1: number): void;
  sparse24_matmul(xp: number, values: number, pidx: number, y: number, tab: number, M: number, N: number, G: number, n0: number, n1: number): void;
  vnm_matmul(xp: number, values: number, pidx: number, cols: number, y: number, scratch: number, M: number, N: number, G: number, V: number, Mw: number, n0: number, n1: number): void;
  moe_route(logits: number, bias: number, T: number, E: number, K: number, nGroup: number, topkGroup: number, scoring: number, norm: number, scaling: number, ids: number, weights: number, scratch: number): void;
  gguf_quant_x(x: number, xq: number, xs: number, xsum: number, M: number, K: number): void;
  matmul_gguf(type: number, xq: number, xs: number, xsum: number, w: number, y: number, M: number, N: number, K: number, n0: number, n1: number): void;
  // kernels-gqa.c: the Llama-style families'
  rope_half(x: number, rows: number, heads: number, rowStride: number, headStride: number, offset: number, ropeDim: number, cs: number, pos0: number): void;
  add_bias_rows(x: number, b: number, rows: number, cols: number): void;
  scale_inplace(x: number, s: number, n: number): void;
  sigmoid_gate_rows(y: number, g: number, rows: number, cols: number): void;
  swiglu_oai_fused(gu: number, h: number, rows: number, I: number, alpha: number, limit: number): void;
  gqa_attention(q: number, kc: number, vc: number, sinks: number, out: number, scratch: number, S: number, H: number, KVH: number, d: number, past: number, scale: number, window: number, s0: number, s1: number, h0: number, h1: number): void;
}

const compiled = new Map<boolean, Promise<WebAssembly.Module>>();

/**
 * A compiled module (compiled once per realm; instances are cheap): the single-threaded one, or the
 * pool's. The binaries are imported on first use, so bundles split them off (GPU-only pages never load them).
 */
export function kernelsModule(threaded = false): Promise<WebAssembly.Module> {
  let m = compiled.get(threaded);
  if (!m) {
    m = (threaded ? import('./kernels-mt.wasm?base64') : import('./kernels.wasm?base64')).then(({ default: b64 }) => {
      const bin = atob(b64);
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      return WebAssembly.compile(bytes);
    });
    compiled.set(threaded, m);
  }
  return m;
}

/** The exports the worker pool runs (pool.ts: by index into this list). */
const POOL_KERNELS = ['matmul_f32', 'matmul_f16', 'matmul_bf16', 'matmul_q8', 'matmul_q4', 'sparse24_matmul', 'vnm_matmul', 'mla_attention', 'matmul_q8x16', 'matmul_q4x16', 'matmul_gguf', 'gqa_attention'] as const;
/** Multiply-adds below which a call stays on the calling thread (waking the pool costs more). */
const POOL_MIN_WORK = 1 << 15;

/** Whether this JavaScript engine runs WebAssembly with 128-bit SIMD (the kernels need it). */
export function wasmSimdSupported(): boolean {
  if (typeof WebAssembly !== 'object') return false;
  // (module (func (result v128) i32.const 0 i8x16.splat))
  return WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]));
}

export type WasmWeightFormat = 'f32' | 'f16' | 'bf16' | 'q8' | 'q4';

/** A structured-sparse weight's extra arrays (kernels.c "structured sparsity"; values f32 [N, 2G] at ptr). */
export interface WasmSparse {
  /** Groups per row and columns per group (4 for 2:4, M for V:2:M). */
  G: number;
  GW: number;
  /** V:2:M rows per block (0 for 2:4). */
  V: number;
  /** u8 [N, G] pair indices. */
  pidx: number;
  /** V:2:M: u8 [ceil(N/V), G, 4] selected columns per block and group. */
  cols: number;
}

/** GGUF block types the WASM kernels read as they are in the file (gguf.c). */
export const WASM_GGUF_BLOCKS = ['Q8_0', 'Q4_0', 'Q4_K', 'Q5_K', 'Q6_K'] as const;
export type WasmGgufBlockType = (typeof WASM_GGUF_BLOCKS)[number];

/**
 * A linear weight [N, K] in the module's memory (layouts: weight-pack.ts; q8/q4 scales widened to f32;
 * sparse: src/sparse/formats.ts; 'gguf': a GGUF tensor's blocks, byte for byte, rows of K/blockSize blocks).
 */
export interface WasmWeight {
  format: WasmWeightFormat | '2:4' | 'vnm' | 'gguf';
  /** format 'gguf': the ggml block type. */
  ggufType?: WasmGgufBlockType;
  sparse?: WasmSparse;
  N: number;
  K: number;
  /** Row length in elements as stored (K for f32, padded for the others). */
  Kp: number;
  ptr: number;
  /** q8/q4: [N, scaleCols] f32 group scales. */
  scales: number;
  groupSize: number;
  scaleCols: number;
  bytes: number;
}

const PAGE = 65536;
const MAX_BYTES = 4 * 1024 * 1024 * 1024 - PAGE;

export class WasmKernels {
  private e: Exports;
  private top: number;
  private marks = 0;
  private f32View: Float32Array;
  private u8View: Uint8Array;
  /** Bytes held by permanent blocks (weights, caches). */
  permanentBytes = 0;

  private pool: KernelPool | null = null;
  private memory: WebAssembly.Memory;
  /** Why the kernels run on one thread when more were asked for ('' when they run as asked). */
  threadsNote = '';

  private constructor(instance: WebAssembly.Instance, memory?: WebAssembly.Memory) {
    this.e = instance.exports as unknown as Exports;
    this.memory = memory ?? this.e.memory;
    this.top = align(this.e.__heap_base.value as number, 64);
    this.f32View = new Float32Array(this.memory.buffer);
    this.u8View = new Uint8Array(this.memory.buffer);
  }

  /**
   * The kernels on `threads` threads (default: the cores, at most 8, where SharedArrayBuffer and workers
   * exist; else 1): the caller and threads − 1 workers over one shared memory (pool.ts).
   */
  static async create(o: { threads?: number } = {}): Promise<WasmKernels> {
    if (!wasmSimdSupported()) throw new ArgumentError('this JavaScript engine has no WebAssembly SIMD (128-bit), which the WASM engine needs: use device webgpu, or a browser from 2021 or later');
    if (o.threads !== undefined && (!Number.isInteger(o.threads) || o.threads < 1 || o.threads > 64)) throw new ArgumentError(`threads must be an integer in [1, 64], got ${String(o.threads)}`);
    const avail = threadsAvailable();
    const want = o.threads ?? (avail.ok ? await defaultThreads() : 1);
    if (want > 1 && avail.ok) {
      const memory = new WebAssembly.Memory({ initial: 64, maximum: 65536, shared: true } as WebAssembly.MemoryDescriptor);
      const module = await kernelsModule(true);
      const k = new WasmKernels(await WebAssembly.instantiate(module, { env: { memory } }), memory);
      const ctrl = k.alloc(CONTROL_BYTES, 'the worker pool\'s control block');
      k.pool = await KernelPool.create(module, memory, ctrl, want, [...POOL_KERNELS]);
      return k;
    }
    const k = new WasmKernels(await WebAssembly.instantiate(await kernelsModule(), {}));
    if (want > 1) k.threadsNote = `1 thread, not ${want}: ${avail.why}`;
    return k;
  }

  /** Threads a kernel call runs on. */
  get threads(): number { return this.pool?.threads ?? 1; }

  /** Stops the worker pool (the memory stays readable). */
  destroy(): void { this.pool?.stop(); this.pool = null; }

  /** Runs `name` split by rows [args[split], args[split + 1]) over the pool when there is one and the work is worth it. */
  private par(name: (typeof POOL_KERNELS)[number], args: number[], split: number, work: number, alignRows = 1, scratch = -1, scratchStride = 0): void {
    const fn = this.e[name] as (...a: number[]) => void;
    if (this.pool && work >= POOL_MIN_WORK && args[split + 1] - args[split] >= 2 * alignRows) this.pool.run(fn, name, args, split, alignRows, scratch, scratchStride);
    else fn(...args);
  }

  // ------------------------------------------------------------------------------------------ heap

  /** Bytes of linear memory in use (the heap's top). */
  get heapBytes(): number { return this.top; }

  /** Float32 view of the whole memory (refreshed after growth). */
  get f32(): Float32Array {
    if (this.f32View.buffer !== this.memory.buffer) this.refresh();
    return this.f32View;
  }
  get u8(): Uint8Array {
    if (this.u8View.buffer !== this.memory.buffer) this.refresh();
    return this.u8View;
  }
  private refresh() {
    this.f32View = new Float32Array(this.memory.buffer);
    this.u8View = new Uint8Array(this.memory.buffer);
  }

  /** `bytes` of memory, 64-byte aligned; permanent when no mark is open. */
  alloc(bytes: number, what = 'a tensor'): number {
    const p = this.top;
    const end = align(p + Math.max(bytes, 0), 64);
    if (end > MAX_BYTES) throw new LimitExceededError('wasm32 memory', end, MAX_BYTES, `${what} (the WASM engine's memory is at most 4 GiB: use a smaller model or q8/q4 weights)`);
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      try {
        this.memory.grow(Math.ceil((end - have) / PAGE));
      } catch {
        throw new LimitExceededError('wasm32 memory', end, have, `${what} (the browser refused to grow WebAssembly memory)`);
      }
    }
    this.top = end;
    if (this.marks === 0) this.permanentBytes += end - p;
    return p;
  }

  mark(): number { this.marks++; return this.top; }
  /** Frees everything taken since `mark` (marks nest; release them in reverse order). */
  release(mark: number): void {
    if (this.marks <= 0) throw new Error('WasmKernels.release without mark');
    this.marks--;
    this.top = mark;
  }
  /** Frees back to `mark` but keeps it open (a layer's temporaries inside a forward pass). */
  rewind(mark: number): void { this.top = mark; }

  putF32(data: ArrayLike<number>, what?: string): number {
    const p = this.alloc(data.length * 4, what);
    this.f32.set(data, p >> 2);
    return p;
  }

  putBytes(data: Uint8Array, what?: string): number {
    const p = this.alloc(data.length, what);
    this.u8.set(data, p);
    return p;
  }

  readF32(ptr: number, n: number): Float32Array { return this.f32.slice(ptr >> 2, (ptr >> 2) + n); }
  viewF32(ptr: number, n: number): Float32Array { return this.f32.subarray(ptr >> 2, (ptr >> 2) + n); }

  // --------------------------------------------------------------------------------------- weights

  /** Packs an f32 [N, K] matrix into `format` (weight-pack.ts' quantisers, so q8/q4 equal the GPU's) and stores it. */
  weight(data: Float32Array, N: number, K: number, format: WasmWeightFormat, what = 'a weight'): WasmWeight {
    if (!Number.isInteger(N) || !Number.isInteger(K) || N <= 0 || K <= 0) throw new ShapeError(`${what}: weight shape must be positive integers, got [${N}, ${K}]`);
    if (data.length !== N * K) throw new ShapeError(`${what}: ${data.length} values for [${N}, ${K}]`);
    // The f16 kernel does not decode infinities or NaNs (kernels.c): such a matrix is stored as f32.
    if (format === 'f16' && !data.every(Number.isFinite)) format = 'f32';
    if (format === 'f32') {
      const ptr = this.putF32(data, what);
      return { format, N, K, Kp: K, ptr, scales: 0, groupSize: 0, scaleCols: 0, bytes: N * K * 4 };
    }
    const p = packWeight(data, N, K, format);
    const ptr = this.putBytes(new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength), what);
    let scales = 0;
    if (p.scales) {
      const s = new Float32Array(N * p.scaleCols);
      for (let i = 0; i < s.length; i++) s[i] = scaleAt(p, i);
      scales = this.putF32(s, what);
    }
    return { format, N, K, Kp: p.Kp, ptr, scales, groupSize: p.groupSize, scaleCols: p.scaleCols, bytes: p.data.byteLength + (p.scales ? N * p.scaleCols * 4 : 0) };
  }

  /**
   * Stores a GGUF tensor [N, K] as the kernels read it: quantised blocks byte for byte (`parts`: row-major
   * pieces concatenated, e.g. an expert's gate and up tensors as one [2I, K] matrix, all of one type);
   * F16/BF16 rows as the 16-bit kernels' rows when K is a multiple of 8 (the same bytes); F32 as f32.
   * Anything else (a type the kernels do not read, or a 16-bit K not a multiple of 8) is dequantised to f32.
   */
  ggufWeight(type: string, parts: Uint8Array[], N: number, K: number, what = 'a weight'): WasmWeight {
    if (!Number.isInteger(N) || !Number.isInteger(K) || N <= 0 || K <= 0) throw new ShapeError(`${what}: weight shape must be positive integers, got [${N}, ${K}]`);
    const info = ggmlTypeByName(type);
    if (!info || !isDecodable(type)) throw new ArgumentError(`${what}: GGUF type ${type} cannot be read by the WASM engine (it reads ${DECODABLE.join(', ')})`);
    const bytes = parts.reduce((a, p) => a + p.length, 0);
    if (K % info.blockSize || bytes !== rowBytes(info, K) * N) throw new ShapeError(`${what}: ${bytes} bytes of ${type} for [${N}, ${K}] (needs ${K % info.blockSize ? `K a multiple of ${info.blockSize}` : rowBytes(info, K) * N})`);
    const put = (): number => {
      const ptr = this.alloc(bytes, what);
      let at = ptr;
      for (const p of parts) { this.u8.set(p, at); at += p.length; }
      return ptr;
    };
    const blocks = (WASM_GGUF_BLOCKS as readonly string[]).includes(type);
    const half = (type === 'F16' || type === 'BF16') && K % 8 === 0 && (type === 'BF16' || parts.every(finiteF16));
    if (blocks) return { format: 'gguf', ggufType: type as WasmGgufBlockType, N, K, Kp: K, ptr: put(), scales: 0, groupSize: info.blockSize, scaleCols: 0, bytes };
    if (half) return { format: type === 'F16' ? 'f16' : 'bf16', N, K, Kp: K, ptr: put(), scales: 0, groupSize: 0, scaleCols: 0, bytes };
    const joined = parts.length === 1 ? parts[0] : concatBytes(parts, bytes);
    return this.weight(dequantize(type, joined, N * K), N, K, 'f32', what);
  }

  /**
   * Stores a structured-sparse weight with f32 kept values: the per-group 2-bit code pairs become one
   * pair index byte each (the kernels' inner loop then decodes nothing).
   */
  sparseWeight(p: SparsePacked, what = 'a sparse weight'): WasmWeight {
    const { N, G } = p;
    const pidx = new Uint8Array(N * G);
    for (let n = 0; n < N; n++) {
      for (let g = 0; g < G; g++) {
        const code = (p.meta[n * p.metaStride + (g >> 3)] >>> ((g & 7) * 4)) & 15;
        const pi = PAIR_INDEX[code];
        if (pi < 0) throw new ShapeError(`${what}: row ${n}, group ${g} has code ${code} (the two kept values must be distinct, in ascending order)`);
        pidx[n * G + g] = pi;
      }
    }
    const ptr = this.putF32(p.values, what);
    const pidxPtr = this.putBytes(pidx, what);
    const cols = p.format === 'vnm' ? this.putBytes(new Uint8Array(p.columns.buffer, p.columns.byteOffset, p.columns.byteLength), what) : 0;
    const GW = p.format === 'vnm' ? p.M : 4;
    const bytes = p.values.byteLength + pidx.length + (p.format === 'vnm' ? p.columns.byteLength : 0);
    return { format: p.format, N, K: p.K, Kp: G * GW, ptr, scales: 0, groupSize: 0, scaleCols: 0, bytes, sparse: { G, GW, V: p.format === 'vnm' ? p.V : 0, pidx: pidxPtr, cols } };
  }

  // ------------------------------------------------------------------------------------- kernels

  /** y [M, N] = x [M, K] · Wᵀ for rows [n0, n1) of W (all by default). */
  matmul(x: number, w: WasmWeight, y: number, M: number, n0 = 0, n1 = w.N): void {
    if (!(M >= 1) || n0 < 0 || n1 > w.N || n0 > n1) throw new ShapeError(`matmul: M = ${M}, rows [${n0}, ${n1}) of [${w.N}, ${w.K}]`);
    const work = M * (n1 - n0) * w.K;
    if (w.format === 'f32') { this.par('matmul_f32', [x, w.ptr, y, M, w.N, w.K, n0, n1], 6, work, 4); return; }
    const m = this.mark();
    try {
      // GGUF blocks against int16 activations per group of 32 (gguf.c; why not llama.cpp's int8: there).
      if (w.format === 'gguf') {
        const G = w.K / 32;
        const xq = this.alloc(M * w.K * 2), xs = this.alloc(M * G * 4), xsum = this.alloc(M * G * 4);
        this.e.gguf_quant_x(x, xq, xs, xsum, M, w.K);
        this.par('matmul_gguf', [GGML_TYPE[w.ggufType!], xq, xs, xsum, w.ptr, y, M, w.N, w.K, n0, n1], 9, work);
        return;
      }
      // q8/q4 in groups of 32: against int16 activations (kernels.c quant_x16; reference quant-x16.ref.ts).
      if ((w.format === 'q8' || w.format === 'q4') && w.groupSize === 32) {
        const G = Math.ceil(w.Kp / 32);
        const xq = this.alloc(M * w.Kp * 2), xs = this.alloc(M * G * 4);
        this.e.quant_x16(x, xq, xs, M, w.K, w.Kp, w.format === 'q4' ? 1 : 0);
        if (w.format === 'q8') this.par('matmul_q8x16', [xq, xs, w.ptr, w.scales, y, M, w.N, w.Kp, w.scaleCols, n0, n1], 9, work);
        else this.par('matmul_q4x16', [xq, xs, w.ptr, w.scales, y, M, w.N, w.Kp, w.scaleCols, n0, n1], 9, work);
        return;
      }
      const xp = this.alloc(M * w.Kp * 4);
      this.e.prep_x(x, xp, M, w.K, w.Kp, w.format === 'q4' ? 1 : w.format === 'f16' || w.format === 'bf16' ? 2 : 0);
      switch (w.format) {
        case '2:4': case 'vnm': {
          const sp = w.sparse!;
          // Pair tables per thread (each builds its own for the rows it computes; two input rows at a time).
          const stride = align(32 * sp.G * 4, 64);
          const tab = this.alloc(stride * this.threads);
          if (w.format === '2:4') this.par('sparse24_matmul', [xp, w.ptr, sp.pidx, y, tab, M, w.N, sp.G, n0, n1], 8, work / 2, 4, 4, stride);
          else this.par('vnm_matmul', [xp, w.ptr, sp.pidx, sp.cols, y, tab, M, w.N, sp.G, sp.V, sp.GW, n0, n1], 11, work / 2, sp.V, 5, stride);
          break;
        }
        case 'f16': this.par('matmul_f16', [xp, w.ptr, y, M, w.N, w.Kp, n0, n1], 6, work, 4); break;
        case 'bf16': this.par('matmul_bf16', [xp, w.ptr, y, M, w.N, w.Kp, n0, n1], 6, work, 4); break;
        case 'q8': this.par('matmul_q8', [xp, w.ptr, w.scales, y, M, w.N, w.Kp, w.groupSize, w.scaleCols, n0, n1], 9, work); break;
        case 'q4': this.par('matmul_q4', [xp, w.ptr, w.scales, y, M, w.N, w.Kp, w.groupSize, w.scaleCols, n0, n1], 9, work); break;
        default: throw new ArgumentError(`matmul: unknown WASM weight format '${(w as WasmWeight).format}'`);
      }
    } finally {
      this.release(m);
    }
  }

  rmsNorm(x: number, w: number, y: number, rows: number, dim: number, eps: number, xStride = dim, yStride = dim): void {
    this.e.rmsnorm(x, w, y, rows, dim, xStride, yStride, eps);
  }

  addInPlace(h: number, r: number, n: number): void { this.e.add_inplace(h, r, n); }
  axpy(out: number, x: number, a: number, n: number): void { this.e.axpy(out, x, a, n); }
  siluMulFused(gu: number, h: number, rows: number, I: number): void { this.e.silu_mul_fused(gu, h, rows, I); }
  siluMul(g: number, u: number, h: number, n: number): void { this.e.silu_mul(g, u, h, n); }

  /** `cs`: [positions, ropeDim/2] (cos, sin) pairs (ropeTable). Pairs interleaved (default) or halves ('half', HF rotate_half). */
  rope(x: number, a: { rows: number; heads: number; rowStride: number; headStride: number; offset: number; ropeDim: number; pos0: number }, cs: number, style: 'interleaved' | 'half' = 'interleaved'): void {
    if (a.ropeDim % 2) throw new ShapeError(`rope: ropeDim must be even, got ${a.ropeDim}`);
    (style === 'half' ? this.e.rope_half : this.e.rope)(x, a.rows, a.heads, a.rowStride, a.headStride, a.offset, a.ropeDim, cs, a.pos0);
  }

  /** x[r, :] += b [cols] for rows r < rows. */
  addBiasRows(x: number, b: number, rows: number, cols: number): void { this.e.add_bias_rows(x, b, rows, cols); }
  /** x *= s (n elements). */
  scale(x: number, s: number, n: number): void { this.e.scale_inplace(x, s, n); }
  /** y[r, :] *= sigmoid(g[r]) for y [rows, cols]. */
  sigmoidGateRows(y: number, g: number, rows: number, cols: number): void { this.e.sigmoid_gate_rows(y, g, rows, cols); }
  /** GPT-OSS's clamped SwiGLU on a fused [rows, 2I] gate|up product → h [rows, I]. */
  swigluOaiFused(gu: number, h: number, rows: number, I: number, alpha: number, limit: number): void { this.e.swiglu_oai_fused(gu, h, rows, I, alpha, limit); }

  /**
   * Grouped-query attention for S queries at [past, past+S) over a per-kv-head cache k, v [≥ past+S, kvHeads·d]
   * (causal; `window` > 0 limits each query to its last `window` keys; `sinks` [heads] f32 or 0); out [S, heads·d].
   */
  gqa(a: { q: number; k: number; v: number; sinks: number; out: number; S: number; heads: number; kvHeads: number; d: number; past: number; scale: number; window: number }, s0 = 0, s1 = a.S, h0 = 0, h1 = a.heads): void {
    if (a.heads % a.kvHeads) throw new ShapeError(`gqa: ${a.heads} heads are not a multiple of ${a.kvHeads} kv heads`);
    const m = this.mark();
    try {
      const stride = align((a.past + a.S) * 4, 64);
      const scratch = this.alloc(stride * this.threads);
      const args = [a.q, a.k, a.v, a.sinks, a.out, scratch, a.S, a.heads, a.kvHeads, a.d, a.past, a.scale, a.window, s0, s1, h0, h1];
      // Work ~ queries · heads · keys · 2d: split queries (prefill) or heads (decode).
      const work = (s1 - s0) * (h1 - h0) * (a.window > 0 ? Math.min(a.window, a.past + a.S) : a.past + a.S) * 2 * a.d;
      if (s1 - s0 >= h1 - h0) this.par('gqa_attention', args, 13, work, 1, 5, stride);
      else this.par('gqa_attention', args, 15, work, 1, 5, stride);
    } finally {
      this.release(m);
    }
  }

  /** MLA (absorbed) for S queries at [past, past+S) over the cache; out [S, H·v]. */
  mla(a: { q: number; kvB: number; latent: number; pe: number; out: number; S: number; heads: number; nope: number; rope: number; v: number; r: number; past: number; scale: number }, s0 = 0, s1 = a.S, h0 = 0, h1 = a.heads): void {
    const m = this.mark();
    try {
      const stride = align((2 * a.r + a.rope + a.past + a.S) * 4, 64);
      const scratch = this.alloc(stride * this.threads);
      const args = [a.q, a.kvB, a.latent, a.pe, a.out, scratch, a.S, a.heads, a.nope, a.rope, a.v, a.r, a.past, a.scale, s0, s1, h0, h1];
      // Work ~ queries · heads · (past + S) · (kvLora + rope): split heads (decode) or queries (prefill).
      const work = (s1 - s0) * (h1 - h0) * (a.past + a.S) * (a.r + a.rope);
      if (s1 - s0 >= h1 - h0) this.par('mla_attention', args, 14, work, 1, 5, stride);
      else this.par('mla_attention', args, 16, work, 1, 5, stride);
    } finally {
      this.release(m);
    }
  }

  /** The router on logits [T, E] → ids [T, K] (i32), weights [T, K]. */
  moeRoute(logits: number, bias: number, T: number, r: { experts: number; topK: number; nGroup: number; topkGroup: number; scoring: 'sigmoid' | 'softmax'; normTopkProb: boolean; routedScalingFactor: number }, ids: number, weights: number): void {
    if (r.experts % r.nGroup || r.nGroup > 64) throw new ShapeError(`moeRoute: ${r.experts} experts in ${r.nGroup} groups (at most 64 groups of equal size)`);
    const m = this.mark();
    try {
      const scratch = this.alloc((2 * r.experts + r.nGroup) * 4);
      this.e.moe_route(logits, bias, T, r.experts, r.topK, r.nGroup, r.topkGroup, r.scoring === 'sigmoid' ? 0 : 1, r.normTopkProb ? 1 : 0, r.routedScalingFactor, ids, weights, scratch);
    } finally {
      this.release(m);
    }
  }

  exp(x: number): number { return this.e.exp_f32(x); }
}

/** (cos, sin) of every position < `positions` and pair i < ropeDim/2, as the reference computes them (angle rounded to f32). */
export function ropeTable(invFreq: Float32Array, positions: number): Float32Array {
  const half = invFreq.length;
  const t = new Float32Array(positions * half * 2);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const ang = Math.fround(p * invFreq[i]);
      t[(p * half + i) * 2] = Math.cos(ang);
      t[(p * half + i) * 2 + 1] = Math.sin(ang);
    }
  }
  return t;
}

/** 4-bit code (bits 0–1 first kept column, 2–3 second) → pair index of kernels.c's PAIR_A/PAIR_B, −1 if invalid. */
const PAIR_INDEX = Int8Array.from({ length: 16 }, (_, code) => {
  const a = code & 3, b = code >> 2;
  const pairs = [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]];
  return pairs.findIndex(([x, y]) => x === a && y === b);
});

/** No f16 infinity or NaN (exponent 31) in these little-endian halves: the 16-bit kernel does not decode them. */
function finiteF16(b: Uint8Array): boolean {
  for (let i = 1; i < b.length; i += 2) if ((b[i] & 0x7c) === 0x7c) return false;
  return true;
}

function concatBytes(parts: Uint8Array[], n: number): Uint8Array {
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function align(v: number, a: number): number { return Math.ceil(v / a) * a; }
