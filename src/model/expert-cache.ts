/**
 * Expert offload (LoadOptions.gpuMemoryBudget): each MoE layer keeps C of its E routed experts in GPU
 * slots; the others wait in their GPU storage format (packed bytes, ready to upload) on the host, or are
 * re-read from the model source and packed again when needed. GpuBackend.moeSteps reads each MoE
 * layer's routing back once, makes the experts it needs resident (uploading misses into slots whose
 * experts are not needed, chosen by the eviction policy), then runs the unchanged expert kernels on the
 * slots through the slot table (kernels/moe-slots.ts).
 */
import type { Gpu } from '../gpu/device';
import { createExpertSlots, destroyExpertSlots, packExpert, writeExpertSlot, type PackedExpert } from '../kernels/moe-slots';
import type { MoeExpertWeights } from '../kernels/moe';
import type { HostExpert } from './deepseek';
import type { ExpertSink } from './deepseek';
import { ShapeError } from '../errors';
import { packWeight } from '../kernels/weight-pack';
import { fp8ScalesPackable, type HostPacked, type HostPacker } from '../kernels/wasm/host-pack';

/**
 * Where cold experts wait. 'host': packed, in host memory (uploads are a copy); 'source': only in the
 * model source (the file in Node, HTTP range requests or the Cache API in a browser), read and packed
 * again on each miss. 'auto' (the default): 'host' when the routed experts' packed bytes are at most
 * half of the host memory (LoadOptions.hostMemoryBytes; default navigator.deviceMemory in a browser,
 * os.totalmem() in Node, else 4 GiB assumed), else 'source'.
 */
export type ExpertSourcePolicy = 'auto' | 'host' | 'source';
/**
 * Uploads ahead of a layer's routing: 'none' (the synchronous baseline: misses are uploaded after the
 * layer's routing readback); 'previous-token' (at layer L's sync point, layer L+1's experts of the
 * previous token); 'next-gate' (at layer L's sync point, layer L+1's gate applied to layer L's FFN
 * input, read back with L's routing: no extra round trip).
 */
export type PrefetchPolicy = 'none' | 'previous-token' | 'next-gate';
/** Which resident expert a miss replaces: least recently used, or least often chosen so far (the load telemetry). */
export type EvictionPolicy = 'lru' | 'load';

export interface OffloadConfig {
  capacity: number;
  source: 'host' | 'source';
  prefetch: PrefetchPolicy;
  eviction: EvictionPolicy;
  /** 'source': reads a routed expert's three matrices (f32, HF layouts) from the model source. */
  readExpert?: (layer: number, expert: number) => Promise<HostExpert>;
  /** 'source', GPT-OSS: reads a routed expert's MXFP4 blocks, scales and biases from the model source, packed (packMxfp4Experts). */
  readPacked?: (layer: number, expert: number) => Promise<PackedExpert>;
}

/** The defaults: fewest stalls and the highest hit rate in the offload bench (docs/offload.md). */
export const DEFAULT_PREFETCH: PrefetchPolicy = 'next-gate';
export const DEFAULT_EVICTION: EvictionPolicy = 'load';

/** Cumulative counters of every layer's cache (the engine turns them into per-token figures). */
export interface OffloadCounters {
  /** Distinct experts a sync point needed (summed over sync points). */
  lookups: number;
  /** Of those, already resident when the routing came back (uploaded earlier, prefetches included). */
  hits: number;
  /** Experts uploaded (misses and prefetches) and their bytes. */
  uploads: number;
  bytesUploaded: number;
  /** Sync points that had to upload before their experts could run. */
  stalls: number;
  /** Sync points (one routing readback each) and expert uploads made by prefetch. */
  syncPoints: number;
  prefetchUploads: number;
}

export const zeroCounters = (): OffloadCounters => ({ lookups: 0, hits: 0, uploads: 0, bytesUploaded: 0, stalls: 0, syncPoints: 0, prefetchUploads: 0 });

/** The packed bytes of every routed expert of a layer, filled by the loader's expert sink. */
export class HostExpertStore {
  readonly packed: (PackedExpert | null)[];
  private parts: Map<number, Partial<HostExpert>> = new Map();
  /** q8/q4 matrices packed as they arrived (putRaw), until the expert's three are there. */
  private packedParts: Map<number, Partial<Record<'gate' | 'up' | 'down', { data: Uint8Array; scales: Uint8Array }>>> = new Map();
  bytes = 0;

  /** `packer`: the WebAssembly q8/q4 packer the sink's putRaw packs the checkpoint's bytes with (none: put only). */
  constructor(readonly E: number, readonly D: number, readonly I: number, readonly format: MoeExpertWeights['format'], private keep: (e: number) => boolean, private packer: HostPacker | null = null) {
    this.packed = new Array(E).fill(null);
  }

  /**
   * A layer's experts already in their stack bytes (GPT-OSS: packMxfp4Experts), those `keep` says
   * held: the layer arrives whole, not matrix by matrix through the sink.
   */
  static ofPacked(packed: PackedExpert[], D: number, I: number, format: MoeExpertWeights['format'], keep: (e: number) => boolean): HostExpertStore {
    const s = new HostExpertStore(packed.length, D, I, format, keep);
    packed.forEach((x, e) => { if (keep(e)) { s.packed[e] = x; s.bytes += x.bytes; } });
    return s;
  }

  /**
   * The loader's sink: an expert's matrices are held until its three arrived, then packed (the f32 copies
   * dropped). With the WebAssembly packer, q8/q4 matrices arrive as the checkpoint's bytes (putRaw) and
   * are packed at once (packExpert's bytes exactly: gate and up rows pack alone when their scales fill
   * whole words, I·groups even), so the host holds packed bytes, not f32; experts the store does not
   * keep are not converted at all.
   */
  sink(): ExpertSink & { arrived: number } {
    const self = this;
    const quant = self.format === 'q8' || self.format === 'q4';
    const gs = 32;
    const rawOk = !!self.packer && quant && (self.I * Math.ceil(self.D / gs)) % 2 === 0;
    const check = (e: number) => { if (!Number.isInteger(e) || e < 0 || e >= self.E) throw new ShapeError(`expert store: expert ${e} outside 0..${self.E - 1}`); };
    const [rowsOf, colsOf] = [(proj: 'gate' | 'up' | 'down') => (proj === 'down' ? self.D : self.I), (proj: 'gate' | 'up' | 'down') => (proj === 'down' ? self.I : self.D)];
    const addPacked = (e: number, proj: 'gate' | 'up' | 'down', part: { data: Uint8Array; scales: Uint8Array }) => {
      const p = self.packedParts.get(e) ?? {};
      if (p[proj] || self.parts.get(e)?.[proj]) throw new ShapeError(`expert store: expert ${e} ${proj} arrived twice`);
      p[proj] = part;
      self.packedParts.set(e, p);
      if (!(p.gate && p.up && p.down)) return;
      self.packedParts.delete(e);
      const cat = (a: Uint8Array, b: Uint8Array) => { const c = new Uint8Array(a.length + b.length); c.set(a); c.set(b, a.length); return c; };
      const x: PackedExpert = { gateUp: cat(p.gate.data, p.up.data), down: p.down.data, gateUpScales: cat(p.gate.scales, p.up.scales), downScales: p.down.scales, bytes: 0 };
      x.bytes = x.gateUp.byteLength + x.down.byteLength + x.gateUpScales!.byteLength + x.downScales!.byteLength;
      self.packed[e] = x;
      self.bytes += x.bytes;
    };
    /** A matrix arriving as checkpoint bytes (putRaw, putFp8): packed at once by `pack` when the store keeps its expert; false when it must come through put. */
    const takeBytes = (sink: { arrived: number }, e: number, proj: 'gate' | 'up' | 'down', pack: (rows: number, K: number) => HostPacked): boolean => {
      check(e);
      if (self.parts.has(e)) return false; // this expert's other matrices came as f32: keep to put
      sink.arrived++;
      if (!self.keep(e)) return true;
      const p = pack(rowsOf(proj), colsOf(proj));
      addPacked(e, proj, { data: new Uint8Array(p.data.slice().buffer), scales: new Uint8Array(p.scales.slice().buffer) });
      return true;
    };
    return {
      arrived: 0,
      putRaw(e, proj, raw) {
        return rawOk && takeBytes(this, e, proj, (rows, K) => {
          const p = self.packer!.pack(raw.source, raw.bytes, rows, K, self.format as 'q8' | 'q4', gs);
          raw.nonFinite = p.nonFinite;
          return p;
        });
      },
      putFp8(e, proj, bytes, scaleInv) {
        return rawOk && fp8ScalesPackable(scaleInv) && takeBytes(this, e, proj, (rows, K) => self.packer!.pack('fp8', bytes, rows, K, self.format as 'q8' | 'q4', gs, { scaleInv }));
      },
      put(e, proj, data) {
        check(e);
        this.arrived++;
        if (!self.keep(e)) return;
        if (self.packedParts.has(e)) {
          // The expert's other matrices came packed (putRaw): pack this one alike (packWeight: the same bytes).
          const p = packWeight(data, rowsOf(proj), colsOf(proj), self.format as 'q8' | 'q4', { groupSize: gs, scaleDtype: 'f16' });
          addPacked(e, proj, { data: new Uint8Array(p.data.buffer), scales: new Uint8Array(p.scales!.buffer) });
          return;
        }
        const p = self.parts.get(e) ?? {};
        if (p[proj]) throw new ShapeError(`expert store: expert ${e} ${proj} arrived twice`);
        p[proj] = data.slice(); // the loader reuses `data`
        self.parts.set(e, p);
        if (p.gate && p.up && p.down) {
          self.parts.delete(e);
          if (self.format === 'mxfp4') throw new ShapeError('expert store: MXFP4 experts arrive packed (HostExpertStore.ofPacked), not through the sink');
          const x = packExpert(p as HostExpert, self.D, self.I, self.format);
          self.packed[e] = x;
          self.bytes += x.bytes;
        }
      },
    };
  }
}

/** One MoE layer's slots, slot table and residency. */
export class LayerExpertCache {
  readonly slots: MoeExpertWeights;
  readonly table: GPUBuffer;
  /** Expert → slot (-1: not resident); written to `table` as u32 (-1 reads as NO_SLOT). */
  readonly slotOf: Int32Array;
  readonly expertAt: Int32Array;
  private lastUse: Float64Array;
  /** How often each expert was chosen (this layer's load telemetry, from the routing readbacks). */
  readonly uses: Float64Array;
  private tick = 0;
  /** The distinct experts of this layer's last sync point (previous-token prefetch). */
  lastExperts: number[] = [];

  constructor(
    private gpu: Gpu, readonly layer: number, readonly E: number, readonly capacity: number,
    D: number, I: number, private format: MoeExpertWeights['format'],
    private store: HostExpertStore | null, private cfg: OffloadConfig, private counters: OffloadCounters,
  ) {
    this.slots = createExpertSlots(gpu, `layers.${layer}.experts`, capacity, D, I, format);
    this.table = gpu.buffers.create(`layers.${layer}.experts.slot_table[${E}]`, E * 4);
    this.slotOf = new Int32Array(E).fill(-1);
    this.expertAt = new Int32Array(capacity).fill(-1);
    this.lastUse = new Float64Array(capacity);
    this.uses = new Float64Array(E);
    gpu.buffers.write(this.table, this.slotOf);
  }

  /** The first `capacity` experts into the slots, from the loader's store (not counted as uploads). */
  fill(store: HostExpertStore): void {
    for (let e = 0; e < Math.min(this.capacity, this.E); e++) {
      const x = store.packed[e];
      if (!x) throw new ShapeError(`expert cache: layer ${this.layer}'s expert ${e} never arrived`);
      writeExpertSlot(this.gpu, this.slots, e, x);
      this.slotOf[e] = e;
      this.expertAt[e] = e;
    }
    if (this.store) for (let e = 0; e < this.E; e++) if (!this.store.packed[e]) throw new ShapeError(`expert cache: layer ${this.layer}'s expert ${e} never arrived`);
    this.gpu.buffers.write(this.table, this.slotOf);
  }

  get bytes(): number { return this.slots.bytes + this.table.size; }

  resident(e: number): boolean { return this.slotOf[e] >= 0; }

  private async bytesOf(e: number): Promise<PackedExpert> {
    const held = this.store?.packed[e];
    if (held) return held;
    if (this.format === 'mxfp4') {
      if (!this.cfg.readPacked) throw new Error(`expert cache: MXFP4 expert ${e} of layer ${this.layer} is neither on the host nor readable from the source`);
      return this.cfg.readPacked(this.layer, e);
    }
    if (!this.cfg.readExpert) throw new Error(`expert cache: expert ${e} of layer ${this.layer} is neither on the host nor readable from the source`);
    const x = await this.cfg.readExpert(this.layer, e);
    return packExpert(x, this.slots.D, this.slots.I, this.format);
  }

  /** The slot a new expert takes: a free one, else the one the eviction policy picks among those not in `keep`. */
  private victim(keep: Set<number>): number {
    let best = -1;
    for (let s = 0; s < this.capacity; s++) {
      const e = this.expertAt[s];
      if (e < 0) return s;
      if (keep.has(e)) continue;
      if (best < 0) { best = s; continue; }
      const b = this.expertAt[best];
      const worse = this.cfg.eviction === 'load'
        ? this.uses[e] < this.uses[b] || (this.uses[e] === this.uses[b] && this.lastUse[s] < this.lastUse[best])
        : this.lastUse[s] < this.lastUse[best];
      if (worse) best = s;
    }
    if (best < 0) throw new Error(`expert cache: layer ${this.layer} needs more than its ${this.capacity} slots at once`);
    return best;
  }

  /**
   * Makes `experts` (distinct, at most `capacity`) resident: uploads the missing ones into slots of
   * experts not in `experts`, and writes the slot table when anything moved. Queue order puts these
   * writes after every step submitted before and before the next. Returns the number uploaded.
   */
  async ensure(experts: number[], prefetch = false): Promise<number> {
    if (experts.length > this.capacity) throw new Error(`expert cache: ${experts.length} experts asked of layer ${this.layer}'s ${this.capacity} slots`);
    const keep = new Set(experts);
    this.tick++;
    let uploaded = 0;
    for (const e of experts) {
      const s = this.slotOf[e];
      if (s >= 0) { this.lastUse[s] = this.tick; continue; }
      const x = await this.bytesOf(e);
      const v = this.victim(keep);
      const old = this.expertAt[v];
      if (old >= 0) this.slotOf[old] = -1;
      this.expertAt[v] = e;
      this.slotOf[e] = v;
      this.lastUse[v] = this.tick;
      this.counters.bytesUploaded += writeExpertSlot(this.gpu, this.slots, v, x);
      this.counters.uploads++;
      if (prefetch) this.counters.prefetchUploads++;
      uploaded++;
    }
    if (uploaded) this.gpu.buffers.write(this.table, this.slotOf);
    return uploaded;
  }

  /** Counts a sync point's distinct experts as lookups and hits (before ensure) and notes their use. */
  lookup(experts: number[], counts: Map<number, number>): void {
    this.counters.syncPoints++;
    let missed = false;
    for (const e of experts) {
      this.counters.lookups++;
      if (this.resident(e)) this.counters.hits++;
      else missed = true;
      this.uses[e] += counts.get(e) ?? 1;
    }
    if (missed) this.counters.stalls++;
    this.lastExperts = experts;
  }

  destroy(): void {
    destroyExpertSlots(this.gpu, this.slots);
    this.gpu.buffers.destroy(this.table);
  }
}

/**
 * Consecutive runs of tokens whose experts fit `capacity` slots together (each token's top-k distinct
 * experts fit alone, as capacity ≥ k): one experts pass each. Every token runs with all its experts
 * resident, so its arithmetic is that of full residency.
 */
export function tokenRuns(ids: Uint32Array, T: number, K: number, capacity: number): { t0: number; t1: number; experts: number[] }[] {
  const out: { t0: number; t1: number; experts: number[] }[] = [];
  let set = new Set<number>(), t0 = 0;
  for (let t = 0; t < T; t++) {
    const mine = new Set<number>();
    for (let j = 0; j < K; j++) mine.add(ids[t * K + j]);
    let union = 0;
    for (const e of mine) if (!set.has(e)) union++;
    if (set.size + union > capacity) {
      out.push({ t0, t1: t, experts: [...set] });
      set = new Set();
      t0 = t;
    }
    for (const e of mine) set.add(e);
  }
  if (T > t0) out.push({ t0, t1: T, experts: [...set] });
  return out;
}

/** Distinct experts of `ids` with how often each was chosen, most chosen first. */
export function expertCounts(ids: ArrayLike<number>): Map<number, number> {
  const m = new Map<number, number>();
  for (let i = 0; i < ids.length; i++) m.set(ids[i], (m.get(ids[i]) ?? 0) + 1);
  return new Map([...m].sort((a, b) => b[1] - a[1]));
}
