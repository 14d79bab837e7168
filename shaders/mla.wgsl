// Multi-head Latent Attention pieces around the attention core (DeepSeek-V2/V3). Weight layout:
// kv_b [H·(nope+v), kv_lora], per head rows [W_UK (nope rows) | W_UV (v rows)].
//   absorb_q: q̃[s, h] = [W_UK,hᵀ·q_nope[s, h] | q_pe[s, h]]    (kv_lora + rope values; one invocation each)
//   up_v:     out[s, h·v + i] = W_UV,h[i, :]·o_lat[s, h, :]      (one workgroup per 4 outputs; up_v_subgroup
//             with subgroups: @variant subgroups, dropped by the wrapper on other devices)
//   expand_k: K[t, h] = [kvx[t, h·(nope+v) .. +nope] | pe of cache row t]   (naive path; one invocation each)
//
//   decode:   o_lat[s, h] = softmax_t(q̃[s, h]·row_t · scale) · latent_t over the latent cache (absorbed
//             MQA: K = row [latent | pe], V = its latent part), every cached row staged once per row tile
//             for all (query, head) rows of the tile; `combine` merges split partials (see decode's comment)
//
// binding 0: params { S, H, nope, rope, dv, kv_lora, q_stride, q_offset, o_stride, o_offset, c_stride, c_offset,
//                     T, past, scale, splits, past_from_buf, row_tiles }
// absorb_q: 1: q [S, q_stride] (per head [nope | rope] from q_offset)   2: kv_b   3: qa [S, H, kv_lora+rope] (rw)
// up_v:     1: o_lat [S, H, kv_lora]   2: kv_b   3: out [S, o_stride] (head h at o_offset + h·v) (rw)
// expand_k: 1: kvx [S, H·(nope+v)] (S = cached tokens T here)   4: cache [T, c_stride] (pe at c_offset)
//           3: k [T, H, nope+rope] (rw)
// decode:   1: q̃ [S, H, kv_lora+rope]   4: cache (kv variant)   5: past (u32, with past_from_buf)
//           3: o_lat [S, H, kv_lora] (rw; splits == 1)   6: split partials (rw; splits > 1)
// combine:  6: split partials   3: o_lat (rw)
// @variant subgroups on
enable subgroups;
// @variant subgroups off
// @end subgroups
struct Params {
  S: u32, H: u32, nope: u32, rope: u32,
  dv: u32, kv_lora: u32, q_stride: u32, q_offset: u32,
  o_stride: u32, o_offset: u32, c_stride: u32, c_offset: u32,
  T: u32, past: u32, scale: f32, splits: u32,
  past_from_buf: u32, row_tiles: u32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> kv_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// The latent cache: f32 rows, or f16 pairs packed in u32 words (element i = half i % 2 of word i / 2,
// low half first, as kv_cache.wgsl writes them; see shaders/lib/kv_read.wgsl). expand_k reads f32 rows.
// @variant kv f32
@group(0) @binding(4) var<storage, read> cache: array<f32>;
fn cache_at(i: u32) -> f32 { return cache[i]; }
fn cache_pair(i: u32) -> vec2<f32> { return vec2<f32>(cache[i], cache[i + 1u]); }
// @variant kv f16
@group(0) @binding(4) var<storage, read> cache: array<u32>;
fn cache_at(i: u32) -> f32 {
  let p = unpack2x16float(cache[i / 2u]);
  return select(p.x, p.y, (i & 1u) == 1u);
}
/** Elements i, i+1 (i even: one word). */
fn cache_pair(i: u32) -> vec2<f32> { return unpack2x16float(cache[i / 2u]); }
// @end kv
@group(0) @binding(5) var<storage, read> past_buf: array<u32>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;

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
  else { val = cache_at(t * P.c_stride + P.c_offset + n - P.nope); }
  y[idx] = val;
}

// ---- decode: absorbed-MLA attention over the latent cache for S ≤ a few query tokens.
// Rows are the (query s, head h) pairs, row R = s·H + h; all rows attend to the same cache rows (one
// latent kv head), so a workgroup owns a tile of RT rows and one key range (split) and stages each
// block of BK cache rows [latent | pe] in workgroup memory once for all of them: the cache is read once
// per row tile (once per step when S·H ≤ RT: decode with 16 heads), which is what bounds decode on a GPU.
// Per block:
//   1. stage: BK rows × DKP values (zeros past the key range and d_k), neighbouring invocations read
//      neighbouring values (coalesced on a GPU);
//   2. scores: DS invocations share a tile of 4·SQ rows × SJ keys, each over the slice d ≡ ds (mod DS)
//      of the 576-long dots (neighbouring addresses again); the tile is SQ named Quads (constant
//      indices: private arrays indexed by loop variables are spilled to memory by some compilers,
//      SwiftShader among them). SQ = 1 (every invocation scores a 4 × 8 tile, 32 accumulators): what the
//      plan picks on GPUs and on SwiftShader, where it beat SQ = 4 (one group of 4 invocations scoring
//      all 16 rows, 24 loads per 128 FMAs but 128 accumulators: 19 % more CPU time; kept as a launch
//      shape for tests). The DS slices are summed by subgroup shuffles (`subgroups on`) or by the
//      softmax rows from Sp;
//   3. one invocation per row: scale, mask (causal limit, key range), online softmax in the log2
//      domain, probabilities to Pr (a vec4 of 4 keys per row);
//   4. values: invocation i owns columns i + DWG·m (m < 8·NCB) of all 16 rows: quads of 4 rows × 8
//      columns in named Quads (NCB = 1: 4 Quads, 128 floats, on a GPU; NCB = 2 on a software adapter
//      with 32 invocations). The block's keys are written out with constant indices, so each
//      probability is one load for all invocations there; per key and column block 8 staged values,
//      32 FMAs per row quad.
// splits > 1: split p writes its unnormalised rows, max and sum to `part`; `combine` merges them.
// The wrapper (mla-plan.ts mlaDecodePlan) sizes DWG, NCB, BK, SJ, SQ and DS from the device.
const DWG: u32 = 64u;   // invocations per workgroup
const RT: u32 = 16u;    // rows (query, head) per workgroup: 4 quads of value accumulators
const BK: u32 = 8u;     // cache rows per block, a multiple of SJ
const SJ: u32 = 8u;     // keys per score tile: 4 or 8
const DKP: u32 = 576u;  // staged row width: d_k rounded up to a multiple of DS
const NCB: u32 = 1u;    // blocks of 8·DWG value columns per invocation (≤ 4): 8·DWG·NCB ≥ d_v
const SQ: u32 = 1u;     // row quads per score tile: 1 (GPUs: every invocation scores) or 4 (all 16 rows)
const DS: u32 = 16u;    // invocations per score tile (slices of d_k)
const DSW: u32 = 16u;   // score slices written to Sp: 1 when subgroups reduce them, else DS
const NSL: u32 = (RT / (4u * SQ)) * (BK / SJ) * DS;  // invocations that score: DWG, or fewer with SQ = 4
const NEG: f32 = -3.0e38;
const MAX_SLACK: f32 = 8.0;
const RQ: u32 = RT / 4u;
const KQ: u32 = BK / 4u;   // vec4s of keys per block

var<workgroup> Kd: array<f32, BK * DKP>;        // the staged cache rows
var<workgroup> Sp: array<vec4<f32>, RT * DSW * KQ>;  // scores [row][slice][4 keys] (DSW slices: 1 with subgroups)
var<workgroup> Pr: array<vec4<f32>, RT * 4u>;   // probabilities [row][4 keys] (sized for BK ≤ 16: constant indices)
var<workgroup> Aw: array<f32, RT>;              // per row: accumulator rescale of this block; max at the end
var<workgroup> Lw: array<f32, RT>;              // per row at the end: the softmax sum

fn decode_past() -> u32 {
  if (P.past_from_buf != 0u) { return past_buf[0]; }
  return P.past;
}

/** Stages cache rows kb .. kb+BK−1 (zeros from row k1 on and past d_k) into Kd. */
fn stage(kb: u32, k1: u32, lid: u32) {
  let dk = P.kv_lora + P.rope;
  for (var j = 0u; j < BK; j++) {
    let t = kb + j;
    let base = t * P.c_stride + P.c_offset;
    let ok = t < k1;
    // Pairs of elements: one word per pair from an f16 cache (DKP is even: a multiple of DS ≥ 4).
    for (var d = 2u * lid; d < DKP; d += 2u * DWG) {
      var v = vec2<f32>(0.0);
      if (ok && d < dk) { v = cache_pair(base + d); }
      if (d + 1u >= dk) { v.y = 0.0; }
      Kd[j * DKP + d] = v.x;
      Kd[j * DKP + d + 1u] = v.y;
    }
  }
}

fn kd4(b: u32, step: u32) -> vec4<f32> { return vec4<f32>(Kd[b], Kd[b + step], Kd[b + 2u * step], Kd[b + 3u * step]); }

// Value accumulators of one row quad: [2i + h] = row i, columns lid + DWG·(4h + m) in component m.
// Indexed by constants only (named per quad): private arrays indexed by loop variables are spilled
// to memory by some compilers (SwiftShader among them).
alias Quad = array<vec4<f32>, 8>;
fn zero(o: ptr<function, Quad>) {
  for (var i = 0u; i < 8u; i++) { (*o)[i] = vec4<f32>(0.0); }
}
fn rescale(o: ptr<function, Quad>, a: vec4<f32>) {
  (*o)[0] *= a.x; (*o)[1] *= a.x; (*o)[2] *= a.y; (*o)[3] *= a.y;
  (*o)[4] *= a.z; (*o)[5] *= a.z; (*o)[6] *= a.w; (*o)[7] *= a.w;
}
/** q̃ at the 4 element indices (4 rows of a quad at one d). */
fn xq(i: vec4<u32>) -> vec4<f32> { return vec4<f32>(x[i.x], x[i.y], x[i.z], x[i.w]); }

/** A score quad (rows r .. r+3, keys j .. j+SJ−1) of slice e to Sp[(row·DSW + e)·KQ + key / 4]. */
fn store_scores(o: Quad, r: u32, j: u32, e: u32) {
  let h = j / 4u;
  Sp[((r) * DSW + e) * KQ + h] = o[0];
  Sp[((r + 1u) * DSW + e) * KQ + h] = o[2];
  Sp[((r + 2u) * DSW + e) * KQ + h] = o[4];
  Sp[((r + 3u) * DSW + e) * KQ + h] = o[6];
  if (SJ == 8u) {
    Sp[((r) * DSW + e) * KQ + h + 1u] = o[1];
    Sp[((r + 1u) * DSW + e) * KQ + h + 1u] = o[3];
    Sp[((r + 2u) * DSW + e) * KQ + h + 1u] = o[5];
    Sp[((r + 3u) * DSW + e) * KQ + h + 1u] = o[7];
  }
}

// @variant subgroups on
/** Sums a score quad over the DS slices of its tile (neighbouring invocations): a butterfly of shuffles. */
fn reduce_slices(o: ptr<function, Quad>) {
  for (var m = DS / 2u; m > 0u; m /= 2u) {
    (*o)[0] += subgroupShuffleXor((*o)[0], m); (*o)[1] += subgroupShuffleXor((*o)[1], m);
    (*o)[2] += subgroupShuffleXor((*o)[2], m); (*o)[3] += subgroupShuffleXor((*o)[3], m);
    (*o)[4] += subgroupShuffleXor((*o)[4], m); (*o)[5] += subgroupShuffleXor((*o)[5], m);
    (*o)[6] += subgroupShuffleXor((*o)[6], m); (*o)[7] += subgroupShuffleXor((*o)[7], m);
  }
}
// @variant subgroups off
fn reduce_slices(o: ptr<function, Quad>) {}
// @end subgroups

/** One key: the quad's 4 probabilities times the invocation's 8 staged values (va: m 0..3, vc: m 4..7). */
fn pv(o: ptr<function, Quad>, p: vec4<f32>, va: vec4<f32>, vc: vec4<f32>) {
  (*o)[0] += p.x * va; (*o)[1] += p.x * vc;
  (*o)[2] += p.y * va; (*o)[3] += p.y * vc;
  (*o)[4] += p.z * va; (*o)[5] += p.z * vc;
  (*o)[6] += p.w * va; (*o)[7] += p.w * vc;
}

@compute @workgroup_size(DWG)
fn decode(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  let tile = g % P.row_tiles;
  let split = g / P.row_tiles;
  if (split >= P.splits) { return; }
  let past = decode_past();
  let T = past + P.S;
  let M = P.S * P.H;
  let dk = P.kv_lora + P.rope;
  let dv = P.kv_lora;
  let r0 = tile * RT;
  // The tile's key range: up to its last row's causal limit, cut into `splits` ranges of whole blocks.
  let kEnd = min(T, past + (min(r0 + RT, M) - 1u) / P.H + 1u);
  let per = ((kEnd + P.splits - 1u) / P.splits + BK - 1u) / BK * BK;
  let k0 = min(split * per, kEnd);
  let k1 = min(k0 + per, kEnd);

  // Score tile of this invocation (lid < NSL): rows sr0 .. sr0+4·SQ−1 (rows past M read row M − 1,
  // masked later), keys sj0 .. sj0+SJ−1, d slice ds.
  let ds = lid % DS;
  let sg = lid / DS;
  let sr0 = (sg % (RQ / SQ)) * 4u * SQ;
  let sj0 = (sg / (RQ / SQ)) * SJ;
  let qr = min(vec4<u32>(r0 + sr0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(M - 1u)) * dk;
  let qr4 = vec4<u32>(4u * dk);

  // The softmax row of this invocation (lid < RT): causal limit, running max and sum.
  let rowOk = lid < RT && r0 + lid < M;
  let limit = past + (r0 + lid) / P.H;
  var m_run = NEG;
  var l_run = 0.0;

  // Value accumulators: quad q of column block cb in o[4·cb + q] (NCB ≤ 4 blocks of 8·DWG columns).
  var o0: Quad; var o1: Quad; var o2: Quad; var o3: Quad; var o4: Quad; var o5: Quad; var o6: Quad; var o7: Quad;
  var o8: Quad; var o9: Quad; var o10: Quad; var o11: Quad; var o12: Quad; var o13: Quad; var o14: Quad; var o15: Quad;
  zero(&o0); zero(&o1); zero(&o2); zero(&o3);
  if (NCB > 1u) { zero(&o4); zero(&o5); zero(&o6); zero(&o7); }
  if (NCB > 2u) { zero(&o8); zero(&o9); zero(&o10); zero(&o11); }
  if (NCB > 3u) { zero(&o12); zero(&o13); zero(&o14); zero(&o15); }
  for (var kb = k0; kb < k1; kb += BK) {
    stage(kb, k1, lid);
    workgroupBarrier();

    // 2. Partial scores of quads q (rows sr0 + 4q + i): s_q[2i] keys sj0..+3, s_q[2i+1] keys sj0+4..+7.
    var s0: Quad; var s1: Quad; var s2: Quad; var s3: Quad;
    zero(&s0);
    if (SQ == 4u) { zero(&s1); zero(&s2); zero(&s3); }
    for (var d = ds; lid < NSL && d < DKP; d += DS) {
      let dq = vec4<u32>(min(d, dk - 1u)); // Kd is zero past d_k: any finite q̃ value will do
      let ka = kd4(sj0 * DKP + d, DKP);
      var kc = vec4<f32>(0.0);
      if (SJ == 8u) { kc = kd4((sj0 + 4u) * DKP + d, DKP); }
      pv(&s0, xq(qr + dq), ka, kc);
      if (SQ == 4u) {
        pv(&s1, xq(qr + qr4 + dq), ka, kc);
        pv(&s2, xq(qr + 2u * qr4 + dq), ka, kc);
        pv(&s3, xq(qr + 3u * qr4 + dq), ka, kc);
      }
    }
    // Partials of the DS slices: summed across the invocations of a tile with subgroup shuffles
    // (`subgroups on`: DS ≤ the subgroup size, slices of a tile in one subgroup) and written once, or
    // written per slice for the softmax rows to sum (`subgroups off`).
    reduce_slices(&s0);
    if (SQ == 4u) { reduce_slices(&s1); reduce_slices(&s2); reduce_slices(&s3); }
    if (lid < NSL && ds < DSW) {
      store_scores(s0, sr0, sj0, ds);
      if (SQ == 4u) { store_scores(s1, sr0 + 4u, sj0, ds); store_scores(s2, sr0 + 8u, sj0, ds); store_scores(s3, sr0 + 12u, sj0, ds); }
    }
    workgroupBarrier();

    // 3. Row lid: its scores of the block (KQ vec4s of 4 keys), online softmax, probabilities to Pr.
    if (lid < RT) {
      var sc: array<vec4<f32>, 4>;
      var mx = m_run;
      for (var h = 0u; h < KQ; h++) {
        var v = vec4<f32>(0.0);
        for (var e = 0u; e < DSW; e++) { v += Sp[(lid * DSW + e) * KQ + h]; }
        let t = vec4<u32>(kb + 4u * h) + vec4<u32>(0u, 1u, 2u, 3u);
        let vis = vec4<bool>(rowOk) & (t < vec4<u32>(k1)) & (t <= vec4<u32>(limit));
        v = select(vec4<f32>(NEG), v * P.scale, vis);
        sc[h] = v;
        mx = max(mx, max(max(v.x, v.y), max(v.z, v.w)));
      }
      // The running max moves only when the block's exceeds it by more than MAX_SLACK (log2 units):
      // the accumulators are rarely rescaled (alpha = 1 skips it) and probabilities stay ≤ 2^MAX_SLACK.
      if (mx <= m_run + MAX_SLACK) { mx = m_run; }
      let alpha = exp2(m_run - mx);
      var sum = 0.0;
      for (var h = 0u; h < KQ; h++) {
        let v = sc[h];
        let p = select(vec4<f32>(0.0), exp2(v - vec4<f32>(mx)), v > vec4<f32>(NEG));
        Pr[lid * 4u + h] = p;
        sum += p.x + p.y + p.z + p.w;
      }
      l_run = l_run * alpha + sum;
      m_run = mx;
      Aw[lid] = alpha;
    }
    workgroupBarrier();

    // 4. O = alpha·O + P·V: rows 4·rq + i of quad rq in o[rq][2i + h], columns lid + DWG·(4h + m).
    let al = vec4<f32>(Aw[0], Aw[1], Aw[2], Aw[3]);
    let al1 = vec4<f32>(Aw[4], Aw[5], Aw[6], Aw[7]);
    let al2 = vec4<f32>(Aw[8], Aw[9], Aw[10], Aw[11]);
    let al3 = vec4<f32>(Aw[12], Aw[13], Aw[14], Aw[15]);
    if (any((al != vec4<f32>(1.0)) | (al1 != vec4<f32>(1.0)) | (al2 != vec4<f32>(1.0)) | (al3 != vec4<f32>(1.0)))) {
      rescale(&o0, al); rescale(&o1, al1); rescale(&o2, al2); rescale(&o3, al3);
      if (NCB > 1u) { rescale(&o4, al); rescale(&o5, al1); rescale(&o6, al2); rescale(&o7, al3); }
      if (NCB > 2u) { rescale(&o8, al); rescale(&o9, al1); rescale(&o10, al2); rescale(&o11, al3); }
      if (NCB > 3u) { rescale(&o12, al); rescale(&o13, al1); rescale(&o14, al2); rescale(&o15, al3); }
    }
    // Keys written out with constant indices: each probability is then one load for all invocations
    // on a CPU adapter (a loop index would make it a per-invocation gather).
    {
      let p0 = vec4<f32>(Pr[0][0], Pr[4][0], Pr[8][0], Pr[12][0]); let p1 = vec4<f32>(Pr[16][0], Pr[20][0], Pr[24][0], Pr[28][0]); let p2 = vec4<f32>(Pr[32][0], Pr[36][0], Pr[40][0], Pr[44][0]); let p3 = vec4<f32>(Pr[48][0], Pr[52][0], Pr[56][0], Pr[60][0]);
      { let vb = 0u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 0u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 0u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 0u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    {
      let p0 = vec4<f32>(Pr[0][1], Pr[4][1], Pr[8][1], Pr[12][1]); let p1 = vec4<f32>(Pr[16][1], Pr[20][1], Pr[24][1], Pr[28][1]); let p2 = vec4<f32>(Pr[32][1], Pr[36][1], Pr[40][1], Pr[44][1]); let p3 = vec4<f32>(Pr[48][1], Pr[52][1], Pr[56][1], Pr[60][1]);
      { let vb = 1u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 1u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 1u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 1u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    {
      let p0 = vec4<f32>(Pr[0][2], Pr[4][2], Pr[8][2], Pr[12][2]); let p1 = vec4<f32>(Pr[16][2], Pr[20][2], Pr[24][2], Pr[28][2]); let p2 = vec4<f32>(Pr[32][2], Pr[36][2], Pr[40][2], Pr[44][2]); let p3 = vec4<f32>(Pr[48][2], Pr[52][2], Pr[56][2], Pr[60][2]);
      { let vb = 2u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 2u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 2u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 2u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    {
      let p0 = vec4<f32>(Pr[0][3], Pr[4][3], Pr[8][3], Pr[12][3]); let p1 = vec4<f32>(Pr[16][3], Pr[20][3], Pr[24][3], Pr[28][3]); let p2 = vec4<f32>(Pr[32][3], Pr[36][3], Pr[40][3], Pr[44][3]); let p3 = vec4<f32>(Pr[48][3], Pr[52][3], Pr[56][3], Pr[60][3]);
      { let vb = 3u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 3u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 3u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 3u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 4u) {
      let p0 = vec4<f32>(Pr[1][0], Pr[5][0], Pr[9][0], Pr[13][0]); let p1 = vec4<f32>(Pr[17][0], Pr[21][0], Pr[25][0], Pr[29][0]); let p2 = vec4<f32>(Pr[33][0], Pr[37][0], Pr[41][0], Pr[45][0]); let p3 = vec4<f32>(Pr[49][0], Pr[53][0], Pr[57][0], Pr[61][0]);
      { let vb = 4u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 4u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 4u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 4u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 4u) {
      let p0 = vec4<f32>(Pr[1][1], Pr[5][1], Pr[9][1], Pr[13][1]); let p1 = vec4<f32>(Pr[17][1], Pr[21][1], Pr[25][1], Pr[29][1]); let p2 = vec4<f32>(Pr[33][1], Pr[37][1], Pr[41][1], Pr[45][1]); let p3 = vec4<f32>(Pr[49][1], Pr[53][1], Pr[57][1], Pr[61][1]);
      { let vb = 5u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 5u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 5u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 5u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 4u) {
      let p0 = vec4<f32>(Pr[1][2], Pr[5][2], Pr[9][2], Pr[13][2]); let p1 = vec4<f32>(Pr[17][2], Pr[21][2], Pr[25][2], Pr[29][2]); let p2 = vec4<f32>(Pr[33][2], Pr[37][2], Pr[41][2], Pr[45][2]); let p3 = vec4<f32>(Pr[49][2], Pr[53][2], Pr[57][2], Pr[61][2]);
      { let vb = 6u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 6u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 6u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 6u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 4u) {
      let p0 = vec4<f32>(Pr[1][3], Pr[5][3], Pr[9][3], Pr[13][3]); let p1 = vec4<f32>(Pr[17][3], Pr[21][3], Pr[25][3], Pr[29][3]); let p2 = vec4<f32>(Pr[33][3], Pr[37][3], Pr[41][3], Pr[45][3]); let p3 = vec4<f32>(Pr[49][3], Pr[53][3], Pr[57][3], Pr[61][3]);
      { let vb = 7u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 7u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 7u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 7u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 8u) {
      let p0 = vec4<f32>(Pr[2][0], Pr[6][0], Pr[10][0], Pr[14][0]); let p1 = vec4<f32>(Pr[18][0], Pr[22][0], Pr[26][0], Pr[30][0]); let p2 = vec4<f32>(Pr[34][0], Pr[38][0], Pr[42][0], Pr[46][0]); let p3 = vec4<f32>(Pr[50][0], Pr[54][0], Pr[58][0], Pr[62][0]);
      { let vb = 8u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 8u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 8u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 8u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 8u) {
      let p0 = vec4<f32>(Pr[2][1], Pr[6][1], Pr[10][1], Pr[14][1]); let p1 = vec4<f32>(Pr[18][1], Pr[22][1], Pr[26][1], Pr[30][1]); let p2 = vec4<f32>(Pr[34][1], Pr[38][1], Pr[42][1], Pr[46][1]); let p3 = vec4<f32>(Pr[50][1], Pr[54][1], Pr[58][1], Pr[62][1]);
      { let vb = 9u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 9u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 9u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 9u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 8u) {
      let p0 = vec4<f32>(Pr[2][2], Pr[6][2], Pr[10][2], Pr[14][2]); let p1 = vec4<f32>(Pr[18][2], Pr[22][2], Pr[26][2], Pr[30][2]); let p2 = vec4<f32>(Pr[34][2], Pr[38][2], Pr[42][2], Pr[46][2]); let p3 = vec4<f32>(Pr[50][2], Pr[54][2], Pr[58][2], Pr[62][2]);
      { let vb = 10u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 10u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 10u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 10u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 8u) {
      let p0 = vec4<f32>(Pr[2][3], Pr[6][3], Pr[10][3], Pr[14][3]); let p1 = vec4<f32>(Pr[18][3], Pr[22][3], Pr[26][3], Pr[30][3]); let p2 = vec4<f32>(Pr[34][3], Pr[38][3], Pr[42][3], Pr[46][3]); let p3 = vec4<f32>(Pr[50][3], Pr[54][3], Pr[58][3], Pr[62][3]);
      { let vb = 11u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 11u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 11u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 11u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 8u) {
      let p0 = vec4<f32>(Pr[3][0], Pr[7][0], Pr[11][0], Pr[15][0]); let p1 = vec4<f32>(Pr[19][0], Pr[23][0], Pr[27][0], Pr[31][0]); let p2 = vec4<f32>(Pr[35][0], Pr[39][0], Pr[43][0], Pr[47][0]); let p3 = vec4<f32>(Pr[51][0], Pr[55][0], Pr[59][0], Pr[63][0]);
      { let vb = 12u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 12u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 12u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 12u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 8u) {
      let p0 = vec4<f32>(Pr[3][1], Pr[7][1], Pr[11][1], Pr[15][1]); let p1 = vec4<f32>(Pr[19][1], Pr[23][1], Pr[27][1], Pr[31][1]); let p2 = vec4<f32>(Pr[35][1], Pr[39][1], Pr[43][1], Pr[47][1]); let p3 = vec4<f32>(Pr[51][1], Pr[55][1], Pr[59][1], Pr[63][1]);
      { let vb = 13u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 13u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 13u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 13u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 8u) {
      let p0 = vec4<f32>(Pr[3][2], Pr[7][2], Pr[11][2], Pr[15][2]); let p1 = vec4<f32>(Pr[19][2], Pr[23][2], Pr[27][2], Pr[31][2]); let p2 = vec4<f32>(Pr[35][2], Pr[39][2], Pr[43][2], Pr[47][2]); let p3 = vec4<f32>(Pr[51][2], Pr[55][2], Pr[59][2], Pr[63][2]);
      { let vb = 14u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 14u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 14u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 14u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    if (BK > 8u) {
      let p0 = vec4<f32>(Pr[3][3], Pr[7][3], Pr[11][3], Pr[15][3]); let p1 = vec4<f32>(Pr[19][3], Pr[23][3], Pr[27][3], Pr[31][3]); let p2 = vec4<f32>(Pr[35][3], Pr[39][3], Pr[43][3], Pr[47][3]); let p3 = vec4<f32>(Pr[51][3], Pr[55][3], Pr[59][3], Pr[63][3]);
      { let vb = 15u * DKP + lid + 0u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o0, p0, va, vc); pv(&o1, p1, va, vc); pv(&o2, p2, va, vc); pv(&o3, p3, va, vc); }
      if (NCB > 1u) { let vb = 15u * DKP + lid + 8u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o4, p0, va, vc); pv(&o5, p1, va, vc); pv(&o6, p2, va, vc); pv(&o7, p3, va, vc); }
      if (NCB > 2u) { let vb = 15u * DKP + lid + 16u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o8, p0, va, vc); pv(&o9, p1, va, vc); pv(&o10, p2, va, vc); pv(&o11, p3, va, vc); }
      if (NCB > 3u) { let vb = 15u * DKP + lid + 24u * DWG; let va = kd4(vb, DWG); let vc = kd4(vb + 4u * DWG, DWG);
        pv(&o12, p0, va, vc); pv(&o13, p1, va, vc); pv(&o14, p2, va, vc); pv(&o15, p3, va, vc); }
    }
    workgroupBarrier();
  }

  // Row statistics to every invocation: max in Aw, sum in Lw.
  if (lid < RT) { Aw[lid] = m_run; Lw[lid] = l_run; }
  workgroupBarrier();
  store_quad(o0, 0u, r0, M, split, lid); store_quad(o1, 1u, r0, M, split, lid);
  store_quad(o2, 2u, r0, M, split, lid); store_quad(o3, 3u, r0, M, split, lid);
  if (NCB > 1u) {
    store_quad(o4, 0u, r0, M, split, lid + 8u * DWG); store_quad(o5, 1u, r0, M, split, lid + 8u * DWG);
    store_quad(o6, 2u, r0, M, split, lid + 8u * DWG); store_quad(o7, 3u, r0, M, split, lid + 8u * DWG);
  }
  if (NCB > 2u) {
    store_quad(o8, 0u, r0, M, split, lid + 16u * DWG); store_quad(o9, 1u, r0, M, split, lid + 16u * DWG);
    store_quad(o10, 2u, r0, M, split, lid + 16u * DWG); store_quad(o11, 3u, r0, M, split, lid + 16u * DWG);
  }
  if (NCB > 3u) {
    store_quad(o12, 0u, r0, M, split, lid + 24u * DWG); store_quad(o13, 1u, r0, M, split, lid + 24u * DWG);
    store_quad(o14, 2u, r0, M, split, lid + 24u * DWG); store_quad(o15, 3u, r0, M, split, lid + 24u * DWG);
  }
}

/** Rows 4·rq .. +3 of the tile from o (see decode, step 4): normalised to y, or partials with max and sum. */
fn store_quad(o: Quad, rq: u32, r0: u32, M: u32, split: u32, c0: u32) {
  let dv = P.kv_lora;
  for (var i = 0u; i < 4u; i++) {
    let r = rq * 4u + i;
    let R = r0 + r;
    if (R >= M) { break; }
    let l = Lw[r];
    let inv = select(0.0, 1.0 / l, l > 0.0);
    for (var h = 0u; h < 2u; h++) {
      let v = o[2u * i + h];
      for (var m = 0u; m < 4u; m++) {
        let col = c0 + (4u * h + m) * DWG;
        if (col >= dv) { break; }
        if (P.splits == 1u) { y[R * dv + col] = v[m] * inv; }
        else { part[(split * M + R) * (dv + 2u) + col] = v[m]; }
      }
    }
    if (P.splits > 1u && c0 == 0u) {
      part[(split * M + R) * (dv + 2u) + dv] = Aw[r];
      part[(split * M + R) * (dv + 2u) + dv + 1u] = l;
    }
  }
}

// Log-sum-exp merge of the splits' partials: one invocation per output value (row R, column c).
@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let dv = P.kv_lora;
  let M = P.S * P.H;
  let idx = linear(wid, nwg, lid);
  if (idx >= M * dv) { return; }
  let R = idx / dv;
  let c = idx % dv;
  var mx = NEG;
  for (var p = 0u; p < P.splits; p++) { mx = max(mx, part[(p * M + R) * (dv + 2u) + dv]); }
  var num = 0.0;
  var den = 0.0;
  for (var p = 0u; p < P.splits; p++) {
    let b = (p * M + R) * (dv + 2u);
    let w = exp2(part[b + dv] - mx);
    num += w * part[b + c];
    den += w * part[b + dv + 1u];
  }
  y[idx] = select(0.0, num / den, den > 0.0);
}
