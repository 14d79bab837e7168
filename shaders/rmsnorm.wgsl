// RMSNorm over rows, on strided slices so it can normalise part of a row (e.g. the latent half of
// MLA's kv_a output): y = x / sqrt(mean(x²) + eps) · w. One workgroup per row; partial sums of
// squares reduced in workgroup memory, or with subgroupAdd by a one-subgroup workgroup (@variant reduce).
//
// binding 0: params { rows, dim, eps, x_stride, x_offset, y_stride, y_offset }   (strides/offsets in elements)
// rmsnorm:      1: x [rows, x_stride]   2: w [dim]   3: y [rows, y_stride]
// add_rmsnorm:  1: r [rows, x_stride]   2: w [dim]   3: y [rows, y_stride]   4: h [rows, x_stride] (rw)
//               h += r, then y = RMSNorm(h) · w  (the residual add fused with the next norm)
// @variant reduce subgroup
enable subgroups;
// @variant reduce workgroup
// @end reduce
struct Params { rows: u32, dim: u32, eps: f32, x_stride: u32, x_offset: u32, y_stride: u32, y_offset: u32, _p: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> h: array<f32>;

override WG: u32 = 256u;

fn row_index(wid: vec3u, nwg: vec3u) -> u32 { return wid.x + wid.y * nwg.x; }

// The workgroup-wide sum (@variant reduce, picked by the wrapper): `workgroup` is a tree in workgroup
// memory (any device); `subgroup` is one subgroupAdd, for workgroups that are exactly one subgroup
// (WG = the device's minimum subgroup size): no barriers.
// @variant reduce workgroup
var<workgroup> partial: array<f32, WG>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  var s = WG / 2u;
  loop {
    if (s == 0u) { break; }
    if (lid < s) { partial[lid] = partial[lid] + partial[lid + s]; }
    workgroupBarrier();
    s = s / 2u;
  }
  let total = partial[0];
  workgroupBarrier();
  return total;
}
// @variant reduce subgroup
fn reduce_sum(lid: u32, v: f32) -> f32 { return subgroupAdd(v); }
// @end reduce

@compute @workgroup_size(WG)
fn rmsnorm(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = row_index(wid, nwg);
  if (row >= P.rows) { return; }
  let xb = row * P.x_stride + P.x_offset;
  let yb = row * P.y_stride + P.y_offset;
  var ss = 0.0;
  for (var i = lid; i < P.dim; i += WG) { let v = x[xb + i]; ss += v * v; }
  let inv = inverseSqrt(reduce_sum(lid, ss) / f32(P.dim) + P.eps);
  for (var i = lid; i < P.dim; i += WG) { y[yb + i] = x[xb + i] * inv * w[i]; }
}

@compute @workgroup_size(WG)
fn add_rmsnorm(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = row_index(wid, nwg);
  if (row >= P.rows) { return; }
  let xb = row * P.x_stride + P.x_offset;
  let yb = row * P.y_stride + P.y_offset;
  var ss = 0.0;
  for (var i = lid; i < P.dim; i += WG) {
    let v = h[xb + i] + x[xb + i];
    h[xb + i] = v;
    ss += v * v;
  }
  let inv = inverseSqrt(reduce_sum(lid, ss) / f32(P.dim) + P.eps);
  for (var i = lid; i < P.dim; i += WG) { y[yb + i] = h[xb + i] * inv * w[i]; }
}

// rmsnorm_inplace:  (1 unused)  2: w [dim]  3: y [rows, y_stride] (rw): y = RMSNorm(y) · w on the slice
// (a buffer cannot be bound both read-only and writable in one dispatch, so in place is its own entry).
@compute @workgroup_size(WG)
fn rmsnorm_inplace(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = row_index(wid, nwg);
  if (row >= P.rows) { return; }
  let yb = row * P.y_stride + P.y_offset;
  var ss = 0.0;
  for (var i = lid; i < P.dim; i += WG) { let v = y[yb + i]; ss += v * v; }
  let inv = inverseSqrt(reduce_sum(lid, ss) / f32(P.dim) + P.eps);
  for (var i = lid; i < P.dim; i += WG) { y[yb + i] = y[yb + i] * inv * w[i]; }
}
