/**
 * The launch-shape arithmetic of the attention kernels (attention.ts): flash_rows' key-block size and
 * split count, the tiled kernel's split count, and the split partials' bytes. Plain functions of the
 * device facts, without the shaders, so the memory plan (model/memory-plan.ts) sizes the same scratch
 * the kernels allocate.
 */

/**
 * Element format of a KV cache (and of the k/v bindings attention reads): 'f32', or 'f16' = IEEE
 * half pairs packed in u32 words (element i = half i % 2 of word i / 2, low half first), written with
 * pack2x16float and read with unpack2x16float so no `shader-f16` feature is needed. Strides and offsets
 * stay in elements for both.
 */
export type KvFormat = 'f32' | 'f16';

/** Bytes per cached element. */
export const kvElementBytes = (f: KvFormat) => (f === 'f16' ? 2 : 4);

/** A cache row stride (elements) for `width` values: f16 rows are padded to whole words. */
export const kvRowStride = (width: number, f: KvFormat) => (f === 'f16' ? width + (width % 2) : width);

/** flash_rows' invocations per workgroup on a GPU (16 on a software adapter: rowsConfig). */
export const ROWS_WG = 64;

/** Split count: enough workgroups to fill a GPU (~256) without splits shorter than 4 key tiles. */
export function autoSplits(baseWorkgroups: number, T: number, BK: number): number {
  if (baseWorkgroups >= 128) return 1;
  return Math.max(1, Math.min(Math.ceil(256 / baseWorkgroups), Math.floor(T / (4 * BK))));
}

/** Scratch bytes for `splits` partials of an attention call. */
export function attentionScratchBytes(a: { S: number; heads: number; dV: number }, splits: number): number {
  return splits > 1 ? splits * a.S * a.heads * (a.dV + 2) * 4 : 0;
}

/**
 * flash_rows' specialisation (flash_attention.wgsl consts): DR rows of a kv head per workgroup, blocks
 * of DBK keys staged [K | V] in workgroup memory as vec4s (V read from the K row when `sharedRows`), DNU
 * output units of 4 rows × 4 columns per invocation.
 */
export interface RowsConfig { DR: number; DBK: number; DQ4: number; DV4: number; DKW4: number; DVS4: number; DWG: number; DNU: number }

const pow2AtLeast = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/** Workgroup bytes flash_rows needs (staged rows, partial score tiles, scores, probabilities, alpha, l, past). */
export const rowsSharedBytes = (c: RowsConfig) => 16 * (c.DBK * c.DKW4 + c.DWG * 4 + c.DR * c.DBK / 4 + c.DBK * c.DR / 4) + 4 * (2 * c.DR + 1);

/** Largest staging block (4 … 32 keys) that fits maxComputeWorkgroupStorageSize; null when not even 4 key rows fit. */
/** The device facts flash_rows' shape and split count depend on (a Gpu, or what a memory plan knows of one). */
export interface AttentionDevice { adapter: { isFallbackAdapter: boolean }; caps: { maxComputeWorkgroupStorageSize: number } }

export function rowsConfig(gpu: AttentionDevice, rows: number, dQk: number, dV: number, sharedRows: boolean): RowsConfig | null {
  const DR = Math.min(16, Math.max(4, pow2AtLeast(rows)));
  const DQ4 = Math.ceil(dQk / 4), DV4 = Math.ceil(dV / 4);
  // A software adapter runs a workgroup's invocations 4 at a time on one thread and switches between
  // all of them at every barrier: 16 invocations there (measured faster), 64 on GPUs.
  const DWG = gpu.adapter.isFallbackAdapter ? 16 : ROWS_WG;
  const make = (DBK: number): RowsConfig => ({
    DR, DBK, DQ4, DV4, DKW4: sharedRows ? DQ4 : DQ4 + DV4, DVS4: sharedRows ? 0 : DQ4, DWG, DNU: Math.ceil((DR / 4) * Math.ceil(DV4 / 4) / (DWG / 4)),
  });
  for (let DBK = 32; DBK >= 4; DBK /= 2) {
    if ((DR / 4) * (DBK / 4) > DWG) continue;
    if (rowsSharedBytes(make(DBK)) <= gpu.caps.maxComputeWorkgroupStorageSize) return make(DBK);
  }
  return null;
}

/**
 * flash_blocks' specialisation (flash_attention.wgsl consts): FR rows of a kv head per workgroup, blocks
 * of FBK keys, FWG invocations; DQ4 / DV4 = vec4s of d_qk / d_v.
 */
export interface BlocksConfig { FR: number; FBK: number; FWG: number; DQ4: number; DV4: number }

/** Workgroup bytes flash_blocks needs: Q, the block's scores and probabilities, O, alpha, l, past. */
export const blocksSharedBytes = (c: BlocksConfig) =>
  16 * (c.FR * c.DQ4 + 2 * c.FR * (c.FBK / 4) + c.FR * 2 * Math.ceil(c.DV4 / 2)) + 4 * (2 * c.FR + 1);

/**
 * flash_blocks' shape: rows per tile 8, 16 or 32 (the rows rounded up, at most 32), keys per block
 * 32 … 8, the largest pair whose Q, scores and O fit maxComputeWorkgroupStorageSize; null when not
 * even 8 rows × 8 keys fit (wide heads such as 576/512: flash_rows then).
 */
export function blocksConfig(gpu: AttentionDevice, rows: number, dQk: number, dV: number): BlocksConfig | null {
  const DQ4 = Math.ceil(dQk / 4), DV4 = Math.ceil(dV / 4);
  // A software adapter runs a workgroup's invocations 4 at a time on one CPU thread and switches
  // between all of them at every barrier: 16 invocations there, 32 on GPUs. 16 rows per tile on the
  // software adapter (32 measured no faster: each K row is then loaded by 4 score units instead of 2).
  const fallback = gpu.adapter.isFallbackAdapter;
  for (let FR = rows <= 8 ? 8 : rows <= 16 || fallback ? 16 : 32; FR >= 8; FR /= 2) {
    for (let FBK = 32; FBK >= 8; FBK /= 2) {
      const c: BlocksConfig = { FR, FBK, FWG: Math.max(fallback ? 16 : 32, FR), DQ4, DV4 };
      if (blocksSharedBytes(c) <= gpu.caps.maxComputeWorkgroupStorageSize) return c;
    }
  }
  return null;
}

/** Worker threads of a software adapter (it runs workgroups on the CPU); what the host reports, else 4. */
function softwareThreads(): number {
  const n = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency;
  return n && n > 0 ? n : 4;
}

/**
 * flash_rows' split count: enough workgroups for the device to run them side by side (about 128 on a
 * GPU; the CPU threads on a software adapter, where every extra workgroup is run by the same few
 * threads), and no split shorter than it is worth: partials and the combine pass cost a few blocks of
 * keys on a GPU; on SwiftShader (2 cores, shared) two splits measured 0.8–0.97× the speed of one at
 * 2048 keys and 0.9–1.4× at 8192 (attention-core bench, docs/attention.md), so a software adapter splits
 * from 4096 keys per split.
 */
export function rowsSplits(gpu: AttentionDevice, baseWorkgroups: number, T: number, DBK: number): number {
  const fallback = gpu.adapter.isFallbackAdapter;
  const concurrent = fallback ? softwareThreads() : 128;
  const minKeys = fallback ? 4096 : 8 * DBK;
  if (baseWorkgroups >= concurrent) return 1;
  return Math.max(1, Math.min(Math.ceil(concurrent / baseWorkgroups), Math.floor(T / minKeys)));
}

