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
