// Linear layers Y[M, N] = X[M, K] · Wᵀ with W decoded in the shader from a packed format, and the
// row gather of such a W (embedding lookup). Formats and layouts: src/kernels/weight.ref.ts. Each row
// of W is row_units vec4<u32> "units" of UNIT consecutive elements along K (zero-padded past K);
// every unit has one scale (UNIT divides the quantisation group). Accumulation is always f32.
//
//   format UNIT  unit = 4 words of                                  (@variant fmt: one per format)
//   f32     4    1 f32 each (raw bits)
//   f16     8    2 × binary16 (unpack2x16float: no shader-f16 needed)
//   q8     16    4 × int8, × scale of its group: scales[n · scale_cols + k / SK]
//   q4     32    8 × (int4 + 8), × scale of its group (same indexing)
//   fp8    16    4 × e4m3fn, × block scale_inv[(n / 128) · scale_cols + k / 128]
// SCALE_F16 selects f16 group scales (index i in half i & 1 of word i / 2) over f32.
//
// binding 0: params (below; element units; tk = gemv invocations along K)
// gemv / matmul:
//   1: x      [M, x_stride] f32        K values per row from x_offset
//   2: w      [N, row_units] vec4<u32>
//   3: scales u32 (q8/q4/fp8 only)
//   4: y      [M, y_stride] f32        N values per row from y_offset
// gather (embedding; M = tokens, K = row length D, N = rows in this chunk starting at table row row0):
//   5: ids    [M] u32                  rows of the whole table; ids outside [row0, row0 + N) are left
//                                       to the other chunks' dispatches
//   2, 3 as above;  4: y [M, y_stride] f32
//
// gemv (decode and small prefill): a workgroup of WG = TK × (WG / TK) invocations owns
// ROWS = (WG / TK) · RPT output rows for MR rows of x. The TK invocations of a row group stride along
// K over units (neighbours read neighbouring units: coalesced); each weight unit is decoded once and
// used for all MR x rows; the RPT · MR sums per invocation are tree-reduced in workgroup memory.
// matmul: 32×32 output tile per 8×8 workgroup (4×4 per invocation), K in slices of 32: the x slice is
// loaded as is and the W slice decoded (scaled) into workgroup memory, as in shaders/matmul.wgsl.
//
// Text variants: the weight format (@variant fmt) and the x load width (@variant x: vec4 when K,
// x_stride and x_offset are multiples of 4, scalar otherwise).

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
// @variant x scalar
@group(0) @binding(1) var<storage, read> x: array<f32>;
fn x4(e: u32) -> vec4<f32> { return vec4<f32>(x[e], x[e + 1u], x[e + 2u], x[e + 3u]); }
fn x4_guarded(e: u32, end: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) { if (e + j < end) { v[j] = x[e + j]; } }
  return v;
}
// @end x

override WG: u32 = 128u;
override RPT: u32 = 2u;
// q8/q4 group size along K and scale storage (f16 pairs or f32); fp8 uses 128×128 blocks.
override SK: u32 = 32u;
override SCALE_F16: bool = true;

fn i8x4(v: u32) -> vec4<f32> {
  return vec4<f32>(vec4<i32>(vec4<u32>(v) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
fn fp8x4(v: u32) -> vec4<f32> {
  let b = (vec4<u32>(v) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
  let e = (b >> vec4<u32>(3u)) & vec4<u32>(15u);
  let m = b & vec4<u32>(7u);
  // normal: 2^(e−7)·(1 + m/8) = the f32 with exponent e + 120 and mantissa m << 20; subnormal: m·2^−9
  let normal = bitcast<vec4<f32>>(((b & vec4<u32>(0x7fu)) << vec4<u32>(20u)) + vec4<u32>(120u << 23u));
  let mag = select(normal, vec4<f32>(m) * 0.001953125, e == vec4<u32>(0u));
  return select(mag, -mag, (b & vec4<u32>(0x80u)) != vec4<u32>(0u));
}
// @variant scales on
@group(0) @binding(3) var<storage, read> scales: array<u32>;
fn group_scale(i: u32) -> f32 {
  if (SCALE_F16) {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
  }
  return bitcast<f32>(scales[i]);
}
// @variant scales off
// @end scales

// One block per format: UNIT (elements per vec4<u32>), decode (the unit's values, unscaled, as UNIT/4
// vec4s), scale_of (row n, element k).
// @variant fmt f32
const UNIT: u32 = 4u;
const FLAT_ROWS: bool = true;        // unpadded [N, K] rows
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> { return array<vec4<f32>, 1>(bitcast<vec4<f32>>(u)); }
fn scale_of(n: u32, k: u32) -> f32 { return 1.0; }
// @variant fmt f16
const UNIT: u32 = 8u;
const FLAT_ROWS: bool = false;
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> {
  return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y)), vec4<f32>(unpack2x16float(u.z), unpack2x16float(u.w)));
}
fn scale_of(n: u32, k: u32) -> f32 { return 1.0; }
// @variant fmt q8
const UNIT: u32 = 16u;
const FLAT_ROWS: bool = false;
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> { return array<vec4<f32>, 4>(i8x4(u.x), i8x4(u.y), i8x4(u.z), i8x4(u.w)); }
fn scale_of(n: u32, k: u32) -> f32 { return group_scale(n * P.scale_cols + k / SK); }
// @variant fmt q4
const UNIT: u32 = 32u;
const FLAT_ROWS: bool = false;
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> {
  var d: array<vec4<f32>, 8>;
  for (var j = 0u; j < 4u; j++) {
    d[2u * j] = vec4<f32>((vec4<u32>(u[j]) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) - 8.0;
    d[2u * j + 1u] = vec4<f32>((vec4<u32>(u[j]) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)) - 8.0;
  }
  return d;
}
fn scale_of(n: u32, k: u32) -> f32 { return group_scale(n * P.scale_cols + k / SK); }
// @variant fmt fp8
const UNIT: u32 = 16u;
const FLAT_ROWS: bool = false;
fn decode(u: vec4<u32>) -> array<vec4<f32>, UNIT / 4u> { return array<vec4<f32>, 4>(fp8x4(u.x), fp8x4(u.y), fp8x4(u.z), fp8x4(u.w)); }
fn scale_of(n: u32, k: u32) -> f32 { return bitcast<f32>(scales[(n >> 7u) * P.scale_cols + (k >> 7u)]); }   // f32 [ceil(N/128), ceil(K/128)]
// @end fmt
const UV: u32 = UNIT / 4u;           // vec4<f32> per unit

// ---------------------------------------------------------------------------------------------- gemv
// MR rows of x per workgroup (each decoded weight unit is reused for all of them); acc holds
// RPT · MR ≤ 16 sums per invocation.
override MR: u32 = 1u;
var<workgroup> partial: array<f32, RPT * MR * WG>;

fn x_unit(xb: u32, k0: u32) -> array<vec4<f32>, UV> {
  var xs: array<vec4<f32>, UV>;
  if (k0 + UNIT <= P.K) {
    for (var j = 0u; j < UV; j++) { xs[j] = x4(xb + k0 + 4u * j); }
  } else {
    for (var j = 0u; j < UV; j++) { xs[j] = x4_guarded(xb + k0 + 4u * j, xb + P.K); }
  }
  return xs;
}

@compute @workgroup_size(WG)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let TK = P.tk;                      // invocations along K per row group (a power of two ≤ WG)
  let RG = WG / TK;
  let rows_per_wg = RG * RPT;
  let g = wid.x + wid.y * nwg.x;
  let m_blocks = (P.M + MR - 1u) / MR;
  if (g >= P.tiles_n * m_blocks) { return; }
  let m0 = (g / P.tiles_n) * MR;
  let n0 = (g % P.tiles_n) * rows_per_wg;
  let kt = lid % TK;
  let rg = lid / TK;
  let units = (P.K + UNIT - 1u) / UNIT;
  var acc: array<f32, 16>;
  for (var u = kt; u < units; u += TK) {
    let k0 = u * UNIT;
    for (var i = 0u; i < RPT; i++) {
      let n = min(n0 + rg + RG * i, P.N - 1u);
      let d = decode(w[n * P.row_units + u]);
      let sc = scale_of(n, k0);
      for (var mm = 0u; mm < MR; mm++) {
        let xs = x_unit(min(m0 + mm, P.M - 1u) * P.x_stride + P.x_offset, k0);
        var s = 0.0;
        for (var j = 0u; j < UV; j++) { s += dot(d[j], xs[j]); }
        acc[i * MR + mm] += s * sc;
      }
    }
  }
  let A = RPT * MR;
  for (var i = 0u; i < A; i++) { partial[i * WG + lid] = acc[i]; }
  workgroupBarrier();
  var s = TK / 2u;
  loop {
    if (s == 0u) { break; }
    if (kt < s) {
      for (var i = 0u; i < A; i++) { partial[i * WG + lid] += partial[i * WG + lid + s]; }
    }
    workgroupBarrier();
    s = s / 2u;
  }
  if (kt == 0u) {
    for (var i = 0u; i < RPT; i++) {
      let n = n0 + rg + RG * i;
      for (var mm = 0u; mm < MR; mm++) {
        let m = m0 + mm;
        if (n < P.N && m < P.M) { y[m * P.y_stride + P.y_offset + n] = partial[(i * MR + mm) * WG + lid]; }
      }
    }
  }
}

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

@compute @workgroup_size(WGX, WGY)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  let tiles_m = (P.M + BM - 1u) / BM;
  if (tile >= tiles_m * P.tiles_n) { return; }
  let row0 = (tile / P.tiles_n) * BM;
  let col0 = (tile % P.tiles_n) * BN;
  let units_per_slice = BK / UNIT;

  var acc: array<array<f32, TN>, TM>;
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
      var a: array<vec4<f32>, TM>;
      var b: array<vec4<f32>, TN>;
      for (var i = 0u; i < TM; i++) { a[i] = xs_t[(lid.y + i * WGY) * BKV + kk]; }
      for (var j = 0u; j < TN; j++) { b[j] = ws_t[(lid.x + j * WGX) * BKV + kk]; }
      for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) { acc[i][j] += dot(a[i], b[j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < TM; i++) {
    let r = row0 + lid.y + i * WGY;
    if (r >= P.M) { continue; }
    for (var j = 0u; j < TN; j++) {
      let c = col0 + lid.x + j * WGX;
      if (c < P.N) { y[r * P.y_stride + P.y_offset + c] = acc[i][j]; }
    }
  }
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
