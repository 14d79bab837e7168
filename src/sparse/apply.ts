/**
 * The `sparsity` load option and pruning one matrix to its pattern (then packing it):
 *
 *   sparsity: { format: '2:4' | 'vnm', v?: number, m?: number, apply: 'experts' | 'all-linear' }
 *
 * Which tensors an `apply` scope targets is the model's knowledge (model/tensors.ts isSparsityTarget):
 * 'experts' prunes the routed experts' projections, 'all-linear' every linear projection of the blocks
 * except kv_b (MLA reads it inside the attention kernels as a dense matrix); never the embedding,
 * lm_head or the MoE router.
 */
import { prune24, pruneVnm, type PruneStats } from './prune';
import { pack24, packVnm, type SparsePacked } from './formats';

export interface SparsityOption {
  format: '2:4' | 'vnm';
  /** Rows per block (V:2:M), default 64. */
  v?: number;
  /** Columns per group (V:2:M), default 8. */
  m?: number;
  apply: 'experts' | 'all-linear';
  /**
   * Permute each pruned MLP's intermediate channels first (src/sparse/permute.ts: down_proj's input
   * columns with gate/up's rows, an exact rewrite) so the pattern keeps more of down_proj. Off unless set
   * (`webmoe prune --permute`): it measured no perplexity gain on the bundled model (docs/sparsity.md)
   * and searches at every load.
   */
  permute?: boolean;
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
