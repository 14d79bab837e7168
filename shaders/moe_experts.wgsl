// Routed-expert SwiGLU MLPs over stacked expert weights, with the expert ids read on the GPU.
//   gate_up [E, 2I, D]: expert e's gate rows (0..I-1) then up rows (I..2I-1), HF [out, in] rows
//   down    [E, D, I]
//   (f32, f16, bf16, group-quantised q8 / q4 or MXFP4 with scales at bindings 13 / 14: see @variant wfmt)
//   gate_up_bias [E, 2I] (binding 15: gate biases then up biases), down_bias [E, D] (binding 16) with
//   @variant bias on (GPT-OSS: gate_up_proj_bias de-interleaved, down_proj_bias).
// Activation (@variant act): silu: h = silu(g)·u; swiglu_oai (GPT-OSS): g' = min(g, LIMIT),
// u' = clamp(u, −LIMIT, LIMIT), h = g'·sigmoid(ALPHA·g')·(u' + 1) (ALPHA, LIMIT: override constants).
// Decode (few tokens): one dispatch computes h = silu(gate·x) ⊙ up·x for all T·K (token, slot) pairs,
// a second one computes out[t] = Σ_j w[t,j]·down_{ids[t,j]}·h[t,j] + shared[t] (the weighted combine is
// folded into the reduction: no float atomics, no per-slot scratch).
// Grouped (prefill): rows are the (token, slot) entries sorted by expert (moe_dispatch.wgsl `sort`);
// each row tile belongs to one expert (tile → expert by a search over the per-expert tile prefix), so
// the matmuls are ordinary register-tiled GEMMs over each expert's segment.
//
// decode_gate_up   params { T, K, D, I, E, groups, _, _ }  (groups = ⌈I/ROWS⌉)
//   1: x [T, D]   2: gate_up [E, 2I, D]   3: ids [T·K] u32   4: h [T·K, I] out
// decode_down      params { T, K, D, I, E, groups, has_shared, _ }  (groups = ⌈D/ROWS⌉)
//   5: hv [T·K, I]   6: down [E, D, I]   3: ids [T·K] u32   7: wts [T·K] f32   8: shared [T, D]   9: out [T, D]
// grouped_gate_up  params { T, K, D, I, E, tiles_n, _, _ }  (tiles_n = ⌈I/BN⌉; workgroups ≥ real tiles)
//   1: x [T, D]   2: gate_up   10: perm [N] u32 (sorted row → entry t·K+j)   11: seg [2(E+1)] u32   4: h [N, I] out (sorted rows)
// grouped_down     params { T, K, D, I, E, tiles_n, _, _ }  (tiles_n = ⌈D/BN⌉)
//   5: hv [N, I]  6: down  11: seg   12: y [N, D] out (sorted rows)
// seg = [offsets (E+1) | tile_start (E+1)]: expert e owns sorted rows offsets[e]..offsets[e+1] and
// row tiles tile_start[e]..tile_start[e+1] (tiles of BM rows).
//
// Text variants (src/kernels/shader-source.ts): @variant load (shaders/lib/load_width.wgsl, included
// by register_tile.wgsl) is the load width along the reduction axis (D for gate_up, I for down): vec4
// when it is a multiple of 4, scalar otherwise (the wrapper specialises each entry point separately);
// `wfmt` is the expert weight format, `act` the activation, `bias` whether the expert matmuls add biases,
// `subgroups` keeps the subgroup entry points.
// @variant subgroups on
enable subgroups;
// @variant subgroups off
// @end subgroups
// @include register_tile
// @include quant_decode
// @include moe_decode

struct Params { T: u32, K: u32, D: u32, I: u32, E: u32, groups: u32, has_shared: u32, _p: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<VecK>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> h: array<f32>;
@group(0) @binding(5) var<storage, read> hv: array<VecK>;
@group(0) @binding(7) var<storage, read> wts: array<f32>;
@group(0) @binding(8) var<storage, read> shared_out: array<f32>;
@group(0) @binding(9) var<storage, read_write> out: array<f32>;
@group(0) @binding(10) var<storage, read> perm: array<u32>;
@group(0) @binding(11) var<storage, read> seg: array<u32>;
@group(0) @binding(12) var<storage, read_write> y: array<f32>;

// Expert weights, read through gu(i) / dn(i) (i in VecK units), one @variant wfmt block per storage:
// f32; f16 / bf16 (4 binary16 / bfloat16 per vec2<u32>); q8 / q4 rows with f16 group scales (the rows of
// src/kernels/weight.ref.ts packWeight, stacked). f16, q8 and q4 decode to vec4<f32> (vec4 loads
// only); accumulation stays f32.
// @variant wfmt f32
@group(0) @binding(2) var<storage, read> gate_up: array<VecK>;
@group(0) @binding(6) var<storage, read> down: array<VecK>;
fn gu(i: u32) -> VecK { return gate_up[i]; }
fn dn(i: u32) -> VecK { return down[i]; }
// @variant wfmt f16
@group(0) @binding(2) var<storage, read> gate_up: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read> down: array<vec2<u32>>;
fn gu(i: u32) -> vec4<f32> { return f16x4(gate_up[i]); }
fn dn(i: u32) -> vec4<f32> { return f16x4(down[i]); }
// @variant wfmt bf16
@group(0) @binding(2) var<storage, read> gate_up: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read> down: array<vec2<u32>>;
fn gu(i: u32) -> vec4<f32> { return bf16x4(gate_up[i]); }
fn dn(i: u32) -> vec4<f32> { return bf16x4(down[i]); }
// @variant wfmt q8
const Q_PER_WORD: u32 = 4u;   // int8 values per u32
fn decode_word(v: u32, c: u32) -> vec4<f32> { return i8x4(v); }
// @variant wfmt q4
const Q_PER_WORD: u32 = 8u;   // int4 + 8 values per u32: vec4 unit c is half c & 1 of its word
fn decode_word(v: u32, c: u32) -> vec4<f32> { return q4x4(v >> ((c & 1u) * 16u)); }
// @variant wfmt mxfp4
const Q_PER_WORD: u32 = 8u;   // FP4 E2M1 values per u32: vec4 unit c is half c & 1 of its word
fn decode_word(v: u32, c: u32) -> vec4<f32> { return fp4x4(v >> ((c & 1u) * 16u)); }
// @end wfmt
// Scale number i given the word that holds it: f16 pairs (q8, q4) or E8M0 bytes, 4 per word (mxfp4, GS = 32).
// @variant wfmt q8 q4
const SCALES_PER_WORD: u32 = 2u;
fn scale_in(word: u32, i: u32) -> f32 { return f16_at(word, i); }
// @variant wfmt mxfp4
const SCALES_PER_WORD: u32 = 4u;
fn scale_in(word: u32, i: u32) -> f32 { return e8m0(byte_at(word, i)); }
// @end wfmt
// @variant wfmt q8 q4 mxfp4
// A row of reduction length RL (D for gate_up, I for down) is ⌈RL / (4·Q_PER_WORD)⌉·4 words (rows
// padded to 16 / 32 values), its group scales at scales[row · ⌈RL/GS⌉ + k/GS].
@group(0) @binding(2) var<storage, read> gate_up: array<u32>;
@group(0) @binding(6) var<storage, read> down: array<u32>;
@group(0) @binding(13) var<storage, read> gate_up_scales: array<u32>;
@group(0) @binding(14) var<storage, read> down_scales: array<u32>;
override GS: u32 = 32u;
struct QuantAt { word: u32, scale: u32, c: u32 }
// Where vec4 unit i of the logical [rows, RL] matrix lives: its word, its scale's index, its unit in the row.
fn quant_at(i: u32, RL: u32) -> QuantAt {
  let c4 = RL / 4u;
  let row = i / c4;
  let c = i - row * c4;
  let unit = 4u * Q_PER_WORD;
  return QuantAt(row * ((RL + unit - 1u) / unit * 4u) + c / (Q_PER_WORD / 4u), row * ((RL + GS - 1u) / GS) + (4u * c) / GS, c);
}
fn gu(i: u32) -> vec4<f32> {
  let q = quant_at(i, P.D);
  return decode_word(gate_up[q.word], q.c) * scale_in(gate_up_scales[q.scale / SCALES_PER_WORD], q.scale);
}
fn dn(i: u32) -> vec4<f32> {
  let q = quant_at(i, P.I);
  return decode_word(down[q.word], q.c) * scale_in(down_scales[q.scale / SCALES_PER_WORD], q.scale);
}
// The decode kernels' row walk: where a row starts (its first word and scale) is worked out once per
// row (row_at), each vec4 unit c along it by constant shifts only (gu_in / dn_in). quant_at's division
// by the runtime row length per unit made the q4 decode path 2–3x slower per weight than the dense
// GEMV on a CPU adapter (SwiftShader; the `large` bench suite's WEBMOE_LARGE_PROFILE=1 table).
struct RowAt { word: u32, scale: u32 }
fn row_at(row: u32, RL: u32) -> RowAt {
  let unit = 4u * Q_PER_WORD;
  return RowAt(row * ((RL + unit - 1u) / unit * 4u), row * ((RL + GS - 1u) / GS));
}
fn gu_in(r: RowAt, c: u32) -> vec4<f32> {
  let s = r.scale + (4u * c) / GS;
  return decode_word(gate_up[r.word + c / (Q_PER_WORD / 4u)], c) * scale_in(gate_up_scales[s / SCALES_PER_WORD], s);
}
fn dn_in(r: RowAt, c: u32) -> vec4<f32> {
  let s = r.scale + (4u * c) / GS;
  return decode_word(down[r.word + c / (Q_PER_WORD / 4u)], c) * scale_in(down_scales[s / SCALES_PER_WORD], s);
}
// With UNIT_WALK (the wrapper sets it on CPU fallback adapters, moe.ts expertsShader), the decode kernels
// walk whole units of 4 words (4·Q_PER_WORD values, inside one scale group: GS is 32 or 128) instead: one
// scale per unit and row, the words' vec4s by constant shifts (the dense GEMV's walk, linear.wgsl). A
// unit's words are strided across invocations, which suits a CPU, not a GPU's coalesced loads. A row's
// ragged tail (RL not a whole number of units) goes by vec4s (gu_in / dn_in).
struct Rows4 { a: RowAt, b: RowAt, c: RowAt, d: RowAt }
const UNIT_V: u32 = Q_PER_WORD;   // vec4s per unit
fn whole_units(RL: u32) -> u32 { return select(0u, RL / (4u * Q_PER_WORD), UNIT_WALK); }
fn unit_scale_gu(r: RowAt, u: u32) -> f32 { let s = r.scale + (u * 4u * Q_PER_WORD) / GS; return scale_in(gate_up_scales[s / SCALES_PER_WORD], s); }
fn unit_scale_dn(r: RowAt, u: u32) -> f32 { let s = r.scale + (u * 4u * Q_PER_WORD) / GS; return scale_in(down_scales[s / SCALES_PER_WORD], s); }
// Σ over units u = k0, k0 + step, … < units of rows q of gate_up · x (x's row at VecK index xb).
fn units_gu(q: Rows4, xb: u32, k0: u32, step: u32, units: u32) -> vec4<f32> {
  var acc = vec4<f32>(0.0);
  for (var u = k0; u < units; u += step) {
    var s = vec4<f32>(0.0);
    for (var w = 0u; w < 4u; w++) {
      let wa = gate_up[q.a.word + 4u * u + w];
      let wb = gate_up[q.b.word + 4u * u + w];
      let wc = gate_up[q.c.word + 4u * u + w];
      let wd = gate_up[q.d.word + 4u * u + w];
      for (var hf = 0u; hf < Q_PER_WORD / 4u; hf++) {
        let xv = x[xb + u * UNIT_V + w * (Q_PER_WORD / 4u) + hf];
        s += vec4<f32>(vdot(decode_word(wa, hf), xv), vdot(decode_word(wb, hf), xv), vdot(decode_word(wc, hf), xv), vdot(decode_word(wd, hf), xv));
      }
    }
    acc += s * vec4<f32>(unit_scale_gu(q.a, u), unit_scale_gu(q.b, u), unit_scale_gu(q.c, u), unit_scale_gu(q.d, u));
  }
  return acc;
}
// The same for rows q of down · hv (hv's row at VecK index hb).
fn units_dn(q: Rows4, hb: u32, k0: u32, step: u32, units: u32) -> vec4<f32> {
  var acc = vec4<f32>(0.0);
  for (var u = k0; u < units; u += step) {
    var s = vec4<f32>(0.0);
    for (var w = 0u; w < 4u; w++) {
      let wa = down[q.a.word + 4u * u + w];
      let wb = down[q.b.word + 4u * u + w];
      let wc = down[q.c.word + 4u * u + w];
      let wd = down[q.d.word + 4u * u + w];
      for (var hf = 0u; hf < Q_PER_WORD / 4u; hf++) {
        let hk = hv[hb + u * UNIT_V + w * (Q_PER_WORD / 4u) + hf];
        s += vec4<f32>(vdot(decode_word(wa, hf), hk), vdot(decode_word(wb, hf), hk), vdot(decode_word(wc, hf), hk), vdot(decode_word(wd, hf), hk));
      }
    }
    acc += s * vec4<f32>(unit_scale_dn(q.a, u), unit_scale_dn(q.b, u), unit_scale_dn(q.c, u), unit_scale_dn(q.d, u));
  }
  return acc;
}
// The batched passes' unit walks: rows q against the tile's n ≤ 4 token rows at VecK indices xb (Acc4:
// the 4 rows' sums per token), each unit's words decoded once for the tile's tokens.
fn units_gu_batch(q: Rows4, xb: vec4<u32>, n: u32, k0: u32, step: u32, units: u32) -> Acc4 {
  var acc = acc4_zero();
  for (var u = k0; u < units; u += step) {
    var s = acc4_zero();
    for (var w = 0u; w < 4u; w++) {
      let wa = gate_up[q.a.word + 4u * u + w];
      let wb = gate_up[q.b.word + 4u * u + w];
      let wc = gate_up[q.c.word + 4u * u + w];
      let wd = gate_up[q.d.word + 4u * u + w];
      for (var hf = 0u; hf < Q_PER_WORD / 4u; hf++) {
        let o = u * UNIT_V + w * (Q_PER_WORD / 4u) + hf;
        let A = decode_word(wa, hf);
        let B = decode_word(wb, hf);
        let C = decode_word(wc, hf);
        let D = decode_word(wd, hf);
        s.a += dot4(A, B, C, D, x[xb.x + o]);
        if (n > 1u) { s.b += dot4(A, B, C, D, x[xb.y + o]); }
        if (n > 2u) { s.c += dot4(A, B, C, D, x[xb.z + o]); }
        if (n > 3u) { s.d += dot4(A, B, C, D, x[xb.w + o]); }
      }
    }
    let sc = vec4<f32>(unit_scale_gu(q.a, u), unit_scale_gu(q.b, u), unit_scale_gu(q.c, u), unit_scale_gu(q.d, u));
    acc.a += s.a * sc;
    acc.b += s.b * sc;
    acc.c += s.c * sc;
    acc.d += s.d * sc;
  }
  return acc;
}
fn units_dn_batch(q: Rows4, hb: vec4<u32>, n: u32, k0: u32, step: u32, units: u32) -> Acc4 {
  var acc = acc4_zero();
  for (var u = k0; u < units; u += step) {
    var s = acc4_zero();
    for (var w = 0u; w < 4u; w++) {
      let wa = down[q.a.word + 4u * u + w];
      let wb = down[q.b.word + 4u * u + w];
      let wc = down[q.c.word + 4u * u + w];
      let wd = down[q.d.word + 4u * u + w];
      for (var hf = 0u; hf < Q_PER_WORD / 4u; hf++) {
        let o = u * UNIT_V + w * (Q_PER_WORD / 4u) + hf;
        let A = decode_word(wa, hf);
        let B = decode_word(wb, hf);
        let C = decode_word(wc, hf);
        let D = decode_word(wd, hf);
        s.a += dot4(A, B, C, D, hv[hb.x + o]);
        if (n > 1u) { s.b += dot4(A, B, C, D, hv[hb.y + o]); }
        if (n > 2u) { s.c += dot4(A, B, C, D, hv[hb.z + o]); }
        if (n > 3u) { s.d += dot4(A, B, C, D, hv[hb.w + o]); }
      }
    }
    let sc = vec4<f32>(unit_scale_dn(q.a, u), unit_scale_dn(q.b, u), unit_scale_dn(q.c, u), unit_scale_dn(q.d, u));
    acc.a += s.a * sc;
    acc.b += s.b * sc;
    acc.c += s.c * sc;
    acc.d += s.d * sc;
  }
  return acc;
}
// @variant wfmt f32 f16 bf16
// The decode kernels' row walk for unquantised rows: a row's first VecK unit, then unit c of it.
struct RowAt { word: u32, scale: u32 }
fn row_at(row: u32, RL: u32) -> RowAt { return RowAt(row * (RL / VK), 0u); }
fn gu_in(r: RowAt, c: u32) -> VecK { return gu(r.word + c); }
fn dn_in(r: RowAt, c: u32) -> VecK { return dn(r.word + c); }
// Unquantised rows have no units: the decode kernels walk them by VecK only (UNIT_WALK is ignored).
struct Rows4 { a: RowAt, b: RowAt, c: RowAt, d: RowAt }
const UNIT_V: u32 = 1u;
fn whole_units(RL: u32) -> u32 { return 0u; }
fn units_gu(q: Rows4, xb: u32, k0: u32, step: u32, units: u32) -> vec4<f32> { return vec4<f32>(0.0); }
fn units_dn(q: Rows4, hb: u32, k0: u32, step: u32, units: u32) -> vec4<f32> { return vec4<f32>(0.0); }
fn units_gu_batch(q: Rows4, xb: vec4<u32>, n: u32, k0: u32, step: u32, units: u32) -> Acc4 { return acc4_zero(); }
fn units_dn_batch(q: Rows4, hb: vec4<u32>, n: u32, k0: u32, step: u32, units: u32) -> Acc4 { return acc4_zero(); }
// @end wfmt

// The expert activation of (gate, up) pre-activations, 4 rows at a time.
// @variant act silu
fn glu(g: vec4<f32>, u: vec4<f32>) -> vec4<f32> { return g / (vec4<f32>(1.0) + exp(-g)) * u; }
// @variant act swiglu_oai
override ALPHA: f32 = 1.702;
override LIMIT: f32 = 7.0;
fn glu(g: vec4<f32>, u: vec4<f32>) -> vec4<f32> {
  let gc = min(g, vec4<f32>(LIMIT));
  let uc = clamp(u, vec4<f32>(-LIMIT), vec4<f32>(LIMIT));
  return gc / (vec4<f32>(1.0) + exp(-ALPHA * gc)) * (uc + vec4<f32>(1.0));
}
// @end act

// Biases of expert e at 4 rows / columns (indices clamped in bounds; the values past I / D are not stored).
// @variant bias on
@group(0) @binding(15) var<storage, read> gate_up_bias: array<f32>;
@group(0) @binding(16) var<storage, read> down_bias: array<f32>;
fn gu_bias4(base: u32, i: vec4<u32>) -> vec4<f32> {
  let j = min(i, vec4<u32>(P.I - 1u)) + vec4<u32>(base);
  return vec4<f32>(gate_up_bias[j.x], gate_up_bias[j.y], gate_up_bias[j.z], gate_up_bias[j.w]);
}
fn gate_bias(e: u32, i: vec4<u32>) -> vec4<f32> { return gu_bias4(e * 2u * P.I, i); }
fn up_bias(e: u32, i: vec4<u32>) -> vec4<f32> { return gu_bias4(e * 2u * P.I + P.I, i); }
fn down_bias4(e: u32, d: vec4<u32>) -> vec4<f32> {
  let j = min(d, vec4<u32>(P.D - 1u)) + vec4<u32>(e * P.D);
  return vec4<f32>(down_bias[j.x], down_bias[j.y], down_bias[j.z], down_bias[j.w]);
}
// @variant bias off
fn gate_bias(e: u32, i: vec4<u32>) -> vec4<f32> { return vec4<f32>(0.0); }
fn up_bias(e: u32, i: vec4<u32>) -> vec4<f32> { return vec4<f32>(0.0); }
fn down_bias4(e: u32, d: vec4<u32>) -> vec4<f32> { return vec4<f32>(0.0); }
// @end bias


// ---------------------------------------------------------------------------------------------- decode
// A workgroup owns ROWS = 4 output rows (the components of its vec4 accumulators: constant indices
// only, no private arrays) of one (token, slot) pair (gate_up) or one token (down); its invocations
// stride along the reduction axis. The entry points and the reduction are lib/moe_decode.wgsl's (shared
// with gguf_moe.wgsl); this file gives their row math. Rows past I / D re-read the last row (in bounds)
// and are not stored.
override WG: u32 = 128u;   // power of two
override UNIT_WALK: bool = false;   // quantised rows by whole units (CPU fallback adapters; see units_gu)
const ROWS: u32 = 4u;

// Rows i0..i0+3 of expert ids[tj]'s gate and up projections of x[tj / K], over k = k0, k0 + step, ...
fn gate_up_partial(tj: u32, i0: u32, k0: u32, step: u32) -> GateUp {
  let t = tj / P.K;
  let e = min(ids[tj], P.E - 1u);
  let DV = P.D / VK;
  let xb = t * DV;
  let wb = e * 2u * P.I;
  let g0 = row_at(wb + min(i0, P.I - 1u), P.D);
  let g1 = row_at(wb + min(i0 + 1u, P.I - 1u), P.D);
  let g2 = row_at(wb + min(i0 + 2u, P.I - 1u), P.D);
  let g3 = row_at(wb + min(i0 + 3u, P.I - 1u), P.D);
  // up rows follow the gate rows
  let u0 = row_at(wb + P.I + min(i0, P.I - 1u), P.D);
  let u1 = row_at(wb + P.I + min(i0 + 1u, P.I - 1u), P.D);
  let u2 = row_at(wb + P.I + min(i0 + 2u, P.I - 1u), P.D);
  let u3 = row_at(wb + P.I + min(i0 + 3u, P.I - 1u), P.D);
  var r: GateUp;
  let units = whole_units(P.D);
  r.g = units_gu(Rows4(g0, g1, g2, g3), xb, k0, step, units);
  r.u = units_gu(Rows4(u0, u1, u2, u3), xb, k0, step, units);
  for (var k = units * UNIT_V + k0; k < DV; k += step) {
    let xv = x[xb + k];
    r.g += vec4<f32>(vdot(gu_in(g0, k), xv), vdot(gu_in(g1, k), xv), vdot(gu_in(g2, k), xv), vdot(gu_in(g3, k), xv));
    r.u += vec4<f32>(vdot(gu_in(u0, k), xv), vdot(gu_in(u1, k), xv), vdot(gu_in(u2, k), xv), vdot(gu_in(u3, k), xv));
  }
  return r;
}

fn store_h(tj: u32, i0: u32, g: vec4<f32>, u: vec4<f32>) {
  let hb = tj * P.I + i0;
  let e = min(ids[tj], P.E - 1u);
  let rows = vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u);
  let v = glu(g + gate_bias(e, rows), u + up_bias(e, rows));
  if (i0 < P.I) { h[hb] = v.x; }
  if (i0 + 1u < P.I) { h[hb + 1u] = v.y; }
  if (i0 + 2u < P.I) { h[hb + 2u] = v.z; }
  if (i0 + 3u < P.I) { h[hb + 3u] = v.w; }
}

// Rows d0..d3 of Σ_j wts[t·K + j] · down_{ids[t·K + j]} · hv[t·K + j], over k = k0, k0 + step, ...
fn down_partial(t: u32, d0: u32, k0: u32, step: u32) -> vec4<f32> {
  let IV = P.I / VK;
  var acc = vec4<f32>(0.0);
  for (var j = 0u; j < P.K; j++) {
    let tj = t * P.K + j;
    let eb = min(ids[tj], P.E - 1u) * P.D;
    let r0 = row_at(eb + min(d0, P.D - 1u), P.I);
    let r1 = row_at(eb + min(d0 + 1u, P.D - 1u), P.I);
    let r2 = row_at(eb + min(d0 + 2u, P.D - 1u), P.I);
    let r3 = row_at(eb + min(d0 + 3u, P.D - 1u), P.I);
    let hb = tj * IV;
    var part = vec4<f32>(0.0);
    // The expert's down bias, once per slot: by the invocation that starts at k = 0.
    if (k0 == 0u) { part = down_bias4(min(ids[tj], P.E - 1u), vec4<u32>(d0) + vec4<u32>(0u, 1u, 2u, 3u)); }
    let units = whole_units(P.I);
    part += units_dn(Rows4(r0, r1, r2, r3), hb, k0, step, units);
    for (var k = units * UNIT_V + k0; k < IV; k += step) {
      let hk = hv[hb + k];
      part += vec4<f32>(vdot(dn_in(r0, k), hk), vdot(dn_in(r1, k), hk), vdot(dn_in(r2, k), hk), vdot(dn_in(r3, k), hk));
    }
    acc += wts[tj] * part;
  }
  return acc;
}

fn store_out(t: u32, d0: u32, v: vec4<f32>) {
  let ob = t * P.D + d0;
  var s = v;
  if (P.has_shared != 0u) {
    // rows past D read row D − 1 (in bounds) and are not stored
    s += vec4<f32>(shared_out[t * P.D + min(d0, P.D - 1u)], shared_out[t * P.D + min(d0 + 1u, P.D - 1u)],
                   shared_out[t * P.D + min(d0 + 2u, P.D - 1u)], shared_out[t * P.D + min(d0 + 3u, P.D - 1u)]);
  }
  if (d0 < P.D) { out[ob] = s.x; }
  if (d0 + 1u < P.D) { out[ob + 1u] = s.y; }
  if (d0 + 2u < P.D) { out[ob + 2u] = s.z; }
  if (d0 + 3u < P.D) { out[ob + 3u] = s.w; }
}


// --------------------------------------------------------------------------------------------- grouped
const TM: u32 = 4u;
const TN: u32 = 4u;
const WGX: u32 = 8u;
const WGY: u32 = 8u;
const BM: u32 = TM * WGY;    // rows per tile (the wrapper's tileRows)
const BN: u32 = TN * WGX;
const BK: u32 = 32u;
const BKV: u32 = BK / VK;
const THREADS: u32 = WGX * WGY;

var<workgroup> xs: array<VecK, BM * BKV>;
var<workgroup> ws: array<VecK, BN * BKV>;
var<workgroup> us: array<VecK, BN * BKV>;
var<workgroup> rowsrc: array<u32, BM>;

// @include moe_tiles

// Sorted row r (< row1) of h [·, I] (store_h_tile) or y [·, D] (store_y_tile), columns c0, c0 + WGX,
// c0 + 2·WGX, c0 + 3·WGX (two functions: each entry point binds only the buffer it writes).
fn store_h_tile(r: u32, row1: u32, c0: u32, v: vec4<f32>) {
  if (r >= row1) { return; }
  let b = r * P.I + c0;
  if (c0 < P.I) { h[b] = v.x; }
  if (c0 + WGX < P.I) { h[b + WGX] = v.y; }
  if (c0 + 2u * WGX < P.I) { h[b + 2u * WGX] = v.z; }
  if (c0 + 3u * WGX < P.I) { h[b + 3u * WGX] = v.w; }
}
fn store_y_tile(r: u32, row1: u32, c0: u32, v: vec4<f32>) {
  if (r >= row1) { return; }
  let b = r * P.D + c0;
  if (c0 < P.D) { y[b] = v.x; }
  if (c0 + WGX < P.D) { y[b + WGX] = v.y; }
  if (c0 + 2u * WGX < P.D) { y[b + 2u * WGX] = v.z; }
  if (c0 + 3u * WGX < P.D) { y[b + 3u * WGX] = v.w; }
}


@compute @workgroup_size(WGX, WGY)
fn grouped_gate_up(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let tl = find_tile(wid.x + wid.y * nwg.x);
  if (!tl.ok) { return; }
  let DV = P.D / VK;
  let wb = tl.e * 2u * P.I;
  for (var r = tid; r < BM; r += THREADS) {
    var src = 0xffffffffu;
    if (tl.row0 + r < tl.row1) { src = perm[tl.row0 + r] / P.K; }
    rowsrc[r] = src;
  }
  workgroupBarrier();
  var ag: array<vec4<f32>, 4>;   // the gate and up 4×4 blocks (register_tile.wgsl)
  var au: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < DV; k0 += BKV) {
    for (var q = tid; q < BM * BKV; q += THREADS) {
      let r = q / BKV;
      let kv = k0 + q % BKV;
      var v = VecK(0.0);
      let src = rowsrc[r];
      if (src != 0xffffffffu && kv < DV) { v = x[src * DV + kv]; }
      xs[q] = v;
    }
    for (var q = tid; q < BN * BKV; q += THREADS) {
      let cc = q / BKV;
      let kv = k0 + q % BKV;
      var vg = VecK(0.0);
      var vu = VecK(0.0);
      if (tl.col0 + cc < P.I && kv < DV) {
        vg = gu((wb + tl.col0 + cc) * DV + kv);
        vu = gu((wb + P.I + tl.col0 + cc) * DV + kv);
      }
      ws[q] = vg;
      us[q] = vu;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BKV; kk++) {
      let a0 = xs[lid.y * BKV + kk];
      let a1 = xs[(lid.y + WGY) * BKV + kk];
      let a2 = xs[(lid.y + 2u * WGY) * BKV + kk];
      let a3 = xs[(lid.y + 3u * WGY) * BKV + kk];
      tile_fma(&ag, a0, a1, a2, a3, ws[lid.x * BKV + kk], ws[(lid.x + WGX) * BKV + kk], ws[(lid.x + 2u * WGX) * BKV + kk], ws[(lid.x + 3u * WGX) * BKV + kk]);
      tile_fma(&au, a0, a1, a2, a3, us[lid.x * BKV + kk], us[(lid.x + WGX) * BKV + kk], us[(lid.x + 2u * WGX) * BKV + kk], us[(lid.x + 3u * WGX) * BKV + kk]);
    }
    workgroupBarrier();
  }
  let c0 = tl.col0 + lid.x;
  let r0 = tl.row0 + lid.y;
  // Columns c0, c0 + WGX, c0 + 2·WGX, c0 + 3·WGX of every row (register_tile.wgsl's block layout).
  let cols = vec4<u32>(c0) + vec4<u32>(0u, WGX, 2u * WGX, 3u * WGX);
  let gb = gate_bias(tl.e, cols);
  let ub = up_bias(tl.e, cols);
  store_h_tile(r0, tl.row1, c0, glu(ag[0] + gb, au[0] + ub));
  store_h_tile(r0 + WGY, tl.row1, c0, glu(ag[1] + gb, au[1] + ub));
  store_h_tile(r0 + 2u * WGY, tl.row1, c0, glu(ag[2] + gb, au[2] + ub));
  store_h_tile(r0 + 3u * WGY, tl.row1, c0, glu(ag[3] + gb, au[3] + ub));
}

@compute @workgroup_size(WGX, WGY)
fn grouped_down(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let tl = find_tile(wid.x + wid.y * nwg.x);
  if (!tl.ok) { return; }
  let IV = P.I / VK;
  let wb = tl.e * P.D;
  var acc: array<vec4<f32>, 4>;   // the 4×4 block (register_tile.wgsl)
  for (var k0 = 0u; k0 < IV; k0 += BKV) {
    for (var q = tid; q < BM * BKV; q += THREADS) {
      let r = q / BKV;
      let kv = k0 + q % BKV;
      var v = VecK(0.0);
      if (tl.row0 + r < tl.row1 && kv < IV) { v = hv[(tl.row0 + r) * IV + kv]; }
      xs[q] = v;
    }
    for (var q = tid; q < BN * BKV; q += THREADS) {
      let cc = q / BKV;
      let kv = k0 + q % BKV;
      var v = VecK(0.0);
      if (tl.col0 + cc < P.D && kv < IV) { v = dn((wb + tl.col0 + cc) * IV + kv); }
      ws[q] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BKV; kk++) {
      tile_fma(&acc, xs[lid.y * BKV + kk], xs[(lid.y + WGY) * BKV + kk], xs[(lid.y + 2u * WGY) * BKV + kk], xs[(lid.y + 3u * WGY) * BKV + kk],
               ws[lid.x * BKV + kk], ws[(lid.x + WGX) * BKV + kk], ws[(lid.x + 2u * WGX) * BKV + kk], ws[(lid.x + 3u * WGX) * BKV + kk]);
    }
    workgroupBarrier();
  }
  let c0 = tl.col0 + lid.x;
  let r0 = tl.row0 + lid.y;
  let db = down_bias4(tl.e, vec4<u32>(c0) + vec4<u32>(0u, WGX, 2u * WGX, 3u * WGX));
  store_y_tile(r0, tl.row1, c0, acc[0] + db);
  store_y_tile(r0 + WGY, tl.row1, c0, acc[1] + db);
  store_y_tile(r0 + 2u * WGY, tl.row1, c0, acc[2] + db);
  store_y_tile(r0 + 3u * WGY, tl.row1, c0, acc[3] + db);
}


// --------------------------------------------------------------------------------------------- batched
// A few tokens on a CPU fallback adapter (moe.ts moeExpertsMode): the (token, slot) entries sorted by
// expert (moe_dispatch.wgsl `sort` with tiles of TB = 4 sorted rows); a workgroup owns ROWS = 4 output
// rows of one expert for one tile of up to TB sorted rows, its invocations stride along the reduction
// axis as in the decode kernels, and each decoded weight vec4 serves the tile's TB tokens (the TB × ROWS
// sums in named vec4s: no private arrays, whose loop-indexed elements SwiftShader spills). The decode
// kernels decode every weight once per (token, slot). A short tile repeats its last row (in bounds)
// and does not store it.
// batched_gate_up  params { T, K, D, I, E, groups, _, _ }  (groups = ⌈I/ROWS⌉; workgroups ≥ tiles·groups)
//   1: x [T, D]   2: gate_up   10: perm [N]   11: seg [2(E+1)] (tiles of TB)   4: h [N, I] out (sorted rows)
// batched_down     params { T, K, D, I, E, groups, _, _ }  (groups = ⌈D/ROWS⌉)
//   5: hv [N, I] (sorted rows)   6: down   11: seg   12: y [N, D] out (sorted rows, down bias added)
const TB: u32 = 4u;
struct Acc4 { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32> }
fn acc4_zero() -> Acc4 { return Acc4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0)); }
// Rows a..d of a weight block against one token's VecK.
fn dot4(a: VecK, b: VecK, c: VecK, d: VecK, v: VecK) -> vec4<f32> { return vec4<f32>(vdot(a, v), vdot(b, v), vdot(c, v), vdot(d, v)); }
// Per invocation: TB gate blocks then TB up blocks (gate_up) or TB output blocks (down), WG each.
var<workgroup> partial_tb: array<vec4<f32>, 2u * TB * WG>;

// The tile's sorted rows row0 .. row0 + 3, past row1 − 1 clamped to it.
fn tile_rows(tl: Tile) -> vec4<u32> {
  return min(vec4<u32>(tl.row0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(tl.row1 - 1u));
}
// Σ over the workgroup of block b of partial_tb (after a barrier).
fn block_sum(b: u32) -> vec4<f32> {
  var s = vec4<f32>(0.0);
  for (var q = 0u; q < WG; q++) { s += partial_tb[b * WG + q]; }
  return s;
}

// Rows i0..i0+3 of expert tl.e's gate and up projections of the tile's tokens (per token in an Acc4),
// over reduction units k0, k0 + step, …
struct BatchedGateUp { g: Acc4, u: Acc4 }
fn batched_gate_up_partial(tl: Tile, n: u32, k0: u32, step: u32) -> BatchedGateUp {
  let DV = P.D / VK;
  let rows = tile_rows(tl);
  let xb = vec4<u32>(perm[rows.x] / P.K, perm[rows.y] / P.K, perm[rows.z] / P.K, perm[rows.w] / P.K) * DV;
  let i0 = tl.col0;
  let wb = tl.e * 2u * P.I;
  let g0 = row_at(wb + min(i0, P.I - 1u), P.D);
  let g1 = row_at(wb + min(i0 + 1u, P.I - 1u), P.D);
  let g2 = row_at(wb + min(i0 + 2u, P.I - 1u), P.D);
  let g3 = row_at(wb + min(i0 + 3u, P.I - 1u), P.D);
  let u0 = row_at(wb + P.I + min(i0, P.I - 1u), P.D);
  let u1 = row_at(wb + P.I + min(i0 + 1u, P.I - 1u), P.D);
  let u2 = row_at(wb + P.I + min(i0 + 2u, P.I - 1u), P.D);
  let u3 = row_at(wb + P.I + min(i0 + 3u, P.I - 1u), P.D);
  let units = whole_units(P.D);
  var r: BatchedGateUp;
  r.g = units_gu_batch(Rows4(g0, g1, g2, g3), xb, n, k0, step, units);
  r.u = units_gu_batch(Rows4(u0, u1, u2, u3), xb, n, k0, step, units);
  for (var k = units * UNIT_V + k0; k < DV; k += step) {
    let G0 = gu_in(g0, k);
    let G1 = gu_in(g1, k);
    let G2 = gu_in(g2, k);
    let G3 = gu_in(g3, k);
    let U0 = gu_in(u0, k);
    let U1 = gu_in(u1, k);
    let U2 = gu_in(u2, k);
    let U3 = gu_in(u3, k);
    let xa = x[xb.x + k];
    r.g.a += dot4(G0, G1, G2, G3, xa);
    r.u.a += dot4(U0, U1, U2, U3, xa);
    if (n > 1u) { let xv = x[xb.y + k]; r.g.b += dot4(G0, G1, G2, G3, xv); r.u.b += dot4(U0, U1, U2, U3, xv); }
    if (n > 2u) { let xv = x[xb.z + k]; r.g.c += dot4(G0, G1, G2, G3, xv); r.u.c += dot4(U0, U1, U2, U3, xv); }
    if (n > 3u) { let xv = x[xb.w + k]; r.g.d += dot4(G0, G1, G2, G3, xv); r.u.d += dot4(U0, U1, U2, U3, xv); }
  }
  return r;
}
// Row b of the tile (if it has one): h = glu(gate + bias, up + bias) at columns i0..i0+3.
fn store_h_batched(tl: Tile, b: u32, g: vec4<f32>, u: vec4<f32>) {
  let r = tl.row0 + b;
  if (r >= tl.row1) { return; }
  let i0 = tl.col0;
  let cols = vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u);
  let v = glu(g + gate_bias(tl.e, cols), u + up_bias(tl.e, cols));
  let hb = r * P.I + i0;
  if (i0 < P.I) { h[hb] = v.x; }
  if (i0 + 1u < P.I) { h[hb + 1u] = v.y; }
  if (i0 + 2u < P.I) { h[hb + 2u] = v.z; }
  if (i0 + 3u < P.I) { h[hb + 3u] = v.w; }
}
// Columns d0..d3 of expert tl.e's down projection of the tile's rows of hv, over k0, k0 + step, …
fn batched_down_partial(tl: Tile, n: u32, k0: u32, step: u32) -> Acc4 {
  let IV = P.I / VK;
  let hb = tile_rows(tl) * IV;
  let d0 = tl.col0;
  let eb = tl.e * P.D;
  let r0 = row_at(eb + min(d0, P.D - 1u), P.I);
  let r1 = row_at(eb + min(d0 + 1u, P.D - 1u), P.I);
  let r2 = row_at(eb + min(d0 + 2u, P.D - 1u), P.I);
  let r3 = row_at(eb + min(d0 + 3u, P.D - 1u), P.I);
  let units = whole_units(P.I);
  var y4 = units_dn_batch(Rows4(r0, r1, r2, r3), hb, n, k0, step, units);
  for (var k = units * UNIT_V + k0; k < IV; k += step) {
    let W0 = dn_in(r0, k);
    let W1 = dn_in(r1, k);
    let W2 = dn_in(r2, k);
    let W3 = dn_in(r3, k);
    y4.a += dot4(W0, W1, W2, W3, hv[hb.x + k]);
    if (n > 1u) { y4.b += dot4(W0, W1, W2, W3, hv[hb.y + k]); }
    if (n > 2u) { y4.c += dot4(W0, W1, W2, W3, hv[hb.z + k]); }
    if (n > 3u) { y4.d += dot4(W0, W1, W2, W3, hv[hb.w + k]); }
  }
  return y4;
}
// Row b of the tile (if it has one): y = down · h + down bias at columns d0..d3.
fn store_y_batched(tl: Tile, b: u32, s: vec4<f32>) {
  let r = tl.row0 + b;
  if (r >= tl.row1) { return; }
  let d0 = tl.col0;
  let v = s + down_bias4(tl.e, vec4<u32>(d0) + vec4<u32>(0u, 1u, 2u, 3u));
  let yb = r * P.D + d0;
  if (d0 < P.D) { y[yb] = v.x; }
  if (d0 + 1u < P.D) { y[yb + 1u] = v.y; }
  if (d0 + 2u < P.D) { y[yb + 2u] = v.z; }
  if (d0 + 3u < P.D) { y[yb + 3u] = v.w; }
}

// A tile of one row (most tiles at a few tokens per expert) takes the decode kernels' single-token
// walk instead, so it pays no more than the decode path (branch uniform over the workgroup).
fn single_gate_up_partial(tl: Tile, k0: u32, step: u32) -> BatchedGateUp {
  let r = gate_up_partial(perm[tl.row0], tl.col0, k0, step);
  var b: BatchedGateUp;
  b.g.a = r.g;
  b.u.a = r.u;
  return b;
}
fn single_down_partial(tl: Tile, k0: u32, step: u32) -> Acc4 {
  let IV = P.I / VK;
  let d0 = tl.col0;
  let eb = tl.e * P.D;
  let r0 = row_at(eb + min(d0, P.D - 1u), P.I);
  let r1 = row_at(eb + min(d0 + 1u, P.D - 1u), P.I);
  let r2 = row_at(eb + min(d0 + 2u, P.D - 1u), P.I);
  let r3 = row_at(eb + min(d0 + 3u, P.D - 1u), P.I);
  let hb = tl.row0 * IV;
  let units = whole_units(P.I);
  var a = acc4_zero();
  a.a = units_dn(Rows4(r0, r1, r2, r3), hb, k0, step, units);
  for (var k = units * UNIT_V + k0; k < IV; k += step) {
    let hk = hv[hb + k];
    a.a += vec4<f32>(vdot(dn_in(r0, k), hk), vdot(dn_in(r1, k), hk), vdot(dn_in(r2, k), hk), vdot(dn_in(r3, k), hk));
  }
  return a;
}
// The row count goes in as a literal per branch: with it constant the `n > b` guards fold away (as a
// runtime value SwiftShader computed the absent rows anyway, if-converted).
fn tile_gate_up_partial(tl: Tile, k0: u32, step: u32) -> BatchedGateUp {
  let n = tl.row1 - tl.row0;
  if (n == 1u) { return single_gate_up_partial(tl, k0, step); }
  if (n == 2u) { return batched_gate_up_partial(tl, 2u, k0, step); }
  if (n == 3u) { return batched_gate_up_partial(tl, 3u, k0, step); }
  return batched_gate_up_partial(tl, 4u, k0, step);
}
fn tile_down_partial(tl: Tile, k0: u32, step: u32) -> Acc4 {
  let n = tl.row1 - tl.row0;
  if (n == 1u) { return single_down_partial(tl, k0, step); }
  if (n == 2u) { return batched_down_partial(tl, 2u, k0, step); }
  if (n == 3u) { return batched_down_partial(tl, 3u, k0, step); }
  return batched_down_partial(tl, 4u, k0, step);
}

// Through workgroup memory (any device): one barrier, then invocation b < TB sums the tile's row b.
@compute @workgroup_size(WG)
fn batched_gate_up(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tl = find_tile_of(wid.x + wid.y * nwg.x, TB, ROWS);
  if (!tl.ok) { return; }
  let p = tile_gate_up_partial(tl, lid, WG);
  partial_tb[lid] = p.g.a;
  partial_tb[WG + lid] = p.g.b;
  partial_tb[2u * WG + lid] = p.g.c;
  partial_tb[3u * WG + lid] = p.g.d;
  partial_tb[4u * WG + lid] = p.u.a;
  partial_tb[5u * WG + lid] = p.u.b;
  partial_tb[6u * WG + lid] = p.u.c;
  partial_tb[7u * WG + lid] = p.u.d;
  workgroupBarrier();
  if (lid < TB) { store_h_batched(tl, lid, block_sum(lid), block_sum(TB + lid)); }
}

@compute @workgroup_size(WG)
fn batched_down(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tl = find_tile_of(wid.x + wid.y * nwg.x, TB, ROWS);
  if (!tl.ok) { return; }
  let p = tile_down_partial(tl, lid, WG);
  partial_tb[lid] = p.a;
  partial_tb[WG + lid] = p.b;
  partial_tb[2u * WG + lid] = p.c;
  partial_tb[3u * WG + lid] = p.d;
  workgroupBarrier();
  if (lid < TB) { store_y_batched(tl, lid, block_sum(lid)); }
}

// One subgroup per workgroup (devices with subgroups; SwiftShader's are its SIMD width): subgroupAdd,
// no barrier, no workgroup memory.
// @variant subgroups on
@compute @workgroup_size(WG)
fn batched_gate_up_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tl = find_tile_of(wid.x + wid.y * nwg.x, TB, ROWS);
  if (!tl.ok) { return; }
  let p = tile_gate_up_partial(tl, lid, WG);
  let ga = subgroupAdd(p.g.a);
  let gb = subgroupAdd(p.g.b);
  let gc = subgroupAdd(p.g.c);
  let gd = subgroupAdd(p.g.d);
  let ua = subgroupAdd(p.u.a);
  let ub = subgroupAdd(p.u.b);
  let uc = subgroupAdd(p.u.c);
  let ud = subgroupAdd(p.u.d);
  if (lid == 0u) {
    store_h_batched(tl, 0u, ga, ua);
    store_h_batched(tl, 1u, gb, ub);
    store_h_batched(tl, 2u, gc, uc);
    store_h_batched(tl, 3u, gd, ud);
  }
}

@compute @workgroup_size(WG)
fn batched_down_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tl = find_tile_of(wid.x + wid.y * nwg.x, TB, ROWS);
  if (!tl.ok) { return; }
  let p = tile_down_partial(tl, lid, WG);
  let a = subgroupAdd(p.a);
  let b = subgroupAdd(p.b);
  let c = subgroupAdd(p.c);
  let d = subgroupAdd(p.d);
  if (lid == 0u) {
    store_y_batched(tl, 0u, a);
    store_y_batched(tl, 1u, b);
    store_y_batched(tl, 2u, c);
    store_y_batched(tl, 3u, d);
  }
}
// @variant subgroups off
// @end subgroups
