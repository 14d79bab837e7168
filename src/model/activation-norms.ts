/**
 * Calibration activation norms for importance-aware pruning (Wanda: importance of W[n, k] = |W[n, k]|·‖x_k‖,
 * src/sparse/prune.ts): runs calibration text through the CPU reference forward pass and returns, per MLP
 * weight, the L2 norm over tokens of each of its input channels:
 *
 * - gate_proj / up_proj of a routed expert: the MoE layer's (normed) input, over the tokens routed to that
 *   expert; of a shared expert or a dense MLP: over all tokens.
 * - down_proj: the intermediate activation silu(gate·x) ⊙ up·x over the same tokens — the channels the
 *   permutation of src/sparse/permute.ts moves.
 *
 * Attention projections get none (their importance stays |w|). Calibration text should not be the
 * held-out text a perplexity is measured on.
 */
import type { Checkpoint } from './checkpoint';
import { CpuBackend, type CpuMoe, type CpuTensor, type CpuWeight } from './cpu-backend';
import type { HostMatrix, HostMoe, MatrixRole } from './deepseek';
import { forward } from './deepseek';
import { buildWeights } from './load';
import type { ModelConfig } from './config';
import { ArgumentError } from '../errors';

/** Σ x² per channel, accumulated in f64. */
class SquareSums {
  sums = new Map<string, Float64Array>();
  add(name: string, x: ArrayLike<number>, offset: number, n: number) {
    let s = this.sums.get(name);
    if (!s) this.sums.set(name, (s = new Float64Array(n)));
    for (let i = 0; i < n; i++) s[i] += x[offset + i] * x[offset + i];
  }
}

/** The intermediate activation silu(gate·x) ⊙ up·x of one row x [D]. */
function intermediate(x: Float32Array, xo: number, gate: Float32Array, up: Float32Array, D: number, I: number): Float64Array {
  const h = new Float64Array(I);
  for (let i = 0; i < I; i++) {
    let g = 0, u = 0;
    for (let d = 0; d < D; d++) { g += gate[i * D + d] * x[xo + d]; u += up[i * D + d] * x[xo + d]; }
    h[i] = (g / (1 + Math.exp(-g))) * u;
  }
  return h;
}

/** The CPU backend, recording the MLP inputs it sees. */
class RecordingBackend extends CpuBackend {
  readonly sq = new SquareSums();
  private names = new WeakMap<object, string>();
  private moeLayer = new WeakMap<object, number>();
  constructor(private c: ModelConfig) { super(c); }

  override matrix(name: string, m: HostMatrix, role: MatrixRole): CpuWeight {
    const w = super.matrix(name, m, role);
    this.names.set(w, name);
    return w;
  }
  override moe(layer: number, p: HostMoe): CpuMoe {
    const e = super.moe(layer, p);
    this.moeLayer.set(e, layer);
    return e;
  }
  /** One MLP's inputs (prefix `…mlp.` / `…mlp.experts.3.` / `…mlp.shared_experts.`) over rows `rows` of x. */
  private record(prefix: string, x: CpuTensor, rows: number[], gate: Float32Array, up: Float32Array) {
    const D = x.cols, I = gate.length / D;
    for (const t of rows) {
      this.sq.add(`${prefix}gate_proj.weight`, x.data, t * D, D);
      this.sq.add(`${prefix}up_proj.weight`, x.data, t * D, D);
      this.sq.add(`${prefix}down_proj.weight`, intermediate(x.data, t * D, gate, up, D, I), 0, I);
    }
  }
  override mlp(x: CpuTensor, gate: CpuWeight, up: CpuWeight, down: CpuWeight): CpuTensor {
    const name = this.names.get(gate);
    if (name?.endsWith('gate_proj.weight')) this.record(name.slice(0, -'gate_proj.weight'.length), x, [...Array(x.rows).keys()], gate.data, up.data);
    return super.mlp(x, gate, up, down);
  }
  override moeForward(layer: number, x: CpuTensor, e: CpuMoe, cfg: ModelConfig): CpuTensor {
    const out = super.moeForward(layer, x, e, cfg);
    const ids = this.routing.get(layer)!.ids;
    const all = [...Array(x.rows).keys()];
    const L = this.moeLayer.get(e) ?? layer;
    e.experts.forEach((w, j) => {
      const rows = all.filter((t) => ids[t].includes(j));
      if (rows.length) this.record(`model.layers.${L}.mlp.experts.${j}.`, x, rows, w.gate, w.up);
    });
    if (e.shared) this.record(`model.layers.${L}.mlp.shared_experts.`, x, all, e.shared.gate, e.shared.up);
    return out;
  }
}

/**
 * ‖x_k‖ per input channel of every MLP weight, over `batches` of token ids (each batch one forward from
 * an empty cache, at most the model's context). Experts no calibration token reached get no entry.
 */
export async function activationNorms(ckpt: Checkpoint, batches: number[][]): Promise<Map<string, Float32Array>> {
  const cfg = ckpt.config;
  if (!batches.length || batches.some((b) => !b.length)) throw new ArgumentError('activationNorms: no calibration tokens');
  const be = new RecordingBackend(cfg);
  const w = await buildWeights(be, cfg, ckpt);
  for (const b of batches) {
    be.truncate(0);
    forward(be, cfg, w, b, { past: 0 });
  }
  return new Map([...be.sq.sums].map(([n, s]) => [n, Float32Array.from(s, Math.sqrt)]));
}
