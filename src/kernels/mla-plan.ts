/**
 * The launch-shape arithmetic of mla_decode (shaders/mla.wgsl `decode`, run by mla.ts mlaDecode): row
 * tile, block of cache rows, score slices, split count and partial bytes. Plain functions of the device
 * facts, without the shader, so the memory plan (model/memory-plan.ts) sizes the scratch the kernel takes.
 */
import { ArgumentError, LimitExceededError, ShapeError } from '../errors';
import { kvElementBytes, type AttentionDevice, type KvFormat } from './attention-plan';

/** mlaAttention runs mla_decode for up to this many new tokens (decode, speculative verify steps). */
export const MLA_DECODE_MAX_S = 8;

/** mla_decode's specialisation (shaders/mla.wgsl consts). */
export interface MlaDecodeConfig { DWG: number; RT: number; BK: number; SJ: number; SQ: number; DKP: number; DS: number; DSW: number; NCB: number }

/** Launch-shape choices a caller may pin (tests, benchmarks); the rest follows from the device. */
export interface MlaDecodeTuning { /** Invocations per workgroup (a power of two ≥ 16, ≥ kvLora / 32) */ DWG?: number; BK?: number; SQ?: number; subgroups?: boolean }

/** The launch: configuration, row tiles, split count, workgroups, and the cache bytes read per call. */
export interface MlaDecodePlan { cfg: MlaDecodeConfig; rowTiles: number; splits: number; workgroups: number; cacheReadBytes: number; label: string }

/** Workgroup bytes of a configuration: staged rows, partial scores, probabilities, two per-row values. */
export const mlaDecodeSharedBytes = (c: MlaDecodeConfig) => 4 * (c.BK * c.DKP + c.BK * c.RT * c.DSW + 16 * c.RT + 2 * c.RT);

/** Cache rows a split reads at least on a GPU: its partials (rows × (kvLora + 2) floats) stay ≤ ~6 % of them. */
const GPU_MIN_KEYS_PER_SPLIT = 256;
/** Workgroups that keep a GPU's memory system busy (a few per compute unit on common GPUs). */
const GPU_CONCURRENT_WORKGROUPS = 128;
/**
 * On a software adapter the workgroups of a dispatch run on the CPU's threads: a split pays its
 * partials and the combine pass and only helps when another thread is free to take it. With the bench
 * no longer spinning the JS thread during waits (src/gpu/wait.ts yieldingWait), 2 splits of 256
 * keys measured 1.5× faster than one split at a 512-row cache (docs/attention.md); below that the
 * combine pass is a larger part of the step.
 */
const SOFTWARE_MIN_KEYS_PER_SPLIT = 256;
/**
 * Score tiles of all 16 rows × 8 keys (SQ = 4, a launch shape for tests and experiments): 24 loads for
 * 128 FMAs over DS = 4 slices of d_k, one group of 4 invocations. Fewest loads per FMA, but its 128
 * score accumulators do not fit a CPU's registers: on SwiftShader it took 19 % more worker CPU time
 * than every invocation scoring a 4 × 8 tile (SQ = 1), which both device kinds now use (docs/attention.md).
 */
const SQ4_SCORE_SLICES = 4;
/** Rows (query, head) per workgroup: 4 quads of 4 rows, 8 value columns each per invocation (128 floats). */
const RT = 16;

const pow2AtLeast = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
const pow2AtMost = (n: number) => 2 ** Math.floor(Math.log2(Math.max(1, n)));

/**
 * Worker threads of a software adapter (SwiftShader runs one per CPU thread): what the host reports,
 * else 2. Node 20 has no `navigator`: there 4 (the old default) gave 4 splits on this 2-core machine,
 * each thread running two of them one after the other, for the partials and the combine pass only.
 */
export const SOFTWARE_THREADS_UNKNOWN = 2;
export function softwareThreads(): number {
  const n = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency;
  return n && n > 0 ? n : SOFTWARE_THREADS_UNKNOWN;
}

/**
 * Sizes mla_decode for a device. Rows: tiles of RT = 16 (query, head) rows, all 16 heads of a V2-Lite
 * token in one tile. Invocations: on a GPU one per 8 value columns (64 for 512 latent values, at least
 * 16), so each holds 4 quads × 8 vec4 = 128 accumulators in registers; on a software adapter one per
 * 16 columns (32 for 512), each holding 2 blocks of 8 columns. Block of cache rows: the largest of 16,
 * 8, 4 whose staging fits maxComputeWorkgroupStorageSize (8 for 576-wide rows in 32 KiB, 4 in the
 * 16 KiB baseline). Split count: the occupancy model — enough workgroups for the device to run side by
 * side (~128 on a GPU, the CPU threads on a software adapter), no split shorter than
 * GPU_MIN_KEYS_PER_SPLIT / SOFTWARE_MIN_KEYS_PER_SPLIT keys.
 */
export function mlaDecodePlan(
  dev: AttentionDevice & { caps: { maxComputeInvocationsPerWorkgroup?: number; subgroups?: boolean; subgroupMinSize?: number } },
  a: { H: number; kvLora: number; rope: number; S: number; T: number; format?: KvFormat; splits?: number | 'auto'; tuning?: MlaDecodeTuning },
): MlaDecodePlan {
  const fallback = dev.adapter.isFallbackAdapter;
  const tune = a.tuning ?? {};
  const maxWg = dev.caps.maxComputeInvocationsPerWorkgroup ?? 256;
  // GPUs: one invocation per 8 value columns (NCB = 1: 128 accumulators in registers). A software
  // adapter (SwiftShader: 4 invocations a SIMD group, the workgroup's groups switched at every
  // barrier on one CPU thread): 32 invocations holding 2 blocks of 8 columns each. At a V2-Lite decode
  // over 8192 rows 16 invocations (4 blocks each) took 16 % more worker CPU time, 64 (1 block) 21 %
  // more, 128 2.2× (tools/mla-decode-cpu.mjs, docs/attention.md).
  const DWG = tune.DWG ?? Math.max(16, pow2AtLeast(Math.ceil(a.kvLora / (8 * (fallback ? 2 : 1)))));
  const NCB = Math.ceil(a.kvLora / (8 * DWG));
  if (!Number.isInteger(Math.log2(DWG)) || DWG < 16 || NCB > 4) throw new ArgumentError(`mla decode: tuning.DWG ${DWG} must be a power of two ≥ 16 with 8·DWG·4 ≥ kvLora ${a.kvLora} (each invocation holds at most 4 blocks of 8 value columns)`);
  if (DWG > maxWg) throw new LimitExceededError('maxComputeInvocationsPerWorkgroup', DWG, maxWg, `mla decode (one invocation per 8 of ${a.kvLora} latent values)`);
  const dk = a.kvLora + a.rope, M = a.S * a.H;
  let cfg: MlaDecodeConfig | null = null;
  for (const BK of tune.BK ? [tune.BK] : [16, 8, 4]) {
    const SJ = BK >= 8 ? 8 : 4;
    const SQ = tune.SQ ?? 1;
    const DS = SQ === 4 ? SQ4_SCORE_SLICES : DWG / ((RT / 4) * (BK / SJ));
    if (!Number.isInteger(DS) || DS < 1) continue;
    // Subgroups sum the slices of a tile when they fit in one (DS ≤ the smallest subgroup).
    const sg = (tune.subgroups ?? true) && !!dev.caps.subgroups && DS <= (dev.caps.subgroupMinSize ?? 0);
    const c = { DWG, RT, BK, SJ, SQ, DKP: Math.ceil(dk / DS) * DS, DS, DSW: sg ? 1 : DS, NCB };
    if (mlaDecodeSharedBytes(c) <= dev.caps.maxComputeWorkgroupStorageSize) { cfg = c; break; }
  }
  if (!cfg) {
    const c = { DWG, RT, BK: 4, SJ: 4, SQ: 1, DKP: dk, DS: DWG / 4, DSW: 1, NCB };
    throw new LimitExceededError('maxComputeWorkgroupStorageSize', mlaDecodeSharedBytes(c), dev.caps.maxComputeWorkgroupStorageSize, `mla decode (${dk}-wide cache rows)`);
  }
  const rowTiles = Math.ceil(M / cfg.RT);
  const s = a.splits ?? 'auto';
  let splits: number;
  const maxSplits = Math.max(1, Math.ceil(a.T / cfg.BK));
  if (s === 'auto') {
    const concurrent = fallback ? softwareThreads() : GPU_CONCURRENT_WORKGROUPS;
    const minKeys = fallback ? SOFTWARE_MIN_KEYS_PER_SPLIT : GPU_MIN_KEYS_PER_SPLIT;
    splits = rowTiles >= concurrent ? 1 : Math.max(1, Math.min(Math.ceil(concurrent / rowTiles), Math.floor(a.T / minKeys)));
  } else {
    if (!Number.isInteger(s) || s < 1) throw new ShapeError(`mlaDecode: splits must be a positive integer or 'auto', got ${s}`);
    splits = Math.min(s, maxSplits);
  }
  const cacheReadBytes = rowTiles * a.T * dk * kvElementBytes(a.format ?? 'f32');
  return {
    cfg, rowTiles, splits, workgroups: rowTiles * splits, cacheReadBytes,
    label: `mla_decode(wg${cfg.DWG},keys${cfg.BK},score rows${4 * cfg.SQ}×${cfg.DS} slices${cfg.DSW === 1 && cfg.DS > 1 ? ' (subgroups)' : ''},${a.format ?? 'f32'},splits${splits})`,
  };
}

/** Scratch bytes of `splits` partials: per split and row kvLora values, max and sum. */
export const mlaDecodeScratchBytes = (a: { S: number; H: number; kvLora: number }, splits: number) => (splits > 1 ? splits * a.S * a.H * (a.kvLora + 2) * 4 : 0);

