/**
 * Pre-pruned compressed weights in safetensors files: a sparse weight `<name>` (e.g.
 * `model.layers.3.mlp.down_proj.weight`) is stored as the arrays of src/sparse/formats.ts under
 *
 *   <name>.sparse_config   U32 [5]            [format (0 = 2:4, 1 = V:2:M), N, K, V, M]  (V = M = 0 for 2:4)
 *   <name>.sparse_values   F32 or F16 [N, 2G] (F16 halves a pre-pruned F16 model's file; widened at read)
 *   <name>.sparse_meta     U32 [N, ceil(G/8)]
 *   <name>.sparse_columns  U32 [ceil(N/V), G] (V:2:M only)
 *
 * so a loader can take compressed tensors instead of pruning the dense `<name>` at load time.
 */
import { FormatError } from '../errors';
import type { SafetensorsDtype, TensorToWrite } from '../formats/safetensors';
import { checkVnm, metaStrideOf, type SparsePacked } from './formats';
import type { SparsityOption } from './apply';
import { f16ArrayToF32, f32ToF16 } from '../util/half';

export const SPARSE_SUFFIXES = ['.sparse_config', '.sparse_values', '.sparse_meta', '.sparse_columns'] as const;

/** The compressed tensors of one weight; `values: 'F16'` rounds the kept values to half precision. */
export function sparseToTensors(name: string, p: SparsePacked, values: 'F32' | 'F16' = 'F32'): Record<string, TensorToWrite> {
  const vnm = p.format === 'vnm';
  const out: Record<string, TensorToWrite> = {
    [`${name}.sparse_config`]: { dtype: 'U32', shape: [5], data: new Uint32Array([vnm ? 1 : 0, p.N, p.K, vnm ? p.V : 0, vnm ? p.M : 0]) },
    [`${name}.sparse_values`]: values === 'F16' ? { dtype: 'F16', shape: [p.N, 2 * p.G], data: Uint16Array.from(p.values, f32ToF16) } : { dtype: 'F32', shape: [p.N, 2 * p.G], data: p.values },
    [`${name}.sparse_meta`]: { dtype: 'U32', shape: [p.N, p.metaStride], data: p.meta },
  };
  if (vnm) out[`${name}.sparse_columns`] = { dtype: 'U32', shape: [Math.ceil(p.N / p.V), p.G], data: p.columns };
  return out;
}

export interface TensorBytes { dtype: SafetensorsDtype; shape: number[]; data: Uint8Array }

/** True when `<name>` is stored compressed (its config tensor exists). */
export const hasSparseTensors = (name: string, has: (tensor: string) => boolean) => has(`${name}.sparse_config`);

/** Reads a compressed weight back (copies the bytes into aligned typed arrays); validates every shape. */
export function sparseFromTensors(name: string, get: (tensor: string) => TensorBytes | undefined): SparsePacked {
  const read = <T extends Uint32Array | Float32Array>(suffix: string, dtype: SafetensorsDtype, shape: number[], make: (b: ArrayBuffer) => T): T => {
    const t = get(`${name}${suffix}`);
    if (!t) throw new FormatError(`sparse weight '${name}': tensor '${name}${suffix}' is missing`, { tensor: name + suffix });
    const half = dtype === 'F32' && t.dtype === 'F16';
    if ((t.dtype !== dtype && !half) || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new FormatError(`sparse weight '${name}': '${name}${suffix}' is ${t.dtype} ${JSON.stringify(t.shape)}, expected ${dtype}${dtype === 'F32' ? ' or F16' : ''} ${JSON.stringify(shape)}`, { tensor: name + suffix });
    }
    if (half) return f16ArrayToF32(new Uint16Array(t.data.slice().buffer)) as T;
    return make(t.data.slice().buffer);
  };
  const cfg = read('.sparse_config', 'U32', [5], (b) => new Uint32Array(b));
  const [fmt, N, K, V, M] = cfg;
  if (fmt > 1 || !N || !K) throw new FormatError(`sparse weight '${name}': bad config ${Array.from(cfg)}`);
  if (fmt === 1) {
    try { checkVnm(name, V, M); } catch (e) { throw new FormatError(`sparse weight '${name}': ${(e as Error).message}`); }
  }
  const GW = fmt === 0 ? 4 : M, G = Math.ceil(K / GW), metaStride = metaStrideOf(G);
  const values = read('.sparse_values', 'F32', [N, 2 * G], (b) => new Float32Array(b));
  const meta = read('.sparse_meta', 'U32', [N, metaStride], (b) => new Uint32Array(b));
  if (fmt === 0) return { format: '2:4', N, K, G, values, meta, metaStride };
  const columns = read('.sparse_columns', 'U32', [Math.ceil(N / V), G], (b) => new Uint32Array(b));
  for (const w of columns) {
    const c = [w & 255, (w >>> 8) & 255, (w >>> 16) & 255, w >>> 24];
    if (!(c[0] < c[1] && c[1] < c[2] && c[2] < c[3] && c[3] < M)) throw new FormatError(`sparse weight '${name}': column word ${w.toString(16)} is not 4 ascending offsets below M = ${M}`);
  }
  return { format: 'vnm', N, K, V, M, G, values, columns, meta, metaStride };
}

/** Whether a stored compressed weight has the pattern of `o` (re-packing it then keeps exactly its values). */
export function sameSparsity(p: SparsePacked, o: SparsityOption): boolean {
  return p.format === '2:4' ? o.format === '2:4' : o.format === 'vnm' && p.V === (o.v ?? 64) && p.M === (o.m ?? 8);
}
