// KV cache row writes: rows [past, past+rows) of a cache take the new tokens' values, gathered from up
// to two strided sources (MLA: the normalised latent and the roped k_pe, possibly the two halves of
// the kv_a output row; MHA: K or V). One invocation per written element.
//   dst[(past + r)·dst_stride + dst_offset + c] = c < cols_a ? a[r·a_stride + a_offset + c]
//                                                            : b[r·b_stride + b_offset + c − cols_a]
// Rows at or past `capacity` are dropped (a GPU-side `past` must never write out of the cache).
//
// binding 0: params { rows, cols_a, cols_b, a_stride, a_offset, b_stride, b_offset, dst_stride,
//                     dst_offset, past, past_from_buf, capacity }   (elements)
// binding 1: a        [rows, a_stride]
// binding 2: b        [rows, b_stride]    (may be the same buffer as a)
// binding 3: dst      [capacity, dst_stride] (rw)
// binding 4: past_buf u32 [1]             (past = past_buf[0] when past_from_buf ≠ 0)
struct Params {
  rows: u32, cols_a: u32, cols_b: u32, a_stride: u32,
  a_offset: u32, b_stride: u32, b_offset: u32, dst_stride: u32,
  dst_offset: u32, past: u32, past_from_buf: u32, capacity: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read> past_buf: array<u32>;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn kv_write(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = (wid.x + wid.y * nwg.x) * WG + lid;
  let cols = P.cols_a + P.cols_b;
  if (idx >= P.rows * cols) { return; }
  let r = idx / cols;
  let c = idx % cols;
  var past = P.past;
  if (P.past_from_buf != 0u) { past = past_buf[0]; }
  if (past + r >= P.capacity) { return; }
  var x: f32;
  if (c < P.cols_a) { x = a[r * P.a_stride + P.a_offset + c]; } else { x = b[r * P.b_stride + P.b_offset + c - P.cols_a]; }
  dst[(past + r) * P.dst_stride + P.dst_offset + c] = x;
}
