// Routed-expert SwiGLU MLPs over stacked expert weights, with the expert ids read on the GPU.
//   gate_up [E, 2I, D]: expert e's gate rows (0..I-1) then up rows (I..2I-1), HF [out, in] rows
//   down    [E, D, I]
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
// The @vec block is the load width along the reduction axis (D for gate_up, I for down): vec4 when it
// is a multiple of 4, scalar otherwise (the wrapper specialises each entry point separately).
// @vec-begin
alias VecK = vec4<f32>;
const VK: u32 = 4u;
fn vdot(a: VecK, b: VecK) -> f32 { return dot(a, b); }
// @vec-end

struct Params { T: u32, K: u32, D: u32, I: u32, E: u32, groups: u32, has_shared: u32, _p: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<VecK>;
@group(0) @binding(2) var<storage, read> gate_up: array<VecK>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> h: array<f32>;
@group(0) @binding(5) var<storage, read> hv: array<VecK>;
@group(0) @binding(6) var<storage, read> down: array<VecK>;
@group(0) @binding(7) var<storage, read> wts: array<f32>;
@group(0) @binding(8) var<storage, read> shared_out: array<f32>;
@group(0) @binding(9) var<storage, read_write> out: array<f32>;
@group(0) @binding(10) var<storage, read> perm: array<u32>;
@group(0) @binding(11) var<storage, read> seg: array<u32>;
@group(0) @binding(12) var<storage, read_write> y: array<f32>;

fn silu(v: f32) -> f32 { return v / (1.0 + exp(-v)); }

// ---------------------------------------------------------------------------------------------- decode
override WG: u32 = 128u;   // power of two
const ROWS: u32 = 4u;
var<workgroup> partial: array<f32, 2u * ROWS * WG>;

fn reduce_rows(lid: u32, n: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      for (var r = 0u; r < n; r++) { partial[r * WG + lid] += partial[r * WG + lid + s]; }
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn decode_gate_up(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups * P.T * P.K) { return; }
  let tj = g / P.groups;
  let i0 = (g % P.groups) * ROWS;
  let t = tj / P.K;
  let e = min(ids[tj], P.E - 1u);
  let DV = P.D / VK;
  let xb = t * DV;
  let wb = e * 2u * P.I;
  var ag: array<f32, ROWS>;
  var au: array<f32, ROWS>;
  for (var k = lid; k < DV; k += WG) {
    let xv = x[xb + k];
    for (var r = 0u; r < ROWS; r++) {
      let i = min(i0 + r, P.I - 1u);
      ag[r] += vdot(gate_up[(wb + i) * DV + k], xv);
      au[r] += vdot(gate_up[(wb + P.I + i) * DV + k], xv);
    }
  }
  for (var r = 0u; r < ROWS; r++) {
    partial[r * WG + lid] = ag[r];
    partial[(ROWS + r) * WG + lid] = au[r];
  }
  reduce_rows(lid, 2u * ROWS);
  if (lid < ROWS && i0 + lid < P.I) {
    h[tj * P.I + i0 + lid] = silu(partial[lid * WG]) * partial[(ROWS + lid) * WG];
  }
}

@compute @workgroup_size(WG)
fn decode_down(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups * P.T) { return; }
  let t = g / P.groups;
  let d0 = (g % P.groups) * ROWS;
  let IV = P.I / VK;
  var acc: array<f32, ROWS>;
  for (var j = 0u; j < P.K; j++) {
    let tj = t * P.K + j;
    let e = min(ids[tj], P.E - 1u);
    let wj = wts[tj];
    let hb = tj * IV;
    var part = array<f32, ROWS>();
    for (var k = lid; k < IV; k += WG) {
      let hk = hv[hb + k];
      for (var r = 0u; r < ROWS; r++) {
        let d = min(d0 + r, P.D - 1u);
        part[r] += vdot(down[(e * P.D + d) * IV + k], hk);
      }
    }
    for (var r = 0u; r < ROWS; r++) { acc[r] += wj * part[r]; }
  }
  for (var r = 0u; r < ROWS; r++) { partial[r * WG + lid] = acc[r]; }
  reduce_rows(lid, ROWS);
  if (lid < ROWS && d0 + lid < P.D) {
    let d = d0 + lid;
    var v = partial[lid * WG];
    if (P.has_shared != 0u) { v += shared_out[t * P.D + d]; }
    out[t * P.D + d] = v;
  }
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

struct Tile { e: u32, row0: u32, row1: u32, col0: u32, ok: bool }

// The expert, sorted-row range and column block of linear workgroup `wl`.
fn find_tile(wl: u32) -> Tile {
  var tl: Tile;
  let E = P.E;
  let tile = wl / P.groups;
  tl.col0 = (wl % P.groups) * BN;
  tl.ok = tile < seg[2u * E + 1u];
  if (!tl.ok) { return tl; }
  // largest e with tile_start[e] ≤ tile (empty experts share their successor's start)
  var lo = 0u;
  var hi = E - 1u;
  while (lo < hi) {
    let mid = (lo + hi + 1u) / 2u;
    if (seg[E + 1u + mid] <= tile) { lo = mid; } else { hi = mid - 1u; }
  }
  tl.e = lo;
  tl.row0 = seg[lo] + (tile - seg[E + 1u + lo]) * BM;
  tl.row1 = min(tl.row0 + BM, seg[lo + 1u]);
  return tl;
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
  var ag: array<array<f32, TN>, TM>;
  var au: array<array<f32, TN>, TM>;
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
        vg = gate_up[(wb + tl.col0 + cc) * DV + kv];
        vu = gate_up[(wb + P.I + tl.col0 + cc) * DV + kv];
      }
      ws[q] = vg;
      us[q] = vu;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BKV; kk++) {
      var a: array<VecK, TM>;
      for (var i = 0u; i < TM; i++) { a[i] = xs[(lid.y + i * WGY) * BKV + kk]; }
      for (var j = 0u; j < TN; j++) {
        let bg = ws[(lid.x + j * WGX) * BKV + kk];
        let bu = us[(lid.x + j * WGX) * BKV + kk];
        for (var i = 0u; i < TM; i++) {
          ag[i][j] += vdot(a[i], bg);
          au[i][j] += vdot(a[i], bu);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < TM; i++) {
    let r = tl.row0 + lid.y + i * WGY;
    if (r >= tl.row1) { continue; }
    for (var j = 0u; j < TN; j++) {
      let cc = tl.col0 + lid.x + j * WGX;
      if (cc < P.I) { h[r * P.I + cc] = silu(ag[i][j]) * au[i][j]; }
    }
  }
}

@compute @workgroup_size(WGX, WGY)
fn grouped_down(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let tl = find_tile(wid.x + wid.y * nwg.x);
  if (!tl.ok) { return; }
  let IV = P.I / VK;
  let wb = tl.e * P.D;
  var acc: array<array<f32, TN>, TM>;
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
      if (tl.col0 + cc < P.D && kv < IV) { v = down[(wb + tl.col0 + cc) * IV + kv]; }
      ws[q] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BKV; kk++) {
      var a: array<VecK, TM>;
      for (var i = 0u; i < TM; i++) { a[i] = xs[(lid.y + i * WGY) * BKV + kk]; }
      for (var j = 0u; j < TN; j++) {
        let b = ws[(lid.x + j * WGX) * BKV + kk];
        for (var i = 0u; i < TM; i++) { acc[i][j] += vdot(a[i], b); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < TM; i++) {
    let r = tl.row0 + lid.y + i * WGY;
    if (r >= tl.row1) { continue; }
    for (var j = 0u; j < TN; j++) {
      let cc = tl.col0 + lid.x + j * WGX;
      if (cc < P.D) { y[r * P.D + cc] = acc[i][j]; }
    }
  }
}
