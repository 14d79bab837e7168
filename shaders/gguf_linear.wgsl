// Y[M, N] = X[M, K] · Wᵀ with W a GGUF tensor (ne = [K, N]) in its raw block bytes, decoded here
// (shaders/lib/gguf_blocks.wgsl, `@variant gtype` picks the block type). GEMV for decode and small
// batches: a workgroup owns ROWS = 4 weight rows × MR rows of x; its WG invocations stride over the
// row's units (GG_UNIT weights each: one decode per unit, reused for all MR rows of x), then reduce
// their partials in workgroup memory. Rows past N re-read row N − 1 and x rows past M re-read row
// M − 1 (in bounds) and are not stored.
//
// params { M, N, K, x_stride, x_offset, y_stride, y_offset, row_bytes, units, tiles_n, _p0, _p1 }
//   row_bytes = bytes of one weight row, units = ⌈K / GG_UNIT⌉, tiles_n = ⌈N / ROWS⌉
//   1: x [M, x_stride] f32   2: wq raw bytes as u32   3: y [M, y_stride] f32 out
// Workgroup g (wid.x + wid.y · nwg.x): row tile g % tiles_n, x-row block g / tiles_n.
// @include gguf_blocks

struct Params { M: u32, N: u32, K: u32, x_stride: u32, x_offset: u32, y_stride: u32, y_offset: u32, row_bytes: u32, units: u32, tiles_n: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

override WG: u32 = 64u;   // power of two
const ROWS: u32 = 4u;
const MR: u32 = 4u;   // x rows per workgroup (1 for M = 1: set by the wrapper through `consts`)
var<workgroup> partial: array<vec4<f32>, MR * WG>;

// x[row][k..k+3], zeros past K (the weights there are zero too, but x past the row may be anything).
fn x4(base: u32, k: u32) -> vec4<f32> {
  let i = base + k;
  let v = vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
  return select(vec4<f32>(0.0), v, vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(P.K));
}

@compute @workgroup_size(WG)
fn gemv(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.tiles_n * ((P.M + MR - 1u) / MR)) { return; }
  let r0 = (g % P.tiles_n) * ROWS;
  let m0 = (g / P.tiles_n) * MR;
  var xb: array<u32, MR>;
  for (var m = 0u; m < MR; m++) { xb[m] = min(m0 + m, P.M - 1u) * P.x_stride + P.x_offset; }
  var acc: array<vec4<f32>, MR>;
  for (var u = lid; u < P.units; u += WG) {
    for (var r = 0u; r < ROWS; r++) {
      gg_decode(min(r0 + r, P.N - 1u) * P.row_bytes, u, P.K);
      for (var m = 0u; m < MR; m++) {
        var s = 0.0;
        for (var i = 0u; i < GG_UV; i++) { s += dot(gw[i], x4(xb[m], u * GG_UNIT + 4u * i)); }
        acc[m][r] += s;
      }
    }
  }
  for (var m = 0u; m < MR; m++) { partial[m * WG + lid] = acc[m]; }
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st = st / 2u) {
    if (lid < st) {
      for (var m = 0u; m < MR; m++) { partial[m * WG + lid] += partial[m * WG + lid + st]; }
    }
    workgroupBarrier();
  }
  // MR · ROWS outputs; a small workgroup (WG < 16 for short rows) writes several each.
  for (var o = lid; o < MR * ROWS; o += WG) {
    let m = o / ROWS;
    let r = o % ROWS;
    if (m0 + m < P.M && r0 + r < P.N) { y[(m0 + m) * P.y_stride + P.y_offset + r0 + r] = partial[m * WG][r]; }
  }
}
