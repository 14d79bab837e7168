// Elementwise kernels over flat f32 arrays of n elements; one invocation per element, the linear
// index folded over (x, y) workgroups for n past 65,535 × WG.
//
// binding 0: params { n }
// add:          1: a [n]            2: b [n]    3: y [n]          y = a + b
// add_inplace:  1: a [n]            (2 unused)  3: y [n] (rw)     y += a   (the residual stream)
// silu_mul:     1: g [n]            2: u [n]    3: y [n]          y = silu(g) · u
// silu_mul_rows 1: gu [rows, 2·n/rows]  (gate | up halves of one fused projection)   3: y [rows, n/rows]
// add_bias:     1: bias [cols]      (2 unused)  3: y [n / cols, cols] (rw)   y[r, c] += bias[c]   (linear biases:
//               GPT-OSS q/k/v/o projections and router)
struct Params { n: u32, cols: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

override WG: u32 = 256u;

fn linear(gid: vec3u, nwg: vec3u) -> u32 { return gid.x + gid.y * nwg.x * WG; }
fn silu(v: f32) -> f32 { return v / (1.0 + exp(-v)); }

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear(gid, nwg);
  if (i >= P.n) { return; }
  y[i] = a[i] + b[i];
}

@compute @workgroup_size(WG)
fn add_inplace(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear(gid, nwg);
  if (i >= P.n) { return; }
  y[i] = y[i] + a[i];
}

@compute @workgroup_size(WG)
fn silu_mul(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear(gid, nwg);
  if (i >= P.n) { return; }
  y[i] = silu(a[i]) * b[i];
}

@compute @workgroup_size(WG)
fn silu_mul_rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear(gid, nwg);
  if (i >= P.n) { return; }
  let r = i / P.cols;
  let c = i - r * P.cols;
  let base = r * 2u * P.cols;
  y[i] = silu(a[base + c]) * a[base + P.cols + c];
}

@compute @workgroup_size(WG)
fn add_bias(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear(gid, nwg);
  if (i >= P.n) { return; }
  y[i] = y[i] + a[i % P.cols];
}
