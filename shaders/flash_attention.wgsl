// FlashAttention (prefill) and split-K decoding in one kernel: queries and keys in tiles, online
// softmax (running max m, running sum l, rescaled accumulator O), the S×T score matrix never leaves
// workgroup memory. Arbitrary head dims with d_qk ≠ d_v (loaded in DC-wide chunks), GQA/MQA.
//
// Rows: for kv head g, the M = S·gs (query, head-in-group) pairs form the rows of a tile (row R →
// query R / gs, head g·gs + R % gs), so every head that shares a KV head shares each loaded KV tile
// (absorbed MLA decode: all H heads of the token against one latent tile, as FlashMLA does).
// A workgroup owns BQ rows of one kv head and one key range (split); keys in tiles of BK. Causal:
// key t is visible to query s iff t ≤ past + s; tiles past the last row's limit are never visited,
// the diagonal tile is masked elementwise. Scores are kept in the log2 domain (scale·log2 e folded).
// splits == 1: `main` writes O / l. splits > 1: `main` writes partial (O, m, l) per split to `part`
// and `combine` merges them with the log-sum-exp rule.
//
// binding 0: params (see struct; strides/offsets in elements)
// binding 1: q    [S, q_stride]   head h of query s at s·q_stride + q_offset + h·q_hstride (d_qk values)
// binding 2: k    [T, k_stride]   kv head g of key t at t·k_stride + k_offset + g·k_hstride (d_qk values)
// binding 3: v    [T, v_stride]   kv head g of key t at t·v_stride + v_offset + g·v_hstride (d_v values)
//                                 (k and v may be the same buffer, e.g. the MLA latent cache)
// binding 4: out  [S, o_stride]   head h of query s at s·o_stride + o_offset + h·o_hstride (d_v values)
// binding 5: part [splits, kv_heads·M, d_v] partial O, then [splits, kv_heads·M, 2] (m, l)   (splits > 1)
// binding 6: past_buf u32 [1]     when past_from_buf ≠ 0: past = past_buf[0], T = past + S
//
// Text specialisation (src/kernels/shader-source.ts): the wrapper sets the tile shape below for the
// device and head dims (`consts`: they size private arrays, which `override` constants cannot), and
// the `subgroups` variant keeps `decode_subgroup` on devices with subgroups.
// @variant subgroups on
enable subgroups;
// @variant subgroups off
// @end subgroups
const BQ: u32 = 16u;  // rows per workgroup
const BK: u32 = 32u;  // keys per tile
const DC: u32 = 64u;  // head-dim chunk held in workgroup memory
const TR: u32 = 2u;   // score rows per invocation
const TK: u32 = 4u;   // score keys per invocation
const OR: u32 = 4u;   // output rows per invocation
const OC: u32 = 4u;   // output columns per invocation per chunk
const NVC: u32 = 2u;  // ceil(d_v / DC)

const WG: u32 = 64u;          // (BQ/TR)·(BK/TK) = (BQ/OR)·(DC/OC)
const RY: u32 = BQ / TR;      // score row groups
const KX: u32 = BK / TK;      // score key groups
const OY: u32 = BQ / OR;      // output row groups
const OX: u32 = DC / OC;      // output column groups
const DC4: u32 = DC / 4u;     // vec4s per chunk row
const KS4: u32 = DC4 + 1u;    // padded K/V tile row in vec4s (strided key reads spread over the banks)
const NEG: f32 = -3.0e38;     // "−∞" for masked scores and empty rows

struct Params {
  S: u32, T: u32, past: u32, heads: u32,
  kv_heads: u32, d_qk: u32, d_v: u32, scale: f32,   // scale: the softmax scale · log2 e here
  causal: u32, splits: u32, past_from_buf: u32, row_tiles: u32,
  q_stride: u32, q_offset: u32, q_hstride: u32, k_stride: u32,
  k_offset: u32, k_hstride: u32, v_stride: u32, v_offset: u32,
  v_hstride: u32, o_stride: u32, o_offset: u32, o_hstride: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
@group(0) @binding(6) var<storage, read> past_buf: array<u32>;

var<workgroup> Qs: array<vec4<f32>, BQ * DC4>;
var<workgroup> Ks: array<vec4<f32>, BK * KS4>;   // K chunk, then V chunk (vec4 along the head dim)
var<workgroup> Ss: array<f32, BQ * BK>;   // scores, then probabilities
var<workgroup> row_alpha: array<f32, BQ>;
var<workgroup> row_l: array<f32, BQ>;
var<workgroup> wg_past: u32;

// The head-of-row mapping: row R of kv head g → (query, head).
fn row_query(R: u32, gs: u32) -> u32 { return R / gs; }
fn row_head(R: u32, g: u32, gs: u32) -> u32 { return g * gs + R % gs; }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = wid.x + wid.y * nwg.x;
  if (idx >= P.kv_heads * P.row_tiles * P.splits) { return; }
  var past = P.past;
  var T = P.T;
  if (P.past_from_buf != 0u) {
    if (lid == 0u) { wg_past = past_buf[0]; }
    past = workgroupUniformLoad(&wg_past);
    T = past + P.S;
  }
  let gs = P.heads / P.kv_heads;
  let M = P.S * gs;
  let split = idx % P.splits;
  let rt = (idx / P.splits) % P.row_tiles;
  let g = idx / (P.splits * P.row_tiles);
  let r0 = rt * BQ;

  // This workgroup's key range: its split, cut at the last row's causal limit.
  let chunk = ((T + P.splits - 1u) / P.splits + BK - 1u) / BK * BK;
  let k_begin = split * chunk;
  var k_end = min(T, k_begin + chunk);
  if (P.causal != 0u) { k_end = min(k_end, past + row_query(min(r0 + BQ, M) - 1u, gs) + 1u); }

  let ty = lid / KX;
  let tx = lid % KX;
  let oy = lid / OX;
  let ox = lid % OX;
  var acc: array<f32, OR * OC * NVC>;
  for (var i = 0u; i < OR * OC * NVC; i++) { acc[i] = 0.0; }
  var m_run = NEG;  // rows lid < BQ: running max and sum of row lid
  var l_run = 0.0;

  for (var kt = k_begin; kt < k_end; kt += BK) {
    // S = Q·Kᵀ over d_qk in DC chunks.
    var s: array<f32, TR * TK>;
    for (var i = 0u; i < TR * TK; i++) { s[i] = 0.0; }
    for (var d0 = 0u; d0 < P.d_qk; d0 += DC) {
      for (var e = lid; e < BQ * DC; e += WG) {
        let R = r0 + e / DC;
        let d = d0 + e % DC;
        var x = 0.0;
        if (R < M && d < P.d_qk) { x = q[row_query(R, gs) * P.q_stride + P.q_offset + row_head(R, g, gs) * P.q_hstride + d]; }
        Qs[e / 4u][e % 4u] = x;
      }
      for (var e = lid; e < BK * DC; e += WG) {
        let j = e / DC;
        let d = d0 + e % DC;
        var x = 0.0;
        if (kt + j < k_end && d < P.d_qk) { x = k[(kt + j) * P.k_stride + P.k_offset + g * P.k_hstride + d]; }
        Ks[j * KS4 + (e % DC) / 4u][e % 4u] = x;
      }
      workgroupBarrier();
      for (var d4 = 0u; d4 < DC4; d4++) {
        var qv: array<vec4<f32>, TR>;
        for (var i = 0u; i < TR; i++) { qv[i] = Qs[(ty + i * RY) * DC4 + d4]; }
        for (var j = 0u; j < TK; j++) {
          let kv = Ks[(tx + j * KX) * KS4 + d4];
          for (var i = 0u; i < TR; i++) { s[i * TK + j] += dot(qv[i], kv); }
        }
      }
      workgroupBarrier();
    }
    // Mask and scale into workgroup memory.
    for (var i = 0u; i < TR; i++) {
      let r = ty + i * RY;
      let R = r0 + r;
      for (var j = 0u; j < TK; j++) {
        let jj = tx + j * KX;
        let t = kt + jj;
        var sc = s[i * TK + j] * P.scale;
        if (R >= M || t >= k_end || (P.causal != 0u && t > past + row_query(R, gs))) { sc = NEG; }
        Ss[r * BK + jj] = sc;
      }
    }
    workgroupBarrier();
    // Online softmax, one invocation per row: new max, rescale factor, probabilities.
    if (lid < BQ) {
      var mx = m_run;
      for (var j = 0u; j < BK; j++) { mx = max(mx, Ss[lid * BK + j]); }
      var alpha = 1.0;
      var sum = 0.0;
      if (mx > NEG) {
        alpha = exp2(m_run - mx);
        for (var j = 0u; j < BK; j++) {
          let sc = Ss[lid * BK + j];
          var p = 0.0;
          if (sc > NEG) { p = exp2(sc - mx); }
          Ss[lid * BK + j] = p;
          sum += p;
        }
      } else {
        for (var j = 0u; j < BK; j++) { Ss[lid * BK + j] = 0.0; }
      }
      l_run = l_run * alpha + sum;
      m_run = mx;
      row_alpha[lid] = alpha;
    }
    workgroupBarrier();
    // O = alpha·O + P·V over d_v in DC chunks (V chunk reuses the K tile's memory).
    for (var i = 0u; i < OR; i++) {
      let a = row_alpha[oy + i * OY];
      for (var c = 0u; c < OC * NVC; c++) { acc[c * OR + i] *= a; }
    }
    for (var vc = 0u; vc < NVC; vc++) {
      let c0 = vc * DC;
      for (var e = lid; e < BK * DC; e += WG) {
        let j = e / DC;
        let c = c0 + e % DC;
        var x = 0.0;
        if (kt + j < k_end && c < P.d_v) { x = v[(kt + j) * P.v_stride + P.v_offset + g * P.v_hstride + c]; }
        Ks[j * KS4 + (e % DC) / 4u][e % 4u] = x;
      }
      workgroupBarrier();
      for (var j = 0u; j < BK; j++) {
        var pv: array<f32, OR>;
        for (var i = 0u; i < OR; i++) { pv[i] = Ss[(oy + i * OY) * BK + j]; }
        // This invocation's OC consecutive columns ox·OC .. lie in one vec4 (OC ∈ {1, 2, 4}).
        let v4 = Ks[j * KS4 + (ox * OC) / 4u];
        for (var c = 0u; c < OC; c++) {
          let x = v4[(ox * OC) % 4u + c];
          for (var i = 0u; i < OR; i++) { acc[(vc * OC + c) * OR + i] += pv[i] * x; }
        }
      }
      workgroupBarrier();
    }
  }

  if (lid < BQ) { row_l[lid] = l_run; }
  workgroupBarrier();
  let rows_total = P.kv_heads * M;
  let ml_base = P.splits * rows_total * P.d_v;
  for (var i = 0u; i < OR; i++) {
    let r = oy + i * OY;
    let R = r0 + r;
    if (R >= M) { continue; }
    let qi = row_query(R, gs);
    let h = row_head(R, g, gs);
    let inv_l = 1.0 / row_l[r];
    let prow = split * rows_total + g * M + R;
    for (var vc = 0u; vc < NVC; vc++) {
      for (var c = 0u; c < OC; c++) {
        let col = vc * DC + ox * OC + c;
        if (col >= P.d_v) { continue; }
        let o = acc[(vc * OC + c) * OR + i];
        if (P.splits == 1u) {
          out[qi * P.o_stride + P.o_offset + h * P.o_hstride + col] = o * inv_l;
        } else {
          part[prow * P.d_v + col] = o;
        }
      }
    }
  }
  if (P.splits > 1u && lid < BQ && r0 + lid < M) {
    let prow = split * rows_total + g * M + r0 + lid;
    part[ml_base + prow * 2u] = m_run;
    part[ml_base + prow * 2u + 1u] = l_run;
  }
}

// Log-sum-exp combine of the splits: O = Σ_c 2^(m_c−M)·O_c / Σ_c 2^(m_c−M)·l_c, one invocation per
// output element (row, column). Bindings 4 (out) and 5 (part) only.
@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let idx = (wid.x + wid.y * nwg.x) * WG + lid;
  let gs = P.heads / P.kv_heads;
  let M = P.S * gs;
  let rows_total = P.kv_heads * M;
  if (idx >= rows_total * P.d_v) { return; }
  let row = idx / P.d_v;
  let col = idx % P.d_v;
  let ml_base = P.splits * rows_total * P.d_v;
  var mx = NEG;
  for (var sp = 0u; sp < P.splits; sp++) { mx = max(mx, part[ml_base + (sp * rows_total + row) * 2u]); }
  var num = 0.0;
  var den = 0.0;
  for (var sp = 0u; sp < P.splits; sp++) {
    let m = part[ml_base + (sp * rows_total + row) * 2u];
    if (m > NEG) {
      let w = exp2(m - mx);
      num += w * part[(sp * rows_total + row) * P.d_v + col];
      den += w * part[ml_base + (sp * rows_total + row) * 2u + 1u];
    }
  }
  let g = row / M;
  let R = row % M;
  out[row_query(R, gs) * P.o_stride + P.o_offset + row_head(R, g, gs) * P.o_hstride + col] = num / den;
}

// @variant subgroups on
// `decode_subgroup` (devices with subgroups; @variant subgroups drops it elsewhere): decode with at
// most 4 rows per kv head, one subgroup per workgroup (SG = the device's minimum subgroup size) and no
// workgroup tiles or barriers. The 4 rows R0..R3 of a row tile are the components of vec4s; per key,
// the lanes split d_qk and subgroupAdd gives the 4 scores, then the online softmax runs redundantly
// (uniformly) in every lane and each lane updates its 4 output columns of each row (o0..o3: constant
// indices only, no private arrays). A workgroup covers 4·SG columns of d_v (one pass; d_v wider than that
// recomputes the scores per pass) and one key range (split; partials merged by `combine` as for main).
override SG: u32 = 32u;

@compute @workgroup_size(SG)
fn decode_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let passes = (P.d_v + 4u * SG - 1u) / (4u * SG);
  let idx = wid.x + wid.y * nwg.x;
  if (idx >= P.kv_heads * P.row_tiles * passes * P.splits) { return; }
  var past = P.past;
  var T = P.T;
  if (P.past_from_buf != 0u) {
    if (lid == 0u) { wg_past = past_buf[0]; }
    past = workgroupUniformLoad(&wg_past);
    T = past + P.S;
  }
  let gs = P.heads / P.kv_heads;
  let M = P.S * gs;
  let split = idx % P.splits;
  let pas = (idx / P.splits) % passes;
  let rt = (idx / (P.splits * passes)) % P.row_tiles;
  let g = idx / (P.splits * passes * P.row_tiles);
  let r0 = rt * 4u;
  let chunk = (T + P.splits - 1u) / P.splits;
  let k_begin = split * chunk;
  var k_end = min(T, k_begin + chunk);
  if (P.causal != 0u) { k_end = min(k_end, past + row_query(min(r0 + 4u, M) - 1u, gs) + 1u); }
  // Rows past M read row M − 1 (in bounds), are masked and not stored.
  let Rv = min(vec4<u32>(r0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(M - 1u));
  let live = (vec4<u32>(r0) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(M);
  let qb = vec4<u32>(row_query(Rv.x, gs) * P.q_stride + row_head(Rv.x, g, gs) * P.q_hstride,
                     row_query(Rv.y, gs) * P.q_stride + row_head(Rv.y, g, gs) * P.q_hstride,
                     row_query(Rv.z, gs) * P.q_stride + row_head(Rv.z, g, gs) * P.q_hstride,
                     row_query(Rv.w, gs) * P.q_stride + row_head(Rv.w, g, gs) * P.q_hstride) + P.q_offset;
  let lim = vec4<u32>(past) + vec4<u32>(row_query(Rv.x, gs), row_query(Rv.y, gs), row_query(Rv.z, gs), row_query(Rv.w, gs));
  let c0 = pas * 4u * SG + lid * 4u;   // this lane's 4 output columns
  var m = vec4<f32>(NEG);
  var l = vec4<f32>(0.0);
  var o0 = vec4<f32>(0.0);
  var o1 = vec4<f32>(0.0);
  var o2 = vec4<f32>(0.0);
  var o3 = vec4<f32>(0.0);
  for (var t = k_begin; t < k_end; t++) {
    let kb = t * P.k_stride + P.k_offset + g * P.k_hstride;
    var s = vec4<f32>(0.0);
    for (var d = lid; d < P.d_qk; d += SG) {
      s += vec4<f32>(q[qb.x + d], q[qb.y + d], q[qb.z + d], q[qb.w + d]) * k[kb + d];
    }
    s = subgroupAdd(s) * P.scale;
    let masked = !live | ((vec4<u32>(t) > lim) & vec4<bool>(P.causal != 0u));
    s = select(s, vec4<f32>(NEG), masked);
    let m_new = max(m, s);
    let alpha = exp2(m - m_new);
    let p = select(exp2(s - m_new), vec4<f32>(0.0), masked);
    l = l * alpha + p;
    m = m_new;
    let vb = t * P.v_stride + P.v_offset + g * P.v_hstride + c0;
    var v4 = vec4<f32>(0.0);
    if (c0 + 3u < P.d_v) {
      v4 = vec4<f32>(v[vb], v[vb + 1u], v[vb + 2u], v[vb + 3u]);
    } else if (c0 < P.d_v) {
      v4.x = v[vb];
      if (c0 + 1u < P.d_v) { v4.y = v[vb + 1u]; }
      if (c0 + 2u < P.d_v) { v4.z = v[vb + 2u]; }
    }
    o0 = o0 * alpha.x + p.x * v4;
    o1 = o1 * alpha.y + p.y * v4;
    o2 = o2 * alpha.z + p.z * v4;
    o3 = o3 * alpha.w + p.w * v4;
  }
  decode_store(r0, M, gs, g, c0, split, o0, l.x, m.x);
  decode_store(r0 + 1u, M, gs, g, c0, split, o1, l.y, m.y);
  decode_store(r0 + 2u, M, gs, g, c0, split, o2, l.z, m.z);
  decode_store(r0 + 3u, M, gs, g, c0, split, o3, l.w, m.w);
}

// Row R's 4 columns c0.. (O / l when splits = 1, else the split's partial O, and (m, l) from column 0).
fn decode_store(R: u32, M: u32, gs: u32, g: u32, c0: u32, split: u32, o: vec4<f32>, l: f32, m: f32) {
  if (R >= M) { return; }
  let rows_total = P.kv_heads * M;
  let prow = split * rows_total + g * M + R;
  if (P.splits > 1u && c0 == 0u) {
    let ml = P.splits * rows_total * P.d_v + prow * 2u;
    part[ml] = m;
    part[ml + 1u] = l;
  }
  for (var c = 0u; c < 4u; c++) {
    let col = c0 + c;
    if (col >= P.d_v) { return; }
    if (P.splits == 1u) {
      out[row_query(R, gs) * P.o_stride + P.o_offset + row_head(R, g, gs) * P.o_hstride + col] = o[c] / l;
    } else {
      part[prow * P.d_v + col] = o[c];
    }
  }
}
// @variant subgroups off
// @end subgroups
