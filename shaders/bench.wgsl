// Device-ceiling kernels for the benchmark harness (src/bench/ceilings.ts).
//
// binding 0: params { n, iters, _p0, _p1 }
// fma_peak:  (1 unused)                2: dst [n] vec4<f32>   n invocations, each running CHAINS independent
//                                                            vec4 FMA chains for iters × UNROLL steps
//                                                            → flops = n · iters · UNROLL · CHAINS · 4 · 2
// copy_vec4: 1: src [n] vec4<f32>      2: dst [n] vec4<f32>   dst = src, one vec4 per invocation
//                                                            → bytes = 2 · 16 · n
// tiny:      (1 unused)                2: dst [≥ n] vec4<f32> one small workgroup writing one element:
//                                                            what a dispatch costs when it does no work
//
// The FMA kernel keeps CHAINS independent accumulators so the FMA latency is hidden by independent
// instructions (a single dependent chain measures latency, not throughput); the multiplier and addend
// make every chain converge to a finite fixed point (a = 0.999999·a + 1e-6 → 1), so no denormals or
// infinities slow it down, and the sum written at the end keeps the compiler from removing the work.
struct Params { n: u32, iters: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

override WG: u32 = 256u;
/** Inner-loop unroll: must match FMA_UNROLL in src/bench/ceilings.ts. */
const UNROLL: u32 = 4u;
/** Independent vec4 chains: must match FMA_CHAINS in src/bench/ceilings.ts. */
const CHAINS: u32 = 8u;

fn linear(gid: vec3u, nwg: vec3u) -> u32 { return gid.x + gid.y * nwg.x * WG; }

@compute @workgroup_size(WG)
fn fma_peak(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear(gid, nwg);
  if (i >= P.n) { return; }
  let s = f32(i & 1023u) * 1e-4;
  var a0 = vec4<f32>(s, s + 0.1, s + 0.2, s + 0.3);
  var a1 = a0 + 0.01;
  var a2 = a0 + 0.02;
  var a3 = a0 + 0.03;
  var a4 = a0 + 0.04;
  var a5 = a0 + 0.05;
  var a6 = a0 + 0.06;
  var a7 = a0 + 0.07;
  let m = vec4<f32>(0.999999);
  let c = vec4<f32>(1e-6);
  for (var k = 0u; k < P.iters; k++) {
    // UNROLL (4) steps of CHAINS (8) independent FMAs.
    a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
    a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
    a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
    a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
  }
  dst[i] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}

@compute @workgroup_size(WG)
fn copy_vec4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = linear(gid, nwg);
  if (i >= P.n) { return; }
  dst[i] = src[i];
}

@compute @workgroup_size(1)
fn tiny(@builtin(workgroup_id) wid: vec3u) {
  if (wid.x < P.n) { dst[wid.x] = vec4<f32>(f32(P.iters)); }
}
