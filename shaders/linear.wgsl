// Linear layers Y[M, N] = X[M, K] · Wᵀ with W decoded in the shader from a packed format, and the
// row gather of such a W (embedding lookup). Formats and layouts: src/kernels/weight.ref.ts. Each row
// of W is row_units vec4<u32> "units" of UNIT consecutive elements along K (zero-padded past K);
// every unit has one scale (UNIT divides the quantisation group). Accumulation is always f32.
//
//   format UNIT  unit = 4 words of                                  (@variant fmt: one per format)
//   f32     4    1 f32 each (raw bits)
//   f16     8    2 × binary16 (unpack2x16float: no shader-f16 needed)
//   bf16    8    2 × bfloat16 (a 16-bit shift to f32: exact for BF16 checkpoints)
//   q8     16    4 × int8, × scale of its group: scales[n · scale_cols + k / SK]
//   q4     32    8 × (int4 + 8), × scale of its group (same indexing)
//   fp8    16    4 × e4m3fn, × block scale_inv[(n / 128) · scale_cols + k / 128]
//   mxfp4  32    8 × FP4 E2M1 (one OCP MX block), × 2^(E8M0 byte n · scale_cols + k / 32 − 127)
// SCALE_F16 selects f16 group scales (index i in half i & 1 of word i / 2) over f32.
//
// binding 0: params (below; element units; tk = gemv invocations along K)
// gemv / matmul:
//   1: x      [M, x_stride] f32        K values per row from x_offset
//   2: w      [N, row_units] vec4<u32>
//   3: scales u32 (q8/q4/fp8/mxfp4 only)
//   4: y      [M, y_stride] f32        N values per row from y_offset
// gather (embedding; M = tokens, K = row length D, N = rows in this chunk starting at table row row0):
//   5: ids    [M] u32                  rows of the whole table; ids outside [row0, row0 + N) are left
//                                       to the other chunks' dispatches
//   2, 3 as above;  4: y [M, y_stride] f32
//
// gemv / gemv_subgroup (decode and small prefill): a row group is 4 output rows × MR ∈ {1, 4} rows of
// x; its TK invocations stride along K over units (neighbours read neighbouring units: coalesced),
// each weight unit is decoded once and used for all MR x rows. `gemv` puts WG / TK row groups in a
// workgroup and tree-reduces in workgroup memory (any device); `gemv_subgroup` (devices with
// subgroups; @variant subgroups drops it elsewhere) is one subgroup = one row group reduced with
// subgroupAdd.
// matmul: 32×32 output tile per 8×8 workgroup (4×4 per invocation), K in slices of 32: the x slice is
// loaded as is and the W slice decoded (scaled) into workgroup memory, as in shaders/matmul.wgsl.
//
// Text variants (src/kernels/shader-source.ts): the weight format (@variant fmt), the x load width
// (@variant x: vec4 when K, x_stride and x_offset are multiples of 4, scalar otherwise) and @variant
// subgroups. The decoders come from shaders/lib/quant_decode.wgsl, the matmul's inner step from shaders/lib/register_tile.wgsl (whose
// `load` is always vec4 here: the tiles are staged as vec4s).
// @variant subgroups on
enable subgroups;
// @variant subgroups off
// @end subgroups

struct Params {
  M: u32, N: u32, K: u32, x_stride: u32,
  x_offset: u32, y_stride: u32, y_offset: u32, tiles_n: u32,
  row_units: u32, scale_cols: u32, row0: u32, tk: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> ids: array<u32>;

// @variant x vec4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
fn x4(e: u32) -> vec4<f32> { return x[e >> 2u]; }
fn x4_guarded(e: u32, end: u32) -> vec4<f32> {
  if (e < end) { return x[e >> 2u]; }
  return vec4<f32>(0.0);
}
// The same without a branch (a clamped load and a select; end ≥ 4 here since K ≥ 4).
fn x4_select(e: u32, end: u32) -> vec4<f32> { return select(vec4<f32>(0.0), x[min(e, end - 4u) >> 2u], e < end); }
// @variant x scalar
@group(0) @binding(1) var<storage, read> x: array<f32>;
fn x4(e: u32) -> vec4<f32> { return vec4<f32>(x[e], x[e + 1u], x[e + 2u], x[e + 3u]); }
fn x4_guarded(e: u32, end: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) { if (e + j < end) { v[j] = x[e + j]; } }
  return v;
}
fn x4_select(e: u32, end: u32) -> vec4<f32> {
  let i = min(vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(end - 1u));
  return select(vec4<f32>(0.0), vec4<f32>(x[i.x], x[i.y], x[i.z], x[i.w]), vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(end));
}
// @end x

override WG: u32 = 128u;
// q8/q4 group size along K and scale storage (f16 pairs or f32); fp8 uses 128×128 blocks.
override SK: u32 = 32u;
override SCALE_F16: bool = true;

// @include quant_decode
// @variant fmt q8 q4 fp8 mxfp4
@group(0) @binding(3) var<storage, read> scales: array<u32>;
fn group_scale(i: u32) -> f32 {
  if (SCALE_F16) { return f16_at(scales[i >> 1u], i); }
  return bitcast<f32>(scales[i]);
}
// @end fmt

// The GEMV's dot products, written without private arrays (some compilers spill arrays indexed by loop
// variables): rows_dot(u0..u3, xb, k0) = the four weight rows' units u0..u3 (elements k0 ..) dotted
// with x[xb + k0 ..], unscaled; each x vec4 is loaded once (xl: zero past K, branch-free) for the four rows.
fn xl(xb: u32, k: u32) -> vec4<f32> { return x4_select(xb + k, xb + P.K); }

// One block per format: UNIT (elements per vec4<u32>), decode (the unit's values, unscaled, as UNIT/4
// vec4s: the matmul and the gather), rows_dot (the GEMV, above), scale_of (row n, element k).
// @variant fmt f32
const UNIT: u32 = 4u;
const FLAT_ROWS: bool = true;        // unpadded [N, K] rows
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> { return array<vec4<f32>, 1>(bitcast<vec4<f32>>(u)); }
fn scale_of(n: u32, k: u32) -> f32 { return 1.0; }
fn rows_dot(u0: vec4<u32>, u1: vec4<u32>, u2: vec4<u32>, u3: vec4<u32>, xb: u32, k0: u32) -> vec4<f32> {
  let x0 = xl(xb, k0);
  return vec4<f32>(dot(bitcast<vec4<f32>>(u0), x0), dot(bitcast<vec4<f32>>(u1), x0), dot(bitcast<vec4<f32>>(u2), x0), dot(bitcast<vec4<f32>>(u3), x0));
}
// @variant fmt f16
const UNIT: u32 = 8u;
const FLAT_ROWS: bool = false;
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> { return array<vec4<f32>, 2>(f16x4(u.xy), f16x4(u.zw)); }
fn scale_of(n: u32, k: u32) -> f32 { return 1.0; }
fn f16_dot(u: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>) -> f32 { return dot(f16x4(u.xy), x0) + dot(f16x4(u.zw), x1); }
fn rows_dot(u0: vec4<u32>, u1: vec4<u32>, u2: vec4<u32>, u3: vec4<u32>, xb: u32, k0: u32) -> vec4<f32> {
  let x0 = xl(xb, k0);
  let x1 = xl(xb, k0 + 4u);
  return vec4<f32>(f16_dot(u0, x0, x1), f16_dot(u1, x0, x1), f16_dot(u2, x0, x1), f16_dot(u3, x0, x1));
}
// @variant fmt bf16
const UNIT: u32 = 8u;
const FLAT_ROWS: bool = false;
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> { return array<vec4<f32>, 2>(bf16x4(u.xy), bf16x4(u.zw)); }
fn scale_of(n: u32, k: u32) -> f32 { return 1.0; }
fn bf16_dot(u: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>) -> f32 { return dot(bf16x4(u.xy), x0) + dot(bf16x4(u.zw), x1); }
fn rows_dot(u0: vec4<u32>, u1: vec4<u32>, u2: vec4<u32>, u3: vec4<u32>, xb: u32, k0: u32) -> vec4<f32> {
  let x0 = xl(xb, k0);
  let x1 = xl(xb, k0 + 4u);
  return vec4<f32>(bf16_dot(u0, x0, x1), bf16_dot(u1, x0, x1), bf16_dot(u2, x0, x1), bf16_dot(u3, x0, x1));
}
// @variant fmt q8
const UNIT: u32 = 16u;
const FLAT_ROWS: bool = false;
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> { return array<vec4<f32>, 4>(i8x4(u.x), i8x4(u.y), i8x4(u.z), i8x4(u.w)); }
fn scale_of(n: u32, k: u32) -> f32 { return group_scale(n * P.scale_cols + k / SK); }
fn q8_dot(u: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> f32 {
  return dot(i8x4(u.x), x0) + dot(i8x4(u.y), x1) + dot(i8x4(u.z), x2) + dot(i8x4(u.w), x3);
}
fn rows_dot(u0: vec4<u32>, u1: vec4<u32>, u2: vec4<u32>, u3: vec4<u32>, xb: u32, k0: u32) -> vec4<f32> {
  let x0 = xl(xb, k0);
  let x1 = xl(xb, k0 + 4u);
  let x2 = xl(xb, k0 + 8u);
  let x3 = xl(xb, k0 + 12u);
  return vec4<f32>(q8_dot(u0, x0, x1, x2, x3), q8_dot(u1, x0, x1, x2, x3), q8_dot(u2, x0, x1, x2, x3), q8_dot(u3, x0, x1, x2, x3));
}
// @variant fmt q4
const UNIT: u32 = 32u;
const FLAT_ROWS: bool = false;
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> {
  return array<vec4<f32>, 8>(q4x4(u.x), q4x4(u.x >> 16u), q4x4(u.y), q4x4(u.y >> 16u), q4x4(u.z), q4x4(u.z >> 16u), q4x4(u.w), q4x4(u.w >> 16u));
}
fn scale_of(n: u32, k: u32) -> f32 { return group_scale(n * P.scale_cols + k / SK); }
// One word (8 nibbles, elements 8i .. 8i + 7 of the unit) against x vec4s a (low half) and b.
fn nibble_word(v: u32, a: vec4<f32>, b: vec4<f32>) -> f32 { return dot(q4x4(v), a) + dot(q4x4(v >> 16u), b); }
// @variant fmt fp8
const UNIT: u32 = 16u;
const FLAT_ROWS: bool = false;
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> { return array<vec4<f32>, 4>(fp8x4(u.x), fp8x4(u.y), fp8x4(u.z), fp8x4(u.w)); }
fn scale_of(n: u32, k: u32) -> f32 { return bitcast<f32>(scales[(n >> 7u) * P.scale_cols + (k >> 7u)]); }   // f32 [ceil(N/128), ceil(K/128)]
fn fp8_dot(u: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> f32 {
  return dot(fp8x4(u.x), x0) + dot(fp8x4(u.y), x1) + dot(fp8x4(u.z), x2) + dot(fp8x4(u.w), x3);
}
fn rows_dot(u0: vec4<u32>, u1: vec4<u32>, u2: vec4<u32>, u3: vec4<u32>, xb: u32, k0: u32) -> vec4<f32> {
  let x0 = xl(xb, k0);
  let x1 = xl(xb, k0 + 4u);
  let x2 = xl(xb, k0 + 8u);
  let x3 = xl(xb, k0 + 12u);
  return vec4<f32>(fp8_dot(u0, x0, x1, x2, x3), fp8_dot(u1, x0, x1, x2, x3), fp8_dot(u2, x0, x1, x2, x3), fp8_dot(u3, x0, x1, x2, x3));
}
// @variant fmt mxfp4
const UNIT: u32 = 32u;
const FLAT_ROWS: bool = false;
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> {
  return array<vec4<f32>, 8>(fp4x4(u.x), fp4x4(u.x >> 16u), fp4x4(u.y), fp4x4(u.y >> 16u), fp4x4(u.z), fp4x4(u.z >> 16u), fp4x4(u.w), fp4x4(u.w >> 16u));
}
// One E8M0 byte per row and 32-element block (a unit is one block).
fn scale_of(n: u32, k: u32) -> f32 {
  let i = n * P.scale_cols + (k >> 5u);
  return e8m0(byte_at(scales[i >> 2u], i));
}
// One word (8 FP4 values, elements 8i .. 8i + 7 of the unit) against x vec4s a (low half) and b.
fn nibble_word(v: u32, a: vec4<f32>, b: vec4<f32>) -> f32 { return dot(fp4x4(v), a) + dot(fp4x4(v >> 16u), b); }
// @variant fmt q4 mxfp4
// The 4-bit formats: a unit is 32 elements in 4 words, each word decoded by its format's nibble_word.
fn nibble_dot(u: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) -> f32 {
  return nibble_word(u.x, x0, x1) + nibble_word(u.y, x2, x3) + nibble_word(u.z, x4, x5) + nibble_word(u.w, x6, x7);
}
fn rows_dot(u0: vec4<u32>, u1: vec4<u32>, u2: vec4<u32>, u3: vec4<u32>, xb: u32, k0: u32) -> vec4<f32> {
  let x0 = xl(xb, k0);
  let x1 = xl(xb, k0 + 4u);
  let x2 = xl(xb, k0 + 8u);
  let x3 = xl(xb, k0 + 12u);
  let x4 = xl(xb, k0 + 16u);
  let x5 = xl(xb, k0 + 20u);
  let x6 = xl(xb, k0 + 24u);
  let x7 = xl(xb, k0 + 28u);
  return vec4<f32>(nibble_dot(u0, x0, x1, x2, x3, x4, x5, x6, x7), nibble_dot(u1, x0, x1, x2, x3, x4, x5, x6, x7),
                   nibble_dot(u2, x0, x1, x2, x3, x4, x5, x6, x7), nibble_dot(u3, x0, x1, x2, x3, x4, x5, x6, x7));
}
// @end fmt
const UV: u32 = UNIT / 4u;           // vec4<f32> per unit

// ---------------------------------------------------------------------------------------------- gemv
// A row group is 4 weight rows (n0..n0+3) × MR ∈ {1, 4} rows of x (each weight unit is loaded once
// for all of them). Its TK invocations stride along K over units; each keeps its partial sums in
// four vec4 accumulators (acc.r<m> = x row m0+m, component i = weight row n0+i) indexed by constants
// only. Rows past N / M re-read the last row (in bounds) and are not stored.
override MR: u32 = 1u;

struct Acc { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> }

// The partial sums of row group (n0, m0) over units kt, kt + TK, ...
fn gemv_partial(n0: u32, m0: u32, kt: u32, TK: u32) -> Acc {
  let n_0 = min(n0, P.N - 1u);
  let n_1 = min(n0 + 1u, P.N - 1u);
  let n_2 = min(n0 + 2u, P.N - 1u);
  let n_3 = min(n0 + 3u, P.N - 1u);
  let xb = min(vec4<u32>(m0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(P.M - 1u)) * P.x_stride + P.x_offset;
  let units = (P.K + UNIT - 1u) / UNIT;
  var a: Acc;
  for (var u = kt; u < units; u += TK) {
    let k0 = u * UNIT;
    let u0 = w[n_0 * P.row_units + u];
    let u1 = w[n_1 * P.row_units + u];
    let u2 = w[n_2 * P.row_units + u];
    let u3 = w[n_3 * P.row_units + u];
    let sc = vec4<f32>(scale_of(n_0, k0), scale_of(n_1, k0), scale_of(n_2, k0), scale_of(n_3, k0));
    a.r0 += rows_dot(u0, u1, u2, u3, xb.x, k0) * sc;
    if (MR == 4u) {
      a.r1 += rows_dot(u0, u1, u2, u3, xb.y, k0) * sc;
      a.r2 += rows_dot(u0, u1, u2, u3, xb.z, k0) * sc;
      a.r3 += rows_dot(u0, u1, u2, u3, xb.w, k0) * sc;
    }
  }
  return a;
}

// Stores x row m's sums for weight rows n0 .. n0 + 3.
fn store_rows(m: u32, n0: u32, v: vec4<f32>) {
  if (m >= P.M) { return; }
  let yb = m * P.y_stride + P.y_offset + n0;
  if (n0 < P.N) { y[yb] = v.x; }
  if (n0 + 1u < P.N) { y[yb + 1u] = v.y; }
  if (n0 + 2u < P.N) { y[yb + 2u] = v.z; }
  if (n0 + 3u < P.N) { y[yb + 3u] = v.w; }
}

fn store_acc(n0: u32, m0: u32, a: Acc) {
  store_rows(m0, n0, a.r0);
  if (MR == 1u) { return; }
  store_rows(m0 + 1u, n0, a.r1);
  store_rows(m0 + 2u, n0, a.r2);
  store_rows(m0 + 3u, n0, a.r3);
}

// `gemv`: any device. WG = TK × (WG / TK) row groups (4 · WG / TK weight rows per workgroup); the TK
// partials of a row group are tree-reduced in workgroup memory (one vec4 per invocation and x row).
var<workgroup> partial: array<vec4<f32>, 4u * WG>;

@compute @workgroup_size(WG)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let TK = P.tk;                      // invocations along K per row group (a power of two ≤ WG)
  let g = wid.x + wid.y * nwg.x;
  let m_blocks = (P.M + MR - 1u) / MR;
  if (g >= P.tiles_n * m_blocks) { return; }
  let m0 = (g / P.tiles_n) * MR;
  let kt = lid % TK;
  let n0 = ((g % P.tiles_n) * (WG / TK) + lid / TK) * 4u;
  var a = gemv_partial(n0, m0, kt, TK);
  partial[lid] = a.r0;
  if (MR == 4u) {
    partial[WG + lid] = a.r1;
    partial[2u * WG + lid] = a.r2;
    partial[3u * WG + lid] = a.r3;
  }
  workgroupBarrier();
  for (var s = TK / 2u; s > 0u; s = s / 2u) {
    if (kt < s) {
      partial[lid] += partial[lid + s];
      if (MR == 4u) {
        partial[WG + lid] += partial[WG + lid + s];
        partial[2u * WG + lid] += partial[2u * WG + lid + s];
        partial[3u * WG + lid] += partial[3u * WG + lid + s];
      }
    }
    workgroupBarrier();
  }
  if (kt == 0u) {
    a.r0 = partial[lid];
    if (MR == 4u) { a = Acc(partial[lid], partial[WG + lid], partial[2u * WG + lid], partial[3u * WG + lid]); }
    store_acc(n0, m0, a);
  }
}

// @variant subgroups on
// `gemv_subgroup`: one subgroup per workgroup (WG = the device's minimum subgroup size, so the
// workgroup never spans two subgroups), RG row groups one after the other, all WG invocations along K,
// reduced with subgroupAdd: no barriers, no workgroup memory.
override RG: u32 = 1u;

@compute @workgroup_size(WG)
fn gemv_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  let m_blocks = (P.M + MR - 1u) / MR;
  if (g >= P.tiles_n * m_blocks) { return; }
  let m0 = (g / P.tiles_n) * MR;
  for (var r = 0u; r < RG; r++) {
    let n0 = ((g % P.tiles_n) * RG + r) * 4u;
    if (n0 >= P.N) { break; }
    let a = gemv_partial(n0, m0, lid, WG);
    if (MR == 1u) {
      let t = subgroupAdd(a.r0);
      if (lid == 0u) { store_rows(m0, n0, t); }
    } else {
      let t = Acc(subgroupAdd(a.r0), subgroupAdd(a.r1), subgroupAdd(a.r2), subgroupAdd(a.r3));
      if (lid == 0u) { store_acc(n0, m0, t); }
    }
  }
}
// @variant subgroups off
// @end subgroups

// -------------------------------------------------------------------------------------------- matmul
const TM: u32 = 4u;
const TN: u32 = 4u;
const WGX: u32 = 8u;
const WGY: u32 = 8u;
const BM: u32 = TM * WGY;
const BN: u32 = TN * WGX;
const BK: u32 = 32u;
const BKV: u32 = BK / 4u;
const THREADS: u32 = WGX * WGY;
var<workgroup> xs_t: array<vec4<f32>, BM * BKV>;
var<workgroup> ws_t: array<vec4<f32>, BN * BKV>;
// @include register_tile

// @include tile_store

@compute @workgroup_size(WGX, WGY)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  let tiles_m = (P.M + BM - 1u) / BM;
  if (tile >= tiles_m * P.tiles_n) { return; }
  let row0 = (tile / P.tiles_n) * BM;
  let col0 = (tile % P.tiles_n) * BN;
  let units_per_slice = BK / UNIT;

  var acc: array<vec4<f32>, 4>;   // the 4×4 block (register_tile.wgsl)
  for (var k0 = 0u; k0 < P.K; k0 += BK) {
    for (var e = tid; e < BM * BKV; e += THREADS) {
      let r = row0 + e / BKV;
      let k = k0 + (e % BKV) * 4u;
      var v = vec4<f32>(0.0);
      if (r < P.M) { v = x4_guarded(r * P.x_stride + P.x_offset + k, r * P.x_stride + P.x_offset + P.K); }
      xs_t[e] = v;
    }
    for (var e = tid; e < BN * units_per_slice; e += THREADS) {
      let c = e / units_per_slice;
      let uu = e % units_per_slice;
      let n = col0 + c;
      let u = k0 / UNIT + uu;
      var d: array<vec4<f32>, UV>;
      var sc = 0.0;
      if (n < P.N && u < P.row_units) {
        d = decode(w[n * P.row_units + u]);
        sc = scale_of(n, u * UNIT);
      }
      for (var j = 0u; j < UV; j++) { ws_t[c * BKV + uu * UV + j] = d[j] * sc; }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BKV; kk++) {
      tile_fma(&acc, xs_t[lid.y * BKV + kk], xs_t[(lid.y + WGY) * BKV + kk], xs_t[(lid.y + 2u * WGY) * BKV + kk], xs_t[(lid.y + 3u * WGY) * BKV + kk],
               ws_t[lid.x * BKV + kk], ws_t[(lid.x + WGX) * BKV + kk], ws_t[(lid.x + 2u * WGX) * BKV + kk], ws_t[(lid.x + 3u * WGX) * BKV + kk]);
    }
    workgroupBarrier();
  }
  store_tile(row0 + lid.y, col0 + lid.x, acc);
}

// -------------------------------------------------------------------------------------------- gather
// One invocation per output element (token t, element k): y[t, k] = W[ids[t] − row0, k] when the id
// falls in this chunk.
@compute @workgroup_size(WG)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * WG;
  if (i >= P.M * P.K) { return; }
  let t = i / P.K;
  let k = i % P.K;
  let id = ids[t];
  if (id < P.row0 || id - P.row0 >= P.N) { return; }
  let n = id - P.row0;
  if (FLAT_ROWS) {                     // f32 rows are unpadded [N, K]
    let f = n * P.K + k;
    y[t * P.y_stride + P.y_offset + k] = bitcast<f32>(w[f >> 2u][f & 3u]);
    return;
  }
  let d = decode(w[n * P.row_units + k / UNIT]);
  let e = k % UNIT;
  y[t * P.y_stride + P.y_offset + k] = d[e / 4u][e % 4u] * scale_of(n, k);
}
