// Naive attention with the score matrix materialised in global memory: the plain definition, kept as
// the test oracle on the GPU and the baseline of the FlashAttention benchmark. Three passes:
//   scores:  P[h, s, t] = scale·q_{s,h}·k_{t,g(h)}, masked keys = −∞ sentinel   (one invocation per element)
//   softmax: P[h, s, :] = softmax(P[h, s, :]) in place                       (one workgroup per row)
//   pv:      out[s, h, c] = Σ_t P[h, s, t]·v_{t,g(h)}[c]                      (one invocation per output)
// GQA/MQA: head h reads kv head h / (heads/kv_heads). Causal: key t visible to query s iff t ≤ past + s.
//
// binding 0: params (same struct as flash_attention.wgsl; strides/offsets in elements)
// binding 1: q   [S, q_stride]   head h at s·q_stride + q_offset + h·q_hstride
// binding 2: k   [T, k_stride]   kv head g at t·k_stride + k_offset + g·k_hstride
// binding 3: v   [T, v_stride]   kv head g at t·v_stride + v_offset + g·v_hstride
// binding 4: out [S, o_stride]   head h at s·o_stride + o_offset + h·o_hstride
// binding 5: p   [heads, S, T]   the materialised scores / probabilities (rw)
// binding 7: sinks [heads] f32   (has_sinks ≠ 0) head h's sink logit: in the softmax denominator, no value
// Sliding window (window = W > 0): key t visible to query s iff past + s − W < t ≤ past + s.
struct Params {
  S: u32, T: u32, past: u32, heads: u32,
  kv_heads: u32, d_qk: u32, d_v: u32, scale: f32,
  causal: u32, splits: u32, past_from_buf: u32, row_tiles: u32,   // (splits .. row_tiles: flash attention only)
  q_stride: u32, q_offset: u32, q_hstride: u32, k_stride: u32,
  k_offset: u32, k_hstride: u32, v_stride: u32, v_offset: u32,
  v_hstride: u32, o_stride: u32, o_offset: u32, o_hstride: u32,
  window: u32, has_sinks: u32, _p0: u32, _p1: u32,   // sliding window W (0: none); sinks at binding 7
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
// k and v at bindings 2 and 3, read element-wise as f32 whatever the KV cache format (`// @variant kv`).
// @include kv_read
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> p: array<f32>;
@group(0) @binding(7) var<storage, read> sinks: array<f32>;

override WG: u32 = 256u;
const NEG: f32 = -3.0e38;
var<workgroup> red: array<f32, WG>;

fn linear(wid: vec3u, nwg: vec3u, lid: u32) -> u32 { return (wid.x + wid.y * nwg.x) * WG + lid; }

@compute @workgroup_size(WG)
fn scores(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = linear(wid, nwg, lid);
  if (idx >= P.heads * P.S * P.T) { return; }
  let t = idx % P.T;
  let s = (idx / P.T) % P.S;
  let h = idx / (P.T * P.S);
  let g = h / (P.heads / P.kv_heads);
  if (P.causal != 0u && t > P.past + s) { p[idx] = NEG; return; }
  if (P.window != 0u && t + P.window <= P.past + s) { p[idx] = NEG; return; }
  let qb = s * P.q_stride + P.q_offset + h * P.q_hstride;
  let kb = t * P.k_stride + P.k_offset + g * P.k_hstride;
  var acc = 0.0;
  for (var d = 0u; d < P.d_qk; d++) { acc += q[qb + d] * k_at(kb + d); }
  p[idx] = acc * P.scale;
}

fn reduce(lid: u32, x: f32, is_max: bool) -> f32 {
  red[lid] = x;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st /= 2u) {
    if (lid < st) {
      if (is_max) { red[lid] = max(red[lid], red[lid + st]); } else { red[lid] += red[lid + st]; }
    }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= P.heads * P.S) { return; }
  let base = row * P.T;
  var mx = NEG;
  for (var t = lid; t < P.T; t += WG) { mx = max(mx, p[base + t]); }
  var sink = NEG;
  if (P.has_sinks != 0u) { sink = sinks[row / P.S]; }   // row = h·S + s
  mx = reduce(lid, max(mx, sink), true);
  var sum = 0.0;
  for (var t = lid; t < P.T; t += WG) {
    let sc = p[base + t];
    var e = 0.0;
    if (sc > NEG) { e = exp(sc - mx); }
    p[base + t] = e;
    sum += e;
  }
  if (lid == 0u && P.has_sinks != 0u) { sum += exp(sink - mx); }   // the sink: denominator only, once
  let inv = 1.0 / reduce(lid, sum, false);
  for (var t = lid; t < P.T; t += WG) { p[base + t] *= inv; }
}

@compute @workgroup_size(WG)
fn pv(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = linear(wid, nwg, lid);
  if (idx >= P.S * P.heads * P.d_v) { return; }
  let c = idx % P.d_v;
  let h = (idx / P.d_v) % P.heads;
  let s = idx / (P.d_v * P.heads);
  let g = h / (P.heads / P.kv_heads);
  let pb = (h * P.S + s) * P.T;
  var n = P.T;
  if (P.causal != 0u) { n = min(P.T, P.past + s + 1u); }
  var acc = 0.0;
  for (var t = 0u; t < n; t++) { acc += p[pb + t] * v_at(t * P.v_stride + P.v_offset + g * P.v_hstride + c); }
  out[s * P.o_stride + P.o_offset + h * P.o_hstride + c] = acc;
}
