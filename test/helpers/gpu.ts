import { acquireGpu, type Gpu, type GpuOptions } from '../../src/gpu/device';

let shared: Promise<Gpu> | null = null;

/** One device per test worker: navigator.gpu in the browser, dawn.node (SwiftShader if needed) in Node. */
export function testGpu(options: Omit<GpuOptions, 'gpu'> = {}): Promise<Gpu> {
  const isDefault = Object.keys(options).length === 0;
  if (isDefault && shared) return shared;
  const p = (async () => {
    if (typeof navigator !== 'undefined' && (navigator as any).gpu) return acquireGpu(options);
    const nodeEntry = '../../src/node';
    const { acquireNodeGpu } = await import(/* @vite-ignore */ nodeEntry);
    return acquireNodeGpu(options) as Promise<Gpu>;
  })();
  if (isDefault) shared = p;
  return p;
}

export interface Tolerance { atol: number; rtol: number }

/** Max |a-e| and whether every element is within atol + rtol·|e|; NaN/Inf in `actual` always fails. */
export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance) {
  if (actual.length < expected.length) throw new Error(`length ${actual.length} < expected ${expected.length}`);
  let maxAbs = 0, worst = -1, bad = 0, nonFinite = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    if (!Number.isFinite(a)) { nonFinite++; worst = i; continue; }
    const d = Math.abs(a - e);
    if (d > maxAbs) { maxAbs = d; }
    if (d > tol.atol + tol.rtol * Math.abs(e)) { bad++; if (worst < 0) worst = i; }
  }
  return { ok: bad === 0 && nonFinite === 0, maxAbs, bad, nonFinite, worst, at: worst >= 0 ? { actual: actual[worst], expected: expected[worst] } : null };
}

export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, what = '') {
  const r = compare(actual, expected, tol);
  if (!r.ok) {
    throw new Error(`${what}: ${r.bad} elements out of tolerance (atol ${tol.atol}, rtol ${tol.rtol}), ${r.nonFinite} non-finite, max |Δ| ${r.maxAbs}; first at ${r.worst}: got ${r.at?.actual}, want ${r.at?.expected}`);
  }
  return r.maxAbs;
}

/** A buffer pre-filled with NaN so a kernel that leaves any output unwritten fails the comparison. */
export function poisoned(gpu: Gpu, label: string, floats: number): GPUBuffer {
  const b = gpu.buffers.create(label, floats * 4);
  gpu.buffers.fill(b, NaN);
  return b;
}
