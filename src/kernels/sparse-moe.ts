/**
 * Routed MoE experts on structured-sparse weights (the `sparsity: { apply: 'experts' }` load option).
 *
 * One layer's E experts are stacked like the dense MoE weights (src/kernels/moe.ts), but packed sparse:
 *   gateUp: [E·2I, D]  per expert, gate rows (0..I−1) then up rows (I..2I−1)
 *   down:   [E·D, I]
 * With 2I and D multiples of V, V:2:M blocks never straddle two experts, so pruning the stack is
 * pruning each expert on its own.
 *
 * The forward pass runs per (token, slot) rows with the expert ids read on the GPU (no readback):
 *   1. sparse GEMV (expert rows)  gu[t·K+j] = gateUp_{ids[t,j]} · x[t]          [T·K, 2I]
 *   2. silu_mul_rows              h = silu(gu[:, :I]) · gu[:, I:]              [T·K, I]
 *   3. sparse GEMV (expert rows)  yd[t·K+j] = down_{ids[t,j]} · h[t·K+j]       [T·K, D]
 *   4. moe combine                out[t] = Σ_j w[t,j]·yd[t·K+j] + shared[t]     [T, D]
 * Every slot streams its expert's sparse weights, which is what decode wants (bandwidth-bound). For
 * long prefills this is T·K GEMVs rather than grouped GEMMs: correct, but slower than the dense grouped
 * path; the engine may keep prefill on dense-stored pruned experts (`pruneStacked`) if it holds both.
 */
import type { Gpu } from '../gpu/device';
import type { Binding, Recorder } from '../gpu/recorder';
import { ShapeError } from '../errors';
import { siluMulRows } from './elementwise';
import { moeCombine } from './moe';
import { destroySparse, sparseGemv, sparsifyWeight, type SparseGpuWeight, type SparsifyOptions } from './sparse';
import type { SparsePacked } from '../sparse/formats';

export interface SparseExpertWeights {
  /** [E·2I, D] stacked gate|up rows. */
  gateUp: SparseGpuWeight;
  /** [E·D, I] stacked down rows. */
  down: SparseGpuWeight;
  E: number;
  I: number;
  D: number;
  bytes: number;
}

export interface SparsifyExpertsOptions extends Omit<SparsifyOptions, 'importance'> {
  /** Activation norms of the experts' input (length D), for gate|up. */
  importanceIn?: Float32Array;
  /** Activation norms of the experts' hidden state (length I), for down. */
  importanceHidden?: Float32Array;
}

/**
 * Prunes, packs and uploads one layer's routed experts (HF layouts: gate/up [I, D], down [D, I]).
 * Returns the kept-norm fraction of the whole expert set and the packed host arrays.
 */
export function sparsifyExperts(
  gpu: Gpu, label: string, experts: { gate: Float32Array; up: Float32Array; down: Float32Array }[], D: number, I: number, opts: SparsifyExpertsOptions,
): { experts: SparseExpertWeights; keptNormFraction: number; packed: { gateUp: SparsePacked; down: SparsePacked } } {
  const E = experts.length;
  if (!E || !(D > 0) || !(I > 0)) throw new ShapeError(`sparsifyExperts ${label}: need experts, D and I, got E=${E} D=${D} I=${I}`);
  const V = opts.format === 'vnm' ? opts.v ?? 64 : 1;
  if ((2 * I) % V || D % V) throw new ShapeError(`sparsifyExperts ${label}: V = ${V} must divide 2I = ${2 * I} and D = ${D} so that no block straddles two experts`);
  const gateUp = new Float32Array(E * 2 * I * D), down = new Float32Array(E * D * I);
  experts.forEach((x, e) => {
    if (x.gate.length !== I * D || x.up.length !== I * D || x.down.length !== D * I) throw new ShapeError(`sparsifyExperts ${label}: expert ${e} has gate ${x.gate.length}, up ${x.up.length}, down ${x.down.length}; want ${I}×${D} each`);
    gateUp.set(x.gate, e * 2 * I * D);
    gateUp.set(x.up, (e * 2 + 1) * I * D);
    down.set(x.down, e * D * I);
  });
  const norm2 = (a: Float32Array) => a.reduce((s, v) => s + v * v, 0);
  const gu = sparsifyWeight(gpu, `${label}.experts.gate_up`, gateUp, E * 2 * I, D, { ...opts, importance: opts.importanceIn });
  const dn = sparsifyWeight(gpu, `${label}.experts.down`, down, E * D, I, { ...opts, importance: opts.importanceHidden });
  const tGu = norm2(gateUp), tDn = norm2(down);
  const keptNormFraction = Math.sqrt((tGu * gu.keptNormFraction ** 2 + tDn * dn.keptNormFraction ** 2) / (tGu + tDn || 1));
  return {
    experts: { gateUp: gu.weight, down: dn.weight, E, I, D, bytes: gu.weight.bytes + dn.weight.bytes },
    keptNormFraction,
    packed: { gateUp: gu.packed, down: dn.packed },
  };
}

export function destroySparseExperts(gpu: Gpu, w: SparseExpertWeights): void {
  destroySparse(gpu, w.gateUp);
  destroySparse(gpu, w.down);
}

export interface SparseMoeExpertsArgs {
  /** [T, D] normalised hidden states. */
  x: Binding;
  T: number;
  experts: SparseExpertWeights;
  /** u32 [T, K] from moeGate. */
  ids: Binding;
  /** f32 [T, K] from moeGate. */
  weights: Binding;
  K: number;
  /** [T, D] shared-expert output, added unscaled (null: none). */
  shared: Binding | null;
  /** [T, D] out. */
  out: Binding;
}

const identities = new WeakMap<Gpu, GPUBuffer>();
/** u32 [n] = 0..n−1 (the combine's row map when rows are already in (token, slot) order). */
function identity(gpu: Gpu, n: number): GPUBuffer {
  let b = identities.get(gpu);
  if (!b || b.size < n * 4) {
    if (b) gpu.buffers.destroy(b);
    const len = Math.max(256, 2 ** Math.ceil(Math.log2(n)));
    b = gpu.buffers.upload('sparse_moe.identity', Uint32Array.from({ length: len }, (_, i) => i));
    identities.set(gpu, b);
  }
  return b;
}

/** out[t] = Σ_j w[t,j]·Expert_{ids[t,j]}(x[t]) + shared[t] with sparse expert weights (4 dispatches). */
export function sparseMoeExperts(gpu: Gpu, rec: Recorder, a: SparseMoeExpertsArgs): void {
  const { T, K } = a;
  const { E, I, D } = a.experts;
  if (!Number.isInteger(T) || T < 0) throw new ShapeError(`sparseMoeExperts: bad T=${T}`);
  if (!Number.isInteger(K) || K < 1 || K > E) throw new ShapeError(`sparseMoeExperts: K=${K} must be in 1..E (${E})`);
  if (!T) return;
  const S = T * K;
  const gu = gpu.temps.acquire(S * 2 * I * 4), h = gpu.temps.acquire(S * I * 4), yd = gpu.temps.acquire(S * D * 4);
  sparseGemv(gpu, rec, { x: a.x, w: a.experts.gateUp, y: gu, M: S, xStride: D }, { ids: a.ids, N: 2 * I, xDiv: K });
  siluMulRows(gpu, rec, gu, h, S, I);
  sparseGemv(gpu, rec, { x: h, w: a.experts.down, y: yd, M: S, xStride: I }, { ids: a.ids, N: D, xDiv: 1 });
  moeCombine(gpu, rec, { y: yd, inv: identity(gpu, S), weights: a.weights, shared: a.shared, out: a.out, T, K, D });
}
