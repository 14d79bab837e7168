// Multi-head Latent Attention pieces around the attention core (DeepSeek-V2/V3). Weight layout:
// kv_b [H·(nope+v), kv_lora], per head rows [W_UK (nope rows) | W_UV (v rows)].
//   absorb_q: q̃[s, h] = [W_UK,hᵀ·q_nope[s, h] | q_pe[s, h]]    (kv_lora + rope values; one invocation each)
//   up_v:     out[s, h·v + i] = W_UV,h[i, :]·o_lat[s, h, :]      (one workgroup per 4 outputs; up_v_subgroup
//             with subgroups: @variant subgroups, dropped by the wrapper on other devices)
//   expand_k: K[t, h] = [kvx[t, h·(nope+v) .. +nope] | pe of cache row t]   (naive path; one invocation each)
//
// binding 0: params { S, H, nope, rope, dv, kv_lora, q_stride, q_offset, o_stride, o_offset, c_stride, c_offset }
// absorb_q: 1: q [S, q_stride] (per head [nope | rope] from q_offset)   2: kv_b   3: qa [S, H, kv_lora+rope] (rw)
// up_v:     1: o_lat [S, H, kv_lora]   2: kv_b   3: out [S, o_stride] (head h at o_offset + h·v) (rw)
// expand_k: 1: kvx [S, H·(nope+v)] (S = cached tokens T here)   4: cache [T, c_stride] (pe at c_offset)
//           3: k [T, H, nope+rope] (rw)
// @variant subgroups on
enable subgroups;
// @variant subgroups off
// @end subgroups
struct Params {
  S: u32, H: u32, nope: u32, rope: u32,
  dv: u32, kv_lora: u32, q_stride: u32, q_offset: u32,
  o_stride: u32, o_offset: u32, c_stride: u32, c_offset: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> kv_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> cache: array<f32>;

override WG: u32 = 64u;

fn linear(wid: vec3u, nwg: vec3u, lid: u32) -> u32 { return (wid.x + wid.y * nwg.x) * WG + lid; }

@compute @workgroup_size(WG)
fn absorb_q(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let da = P.kv_lora + P.rope;
  let idx = linear(wid, nwg, lid);
  if (idx >= P.S * P.H * da) { return; }
  let j = idx % da;
  let h = (idx / da) % P.H;
  let s = idx / (da * P.H);
  let qb = s * P.q_stride + P.q_offset + h * (P.nope + P.rope);
  var acc = 0.0;
  if (j < P.kv_lora) {
    // Neighbouring invocations read neighbouring columns j of each W_UK row: coalesced.
    let wb = h * (P.nope + P.dv) * P.kv_lora + j;
    for (var n = 0u; n < P.nope; n++) { acc += kv_b[wb + n * P.kv_lora] * x[qb + n]; }
  } else {
    acc = x[qb + P.nope + j - P.kv_lora];
  }
  y[idx] = acc;
}

// One workgroup per (token s, head h, UPV_ROWS = 4 consecutive outputs i): invocations stride over
// the latent index j (coalesced reads of each W_UV row and of o_lat) — a GEMV per head in one dispatch
// for all heads (decode). Prefill uses the tiled matmul per head. The 4 outputs are the components of
// a vec4 accumulator (constant indices only: no private arrays). `up_v` reduces in workgroup memory
// (any device); `up_v_subgroup` (devices with subgroups; the @subgroup block is stripped elsewhere) is
// one subgroup per workgroup (WG = the minimum subgroup size) reduced with subgroupAdd, no barriers.
const UPV_ROWS: u32 = 4u;
var<workgroup> red: array<vec4<f32>, WG>;

struct UpV { s: u32, h: u32, i0: u32, ok: bool }

fn up_v_block(wid: vec3u, nwg: vec3u) -> UpV {
  let blocks = (P.dv + UPV_ROWS - 1u) / UPV_ROWS;
  let g = wid.x + wid.y * nwg.x;
  return UpV(g / (blocks * P.H), (g / blocks) % P.H, (g % blocks) * UPV_ROWS, g < P.S * P.H * blocks);
}

fn up_v_partial(b: UpV, j0: u32, step: u32) -> vec4<f32> {
  let ob = (b.s * P.H + b.h) * P.kv_lora;
  let wb = (b.h * (P.nope + P.dv) + P.nope) * P.kv_lora;
  let r0 = wb + min(b.i0, P.dv - 1u) * P.kv_lora;
  let r1 = wb + min(b.i0 + 1u, P.dv - 1u) * P.kv_lora;
  let r2 = wb + min(b.i0 + 2u, P.dv - 1u) * P.kv_lora;
  let r3 = wb + min(b.i0 + 3u, P.dv - 1u) * P.kv_lora;
  var acc = vec4<f32>(0.0);
  for (var j = j0; j < P.kv_lora; j += step) {
    acc += vec4<f32>(kv_b[r0 + j], kv_b[r1 + j], kv_b[r2 + j], kv_b[r3 + j]) * x[ob + j];
  }
  return acc;
}

fn up_v_store(b: UpV, v: vec4<f32>) {
  let yb = b.s * P.o_stride + P.o_offset + b.h * P.dv + b.i0;
  if (b.i0 < P.dv) { y[yb] = v.x; }
  if (b.i0 + 1u < P.dv) { y[yb + 1u] = v.y; }
  if (b.i0 + 2u < P.dv) { y[yb + 2u] = v.z; }
  if (b.i0 + 3u < P.dv) { y[yb + 3u] = v.w; }
}

@compute @workgroup_size(WG)
fn up_v(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = up_v_block(wid, nwg);
  if (!b.ok) { return; }
  red[lid] = up_v_partial(b, lid, WG);
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st /= 2u) {
    if (lid < st) { red[lid] += red[lid + st]; }
    workgroupBarrier();
  }
  if (lid == 0u) { up_v_store(b, red[0]); }
}

// @variant subgroups on
@compute @workgroup_size(WG)
fn up_v_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = up_v_block(wid, nwg);
  if (!b.ok) { return; }
  let v = subgroupAdd(up_v_partial(b, lid, WG));
  if (lid == 0u) { up_v_store(b, v); }
}
// @variant subgroups off
// @end subgroups

@compute @workgroup_size(WG)
fn expand_k(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let dk = P.nope + P.rope;
  let idx = linear(wid, nwg, lid);
  if (idx >= P.S * P.H * dk) { return; }
  let n = idx % dk;
  let h = (idx / dk) % P.H;
  let t = idx / (dk * P.H);
  var val: f32;
  if (n < P.nope) { val = x[t * P.H * (P.nope + P.dv) + h * (P.nope + P.dv) + n]; }
  else { val = cache[t * P.c_stride + P.c_offset + n - P.nope]; }
  y[idx] = val;
}
