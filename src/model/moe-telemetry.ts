import type { Gpu } from '../gpu/device';
import type { Binding } from '../gpu/recorder';
import { ArgumentError } from '../errors';

/** MaxVio = (max load − mean load) / mean load (Wang et al., "Auxiliary-Loss-Free Load Balancing"); 0 for no load. */
export function maxVio(counts: ArrayLike<number>): number {
  const n = counts.length;
  if (!n) return 0;
  let sum = 0, max = -Infinity;
  for (let i = 0; i < n; i++) {
    sum += counts[i];
    max = Math.max(max, counts[i]);
  }
  const mean = sum / n;
  return mean > 0 ? (max - mean) / mean : 0;
}

export interface ExpertLoadReport {
  layer: number;
  /** tokens routed to each expert since the last reset */
  counts: number[];
  /** counts / (K·tokens): each expert's share of the routed choices (sums to 1) */
  frequency: number[];
  maxVio: number;
  /** tokens seen = Σ counts / K */
  tokens: number;
}

/**
 * Per-layer, per-expert routing counters on the GPU: one u32 [E] slice per MoE layer (each slice at a
 * storage-offset-aligned position of one buffer), incremented by the gate kernel (`moeGate({ counts })`).
 * Reading is one copy + map of the whole buffer; nothing is read back while decoding.
 */
export class ExpertLoad {
  readonly buffer: GPUBuffer;
  private stride: number;
  private index = new Map<number, number>();

  constructor(private gpu: Gpu, readonly layers: number[], readonly experts: number, readonly topK: number) {
    if (!(experts > 0) || !(topK > 0)) throw new ArgumentError(`ExpertLoad: experts ${experts} and topK ${topK} must be positive`);
    const align = gpu.caps.minStorageBufferOffsetAlignment;
    this.stride = Math.ceil((experts * 4) / align) * align;
    layers.forEach((l, i) => this.index.set(l, i));
    this.buffer = gpu.buffers.create(`moe.expertLoad[${layers.length}×${experts}]`, Math.max(4, this.stride * layers.length));
    this.reset();
  }

  /** u32 [E] counters of one MoE layer, to pass as `counts` to moeGate. */
  counters(layer: number): Binding {
    const i = this.index.get(layer);
    if (i === undefined) throw new ArgumentError(`ExpertLoad: layer ${layer} is not one of the tracked MoE layers [${this.layers.join(', ')}]`);
    return { buffer: this.buffer, offset: i * this.stride, size: this.experts * 4 };
  }

  async read(): Promise<ExpertLoadReport[]> {
    const words = new Uint32Array(await this.gpu.buffers.read(this.buffer));
    const perWord = this.stride / 4;
    return this.layers.map((layer, i) => {
      const counts = Array.from(words.subarray(i * perWord, i * perWord + this.experts));
      const total = counts.reduce((a, b) => a + b, 0);
      return {
        layer,
        counts,
        frequency: counts.map((c) => (total ? c / total : 0)),
        maxVio: maxVio(counts),
        tokens: total / this.topK,
      };
    });
  }

  /** Zeroes every counter (queued: ordered before later submits). */
  reset(): void {
    this.gpu.buffers.write(this.buffer, new Uint32Array(this.buffer.size / 4));
  }

  destroy(): void {
    this.gpu.buffers.destroy(this.buffer);
  }
}
