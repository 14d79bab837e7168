// Multi-head Latent Attention pieces around the attention core (DeepSeek-V2/V3). Weight layout:
// kv_b [H·(nope+v), kv_lora], per head rows [W_UK (nope rows) | W_UV (v rows)].
//   absorb_q: q̃[s, h] = [W_UK,hᵀ·q_nope[s, h] | q_pe[s, h]]    (kv_lora + rope values; one invocation each)
//   up_v:     out[s, h·v + i] = W_UV,h[i, :]·o_lat[s, h, :]      (one invocation per output)
//   expand_k: K[t, h] = [kvx[t, h·(nope+v) .. +nope] | pe of cache row t]   (naive path; one invocation each)
//
// binding 0: params { S, H, nope, rope, dv, kv_lora, q_stride, q_offset, o_stride, o_offset, c_stride, c_offset }
// absorb_q: 1: q [S, q_stride] (per head [nope | rope] from q_offset)   2: kv_b   3: qa [S, H, kv_lora+rope] (rw)
// up_v:     1: o_lat [S, H, kv_lora]   2: kv_b   3: out [S, o_stride] (head h at o_offset + h·v) (rw)
// expand_k: 1: kvx [S, H·(nope+v)] (S = cached tokens T here)   4: cache [T, c_stride] (pe at c_offset)
//           3: k [T, H, nope+rope] (rw)
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

@compute @workgroup_size(WG)
fn up_v(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = linear(wid, nwg, lid);
  if (idx >= P.S * P.H * P.dv) { return; }
  let i = idx % P.dv;
  let h = (idx / P.dv) % P.H;
  let s = idx / (P.dv * P.H);
  let wb = (h * (P.nope + P.dv) + P.nope + i) * P.kv_lora;
  let ob = (s * P.H + h) * P.kv_lora;
  var acc = 0.0;
  for (var j = 0u; j < P.kv_lora; j++) { acc += kv_b[wb + j] * x[ob + j]; }
  y[s * P.o_stride + P.o_offset + h * P.dv + i] = acc;
}

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
