import { describe, it, expect, beforeAll } from 'vitest';
import type { Gpu } from '../../src/gpu/device';
import { testGpu } from '../helpers/gpu';
import { TempPool } from '../../src/gpu/buffers';

let gpu: Gpu;
beforeAll(async () => { gpu = await testGpu(); });

describe('GPU layer on dawn.node', () => {
  it('requests the optional features the adapter has and raises limits', () => {
    for (const f of ['subgroups', 'timestamp-query', 'shader-f16']) {
      expect(gpu.device.features.has(f)).toBe(gpu.adapter.features.includes(f));
    }
    expect(gpu.caps.maxStorageBufferBindingSize).toBe(gpu.adapter.limits.maxStorageBufferBindingSize);
    expect(gpu.caps.maxStorageBuffersPerStage).toBe(gpu.adapter.limits.maxStorageBuffersPerShaderStage);
  });

  it('accounts GPU bytes across create, upload and destroy', () => {
    const before = gpu.buffers.bytesAllocated;
    const a = gpu.buffers.create('a', 1000);
    const b = gpu.buffers.upload('b', new Float32Array(10));
    expect(gpu.buffers.bytesAllocated - before).toBe(1000 + 40);
    gpu.buffers.destroy(a);
    gpu.buffers.destroy(b);
    expect(gpu.buffers.bytesAllocated).toBe(before);
  });

  it('placeholders: one 16-byte buffer per slot, distinct slots distinct, made again once destroyed', () => {
    const a = gpu.buffers.placeholder('test.a');
    expect(a.size).toBe(16);
    expect(gpu.buffers.placeholder('test.a')).toBe(a);
    expect(gpu.buffers.placeholder('test.b')).not.toBe(a);
    const before = gpu.buffers.bytesAllocated;
    gpu.buffers.destroy(a);
    const again = gpu.buffers.placeholder('test.a');
    expect(again).not.toBe(a);
    expect(gpu.buffers.bytesAllocated).toBe(before);
  });

  it('upload/read round trip, including unaligned sizes', async () => {
    const data = new Uint8Array([1, 2, 3, 4, 5, 6, 7]);
    const b = gpu.buffers.upload('u8', data);
    const back = new Uint8Array(await gpu.buffers.read(b, 0, 7));
    expect([...back]).toEqual([...data]);
    gpu.buffers.destroy(b);
  });

  it('the temp pool reuses buffers after releaseAll', () => {
    const pool = new TempPool(gpu.buffers, 'p');
    const a = pool.acquire(1000);
    pool.releaseAll();
    const b = pool.acquire(900);
    expect(b).toBe(a);
    const c = pool.acquire(900);
    expect(c).not.toBe(a);
    const bytes = gpu.buffers.bytesAllocated;
    pool.destroy();
    expect(gpu.buffers.bytesAllocated).toBeLessThan(bytes);
  });

  it('caches pipelines by code, entry point and constants', () => {
    const code = '@group(0) @binding(0) var<storage, read_write> o: array<u32>; override V: u32 = 1u; @compute @workgroup_size(1) fn main() { o[0] = V; }';
    const n = gpu.pipelines.size;
    const p1 = gpu.pipelines.get({ label: 'c', code, constants: { V: 2 } });
    const p2 = gpu.pipelines.get({ label: 'c', code, constants: { V: 2 } });
    const p3 = gpu.pipelines.get({ label: 'c', code, constants: { V: 3 } });
    expect(p1).toBe(p2);
    expect(p3).not.toBe(p1);
    expect(gpu.pipelines.size).toBe(n + 2);
  });

  it('turns WGSL errors into typed validation errors', async () => {
    await expect(gpu.checked(() => {
      gpu.pipelines.get({ label: 'broken', code: '@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }' });
    })).rejects.toMatchObject({ code: 'GPU_VALIDATION' });
  });

  it('profiles dispatches with timestamp queries when available', async () => {
    if (!gpu.caps.timestampQuery) return;
    const code = '@group(0) @binding(0) var<storage, read_write> o: array<u32>; @compute @workgroup_size(1) fn main() { o[0] = 1u; }';
    const out = gpu.buffers.create('o', 4);
    gpu.profiler.enabled = true;
    gpu.profiler.reset();
    const rec = gpu.recorder('prof');
    rec.dispatch({ pipeline: gpu.pipelines.get({ label: 'tiny', code }), bindings: [out], workgroups: 1, label: 'tiny' });
    rec.submit();
    await gpu.sync();
    await new Promise((r) => setTimeout(r, 50));
    gpu.profiler.enabled = false;
    const rep = gpu.profiler.report();
    expect(rep.find((r) => r.label === 'tiny')?.calls).toBe(1);
    gpu.buffers.destroy(out);
  });
});
