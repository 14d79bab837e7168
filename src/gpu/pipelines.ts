/**
 * Compute pipelines keyed by shader text + entry point + override constants. WGSL comes from
 * `shaders/*.wgsl` (imported with `?raw`); structure-changing variants are produced by the kernel's
 * own `specialise` step before reaching here, scalars by `override` constants.
 */
export interface PipelineDesc {
  label: string;
  code: string;
  entryPoint?: string;
  constants?: Record<string, number | boolean>;
}

export class PipelineCache {
  private modules = new Map<string, GPUShaderModule>();
  private pipelines = new Map<string, GPUComputePipeline>();
  compiled = 0;
  /** Wall time spent in createComputePipeline (compilation, where the implementation does it there). */
  compileMs = 0;
  /** Each createComputePipeline call: the pipeline's label and its wall time (profiling; one entry per pipeline). */
  readonly compileLog: { label: string; ms: number }[] = [];

  constructor(private device: GPUDevice) {}

  get size(): number { return this.pipelines.size; }

  module(label: string, code: string): GPUShaderModule {
    let m = this.modules.get(code);
    if (!m) {
      m = this.device.createShaderModule({ label, code });
      this.modules.set(code, m);
    }
    return m;
  }

  get(desc: PipelineDesc): GPUComputePipeline {
    const entryPoint = desc.entryPoint ?? 'main';
    const constants = desc.constants ?? {};
    const ckey = Object.keys(constants).sort().map((k) => `${k}=${+constants[k]}`).join(',');
    const key = `${entryPoint}|${ckey}|${desc.code}`;
    let p = this.pipelines.get(key);
    if (!p) {
      const consts: Record<string, number> = {};
      for (const [k, v] of Object.entries(constants)) consts[k] = +v;
      const t0 = performance.now();
      p = this.device.createComputePipeline({
        label: `${desc.label}:${entryPoint}${ckey ? `(${ckey})` : ''}`,
        layout: 'auto',
        compute: { module: this.module(desc.label, desc.code), entryPoint, constants: consts },
      });
      const ms = performance.now() - t0;
      this.compileMs += ms;
      this.compileLog.push({ label: p.label, ms });
      this.pipelines.set(key, p);
      this.compiled++;
    }
    return p;
  }

  clear(): void {
    this.pipelines.clear();
    this.modules.clear();
  }
}
