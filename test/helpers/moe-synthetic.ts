/**
 * A skewed synthetic router for the load-balancing tests: per layer, random gate weights plus a skew
 * along one direction that every hidden state shares, so a few experts win most tokens.
 */
import { randomNormal } from '../../src/util/random';
import type { MoeRouting } from '../../src/kernels/moe.ref';

export interface SyntheticRouter {
  routing: MoeRouting;
  D: number;
  /** token id → hidden state [D] (rows of a [V, D] table) */
  table: Float32Array;
  V: number;
  /** per layer: gate weights [E, D] */
  gates: Map<number, Float32Array>;
}

export function skewedRouter(layers: number[], E: number, K: number, D: number, V: number, seed: number, routing: Partial<MoeRouting> = {}): SyntheticRouter {
  const table = randomNormal(V * D, seed, 1);
  // shared direction u = e_0: every token gets +2 on it
  for (let v = 0; v < V; v++) table[v * D] = 2 + 0.3 * table[v * D];
  const gates = new Map<number, Float32Array>();
  layers.forEach((l, i) => {
    const g = randomNormal(E * D, seed + 100 + i, 0.15);
    // expert e leans on u by a skew that decays with e (a rotated order per layer)
    for (let e = 0; e < E; e++) g[e * D] = 0.6 * Math.exp(-((e + 3 * i) % E) / 3);
    gates.set(l, g);
  });
  return {
    routing: { experts: E, topK: K, nGroup: 1, topkGroup: 1, scoring: 'sigmoid', normTopkProb: true, routedScalingFactor: 1, hasBias: true, ...routing },
    D, table, V, gates,
  };
}

/** [T, D] hidden states of a batch of token ids. */
export function hiddenOf(r: SyntheticRouter, tokens: number[]): Float32Array {
  const x = new Float32Array(tokens.length * r.D);
  tokens.forEach((tok, t) => x.set(r.table.subarray(tok * r.D, (tok + 1) * r.D), t * r.D));
  return x;
}
