/**
 * Which checkpoint tensors a `sparsity` load option touches, and pruning a whole checkpoint's tensors
 * on the host (for quality studies and for writing pre-pruned checkpoints).
 *
 *   sparsity: { format: '2:4' | 'vnm', v?: number, m?: number, apply: 'experts' | 'all-linear' }
 *
 * - 'experts': the routed experts' gate/up/down projections (`mlp.experts.<e>.*_proj.weight`).
 * - 'all-linear': every linear projection of the blocks that runs as a linear layer: attention
 *   (q_a/q_b/q, kv_a_proj_with_mqa, o), dense MLPs, routed and shared experts. Never the embedding,
 *   lm_head or the MoE router (`mlp.gate.weight`): small next to the experts and sensitive. Never
 *   `kv_b_proj`: MLA consumes it inside the attention kernels (absorbed into the query and output as
 *   W_UK / W_UV, src/kernels/mla.ts), which read it as a dense matrix.
 */
import { ShapeError } from '../errors';
import { prune24, pruneStats, pruneVnm, type PruneStats } from './prune';
import { pack24, packVnm, type SparsePacked } from './formats';

export interface SparsityOption {
  format: '2:4' | 'vnm';
  /** Rows per block (V:2:M), default 64. */
  v?: number;
  /** Columns per group (V:2:M), default 8. */
  m?: number;
  apply: 'experts' | 'all-linear';
}

const EXPERT = /^model\.layers\.\d+\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight$/;
const LINEAR = /^model\.layers\.\d+\.(self_attn\.(q_a_proj|q_b_proj|q_proj|kv_a_proj_with_mqa|o_proj)|mlp\.(gate|up|down)_proj|mlp\.shared_experts\.(gate|up|down)_proj|mlp\.experts\.\d+\.(gate|up|down)_proj)\.weight$/;

/** Whether the tensor `name` (Hugging Face DeepSeek naming) is pruned under `apply`. */
export function isSparsityTarget(name: string, apply: SparsityOption['apply']): boolean {
  return apply === 'experts' ? EXPERT.test(name) : LINEAR.test(name);
}

/** A short label for reports: "2:4", "64:2:8". */
export const sparsityLabel = (o: Pick<SparsityOption, 'format' | 'v' | 'm'>) => (o.format === '2:4' ? '2:4' : `${o.v ?? 64}:2:${o.m ?? 8}`);

/** Prunes one [N, K] matrix to the option's pattern (importance |w| or |w|·norms). */
export function pruneMatrix(w: Float32Array, N: number, K: number, o: Pick<SparsityOption, 'format' | 'v' | 'm'>, importance?: Float32Array): { pruned: Float32Array } & PruneStats {
  return o.format === '2:4' ? prune24(w, N, K, importance) : pruneVnm(w, N, K, o.v ?? 64, o.m ?? 8, importance);
}

/** Prunes one [N, K] matrix to a pattern and packs it (the columns pruneVnm chose, not inferred ones). */
export function prunePacked(w: Float32Array, N: number, K: number, o: Pick<SparsityOption, 'format' | 'v' | 'm'>, importance?: Float32Array): { packed: SparsePacked } & PruneStats {
  if (o.format === '2:4') {
    const r = prune24(w, N, K, importance);
    return { packed: pack24(r.pruned, N, K), keptNormFraction: r.keptNormFraction, keptL1Fraction: r.keptL1Fraction };
  }
  const V = o.v ?? 64, M = o.m ?? 8;
  const r = pruneVnm(w, N, K, V, M, importance);
  return { packed: packVnm(r.pruned, N, K, V, M, r.columns), keptNormFraction: r.keptNormFraction, keptL1Fraction: r.keptL1Fraction };
}

export interface HostTensor { name: string; shape: number[]; data: Float32Array }

/**
 * Prunes every targeted 2-D tensor of a checkpoint (others pass through untouched) and reports the
 * kept-norm fraction over the targeted tensors and how many were pruned.
 */
export function pruneModelTensors(tensors: HostTensor[], o: SparsityOption, importance?: (name: string) => Float32Array | undefined): { tensors: HostTensor[]; pruned: number; keptNormFraction: number; keptL1Fraction: number } {
  let total2 = 0, kept2 = 0, total1 = 0, kept1 = 0, pruned = 0;
  const out = tensors.map((t) => {
    if (!isSparsityTarget(t.name, o.apply)) return t;
    if (t.shape.length !== 2) throw new ShapeError(`pruneModelTensors: '${t.name}' is ${JSON.stringify(t.shape)}, not a matrix`);
    const [N, K] = t.shape;
    const r = pruneMatrix(t.data, N, K, o, importance?.(t.name));
    const s = pruneStats(t.data, r.pruned);
    let n2 = 0, n1 = 0;
    for (const v of t.data) { n2 += v * v; n1 += Math.abs(v); }
    total2 += n2; kept2 += n2 * s.keptNormFraction ** 2; total1 += n1; kept1 += n1 * s.keptL1Fraction;
    pruned++;
    return { ...t, data: r.pruned };
  });
  return { tensors: out, pruned, keptNormFraction: total2 ? Math.sqrt(kept2 / total2) : 1, keptL1Fraction: total1 ? kept1 / total1 : 1 };
}
