/**
 * CPU references for the GGUF kernels: dequantise the raw blocks exactly as ggml does
 * (formats/gguf-blocks.ts), then the f32 linear layer / MoE experts in float64 accumulation.
 */
import { dequantize, type DecodableType } from '../formats/gguf-blocks';
import { matmulRef } from './matmul.ref';
import { moeExpertsRef, type ExpertWeightsRef } from './moe.ref';

/** Y[M, N] = X[M, K] · Wᵀ with W = dequantise(bytes) ([N, K]). */
export function ggufLinearRef(x: Float32Array, type: DecodableType, bytes: Uint8Array, M: number, N: number, K: number): Float32Array {
  return matmulRef(x, dequantize(type, bytes, N * K), M, N, K);
}

/** Stacked GGUF experts (ffn_gate_exps / ffn_up_exps [E, I, D], ffn_down_exps [E, D, I]) dequantised per expert. */
export function ggufExpertsToRef(g: { type: DecodableType; bytes: Uint8Array }, u: { type: DecodableType; bytes: Uint8Array }, d: { type: DecodableType; bytes: Uint8Array }, E: number, I: number, D: number): ExpertWeightsRef[] {
  const gate = dequantize(g.type, g.bytes, E * I * D), up = dequantize(u.type, u.bytes, E * I * D), down = dequantize(d.type, d.bytes, E * D * I);
  return Array.from({ length: E }, (_, e) => ({
    gate: gate.subarray(e * I * D, (e + 1) * I * D), up: up.subarray(e * I * D, (e + 1) * I * D), down: down.subarray(e * D * I, (e + 1) * D * I),
  }));
}

/** out[t] = Σ_j w[t][j]·E_{ids[t][j]}(x[t]) + shared[t] on dequantised GGUF experts. */
export function ggufMoeExpertsRef(x: Float32Array, T: number, D: number, I: number, experts: ExpertWeightsRef[], ids: number[][], weights: number[][], shared: Float32Array | null): Float32Array {
  return moeExpertsRef(x, T, D, I, experts, ids, weights, shared);
}

/** out[t] = dequantise(table row ids[t]) ([T, D]); ids ≥ V give NaN rows (the kernel leaves them unwritten). */
export function ggufEmbeddingRef(type: DecodableType, bytes: Uint8Array, V: number, D: number, ids: number[]): Float32Array {
  const table = dequantize(type, bytes, V * D);
  const out = new Float32Array(ids.length * D).fill(NaN);
  ids.forEach((id, t) => { if (id < V) out.set(table.subarray(id * D, (id + 1) * D), t * D); });
  return out;
}
