/**
 * Where the first token and a decode step of the `large` suite go (WEBMOE_LARGE_PROFILE=1): after the
 * suite's own (cold) generation, the same prompt again from an empty cache with wall clock only (steady
 * state: every pipeline compiled), then once more with per-kernel GPU timestamps (each dispatch in its
 * own pass, src/gpu/recorder.ts), printing the top kernels of the prefill and of one decode step.
 *
 * Cold − warm TTFT is what the first call's pipeline compilations (and first-touch effects) cost; the
 * PipelineCache's compileMs is the part spent inside createComputePipeline. The timestamped pass
 * splits each dispatch into its own compute pass, so its totals are slower than the wall-clock run;
 * read it for the shares between kernels, not for absolute times.
 */
import type { BenchContext } from '../types';
import type { WebMoeEngine } from '../../engine/engine';
import type { GenerationResult as GenerateResult } from '../../engine/types';
import { GpuRunner } from '../../model/gpu-runner';
import type { KernelTiming } from '../../gpu/profiler';

export interface ProfileOptions { prompt: string; decodeTokens: number; cold: GenerateResult; compiledBefore: number; compileMsBefore: number }

function table(rows: KernelTiming[], top: number): string {
  const total = rows.reduce((a, r) => a + r.totalMs, 0);
  const lines = rows.slice(0, top).map((r) => `    ${r.totalMs.toFixed(1).padStart(9)} ms ${((100 * r.totalMs) / total).toFixed(1).padStart(5)}% ${String(r.calls).padStart(5)}× ${r.label}`);
  return `  GPU total ${total.toFixed(1)} ms over ${rows.reduce((a, r) => a + r.calls, 0)} dispatches\n${lines.join('\n')}`;
}

/** Waits for the timestamp readbacks of the last submits (they resolve after the queue; bounded). */
async function settle(sum: () => number): Promise<void> {
  let last = -1;
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const now = sum();
    if (now === last) return;
    last = now;
  }
}

export async function profileLarge(ctx: BenchContext, engine: WebMoeEngine, o: ProfileOptions): Promise<Record<string, number>> {
  const runner = engine.runner;
  if (!(runner instanceof GpuRunner)) { ctx.error('large: WEBMOE_LARGE_PROFILE needs the GPU runner'); return {}; }
  const gpu = runner.be.gpu;
  const out: Record<string, number> = {
    coldTtftS: +(o.cold.timeToFirstTokenMs / 1000).toFixed(2),
    coldDecodeSPerToken: o.cold.decodeTokPerS > 0 ? +(1 / o.cold.decodeTokPerS).toFixed(3) : 0,
    coldPipelinesCompiled: gpu.pipelines.compiled - o.compiledBefore,
    coldCompileS: +((gpu.pipelines.compileMs - o.compileMsBefore) / 1000).toFixed(2),
  };
  const gen = async (maxTokens: number): Promise<GenerateResult> => {
    runner.truncate(0); // no prefix reuse: the whole prompt is prefilled again
    const it = engine.generate(o.prompt, { temperature: 0, maxTokens, stopAtEos: false });
    let r;
    for (;;) { r = await it.next(); if (r.done) break; }
    return r.value;
  };

  // Steady state, wall clock: the same work as the cold run with every pipeline already compiled.
  const c0 = gpu.pipelines.compiled;
  const warm = await gen(o.decodeTokens);
  out.warmTtftS = +(warm.timeToFirstTokenMs / 1000).toFixed(2);
  out.warmDecodeSPerToken = warm.decodeTokPerS > 0 ? +(1 / warm.decodeTokPerS).toFixed(3) : 0;
  out.warmPipelinesCompiled = gpu.pipelines.compiled - c0;
  const compiles = gpu.pipelines.compileLog.slice(-out.coldPipelinesCompiled).sort((a, b) => b.ms - a.ms);
  ctx.progress(`large profile: pipelines compiled by the cold generation (createComputePipeline wall time):\n${compiles.map((c) => `    ${c.ms.toFixed(0).padStart(7)} ms ${c.label}`).join('\n')}`);
  ctx.progress(`large profile: cold TTFT ${out.coldTtftS} s (${out.coldPipelinesCompiled} pipelines, ${out.coldCompileS} s in createComputePipeline), warm TTFT ${out.warmTtftS} s; decode cold ${out.coldDecodeSPerToken} s/token, warm ${out.warmDecodeSPerToken} s/token`);

  if (!gpu.profiler.timestamps) { ctx.progress('large profile: no timestamp-query on this device: per-kernel times not measured'); return out; }
  const prof = gpu.profiler;
  const sum = () => prof.report().reduce((a, t) => a + t.calls, 0);
  prof.reset();
  prof.enabled = true;
  try {
    runner.truncate(0);
    const it = engine.generate(o.prompt, { temperature: 0, maxTokens: Math.max(2, o.decodeTokens), stopAtEos: false });
    const t0 = performance.now();
    await it.next(); // the prefill and the first token
    const prefillWall = performance.now() - t0;
    await settle(sum);
    const prefill = prof.report();
    prof.reset();
    let steps = 0;
    const t1 = performance.now();
    for (;;) { const r = await it.next(); if (r.done) break; steps++; }
    const decodeWall = performance.now() - t1;
    await settle(sum);
    const decode = prof.report().map((r) => ({ ...r, totalMs: r.totalMs / Math.max(1, steps), calls: r.calls / Math.max(1, steps) }));
    out.profiledPrefillWallS = +(prefillWall / 1000).toFixed(2);
    out.profiledPrefillGpuS = +(prefill.reduce((a, r) => a + r.totalMs, 0) / 1000).toFixed(2);
    out.profiledDecodeWallSPerToken = +(decodeWall / 1000 / Math.max(1, steps)).toFixed(3);
    out.profiledDecodeGpuSPerToken = +(decode.reduce((a, r) => a + r.totalMs, 0) / 1000).toFixed(3);
    ctx.progress(`large profile: prefill of ${o.prompt.length} bytes + first token, ${out.profiledPrefillWallS} s wall (timestamped), per kernel:\n${table(prefill, 15)}`);
    ctx.progress(`large profile: one decode step (mean of ${steps}), ${out.profiledDecodeWallSPerToken} s wall (timestamped), per kernel:\n${table(decode, 15)}`);
  } finally {
    prof.enabled = false;
    prof.reset();
  }
  return out;
}
