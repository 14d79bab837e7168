import type { Capabilities } from './capabilities';
import type { Profiler } from './profiler';
import { foldWorkgroups } from './dispatch';
import { LimitExceededError } from '../errors';

export type Binding = GPUBuffer | GPUBufferBinding;

export interface DispatchDesc {
  pipeline: GPUComputePipeline;
  /** Storage buffers in binding order, starting at @binding(1) (at @binding(0) when there are no uniforms); null skips a binding the entry point does not use. */
  bindings: (Binding | null)[];
  /** Packed uniform block bound at @binding(0). */
  uniforms?: Uint8Array;
  /** A linear workgroup count (folded to 2-D past the per-dimension limit) or explicit [x, y, z]. */
  workgroups: number | [number, number?, number?];
  label?: string;
}

type Command =
  | { kind: 'dispatch'; desc: DispatchDesc; uniformOffset: number }
  | { kind: 'copy'; src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; size: number }
  | { kind: 'clear'; buffer: GPUBuffer; offset: number; size?: number };

/**
 * Records a step's work and encodes it in one command buffer at submit. The uniform blocks of all its
 * dispatches are packed into the device's uniform ring with one writeBuffer, so a decode step costs one
 * upload, not one per kernel. Consecutive dispatches share a compute pass (WebGPU orders storage writes
 * between dispatches); with profiling on, each dispatch gets a pass with timestamp writes.
 */
/**
 * What a Recorder needs of the device it records for (the Gpu of device.ts is one). Declared here so the
 * recorder does not import device.ts, which creates recorders.
 */
export interface RecorderHost {
  readonly device: GPUDevice;
  readonly caps: Capabilities;
  readonly profiler: Profiler;
  dispatchCount: number;
  submitCount: number;
  assertAlive(): void;
  uniformRing(bytes: number): GPUBuffer;
  timestampSlot(i: number): { set: GPUQuerySet; begin: number; end: number };
  resolveTimestamps(encoder: GPUCommandEncoder, n: number): (labels: string[]) => Promise<void>;
}

export class Recorder {
  private commands: Command[] = [];
  private uniforms: Uint8Array[] = [];
  private uniformTotal = 0;
  dispatches = 0;

  constructor(private gpu: RecorderHost, readonly label: string) {
    gpu.assertAlive();
  }

  dispatch(desc: DispatchDesc): void {
    let uniformOffset = -1;
    if (desc.uniforms) {
      const align = this.gpu.caps.minUniformBufferOffsetAlignment;
      uniformOffset = this.uniformTotal;
      this.uniforms.push(desc.uniforms);
      this.uniformTotal += Math.ceil(desc.uniforms.byteLength / align) * align;
    }
    this.commands.push({ kind: 'dispatch', desc, uniformOffset });
    this.dispatches++;
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    this.commands.push({ kind: 'copy', src, srcOffset, dst, dstOffset, size });
  }

  clear(buffer: GPUBuffer, offset = 0, size?: number): void {
    this.commands.push({ kind: 'clear', buffer, offset, size });
  }

  get empty(): boolean { return this.commands.length === 0; }

  /** Encodes and submits. Completion is observed through a readback or `gpu.sync()`. */
  submit(): void {
    const gpu = this.gpu;
    gpu.assertAlive();
    const device = gpu.device;
    const ring = this.uniformTotal ? gpu.uniformRing(this.uniformTotal) : null;
    if (ring) {
      const data = new Uint8Array(this.uniformTotal);
      let off = 0;
      const align = gpu.caps.minUniformBufferOffsetAlignment;
      for (const u of this.uniforms) {
        data.set(u, off);
        off += Math.ceil(u.byteLength / align) * align;
      }
      device.queue.writeBuffer(ring, 0, data);
    }
    const encoder = device.createCommandEncoder({ label: this.label });
    const maxDim = gpu.caps.maxComputeWorkgroupsPerDimension;
    const profile = gpu.profiler.enabled && gpu.profiler.timestamps;
    const profiled: string[] = [];
    let pass: GPUComputePassEncoder | null = null;
    const endPass = () => {
      pass?.end();
      pass = null;
    };
    for (const c of this.commands) {
      if (c.kind === 'copy') {
        endPass();
        encoder.copyBufferToBuffer(c.src, c.srcOffset, c.dst, c.dstOffset, c.size);
        continue;
      }
      if (c.kind === 'clear') {
        endPass();
        encoder.clearBuffer(c.buffer, c.offset, c.size);
        continue;
      }
      const { desc } = c;
      const label = desc.label ?? desc.pipeline.label;
      let x: number, y = 1, z = 1;
      if (typeof desc.workgroups === 'number') [x, y] = foldWorkgroups(desc.workgroups, maxDim);
      else {
        [x, y = 1, z = 1] = desc.workgroups;
        for (const d of [x, y, z]) if (d > maxDim) throw new LimitExceededError('maxComputeWorkgroupsPerDimension', d, maxDim, `dispatch '${label}'`);
      }
      if (x <= 0 || y <= 0 || z <= 0) continue;
      const entries: GPUBindGroupEntry[] = [];
      let slot = 0;
      if (c.uniformOffset >= 0) {
        entries.push({ binding: 0, resource: { buffer: ring!, offset: c.uniformOffset, size: desc.uniforms!.byteLength } });
        slot = 1;
      }
      desc.bindings.forEach((b, i) => {
        if (b) entries.push({ binding: slot + i, resource: (b as GPUBufferBinding).buffer ? (b as GPUBufferBinding) : { buffer: b as GPUBuffer } });
      });
      const bindGroup = device.createBindGroup({ label, layout: desc.pipeline.getBindGroupLayout(0), entries });
      if (profile) {
        endPass();
        const q = gpu.timestampSlot(profiled.length);
        profiled.push(label);
        pass = encoder.beginComputePass({ label, timestampWrites: { querySet: q.set, beginningOfPassWriteIndex: q.begin, endOfPassWriteIndex: q.end } });
      } else if (!pass) {
        pass = encoder.beginComputePass({ label: this.label });
      }
      pass!.setPipeline(desc.pipeline);
      pass!.setBindGroup(0, bindGroup);
      pass!.dispatchWorkgroups(x, y, z);
      if (profile) endPass();
    }
    endPass();
    const finishTimestamps = profiled.length ? gpu.resolveTimestamps(encoder, profiled.length) : null;
    device.queue.submit([encoder.finish()]);
    gpu.dispatchCount += this.dispatches;
    gpu.submitCount++;
    if (finishTimestamps) void finishTimestamps(profiled).catch(() => {});
    this.commands = [];
    this.uniforms = [];
    this.uniformTotal = 0;
    this.dispatches = 0;
  }
}
