// Stores an invocation's 4×4 register tile (register_tile.wgsl) of a GEMM into y [M, y_stride] (N
// values per row from y_offset): rows r0 + i·WGY, columns c0 + j·WGX, those inside M × N. Written for
// kernels that name the output `y` and its shape P.M, P.N, P.y_stride, P.y_offset (matmul.wgsl,
// linear.wgsl, sparse.wgsl), with workgroup tile constants WGX and WGY.
fn store_row(r: u32, c0: u32, v: vec4<f32>) {
  if (r >= P.M) { return; }
  let base = r * P.y_stride + P.y_offset;
  if (c0 < P.N) { y[base + c0] = v.x; }
  if (c0 + WGX < P.N) { y[base + c0 + WGX] = v.y; }
  if (c0 + 2u * WGX < P.N) { y[base + c0 + 2u * WGX] = v.z; }
  if (c0 + 3u * WGX < P.N) { y[base + c0 + 3u * WGX] = v.w; }
}
fn store_tile(r0: u32, c0: u32, acc: array<vec4<f32>, 4>) {
  store_row(r0, c0, acc[0]);
  store_row(r0 + WGY, c0, acc[1]);
  store_row(r0 + 2u * WGY, c0, acc[2]);
  store_row(r0 + 3u * WGY, c0, acc[3]);
}
