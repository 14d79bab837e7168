// Dense f32 GEMV for decode: y[m, n] = Σ_k W[n, k] · x[m, k] for a few rows m of x (usually one).
// Memory-bound: each weight is read once per x row, with vec4 loads spread over the workgroup so
// neighbouring invocations read neighbouring addresses. A workgroup owns ROWS output rows and reuses
// each x vector across them; the per-invocation partial sums are reduced in workgroup memory.
//
// binding 0: params { M, N, K, x_stride, x_offset, y_stride, y_offset, groups_n }   (elements)
// binding 1: x [M, x_stride]
// binding 2: w [N, K]
// binding 3: y [M, y_stride]
// @vec-begin
alias VecK = vec4<f32>;
const VK: u32 = 4u;
fn vdot(a: VecK, b: VecK) -> f32 { return dot(a, b); }
// @vec-end

struct Params { M: u32, N: u32, K: u32, x_stride: u32, x_offset: u32, y_stride: u32, y_offset: u32, groups_n: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<VecK>;
@group(0) @binding(2) var<storage, read> w: array<VecK>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

override WG: u32 = 128u;
const ROWS: u32 = 4u;
var<workgroup> partial: array<f32, ROWS * WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups_n * P.M) { return; }
  let m = g / P.groups_n;
  let n0 = (g % P.groups_n) * ROWS;
  let KV = P.K / VK;
  let xb = (m * P.x_stride + P.x_offset) / VK;
  var acc: array<f32, ROWS>;
  for (var k = lid; k < KV; k += WG) {
    let xv = x[xb + k];
    for (var r = 0u; r < ROWS; r++) {
      let n = min(n0 + r, P.N - 1u);
      acc[r] += vdot(w[n * KV + k], xv);
    }
  }
  for (var r = 0u; r < ROWS; r++) { partial[r * WG + lid] = acc[r]; }
  workgroupBarrier();
  var s = WG / 2u;
  loop {
    if (s == 0u) { break; }
    if (lid < s) {
      for (var r = 0u; r < ROWS; r++) { partial[r * WG + lid] += partial[r * WG + lid + s]; }
    }
    workgroupBarrier();
    s = s / 2u;
  }
  if (lid < ROWS && n0 + lid < P.N) {
    y[m * P.y_stride + P.y_offset + n0 + lid] = partial[lid * WG];
  }
}
