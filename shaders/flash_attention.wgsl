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
// device and head dims (`consts`: they size private arrays, which `override` constants cannot).
// `decode_rows` (end of file) is the decode kernel; `main` decodes only when its blocks do not fit.
const BQ: u32 = 16u;  // rows per workgroup
const BK: u32 = 32u;  // keys per tile
const DC: u32 = 64u;  // head-dim chunk held in workgroup memory
const TR: u32 = 2u;   // score rows per invocation
const TK: u32 = 4u;   // score keys per invocation
const OR: u32 = 4u;   // output rows per invocation
const OC: u32 = 4u;   // output columns per invocation per chunk
const NVC: u32 = 2u;  // ceil(d_v / DC)

// decode_rows (see its comment): set by the wrapper for the device, head dims and group size.
const DR: u32 = 16u;    // rows (query, head-in-group) per workgroup: 4, 8 or 16
const DBK: u32 = 8u;    // cached keys staged per block (a power of two, 4 ≤ DBK ≤ WG)
const DKW: u32 = 576u;  // floats per staged key row: d_qk, or d_qk + d_v when V is a separate row
const DVS: u32 = 0u;    // where V starts in a staged key row (0: V is the first d_v values of the K row)
const ORY: u32 = 1u;    // output row-quad groups; an invocation owns rows 4·(ory + ORY·i) .. +3, i < ORQ
const ORQ: u32 = 4u;    // output row quads per invocation (DR / 4 / ORY)
const OCX: u32 = 64u;   // output column lanes; an invocation owns columns ocx + OCX·n, n < ONV
const ONV: u32 = 8u;    // output columns per invocation

const WG: u32 = 64u;          // (BQ/TR)·(BK/TK) = (BQ/OR)·(DC/OC); also decode_rows' workgroup size
const DSL: u32 = WG / DBK;    // decode_rows: invocations (slices of d_qk) per key in the score phase
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
var<workgroup> Kd: array<f32, DBK * DKW>;    // decode_rows: the staged key rows [K | V]
var<workgroup> Sp: array<f32, DR * WG>;      // decode_rows: partial scores per d slice
var<workgroup> Sd: array<vec4<f32>, DR * DBK / 4u>;   // decode_rows: probabilities, 4 keys per vec4
var<workgroup> d_alpha: array<f32, DR>;
var<workgroup> d_l: array<f32, DR>;

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


// `decode_rows`: decode (a few query rows per kv head) reading each cached row once for all the heads
// that share it (absorbed MLA: the query heads against one 576-wide latent row whose first 512 values
// are V; GQA: the heads of a group). A workgroup owns DR ≤ 16 rows (query, head-in-group) of one kv head
// and one key range (split). Per block of DBK keys:
//   1. the key rows [K | V] are staged in workgroup memory once (V comes from the K row when DVS = 0),
//   2. DSL invocations per key each take a slice of d_qk (neighbouring invocations, neighbouring d:
//      coalesced q and K reads) and accumulate the DR rows' partial dots (four vec4s, constant indices),
//   3. DR invocations sum the slices, mask, and run the online softmax of one row each,
//   4. every invocation rescales and accumulates its ORQ·4 rows × ONV columns of O, 4 keys × 4 rows per
//      step (neighbouring invocations, neighbouring columns; the probabilities are the same address for all).
// Keys past the range are staged as zeros and masked; the causal limit is per row (S > 1) with select.
// splits > 1: partial (O, m, l) per split, merged by `combine` as for `main`.
fn dot_rows(a: ptr<function, array<vec4<f32>, 4>>, qb: ptr<function, array<vec4<u32>, 4>>, d: u32, kx: f32) {
  (*a)[0] += vec4<f32>(q[(*qb)[0].x + d], q[(*qb)[0].y + d], q[(*qb)[0].z + d], q[(*qb)[0].w + d]) * kx;
  if (DR > 4u) { (*a)[1] += vec4<f32>(q[(*qb)[1].x + d], q[(*qb)[1].y + d], q[(*qb)[1].z + d], q[(*qb)[1].w + d]) * kx; }
  if (DR > 8u) {
    (*a)[2] += vec4<f32>(q[(*qb)[2].x + d], q[(*qb)[2].y + d], q[(*qb)[2].z + d], q[(*qb)[2].w + d]) * kx;
    (*a)[3] += vec4<f32>(q[(*qb)[3].x + d], q[(*qb)[3].y + d], q[(*qb)[3].z + d], q[(*qb)[3].w + d]) * kx;
  }
}

@compute @workgroup_size(WG)
fn decode_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
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
  let chunk = ((T + P.splits - 1u) / P.splits + DBK - 1u) / DBK * DBK;
  let k_begin = split * chunk;
  var k_end = min(T, k_begin + chunk);
  if (P.causal != 0u) { k_end = min(k_end, past + row_query(min(r0 + DR, M) - 1u, gs) + 1u); }

  // Score phase: key sj, d slice ssl. q row bases of the 16 rows (rows past M read row M − 1, masked).
  let sj = lid / DSL;
  let ssl = lid % DSL;
  var qb: array<vec4<u32>, 4>;
  for (var i = 0u; i < 4u; i++) {
    for (var c = 0u; c < 4u; c++) {
      let R = min(r0 + i * 4u + c, M - 1u);
      qb[i][c] = row_query(R, gs) * P.q_stride + P.q_offset + row_head(R, g, gs) * P.q_hstride;
    }
  }
  // Softmax phase (lid < DR): row lid's causal limit.
  let my_R = r0 + min(lid, DR - 1u);
  let my_live = lid < DR && my_R < M;
  let my_lim = past + row_query(min(my_R, M - 1u), gs);
  // Output phase: row quads ory + ORY·i (the 4 rows are the components of a vec4), columns ocx + OCX·n.
  let ory = lid / OCX;
  let ocx = lid % OCX;
  var acc: array<vec4<f32>, ORQ * ONV>;
  for (var i = 0u; i < ORQ * ONV; i++) { acc[i] = vec4<f32>(0.0); }
  var m_run = NEG;   // invocations lid < DR: row lid's running max and sum
  var l_run = 0.0;
  let kbase = P.k_offset + g * P.k_hstride;
  let vbase = P.v_offset + g * P.v_hstride;

  for (var kt = k_begin; kt < k_end; kt += DBK) {
    // 1. Stage the block's key rows (zeros past the range).
    for (var e = lid; e < DBK * DKW; e += WG) {
      let j = e / DKW;
      let c = e % DKW;
      let t = kt + j;
      var x = 0.0;
      if (t < k_end) {
        if (c < P.d_qk) { x = k[t * P.k_stride + kbase + c]; }
        else if (c - DVS < P.d_v) { x = v[t * P.v_stride + vbase + c - DVS]; }
      }
      Kd[e] = x;
    }
    workgroupBarrier();
    // 2. Partial dots of the DR rows with key sj over d = ssl, ssl + DSL, ...
    var a: array<vec4<f32>, 4>;
    a[0] = vec4<f32>(0.0); a[1] = vec4<f32>(0.0); a[2] = vec4<f32>(0.0); a[3] = vec4<f32>(0.0);
    for (var d = ssl; d < P.d_qk; d += DSL) { dot_rows(&a, &qb, d, Kd[sj * DKW + d]); }
    for (var r = 0u; r < DR; r++) { Sp[(r * DBK + sj) * DSL + ssl] = a[r / 4u][r % 4u]; }
    workgroupBarrier();
    // 3. Row lid: sum the slices, mask, online softmax; probabilities into Sd (4 keys per vec4).
    if (lid < DR) {
      var mx = m_run;
      var sc4: array<vec4<f32>, DBK / 4u>;
      for (var j = 0u; j < DBK; j++) {
        var sc = 0.0;
        for (var sl = 0u; sl < DSL; sl++) { sc += Sp[(lid * DBK + j) * DSL + sl]; }
        let key = kt + j;
        sc = select(sc * P.scale, NEG, !my_live || key >= k_end || (P.causal != 0u && key > my_lim));
        sc4[j / 4u][j % 4u] = sc;
        mx = max(mx, sc);
      }
      var alpha = 1.0;
      var sum = 0.0;
      for (var j4 = 0u; j4 < DBK / 4u; j4++) {
        var p = vec4<f32>(0.0);
        if (mx > NEG) { p = select(vec4<f32>(0.0), exp2(sc4[j4] - mx), sc4[j4] > vec4<f32>(NEG)); }
        Sd[lid * (DBK / 4u) + j4] = p;
        sum += p.x + p.y + p.z + p.w;
      }
      if (mx > NEG) { alpha = exp2(m_run - mx); }
      l_run = l_run * alpha + sum;
      m_run = mx;
      d_alpha[lid] = alpha;
    }
    workgroupBarrier();
    // 4. O = alpha·O + P·V for this invocation's row quads and columns: per 4 keys, 4 V values (one
    //    per key, neighbouring columns across invocations) and the 4 rows' probabilities (one vec4 each).
    if (ory < ORY) {
      for (var i = 0u; i < ORQ; i++) {
        let r = (ory + i * ORY) * 4u;
        let al = vec4<f32>(d_alpha[r], d_alpha[r + 1u], d_alpha[r + 2u], d_alpha[r + 3u]);
        for (var n = 0u; n < ONV; n++) {
          let c = min(ocx + n * OCX, P.d_v - 1u) + DVS;
          var o = acc[i * ONV + n] * al;
          for (var j4 = 0u; j4 < DBK / 4u; j4++) {
            let kb = j4 * 4u * DKW + c;
            let v4 = vec4<f32>(Kd[kb], Kd[kb + DKW], Kd[kb + 2u * DKW], Kd[kb + 3u * DKW]);
            o += vec4<f32>(dot(Sd[r * (DBK / 4u) + j4], v4), dot(Sd[(r + 1u) * (DBK / 4u) + j4], v4),
                           dot(Sd[(r + 2u) * (DBK / 4u) + j4], v4), dot(Sd[(r + 3u) * (DBK / 4u) + j4], v4));
          }
          acc[i * ONV + n] = o;
        }
      }
    }
    workgroupBarrier();
  }

  if (lid < DR) { d_l[lid] = l_run; }
  workgroupBarrier();
  let rows_total = P.kv_heads * M;
  let ml_base = P.splits * rows_total * P.d_v;
  if (ory < ORY) {
    for (var i = 0u; i < ORQ; i++) {
      for (var rr = 0u; rr < 4u; rr++) {
        let r = (ory + i * ORY) * 4u + rr;
        let R = r0 + r;
        if (R >= M) { continue; }
        let inv_l = 1.0 / d_l[r];
        let prow = split * rows_total + g * M + R;
        let ob = row_query(R, gs) * P.o_stride + P.o_offset + row_head(R, g, gs) * P.o_hstride;
        for (var n = 0u; n < ONV; n++) {
          let col = ocx + n * OCX;
          if (col >= P.d_v) { continue; }
          if (P.splits == 1u) { out[ob + col] = acc[i * ONV + n][rr] * inv_l; }
          else { part[prow * P.d_v + col] = acc[i * ONV + n][rr]; }
        }
      }
    }
  }
  if (P.splits > 1u && lid < DR && r0 + lid < M) {
    let prow = split * rows_total + g * M + r0 + lid;
    part[ml_base + prow * 2u] = m_run;
    part[ml_base + prow * 2u + 1u] = l_run;
  }
}
