/**
 * Writing a pre-pruned checkpoint: every weight the option targets is pruned (importance |w|, or the
 * caller's) and stored compressed (src/sparse/tensors.ts); every other tensor keeps its bytes and dtype.
 * Loading the result without a `sparsity` option runs it on the sparse kernels with exactly these values.
 */
import type { Checkpoint } from './checkpoint';
import { writeSafetensors, type TensorToWrite } from '../formats/safetensors';
import { scaleInvName } from './config';
import { isSparsityTarget, prunePacked, type SparsityOption } from '../sparse/apply';
import { sparseToTensors } from '../sparse/tensors';

export interface PrunedCheckpoint {
  /** The safetensors file (all tensors of the checkpoint, targets compressed). */
  file: Uint8Array;
  pruned: number;
  /** ‖W_pruned‖_F / ‖W‖_F over all pruned weights. */
  keptNormFraction: number;
  /** File bytes of the pruned weights before (as stored) and after (compressed). */
  bytesBefore: number;
  bytesAfter: number;
}

export async function writePrunedCheckpoint(
  ckpt: Checkpoint,
  o: SparsityOption,
  opts: { importance?: (name: string) => Float32Array | undefined; onTensor?: (name: string, done: number, total: number) => void; signal?: AbortSignal } = {},
): Promise<PrunedCheckpoint> {
  const names = [...ckpt.tensors.keys()];
  const targets = new Set(names.filter((n) => isSparsityTarget(n, o.apply) && ckpt.tensors.get(n)!.shape.length === 2));
  const out: Record<string, TensorToWrite> = {};
  let total2 = 0, kept2 = 0, bytesBefore = 0, bytesAfter = 0, done = 0;
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
    const w = await ckpt.readF32(name, opts.signal);
    const { packed, keptNormFraction: kept } = prunePacked(w, N, K, o, opts.importance?.(name));
    let n2 = 0;
    for (const v of w) n2 += v * v;
    total2 += n2;
    kept2 += n2 * kept * kept;
    const parts = sparseToTensors(name, packed);
    Object.assign(out, parts);
    bytesBefore += t.end - t.begin;
    for (const p of Object.values(parts)) bytesAfter += p.data.byteLength;
    opts.onTensor?.(name, done, names.length);
  }
  return { file: writeSafetensors(out), pruned: targets.size, keptNormFraction: total2 ? Math.sqrt(kept2 / total2) : 1, bytesBefore, bytesAfter };
}
