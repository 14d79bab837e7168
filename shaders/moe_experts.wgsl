// Routed-expert SwiGLU MLPs over stacked expert weights, with the expert ids read on the GPU.
//   gate_up [E, 2I, D]: expert e's gate rows (0..I-1) then up rows (I..2I-1), HF [out, in] rows
//   down    [E, D, I]
//   (f32, f16 or group-quantised q8 / q4 with scales at bindings 13 / 14: see the @wfmt block)
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
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> h: array<f32>;
@group(0) @binding(5) var<storage, read> hv: array<VecK>;
@group(0) @binding(7) var<storage, read> wts: array<f32>;
@group(0) @binding(8) var<storage, read> shared_out: array<f32>;
@group(0) @binding(9) var<storage, read_write> out: array<f32>;
@group(0) @binding(10) var<storage, read> perm: array<u32>;
@group(0) @binding(11) var<storage, read> seg: array<u32>;
@group(0) @binding(12) var<storage, read_write> y: array<f32>;

// Expert weights, read through gu(i) / dn(i) (i in VecK units). The @wfmt block is f32 storage; the
// wrapper (src/kernels/specialise.ts withWeightFormat) swaps in f16 (4 binary16 per vec2<u32>,
// unpack2x16float: no shader-f16 needed) or q8 / q4 rows with f16 group scales, decoded to vec4<f32>
// (vec4 loads only); accumulation stays f32.
// @wfmt-begin
@group(0) @binding(2) var<storage, read> gate_up: array<VecK>;
@group(0) @binding(6) var<storage, read> down: array<VecK>;
fn gu(i: u32) -> VecK { return gate_up[i]; }
fn dn(i: u32) -> VecK { return down[i]; }
// @wfmt-end


// ---------------------------------------------------------------------------------------------- decode
// A workgroup owns ROWS = 4 output rows (the components of its vec4 accumulators: constant indices
// only, no private arrays) of one (token, slot) pair (gate_up) or one token (down); its invocations
// stride along the reduction axis. `decode_*` reduce the invocations' partials in workgroup memory (any
// device); `decode_*_subgroup` (devices with subgroups; the @subgroup block is stripped elsewhere) run
// one subgroup per workgroup (WG = the device's minimum subgroup size) and reduce with subgroupAdd: no
// barriers, no workgroup memory. Rows past I / D re-read the last row (in bounds) and are not stored.
override WG: u32 = 128u;   // power of two
const ROWS: u32 = 4u;
var<workgroup> partial: array<vec4<f32>, 2u * WG>;

// Tree-reduces partial[0..WG) (and partial[WG..2WG) when two) into partial[0] (and partial[WG]).
fn reduce_partials(lid: u32, two: bool) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      partial[lid] += partial[lid + s];
      if (two) { partial[WG + lid] += partial[WG + lid + s]; }
    }
    workgroupBarrier();
  }
}

struct GateUp { g: vec4<f32>, u: vec4<f32> }

// Rows i0..i0+3 of expert ids[tj]'s gate and up projections of x[tj / K], over k = k0, k0 + step, ...
fn gate_up_partial(tj: u32, i0: u32, k0: u32, step: u32) -> GateUp {
  let t = tj / P.K;
  let e = min(ids[tj], P.E - 1u);
  let DV = P.D / VK;
  let xb = t * DV;
  let wb = e * 2u * P.I;
  let g0 = (wb + min(i0, P.I - 1u)) * DV;
  let g1 = (wb + min(i0 + 1u, P.I - 1u)) * DV;
  let g2 = (wb + min(i0 + 2u, P.I - 1u)) * DV;
  let g3 = (wb + min(i0 + 3u, P.I - 1u)) * DV;
  let ud = P.I * DV;   // up rows follow the gate rows
  var r: GateUp;
  for (var k = k0; k < DV; k += step) {
    let xv = x[xb + k];
    r.g += vec4<f32>(vdot(gu(g0 + k), xv), vdot(gu(g1 + k), xv), vdot(gu(g2 + k), xv), vdot(gu(g3 + k), xv));
    r.u += vec4<f32>(vdot(gu(g0 + ud + k), xv), vdot(gu(g1 + ud + k), xv), vdot(gu(g2 + ud + k), xv), vdot(gu(g3 + ud + k), xv));
  }
  return r;
}

fn store_h(tj: u32, i0: u32, g: vec4<f32>, u: vec4<f32>) {
  let hb = tj * P.I + i0;
  let v = g / (vec4<f32>(1.0) + exp(-g)) * u;
  if (i0 < P.I) { h[hb] = v.x; }
  if (i0 + 1u < P.I) { h[hb + 1u] = v.y; }
  if (i0 + 2u < P.I) { h[hb + 2u] = v.z; }
  if (i0 + 3u < P.I) { h[hb + 3u] = v.w; }
}

// Rows d0..d3 of Σ_j wts[t·K + j] · down_{ids[t·K + j]} · hv[t·K + j], over k = k0, k0 + step, ...
fn down_partial(t: u32, d0: u32, k0: u32, step: u32) -> vec4<f32> {
  let IV = P.I / VK;
  let r0 = min(d0, P.D - 1u) * IV;
  let r1 = min(d0 + 1u, P.D - 1u) * IV;
  let r2 = min(d0 + 2u, P.D - 1u) * IV;
  let r3 = min(d0 + 3u, P.D - 1u) * IV;
  var acc = vec4<f32>(0.0);
  for (var j = 0u; j < P.K; j++) {
    let tj = t * P.K + j;
    let eb = min(ids[tj], P.E - 1u) * P.D * IV;
    let hb = tj * IV;
    var part = vec4<f32>(0.0);
    for (var k = k0; k < IV; k += step) {
      let hk = hv[hb + k];
      part += vec4<f32>(vdot(dn(eb + r0 + k), hk), vdot(dn(eb + r1 + k), hk), vdot(dn(eb + r2 + k), hk), vdot(dn(eb + r3 + k), hk));
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

@compute @workgroup_size(WG)
fn decode_gate_up(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups * P.T * P.K) { return; }
  let tj = g / P.groups;
  let i0 = (g % P.groups) * ROWS;
  let r = gate_up_partial(tj, i0, lid, WG);
  partial[lid] = r.g;
  partial[WG + lid] = r.u;
  reduce_partials(lid, true);
  if (lid == 0u) { store_h(tj, i0, partial[0], partial[WG]); }
}

@compute @workgroup_size(WG)
fn decode_down(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups * P.T) { return; }
  let t = g / P.groups;
  let d0 = (g % P.groups) * ROWS;
  partial[lid] = down_partial(t, d0, lid, WG);
  reduce_partials(lid, false);
  if (lid == 0u) { store_out(t, d0, partial[0]); }
}

// @subgroup-begin
@compute @workgroup_size(WG)
fn decode_gate_up_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups * P.T * P.K) { return; }
  let tj = g / P.groups;
  let i0 = (g % P.groups) * ROWS;
  let r = gate_up_partial(tj, i0, lid, WG);
  let gs = subgroupAdd(r.g);
  let us = subgroupAdd(r.u);
  if (lid == 0u) { store_h(tj, i0, gs, us); }
}

@compute @workgroup_size(WG)
fn decode_down_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups * P.T) { return; }
  let t = g / P.groups;
  let d0 = (g % P.groups) * ROWS;
  let v = subgroupAdd(down_partial(t, d0, lid, WG));
  if (lid == 0u) { store_out(t, d0, v); }
}
// @subgroup-end

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
  // The 4×4 blocks in vec4 accumulators (row i, component = column j) indexed by constants only.
  var ag0 = vec4<f32>(0.0);
  var ag1 = vec4<f32>(0.0);
  var ag2 = vec4<f32>(0.0);
  var ag3 = vec4<f32>(0.0);
  var au0 = vec4<f32>(0.0);
  var au1 = vec4<f32>(0.0);
  var au2 = vec4<f32>(0.0);
  var au3 = vec4<f32>(0.0);
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
      let g0 = ws[lid.x * BKV + kk];
      let g1 = ws[(lid.x + WGX) * BKV + kk];
      let g2 = ws[(lid.x + 2u * WGX) * BKV + kk];
      let g3 = ws[(lid.x + 3u * WGX) * BKV + kk];
      ag0 += vec4<f32>(vdot(a0, g0), vdot(a0, g1), vdot(a0, g2), vdot(a0, g3));
      ag1 += vec4<f32>(vdot(a1, g0), vdot(a1, g1), vdot(a1, g2), vdot(a1, g3));
      ag2 += vec4<f32>(vdot(a2, g0), vdot(a2, g1), vdot(a2, g2), vdot(a2, g3));
      ag3 += vec4<f32>(vdot(a3, g0), vdot(a3, g1), vdot(a3, g2), vdot(a3, g3));
      let u0 = us[lid.x * BKV + kk];
      let u1 = us[(lid.x + WGX) * BKV + kk];
      let u2 = us[(lid.x + 2u * WGX) * BKV + kk];
      let u3 = us[(lid.x + 3u * WGX) * BKV + kk];
      au0 += vec4<f32>(vdot(a0, u0), vdot(a0, u1), vdot(a0, u2), vdot(a0, u3));
      au1 += vec4<f32>(vdot(a1, u0), vdot(a1, u1), vdot(a1, u2), vdot(a1, u3));
      au2 += vec4<f32>(vdot(a2, u0), vdot(a2, u1), vdot(a2, u2), vdot(a2, u3));
      au3 += vec4<f32>(vdot(a3, u0), vdot(a3, u1), vdot(a3, u2), vdot(a3, u3));
    }
    workgroupBarrier();
  }
  let c0 = tl.col0 + lid.x;
  let r0 = tl.row0 + lid.y;
  store_h_tile(r0, tl.row1, c0, ag0 / (vec4<f32>(1.0) + exp(-ag0)) * au0);
  store_h_tile(r0 + WGY, tl.row1, c0, ag1 / (vec4<f32>(1.0) + exp(-ag1)) * au1);
  store_h_tile(r0 + 2u * WGY, tl.row1, c0, ag2 / (vec4<f32>(1.0) + exp(-ag2)) * au2);
  store_h_tile(r0 + 3u * WGY, tl.row1, c0, ag3 / (vec4<f32>(1.0) + exp(-ag3)) * au3);
}

@compute @workgroup_size(WGX, WGY)
fn grouped_down(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let tl = find_tile(wid.x + wid.y * nwg.x);
  if (!tl.ok) { return; }
  let IV = P.I / VK;
  let wb = tl.e * P.D;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
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
      let a0 = xs[lid.y * BKV + kk];
      let a1 = xs[(lid.y + WGY) * BKV + kk];
      let a2 = xs[(lid.y + 2u * WGY) * BKV + kk];
      let a3 = xs[(lid.y + 3u * WGY) * BKV + kk];
      let b0 = ws[lid.x * BKV + kk];
      let b1 = ws[(lid.x + WGX) * BKV + kk];
      let b2 = ws[(lid.x + 2u * WGX) * BKV + kk];
      let b3 = ws[(lid.x + 3u * WGX) * BKV + kk];
      acc0 += vec4<f32>(vdot(a0, b0), vdot(a0, b1), vdot(a0, b2), vdot(a0, b3));
      acc1 += vec4<f32>(vdot(a1, b0), vdot(a1, b1), vdot(a1, b2), vdot(a1, b3));
      acc2 += vec4<f32>(vdot(a2, b0), vdot(a2, b1), vdot(a2, b2), vdot(a2, b3));
      acc3 += vec4<f32>(vdot(a3, b0), vdot(a3, b1), vdot(a3, b2), vdot(a3, b3));
    }
    workgroupBarrier();
  }
  let c0 = tl.col0 + lid.x;
  let r0 = tl.row0 + lid.y;
  store_y_tile(r0, tl.row1, c0, acc0);
  store_y_tile(r0 + WGY, tl.row1, c0, acc1);
  store_y_tile(r0 + 2u * WGY, tl.row1, c0, acc2);
  store_y_tile(r0 + 3u * WGY, tl.row1, c0, acc3);
}
