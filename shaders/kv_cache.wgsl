// KV cache row writes: rows [past, past+rows) of a cache take the new tokens' values, gathered from up
// to two strided sources (MLA: the normalised latent and the roped k_pe, possibly the two halves of
// the kv_a output row; MHA: K or V).
//   dst[(past + r)·dst_stride + dst_offset + c] = c < cols_a ? a[r·a_stride + a_offset + c]
//                                                            : b[r·b_stride + b_offset + c − cols_a]
// Rows at or past `capacity` are dropped (a GPU-side `past` must never write out of the cache).
// Cache element format (`// @variant kv`, the cache's `kvCache` load option):
//   f32: one invocation per written element.
//   f16: the cache holds f16 pairs packed in u32 words (pack2x16float, no shader-f16 needed): element
//        e is half e % 2 (low half first) of word e / 2. One invocation per word, so no two
//        invocations share a word; dst_stride and dst_offset are even (the wrapper checks) and an odd
//        row's last word gets 0 in its high half (the cache pads such rows by one element).
// `kv_unpack` (f16 only): f32 copy out[r·cols + c] = dst[r·dst_stride + dst_offset + c], r < rows, for
// the consumers that read the cache as f32 (the naive MLA path's kv_b matmul).
//
// binding 0: params { rows, cols_a, cols_b, a_stride, a_offset, b_stride, b_offset, dst_stride,
//                     dst_offset, past, past_from_buf, capacity }   (elements)
// binding 1: a        [rows, a_stride]
// binding 2: b        [rows, b_stride]    (may be the same buffer as a)
// binding 3: dst      [capacity, dst_stride] (rw)
// binding 4: past_buf u32 [1]             (past = past_buf[0] when past_from_buf ≠ 0)
// binding 5: unpacked f32 [rows, cols_a]  (kv_unpack only, rw)
struct Params {
  rows: u32, cols_a: u32, cols_b: u32, a_stride: u32,
  a_offset: u32, b_stride: u32, b_offset: u32, dst_stride: u32,
  dst_offset: u32, past: u32, past_from_buf: u32, capacity: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(4) var<storage, read> past_buf: array<u32>;
@group(0) @binding(5) var<storage, read_write> unpacked: array<f32>;

override WG: u32 = 256u;

fn linear(wid: vec3u, nwg: vec3u, lid: u32) -> u32 { return (wid.x + wid.y * nwg.x) * WG + lid; }

fn write_past() -> u32 {
  if (P.past_from_buf != 0u) { return past_buf[0]; }
  return P.past;
}

// Value c of new row r (c < cols_a + cols_b).
fn source(r: u32, c: u32) -> f32 {
  if (c < P.cols_a) { return a[r * P.a_stride + P.a_offset + c]; }
  return b[r * P.b_stride + P.b_offset + c - P.cols_a];
}

// @variant kv f32
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn kv_write(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = linear(wid, nwg, lid);
  let cols = P.cols_a + P.cols_b;
  if (idx >= P.rows * cols) { return; }
  let r = idx / cols;
  let c = idx % cols;
  let past = write_past();
  if (past + r >= P.capacity) { return; }
  dst[(past + r) * P.dst_stride + P.dst_offset + c] = source(r, c);
}
// @variant kv f16
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WG)
fn kv_write(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = linear(wid, nwg, lid);
  let cols = P.cols_a + P.cols_b;
  let words = (cols + 1u) / 2u;
  if (idx >= P.rows * words) { return; }
  let r = idx / words;
  let c = (idx % words) * 2u;
  let past = write_past();
  if (past + r >= P.capacity) { return; }
  var hi = 0.0;
  if (c + 1u < cols) { hi = source(r, c + 1u); }
  dst[((past + r) * P.dst_stride + P.dst_offset + c) / 2u] = pack2x16float(vec2<f32>(source(r, c), hi));
}

@compute @workgroup_size(WG)
fn kv_unpack(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = linear(wid, nwg, lid);
  if (idx >= P.rows * P.cols_a) { return; }
  let r = idx / P.cols_a;
  let e = r * P.dst_stride + P.dst_offset + idx % P.cols_a;
  let w = unpack2x16float(dst[e / 2u]);
  unpacked[idx] = select(w.x, w.y, (e & 1u) == 1u);
}
// @end kv
