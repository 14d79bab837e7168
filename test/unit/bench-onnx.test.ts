import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-web';
import { ProtoWriter, matmulModel, matmulNBitsModel, quantizeNBits, attentionModel, moeModel, gqaModel, moeDenseGraphModel } from '../../src/bench/onnx-builder';
import { mulberry32, randomUniform } from '../../src/util/random';

// The in-process ONNX builder, checked by running its models on onnxruntime-web's wasm (CPU) backend
// in Node against plain references. f32 tolerance 1e-5 (|x|, |w| ≤ 1, sums of ≤ 96 products in
// different orders); the quantised weights are compared through their dequantised values.
ort.env.wasm.numThreads = 1;
const TOL = 1e-5;

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < b.length; i++) {
    expect(Number.isFinite(a[i])).toBe(true);
    d = Math.max(d, Math.abs(a[i] - b[i]));
  }
  return d;
};

function matmulRef(x: Float32Array, w: Float32Array, M: number, N: number, K: number) {
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
    y[m * N + n] = s;
  }
  return y;
}

async function run(model: Uint8Array, feeds: Record<string, [Float32Array | Int32Array, number[]]>) {
  const s = await ort.InferenceSession.create(model, { executionProviders: ['wasm'] });
  const t: Record<string, ort.Tensor> = {};
  for (const [k, [d, dims]] of Object.entries(feeds)) t[k] = d instanceof Int32Array ? new ort.Tensor('int32', d, dims) : new ort.Tensor('float32', d, dims);
  const out = await s.run(t);
  await s.release();
  return Object.values(out)[0].data as Float32Array;
}

describe('protobuf writer', () => {
  it('encodes varints, negative int64, floats and nested messages as protobuf does', () => {
    expect([...new ProtoWriter().varint(300).finish()]).toEqual([0xac, 0x02]);
    expect([...new ProtoWriter().varint(-1).finish()]).toEqual([...Array(9).fill(0xff), 0x01]);
    expect([...new ProtoWriter().float(2, 1).finish()]).toEqual([0x15, 0, 0, 0x80, 0x3f]);
    expect([...new ProtoWriter().message(1, (w) => w.string(2, 'ab')).finish()]).toEqual([0x0a, 4, 0x12, 2, 0x61, 0x62]);
  });
});

describe('one-node ONNX models on the wasm backend', () => {
  const rnd = mulberry32(7);
  const shapes = [[1, 17, 64], [3, 5, 96], [7, 1, 32]].map(([M, N, K]) => ({ M, N, K, seed: Math.floor(rnd() * 1000) }));

  it.each(shapes)('MatMul f32 $M×$K·$K×$N', async ({ M, N, K, seed }) => {
    const x = randomUniform(M * K, seed), w = randomUniform(N * K, seed + 1);
    const wT = new Float32Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) wT[k * N + n] = w[n * K + k];
    expect(maxDiff(await run(matmulModel(M, N, K, wT), { X: [x, [M, K]] }), matmulRef(x, w, M, N, K))).toBeLessThan(TOL);
  });

  it.each([[4, 32], [8, 32], [4, 64]] as const)('MatMulNBits int%i block %i', async (bits, block) => {
    const M = 3, N = 9, K = 128;
    const x = randomUniform(M * K, 3), w = randomUniform(N * K, 4);
    const q = quantizeNBits(w, N, K, bits, block);
    // The quantisation itself: each weight within half a step of its block's scale.
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
      const scale = q.scales[n * (K / block) + Math.floor(k / block)];
      expect(Math.abs(q.dequant[n * K + k] - w[n * K + k])).toBeLessThanOrEqual(scale / 2 + 1e-7);
    }
    const got = await run(matmulNBitsModel(M, N, K, bits, block, q), { X: [x, [M, K]] });
    expect(maxDiff(got, matmulRef(x, q.dequant, M, N, K))).toBeLessThan(TOL);
  });

  // Causal only where its meaning is unambiguous: prefill (S = L) and decode (S = 1, no mask).
  it.each([[false, 3, 5], [true, 5, 5], [true, 1, 6]] as const)('MultiHeadAttention (causal %s, S %i, L %i)', async (causal, S, L) => {
    const H = 2, D = 8, Dv = 4;
    const q = randomUniform(S * H * D, 5), k = randomUniform(L * H * D, 6), v = randomUniform(L * H * Dv, 7);
    const ref = new Float32Array(S * H * Dv);
    for (let h = 0; h < H; h++) for (let i = 0; i < S; i++) {
      const last = causal ? i + L - S : L - 1;
      const sc: number[] = [];
      for (let j = 0; j <= last; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[i * H * D + h * D + d] * k[j * H * D + h * D + d];
        sc.push(s / Math.sqrt(D));
      }
      const mx = Math.max(...sc), e = sc.map((s) => Math.exp(s - mx)), z = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < Dv; d++) {
        let o = 0;
        for (let j = 0; j <= last; j++) o += (e[j] / z) * v[j * H * Dv + h * Dv + d];
        ref[i * H * Dv + h * Dv + d] = o;
      }
    }
    const got = await run(attentionModel(1, S, L, H, D, Dv, causal), { Q: [q, [1, S, H * D]], K: [k, [1, L, H * D]], V: [v, [1, L, H * Dv]] });
    expect(maxDiff(got, ref)).toBeLessThan(TOL);
  });

  it('MoE: SwiGLU experts, softmax over the top-k router logits', async () => {
    const T = 4, h = 16, I = 8, E = 4, k = 2;
    const gate = randomUniform(E * I * h, 1, -0.5, 0.5), up = randomUniform(E * I * h, 2, -0.5, 0.5), down = randomUniform(E * h * I, 3, -0.5, 0.5);
    const x = randomUniform(T * h, 4), logits = randomUniform(T * E, 5, -2, 2);
    const silu = (v: number) => v / (1 + Math.exp(-v));
    const ref = new Float32Array(T * h);
    for (let t = 0; t < T; t++) {
      const top = [...logits.subarray(t * E, t * E + E)].map((l, e) => ({ l, e })).sort((a, b) => b.l - a.l).slice(0, k);
      const z = top.reduce((s, p) => s + Math.exp(p.l), 0);
      for (const { l, e } of top) {
        const a = new Float32Array(I);
        for (let i = 0; i < I; i++) {
          let g = 0, u = 0;
          for (let j = 0; j < h; j++) { g += gate[(e * I + i) * h + j] * x[t * h + j]; u += up[(e * I + i) * h + j] * x[t * h + j]; }
          a[i] = silu(g) * u;
        }
        for (let o = 0; o < h; o++) {
          let y = 0;
          for (let i = 0; i < I; i++) y += down[(e * h + o) * I + i] * a[i];
          ref[t * h + o] += (Math.exp(l) / z) * y;
        }
      }
    }
    const got = await run(moeModel(T, h, I, E, k, gate, up, down), { X: [x, [T, h]], R: [logits, [T, E]] });
    expect(maxDiff(got, ref)).toBeLessThan(TOL);
  });

  it.each([[1, 9], [3, 11], [5, 5]])('GroupQueryAttention: S %i new rows after a cache, L %i, 6 query / 2 KV heads (BNSH past)', async (S, L) => {
    const H = 6, kvH = 2, D = 8, past = L - S;
    const q = randomUniform(S * H * D, 1), k = randomUniform(L * kvH * D, 2), v = randomUniform(L * kvH * D, 3);
    const ref = new Float32Array(S * H * D);
    for (let i = 0; i < S; i++) for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / kvH)), last = past + i;
      const sc: number[] = [];
      for (let j = 0; j <= last; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[i * H * D + h * D + d] * k[j * kvH * D + g * D + d];
        sc.push(s / Math.sqrt(D));
      }
      const mx = Math.max(...sc), e = sc.map((s) => Math.exp(s - mx)), z = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < D; d++) {
        let o = 0;
        for (let j = 0; j <= last; j++) o += (e[j] / z) * v[j * kvH * D + g * D + d];
        ref[i * H * D + h * D + d] = o;
      }
    }
    const bnsh = (x: Float32Array) => {
      const t = new Float32Array(past * kvH * D);
      for (let r = 0; r < past; r++) for (let g = 0; g < kvH; g++) for (let d = 0; d < D; d++) t[(g * past + r) * D + d] = x[r * kvH * D + g * D + d];
      return t;
    };
    const got = await run(gqaModel(S, past, H, kvH, D), {
      Q: [q, [1, S, H * D]], K: [k.slice(past * kvH * D), [1, S, kvH * D]], V: [v.slice(past * kvH * D), [1, S, kvH * D]],
      PK: [bnsh(k), [1, kvH, past, D]], PV: [bnsh(v), [1, kvH, past, D]], SEQLENS: [Int32Array.of(L - 1), [1]], TOTAL: [Int32Array.of(L), []],
    });
    expect(maxDiff(got, ref)).toBeLessThan(TOL);
  });

  it('MoE as the dense expert graph (no MoE op): routing weights [E, T, 1], every expert computed', async () => {
    const T = 3, h = 12, I = 8, E = 5;
    const gate = randomUniform(E * I * h, 1, -0.5, 0.5), up = randomUniform(E * I * h, 2, -0.5, 0.5), down = randomUniform(E * h * I, 3, -0.5, 0.5);
    const x = randomUniform(T * h, 4);
    const w = randomUniform(E * T, 5, 0, 1).map((v, i) => (i % 3 === 1 ? 0 : v)); // some experts unchosen
    const silu = (v: number) => v / (1 + Math.exp(-v));
    const ref = new Float32Array(T * h);
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) {
      const a = new Float32Array(I);
      for (let i = 0; i < I; i++) {
        let g = 0, u = 0;
        for (let j = 0; j < h; j++) { g += gate[(e * I + i) * h + j] * x[t * h + j]; u += up[(e * I + i) * h + j] * x[t * h + j]; }
        a[i] = silu(g) * u;
      }
      for (let o = 0; o < h; o++) {
        let y = 0;
        for (let i = 0; i < I; i++) y += down[(e * h + o) * I + i] * a[i];
        ref[t * h + o] += w[e * T + t] * y;
      }
    }
    const got = await run(moeDenseGraphModel(T, h, I, E, gate, up, down), { X: [x, [T, h]], W: [w, [E, T, 1]] });
    expect(maxDiff(got, ref)).toBeLessThan(TOL);
  });
});
