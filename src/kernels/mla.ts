import code from '../../shaders/mla.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { LimitExceededError, ShapeError, UnsupportedError } from '../errors';
import { flashAttention, kvUnpack, kvWrite, type AttentionArgs, type KvFormat } from './attention';
import { MLA_DECODE_MAX_S, mlaDecodePlan, mlaDecodeScratchBytes, type MlaDecodePlan, type MlaDecodeTuning } from './mla-plan';

export { MLA_DECODE_MAX_S, mlaDecodePlan, mlaDecodeScratchBytes, mlaDecodeSharedBytes, type MlaDecodeConfig, type MlaDecodePlan, type MlaDecodeTuning } from './mla-plan';
import { matmulTiled } from './matmul';
import { specialise, subgroupChoice } from './shader-source';

export interface MlaDims {
  heads: number;
  qkNope: number;
  qkRope: number;
  vHead: number;
  kvLora: number;
}

/**
 * What mlaAttention needs of a latent KV cache (model/kvcache.ts LatentKvCache is one): per layer one
 * buffer of `capacity` rows [latent (kvLoraRank) | k_pe (ropeDim)], rowFloats elements apart (≥ kvLoraRank
 * + ropeDim; even for f16), elements f32 or packed f16 pairs (`format`, default f32; see KvFormat).
 */
export interface LatentCacheBinding {
  readonly capacity: number;
  readonly kvLoraRank: number;
  readonly ropeDim: number;
  layer(i: number): { kv: GPUBuffer; rowFloats: number; format?: KvFormat };
}

export const MLA_PARAMS = defineUniforms({
  S: 'u32', H: 'u32', nope: 'u32', rope: 'u32',
  dv: 'u32', kv_lora: 'u32', q_stride: 'u32', q_offset: 'u32',
  o_stride: 'u32', o_offset: 'u32', c_stride: 'u32', c_offset: 'u32',
  T: 'u32', past: 'u32', scale: 'f32', splits: 'u32',
  past_from_buf: 'u32', row_tiles: 'u32', _p0: 'u32', _p1: 'u32',
});

export interface MlaAttentionArgs {
  dims: MlaDims;
  /** f32 [S, qStride]: per head [q_nope | q_pe] (H·(nope+rope) values from qOffset), q_pe already roped. */
  q: Binding; qStride?: number; qOffset?: number;
  /**
   * The new tokens' cache rows, either as the kv_a output [S, kvAStride] = [latent (kvLora, already
   * RMS-normalised in place) | k_pe (rope, already roped)] from kvAOffset …
   */
  kvA?: Binding; kvAStride?: number; kvAOffset?: number;
  /** … or as separate latent [S, latentStride] (kvLora values, normalised) and kPe [S, kPeStride] (rope values, roped). */
  latent?: Binding; latentStride?: number; latentOffset?: number;
  kPe?: Binding; kPeStride?: number; kPeOffset?: number;
  /** f32 [H·(nope+v), kvLora]: per head rows [W_UK | W_UV]. */
  kvB: Binding;
  cache: LatentCacheBinding;
  layer: number;
  /** Position of the first new token (= cached tokens before this forward). */
  past: number;
  S: number;
  /** f32 [S, outStride]: H·v values per row from outOffset. */
  out: Binding; outStride?: number; outOffset?: number;
  /** Softmax scale (YaRN mscale included), the same for both paths. */
  scale: number;
  /** 'absorb' (MQA over the latent cache) or 'naive' (expanded K/V). Default: absorb for S ≤ 8 or when the expanded K/V would be large. */
  mode?: 'absorb' | 'naive';
  /** u32 [1] with `past` on the GPU (absorb only): the recorded step does not depend on the position. */
  pastFromBuffer?: Binding;
  /** Split-K for the attention core ('auto' default). */
  splits?: number | 'auto';
}

/** Bytes of the expanded K/V temporaries of the naive path for T cached tokens. */
export function mlaNaiveTempBytes(d: MlaDims, T: number, format: KvFormat = 'f32'): number {
  const unpacked = format === 'f16' ? 4 * T * (d.kvLora + d.qkRope) : 0;
  return 4 * T * d.heads * (2 * d.qkNope + d.vHead + d.qkRope) + unpacked;
}

const NAIVE_DEFAULT_MAX_BYTES = 64 << 20;

function check(a: MlaAttentionArgs) {
  const d = a.dims;
  for (const k of ['heads', 'qkNope', 'qkRope', 'vHead', 'kvLora'] as const) {
    if (!Number.isInteger(d[k]) || d[k] < 1) throw new ShapeError(`mlaAttention: dims.${k} must be a positive integer, got ${d[k]}`);
  }
  if (!Number.isInteger(a.S) || a.S < 0 || !Number.isInteger(a.past) || a.past < 0) throw new ShapeError(`mlaAttention: S ${a.S} and past ${a.past} must be non-negative integers`);
  if (a.cache.kvLoraRank !== d.kvLora || a.cache.ropeDim !== d.qkRope) {
    throw new ShapeError(`mlaAttention: cache rows are [${a.cache.kvLoraRank} | ${a.cache.ropeDim}], dims say [${d.kvLora} | ${d.qkRope}]`);
  }
  if (!a.kvA && !(a.latent && a.kPe)) throw new ShapeError('mlaAttention: give kvA, or both latent and kPe');
}

type MlaParamValues = Partial<Record<keyof typeof MLA_PARAMS.fields, number>>;
const packParams = (p: MlaParamValues) => MLA_PARAMS.pack({
  S: 0, H: 0, nope: 0, rope: 0, dv: 0, kv_lora: 0, q_stride: 0, q_offset: 0, o_stride: 0, o_offset: 0, c_stride: 0, c_offset: 0,
  T: 0, past: 0, scale: 0, splits: 1, past_from_buf: 0, row_tiles: 1, _p0: 0, _p1: 0, ...p,
});

function mlaDispatch(gpu: Gpu, rec: Recorder, entryPoint: string, n: number, bindings: (Binding | null)[], p: Partial<Record<keyof typeof MLA_PARAMS.fields, number>>, d: MlaDims, S: number) {
  const WG = Math.min(64, gpu.caps.maxComputeInvocationsPerWorkgroup);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'mla', code: specialise(code, { subgroups: subgroupChoice(false), kv: 'f32' }), entryPoint, constants: { WG } }),
    bindings,
    uniforms: packParams({ S, H: d.heads, nope: d.qkNope, rope: d.qkRope, dv: d.vHead, kv_lora: d.kvLora, ...p }),
    workgroups: ceilDiv(n, WG),
    label: `mla.${entryPoint}`,
  });
}

/**
 * One MLA attention block for S new tokens at positions [past, past+S): writes their latent cache rows
 * ([RMSNorm(c_KV) | k_pe] at rows past.. of layer `layer`), then attends over the cached [0, past+S).
 *  - absorb: q̃ = [W_UKᵀ q_nope | q_pe] per head, MQA (1 KV head, K = cache row of kvLora+rope, V = its
 *    latent part, all heads of a token share each loaded tile, split-K for decode), o = W_UV·o_lat.
 *  - naive: K/V expanded from the latent cache for every cached token (tiled matmul with kv_b), then
 *    standard MHA with d_qk = nope+rope, d_v = v.
 * Either way the cache left behind is the latent cache. Temporaries come from gpu.temps: call
 * gpu.temps.releaseAll() after the recorder's submit.
 */
export function mlaAttention(gpu: Gpu, rec: Recorder, a: MlaAttentionArgs): void {
  check(a);
  if (!a.S) return;
  const d = a.dims;
  const { heads: H, qkNope: nope, qkRope: rope, vHead: dv, kvLora: r } = d;
  const cache = a.cache;
  const { kv, rowFloats, format = 'f32' } = cache.layer(a.layer);
  const T = a.past + a.S;

  // 1. The new rows of the latent cache.
  if (a.kvA) {
    const st = a.kvAStride ?? r + rope, off = a.kvAOffset ?? 0;
    kvWrite(gpu, rec, { dst: kv, capacity: cache.capacity, dstStride: rowFloats, rows: a.S, past: a.past, pastFromBuffer: a.pastFromBuffer, a: a.kvA, colsA: r + rope, aStride: st, aOffset: off, format });
  } else {
    kvWrite(gpu, rec, {
      dst: kv, capacity: cache.capacity, dstStride: rowFloats, rows: a.S, past: a.past, pastFromBuffer: a.pastFromBuffer,
      a: a.latent!, colsA: r, aStride: a.latentStride ?? r, aOffset: a.latentOffset ?? 0,
      b: a.kPe!, colsB: rope, bStride: a.kPeStride ?? rope, bOffset: a.kPeOffset ?? 0, format,
    });
  }

  const qStride = a.qStride ?? H * (nope + rope), qOffset = a.qOffset ?? 0;
  const oStride = a.outStride ?? H * dv, oOffset = a.outOffset ?? 0;
  const mode = a.mode ?? (a.S <= 8 || a.pastFromBuffer || mlaNaiveTempBytes(d, T) > NAIVE_DEFAULT_MAX_BYTES ? 'absorb' : 'naive');

  if (mode === 'absorb') {
    // 2. q̃ [S, H, kvLora+rope].
    const qa = gpu.temps.acquire(a.S * H * (r + rope) * 4);
    mlaDispatch(gpu, rec, 'absorb_q', a.S * H * (r + rope), [a.q, a.kvB, qa], { q_stride: qStride, q_offset: qOffset }, d, a.S);
    // 3. MQA over the latent cache: K = rows (kvLora+rope), V = their first kvLora values.
    const oLat = gpu.temps.acquire(a.S * H * r * 4);
    const attn: AttentionArgs = { // (prefill)
      q: qa, k: kv, v: kv, out: oLat, S: a.S, T, past: a.past, heads: H, kvHeads: 1, dQk: r + rope, dV: r,
      scale: a.scale, causal: true, kStride: rowFloats, vStride: rowFloats, kv: format,
      pastFromBuffer: a.pastFromBuffer, maxT: cache.capacity, splits: a.splits,
    };
    // Up to 8 rows (decode, speculative verify): mla_decode stages each latent row once for all
    // (query, head) rows of its tile; longer prefills use the FlashAttention tiles.
    if (a.S <= MLA_DECODE_MAX_S) {
      mlaDecode(gpu, rec, {
        H, kvLora: r, rope, S: a.S, past: a.past, qa, cache: kv, rowStride: rowFloats, format, out: oLat,
        scale: a.scale, pastFromBuffer: a.pastFromBuffer, maxT: cache.capacity, splits: a.splits,
      });
    } else {
      flashAttention(gpu, rec, attn);
    }
    // 4. o_h = W_UV,h · o_lat,h: one GEMV dispatch for all heads (decode), or the tiled matmul per head
    //    (prefill) when W_UV,h can be bound at its offset.
    const kvBBuf = (a.kvB as GPUBufferBinding).buffer ?? (a.kvB as GPUBuffer);
    const kvBOff = (a.kvB as GPUBufferBinding).buffer ? (a.kvB as GPUBufferBinding).offset ?? 0 : 0;
    const wuvOffset = (h: number) => kvBOff + (h * (nope + dv) + nope) * r * 4;
    const align = gpu.caps.minStorageBufferOffsetAlignment;
    if (a.S > 4 && Array.from({ length: H }, (_, h) => wuvOffset(h) % align === 0).every(Boolean)) {
      for (let h = 0; h < H; h++) {
        matmulTiled(gpu, rec, {
          x: oLat, xStride: H * r, xOffset: h * r, w: { buffer: kvBBuf, offset: wuvOffset(h), size: dv * r * 4 },
          y: a.out, yStride: oStride, yOffset: oOffset + h * dv, M: a.S, N: dv, K: r,
        });
      }
    } else {
      // With subgroups: one subgroup per workgroup (WG = the minimum subgroup size), subgroupAdd.
      const c = gpu.caps;
      const sg = c.subgroups && c.subgroupMinSize >= 4 && c.subgroupMinSize <= c.maxComputeInvocationsPerWorkgroup;
      const WG = sg ? c.subgroupMinSize : Math.min(64, 2 ** Math.floor(Math.log2(c.maxComputeInvocationsPerWorkgroup)));
      rec.dispatch({
        pipeline: gpu.pipelines.get({ label: 'mla', code: specialise(code, { subgroups: subgroupChoice(sg), kv: 'f32' }), entryPoint: sg ? 'up_v_subgroup' : 'up_v', constants: { WG } }),
        bindings: [oLat, a.kvB, a.out],
        uniforms: packParams({ S: a.S, H, nope, rope, dv, kv_lora: r, o_stride: oStride, o_offset: oOffset }),
        workgroups: a.S * H * ceilDiv(dv, 4),
        label: 'mla.up_v',
      });
    }
    return;
  }

  if (a.pastFromBuffer) throw new UnsupportedError('mlaAttention: the naive path sizes its expanded K/V on the CPU; use mode "absorb" with pastFromBuffer');
  // An f16 cache is read as f32 rows here (the matmul takes f32 x): one unpacking pass over [0, T).
  let rows: GPUBuffer = kv, rowStride = rowFloats;
  if (format === 'f16') {
    rows = gpu.temps.acquire(T * (r + rope) * 4);
    rowStride = r + rope;
    kvUnpack(gpu, rec, { src: kv, srcStride: rowFloats, rows: T, cols: r + rope, out: rows });
  }
  // 2. [k_nope | v] per head for every cached token: kvx [T, H·(nope+v)] = latent · kv_bᵀ.
  const kvx = gpu.temps.acquire(T * H * (nope + dv) * 4);
  matmulTiled(gpu, rec, { x: rows, w: a.kvB, y: kvx, M: T, N: H * (nope + dv), K: r, xStride: rowStride, xOffset: 0 });
  // 3. K [T, H, nope+rope] = [k_nope | shared k_pe].
  const kx = gpu.temps.acquire(T * H * (nope + rope) * 4);
  mlaDispatch(gpu, rec, 'expand_k', T * H * (nope + rope), [kvx, null, kx, rows], { c_stride: rowStride, c_offset: r }, d, T);
  // 4. Standard causal MHA, V read in place from kvx.
  flashAttention(gpu, rec, {
    q: a.q, k: kx, v: kvx, out: a.out, S: a.S, T, past: a.past, heads: H, kvHeads: H, dQk: nope + rope, dV: dv,
    scale: a.scale, causal: true, qStride, qOffset, vStride: H * (nope + dv), vOffset: nope, vHeadStride: nope + dv,
    oStride, oOffset, splits: a.splits,
  });
}

/**
 * The absorbed attention core over a latent cache: S queries q̃ [S, H, kvLora+rope] (already absorbed:
 * [W_UKᵀ q_nope | q_pe] per head) at positions past .. past+S−1 against cache rows [0, past+S) of
 * [latent (kvLora) | pe (rope)], rowStride elements apart, V = the latent part; out o_lat [S, H, kvLora].
 * Causal: row (s, h) sees keys t ≤ past + s. The softmax scale is `scale` (natural-log domain).
 */
export interface MlaDecodeArgs {
  H: number;
  kvLora: number;
  rope: number;
  S: number;
  past: number;
  qa: Binding;
  cache: Binding;
  rowStride: number;
  format?: KvFormat;
  out: Binding;
  scale: number;
  /** u32 [1] with `past` on the GPU: the recorded step does not depend on the position (needs maxT). */
  pastFromBuffer?: Binding;
  /** The most cached rows there can be (the capacity): sizes the split count with pastFromBuffer. */
  maxT?: number;
  /** Key-range splits merged by a log-sum-exp pass; 'auto' (default): the occupancy model (mlaDecodePlan). */
  splits?: number | 'auto';
  /** Scratch for the split partials (mlaDecodeScratchBytes); default gpu.temps. */
  scratch?: Binding;
  /** Pins parts of the launch shape (tests and benchmarks); default: mlaDecodePlan's choice for the device. */
  tuning?: MlaDecodeTuning;
}

function checkDecode(a: MlaDecodeArgs) {
  for (const k of ['H', 'kvLora', 'rope'] as const) {
    if (!Number.isInteger(a[k]) || a[k] < 1) throw new ShapeError(`mlaDecode: ${k} must be a positive integer, got ${a[k]}`);
  }
  if (!Number.isInteger(a.S) || a.S < 0 || !Number.isInteger(a.past) || a.past < 0) throw new ShapeError(`mlaDecode: S ${a.S} and past ${a.past} must be non-negative integers`);
  if (!Number.isInteger(a.rowStride) || a.rowStride < a.kvLora + a.rope) throw new ShapeError(`mlaDecode: rowStride ${a.rowStride} is shorter than a cache row (${a.kvLora + a.rope})`);
  if ((a.format ?? 'f32') === 'f16' && a.rowStride % 2) throw new ShapeError(`mlaDecode: f16 cache rows need an even rowStride (whole u32 words), got ${a.rowStride}`);
  if (!Number.isFinite(a.scale)) throw new ShapeError('mlaDecode: scale must be finite');
  if (a.pastFromBuffer && !(a.maxT && a.maxT >= a.S)) throw new ShapeError('mlaDecode: pastFromBuffer needs maxT (the cache capacity)');
}

/** What mlaDecode would run for `a` (benchmarks, tests): the plan for T = past + S (maxT with pastFromBuffer). */
export function mlaDecodeInfo(gpu: Gpu, a: MlaDecodeArgs): MlaDecodePlan {
  checkDecode(a);
  return mlaDecodePlan(gpu, { ...a, T: a.pastFromBuffer ? a.maxT! : a.past + a.S });
}

/** The absorbed attention core (shaders/mla.wgsl `decode`, `combine`); see MlaDecodeArgs. */
export function mlaDecode(gpu: Gpu, rec: Recorder, a: MlaDecodeArgs): void {
  checkDecode(a);
  if (!a.S) return;
  if (gpu.caps.maxStorageBuffersPerStage < 5) throw new LimitExceededError('maxStorageBuffersPerShaderStage', 5, gpu.caps.maxStorageBuffersPerStage, 'mla decode');
  const T = a.pastFromBuffer ? a.maxT! : a.past + a.S;
  const p = mlaDecodePlan(gpu, { ...a, T });
  const format = a.format ?? 'f32';
  const shader = specialise(code, { subgroups: subgroupChoice(p.cfg.DSW === 1 && p.cfg.DS > 1), kv: format }, { ...p.cfg });
  let part: Binding = gpu.buffers.placeholder('mla.part');
  if (p.splits > 1) {
    const bytes = mlaDecodeScratchBytes(a, p.splits);
    if (bytes > gpu.caps.maxStorageBufferBindingSize) throw new LimitExceededError('maxStorageBufferBindingSize', bytes, gpu.caps.maxStorageBufferBindingSize, 'mla decode split partials');
    part = a.scratch ?? gpu.temps.acquire(bytes);
  }
  const uniforms = packParams({
    S: a.S, H: a.H, rope: a.rope, kv_lora: a.kvLora, c_stride: a.rowStride, T: a.past + a.S, past: a.past,
    scale: a.scale * Math.LOG2E, splits: p.splits, past_from_buf: a.pastFromBuffer ? 1 : 0, row_tiles: p.rowTiles,
  });
  const WG = Math.min(64, gpu.caps.maxComputeInvocationsPerWorkgroup);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'mla', code: shader, entryPoint: 'decode', constants: { WG } }),
    bindings: [a.qa, null, a.out, a.cache, a.pastFromBuffer ?? gpu.buffers.placeholder('mla.past'), part],
    uniforms,
    workgroups: p.workgroups,
    label: p.label,
  });
  if (p.splits > 1) {
    rec.dispatch({
      pipeline: gpu.pipelines.get({ label: 'mla', code: shader, entryPoint: 'combine', constants: { WG } }),
      bindings: [null, null, a.out, null, null, part],
      uniforms,
      workgroups: ceilDiv(a.S * a.H * a.kvLora, WG),
      label: 'mla_decode.combine',
    });
  }
}
