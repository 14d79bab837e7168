/**
 * Builds a backend's weights from a checkpoint, streaming tensors in file order. Each tensor is turned
 * into its backend form as soon as it (and its FP8 scale, for FP8 weights) has arrived, so host memory
 * holds at most one MoE layer's experts at a time, never the whole file.
 */
import type { Backend, HostExpert, HostMatrix, HostMoe, LayerWeights, MatrixRole, ModelWeights } from './deepseek';
import { names } from './deepseek';
import type { ModelConfig } from './config';
import { isMoeLayer, expectedTensorShapes } from './config';
import { SPARSE_SUFFIXES, sparseFromTensors, sameSparsity } from '../sparse/tensors';
import { sparsityLabel, type SparsityOption } from '../sparse/apply';
import { unpack } from '../sparse/formats';
import type { Checkpoint, LoadProgress } from '../model/checkpoint';
import { toFloat32, type SafetensorsDtype } from '../formats/safetensors';
import { FormatError, ShapeError, UnsupportedError } from '../errors';

interface RawTensor { dtype: SafetensorsDtype; shape: number[]; data: Uint8Array }

/** Every tensor the model reads, in the order the architecture uses them. */
export function modelTensorNames(cfg: ModelConfig, available: (name: string) => boolean): string[] {
  const out = [names.embed, names.norm];
  if (!cfg.tieWordEmbeddings) out.push(names.lmHead);
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = names.layer(i);
    out.push(`${p}.input_layernorm.weight`, `${p}.post_attention_layernorm.weight`);
    const attn = cfg.qLoraRank ? ['q_a_proj', 'q_b_proj'] : ['q_proj'];
    for (const n of [...attn, 'kv_a_proj_with_mqa', 'kv_b_proj', 'o_proj']) out.push(`${p}.self_attn.${n}.weight`);
    if (cfg.qLoraRank) out.push(`${p}.self_attn.q_a_layernorm.weight`);
    out.push(`${p}.self_attn.kv_a_layernorm.weight`);
    const proj = (prefix: string) => ['gate_proj', 'up_proj', 'down_proj'].map((n) => `${prefix}.${n}.weight`);
    if (isMoeLayer(cfg, i)) {
      out.push(`${p}.mlp.gate.weight`);
      if (available(`${p}.mlp.gate.e_score_correction_bias`)) out.push(`${p}.mlp.gate.e_score_correction_bias`);
      for (let e = 0; e < cfg.nRoutedExperts; e++) out.push(...proj(`${p}.mlp.experts.${e}`));
      if (cfg.nSharedExperts > 0) out.push(...proj(`${p}.mlp.shared_experts`));
    } else {
      out.push(...proj(`${p}.mlp`));
    }
  }
  // FP8 weights carry a sibling scale; pre-pruned weights are stored as their compressed parts.
  return out.flatMap((n) => {
    if (n.endsWith('.weight') && available(n.replace(/\.weight$/, '.weight_scale_inv'))) return [n, n.replace(/\.weight$/, '.weight_scale_inv')];
    if (!available(n) && available(`${n}.sparse_config`)) return SPARSE_SUFFIXES.map((s) => n + s).filter(available);
    return [n];
  });
}

function roleOf(name: string): MatrixRole {
  if (name === names.lmHead) return 'lm_head';
  if (name.endsWith('.kv_b_proj.weight')) return 'kv_b';
  if (name.includes('.self_attn.')) return 'attn';
  if (name.includes('.shared_experts.')) return 'shared';
  return 'mlp';
}

export async function buildWeights<T, W, E>(
  be: Backend<T, W, E>,
  cfg: ModelConfig,
  ckpt: Checkpoint,
  opts: { onProgress?: (p: LoadProgress) => void; signal?: AbortSignal; /** Every pre-pruned weight must have this pattern (the sparsity was taken from the file). */ storedPattern?: SparsityOption } = {},
): Promise<ModelWeights<W, E>> {
  const wanted = modelTensorNames(cfg, (n) => ckpt.tensors.has(n));
  const expected = expectedTensorShapes(cfg);
  const byName = new Map<string, W>();
  const pendingFp8 = new Map<string, RawTensor>();
  const scales = new Map<string, Float32Array>();
  interface MoeParts { gate?: Float32Array; bias?: Float32Array | null; experts: Partial<HostExpert>[]; shared: Partial<HostExpert> }
  const moeParts = new Map<number, MoeParts>();
  const moeDone = new Map<number, E>();
  const shapeOf = (raw: RawTensor): [number, number] => [raw.shape[0], raw.shape.length > 1 ? raw.shape[1] : 1];

  const matrixOf = (name: string, raw: RawTensor): HostMatrix | null => {
    const [N, K] = shapeOf(raw);
    if (raw.dtype === 'F8_E4M3') {
      const scaleInv = scales.get(name);
      if (!scaleInv) { pendingFp8.set(name, raw); return null; }
      return { N, K, fp8: { bytes: raw.data, scaleInv } };
    }
    return { N, K, f32: toFloat32(raw.dtype, raw.data) };
  };

  const moeLayerOf = (name: string) => {
    const m = /^model\.layers\.(\d+)\.mlp\.(gate\.weight|gate\.e_score_correction_bias|experts\.(\d+)\.(gate|up|down)_proj\.weight|shared_experts\.(gate|up|down)_proj\.weight)$/.exec(name);
    if (!m) return null;
    return { layer: +m[1], what: m[2], expert: m[3] !== undefined ? +m[3] : -1, proj: (m[4] ?? m[5]) as keyof HostExpert | undefined };
  };

  const finishMoe = (layer: number) => {
    const p = moeParts.get(layer)!;
    const complete = (e: Partial<HostExpert>) => !!(e.gate && e.up && e.down);
    const hasBias = ckpt.tensors.has(`${names.layer(layer)}.mlp.gate.e_score_correction_bias`);
    if (!p.gate || (hasBias && !p.bias) || p.experts.length < cfg.nRoutedExperts || !p.experts.every(complete)) return;
    if (cfg.nSharedExperts > 0 && !complete(p.shared)) return;
    const parts: HostMoe = { gate: p.gate, bias: p.bias ?? null, experts: p.experts as HostExpert[], shared: cfg.nSharedExperts > 0 ? (p.shared as HostExpert) : null };
    moeDone.set(layer, be.moe(layer, parts));
    moeParts.delete(layer);
  };

  // Parts of pre-pruned weights until all have arrived; then the weight goes on as the dense matrix it
  // stands for (a backend with a sparsity policy packs it again, and finds exactly the stored pattern).
  const sparseParts = new Map<string, Map<string, RawTensor>>();
  const acceptSparsePart = (name: string, raw: RawTensor) => {
    const base = name.slice(0, name.lastIndexOf('.sparse_'));
    const parts = sparseParts.get(base) ?? new Map<string, RawTensor>();
    sparseParts.set(base, parts);
    parts.set(name, raw);
    if (SPARSE_SUFFIXES.some((s) => ckpt.tensors.has(base + s) && !parts.has(base + s))) return;
    sparseParts.delete(base);
    const packed = sparseFromTensors(base, (t) => parts.get(t));
    const want = expected.get(base);
    if (want && (packed.N !== want[0] || packed.K !== want[1])) throw new ShapeError(`sparse weight '${base}' is [${packed.N}, ${packed.K}], but config.json implies [${want}]`);
    if (opts.storedPattern && !sameSparsity(packed, opts.storedPattern)) {
      const label = sparsityLabel(packed.format === '2:4' ? packed : { format: 'vnm', v: packed.V, m: packed.M });
      throw new UnsupportedError(`sparse weight '${base}' is ${label}, other pre-pruned weights ${sparsityLabel(opts.storedPattern)}: one pattern per checkpoint (or pass a sparsity option)`, { tensor: base });
    }
    const dense = unpack(packed);
    accept(base, { dtype: 'F32', shape: [packed.N, packed.K], data: new Uint8Array(dense.buffer) });
  };

  const accept = (name: string, raw: RawTensor) => {
    if (SPARSE_SUFFIXES.some((s) => name.endsWith(s))) { acceptSparsePart(name, raw); return; }
    if (name.endsWith('.weight_scale_inv')) {
      const w = name.replace(/\.weight_scale_inv$/, '.weight');
      scales.set(w, toFloat32(raw.dtype, raw.data));
      const pending = pendingFp8.get(w);
      if (pending) { pendingFp8.delete(w); accept(w, pending); }
      return;
    }
    const moe = moeLayerOf(name);
    if (moe) {
      const p: MoeParts = moeParts.get(moe.layer) ?? { experts: Array.from({ length: cfg.nRoutedExperts }, () => ({})), shared: {} };
      moeParts.set(moe.layer, p);
      if (moe.what === 'gate.weight') p.gate = toFloat32(raw.dtype, raw.data);
      else if (moe.what === 'gate.e_score_correction_bias') p.bias = toFloat32(raw.dtype, raw.data);
      else {
        const m = matrixOf(name, raw);
        if (!m) return;
        const f32 = m.f32 ?? toFloat32('F8_E4M3', m.fp8!.bytes, { scaleInv: m.fp8!.scaleInv, shape: [m.N, m.K] });
        if (moe.expert >= 0) p.experts[moe.expert][moe.proj!] = f32;
        else p.shared[moe.proj!] = f32;
      }
      finishMoe(moe.layer);
      return;
    }
    const isVector = raw.shape.length === 1;
    if (isVector) { byName.set(name, be.vector(name, toFloat32(raw.dtype, raw.data))); return; }
    const m = matrixOf(name, raw);
    if (!m) return;
    byName.set(name, name === names.embed ? be.embedding(name, m) : be.matrix(name, m, roleOf(name)));
  };

  await ckpt.stream(wanted, (name, t) => accept(name, t as RawTensor), opts);

  const get = (name: string): W => {
    const w = byName.get(name);
    if (w === undefined) throw new FormatError(`tensor ${name} was not loaded`, { tensor: name });
    return w;
  };
  const layers: LayerWeights<W, E>[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = names.layer(i);
    const a = `${p}.self_attn`;
    const L: LayerWeights<W, E> = {
      inputNorm: get(`${p}.input_layernorm.weight`),
      postNorm: get(`${p}.post_attention_layernorm.weight`),
      attn: {
        ...(cfg.qLoraRank
          ? { qA: get(`${a}.q_a_proj.weight`), qANorm: get(`${a}.q_a_layernorm.weight`), qB: get(`${a}.q_b_proj.weight`) }
          : { q: get(`${a}.q_proj.weight`) }),
        kvA: get(`${a}.kv_a_proj_with_mqa.weight`),
        kvANorm: get(`${a}.kv_a_layernorm.weight`),
        kvB: get(`${a}.kv_b_proj.weight`),
        o: get(`${a}.o_proj.weight`),
      },
    };
    if (isMoeLayer(cfg, i)) {
      const e = moeDone.get(i);
      if (e === undefined) throw new FormatError(`MoE layer ${i}: some expert tensors are missing`, { layer: i });
      L.moe = e;
    } else {
      L.mlp = { gate: get(`${p}.mlp.gate_proj.weight`), up: get(`${p}.mlp.up_proj.weight`), down: get(`${p}.mlp.down_proj.weight`) };
    }
    layers.push(L);
  }
  const embed = get(names.embed);
  // Tied embeddings: the head reads the embedding table as a [V, D] matrix.
  const lmHead = cfg.tieWordEmbeddings ? embed : get(names.lmHead);
  return { embed, norm: get(names.norm), lmHead, layers };
}
