/** The router configuration of one MoE layer and its validation, shared by the GPU router (moe.ts) and its CPU reference (moe.ref.ts). */

/** Router configuration of one MoE layer (from config.json). */
export interface MoeRouting {
  /** n_routed_experts */
  experts: number;
  /** num_experts_per_tok */
  topK: number;
  /** n_group (1 = no group limit) */
  nGroup: number;
  /** topk_group */
  topkGroup: number;
  scoring: 'sigmoid' | 'softmax';
  /** norm_topk_prob: divide the chosen weights by their sum */
  normTopkProb: boolean;
  /** routed_scaling_factor (1 when absent) */
  routedScalingFactor: number;
  /** e_score_correction_bias present (noaux_tc) */
  hasBias: boolean;
}

/** Why `r` cannot route (a message), or null when it can. */
export function checkRouting(r: MoeRouting): string | null {
  if (!(r.experts > 0) || !Number.isInteger(r.experts)) return `experts must be a positive integer, got ${r.experts}`;
  if (!(r.topK > 0) || !Number.isInteger(r.topK) || r.topK > r.experts) return `topK ${r.topK} must be in 1..experts (${r.experts})`;
  if (!(r.nGroup > 0) || r.experts % r.nGroup !== 0) return `nGroup ${r.nGroup} must divide experts ${r.experts}`;
  if (!(r.topkGroup > 0) || r.topkGroup > r.nGroup) return `topkGroup ${r.topkGroup} must be in 1..nGroup (${r.nGroup})`;
  if (r.topkGroup * (r.experts / r.nGroup) < r.topK) return `topkGroup·(experts/nGroup) = ${r.topkGroup * (r.experts / r.nGroup)} < topK ${r.topK}: not enough unmasked experts`;
  if (r.scoring !== 'sigmoid' && r.scoring !== 'softmax') return `scoring must be sigmoid or softmax, got ${r.scoring}`;
  return null;
}
