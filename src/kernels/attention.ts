import flashCode from '../../shaders/flash_attention.wgsl?raw';
import { allMultiplesOf4, loadWidth, specialise } from './shader-source';
import naiveCode from '../../shaders/attention_naive.wgsl?raw';
import kvCode from '../../shaders/kv_cache.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import { ContextLengthError, LimitExceededError, ShapeError, UnsupportedError } from '../errors';
import { attentionScratchBytes, autoSplits, blocksConfig, kvElementBytes, kvRowStride, rowsConfig, rowsSplits, type KvFormat } from './attention-plan';

export { attentionScratchBytes, blocksConfig, blocksSharedBytes, kvElementBytes, kvRowStride, rowsConfig, rowsSharedBytes, type BlocksConfig, type AttentionDevice, type KvFormat, type RowsConfig } from './attention-plan';

/**
 * Scaled dot-product attention on the GPU (shaders/flash_attention.wgsl).
 *  - flashAttention: tiled, online softmax, S×T never materialised, fully masked key blocks skipped,
 *    GQA/MQA (all heads of a KV group share each staged key block), d_qk ≠ d_v, optional split-K.
 *  - attentionDecode: the same for a few query rows, split-K over the cache sized by an occupancy model
 *    and a log-sum-exp combine pass, so a long cache spreads over the whole device.
 *    Both run `flash_blocks` (8–32 rows of a kv head per workgroup, blocks of keys, Q / scores / O in
 *    workgroup memory, 8×8 register tiles, masks only on diagonal blocks) when it fits the workgroup
 *    memory, else `flash_rows` (up to 16 rows, each key row staged once: absorbed MLA's 576/512), else
 *    `main` (the older tiled kernel). docs/attention.md.
 *  - naiveAttention: scores materialised in global memory (test oracle, benchmark baseline).
 *  - mhaAttention: standard MHA/GQA with an MhaKvCache (writes the new rows, then attends).
 * Layout: see AttentionArgs (rows of q/k/v/out with strides, offsets and head strides in elements).
 */
export const ATTENTION_PARAMS = defineUniforms({
  S: 'u32', T: 'u32', past: 'u32', heads: 'u32',
  kv_heads: 'u32', d_qk: 'u32', d_v: 'u32', scale: 'f32',
  causal: 'u32', splits: 'u32', past_from_buf: 'u32', row_tiles: 'u32',
  q_stride: 'u32', q_offset: 'u32', q_hstride: 'u32', k_stride: 'u32',
  k_offset: 'u32', k_hstride: 'u32', v_stride: 'u32', v_offset: 'u32',
  v_hstride: 'u32', o_stride: 'u32', o_offset: 'u32', o_hstride: 'u32',
  window: 'u32', has_sinks: 'u32', _p0: 'u32', _p1: 'u32',
});

export const KV_PARAMS = defineUniforms({
  rows: 'u32', cols_a: 'u32', cols_b: 'u32', a_stride: 'u32',
  a_offset: 'u32', b_stride: 'u32', b_offset: 'u32', dst_stride: 'u32',
  dst_offset: 'u32', past: 'u32', past_from_buf: 'u32', capacity: 'u32',
});

/**
 * One attention call's shape (elements; every stride/offset optional, defaults = dense rows):
 * q [S, qStride], k [T, kStride], v [T, vStride] with head h of query s at s·qStride + qOffset + h·qHeadStride
 * (likewise k and v with kv head g = ⌊h / (heads/kvHeads)⌋), out [S, heads·dV]. Causal: key t is visible
 * to query s iff t ≤ past + s. The CPU reference is attention.ref.ts.
 */
export interface AttentionShape {
  S: number;
  T: number;
  past: number;
  heads: number;
  kvHeads: number;
  dQk: number;
  dV: number;
  scale: number;
  causal: boolean;
  qStride?: number; qOffset?: number; qHeadStride?: number;
  kStride?: number; kOffset?: number; kHeadStride?: number;
  vStride?: number; vOffset?: number; vHeadStride?: number;
  /** Element format of k and v (default 'f32'; 'f16': packed pairs, see KvFormat). */
  kv?: KvFormat;
  /**
   * Sliding window W (causal only; 0 or absent: none): key t is visible to query s iff
   * past + s − W < t ≤ past + s (HF `kv_idx > q_idx − sliding_window`; GPT-OSS: W = 128 on every
   * other layer). Key blocks before a row tile's window are never read.
   */
  window?: number;
}

/** Shapes as in AttentionShape: S queries at positions past .. past+S−1, T keys (with causal: past + S; ignored
 * with pastFromBuffer), head h uses kv head ⌊h / (heads/kvHeads)⌋, key t visible to query s iff t ≤ past + s. */
export interface AttentionArgs extends AttentionShape {
  /** [S, qStride]: head h of query s at s·qStride + qOffset + h·qHeadStride (dQk values). */
  q: Binding;
  /** [T, kStride]: kv head g of key t at t·kStride + kOffset + g·kHeadStride (dQk values). */
  k: Binding;
  /** [T, vStride]: kv head g of key t at t·vStride + vOffset + g·vHeadStride (dV values). May be k's buffer. */
  v: Binding;
  /** [S, oStride]: head h of query s at s·oStride + oOffset + h·oHeadStride (dV values). */
  out: Binding;
  oStride?: number; oOffset?: number; oHeadStride?: number;
  /** Key-range splits merged by an LSE combine pass; 'auto' (default) splits when few workgroups would run. */
  splits?: number | 'auto';
  /** u32 [1] holding `past` on the GPU (T = past + S): the recorded work does not depend on the position. */
  pastFromBuffer?: Binding;
  /** With pastFromBuffer: the most keys there can be (the cache capacity), to size the split count. */
  maxT?: number;
  /** Scratch for split partials (attentionScratchBytes); default: gpu.temps (released by the caller after submit). */
  scratch?: Binding;
  /**
   * Which kernel (default: the first that fits the workgroup memory of 'blocks', 'rows', 'tiled'):
   * 'blocks': flash_blocks; 'rows': flash_rows (what main ran before flash_blocks: tests, benchmarks,
   * and the kernel for wide heads such as absorbed MLA's 576/512); 'tiled': `main`.
   */
  kernel?: 'blocks' | 'rows' | 'tiled';
  /**
   * f32 [heads] attention sinks (GPT-OSS `self.sinks`): head h's learned logit joins the softmax
   * denominator as exp(sink_h − max) and contributes no value (unscaled, natural-log domain). Added once
   * per row whatever the split count.
   */
  sinks?: Binding;
}

/** Tile configuration: the `consts` flash_attention.wgsl is specialised with. */
export interface FlashConfig { BQ: number; BK: number; DC: number; TR: number; TK: number; OR: number; OC: number; NVC: number }

const WG = 64;

/** Workgroup bytes a configuration needs (Qs, K/V tile with rows padded by one vec4, scores, row stats, past). */
export const flashSharedBytes = (c: FlashConfig) => 4 * (c.BQ * c.DC + c.BK * (c.DC + 4) + c.BQ * c.BK + 2 * c.BQ + 1);

/**
 * Picks the tile shape: 16 rows per workgroup for prefill (4 for ≤ 4 rows, e.g. MHA decode), the head
 * dim chunk from the head dims, the key tile from what fits in maxComputeWorkgroupStorageSize.
 */
export function flashConfig(gpu: Gpu, rows: number, dQk: number, dV: number): FlashConfig {
  const BQ = rows <= 4 ? 4 : 16;
  const TR = BQ === 16 ? 2 : 1;
  const OR = BQ / 4;
  const dmax = Math.max(dQk, dV);
  let DC = dmax <= 16 ? 16 : dmax <= 32 ? 32 : 64;
  let BK = BQ === 4 ? 64 : 32;
  const minBK = 64 / (BQ / TR);
  const cap = gpu.caps.maxComputeWorkgroupStorageSize;
  const cfg = () => ({ BQ, BK, DC, TR, TK: (BK * (BQ / TR)) / WG, OR, OC: DC / 16, NVC: Math.ceil(dV / DC) });
  while (flashSharedBytes(cfg()) > cap) {
    if (BK > Math.max(minBK, 16) && BK >= DC) BK /= 2;
    else if (DC > 16) DC /= 2;
    else if (BK > minBK) BK /= 2;
    else throw new LimitExceededError('maxComputeWorkgroupStorageSize', flashSharedBytes(cfg()), cap, 'flash attention');
  }
  return cfg();
}

/** Placeholders for bindings an entry point declares but a given call does not use. */
const dummy = (gpu: Gpu) => ({ past: gpu.buffers.placeholder('attention.past'), part: gpu.buffers.placeholder('attention.part'), sinks: gpu.buffers.placeholder('attention.sinks') });

const isCount = (x: number) => Number.isInteger(x) && x >= 0;

function validate(a: AttentionArgs, what: string) {
  for (const k of ['S', 'T', 'past', 'heads', 'kvHeads', 'dQk', 'dV'] as const) {
    if (!isCount(a[k])) throw new ShapeError(`${what}: ${k} must be a non-negative integer, got ${a[k]}`);
  }
  if (a.heads < 1 || a.kvHeads < 1 || a.heads % a.kvHeads) throw new ShapeError(`${what}: heads ${a.heads} must be a positive multiple of kvHeads ${a.kvHeads}`);
  if (a.dQk < 1 || a.dV < 1) throw new ShapeError(`${what}: head dims must be positive (dQk ${a.dQk}, dV ${a.dV})`);
  if (!a.pastFromBuffer) {
    if (a.S && a.T < 1) throw new ShapeError(`${what}: no keys (T = 0)`);
    if (a.causal && a.past + a.S > a.T) throw new ShapeError(`${what}: causal queries at positions up to ${a.past + a.S - 1} need T ≥ past + S = ${a.past + a.S}, got ${a.T}`);
  } else if (!a.causal) {
    throw new UnsupportedError(`${what}: pastFromBuffer implies T = past + S, i.e. causal attention`);
  }
  if (!Number.isFinite(a.scale)) throw new ShapeError(`${what}: scale must be finite`);
  if (a.window !== undefined && !isCount(a.window)) throw new ShapeError(`${what}: window must be a non-negative integer (0: none), got ${a.window}`);
  if (a.window && !a.causal) throw new UnsupportedError(`${what}: a sliding window needs causal attention (window ${a.window}); pass causal: true or window 0`);
  if (a.sinks) {
    const bb = a.sinks as GPUBufferBinding;
    const have = bb.buffer ? bb.size ?? bb.buffer.size - (bb.offset ?? 0) : (a.sinks as GPUBuffer).size;
    if (have < a.heads * 4) throw new ShapeError(`${what}: sinks needs one f32 per head (${a.heads * 4} bytes), binding has ${have}`);
  }
  const L = layout(a);
  if (L.qStride < a.dQk || L.kStride < a.dQk || L.vStride < a.dV || L.oStride < a.dV) throw new ShapeError(`${what}: a row stride is shorter than its head dim`);
}

function layout(a: AttentionArgs) {
  const qHeadStride = a.qHeadStride ?? a.dQk, kHeadStride = a.kHeadStride ?? a.dQk, vHeadStride = a.vHeadStride ?? a.dV, oHeadStride = a.oHeadStride ?? a.dV;
  return {
    qStride: a.qStride ?? a.heads * qHeadStride, qOffset: a.qOffset ?? 0, qHeadStride,
    kStride: a.kStride ?? a.kvHeads * kHeadStride, kOffset: a.kOffset ?? 0, kHeadStride,
    vStride: a.vStride ?? a.kvHeads * vHeadStride, vOffset: a.vOffset ?? 0, vHeadStride,
    oStride: a.oStride ?? a.heads * oHeadStride, oOffset: a.oOffset ?? 0, oHeadStride,
  };
}

/**
 * Keys one row tile reads at most: T, or with a sliding window the window plus the rows' spread
 * (decode: W + S − 1), which bounds the bytes read per step and sizes the split count.
 */
export function keysRead(a: Pick<AttentionShape, 'S' | 'window'>, T: number): number {
  return a.window ? Math.min(T, a.window + a.S - 1) : T;
}

function pack(a: AttentionArgs, extra: { scale: number; splits: number; rowTiles: number }) {
  const L = layout(a);
  return ATTENTION_PARAMS.pack({
    S: a.S, T: a.T, past: a.past, heads: a.heads, kv_heads: a.kvHeads, d_qk: a.dQk, d_v: a.dV, scale: extra.scale,
    causal: a.causal ? 1 : 0, splits: extra.splits, past_from_buf: a.pastFromBuffer ? 1 : 0, row_tiles: extra.rowTiles,
    q_stride: L.qStride, q_offset: L.qOffset, q_hstride: L.qHeadStride,
    k_stride: L.kStride, k_offset: L.kOffset, k_hstride: L.kHeadStride,
    v_stride: L.vStride, v_offset: L.vOffset, v_hstride: L.vHeadStride,
    o_stride: L.oStride, o_offset: L.oOffset, o_hstride: L.oHeadStride,
    window: a.window ?? 0, has_sinks: a.sinks ? 1 : 0, _p0: 0, _p1: 0,
  });
}

/** V is the first dV values of each K row (the same buffer, rows and offsets: the absorbed-MLA latent cache). */
function sharesRows(a: AttentionArgs): boolean {
  const L = layout(a);
  return a.k === a.v && a.dV <= a.dQk && L.kStride === L.vStride && L.kOffset === L.vOffset && (a.kvHeads === 1 || L.kHeadStride === L.vHeadStride);
}

/** How one attention call runs: the kernel, its launch shape and split count. */
interface Plan {
  kernel: 'main' | 'flash_rows' | 'flash_blocks';
  consts: Record<string, number>;
  /** flash_rows: vec4 views of q/k/v (every head dim, stride and offset a multiple of 4). */
  vec4: boolean;
  rowTiles: number;
  workgroups: number;
  splits: number;
  label: string;
}

function plan(gpu: Gpu, a: AttentionArgs, what: string): Plan {
  const gs = a.heads / a.kvHeads;
  if (a.pastFromBuffer && !(a.maxT && a.maxT >= a.S)) throw new ShapeError(`${what}: pastFromBuffer needs maxT (the cache capacity)`);
  const T = keysRead(a, a.pastFromBuffer ? a.maxT ?? 0 : a.T);
  const s = a.splits ?? 'auto';
  const cfg = flashConfig(gpu, a.S * gs, a.dQk, a.dV);
  const L0 = layout(a);
  const vec4ok = allMultiplesOf4(a.dQk, a.dV, L0.qStride, L0.qOffset, L0.qHeadStride, L0.kStride, L0.kOffset, L0.kHeadStride, L0.vStride, L0.vOffset, L0.vHeadStride);
  const bc = a.kernel === undefined || a.kernel === 'blocks' ? blocksConfig(gpu, a.S * gs, a.dQk, a.dV) : null;
  if (bc) {
    const rowTiles = ceilDiv(a.S * gs, bc.FR);
    const base = a.kvHeads * rowTiles;
    const splits = s === 'auto' ? rowsSplits(gpu, base, T, bc.FBK) : Math.max(1, Math.min(Math.floor(s), Math.max(1, Math.ceil(T / bc.FBK))));
    return { kernel: 'flash_blocks', consts: { ...cfg, ...bc }, vec4: vec4ok, rowTiles, workgroups: base * splits, splits, label: `${what}(blocks,rows${bc.FR},keys${bc.FBK},wg${bc.FWG},${vec4ok ? 'vec4' : 'scalar'},${a.kv ?? 'f32'},splits${splits})` };
  }
  const rc = a.kernel !== 'tiled' ? rowsConfig(gpu, a.S * gs, a.dQk, a.dV, sharesRows(a)) : null;
  if (rc) {
    const rowTiles = ceilDiv(a.S * gs, rc.DR);
    const base = a.kvHeads * rowTiles;
    const splits = s === 'auto' ? rowsSplits(gpu, base, T, rc.DBK) : Math.max(1, Math.min(Math.floor(s), Math.max(1, Math.ceil(T / rc.DBK))));
    const L = layout(a);
    const vec4 = allMultiplesOf4(a.dQk, a.dV, L.qStride, L.qOffset, L.qHeadStride, L.kStride, L.kOffset, L.kHeadStride, L.vStride, L.vOffset, L.vHeadStride);
    return { kernel: 'flash_rows', consts: { ...cfg, ...rc }, vec4, rowTiles, workgroups: base * splits, splits, label: `${what}(rows${rc.DR},keys${rc.DBK},${rc.DVS4 ? 'K|V' : 'shared rows'},${vec4 ? 'vec4' : 'scalar'},${a.kv ?? 'f32'},splits${splits})` };
  }
  const rowTiles = ceilDiv(a.S * gs, cfg.BQ);
  const base = a.kvHeads * rowTiles;
  const splits = s === 'auto' ? autoSplits(base, T, cfg.BK) : Math.max(1, Math.min(Math.floor(s), Math.max(1, Math.ceil(T / cfg.BK))));
  return { kernel: 'main', consts: { ...cfg }, vec4: false, rowTiles, workgroups: base * splits, splits, label: `${what}(BQ${cfg.BQ},BK${cfg.BK},DC${cfg.DC},${a.kv ?? 'f32'},splits${splits})` };
}

/**
 * What attentionDecode (or flashAttention, `mode` 'prefill') would run for `a` (benchmarks, tests): the
 * kernel and its label, the split count 'auto' resolves to, and the bytes of K/V it reads from global
 * memory per call with every row seeing all T keys (as in decode; a causal prefill reads less).
 * flash_blocks reads each key's K and V once per 8 rows of a tile (decode: once per kv head); flash_rows
 * stages each key row once per row tile: T·kvHeads·(dQk + dV)·4 bytes per tile, T·dQk·4 when V is the
 * first dV values of the K row (absorbed MLA); `main` loads K and V chunks apart.
 */
export function attentionDecodeInfo(gpu: Gpu, a: AttentionArgs, mode: 'decode' | 'prefill' = 'decode'): { kernel: string; label: string; splits: number; workgroups: number; cacheReadBytes: number } {
  validate(a, mode === 'decode' ? 'attentionDecode' : 'flashAttention');
  const p = plan(gpu, a, mode === 'decode' ? 'attention_decode' : 'flash_attention');
  const T = keysRead(a, a.pastFromBuffer ? a.maxT ?? 0 : a.T);
  // flash_blocks loads each key's K and V rows once per 8 rows of a tile (its units are 8 rows wide).
  const perKey = p.kernel === 'flash_blocks' ? (p.consts.FR / 8) * (a.dQk + a.dV) : p.kernel === 'flash_rows' && sharesRows(a) ? a.dQk : a.dQk + a.dV;
  return { kernel: p.kernel, label: p.label, splits: p.splits, workgroups: p.workgroups, cacheReadBytes: kvElementBytes(a.kv ?? 'f32') * T * a.kvHeads * p.rowTiles * perKey };
}

function run(gpu: Gpu, rec: Recorder, a: AttentionArgs, what: string) {
  if (gpu.caps.maxStorageBuffersPerStage < 7) throw new LimitExceededError('maxStorageBuffersPerShaderStage', 7, gpu.caps.maxStorageBuffersPerStage, what);
  if (gpu.caps.maxComputeInvocationsPerWorkgroup < WG) throw new LimitExceededError('maxComputeInvocationsPerWorkgroup', WG, gpu.caps.maxComputeInvocationsPerWorkgroup, what);
  const p = plan(gpu, a, what);
  const splits = p.splits;
  const code = specialise(flashCode, { load: loadWidth(true), dload: loadWidth(p.vec4), kv: a.kv ?? 'f32' }, p.consts);
  const d = dummy(gpu);
  const uniforms = pack(a, { scale: a.scale * Math.LOG2E, splits, rowTiles: p.rowTiles });
  let part: Binding = d.part;
  if (splits > 1) {
    const bytes = attentionScratchBytes(a, splits);
    if (bytes > gpu.caps.maxStorageBufferBindingSize) throw new LimitExceededError('maxStorageBufferBindingSize', bytes, gpu.caps.maxStorageBufferBindingSize, `${what} split partials`);
    part = a.scratch ?? gpu.temps.acquire(bytes);
  }
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'flash_attention', code, entryPoint: p.kernel }),
    bindings: [a.q, a.k, a.v, a.out, part, a.pastFromBuffer ?? d.past, a.sinks ?? d.sinks],
    uniforms,
    workgroups: p.workgroups,
    label: p.label,
  });
  if (splits > 1) {
    rec.dispatch({
      pipeline: gpu.pipelines.get({ label: 'flash_attention', code, entryPoint: 'combine' }),
      bindings: [null, null, null, a.out, part, null, a.sinks ?? dummy(gpu).sinks],
      uniforms,
      workgroups: ceilDiv(a.S * a.heads * a.dV, WG),
      label: `${what}.combine`,
    });
  }
}

/** Prefill attention: tiled FlashAttention with online softmax (see the module comment). */
export function flashAttention(gpu: Gpu, rec: Recorder, a: AttentionArgs): void {
  validate(a, 'flashAttention');
  if (!a.S) return;
  run(gpu, rec, a, 'flash_attention');
}

/**
 * Decode attention for one (or a few) query tokens: split-K over the keys with a log-sum-exp combine.
 * Same arguments as flashAttention; `splits` defaults to 'auto' (sized to fill the device).
 */
export function attentionDecode(gpu: Gpu, rec: Recorder, a: AttentionArgs): void {
  validate(a, 'attentionDecode');
  if (!a.S) return;
  run(gpu, rec, a, 'attention_decode');
}

/** Bytes of the materialised score matrix naiveAttention needs. */
export const naiveScoresBytes = (a: Pick<AttentionArgs, 'S' | 'T' | 'heads'>) => a.heads * a.S * a.T * 4;

/** Materialised-softmax attention (three passes over a [heads, S, T] score buffer). */
export function naiveAttention(gpu: Gpu, rec: Recorder, a: AttentionArgs & { scores?: Binding }): void {
  validate(a, 'naiveAttention');
  if (a.pastFromBuffer) throw new UnsupportedError('naiveAttention: pastFromBuffer is not supported (the score buffer is sized on the CPU)');
  if (!a.S) return;
  const bytes = naiveScoresBytes(a);
  if (bytes > gpu.caps.maxStorageBufferBindingSize) throw new LimitExceededError('maxStorageBufferBindingSize', bytes, gpu.caps.maxStorageBufferBindingSize, 'naive attention scores');
  const scores = a.scores ?? gpu.temps.acquire(bytes);
  const WGN = Math.min(256, 2 ** Math.floor(Math.log2(gpu.caps.maxComputeInvocationsPerWorkgroup)));
  const uniforms = pack(a, { scale: a.scale, splits: 0, rowTiles: 0 });
  const code = specialise(naiveCode, { kv: a.kv ?? 'f32' });
  const pipe = (entryPoint: string) => gpu.pipelines.get({ label: 'attention_naive', code, entryPoint, constants: { WG: WGN } });
  rec.dispatch({ pipeline: pipe('scores'), bindings: [a.q, a.k, null, null, scores], uniforms, workgroups: ceilDiv(a.heads * a.S * a.T, WGN), label: 'attention_naive.scores' });
  rec.dispatch({ pipeline: pipe('softmax'), bindings: [null, null, null, null, scores, null, a.sinks ?? dummy(gpu).sinks], uniforms, workgroups: a.heads * a.S, label: 'attention_naive.softmax' });
  rec.dispatch({ pipeline: pipe('pv'), bindings: [null, null, a.v, a.out, scores], uniforms, workgroups: ceilDiv(a.S * a.heads * a.dV, WGN), label: 'attention_naive.pv' });
}

export interface KvWriteArgs {
  /** [capacity, dstStride] cache rows; rows [past, past+rows) are written. */
  dst: GPUBuffer;
  capacity: number;
  dstStride: number;
  dstOffset?: number;
  rows: number;
  past: number;
  pastFromBuffer?: Binding;
  /** First colsA values of each row from a[r·aStride + aOffset ..]. */
  a: Binding; colsA: number; aStride: number; aOffset?: number;
  /** Then colsB values from b[r·bStride + bOffset ..] (optional). */
  b?: Binding; colsB?: number; bStride?: number; bOffset?: number;
  /** dst's element format (default 'f32'). f16: dstStride and dstOffset even; an odd row's last word gets a 0 high half. */
  format?: KvFormat;
}

function kvParams(w: { rows: number; colsA: number; colsB?: number; aStride?: number; aOffset?: number; bStride?: number; bOffset?: number; dstStride: number; dstOffset?: number; past: number; pastFromBuffer?: Binding; capacity: number }) {
  return KV_PARAMS.pack({
    rows: w.rows, cols_a: w.colsA, cols_b: w.colsB ?? 0, a_stride: w.aStride ?? 0, a_offset: w.aOffset ?? 0,
    b_stride: w.bStride ?? 0, b_offset: w.bOffset ?? 0, dst_stride: w.dstStride, dst_offset: w.dstOffset ?? 0,
    past: w.past, past_from_buf: w.pastFromBuffer ? 1 : 0, capacity: w.capacity,
  });
}

/** Writes new rows into a KV cache buffer (one dispatch; `past` may live on the GPU). */
export function kvWrite(gpu: Gpu, rec: Recorder, w: KvWriteArgs): void {
  const colsB = w.colsB ?? 0;
  const format = w.format ?? 'f32';
  const cols = w.colsA + colsB;
  // f16: one invocation per packed word of a row.
  const n = w.rows * (format === 'f16' ? Math.ceil(cols / 2) : cols);
  if (!n) return;
  if (format === 'f16' && ((w.dstStride | (w.dstOffset ?? 0)) & 1)) {
    throw new ShapeError(`KV cache write: an f16 cache needs an even row stride and offset (whole u32 words), got stride ${w.dstStride}, offset ${w.dstOffset ?? 0}; pad rows with kvRowStride`);
  }
  if (!w.pastFromBuffer && w.past + w.rows > w.capacity) throw new ContextLengthError(w.past + w.rows, w.capacity, 'KV cache write');
  const WGK = Math.min(256, gpu.caps.maxComputeInvocationsPerWorkgroup);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'kv_cache', code: specialise(kvCode, { kv: format }), entryPoint: 'kv_write', constants: { WG: WGK } }),
    bindings: [w.a, w.b ?? w.a, w.dst, w.pastFromBuffer ?? dummy(gpu).past],
    uniforms: kvParams({ ...w, colsB }),
    workgroups: ceilDiv(n, WGK),
    label: `kv_write(${format})`,
  });
}

/**
 * f32 copy of rows [0, rows) of an f16 cache: out[r·cols + c] = cache element r·srcStride + srcOffset + c
 * (for readers that take f32 rows, e.g. the naive MLA path's matmul with kv_b).
 */
export function kvUnpack(gpu: Gpu, rec: Recorder, u: { src: GPUBuffer; srcStride: number; srcOffset?: number; rows: number; cols: number; out: Binding }): void {
  const n = u.rows * u.cols;
  if (!n) return;
  const WGK = Math.min(256, gpu.caps.maxComputeInvocationsPerWorkgroup);
  rec.dispatch({
    pipeline: gpu.pipelines.get({ label: 'kv_cache', code: specialise(kvCode, { kv: 'f16' }), entryPoint: 'kv_unpack', constants: { WG: WGK } }),
    bindings: [null, null, u.src, null, u.out],
    uniforms: kvParams({ rows: u.rows, colsA: u.cols, dstStride: u.srcStride, dstOffset: u.srcOffset, past: 0, capacity: u.rows }),
    workgroups: ceilDiv(n, WGK),
    label: 'kv_unpack',
  });
}

export interface MhaAttentionArgs {
  /** New queries [S, qStride], per head dQk values (heads·dQk from qOffset, head stride dQk). */
  q: Binding; qStride?: number; qOffset?: number;
  /** New keys [S, kStride], kvHeads·kDim values from kOffset. */
  k: Binding; kStride?: number; kOffset?: number;
  /** New values [S, vStride], kvHeads·vDim values from vOffset. */
  v: Binding; vStride?: number; vOffset?: number;
  /** [S, oStride], heads·vDim values from oOffset. */
  out: Binding; oStride?: number; oOffset?: number;
  cache: MhaCacheBinding;
  layer: number;
  past: number;
  S: number;
  heads: number;
  scale: number;
  pastFromBuffer?: Binding;
  /** Sliding window W for this layer (AttentionShape.window; 0/absent: full causal attention). */
  window?: number;
  /** f32 [heads] attention sinks of this layer (AttentionArgs.sinks). */
  sinks?: Binding;
}

/**
 * What mhaAttention needs of a KV cache (model/kvcache.ts MhaKvCache is one): per layer K [capacity,
 * kvHeads, kDim] and V [capacity, kvHeads, vDim] buffers.
 */
export interface MhaCacheBinding {
  readonly capacity: number;
  readonly kvHeads: number;
  readonly kDim: number;
  readonly vDim: number;
  /** Element format (default 'f32'); f16 rows are kvRowStride(kvHeads·dim, 'f16') elements apart. */
  readonly format?: KvFormat;
  layer(i: number): { k: GPUBuffer; v: GPUBuffer };
}

/**
 * Standard causal MHA/GQA over a KV cache: writes the S new K/V rows at [past, past+S) of the layer's
 * cache, then attends over [0, past+S) (split-K decode for S ≤ 4, FlashAttention otherwise).
 */
export function mhaAttention(gpu: Gpu, rec: Recorder, a: MhaAttentionArgs): void {
  const c = a.cache;
  const { k, v } = c.layer(a.layer);
  const kw = c.kvHeads * c.kDim, vw = c.kvHeads * c.vDim;
  const format = c.format ?? 'f32';
  const ks = kvRowStride(kw, format), vs = kvRowStride(vw, format);
  kvWrite(gpu, rec, { dst: k, capacity: c.capacity, dstStride: ks, rows: a.S, past: a.past, pastFromBuffer: a.pastFromBuffer, a: a.k, colsA: kw, aStride: a.kStride ?? kw, aOffset: a.kOffset, format });
  kvWrite(gpu, rec, { dst: v, capacity: c.capacity, dstStride: vs, rows: a.S, past: a.past, pastFromBuffer: a.pastFromBuffer, a: a.v, colsA: vw, aStride: a.vStride ?? vw, aOffset: a.vOffset, format });
  const args: AttentionArgs = {
    q: a.q, k, v, out: a.out, S: a.S, T: a.past + a.S, past: a.past, heads: a.heads, kvHeads: c.kvHeads,
    dQk: c.kDim, dV: c.vDim, scale: a.scale, causal: true, kStride: ks, vStride: vs, kv: format,
    qStride: a.qStride, qOffset: a.qOffset, oStride: a.oStride, oOffset: a.oOffset,
    pastFromBuffer: a.pastFromBuffer, maxT: c.capacity, window: a.window, sinks: a.sinks,
  };
  if (a.S <= 4) attentionDecode(gpu, rec, args);
  else flashAttention(gpu, rec, args);
}
