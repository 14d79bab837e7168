export { Gpu, acquireGpu, type GpuOptions, type AdapterDescription } from './device';
export type { Capabilities } from './capabilities';
export { BufferManager, TempPool, STORAGE } from './buffers';
export { PipelineCache, type PipelineDesc } from './pipelines';
export { Recorder, type DispatchDesc, type Binding } from './recorder';
export { defineUniforms, type UniformLayout } from './uniforms';
export { foldWorkgroups, ceilDiv } from './dispatch';
export { Profiler } from './profiler';
export { yieldingWait, setYieldingWaits, YIELD_AFTER_MS } from './wait';
