/**
 * Writing a pre-pruned checkpoint: every weight the option targets is pruned (importance |w|, or the
 * caller's) and stored compressed (src/sparse/tensors.ts); every other tensor keeps its bytes and dtype.
 * Loading the result without a `sparsity` option runs it on the sparse kernels with exactly these values
 * (storedSparsity recognises the pattern and scope). Also pruning a whole checkpoint's tensors on the
 * host (pruneModelTensors, for quality studies).
 */
import type { Checkpoint } from './checkpoint';
import { writeSafetensors, type TensorToWrite } from '../formats/safetensors';
import { scaleInvName } from './config';
import { ShapeError } from '../errors';
import { pruneMatrix, prunePacked, type SparsityOption } from '../sparse/apply';
import { pruneStats } from '../sparse/prune';
import { SPARSE_SUFFIXES, sparseToTensors } from '../sparse/tensors';
import { permuteColumns, permuteRows, searchInputPermutation, searchRowBlockOrder } from '../sparse/permute';
import { isSparsityTarget, parseTensorName } from './tensors';
import { patternLabel, selectPattern, type PatternSelection } from '../sparse/select';
import { ArgumentError } from '../errors';

/** `<prefix>down_proj.weight` of a gated MLP (dense layer, shared or routed expert). */
const MLP_DOWN = /^(.*\.mlp\.(?:experts\.\d+\.|shared_experts\.)?)down_proj\.weight$/;

export interface PermutableMlp { layer: number; gate: string; up: string; down: string }

/**
 * The MLPs whose intermediate channels can be permuted before pruning: gate, up and down all present
 * and all targets of the scope (then all three are rewritten in f32 anyway). Attention is left alone:
 * o_proj's input is the per-head attention output, which MLA computes from kv_b inside the kernels.
 */
export function permutableMlps(names: Iterable<string>, apply: SparsityOption['apply']): PermutableMlp[] {
  const all = new Set(names);
  const out: PermutableMlp[] = [];
  for (const down of all) {
    const m = MLP_DOWN.exec(down);
    if (!m) continue;
    const gate = `${m[1]}gate_proj.weight`, up = `${m[1]}up_proj.weight`;
    if (all.has(gate) && all.has(up) && [gate, up, down].every((n) => isSparsityTarget(n, apply))) out.push({ layer: parseTensorName(down)?.layer ?? -1, gate, up, down });
  }
  return out;
}

/**
 * Kept ‖W_pruned‖_F / ‖W‖_F of one MLP without and with its channel permutation: down_proj (input
 * channels, the matrix the search is for) and, for V:2:M, gate+up together (their V-row blocks,
 * searchRowBlockOrder; equal before and after for 2:4).
 */
export interface PermutationGain { down: string; layer: number; keptBefore: number; keptAfter: number; gateUpBefore: number; gateUpAfter: number }

/** How a permutation moves a tensor: down's columns (input channels) or gate/up's rows. */
type Move = { perm: Int32Array; axis: 'rows' | 'columns' };

const moved = (data: Float32Array, N: number, K: number, mv: Move | undefined) =>
  !mv ? data : mv.axis === 'columns' ? permuteColumns(data, N, K, mv.perm) : permuteRows(data, N, K, mv.perm);
/** Importance moves with its weight: K column norms follow a column move, N·K scores any move. */
const movedImportance = (imp: Float32Array | undefined, N: number, K: number, mv: Move | undefined) =>
  !imp || !mv || (imp.length === K && mv.axis === 'rows') ? imp
    : imp.length === K ? Float32Array.from(mv.perm, (p) => imp[p]) : moved(imp, N, K, mv);

/**
 * Searches one MLP's intermediate-channel permutation: down_proj's input groups first, then (V:2:M) the
 * order of whole groups for gate/up's row blocks, which leaves down's groups as they are. Records the
 * gains and, unless nothing moved, the moves.
 */
type Matrix = { data: Float32Array; shape: number[] };
function searchMlp(mlp: PermutableMlp, read: (name: string) => Matrix, o: SparsityOption, importance: ((name: string) => Float32Array | undefined) | undefined, moves: Map<string, Move>, gains: PermutationGain[]) {
  const down = read(mlp.down), gate = read(mlp.gate), up = read(mlp.up);
  const [D, I] = down.shape;
  const r = searchInputPermutation(down.data, D, I, o, { importance: importance?.(mlp.down) });
  const gImp = importance?.(mlp.gate);
  const rows = searchRowBlockOrder(gate.data, up.data, D, I, r.perm, o, { importance: gImp && gImp.length === D ? gImp : undefined });
  gains.push({ down: mlp.down, layer: mlp.layer, keptBefore: r.keptNormBefore, keptAfter: r.keptNormAfter, gateUpBefore: rows.keptBefore, gateUpAfter: rows.keptAfter });
  if (r.identity && rows.identity) return;
  moves.set(mlp.down, { perm: rows.perm, axis: 'columns' });
  moves.set(mlp.gate, { perm: rows.perm, axis: 'rows' });
  moves.set(mlp.up, { perm: rows.perm, axis: 'rows' });
}

export interface PrunedCheckpoint {
  /** The safetensors file (all tensors of the checkpoint, targets compressed). */
  file: Uint8Array;
  pruned: number;
  /** ‖W_pruned‖_F / ‖W‖_F over all pruned weights. */
  keptNormFraction: number;
  /** File bytes of the pruned weights before (as stored) and after (compressed). */
  bytesBefore: number;
  bytesAfter: number;
  /** Per permuted MLP (o.permute): down_proj's kept norm without and with the permutation. */
  permutation: PermutationGain[];
}

export async function writePrunedCheckpoint(
  ckpt: Checkpoint,
  o: SparsityOption,
  opts: { importance?: (name: string) => Float32Array | undefined; onTensor?: (name: string, done: number, total: number) => void; signal?: AbortSignal; /** Stored dtype of the kept values (default F32). */ values?: 'F32' | 'F16' } = {},
): Promise<PrunedCheckpoint> {
  const names = [...ckpt.tensors.keys()];
  const targets = new Set(names.filter((n) => isSparsityTarget(n, o.apply) && ckpt.tensors.get(n)!.shape.length === 2));
  const out: Record<string, TensorToWrite> = {};
  let total2 = 0, kept2 = 0, bytesBefore = 0, bytesAfter = 0, done = 0;
  const moves = new Map<string, Move>(), gains: PermutationGain[] = [];
  if (o.permute) {
    for (const mlp of permutableMlps(targets, o.apply)) {
      const m = new Map<string, Matrix>();
      for (const n of [mlp.down, mlp.gate, mlp.up]) m.set(n, { data: await ckpt.readF32(n, opts.signal), shape: ckpt.tensors.get(n)!.shape });
      searchMlp(mlp, (n) => m.get(n)!, o, opts.importance, moves, gains);
    }
  }
  for (const name of names) {
    done++;
    // An FP8 target's scale goes with it: the compressed values are dequantised f32.
    if (name.endsWith('.weight_scale_inv') && targets.has(name.replace(/\.weight_scale_inv$/, '.weight')) && scaleInvName(name.replace(/\.weight_scale_inv$/, '.weight')) === name) continue;
    const t = ckpt.tensors.get(name)!;
    if (!targets.has(name)) {
      const raw = await ckpt.readRaw(name, opts.signal);
      out[name] = { dtype: raw.dtype, shape: raw.shape, data: raw.data };
      continue;
    }
    const [N, K] = t.shape;
    const mv = moves.get(name);
    const w = moved(await ckpt.readF32(name, opts.signal), N, K, mv);
    const { packed, keptNormFraction: kept } = prunePacked(w, N, K, o, movedImportance(opts.importance?.(name), N, K, mv));
    let n2 = 0;
    for (const v of w) n2 += v * v;
    total2 += n2;
    kept2 += n2 * kept * kept;
    const parts = sparseToTensors(name, packed, opts.values);
    Object.assign(out, parts);
    bytesBefore += t.end - t.begin;
    for (const p of Object.values(parts)) bytesAfter += p.data.byteLength;
    opts.onTensor?.(name, done, names.length);
  }
  return { file: writeSafetensors(out), pruned: targets.size, keptNormFraction: total2 ? Math.sqrt(kept2 / total2) : 1, bytesBefore, bytesAfter, permutation: gains };
}

/**
 * The sparsity a pre-pruned checkpoint was written with, so a load without a `sparsity` option runs it on
 * the sparse kernels: the pattern from one weight's config (`readConfig`), the scope from which weights
 * are stored compressed. Null when none are, or when they are not exactly the targets of 'experts' or
 * 'all-linear' (then they load as dense matrices holding the pruned values).
 */
export async function storedSparsity(tensorNames: Iterable<string>, readConfig: (tensor: string) => Promise<Uint32Array>): Promise<{ option: SparsityOption; weights: string[] } | null> {
  const all = [...tensorNames];
  const sparse = all.filter((n) => n.endsWith('.sparse_config')).map((n) => n.slice(0, -'.sparse_config'.length));
  if (!sparse.length) return null;
  const weights = new Set([...all.filter((n) => !SPARSE_SUFFIXES.some((s) => n.endsWith(s))), ...sparse]);
  const set = new Set(sparse);
  const apply = (['experts', 'all-linear'] as const).find((a) => [...weights].every((n) => isSparsityTarget(n, a) === set.has(n)));
  if (!apply) return null;
  const [fmt, , , V, M] = await readConfig(`${sparse[0]}.sparse_config`);
  const option: SparsityOption = fmt === 0 ? { format: '2:4', apply } : { format: 'vnm', v: V, m: M, apply };
  return { option, weights: sparse };
}

/**
 * `sparsity: auto`: the pattern for a byte budget by the V:N:M paper's mask-diversity heuristic
 * (src/sparse/select.ts) over the matrices `apply` prunes. With routed experts, V must divide
 * moe_intermediate_size and hidden_size (the GPU stacks each expert's gate and up rows and the experts'
 * rows; a V-row block must not straddle two of them, or the stored pattern would not load exactly).
 */
export function autoSparsity(
  tensors: Iterable<{ name: string; shape: number[] }>,
  cfg: { nRoutedExperts: number; moeIntermediateSize: number; hiddenSize: number },
  apply: SparsityOption['apply'],
  targetRatio: number | undefined,
): { option: SparsityOption; selection: PatternSelection; label: string } {
  if (targetRatio === undefined) throw new ArgumentError("sparsity 'auto' needs a target ratio (packed bytes / dense f32 bytes of the pruned matrices, e.g. 0.45)");
  const shapes = [...tensors].filter((t) => t.shape.length === 2 && isSparsityTarget(t.name, apply)).map((t) => ({ N: t.shape[0], K: t.shape[1] }));
  const selection = selectPattern(shapes, targetRatio, { vDivides: cfg.nRoutedExperts > 0 ? [cfg.moeIntermediateSize, cfg.hiddenSize] : [] });
  return { option: { ...selection.choice, apply }, selection, label: patternLabel(selection.choice) };
}

export interface HostTensor { name: string; shape: number[]; data: Float32Array }

/**
 * Prunes every targeted 2-D tensor of a checkpoint (others pass through untouched) and reports the
 * kept-norm fraction over the targeted tensors and how many were pruned.
 */
export function pruneModelTensors(tensors: HostTensor[], o: SparsityOption, importance?: (name: string) => Float32Array | undefined): { tensors: HostTensor[]; pruned: number; keptNormFraction: number; keptL1Fraction: number; permutation: PermutationGain[] } {
  let total2 = 0, kept2 = 0, total1 = 0, kept1 = 0, pruned = 0;
  let permutation: PermutationGain[] = [];
  if (o.permute) {
    const r = permuteMlpTensors(tensors, o, importance);
    tensors = r.tensors;
    permutation = r.gains;
    const moves = r.moves;
    importance = importance && ((n) => { const t = tensors.find((x) => x.name === n)!; return movedImportance(importance!(n), t.shape[0], t.shape[1], moves.get(n)); });
  }
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
  return { tensors: out, pruned, keptNormFraction: total2 ? Math.sqrt(kept2 / total2) : 1, keptL1Fraction: total1 ? kept1 / total1 : 1, permutation };
}

/**
 * Permutes the intermediate channels of every MLP the scope prunes (permutableMlps) for o's pattern,
 * unpruned: the model computes the same function (up to float summation order).
 */
export function permuteMlpTensors(tensors: HostTensor[], o: SparsityOption, importance?: (name: string) => Float32Array | undefined): { tensors: HostTensor[]; gains: PermutationGain[]; moves: Map<string, Move> } {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const mlps = permutableMlps(byName.keys(), o.apply);
  const moves = new Map<string, Move>(), gains: PermutationGain[] = [];
  for (const mlp of mlps) searchMlp(mlp, (n) => byName.get(n)!, o, importance, moves, gains);
  return { tensors: tensors.map((t) => (moves.has(t.name) ? { ...t, data: moved(t.data, t.shape[0], t.shape[1], moves.get(t.name)) } : t)), gains, moves };
}
