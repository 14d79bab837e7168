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
// binding 7: sinks f32 [heads]     when has_sinks ≠ 0: head h's sink logit (natural-log domain, not scaled):
//                                 it joins the softmax denominator as exp(sink − max) and carries no value
//                                 (GPT-OSS); added once per row, by `main`/`flash_rows` (splits == 1) or
//                                 by `combine` (splits > 1), never to the per-split partial sums.
// Sliding window (window = W > 0, causal only): key t is visible to query s iff
// past + s − W < t ≤ past + s. A row tile's key range starts at its first row's window start, so blocks
// before every row's window are never visited (bytes read per step bounded by W + rows, not T).
//
// Text specialisation (src/kernels/shader-source.ts): the wrapper sets the tile shape below for the
// device and head dims (`consts`: they size private arrays, which `override` constants cannot).
// `flash_rows` (end of file) is the kernel both wrappers run when its blocks fit the workgroup memory;
// `main` otherwise (and on request, for tests and benchmarks).
// @include register_tile
const BQ: u32 = 16u;  // rows per workgroup
const BK: u32 = 32u;  // keys per tile
const DC: u32 = 64u;  // head-dim chunk held in workgroup memory
const TR: u32 = 2u;   // score rows per invocation
const TK: u32 = 4u;   // score keys per invocation
const OR: u32 = 4u;   // output rows per invocation
const OC: u32 = 4u;   // output columns per invocation per chunk
const NVC: u32 = 2u;  // ceil(d_v / DC)

// flash_rows (see its comment): set by the wrapper for the device, head dims and group size.
const DR: u32 = 16u;    // rows (query, head-in-group) per workgroup: 4, 8 or 16
const DBK: u32 = 8u;    // cached keys staged per block: a power of two ≥ 4, (DR/4)·(DBK/4) ≤ WG
const DQ4: u32 = 144u;  // vec4s of d_qk
const DV4: u32 = 128u;  // vec4s of d_v
const DKW4: u32 = 144u; // vec4s per staged key row: DQ4, or DQ4 + DV4 when V is a separate row
const DVS4: u32 = 0u;   // where V starts in a staged key row, in vec4s (0: V is the first d_v values of the K row)
const DWG: u32 = 64u;   // invocations per workgroup (fewer on a CPU adapter: each barrier switches between all of them)
const DNU: u32 = 8u;    // output units (4 rows × 16 columns) per group of 4 invocations: ceil((DR/4)·ceil(DV4/4) / (DWG/4))

const WG: u32 = 64u;          // (BQ/TR)·(BK/TK) = (BQ/OR)·(DC/OC); also flash_rows' workgroup size
const DRQ: u32 = DR / 4u;     // flash_rows: row quads
const DKQ: u32 = DBK / 4u;    // flash_rows: key quads
const DSL: u32 = DWG / (DRQ * DKQ);   // flash_rows: slices of d_qk per 4×4 score tile
const DCB: u32 = (DV4 + 3u) / 4u;     // flash_rows: blocks of 16 output columns
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
  window: u32, has_sinks: u32, _p0: u32, _p1: u32,   // window: sliding-window size W (0: none)
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
// k and v at bindings 2 and 3, read element-wise as f32 whatever the KV cache format (`// @variant kv`).
// @include kv_read
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
@group(0) @binding(6) var<storage, read> past_buf: array<u32>;
@group(0) @binding(7) var<storage, read> sinks: array<f32>;

var<workgroup> Qs: array<vec4<f32>, BQ * DC4>;
var<workgroup> Ks: array<vec4<f32>, BK * KS4>;   // K chunk, then V chunk (vec4 along the head dim)
var<workgroup> Ss: array<f32, BQ * BK>;   // scores, then probabilities
var<workgroup> row_alpha: array<f32, BQ>;
var<workgroup> row_l: array<f32, BQ>;
var<workgroup> wg_past: u32;
var<workgroup> Kd: array<f32, DBK * DKW4 * 4u>;    // flash_rows: the staged key rows [K | V]
var<workgroup> Sp: array<vec4<f32>, DWG * 4u>;      // flash_rows: partial 4×4 score tiles per d slice
var<workgroup> Sd: array<vec4<f32>, DR * DKQ>;      // flash_rows: scores of row r, keys 4·kq .. +3
var<workgroup> Pt: array<vec4<f32>, DBK * DRQ>;     // flash_rows: probabilities of key j, rows 4·rq .. +3
var<workgroup> d_alpha: array<f32, DR>;
var<workgroup> d_l: array<f32, DR>;

// The head-of-row mapping: row R of kv head g → (query, head).
fn row_query(R: u32, gs: u32) -> u32 { return R / gs; }
fn row_head(R: u32, g: u32, gs: u32) -> u32 { return g * gs + R % gs; }

// The first key any row of a tile sees: its first row's (query q_first's) window start, 0 without a window.
fn window_lo(past: u32, q_first: u32) -> u32 {
  let lim = past + q_first;
  if (P.window == 0u || lim + 1u <= P.window) { return 0u; }
  return lim + 1u - P.window;
}

// Which of 4 keys a row does not see: a row past the tile (row_ok false), keys past the range end, and
// (causal) keys past the row's limit lim = past + its query, (window) keys at or before lim − W.
fn keys_masked(key: vec4<u32>, row_ok: bool, k_end: u32, lim: u32) -> vec4<bool> {
  return !vec4<bool>(row_ok) | (key >= vec4<u32>(k_end)) | ((key > vec4<u32>(lim)) & vec4<bool>(P.causal != 0u))
       | ((key + vec4<u32>(P.window) <= vec4<u32>(lim)) & vec4<bool>(P.window != 0u));
}

// The row's sink term 2^(sink·log2 e − m) for its final denominator (0 without sinks or with no keys).
fn sink_term(h: u32, m: f32) -> f32 {
  if (P.has_sinks == 0u || m <= NEG) { return 0.0; }
  return exp2(sinks[h] * 1.4426950408889634 - m);
}

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

  // This workgroup's key range: its split of [window start of the first row, T), cut at the last row's
  // causal limit.
  let k_lo = window_lo(past, row_query(min(r0, M - 1u), gs));
  let chunk = ((T - k_lo + P.splits - 1u) / P.splits + BK - 1u) / BK * BK;
  let k_begin = k_lo + split * chunk;
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
        if (kt + j < k_end && d < P.d_qk) { x = k_at((kt + j) * P.k_stride + P.k_offset + g * P.k_hstride + d); }
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
        let lim = past + row_query(R, gs);
        if (R >= M || t >= k_end || (P.causal != 0u && t > lim) || (P.window != 0u && t + P.window <= lim)) { sc = NEG; }
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
        if (kt + j < k_end && c < P.d_v) { x = v_at((kt + j) * P.v_stride + P.v_offset + g * P.v_hstride + c); }
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

  if (lid < BQ) {
    var l = l_run;
    if (P.splits == 1u && r0 + lid < M) { l += sink_term(row_head(r0 + lid, g, gs), m_run); }
    row_l[lid] = l;
  }
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
  den += sink_term(row_head(R, g, gs), mx);   // the sink, once for all splits
  out[row_query(R, gs) * P.o_stride + P.o_offset + row_head(R, g, gs) * P.o_hstride + col] = num / den;
}


// `flash_rows`: FlashAttention with row tiles of DR ≤ 16 rows (query, head-in-group) of one kv head, so
// every key row staged serves all the heads that share it (absorbed MLA decode: the query heads against
// one 576-wide latent row whose first 512 values are V; GQA: the heads of a group; prefill: 16 queries).
// A workgroup owns one row tile and one key range (split), cut at the tile's last causal limit (key
// blocks no row of the tile sees are never visited). Per block of DBK keys (sized to the workgroup memory):
//   1. the key rows [K | V] are staged in workgroup memory once, vec4 along the head dim (V comes from
//      the K row when DVS4 = 0),
//   2. scores in 4 rows × 4 keys register tiles (tile_fma, as the matmuls), DSL invocations per tile
//      each over a slice of d_qk; partial tiles to workgroup memory,
//   3. DR invocations sum the slices of one row's scores, scale and mask them (select, no branch per
//      key) and run its online softmax, storing the probabilities key-major,
//   4. groups of 4 invocations rescale and accumulate DNU units of 4 rows × 16 columns of O: per key
//      each invocation reads 4 V values (neighbouring invocations, neighbouring columns) and one vec4 of
//      the 4 rows' probabilities (the same for the group), 16 FMAs.
// splits > 1: partial (O, m, l) per split, merged by `combine` as for `main`.
// Loads of 4 head-dim values (q at element `base` + 4·d4; a staged K or V vec4 at element `base`, head
// dim offset d of n). `dload vec4` (the wrapper's choice when every q/k/v row, head and offset is a
// multiple of 4 and d_qk, d_v are too) reads vec4 views of the same buffers (bindings 1–3, used by
// flash_rows only): one load instead of four, which a CPU adapter pays per element with bounds checks.
// `dload scalar` reads 4 f32 with the head dims' ragged ends zeroed.
// @variant dload vec4
@group(0) @binding(1) var<storage, read> q4: array<vec4<f32>>;
fn load_q(base: u32, d4: u32) -> vec4<f32> { return q4[base / 4u + d4]; }
// @variant kv f32
@group(0) @binding(2) var<storage, read> k4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v4: array<vec4<f32>>;
fn load_kv(is_k: bool, base: u32, d: u32, n: u32) -> vec4<f32> {
  if (is_k) { return k4[base / 4u]; }
  return v4[base / 4u];
}
// @variant kv f16
@group(0) @binding(2) var<storage, read> k4: array<vec2<u32>>;   // 4 f16 values in 2 words
@group(0) @binding(3) var<storage, read> v4: array<vec2<u32>>;
fn load_kv(is_k: bool, base: u32, d: u32, n: u32) -> vec4<f32> {
  var w: vec2<u32>;
  if (is_k) { w = k4[base / 4u]; } else { w = v4[base / 4u]; }
  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}
// @end kv
// @variant dload scalar
fn load_q(base: u32, d4: u32) -> vec4<f32> {
  let d = d4 * 4u;
  if (d + 3u < P.d_qk) { return vec4<f32>(q[base + d], q[base + d + 1u], q[base + d + 2u], q[base + d + 3u]); }
  var x = vec4<f32>(0.0);
  if (d < P.d_qk) { x.x = q[base + d]; }
  if (d + 1u < P.d_qk) { x.y = q[base + d + 1u]; }
  if (d + 2u < P.d_qk) { x.z = q[base + d + 2u]; }
  return x;
}
fn load_kv(is_k: bool, base: u32, d: u32, n: u32) -> vec4<f32> {
  var x = vec4<f32>(0.0);
  if (is_k) {
    if (d + 3u < n) { return vec4<f32>(k_at(base), k_at(base + 1u), k_at(base + 2u), k_at(base + 3u)); }
    if (d < n) { x.x = k_at(base); }
    if (d + 1u < n) { x.y = k_at(base + 1u); }
    if (d + 2u < n) { x.z = k_at(base + 2u); }
  } else {
    if (d + 3u < n) { return vec4<f32>(v_at(base), v_at(base + 1u), v_at(base + 2u), v_at(base + 3u)); }
    if (d < n) { x.x = v_at(base); }
    if (d + 1u < n) { x.y = v_at(base + 1u); }
    if (d + 2u < n) { x.z = v_at(base + 2u); }
  }
  return x;
}
// @end dload

fn kd4(i4: u32) -> vec4<f32> { return vec4<f32>(Kd[i4 * 4u], Kd[i4 * 4u + 1u], Kd[i4 * 4u + 2u], Kd[i4 * 4u + 3u]); }

@compute @workgroup_size(DWG)
fn flash_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
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
  let r0 = rt * DR;
  let k_lo = window_lo(past, row_query(min(r0, M - 1u), gs));
  let chunk = ((T - k_lo + P.splits - 1u) / P.splits + DBK - 1u) / DBK * DBK;
  let k_begin = k_lo + split * chunk;
  var k_end = min(T, k_begin + chunk);
  if (P.causal != 0u) { k_end = min(k_end, past + row_query(min(r0 + DR, M) - 1u, gs) + 1u); }

  // Score tiles: (row quad st_rq, key quad st_kq), d slice ssl. Rows past M read row M − 1 (masked).
  // Neighbouring invocations take neighbouring row quads: the same K values for all of them.
  let st_rq = lid % DRQ;
  let st_kq = (lid / DRQ) % DKQ;
  let ssl = lid / (DRQ * DKQ);
  var qb: vec4<u32>;
  for (var c = 0u; c < 4u; c++) {
    let R = min(r0 + st_rq * 4u + c, M - 1u);
    qb[c] = row_query(R, gs) * P.q_stride + P.q_offset + row_head(R, g, gs) * P.q_hstride;
  }
  var acc: array<vec4<f32>, DNU * 4u>;   // unit u: rows 4·rq .. +3 (acc[4u + i] = row i), columns 4·c4 .. +3
  for (var i = 0u; i < DNU * 4u; i++) { acc[i] = vec4<f32>(0.0); }
  var m_run = NEG;   // invocations lid < DR: row lid's running max and sum
  var l_run = 0.0;
  let kbase = P.k_offset + g * P.k_hstride;
  let vbase = P.v_offset + g * P.v_hstride;

  for (var kt = k_begin; kt < k_end; kt += DBK) {
    // 1. Stage the block's key rows (zeros past the range and the head dims).
    for (var e = lid; e < DBK * DKW4; e += DWG) {
      let j = e / DKW4;
      let c4 = e % DKW4;
      let t = kt + j;
      var x = vec4<f32>(0.0);
      if (t < k_end) {
        if (c4 < DQ4) { x = load_kv(true, t * P.k_stride + kbase + c4 * 4u, c4 * 4u, P.d_qk); }
        else { x = load_kv(false, t * P.v_stride + vbase + (c4 - DQ4) * 4u, (c4 - DQ4) * 4u, P.d_v); }
      }
      Kd[e * 4u] = x.x; Kd[e * 4u + 1u] = x.y; Kd[e * 4u + 2u] = x.z; Kd[e * 4u + 3u] = x.w;
    }
    workgroupBarrier();
    // 2. Partial 4×4 score tile over d4 = ssl, ssl + DSL, ...
    var a: array<vec4<f32>, 4>;
    a[0] = vec4<f32>(0.0); a[1] = vec4<f32>(0.0); a[2] = vec4<f32>(0.0); a[3] = vec4<f32>(0.0);
    let kr = st_kq * 4u * DKW4;
    for (var d4 = ssl; d4 < DQ4; d4 += DSL) {
      tile_fma(&a, load_q(qb.x, d4), load_q(qb.y, d4), load_q(qb.z, d4), load_q(qb.w, d4),
               kd4(kr + d4), kd4(kr + DKW4 + d4), kd4(kr + 2u * DKW4 + d4), kd4(kr + 3u * DKW4 + d4));
    }
    let pb = lid * 4u;
    Sp[pb] = a[0]; Sp[pb + 1u] = a[1]; Sp[pb + 2u] = a[2]; Sp[pb + 3u] = a[3];
    workgroupBarrier();
    // 3. Row lid: sum the slices of its scores, scale, mask; online softmax; probabilities key-major
    //    (component lid % 4 of Pt[j·DRQ + lid / 4]).
    if (lid < DR) {
      let R = r0 + lid;
      let lim = past + row_query(min(R, M - 1u), gs);
      var mx = m_run;
      for (var kq = 0u; kq < DKQ; kq++) {
        var sc = vec4<f32>(0.0);
        for (var sl = 0u; sl < DSL; sl++) { sc += Sp[(lid / 4u + DRQ * (kq + DKQ * sl)) * 4u + lid % 4u]; }
        let key = vec4<u32>(kt + kq * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
        let masked = keys_masked(key, R < M, k_end, lim);
        sc = select(sc * P.scale, vec4<f32>(NEG), masked);
        Sd[lid * DKQ + kq] = sc;
        mx = max(mx, max(max(sc.x, sc.y), max(sc.z, sc.w)));
      }
      var alpha = 1.0;
      var sum = 0.0;
      if (mx > NEG) { alpha = exp2(m_run - mx); }
      for (var kq = 0u; kq < DKQ; kq++) {
        let sc = Sd[lid * DKQ + kq];
        var p = vec4<f32>(0.0);
        if (mx > NEG) { p = select(vec4<f32>(0.0), exp2(sc - mx), sc > vec4<f32>(NEG)); }
        sum += p.x + p.y + p.z + p.w;
        let pt = (kq * 4u) * DRQ + lid / 4u;
        Pt[pt][lid % 4u] = p.x;
        Pt[pt + DRQ][lid % 4u] = p.y;
        Pt[pt + 2u * DRQ][lid % 4u] = p.z;
        Pt[pt + 3u * DRQ][lid % 4u] = p.w;
      }
      l_run = l_run * alpha + sum;
      m_run = mx;
      d_alpha[lid] = alpha;
    }
    workgroupBarrier();
    // 4. O = alpha·O + P·V. Unit u = w + (DWG/4)·n of group w = lid / 4: rows 4·rq .. +3, columns
    //    16·cb + lane + 4·m (m = 0..3, the components of a vec4): the 4 invocations of a group read
    //    4 neighbouring V values per m and the same probabilities.
    for (var n = 0u; n < DNU; n++) {
      let u = lid / 4u + n * (DWG / 4u);
      if (u >= DRQ * DCB) { break; }
      let rq = u / DCB;
      let c0 = (u % DCB) * 16u + lid % 4u;
      var o0 = acc[n * 4u] * d_alpha[rq * 4u];
      var o1 = acc[n * 4u + 1u] * d_alpha[rq * 4u + 1u];
      var o2 = acc[n * 4u + 2u] * d_alpha[rq * 4u + 2u];
      var o3 = acc[n * 4u + 3u] * d_alpha[rq * 4u + 3u];
      let vc = min(vec4<u32>(c0) + vec4<u32>(0u, 4u, 8u, 12u), vec4<u32>(DV4 * 4u - 1u)) + vec4<u32>(DVS4 * 4u);
      for (var j = 0u; j < DBK; j++) {
        let kb = j * DKW4 * 4u;
        let v4 = vec4<f32>(Kd[kb + vc.x], Kd[kb + vc.y], Kd[kb + vc.z], Kd[kb + vc.w]);
        let p4 = Pt[j * DRQ + rq];
        o0 += p4.x * v4;
        o1 += p4.y * v4;
        o2 += p4.z * v4;
        o3 += p4.w * v4;
      }
      acc[n * 4u] = o0; acc[n * 4u + 1u] = o1; acc[n * 4u + 2u] = o2; acc[n * 4u + 3u] = o3;
    }
    workgroupBarrier();
  }

  if (lid < DR) {
    var l = l_run;
    if (P.splits == 1u && r0 + lid < M) { l += sink_term(row_head(r0 + lid, g, gs), m_run); }
    d_l[lid] = l;
  }
  workgroupBarrier();
  let rows_total = P.kv_heads * M;
  let ml_base = P.splits * rows_total * P.d_v;
  for (var n = 0u; n < DNU; n++) {
    let u = lid / 4u + n * (DWG / 4u);
    if (u >= DRQ * DCB) { break; }
    let rq = u / DCB;
    let c0 = (u % DCB) * 16u + lid % 4u;
    for (var i = 0u; i < 4u; i++) {
      let r = rq * 4u + i;
      let R = r0 + r;
      if (R >= M) { break; }
      let o = acc[n * 4u + i];
      let inv_l = 1.0 / d_l[r];
      let prow = split * rows_total + g * M + R;
      let ob = row_query(R, gs) * P.o_stride + P.o_offset + row_head(R, g, gs) * P.o_hstride;
      for (var m = 0u; m < 4u; m++) {
        let col = c0 + 4u * m;
        if (col >= P.d_v) { break; }
        if (P.splits == 1u) { out[ob + col] = o[m] * inv_l; }
        else { part[prow * P.d_v + col] = o[m]; }
      }
    }
  }
  if (P.splits > 1u && lid < DR && r0 + lid < M) {
    let prow = split * rows_total + g * M + r0 + lid;
    part[ml_base + prow * 2u] = m_run;
    part[ml_base + prow * 2u + 1u] = l_run;
  }
}

// `flash_blocks`: FlashAttention (prefill, and decode of a few rows per kv head) with two-level tiling
// for devices whose compilers keep only constant-indexed values in registers and turn every load with a
// computed index into a gather (SwiftShader; older mobile drivers). A workgroup owns FR rows (query,
// head-in-group) of one kv head and one key range (split); the range is walked in blocks of FBK keys,
// FR and FBK sized to the workgroup memory (attention-plan.ts blocksConfig). Workgroup memory holds the
// rows' Q (scaled once), the block's scores and probabilities and the rows' O accumulators; registers
// hold only constant-indexed tiles. Per block, two barriers:
//   1. scores in units of 8 rows × 8 keys: per vec4 of d_qk, 8 Q vec4s (workgroup memory) and 8 K vec4s
//      (read straight from k: every row of the unit shares them) feed four 4×4 tile_fma steps, 256 FMAs;
//   2. one invocation per row: online softmax over the block. The causal / window / range mask is a
//      `select` per score only in blocks that straddle some row's limit (the diagonal; a uniform test
//      per block); blocks every row sees whole take no mask. Blocks past the tile's last row's limit
//      are never visited, blocks before its first row's window neither;
//   3. O += P·V in units of 8 rows × 8 columns: O loaded from and stored to workgroup memory once per
//      block (the rescale by alpha folded in); per key 2 probability and 2 V vec4s, 64 FMAs.
// Keys past the range are read as the range's last key (finite; their probability is 0), never past it.
// Each key's K and V are read once per 8 rows of the tile: decode (≤ 8 rows per kv head) reads the
// cache once. splits > 1: partial (O, m, l) per split, merged by `combine` as for `main`.
const FR: u32 = 16u;    // rows per workgroup: 8, 16 or 32
const FBK: u32 = 32u;   // keys per block: 8, 16 or 32
const FWG: u32 = 32u;   // invocations per workgroup (≥ FR)
const FRQ: u32 = FR / 4u;
const FKQ: u32 = FBK / 4u;
const FRO: u32 = FR / 8u;
const FKO: u32 = FBK / 8u;
const FVP: u32 = (DV4 + 1u) / 2u;   // output column pairs of vec4s (8 columns)

var<workgroup> Qb: array<vec4<f32>, FR * DQ4>;       // row r's q (· scale · log2 e) at r·DQ4
var<workgroup> Sb: array<vec4<f32>, FR * FKQ>;       // scores of row r, keys 4·kq .. +3 at r·FKQ + kq
var<workgroup> Pb: array<vec4<f32>, FBK * FRQ>;      // probabilities of key j, rows 4·rq .. +3 at j·FRQ + rq
var<workgroup> Ob: array<vec4<f32>, FR * FVP * 2u>;  // O of row r, columns 4·c .. +3 at r·2·FVP + c
var<workgroup> b_alpha: array<f32, FR>;
var<workgroup> b_l: array<f32, FR>;

@compute @workgroup_size(FWG)
fn flash_blocks(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
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
  let r0 = rt * FR;
  let q_first = row_query(min(r0, M - 1u), gs);
  let q_last = row_query(min(r0 + FR, M) - 1u, gs);
  let k_lo = window_lo(past, q_first);
  let chunk = ((T - k_lo + P.splits - 1u) / P.splits + FBK - 1u) / FBK * FBK;
  let k_begin = k_lo + split * chunk;
  var k_end = min(T, k_begin + chunk);
  if (P.causal != 0u) { k_end = min(k_end, past + q_last + 1u); }
  // Keys every row of the tile sees: [k_full_lo, k_full_hi). A block inside it takes no mask.
  var k_full_hi = k_end;
  if (P.causal != 0u) { k_full_hi = min(k_full_hi, past + q_first + 1u); }
  let k_full_lo = window_lo(past, q_last);
  let rows_whole = r0 + FR <= M;

  // Stage Q (scaled), zero O.
  for (var e = lid; e < FR * DQ4; e += FWG) {
    let r = e / DQ4;
    let R = min(r0 + r, M - 1u);
    Qb[e] = load_q(row_query(R, gs) * P.q_stride + P.q_offset + row_head(R, g, gs) * P.q_hstride, e % DQ4) * P.scale;
  }
  for (var e = lid; e < FR * FVP * 2u; e += FWG) { Ob[e] = vec4<f32>(0.0); }
  var m_run = NEG;   // invocations lid < FR: row lid's running max and sum
  var l_run = 0.0;
  let kbase = P.k_offset + g * P.k_hstride;
  let vbase = P.v_offset + g * P.v_hstride;
  let R_own = r0 + lid;
  let lim_own = past + row_query(min(R_own, M - 1u), gs);
  workgroupBarrier();

  for (var kt = k_begin; kt < k_end; kt += FBK) {
    // 2. Scores, 8 rows × 8 keys per unit: four 4×4 tile_fma steps on 8 q and 8 k vec4 loads.
    for (var u = lid; u < FRO * FKO; u += FWG) {
      let ro = u % FRO;
      let ko = u / FRO;
      var a0: array<vec4<f32>, 4>; var a1: array<vec4<f32>, 4>; var a2: array<vec4<f32>, 4>; var a3: array<vec4<f32>, 4>;
      for (var i = 0u; i < 4u; i++) { a0[i] = vec4<f32>(0.0); a1[i] = vec4<f32>(0.0); a2[i] = vec4<f32>(0.0); a3[i] = vec4<f32>(0.0); }
      let qr = ro * 8u * DQ4;
      let t0 = kt + ko * 8u;
      let kl = k_end - 1u;
      let kr0 = min(t0, kl) * P.k_stride + kbase; let kr1 = min(t0 + 1u, kl) * P.k_stride + kbase;
      let kr2 = min(t0 + 2u, kl) * P.k_stride + kbase; let kr3 = min(t0 + 3u, kl) * P.k_stride + kbase;
      let kr4 = min(t0 + 4u, kl) * P.k_stride + kbase; let kr5 = min(t0 + 5u, kl) * P.k_stride + kbase;
      let kr6 = min(t0 + 6u, kl) * P.k_stride + kbase; let kr7 = min(t0 + 7u, kl) * P.k_stride + kbase;
      for (var d4 = 0u; d4 < DQ4; d4++) {
        let q0 = Qb[qr + d4]; let q1 = Qb[qr + DQ4 + d4]; let q2 = Qb[qr + 2u * DQ4 + d4]; let q3 = Qb[qr + 3u * DQ4 + d4];
        let q4_ = Qb[qr + 4u * DQ4 + d4]; let q5 = Qb[qr + 5u * DQ4 + d4]; let q6 = Qb[qr + 6u * DQ4 + d4]; let q7 = Qb[qr + 7u * DQ4 + d4];
        let k0 = load_kv(true, kr0 + d4 * 4u, d4 * 4u, P.d_qk); let k1 = load_kv(true, kr1 + d4 * 4u, d4 * 4u, P.d_qk);
        let k2 = load_kv(true, kr2 + d4 * 4u, d4 * 4u, P.d_qk); let k3 = load_kv(true, kr3 + d4 * 4u, d4 * 4u, P.d_qk);
        let k4 = load_kv(true, kr4 + d4 * 4u, d4 * 4u, P.d_qk); let k5 = load_kv(true, kr5 + d4 * 4u, d4 * 4u, P.d_qk);
        let k6 = load_kv(true, kr6 + d4 * 4u, d4 * 4u, P.d_qk); let k7 = load_kv(true, kr7 + d4 * 4u, d4 * 4u, P.d_qk);
        tile_fma(&a0, q0, q1, q2, q3, k0, k1, k2, k3);
        tile_fma(&a1, q0, q1, q2, q3, k4, k5, k6, k7);
        tile_fma(&a2, q4_, q5, q6, q7, k0, k1, k2, k3);
        tile_fma(&a3, q4_, q5, q6, q7, k4, k5, k6, k7);
      }
      let sb = ro * 8u * FKQ + ko * 2u;
      for (var i = 0u; i < 4u; i++) {
        Sb[sb + i * FKQ] = a0[i]; Sb[sb + i * FKQ + 1u] = a1[i];
        Sb[sb + (i + 4u) * FKQ] = a2[i]; Sb[sb + (i + 4u) * FKQ + 1u] = a3[i];
      }
    }
    workgroupBarrier();
    // 3. Online softmax of row lid over the block.
    let whole = rows_whole && kt >= k_full_lo && kt + FBK <= k_full_hi;
    if (lid < FR) {
      var mx = m_run;
      if (whole) {
        for (var kq = 0u; kq < FKQ; kq++) {
          let sc = Sb[lid * FKQ + kq];
          mx = max(mx, max(max(sc.x, sc.y), max(sc.z, sc.w)));
        }
      } else {
        for (var kq = 0u; kq < FKQ; kq++) {
          let key = vec4<u32>(kt + kq * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
          let masked = keys_masked(key, R_own < M, k_end, lim_own);
          let sc = select(Sb[lid * FKQ + kq], vec4<f32>(NEG), masked);
          Sb[lid * FKQ + kq] = sc;
          mx = max(mx, max(max(sc.x, sc.y), max(sc.z, sc.w)));
        }
      }
      var alpha = 1.0;
      var sum = 0.0;
      if (mx > NEG) { alpha = exp2(m_run - mx); }
      for (var kq = 0u; kq < FKQ; kq++) {
        let sc = Sb[lid * FKQ + kq];
        var p = vec4<f32>(0.0);
        if (mx > NEG) { p = select(vec4<f32>(0.0), exp2(sc - mx), sc > vec4<f32>(NEG)); }
        sum += p.x + p.y + p.z + p.w;
        let pt = (kq * 4u) * FRQ + lid / 4u;
        Pb[pt][lid % 4u] = p.x;
        Pb[pt + FRQ][lid % 4u] = p.y;
        Pb[pt + 2u * FRQ][lid % 4u] = p.z;
        Pb[pt + 3u * FRQ][lid % 4u] = p.w;
      }
      l_run = l_run * alpha + sum;
      m_run = mx;
      b_alpha[lid] = alpha;
    }
    workgroupBarrier();
    // 4. O = alpha·O + P·V, 8 rows × 8 columns per unit (2 probability and 2 value vec4 loads per key).
    for (var u = lid; u < FRO * FVP; u += FWG) {
      let cp = u % FVP;
      let ro = u / FVP;
      let ob = ro * 8u * FVP * 2u + cp * 2u;
      var o: array<vec4<f32>, 16>;   // o[2i + c]: row 8·ro + i, column vec4 2·cp + c
      for (var i = 0u; i < 8u; i++) {
        let al = b_alpha[ro * 8u + i];
        o[2u * i] = Ob[ob + i * 2u * FVP] * al;
        o[2u * i + 1u] = Ob[ob + i * 2u * FVP + 1u] * al;
      }
      for (var j = 0u; j < FBK; j++) {
        let p0 = Pb[j * FRQ + 2u * ro];
        let p1 = Pb[j * FRQ + 2u * ro + 1u];
        let vr = min(kt + j, k_end - 1u) * P.v_stride + vbase + cp * 8u;
        let v0 = load_kv(false, vr, cp * 8u, P.d_v);
        let v1 = load_kv(false, vr + 4u, cp * 8u + 4u, P.d_v);   // past d_v: zeros (scalar loads) or unused columns
        o[0] += p0.x * v0; o[1] += p0.x * v1;
        o[2] += p0.y * v0; o[3] += p0.y * v1;
        o[4] += p0.z * v0; o[5] += p0.z * v1;
        o[6] += p0.w * v0; o[7] += p0.w * v1;
        o[8] += p1.x * v0; o[9] += p1.x * v1;
        o[10] += p1.y * v0; o[11] += p1.y * v1;
        o[12] += p1.z * v0; o[13] += p1.z * v1;
        o[14] += p1.w * v0; o[15] += p1.w * v1;
      }
      for (var i = 0u; i < 8u; i++) {
        Ob[ob + i * 2u * FVP] = o[2u * i];
        Ob[ob + i * 2u * FVP + 1u] = o[2u * i + 1u];
      }
    }
  }

  if (lid < FR) {
    var l = l_run;
    if (P.splits == 1u && R_own < M) { l += sink_term(row_head(R_own, g, gs), m_run); }
    b_l[lid] = l;
  }
  workgroupBarrier();
  let rows_total = P.kv_heads * M;
  let ml_base = P.splits * rows_total * P.d_v;
  for (var e = lid; e < FR * P.d_v; e += FWG) {
    let r = e / P.d_v;
    let col = e % P.d_v;
    let R = r0 + r;
    if (R >= M) { break; }
    let o = Ob[r * FVP * 2u + col / 4u][col % 4u];
    if (P.splits == 1u) {
      out[row_query(R, gs) * P.o_stride + P.o_offset + row_head(R, g, gs) * P.o_hstride + col] = o / b_l[r];
    } else {
      part[(split * rows_total + g * M + R) * P.d_v + col] = o;
    }
  }
  if (P.splits > 1u && lid < FR && R_own < M) {
    let prow = split * rows_total + g * M + R_own;
    part[ml_base + prow * 2u] = m_run;
    part[ml_base + prow * 2u + 1u] = l_run;
  }
}
