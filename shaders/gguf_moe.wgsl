// Routed-expert SwiGLU MLPs over stacked GGUF expert tensors in their raw block bytes (llama.cpp's
// ffn_gate_exps / ffn_up_exps [E, I, D] and ffn_down_exps [E, D, I], ne = [D, I, E] / [I, D, E]),
// decoded here (shaders/lib/gguf_blocks.wgsl, `@variant gtype` = the block type of the tensor the
// dispatch reads: gate|up for decode_gate_up, down for decode_down). The dispatch contract of
// moe_experts.wgsl's decode path (src/kernels/moe.ts): ids and weights stay on the GPU.
//   decode_gate_up  h[tj, i] = silu(gate_e[i]·x[t]) · up_e[i]·x[t]   for every (token t, slot j), e = ids[tj]
//   decode_down     out[t, d] = Σ_j wts[tj] · down_e[d]·h[tj] + shared[t, d]
// A workgroup owns ROWS = 4 output rows of one (token, slot) (gate_up) or one token (down); its WG
// invocations stride over the reduction axis in units of GG_UNIT weights, then reduce in workgroup
// memory. Rows past I / D re-read the last row (in bounds) and are not stored.
//
// decode_gate_up  params { T, K, D, I, E, groups = ⌈I/4⌉, _, row_bytes (of a D-row), units = ⌈D/GG_UNIT⌉, up_base, … }
//   1: x [T, D]   2: wq = gate rows (E·I) then, from byte up_base, up rows (E·I)   3: ids [T·K] u32   4: h [T·K, I] out
// decode_down     params { T, K, D, I, E, groups = ⌈D/4⌉, has_shared, row_bytes (of an I-row), units = ⌈I/GG_UNIT⌉, … }
//   5: hv [T·K, I]   2: wq = down rows (E·D)   3: ids   7: wts [T·K] f32   8: shared [T, D]   9: out [T, D]
// Workgroup g = wid.x + wid.y · nwg.x. `decode_*_subgroup` (devices with subgroups; @variant subgroups
// drops them elsewhere) run one subgroup per workgroup and reduce with subgroupAdd.
//
// Grouped (prefill; llama.cpp's MUL_MAT_ID): the (token, slot) entries sorted by expert (moe_dispatch.wgsl
// sort: perm, seg = [offsets | tile_start] with tiles of BM sorted rows), then per workgroup one
// BM × BN = 32 × 32 tile of one expert's sorted rows × output columns (find_tile, as moe_experts.wgsl),
// K in slices of BK = 64 weights: the slice of the expert's BN weight rows is decoded from its blocks into
// workgroup memory once and used by every sorted row of the tile (register_tile.wgsl, 4 × 4 per
// invocation). moe_dispatch.wgsl combine gathers the rows back to token order with the routing weights.
//   grouped_gate_up  h[s, i] = silu(gate_e[i]·x[perm[s] / K]) · up_e[i]·x[perm[s] / K] for sorted rows s of expert e
//     params as decode_gate_up but groups = ⌈I / BN⌉;  1: x   2: wq (gate rows, up rows from up_base)   4: h [N, I]   10: perm   11: seg
//   grouped_down     y[s, d] = down_e[d]·h[s]
//     params as decode_down but groups = ⌈D / BN⌉;  5: hv [N, I]   2: wq (down rows)   11: seg   9: y [N, D] (the out binding)
// @variant subgroups on
enable subgroups;
// @variant subgroups off
// @end subgroups
// @include gguf_blocks
// @include moe_decode

struct Params { T: u32, K: u32, D: u32, I: u32, E: u32, groups: u32, has_shared: u32, row_bytes: u32, units: u32, up_base: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> h: array<f32>;
@group(0) @binding(5) var<storage, read> hv: array<f32>;
@group(0) @binding(7) var<storage, read> wts: array<f32>;
@group(0) @binding(8) var<storage, read> shared_out: array<f32>;
@group(0) @binding(9) var<storage, read_write> out: array<f32>;
@group(0) @binding(10) var<storage, read> perm: array<u32>;
@group(0) @binding(11) var<storage, read> seg: array<u32>;

override WG: u32 = 64u;   // power of two
const ROWS: u32 = 4u;
// Mask for the weights k..k+3 of a row of length n (only F32/F16/BF16 rows end mid-unit).
fn live(k: u32, n: u32) -> vec4<bool> { return vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n); }
fn x4(i: u32, k: u32) -> vec4<f32> { return select(vec4<f32>(0.0), vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]), live(k, P.D)); }
fn h4(i: u32, k: u32) -> vec4<f32> { return select(vec4<f32>(0.0), vec4<f32>(hv[i], hv[i + 1u], hv[i + 2u], hv[i + 3u]), live(k, P.I)); }

// Rows i0..i0+3 of expert ids[tj]'s gate and up projections of x[tj / K], over units lid, lid + step, …
// (the 4 rows decoded side by side, each x vec4 loaded once for all 8 row-units).
fn gate_up_partial(tj: u32, i0: u32, lid: u32, step: u32) -> GateUp {
  let e = min(ids[tj], P.E - 1u);
  let xb = (tj / P.K) * P.D;
  let rb = (e * P.I + min(vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(P.I - 1u))) * P.row_bytes;
  var r: GateUp;
  for (var u = lid; u < P.units; u += step) {
    let k0 = u * GG_UNIT;
    let g0 = gg_unit(rb.x, u, P.D);
    let g1 = gg_unit(rb.y, u, P.D);
    let g2 = gg_unit(rb.z, u, P.D);
    let g3 = gg_unit(rb.w, u, P.D);
    let u0 = gg_unit(P.up_base + rb.x, u, P.D);
    let u1 = gg_unit(P.up_base + rb.y, u, P.D);
    let u2 = gg_unit(P.up_base + rb.z, u, P.D);
    let u3 = gg_unit(P.up_base + rb.w, u, P.D);
    for (var i = 0u; i < GG_UV; i++) {
      let xv = x4(xb + k0 + 4u * i, k0 + 4u * i);
      r.g += vec4<f32>(dot(gg_w4(g0, i), xv), dot(gg_w4(g1, i), xv), dot(gg_w4(g2, i), xv), dot(gg_w4(g3, i), xv));
      r.u += vec4<f32>(dot(gg_w4(u0, i), xv), dot(gg_w4(u1, i), xv), dot(gg_w4(u2, i), xv), dot(gg_w4(u3, i), xv));
    }
  }
  return r;
}

fn store_h(tj: u32, i0: u32, g: vec4<f32>, u: vec4<f32>) {
  let v = g / (vec4<f32>(1.0) + exp(-g)) * u;
  for (var r = 0u; r < ROWS; r++) { if (i0 + r < P.I) { h[tj * P.I + i0 + r] = v[r]; } }
}

// Rows d0..d0+3 of Σ_j wts[t·K + j] · down_{ids[t·K + j]} · hv[t·K + j], over units lid, lid + step, …
fn down_partial(t: u32, d0: u32, lid: u32, step: u32) -> vec4<f32> {
  let rows = min(vec4<u32>(d0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(P.D - 1u));
  var acc = vec4<f32>(0.0);
  for (var j = 0u; j < P.K; j++) {
    let tj = t * P.K + j;
    let rb = (min(ids[tj], P.E - 1u) * P.D + rows) * P.row_bytes;
    let hb = tj * P.I;
    var part = vec4<f32>(0.0);
    for (var u = lid; u < P.units; u += step) {
      let k0 = u * GG_UNIT;
      let g0 = gg_unit(rb.x, u, P.I);
      let g1 = gg_unit(rb.y, u, P.I);
      let g2 = gg_unit(rb.z, u, P.I);
      let g3 = gg_unit(rb.w, u, P.I);
      for (var i = 0u; i < GG_UV; i++) {
        let hv4 = h4(hb + k0 + 4u * i, k0 + 4u * i);
        part += vec4<f32>(dot(gg_w4(g0, i), hv4), dot(gg_w4(g1, i), hv4), dot(gg_w4(g2, i), hv4), dot(gg_w4(g3, i), hv4));
      }
    }
    acc += wts[tj] * part;
  }
  return acc;
}

fn store_out(t: u32, d0: u32, v: vec4<f32>) {
  for (var r = 0u; r < ROWS; r++) {
    let d = d0 + r;
    if (d < P.D) {
      var o = v[r];
      if (P.has_shared != 0u) { o += shared_out[t * P.D + d]; }
      out[t * P.D + d] = o;
    }
  }
}

// ------------------------------------------------------------------------------------------- grouped
const WGX: u32 = 8u;
const WGY: u32 = 8u;
const BM: u32 = 4u * WGY;
const BN: u32 = 4u * WGX;
const BK: u32 = 64u;
const BKV: u32 = BK / 4u;
const THREADS: u32 = WGX * WGY;
// 32 × 64 f32 each: 16 KiB together, WebGPU's default maxComputeWorkgroupStorageSize (gate and up take
// turns in ws_t).
var<workgroup> xs_t: array<vec4<f32>, BM * BKV>;
var<workgroup> ws_t: array<vec4<f32>, BN * BKV>;
// @include register_tile

// @include moe_tiles


// ws_t ← the K slice [k0, k0 + BK) of weight rows first + col0 .. + BN − 1 (rows past `rows` re-read the
// last, units past the row are zeros), from the rows at byte `base` of wq; L = the row length.
fn stage_w(base: u32, first: u32, col0: u32, rows: u32, k0: u32, L: u32, tid: u32) {
  let upr = BK / GG_UNIT;
  for (var q = tid; q < BN * upr; q += THREADS) {
    let c = q / upr;
    let uu = q % upr;
    let u = k0 / GG_UNIT + uu;
    let g = gg_unit(base + (first + min(col0 + c, rows - 1u)) * P.row_bytes, min(u, P.units - 1u), L);
    for (var i = 0u; i < GG_UV; i++) { ws_t[c * BKV + uu * GG_UV + i] = select(vec4<f32>(0.0), gg_w4(g, i), u < P.units); }
  }
}

fn tile_step(acc: ptr<function, array<vec4<f32>, 4>>, lid: vec3u) {
  for (var kk = 0u; kk < BKV; kk++) {
    tile_fma(acc, xs_t[lid.y * BKV + kk], xs_t[(lid.y + WGY) * BKV + kk], xs_t[(lid.y + 2u * WGY) * BKV + kk], xs_t[(lid.y + 3u * WGY) * BKV + kk],
             ws_t[lid.x * BKV + kk], ws_t[(lid.x + WGX) * BKV + kk], ws_t[(lid.x + 2u * WGX) * BKV + kk], ws_t[(lid.x + 3u * WGX) * BKV + kk]);
  }
}

@compute @workgroup_size(WGX, WGY)
fn grouped_gate_up(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let tl = find_tile(wid.x + wid.y * nwg.x);
  if (!tl.ok) { return; }
  var ag: array<vec4<f32>, 4>;
  var au: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < P.D; k0 += BK) {
    for (var q = tid; q < BM * BKV; q += THREADS) {
      let s = tl.row0 + q / BKV;
      let k = k0 + (q % BKV) * 4u;
      var v = vec4<f32>(0.0);
      if (s < tl.row1 && k < P.D) { v = x4((perm[s] / P.K) * P.D + k, k); }
      xs_t[q] = v;
    }
    stage_w(0u, tl.e * P.I, tl.col0, P.I, k0, P.D, tid);
    workgroupBarrier();
    tile_step(&ag, lid);
    workgroupBarrier();
    stage_w(P.up_base, tl.e * P.I, tl.col0, P.I, k0, P.D, tid);
    workgroupBarrier();
    tile_step(&au, lid);
    workgroupBarrier();
  }
  let c0 = tl.col0 + lid.x;
  for (var r = 0u; r < 4u; r++) {
    let s = tl.row0 + lid.y + r * WGY;
    if (s >= tl.row1) { continue; }
    let g = ag[r];
    let v = g / (vec4<f32>(1.0) + exp(-g)) * au[r];
    for (var j = 0u; j < 4u; j++) {
      let i = c0 + j * WGX;
      if (i < P.I) { h[s * P.I + i] = v[j]; }
    }
  }
}

@compute @workgroup_size(WGX, WGY)
fn grouped_down(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let tl = find_tile(wid.x + wid.y * nwg.x);
  if (!tl.ok) { return; }
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < P.I; k0 += BK) {
    for (var q = tid; q < BM * BKV; q += THREADS) {
      let s = tl.row0 + q / BKV;
      let k = k0 + (q % BKV) * 4u;
      var v = vec4<f32>(0.0);
      if (s < tl.row1 && k < P.I) { v = h4(s * P.I + k, k); }
      xs_t[q] = v;
    }
    stage_w(0u, tl.e * P.D, tl.col0, P.D, k0, P.I, tid);
    workgroupBarrier();
    tile_step(&acc, lid);
    workgroupBarrier();
  }
  let c0 = tl.col0 + lid.x;
  for (var r = 0u; r < 4u; r++) {
    let s = tl.row0 + lid.y + r * WGY;
    if (s >= tl.row1) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let d = c0 + j * WGX;
      if (d < P.D) { out[s * P.D + d] = acc[r][j]; }
    }
  }
}
