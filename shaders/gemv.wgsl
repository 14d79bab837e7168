// Dense f32 GEMV for decode: y[m, n] = Σ_k W[n, k] · x[m, k] for a few rows m of x (usually one).
// Memory-bound: each weight is read once per x row, with vec4 loads spread over the workgroup so
// neighbouring invocations read neighbouring addresses. A workgroup owns ROWS output rows and reuses
// each x vector across them; the per-invocation partial sums are reduced in workgroup memory.
//
// binding 0: params { M, N, K, x_stride, x_offset, y_stride, y_offset, tiles_n }   (elements; tiles_n =
//            groups of ROWS output rows along N)
// binding 1: x [M, x_stride]
// binding 2: w [N, K]
// binding 3: y [M, y_stride]
//
// Two reductions: `main` reduces the workgroup's partial sums in workgroup memory (any device);
// `main_subgroup` runs one subgroup per workgroup (WG = the device's minimum subgroup size, so a
// workgroup never spans two subgroups) and reduces with subgroupAdd: no barriers, no workgroup memory.
// Text variants (src/kernels/shader-source.ts): @variant subgroups keeps `main_subgroup` on devices
// with the feature; @variant load (shaders/lib/load_width.wgsl) is the load width along K.
// @variant subgroups on
enable subgroups;
// @variant subgroups off
// @end subgroups
// @include load_width

struct Params { M: u32, N: u32, K: u32, x_stride: u32, x_offset: u32, y_stride: u32, y_offset: u32, tiles_n: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<VecK>;
@group(0) @binding(2) var<storage, read> w: array<VecK>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

override WG: u32 = 128u;
const ROWS: u32 = 4u;
// One vec4 of partial sums per invocation (its 4 rows as components): the reduction moves vec4s and the
// accumulator is indexed by constants only (no private-array spills).
var<workgroup> partial: array<vec4<f32>, WG>;

/** This invocation's share of the dot products of rows n0..n0+3 with x row m (rows past N re-read the last row). */
fn row_dots(m: u32, n0: u32, lid: u32) -> vec4<f32> {
  let KV = P.K / VK;
  let xb = (m * P.x_stride + P.x_offset) / VK;
  let r0 = min(n0, P.N - 1u) * KV;
  let r1 = min(n0 + 1u, P.N - 1u) * KV;
  let r2 = min(n0 + 2u, P.N - 1u) * KV;
  let r3 = min(n0 + 3u, P.N - 1u) * KV;
  var acc = vec4<f32>(0.0);
  for (var k = lid; k < KV; k += WG) {
    let xv = x[xb + k];
    acc += vec4<f32>(vdot(w[r0 + k], xv), vdot(w[r1 + k], xv), vdot(w[r2 + k], xv), vdot(w[r3 + k], xv));
  }
  return acc;
}

/** Writes the four sums of rows n0..n0+3 that exist. */
fn store(m: u32, n0: u32, v: vec4<f32>) {
  let yb = m * P.y_stride + P.y_offset + n0;
  if (n0 < P.N) { y[yb] = v.x; }
  if (n0 + 1u < P.N) { y[yb + 1u] = v.y; }
  if (n0 + 2u < P.N) { y[yb + 2u] = v.z; }
  if (n0 + 3u < P.N) { y[yb + 3u] = v.w; }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.tiles_n * P.M) { return; }
  let m = g / P.tiles_n;
  let n0 = (g % P.tiles_n) * ROWS;
  partial[lid] = row_dots(m, n0, lid);
  workgroupBarrier();
  var s = WG / 2u;
  loop {
    if (s == 0u) { break; }
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
    s = s / 2u;
  }
  if (lid == 0u) { store(m, n0, partial[0]); }
}

// @variant subgroups on
@compute @workgroup_size(WG)
fn main_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.tiles_n * P.M) { return; }
  let m = g / P.tiles_n;
  let n0 = (g % P.tiles_n) * ROWS;
  let total = subgroupAdd(row_dots(m, n0, lid));
  if (lid == 0u) { store(m, n0, total); }
}
// @variant subgroups off
// @end subgroups
