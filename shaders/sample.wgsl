// Token sampling on the GPU: repetition penalty, temperature, top-k, top-p and a seeded draw, with
// only the chosen id written out. The algorithm (and its CPU twin) is src/kernels/sample.ref.ts.
//
// Chunks of CH = 1024 logits, one workgroup of 256 invocations each (4 consecutive elements per
// invocation, so invocation order is index order). Thresholds τk (top-k) and τp (top-p) are found by
// radix select on the order-preserving u32 key of z, three digit rounds each (bits 31..21, 20..10,
// 9..0): every round histograms the candidates' digits (counts for top-k, integer masses
// W = floor(exp(z − M)·2^20) for top-p; 64-bit global sums via carry) and every workgroup of the
// next dispatch derives the chosen digit from that histogram itself (no extra select dispatches).
//
// binding 0: params (below)
// binding 1: logits f32, the row at logits_offset (penalty only; the whole buffer is bound)
// binding 2: ids [history] u32                  (penalty only)
// binding 3: z [V] f32                          working logits (copy of logits, penalised, ×1/T)
// binding 4: info u32: [0, 32) state slots (8 × 4), [32, 32 + 2C) per-chunk (max key, argmax),
//            [32 + 2C, 32 + 3C) per-chunk kept mass
// binding 5: hist [6 rounds][2048 bins][2] u32 (lo, hi)   atomics, cleared before the rounds
// binding 6: token_out [] u32                         token id written at out[out_index]
//
// Entry points, in dispatch order: penalty (optional) → prep → radix_round × (3 per active filter) →
// finalize → pick. Greedy: prep → pick.

struct Params {
  V: u32, chunks: u32, round: u32, inv_t: f32,
  inv_rp: f32, rp: f32, history: u32, seed: u32,
  step: u32, top_k: u32, top_p: u32, flags: u32,   // flags: 1 greedy, 2 top-k active, 4 top-p active
  out_index: u32, logits_offset: u32, _p1: u32, _p2: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> z: array<f32>;
@group(0) @binding(4) var<storage, read_write> info: array<u32>;
@group(0) @binding(5) var<storage, read_write> hist: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read_write> token_out: array<u32>;

const WG: u32 = 256u;
const PER: u32 = 4u;
const CH: u32 = WG * PER;
const NB: u32 = 2048u;
const MASS_ONE: f32 = 1048576.0;       // 2^20
const STATS: u32 = 32u;                // info offset of the per-chunk (max key, argmax)

// NaN is detected on the bits: WGSL lets compilers assume floats are never NaN.
fn is_nan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
fn key_of(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return 0u; }   // NaN sorts below everything
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn f32_of(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}
fn pcg(x: u32) -> u32 {
  let s = x * 747796405u + 2891336453u;
  let word = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (word >> 22u) ^ word;
}

// ---- 64-bit unsigned helpers (x = lo, y = hi)
fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
  let lo = a.x + b.x;
  return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}
fn sub64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
  return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}
fn ge64(a: vec2<u32>, b: vec2<u32>) -> bool { return a.y > b.y || (a.y == b.y && a.x >= b.x); }
fn mul32(a: u32, b: u32) -> vec2<u32> {
  let a0 = a & 0xffffu; let a1 = a >> 16u; let b0 = b & 0xffffu; let b1 = b >> 16u;
  let p00 = a0 * b0; let p01 = a0 * b1; let p10 = a1 * b0; let p11 = a1 * b1;
  let mid = p01 + p10;
  let mid_c = select(0u, 1u, mid < p01);
  let lo = p00 + (mid << 16u);
  let lo_c = select(0u, 1u, lo < p00);
  return vec2<u32>(lo, p11 + (mid >> 16u) + (mid_c << 16u) + lo_c);
}
// floor(a · b / 2^32) for a < 2^64 whose product high part fits 64 bits.
fn mulhi(a: vec2<u32>, b: u32) -> vec2<u32> {
  let l = mul32(a.x, b);
  let h = mul32(a.y, b);
  return add64(vec2<u32>(l.y, 0u), vec2<u32>(h.x, h.y));
}

// The largest z over all chunks (from prep's per-chunk stats), read once per workgroup. Call from
// uniform control flow.
var<workgroup> wg_max: u32;
fn global_max(lid: u32) -> f32 {
  if (lid == 0u) {
    var k = 0u;
    for (var c = 0u; c < P.chunks; c++) { k = max(k, info[STATS + 2u * c]); }
    wg_max = k;
  }
  return f32_of(workgroupUniformLoad(&wg_max));
}
fn weight(v: f32, m: f32) -> u32 {
  if (is_nan(v)) { return 0u; }
  return u32(floor(exp(v - m) * MASS_ONE));
}

// ---- penalty: z[id] = penalised logits[id] for every history id (duplicates write the same value)
@compute @workgroup_size(WG)
fn penalty(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let j = gid.x + gid.y * nwg.x * WG;
  if (j >= P.history) { return; }
  let id = ids[j];
  if (id >= P.V) { return; }
  let l = logits[P.logits_offset + id];
  z[id] = select(l * P.rp, l * P.inv_rp, l > 0.0);
}

// ---- prep: z ×= 1/T; per-chunk (max key, lowest index of it)
var<workgroup> red_k: array<u32, WG>;
var<workgroup> red_i: array<u32, WG>;

@compute @workgroup_size(WG)
fn prep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= P.chunks) { return; }
  var bk = 0u;
  var bi = 0xffffffffu;
  for (var e = 0u; e < PER; e++) {
    let i = c * CH + lid * PER + e;
    if (i < P.V) {
      let v = z[i] * P.inv_t;
      z[i] = v;
      let k = key_of(v);
      if (bi == 0xffffffffu || k > bk) { bk = k; bi = i; }
    }
  }
  red_k[lid] = bk;
  red_i[lid] = bi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      let ok = red_k[lid + s]; let oi = red_i[lid + s];
      if (oi != 0xffffffffu && (red_i[lid] == 0xffffffffu || ok > red_k[lid] || (ok == red_k[lid] && oi < red_i[lid]))) {
        red_k[lid] = ok; red_i[lid] = oi;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) { info[STATS + 2u * c] = red_k[0]; info[STATS + 2u * c + 1u] = red_i[0]; }
}

// ---- radix-select state: slot r = (prefix, need.lo, need.hi, τk) before round r's histogram
struct State { prefix: u32, need: vec2<u32>, tau_k: u32 }

fn digit_shift(r: u32) -> u32 { return select(select(0u, 10u, r % 3u == 1u), 21u, r % 3u == 0u); }
fn digit_bits(r: u32) -> u32 { return select(11u, 10u, r % 3u == 2u); }
fn high_mask(r: u32) -> u32 { return select(select(0xfffffc00u, 0xffe00000u, r % 3u == 1u), 0u, r % 3u == 0u); }

fn bin(r: u32, d: u32) -> vec2<u32> {
  let i = 2u * (r * NB + d);
  return vec2<u32>(atomicLoad(&hist[i]), atomicLoad(&hist[i + 1u]));
}

var<workgroup> part: array<vec2<u32>, WG>;
var<workgroup> chosen: vec4<u32>;        // (digit, new need lo, new need hi, S1 lo/unused)
var<workgroup> total: vec2<u32>;

// Every invocation calls this with the same st: picks round r's digit where the running mass from the
// top digit first reaches st.need (for the first top-p round, need is derived from the round's total).
fn advance(r: u32, st_in: State, lid: u32) -> State {
  var st = st_in;
  let nb = 1u << digit_bits(r);
  let per = nb / WG;                                      // 8 or 4 bins per invocation, descending
  var s = vec2<u32>(0u);
  for (var j = 0u; j < per; j++) { s = add64(s, bin(r, nb - 1u - lid * per - j)); }
  part[lid] = s;
  workgroupBarrier();
  if (lid == 0u) {
    var need = st.need;
    if (r == 3u) {
      var tot = vec2<u32>(0u);
      for (var t = 0u; t < WG; t++) { tot = add64(tot, part[t]); }
      need = mulhi(tot, P.top_p);
      if (need.x == 0u && need.y == 0u) { need = vec2<u32>(1u, 0u); }
    }
    var cum = vec2<u32>(0u);
    var t = 0u;
    loop {
      let nxt = add64(cum, part[t]);
      if (ge64(nxt, need) || t == WG - 1u) { break; }
      cum = nxt;
      t++;
    }
    var d = nb - 1u - t * per;
    for (var j = 0u; j < per; j++) {
      d = nb - 1u - t * per - j;
      let nxt = add64(cum, bin(r, d));
      if (ge64(nxt, need) || j == per - 1u) { break; }
      cum = nxt;
    }
    let rem = sub64(need, cum);
    chosen = vec4<u32>(d, rem.x, rem.y, 0u);
  }
  workgroupBarrier();
  let ch = chosen;
  workgroupBarrier();
  st.prefix = st.prefix | (ch.x << digit_shift(r));
  st.need = vec2<u32>(ch.y, ch.z);
  return st;
}

fn load_state(slot: u32) -> State {
  let b = slot * 4u;
  return State(info[b], vec2<u32>(info[b + 1u], info[b + 2u]), info[b + 3u]);
}
fn store_state(slot: u32, st: State) {
  let b = slot * 4u;
  info[b] = st.prefix; info[b + 1u] = st.need.x; info[b + 2u] = st.need.y; info[b + 3u] = st.tau_k;
}

// State before round r (r ≥ 0), derived from slot r − 1 and histogram r − 1. After the last top-k
// round the prefix becomes τk and the top-p search starts from an empty prefix.
fn state_before(r: u32, lid: u32) -> State {
  let k_on = (P.flags & 2u) != 0u;
  if (r == 0u) { return State(0u, vec2<u32>(P.top_k, 0u), 0u); }
  if (r == 3u) {
    var tk = 0u;
    if (k_on) { tk = advance(2u, load_state(2u), lid).prefix; }
    return State(0u, vec2<u32>(0u), tk);
  }
  return advance(r - 1u, load_state(r - 1u), lid);
}

var<workgroup> lhist: array<atomic<u32>, NB>;

@compute @workgroup_size(WG)
fn radix_round(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= P.chunks) { return; }
  let r = P.round;
  let st = state_before(r, lid);
  if (c == 0u && lid == 0u) { store_state(r, st); }
  for (var b = lid; b < NB; b += WG) { atomicStore(&lhist[b], 0u); }
  workgroupBarrier();
  let is_p = r >= 3u;
  let m = global_max(lid);
  let hm = high_mask(r);
  let sh = digit_shift(r);
  let dm = (1u << digit_bits(r)) - 1u;
  for (var e = 0u; e < PER; e++) {
    let i = c * CH + lid * PER + e;
    if (i >= P.V) { continue; }
    let v = z[i];
    let k = key_of(v);
    if ((k & hm) != (st.prefix & hm)) { continue; }
    if (is_p && k < st.tau_k) { continue; }
    var wgt = 1u;
    if (is_p) { wgt = weight(v, m); }
    if (wgt != 0u) { atomicAdd(&lhist[(k >> sh) & dm], wgt); }
  }
  workgroupBarrier();
  for (var b = lid; b < NB; b += WG) {
    let v = atomicLoad(&lhist[b]);
    if (v == 0u) { continue; }
    let i = 2u * (r * NB + b);
    let old = atomicAdd(&hist[i], v);
    if (old + v < old) { atomicAdd(&hist[i + 1u], 1u); }
  }
}

// ---- final: thresholds (τk, τp) → slot 7; per-chunk kept mass
var<workgroup> msum: atomic<u32>;

@compute @workgroup_size(WG)
fn finalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x + wid.y * nwg.x;
  if (c >= P.chunks) { return; }
  var tk = 0u;
  var tp = 0u;
  if ((P.flags & 4u) != 0u) {
    let st = advance(5u, load_state(5u), lid);
    tk = st.tau_k;
    tp = st.prefix;
  } else if ((P.flags & 2u) != 0u) {
    tk = advance(2u, load_state(2u), lid).prefix;
  }
  if (c == 0u && lid == 0u) { info[28] = tk; info[29] = tp; }
  let thr = max(tk, tp);
  let m = global_max(lid);
  if (lid == 0u) { atomicStore(&msum, 0u); }
  workgroupBarrier();
  var s = 0u;
  for (var e = 0u; e < PER; e++) {
    let i = c * CH + lid * PER + e;
    if (i >= P.V) { continue; }
    let v = z[i];
    if (key_of(v) >= thr) { s += weight(v, m); }
  }
  atomicAdd(&msum, s);
  workgroupBarrier();
  if (lid == 0u) { info[STATS + 2u * P.chunks + c] = atomicLoad(&msum); }
}

// ---- pick (one workgroup): greedy argmax over chunk stats, or the seeded draw in index order
var<workgroup> scan: array<u32, WG>;
var<workgroup> pick_chunk: vec2<u32>;    // (chunk, target within chunk)

@compute @workgroup_size(WG)
fn pick(@builtin(local_invocation_index) lid: u32) {
  if ((P.flags & 1u) != 0u) {
    if (lid == 0u) {
      var bk = info[STATS];
      var bi = info[STATS + 1u];
      for (var c = 1u; c < P.chunks; c++) {
        let k = info[STATS + 2u * c];
        if (k > bk) { bk = k; bi = info[STATS + 2u * c + 1u]; }
      }
      token_out[P.out_index] = bi;
    }
    return;
  }
  let thr = max(info[28], info[29]);
  let mass = STATS + 2u * P.chunks;
  if (lid == 0u) {
    var S = vec2<u32>(0u);
    for (var c = 0u; c < P.chunks; c++) { S = add64(S, vec2<u32>(info[mass + c], 0u)); }
    let t = mulhi(S, pcg(pcg(P.seed) + P.step));
    var cum = vec2<u32>(0u);
    var c = 0u;
    loop {
      let nxt = add64(cum, vec2<u32>(info[mass + c], 0u));
      if (!ge64(t, nxt) || c == P.chunks - 1u) { break; }   // t < cum + mass[c]
      cum = nxt;
      c++;
    }
    pick_chunk = vec2<u32>(c, sub64(t, cum).x);
  }
  workgroupBarrier();
  let pc = pick_chunk;
  let m = global_max(lid);
  var wv: array<u32, PER>;
  var s = 0u;
  for (var e = 0u; e < PER; e++) {
    let i = pc.x * CH + lid * PER + e;
    wv[e] = 0u;
    if (i < P.V) {
      let v = z[i];
      if (key_of(v) >= thr) { wv[e] = weight(v, m); }
    }
    s += wv[e];
  }
  // inclusive scan of the per-invocation sums (index order)
  scan[lid] = s;
  workgroupBarrier();
  for (var o = 1u; o < WG; o = o * 2u) {
    var addend = 0u;
    if (lid >= o) { addend = scan[lid - o]; }
    workgroupBarrier();
    scan[lid] += addend;
    workgroupBarrier();
  }
  let incl = scan[lid];
  let excl = incl - s;
  if (pc.y >= excl && pc.y < incl) {
    var cum = excl;
    for (var e = 0u; e < PER; e++) {
      cum += wv[e];
      if (cum > pc.y) { token_out[P.out_index] = pc.x * CH + lid * PER + e; break; }
    }
  }
}
