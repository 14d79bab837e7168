// MoE router selection: router logits → scores → (biased, group-limited) top-K → weights.
// One workgroup per token; the logits x·Wgᵀ come from the matmul/GEMV kernels beforehand.
//
// Conventions (DeepSeek-V3 Gate.forward; fixtures/deepseek-v3-tiny/README.md "Router"):
//   s = sigmoid(l) | softmax(l)            unbiased scores, from the logits (never c − bias)
//   c = s + bias                           used only to choose
//   group score = sum of the top-2 c (has_bias) | max c (no bias); groups outside the top topk_group
//   are masked to NEG_INF; ids = top-K of c in descending order, ties → lower expert index first
//   w = s[ids] (/ (Σ + 1e-20) when norm_topk) · scale
// Selection is by rank: expert e is chosen iff fewer than K experts beat it (greater c, or equal c and
// a lower index). Deterministic, no serial argmax rounds, one barrier.
//
// binding 0: params { T, E, K, n_group, topk_group, softmax (0|1), norm_topk (0|1), has_bias (0|1), scale }
// binding 1: logits  [T, E]  f32
// binding 2: bias    [E]     f32 e_score_correction_bias (a dummy when has_bias = 0)
// binding 3: ids     [T, K]  u32 out
// binding 4: weights [T, K]  f32 out: final multipliers of the routed experts' outputs
// binding 5: scores  [T, E]  f32 out: unbiased scores (written when WRITE_SCORES; a dummy otherwise)
// binding 6: counts  [E]     atomic u32: per-expert load counters, += 1 per choice (when COUNT)

struct Params { T: u32, E: u32, K: u32, n_group: u32, topk_group: u32, softmax: u32, norm_topk: u32, has_bias: u32, scale: f32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> weights: array<f32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;
@group(0) @binding(6) var<storage, read_write> counts: array<atomic<u32>>;

override WG: u32 = 64u;        // power of two
override MAX_E: u32 = 256u;    // ≥ E
override MAX_G: u32 = 8u;      // ≥ n_group
override MAX_K: u32 = 8u;      // ≥ K
override WRITE_SCORES: bool = false;
override COUNT: bool = false;

// −∞ stand-in for masked experts: below every finite score (biased scores can be negative).
const NEG_INF: f32 = -0x1.fffffep+127f;

var<workgroup> s: array<f32, MAX_E>;        // unbiased scores
var<workgroup> c: array<f32, MAX_E>;        // selection scores
var<workgroup> gscore: array<f32, MAX_G>;
var<workgroup> gkeep: array<u32, MAX_G>;
var<workgroup> red: array<f32, WG>;
var<workgroup> chosen: array<u32, MAX_K>;

fn reduce_max(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var off = WG / 2u; off > 0u; off = off / 2u) {
    if (lid < off) { red[lid] = max(red[lid], red[lid + off]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var off = WG / 2u; off > 0u; off = off / 2u) {
    if (lid < off) { red[lid] = red[lid] + red[lid + off]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

// a (value va, index ia) ranks before b.
fn beats(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
  return va > vb || (va == vb && ia < ib);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= P.T) { return; }   // uniform per workgroup
  let E = P.E;
  let base = t * E;

  // 1. scores
  var m = 0.0;
  var z = 1.0;
  if (P.softmax != 0u) {
    var lm = NEG_INF;
    for (var e = lid; e < E; e += WG) { lm = max(lm, logits[base + e]); }
    m = reduce_max(lm, lid);
    var ls = 0.0;
    for (var e = lid; e < E; e += WG) { ls += exp(logits[base + e] - m); }
    z = reduce_sum(ls, lid);
  }
  for (var e = lid; e < E; e += WG) {
    let l = logits[base + e];
    var sv: f32;
    if (P.softmax != 0u) { sv = exp(l - m) / z; } else { sv = 1.0 / (1.0 + exp(-l)); }
    s[e] = sv;
    var cv = sv;
    if (P.has_bias != 0u) { cv += bias[e]; }
    c[e] = cv;
    if (WRITE_SCORES) { scores[base + e] = sv; }
  }
  if (lid < P.K) { chosen[lid] = 0u; }
  workgroupBarrier();

  // 2. group limit
  if (P.n_group > 1u && P.topk_group < P.n_group) {
    let gs = E / P.n_group;
    for (var g = lid; g < P.n_group; g += WG) {
      var m1 = NEG_INF;
      var m2 = NEG_INF;
      for (var i = 0u; i < gs; i++) {
        let v = c[g * gs + i];
        if (v > m1) { m2 = m1; m1 = v; } else if (v > m2) { m2 = v; }
      }
      if (P.has_bias != 0u && gs > 1u) { gscore[g] = m1 + m2; } else { gscore[g] = m1; }
    }
    workgroupBarrier();
    for (var g = lid; g < P.n_group; g += WG) {
      var rank = 0u;
      let v = gscore[g];
      for (var h = 0u; h < P.n_group; h++) {
        if (beats(gscore[h], h, v, g)) { rank++; }
      }
      gkeep[g] = select(0u, 1u, rank < P.topk_group);
    }
    workgroupBarrier();
    for (var e = lid; e < E; e += WG) {
      if (gkeep[e / gs] == 0u) { c[e] = NEG_INF; }
    }
    workgroupBarrier();
  }

  // 3. top-K by rank
  for (var e = lid; e < E; e += WG) {
    let v = c[e];
    var rank = 0u;
    for (var f = 0u; f < E; f++) {
      if (beats(c[f], f, v, e)) {
        rank++;
        if (rank >= P.K) { break; }
      }
    }
    if (rank < P.K) { chosen[rank] = e; }
  }
  workgroupBarrier();

  // 4. weights (every invocation sums the same K values in the same order)
  if (lid < P.K) {
    var sum = 0.0;
    for (var j = 0u; j < P.K; j++) { sum += s[chosen[j]]; }
    let e = chosen[lid];
    var w = s[e];
    if (P.norm_topk != 0u) { w = w / (sum + 1e-20); }
    ids[t * P.K + lid] = e;
    weights[t * P.K + lid] = w * P.scale;
    if (COUNT) { atomicAdd(&counts[e], 1u); }
  }
}
