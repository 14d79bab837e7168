// Dense f32 matmul Y = X · Wᵀ with weights stored [out, in] as in Hugging Face checkpoints.
// Register tiling: a workgroup of 8×8 invocations computes a 32×32 tile of Y, each invocation a 4×4
// block (rows ty + 8i, columns tx + 8j, so neighbouring invocations write neighbouring columns).
// K advances in 32-wide slices staged in workgroup memory with vec4 loads.
//
// binding 0: params { M, N, K, x_stride, x_offset, y_stride, y_offset, tiles_n }   (elements)
// binding 1: x [M, x_stride]     rows of activations (K contiguous values from x_offset)
// binding 2: w [N, K]            weight rows
// binding 3: y [M, y_stride]     output rows (N values from y_offset)
//
// The only text variant is the load width (@variant load in shaders/lib/load_width.wgsl, included by
// register_tile.wgsl): vec4 when K, strides and offsets are multiples of 4, scalar loads otherwise.
// @include register_tile

struct Params { M: u32, N: u32, K: u32, x_stride: u32, x_offset: u32, y_stride: u32, y_offset: u32, tiles_n: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<VecK>;
@group(0) @binding(2) var<storage, read> w: array<VecK>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// Each invocation owns a 4×4 block (register_tile.wgsl).
const TM: u32 = 4u;
const TN: u32 = 4u;
const WGX: u32 = 8u;
const WGY: u32 = 8u;
const BM: u32 = TM * WGY;
const BN: u32 = TN * WGX;
const BK: u32 = 32u;
const BKV: u32 = BK / VK;
const THREADS: u32 = WGX * WGY;

var<workgroup> xs: array<VecK, BM * BKV>;
var<workgroup> ws: array<VecK, BN * BKV>;

// @include tile_store

@compute @workgroup_size(WGX, WGY)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let tile = wid.x + wid.y * nwg.x;
  let tiles_m = (P.M + BM - 1u) / BM;
  if (tile >= tiles_m * P.tiles_n) { return; }
  let row0 = (tile / P.tiles_n) * BM;
  let col0 = (tile % P.tiles_n) * BN;
  let KV = P.K / VK;
  let xs_stride = P.x_stride / VK;
  let xs_off = P.x_offset / VK;

  var acc: array<vec4<f32>, 4>;   // the 4×4 block, indexed by constants only (register_tile.wgsl)
  for (var k0 = 0u; k0 < KV; k0 += BKV) {
    for (var e = tid; e < BM * BKV; e += THREADS) {
      let r = e / BKV;
      let kv = k0 + e % BKV;
      var v = VecK(0.0);
      if (row0 + r < P.M && kv < KV) { v = x[(row0 + r) * xs_stride + xs_off + kv]; }
      xs[e] = v;
    }
    for (var e = tid; e < BN * BKV; e += THREADS) {
      let c = e / BKV;
      let kv = k0 + e % BKV;
      var v = VecK(0.0);
      if (col0 + c < P.N && kv < KV) { v = w[(col0 + c) * KV + kv]; }
      ws[e] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BKV; kk++) {
      tile_fma(&acc, xs[lid.y * BKV + kk], xs[(lid.y + WGY) * BKV + kk], xs[(lid.y + 2u * WGY) * BKV + kk], xs[(lid.y + 3u * WGY) * BKV + kk],
               ws[lid.x * BKV + kk], ws[(lid.x + WGX) * BKV + kk], ws[(lid.x + 2u * WGX) * BKV + kk], ws[(lid.x + 3u * WGX) * BKV + kk]);
    }
    workgroupBarrier();
  }
  store_tile(row0 + lid.y, col0 + lid.x, acc);
}
