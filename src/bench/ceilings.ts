import benchCode from '../../shaders/bench.wgsl?raw';
import type { Gpu } from '../gpu/device';
import type { Recorder } from '../gpu/recorder';
import { defineUniforms } from '../gpu/uniforms';
import { ceilDiv } from '../gpu/dispatch';
import type { BenchContext, Ceilings } from './types';

/** Must match UNROLL and CHAINS in shaders/bench.wgsl. */
export const FMA_UNROLL = 4;
export const FMA_CHAINS = 8;
/** Flops of one fma_peak invocation per loop iteration: UNROLL × CHAINS vec4 FMAs, 2 flops per lane. */
export const FMA_FLOPS_PER_ITER = FMA_UNROLL * FMA_CHAINS * 4 * 2;

export const PARAMS = defineUniforms({ n: 'u32', iters: 'u32', _p0: 'u32', _p1: 'u32' });
const WG = 256;

type Timer = BenchContext['time'];

function pipeline(gpu: Gpu, entryPoint: string) {
  return gpu.pipelines.get({ label: 'bench', code: benchCode, entryPoint, constants: entryPoint === 'tiny' ? {} : { WG } });
}

/** fma_peak over n invocations × iters loop iterations. */
export function recordFma(gpu: Gpu, rec: Recorder, dst: GPUBuffer, n: number, iters: number): void {
  rec.dispatch({ pipeline: pipeline(gpu, 'fma_peak'), bindings: [null, dst], uniforms: PARAMS.pack({ n, iters, _p0: 0, _p1: 0 }), workgroups: ceilDiv(n, WG), label: 'bench.fma' });
}

/** dst = src over n vec4s. */
export function recordCopy(gpu: Gpu, rec: Recorder, src: GPUBuffer, dst: GPUBuffer, n: number): void {
  rec.dispatch({ pipeline: pipeline(gpu, 'copy_vec4'), bindings: [src, dst], uniforms: PARAMS.pack({ n, iters: 0, _p0: 0, _p1: 0 }), workgroups: ceilDiv(n, WG), label: 'bench.copy' });
}

/** One workgroup of one invocation writing one vec4: the cost of a dispatch that does no work. */
export function recordTiny(gpu: Gpu, rec: Recorder, dst: GPUBuffer, k: number): void {
  rec.dispatch({ pipeline: pipeline(gpu, 'tiny'), bindings: [null, dst], uniforms: PARAMS.pack({ n: 1, iters: k, _p0: 0, _p1: 0 }), workgroups: 1, label: 'bench.tiny' });
}

export interface CeilingDetails extends Required<Ceilings> {
  fma: { invocations: number; iters: number; flops: number; ms: number };
  copy: { bytes: number; ms: number };
  dispatch: { count: number; msMany: number; msOne: number };
}

/**
 * The device's measured ceilings, in the same run as the kernels they are compared with:
 * - fmaGflops: an FMA-bound kernel (independent vec4 chains) sized to run tens of milliseconds;
 * - copyGBps: a vec4 copy of 64 MiB (16 MiB in quick mode), bytes read + written;
 * - dispatchOverheadUs: extra time per dispatch when many tiny dispatches share one pass;
 * - submitRoundTripMs: one tiny dispatch submitted and waited for (submit + onSubmittedWorkDone).
 */
export async function measureCeilings(gpu: Gpu, time: Timer, quick: boolean, progress: (m: string) => void = () => {}): Promise<CeilingDetails> {
  const caps = gpu.caps;
  const targetMs = quick ? 15 : 40;

  // FMA: probe, then grow the work until one dispatch takes about targetMs.
  progress('FMA peak');
  let n = 1 << 16;
  let iters = 8;
  const maxN = Math.min(1 << 20, Math.floor(caps.maxStorageBufferBindingSize / 16), caps.maxComputeWorkgroupsPerDimension * caps.maxComputeWorkgroupsPerDimension * WG);
  const out = gpu.buffers.create('bench.ceilings.out', Math.min(maxN, 1 << 20) * 16);
  const fmaTime = (nn: number, it: number, o?: { warmup?: number; iters?: number }) =>
    time((rec) => recordFma(gpu, rec, out, nn, it), { warmup: o?.warmup ?? 1, iters: o?.iters ?? 3 });
  try {
    let ms = await fmaTime(n, iters, { warmup: 1, iters: 1 });
    if (ms < 2) {
      n = maxN; // a fast GPU: enough invocations to fill it
      ms = await fmaTime(n, iters, { warmup: 1, iters: 1 });
    }
    for (let step = 0; step < 4 && ms < targetMs * 0.6; step++) {
      iters = Math.min(1 << 20, Math.ceil(iters * Math.min(64, targetMs / Math.max(ms, 0.01))));
      ms = await fmaTime(n, iters, { warmup: 0, iters: 1 });
    }
    const fmaMs = await fmaTime(n, iters, { warmup: 1, iters: quick ? 3 : 5 });
    const flops = n * iters * FMA_FLOPS_PER_ITER;

    // Copy bandwidth.
    progress('copy bandwidth');
    const want = (quick ? 16 : 64) * 2 ** 20;
    const bytes = Math.floor(Math.min(want, caps.maxStorageBufferBindingSize, caps.maxBufferSize) / 16) * 16;
    const src = gpu.buffers.create('bench.copy.src', bytes);
    const dst = gpu.buffers.create('bench.copy.dst', bytes);
    let copyMs: number;
    try {
      gpu.buffers.fill(src, 1);
      copyMs = await time((rec) => recordCopy(gpu, rec, src, dst, bytes / 16), { warmup: 1, iters: quick ? 3 : 7 });
    } finally {
      gpu.buffers.destroy(src);
      gpu.buffers.destroy(dst);
    }

    // Dispatch overhead and submit round trip.
    progress('dispatch overhead');
    const count = quick ? 64 : 256;
    // Wall clock even with timestamp timing: these are host-side costs.
    const msOne = await time((rec) => recordTiny(gpu, rec, out, 0), { warmup: 2, iters: quick ? 9 : 21, clock: 'wall' });
    const msMany = await time((rec) => { for (let k = 0; k < count; k++) recordTiny(gpu, rec, out, k); }, { warmup: 1, iters: quick ? 5 : 9, clock: 'wall' });
    const dispatchOverheadUs = Math.max(0, ((msMany - msOne) / (count - 1)) * 1000);

    return {
      fmaGflops: flops / (fmaMs * 1e6),
      copyGBps: (2 * bytes) / (copyMs * 1e6),
      dispatchOverheadUs,
      submitRoundTripMs: msOne,
      fma: { invocations: n, iters, flops, ms: fmaMs },
      copy: { bytes: 2 * bytes, ms: copyMs },
      dispatch: { count, msMany, msOne },
    };
  } finally {
    gpu.buffers.destroy(out);
  }
}
