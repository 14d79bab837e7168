// Token ↔ expert permutation for the grouped (prefill) MoE path, and the gather-combine back to token
// order. WGSL has no float atomics, so outputs are combined by gathering, never by scatter-add.
//
// sort (one workgroup; N = T·K entries, entry i = t·K + j):
//   count per expert (workgroup atomics) → exclusive scan of counts and of ⌈count/BM⌉ row tiles →
//   stable scatter: entries of one expert keep their order, so the permutation is deterministic.
//   params { N, E, BM, _ }
//   1: ids [N] u32   2: perm [N] u32 out (sorted row → entry)   3: inv [N] u32 out (entry → sorted row)
//   4: seg [2(E+1)] u32 out = [offsets (E+1) | tile_start (E+1)]
// combine (one invocation per output element):
//   out[t, d] = Σ_j w[t·K+j] · y[inv[t·K+j], d] + shared[t, d]
//   params { T, K, D, has_shared }
//   5: y [N, D]   3: inv (read)   6: wts [N]   7: shared [T, D]   8: out [T, D]
// group_remap (one invocation per entry; routed experts held as several stacks, one per binding):
//   the entries of experts [e0, e1) renumbered from 0, every other entry pointed at the stack's expert 0
//   with weight 0, so one experts pass per stack adds exactly that stack's share.
//   params { N, e0, e1, _ }
//   1: ids [N]   6: wts [N]   2: ids out [N] (perm's slot)   8: wts out [N] (out's slot)

struct Params { a: u32, b: u32, c: u32, d: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> perm: array<u32>;
@group(0) @binding(3) var<storage, read_write> inv: array<u32>;
@group(0) @binding(4) var<storage, read_write> seg: array<u32>;
@group(0) @binding(5) var<storage, read> y: array<f32>;
@group(0) @binding(6) var<storage, read> wts: array<f32>;
@group(0) @binding(7) var<storage, read> shared_out: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> inv_in: array<u32>;

override WG: u32 = 256u;     // power of two
override MAX_E: u32 = 256u;  // ≥ E

var<workgroup> cnt: array<atomic<u32>, MAX_E>;
var<workgroup> cur: array<u32, MAX_E>;
var<workgroup> scan_c: array<u32, WG>;
var<workgroup> scan_t: array<u32, WG>;
var<workgroup> chunk: array<u32, WG>;

@compute @workgroup_size(WG)
fn sort(@builtin(local_invocation_index) lid: u32) {
  let N = P.a;
  let E = P.b;
  let BM = P.c;
  for (var e = lid; e < E; e += WG) { atomicStore(&cnt[e], 0u); }
  workgroupBarrier();
  for (var i = lid; i < N; i += WG) { atomicAdd(&cnt[min(ids[i], E - 1u)], 1u); }
  workgroupBarrier();

  // Exclusive scan: each invocation owns a contiguous run of experts.
  let per = (E + WG - 1u) / WG;
  let e0 = min(lid * per, E);
  let e1 = min(e0 + per, E);
  var sc = 0u;
  var st = 0u;
  for (var e = e0; e < e1; e++) {
    let n = atomicLoad(&cnt[e]);
    sc += n;
    st += (n + BM - 1u) / BM;
  }
  scan_c[lid] = sc;
  scan_t[lid] = st;
  workgroupBarrier();
  for (var off = 1u; off < WG; off = off * 2u) {
    var ac = 0u;
    var at = 0u;
    if (lid >= off) { ac = scan_c[lid - off]; at = scan_t[lid - off]; }
    workgroupBarrier();
    scan_c[lid] += ac;
    scan_t[lid] += at;
    workgroupBarrier();
  }
  var oc = scan_c[lid] - sc;
  var ot = scan_t[lid] - st;
  for (var e = e0; e < e1; e++) {
    let n = atomicLoad(&cnt[e]);
    seg[e] = oc;
    seg[E + 1u + e] = ot;
    cur[e] = oc;
    oc += n;
    ot += (n + BM - 1u) / BM;
  }
  if (lid == WG - 1u) {
    seg[E] = scan_c[lid];
    seg[2u * E + 1u] = scan_t[lid];
  }
  workgroupBarrier();

  // Stable scatter, WG entries at a time: rank within the chunk among equal experts + running cursor.
  for (var b = 0u; b < N; b += WG) {
    let i = b + lid;
    var e = 0xffffffffu;
    if (i < N) { e = min(ids[i], E - 1u); }
    chunk[lid] = e;
    workgroupBarrier();
    var rank = 0u;
    var last = true;
    if (i < N) {
      for (var l = 0u; l < WG; l++) {
        if (chunk[l] == e) {
          if (l < lid) { rank++; } else if (l > lid) { last = false; }
        }
      }
      let pos = cur[e] + rank;
      perm[pos] = i;
      inv[i] = pos;
    }
    workgroupBarrier();
    if (i < N && last) { cur[e] += rank + 1u; }
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn combine(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let T = P.a;
  let K = P.b;
  let D = P.c;
  let q = gid.x + gid.y * nwg.x * WG;
  if (q >= T * D) { return; }
  let t = q / D;
  let d = q % D;
  var v = 0.0;
  for (var j = 0u; j < K; j++) {
    let i = t * K + j;
    v += wts[i] * y[inv_in[i] * D + d];
  }
  if (P.d != 0u) { v += shared_out[q]; }
  out[q] = v;
}

@compute @workgroup_size(WG)
fn group_remap(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * WG;
  if (i >= P.a) { return; }
  let e = ids[i];
  let inside = e >= P.b && e < P.c;
  perm[i] = select(0u, e - P.b, inside);
  out[i] = select(0.0, wts[i], inside);
}

// slot_remap (one invocation per entry; routed experts held in an expert cache of C slots):
//   entries [first, first + N) of the routing, each expert id looked up in the slot table
//   (expert → slot, 0xffffffff when the expert is not resident), written from 0: resident entries get
//   their slot and weight, others slot 0 with weight 0 (the offload runner makes every entry it runs
//   resident first, so those never occur there).
//   params { N, first, E, _ }
//   1: ids [first + N]   6: wts [first + N]   4: slot table [E] (read)   2: ids out [N]   8: wts out [N]
@group(0) @binding(4) var<storage, read> slot_of: array<u32>;

@compute @workgroup_size(WG)
fn slot_remap(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * WG;
  if (i >= P.a) { return; }
  let e = ids[P.b + i];
  var s = 0xffffffffu;
  if (e < P.c) { s = slot_of[e]; }
  let ok = s != 0xffffffffu;
  perm[i] = select(0u, s, ok);
  out[i] = select(0.0, wts[P.b + i], ok);
}
