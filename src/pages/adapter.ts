/**
 * WebGPU detection on a page (the engine and the benchmark run in Workers): the adapter, its features
 * and limits, and when there is none, why. The demo and the benchmark page show this before starting.
 */

export interface AdapterSummary { vendor: string; architecture: string; device: string; description: string; fallback: boolean }

export type GpuProbe =
  | { ok: true; adapter: AdapterSummary; features: string[]; limits: Record<string, number> }
  | { ok: false; reason: 'insecure' | 'no-api' | 'no-adapter' | 'error'; detail?: string };

export async function probeWebGpu(): Promise<GpuProbe> {
  if (!window.isSecureContext) return { ok: false, reason: 'insecure' };
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) return { ok: false, reason: 'no-api' };
  try {
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return { ok: false, reason: 'no-adapter' };
    const i = (adapter.info ?? {}) as Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean };
    const limits: Record<string, number> = {};
    for (const k in adapter.limits) {
      const v = (adapter.limits as unknown as Record<string, unknown>)[k];
      if (typeof v === 'number') limits[k] = v;
    }
    return {
      ok: true,
      adapter: {
        vendor: i.vendor ?? '', architecture: i.architecture ?? '', device: i.device ?? '', description: i.description ?? '',
        fallback: !!(i.isFallbackAdapter ?? (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter),
      },
      features: [...adapter.features].sort(),
      limits,
    };
  } catch (e) {
    return { ok: false, reason: 'error', detail: (e as Error)?.message ?? String(e) };
  }
}
