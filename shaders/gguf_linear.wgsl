// Y[M, N] = X[M, K] · Wᵀ with W a GGUF tensor (ne = [K, N]) in its raw block bytes, decoded here
// (shaders/lib/gguf_blocks.wgsl, `@variant gtype` picks the block type). GEMV for decode and small
// batches: a row group is ROWS = 4 weight rows × MR rows of x; its invocations stride over the row's
// units (GG_UNIT weights each: every decoded weight is used for all MR rows of x). Rows past N re-read
// row N − 1 and x rows past M re-read row M − 1 (in bounds) and are not stored.
//   gemv           one row group per workgroup of WG invocations, tree-reduced in workgroup memory
//   gemv_subgroup  (devices with subgroups; @variant subgroups drops it elsewhere) one subgroup per
//                  workgroup (WG = the minimum subgroup size), RG row groups one after the other,
//                  reduced with subgroupAdd: no barriers, no workgroup memory
//   matmul         prefill: a BM × BN = 32 × 32 output tile per 8 × 8 workgroup (4 × 4 per invocation,
//                  register_tile.wgsl), K in slices of BK = 64 weights (a whole number of units of every
//                  type): the slice's BN weight rows are decoded from their blocks into workgroup memory
//                  once and used by all BM rows of x (the GEMV decodes each weight once per 4 x rows)
//
// params { M, N, K, x_stride, x_offset, y_stride, y_offset, row_bytes, units, tiles_n, _p0, _p1 }
//   row_bytes = bytes of one weight row, units = ⌈K / GG_UNIT⌉, tiles_n = ⌈N / (ROWS · RG)⌉
//   1: x [M, x_stride] f32   2: wq raw bytes as u32   3: y [M, y_stride] f32 out   4: ids (gather only)
// Workgroup g (wid.x + wid.y · nwg.x): row tile g % tiles_n, x-row block g / tiles_n (matmul: tiles_n =
// ⌈N / BN⌉ column tiles, x-row blocks of BM).
// Text variants: gtype; x (vec4 loads when K, x_stride and x_offset are multiples of 4, else scalar
// loads, zero past K); subgroups; `const MR` set by the wrapper (1 for M = 1, else 4).
// @variant subgroups on
enable subgroups;
// @variant subgroups off
// @end subgroups
// @include gguf_blocks

struct Params { M: u32, N: u32, K: u32, x_stride: u32, x_offset: u32, y_stride: u32, y_offset: u32, row_bytes: u32, units: u32, tiles_n: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// @variant x vec4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
fn xv(e: u32) -> vec4<f32> { return x[e >> 2u]; }
// @variant x scalar
@group(0) @binding(1) var<storage, read> x: array<f32>;
// x[e..e+3] of a row whose K values end at `end`; zeros past it (a ragged F32/F16/BF16 row's last unit).
fn xv_end(e: u32, end: u32) -> vec4<f32> {
  return select(vec4<f32>(0.0), vec4<f32>(x[e], x[e + 1u], x[e + 2u], x[e + 3u]), vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(end));
}
// @end x

override WG: u32 = 64u;   // power of two
override RG: u32 = 1u;    // row groups per workgroup (gemv_subgroup)
const ROWS: u32 = 4u;
const MR: u32 = 4u;

struct Acc { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> }

// x[e..e+3] of the row starting at xb (zeros past K for scalar loads).
fn xq(xb: u32, k: u32) -> vec4<f32> {
// @variant x vec4
  return xv(xb + k);
// @variant x scalar
  return xv_end(xb + k, xb + P.K);
// @end x
}

// Partial sums of weight rows n0..n0+3 (the components) for x rows m0..m0+MR−1 (r0..r3) over the units
// lid, lid + step, …: the 4 rows' units are decoded side by side and each x vec4 is loaded once for them
// (named accumulators, no arrays indexed at run time).
fn partial_dots(n0: u32, m0: u32, lid: u32, step: u32) -> Acc {
  let rb0 = min(n0, P.N - 1u) * P.row_bytes;
  let rb1 = min(n0 + 1u, P.N - 1u) * P.row_bytes;
  let rb2 = min(n0 + 2u, P.N - 1u) * P.row_bytes;
  let rb3 = min(n0 + 3u, P.N - 1u) * P.row_bytes;
  let xb = min(vec4<u32>(m0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(P.M - 1u)) * P.x_stride + P.x_offset;
  var a: Acc;
  for (var u = lid; u < P.units; u += step) {
    let k0 = u * GG_UNIT;
    let g0 = gg_unit(rb0, u, P.K);
    let g1 = gg_unit(rb1, u, P.K);
    let g2 = gg_unit(rb2, u, P.K);
    let g3 = gg_unit(rb3, u, P.K);
    for (var i = 0u; i < GG_UV; i++) {
      let w0 = gg_w4(g0, i);
      let w1 = gg_w4(g1, i);
      let w2 = gg_w4(g2, i);
      let w3 = gg_w4(g3, i);
      let k = k0 + 4u * i;
      let x0 = xq(xb.x, k);
      a.r0 += vec4<f32>(dot(w0, x0), dot(w1, x0), dot(w2, x0), dot(w3, x0));
      if (MR == 4u) {
        let x1 = xq(xb.y, k);
        let x2 = xq(xb.z, k);
        let x3 = xq(xb.w, k);
        a.r1 += vec4<f32>(dot(w0, x1), dot(w1, x1), dot(w2, x1), dot(w3, x1));
        a.r2 += vec4<f32>(dot(w0, x2), dot(w1, x2), dot(w2, x2), dot(w3, x2));
        a.r3 += vec4<f32>(dot(w0, x3), dot(w1, x3), dot(w2, x3), dot(w3, x3));
      }
    }
  }
  return a;
}

fn acc_row(a: Acc, m: u32) -> vec4<f32> {
  if (m == 0u) { return a.r0; }
  if (m == 1u) { return a.r1; }
  if (m == 2u) { return a.r2; }
  return a.r3;
}

fn store(n0: u32, m0: u32, o: u32, v: f32) {
  let m = o / ROWS;
  let r = o % ROWS;
  if (m0 + m < P.M && n0 + r < P.N) { y[(m0 + m) * P.y_stride + P.y_offset + n0 + r] = v; }
}

var<workgroup> partial: array<vec4<f32>, MR * WG>;

@compute @workgroup_size(WG)
fn gemv(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.tiles_n * ((P.M + MR - 1u) / MR)) { return; }
  let n0 = (g % P.tiles_n) * ROWS;
  let m0 = (g / P.tiles_n) * MR;
  let acc = partial_dots(n0, m0, lid, WG);
  for (var m = 0u; m < MR; m++) { partial[m * WG + lid] = acc_row(acc, m); }
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st = st / 2u) {
    if (lid < st) {
      for (var m = 0u; m < MR; m++) { partial[m * WG + lid] += partial[m * WG + lid + st]; }
    }
    workgroupBarrier();
  }
  // MR · ROWS outputs; a small workgroup (WG < 16 for short rows) writes several each.
  for (var o = lid; o < MR * ROWS; o += WG) { store(n0, m0, o, partial[(o / ROWS) * WG][o % ROWS]); }
}

// Embedding lookup (gguf-linear.ts ggufEmbedding): y[t, y_offset + k] = W[ids[t], k] for k < K, the
// table's rows decoded as the GEMV decodes them. One invocation per (token, unit); M = tokens, N = rows
// of the table (ids ≥ N leave their output row unwritten; a chunk of a larger table reads row
// ids[t] − x_offset, so the ids of other chunks wrap past its N), units = ⌈K / GG_UNIT⌉.
@group(0) @binding(4) var<storage, read> ids: array<u32>;

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  let t = i / P.units;
  let u = i % P.units;
  if (t >= P.M) { return; }
  // x_offset is the first row of this table chunk: ids below it wrap past N, as do ids past its end.
  let row = ids[t] - P.x_offset;
  if (row >= P.N) { return; }
  let g = gg_unit(row * P.row_bytes, u, P.K);
  let k0 = u * GG_UNIT;
  let base = t * P.y_stride + P.y_offset + k0;
  for (var q = 0u; q < GG_UV; q++) {
    let w = gg_w4(g, q);
    for (var j = 0u; j < 4u; j++) {
      if (k0 + 4u * q + j < P.K) { y[base + 4u * q + j] = w[j]; }
    }
  }
}

// -------------------------------------------------------------------------------------------- matmul
const WGX: u32 = 8u;
const WGY: u32 = 8u;
const BM: u32 = 4u * WGY;
const BN: u32 = 4u * WGX;
const BK: u32 = 64u;
const BKV: u32 = BK / 4u;
const THREADS: u32 = WGX * WGY;
// 32 × 64 f32 each: 16 KiB together, WebGPU's default maxComputeWorkgroupStorageSize.
var<workgroup> xs_t: array<vec4<f32>, BM * BKV>;
var<workgroup> ws_t: array<vec4<f32>, BN * BKV>;
// @include register_tile
// @include tile_store

@compute @workgroup_size(WGX, WGY)
fn matmul(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= P.tiles_n * ((P.M + BM - 1u) / BM)) { return; }
  let row0 = (tile / P.tiles_n) * BM;
  let col0 = (tile % P.tiles_n) * BN;
  let upr = BK / GG_UNIT;   // units of a weight row in one slice
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < P.K; k0 += BK) {
    // x slice: BM rows × BK, zeros past M and K (x past a row's K may be the next row, or past the buffer).
    for (var e = tid; e < BM * BKV; e += THREADS) {
      let r = row0 + e / BKV;
      let k = k0 + (e % BKV) * 4u;
      var v = vec4<f32>(0.0);
      if (r < P.M && k < P.K) { v = xq(r * P.x_stride + P.x_offset, k); }
      xs_t[e] = v;
    }
    // W slice: BN rows × BK decoded from the blocks, one (row, unit) per step; rows past N re-read row
    // N − 1 (not stored), units past the row are zeros.
    for (var e = tid; e < BN * upr; e += THREADS) {
      let c = e / upr;
      let uu = e % upr;
      let u = k0 / GG_UNIT + uu;
      let live = u < P.units;
      let g = gg_unit(min(col0 + c, P.N - 1u) * P.row_bytes, min(u, P.units - 1u), P.K);
      for (var i = 0u; i < GG_UV; i++) {
        ws_t[c * BKV + uu * GG_UV + i] = select(vec4<f32>(0.0), gg_w4(g, i), live);
      }
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

// @variant subgroups on
@compute @workgroup_size(WG)
fn gemv_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.tiles_n * ((P.M + MR - 1u) / MR)) { return; }
  let m0 = (g / P.tiles_n) * MR;
  for (var rg = 0u; rg < RG; rg++) {
    let n0 = ((g % P.tiles_n) * RG + rg) * ROWS;
    if (n0 >= P.N) { break; }
    let acc = partial_dots(n0, m0, lid, WG);
    for (var m = 0u; m < MR; m++) {
      let s = subgroupAdd(acc_row(acc, m));
      if (lid < ROWS) { store(n0, m0, m * ROWS + lid, s[lid]); }
    }
  }
}
// @variant subgroups off
// @end subgroups
