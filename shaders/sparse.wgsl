// Structured-sparse linear layers y[m, n] = Σ_k W[n, k] · x[m, k] with W stored 2:4 or V:2:M
// (layouts: src/sparse/formats.ts and docs/sparsity.md). Every row of W is G groups of GW columns
// (GW = 4 for 2:4, M for V:2:M); each group keeps 2 values, whose 2-bit codes pick 2 of the group's 4
// candidate columns — fixed {0,1,2,3} for 2:4, the V-row block's 4 selected columns for V:2:M.
//
// binding 0: params { M, N, K, x_stride, x_offset, y_stride, y_offset, tiles, G, GW, V, meta_stride,
//                     row_words, row_scales, x_div }                   (elements / words)
// binding 1: x      [M, x_stride] f32       K values per row from x_offset
// binding 2: vals   f32: [N, G] vec2 (the [N, 2G] kept values) | q8, q4: u32 [N, row_words] packed ints
// binding 3: scales [N, row_scales] f32     one per 32 kept values of a row (q8, q4 only)
// binding 4: codes  [N, meta_stride] u32    4-bit code per (row, group), group g in nibble g % 8 of word g / 8
// binding 5: cols   [ceil(N / V), G] u32    4 × 8-bit column offsets per (block, group) (V:2:M only)
// binding 6: y      [M, y_stride] f32       N values per row from y_offset
// binding 7: ids    [M] u32                 (gemv, rows = expert only) expert of each y row
//
// Two entry points:
// - `gemv` / `gemv_subgroup` (decode, few rows of x): a workgroup owns ROWS = 8 consecutive output
//   rows of one x row; its WG invocations stride over the groups. When the 8 rows sit in one V-row
//   block (SHARED: V a multiple of 8, always true for 2:4) each invocation loads the block's 4 selected
//   x values of a group once and every row adds its 2 kept values, scattered into their code slots, as
//   one vec4 dot. `gemv` reduces the partial sums in workgroup memory (WG 16..64, about 8+ groups per
//   invocation); `gemv_subgroup` is one subgroup per workgroup reduced with subgroupAdd (no barriers;
//   @variant subgroups drops it on devices without subgroups). Weight bytes streamed ≈ 2 values +
//   4 bits per (row, group).
// - `matmul_shared` (prefill, when the BN output rows of a tile share their candidate columns: 2:4, or
//   V a multiple of BN): a workgroup computes a BM × BN tile of y (8×8 invocations, 4×4 each). Per
//   slice of GS groups it gathers the 4 candidate x values of each group once per x row ([BM, GS]
//   vec4) and expands each weight row's 2 values into their code slots ([BN, GS] vec4), then every
//   (x row, out row) pair does one vec4 dot per group: 4/GW of the dense FLOPs, 2/GW of its x reads.
// - `matmul` (prefill, any V): the simple fallback. Per slice of GS groups it stages the dense x slice
//   [BM, GS·GW] and the tile's decoded weights (2 values and 2 slice-column indices per (row, group)),
//   then each (x row, out row) pair does 2 FMAs per group, gathering x from workgroup memory.
//
// The value format (f32 / q8 / q4), the candidate columns (2:4 / V:2:M) and, for the GEMV, the row
// mapping are the structural variants, picked by the wrapper (src/kernels/sparse.ts) from the
// `@variant` blocks below (src/kernels/shader-source.ts), with @variant subgroups. Row mapping
// `expert` (MoE experts stacked as one [E·N, K] sparse weight, N a multiple of V): y row m uses x row
// m / x_div and the N weight rows of expert ids[m]. `matmul_shared`'s inner step is
// shaders/lib/register_tile.wgsl (its `load` always vec4).
// @variant subgroups on
enable subgroups;
// @variant subgroups off
// @end subgroups

struct Params {
  M: u32, N: u32, K: u32, x_stride: u32, x_offset: u32, y_stride: u32, y_offset: u32, tiles: u32,
  G: u32, GW: u32, V: u32, meta_stride: u32, row_words: u32, row_scales: u32, x_div: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> codes: array<u32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

const QGROUP: u32 = 32u; // kept values per scale

// @variant values f32
@group(0) @binding(2) var<storage, read> vals: array<vec2<f32>>;
fn load_vals(n: u32, g: u32) -> vec2<f32> { return vals[n * P.G + g]; }
// @variant values q8
@group(0) @binding(2) var<storage, read> vals: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
fn load_vals(n: u32, g: u32) -> vec2<f32> {
  let i = 2u * g;                                     // index of the group's first kept value in the row
  let w = bitcast<i32>(vals[n * P.row_words + i / 4u]);
  let s = (i % 4u) * 8u;
  return vec2<f32>(f32(extractBits(w, s, 8u)), f32(extractBits(w, s + 8u, 8u))) * scales[n * P.row_scales + i / QGROUP];
}
// @variant values q4
@group(0) @binding(2) var<storage, read> vals: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<f32>;
fn load_vals(n: u32, g: u32) -> vec2<f32> {
  let i = 2u * g;
  let w = bitcast<i32>(vals[n * P.row_words + i / 8u]);
  let s = (i % 8u) * 4u;
  return vec2<f32>(f32(extractBits(w, s, 4u)), f32(extractBits(w, s + 4u, 4u))) * scales[n * P.row_scales + i / QGROUP];
}
// @end values

// @variant cols vnm
@group(0) @binding(5) var<storage, read> cols: array<u32>;
fn group_cols(n: u32, g: u32) -> vec4<u32> {
  let w = cols[(n / P.V) * P.G + g];
  return vec4<u32>(w & 255u, (w >> 8u) & 255u, (w >> 16u) & 255u, w >> 24u);
}
// @variant cols 2:4
fn group_cols(n: u32, g: u32) -> vec4<u32> { return vec4<u32>(0u, 1u, 2u, 3u); }
// @end cols

// @variant rows plain
fn w_row0(m: u32) -> u32 { return 0u; }
fn x_row(m: u32) -> u32 { return m; }
// @variant rows expert
@group(0) @binding(7) var<storage, read> ids: array<u32>;
fn w_row0(m: u32) -> u32 { return ids[m] * P.N; }
fn x_row(m: u32) -> u32 { return m / P.x_div; }
// @end rows

fn code_of(n: u32, g: u32) -> u32 { return (codes[n * P.meta_stride + g / 8u] >> ((g % 8u) * 4u)) & 15u; }

// ---- gemv -------------------------------------------------------------------------------------------
override WG: u32 = 64u;
override SHARED: bool = true;
const ROWS: u32 = 8u;   // output rows per workgroup: two vec4 accumulators, indexed by constants only

// The 2 kept values' contribution: scatter them into their code slots and dot with the 4 candidate x.
fn pick2(xv: vec4<f32>, v: vec2<f32>, code: u32) -> f32 {
  let slot = vec4<u32>(0u, 1u, 2u, 3u);
  let wv = select(vec4<f32>(0.0), vec4<f32>(v.x), slot == vec4<u32>(code & 3u))
         + select(vec4<f32>(0.0), vec4<f32>(v.y), slot == vec4<u32>(code >> 2u));
  return dot(xv, wv);
}

fn row_term(n: u32, g: u32, xv: vec4<f32>) -> f32 { return pick2(xv, load_vals(n, g), code_of(n, g)); }

// The 4 candidate x values of weight row n, group g (padding columns clamp to the row's last value:
// their weights are zero).
fn x4(n: u32, g: u32, xb: u32) -> vec4<f32> {
  let c = min(group_cols(n, g) + vec4<u32>(g * P.GW), vec4<u32>(P.K - 1u)) + vec4<u32>(xb);
  return vec4<f32>(x[c.x], x[c.y], x[c.z], x[c.w]);
}

struct Acc8 { lo: vec4<f32>, hi: vec4<f32> }

// One invocation's partial sums of y row m, output rows n0..n0+7, over groups lane, lane + lanes, ...
fn gemv_partial(m: u32, n0: u32, lane: u32, lanes: u32) -> Acc8 {
  let w0 = w_row0(m);                     // first weight row (0, or the expert's row block)
  let xb = x_row(m) * P.x_stride + P.x_offset;
  // Rows past N re-read the last row (in bounds) and are not stored.
  let last = vec4<u32>(P.N - 1u);
  let ra = min(vec4<u32>(n0) + vec4<u32>(0u, 1u, 2u, 3u), last) + vec4<u32>(w0);
  let rb = min(vec4<u32>(n0) + vec4<u32>(4u, 5u, 6u, 7u), last) + vec4<u32>(w0);
  var acc = Acc8(vec4<f32>(0.0), vec4<f32>(0.0));
  for (var g = lane; g < P.G; g += lanes) {
    if (SHARED) {
      // all 8 rows sit in one V-block: the block's 4 x values are loaded once for them
      let xv = x4(ra.x, g, xb);
      acc.lo += vec4<f32>(row_term(ra.x, g, xv), row_term(ra.y, g, xv), row_term(ra.z, g, xv), row_term(ra.w, g, xv));
      acc.hi += vec4<f32>(row_term(rb.x, g, xv), row_term(rb.y, g, xv), row_term(rb.z, g, xv), row_term(rb.w, g, xv));
    } else {
      acc.lo += vec4<f32>(row_term(ra.x, g, x4(ra.x, g, xb)), row_term(ra.y, g, x4(ra.y, g, xb)),
                          row_term(ra.z, g, x4(ra.z, g, xb)), row_term(ra.w, g, x4(ra.w, g, xb)));
      acc.hi += vec4<f32>(row_term(rb.x, g, x4(rb.x, g, xb)), row_term(rb.y, g, x4(rb.y, g, xb)),
                          row_term(rb.z, g, x4(rb.z, g, xb)), row_term(rb.w, g, x4(rb.w, g, xb)));
    }
  }
  return acc;
}

fn store8(m: u32, n0: u32, t: Acc8) {
  let yb = m * P.y_stride + P.y_offset + n0;
  let v = array<f32, 8>(t.lo.x, t.lo.y, t.lo.z, t.lo.w, t.hi.x, t.hi.y, t.hi.z, t.hi.w);
  for (var r = 0u; r < ROWS; r++) {
    if (n0 + r < P.N) { y[yb + r] = v[r]; }
  }
}

var<workgroup> partial: array<Acc8, WG>;

// Any device: partial sums reduced in workgroup memory.
@compute @workgroup_size(WG)
fn gemv(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= P.tiles * P.M) { return; }
  let m = t / P.tiles;
  let n0 = (t % P.tiles) * ROWS;
  partial[lid] = gemv_partial(m, n0, lid, WG);
  workgroupBarrier();
  var s = WG / 2u;
  loop {
    if (s == 0u) { break; }
    if (lid < s) {
      partial[lid].lo += partial[lid + s].lo;
      partial[lid].hi += partial[lid + s].hi;
    }
    workgroupBarrier();
    s = s / 2u;
  }
  if (lid == 0u) { store8(m, n0, partial[0]); }
}

// @variant subgroups on
// Devices with subgroups: one subgroup per workgroup (WG = the minimum subgroup size), reduced with
// subgroupAdd: no barriers, no workgroup memory.
@compute @workgroup_size(WG)
fn gemv_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= P.tiles * P.M) { return; }
  let m = t / P.tiles;
  let n0 = (t % P.tiles) * ROWS;
  let acc = gemv_partial(m, n0, lid, WG);
  let total = Acc8(subgroupAdd(acc.lo), subgroupAdd(acc.hi));
  if (lid == 0u) { store8(m, n0, total); }
}
// @variant subgroups off
// @end subgroups

// ---- matmul -----------------------------------------------------------------------------------------
const TM: u32 = 4u;
const TN: u32 = 4u;
const WGX: u32 = 8u;
const WGY: u32 = 8u;
const BM: u32 = TM * WGY;
const BN: u32 = TN * WGX;
const THREADS: u32 = WGX * WGY;
override GS: u32 = 8u;   // groups per K slice
override XW: u32 = 32u;  // staged x columns per row, ≥ GS · GW

var<workgroup> xs: array<f32, BM * XW>;
var<workgroup> wv: array<vec2<f32>, BN * GS>;
var<workgroup> wi: array<u32, BN * GS>;     // the two kept values' columns within the slice, 16 bits each
// @include tile_store

@compute @workgroup_size(WGX, WGY)
fn matmul(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  let tiles_m = (P.M + BM - 1u) / BM;
  if (tile >= tiles_m * P.tiles) { return; }
  let row0 = (tile / P.tiles) * BM;
  let col0 = (tile % P.tiles) * BN;
  let SW = GS * P.GW;
  // The 4×4 block in four vec4 accumulators indexed by constants only (no private-array spills).
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var g0 = 0u; g0 < P.G; g0 += GS) {
    let kb = g0 * P.GW;
    for (var e = tid; e < BM * SW; e += THREADS) {
      let r = e / SW;
      let c = e % SW;
      var v = 0.0;
      if (row0 + r < P.M && kb + c < P.K) { v = x[(row0 + r) * P.x_stride + P.x_offset + kb + c]; }
      xs[r * XW + c] = v;
    }
    for (var e = tid; e < BN * GS; e += THREADS) {
      let j = e / GS;
      let gl = e % GS;
      let n = col0 + j;
      let g = g0 + gl;
      var v = vec2<f32>(0.0);
      var idx = 0u;
      if (n < P.N && g < P.G) {
        let c = group_cols(n, g) + vec4<u32>(gl * P.GW);
        let code = code_of(n, g);
        v = load_vals(n, g);
        idx = c[code & 3u] | (c[code >> 2u] << 16u);
      }
      wv[e] = v;
      wi[e] = idx;
    }
    workgroupBarrier();
    for (var gl = 0u; gl < GS; gl++) {
      // this invocation's 4 weight rows: values and their two slice columns
      let e0 = lid.x * GS + gl;
      let e1 = (lid.x + WGX) * GS + gl;
      let e2 = (lid.x + 2u * WGX) * GS + gl;
      let e3 = (lid.x + 3u * WGX) * GS + gl;
      let v0 = wv[e0]; let v1 = wv[e1]; let v2 = wv[e2]; let v3 = wv[e3];
      let c0 = vec4<u32>(wi[e0], wi[e1], wi[e2], wi[e3]);
      let lo = c0 & vec4<u32>(0xffffu);
      let hi = c0 >> vec4<u32>(16u);
      acc0 += gather_dot((lid.y) * XW, lo, hi, v0, v1, v2, v3);
      acc1 += gather_dot((lid.y + WGY) * XW, lo, hi, v0, v1, v2, v3);
      acc2 += gather_dot((lid.y + 2u * WGY) * XW, lo, hi, v0, v1, v2, v3);
      acc3 += gather_dot((lid.y + 3u * WGY) * XW, lo, hi, v0, v1, v2, v3);
    }
    workgroupBarrier();
  }
  store_tile(row0 + lid.y, col0 + lid.x, array<vec4<f32>, 4>(acc0, acc1, acc2, acc3));
}

// x row (offset xr in xs) against the 4 weight rows: 2 gathered FMAs each.
fn gather_dot(xr: u32, lo: vec4<u32>, hi: vec4<u32>, v0: vec2<f32>, v1: vec2<f32>, v2: vec2<f32>, v3: vec2<f32>) -> vec4<f32> {
  return vec4<f32>(v0.x * xs[xr + lo.x] + v0.y * xs[xr + hi.x], v1.x * xs[xr + lo.y] + v1.y * xs[xr + hi.y],
                   v2.x * xs[xr + lo.z] + v2.y * xs[xr + hi.z], v3.x * xs[xr + lo.w] + v3.y * xs[xr + hi.w]);
}


// ---- matmul_shared ----------------------------------------------------------------------------------
var<workgroup> xs4: array<vec4<f32>, BM * GS>;  // [BM, GS]: x at the group's 4 candidate columns
var<workgroup> ws4: array<vec4<f32>, BN * GS>;  // [BN, GS]: a row's 2 kept values in their code slots
// @include register_tile

fn x_at(base: u32, k: u32) -> f32 {
  if (k < P.K) { return x[base + k]; }
  return 0.0;
}

@compute @workgroup_size(WGX, WGY)
fn matmul_shared(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  let tiles_m = (P.M + BM - 1u) / BM;
  if (tile >= tiles_m * P.tiles) { return; }
  let row0 = (tile / P.tiles) * BM;
  let col0 = (tile % P.tiles) * BN;
  var acc: array<vec4<f32>, 4>;   // the 4×4 block (register_tile.wgsl)
  for (var g0 = 0u; g0 < P.G; g0 += GS) {
    for (var e = tid; e < BM * GS; e += THREADS) {
      let r = e / GS;
      let g = g0 + e % GS;
      var v = vec4<f32>(0.0);
      if (row0 + r < P.M && g < P.G) {
        let c = group_cols(col0, g) + vec4<u32>(g * P.GW);   // the tile's rows all sit in col0's block
        let xb = (row0 + r) * P.x_stride + P.x_offset;
        v = vec4<f32>(x_at(xb, c.x), x_at(xb, c.y), x_at(xb, c.z), x_at(xb, c.w));
      }
      xs4[e] = v;
    }
    for (var e = tid; e < BN * GS; e += THREADS) {
      let n = col0 + e / GS;
      let g = g0 + e % GS;
      var v = vec4<f32>(0.0);
      if (n < P.N && g < P.G) {
        let code = code_of(n, g);
        let kept = load_vals(n, g);
        let slot = vec4<u32>(0u, 1u, 2u, 3u);
        v = select(vec4<f32>(0.0), vec4<f32>(kept.x), slot == vec4<u32>(code & 3u))
          + select(vec4<f32>(0.0), vec4<f32>(kept.y), slot == vec4<u32>(code >> 2u));
      }
      ws4[e] = v;
    }
    workgroupBarrier();
    for (var gl = 0u; gl < GS; gl++) {
      tile_fma(&acc, xs4[lid.y * GS + gl], xs4[(lid.y + WGY) * GS + gl], xs4[(lid.y + 2u * WGY) * GS + gl], xs4[(lid.y + 3u * WGY) * GS + gl],
               ws4[lid.x * GS + gl], ws4[(lid.x + WGX) * GS + gl], ws4[(lid.x + 2u * WGX) * GS + gl], ws4[(lid.x + 3u * WGX) * GS + gl]);
    }
    workgroupBarrier();
  }
  store_tile(row0 + lid.y, col0 + lid.x, acc);
}
