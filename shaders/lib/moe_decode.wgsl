// The decode passes of the routed experts for one token batch (moe_experts.wgsl, gguf_moe.wgsl): the
// workgroup-memory reduction and the four entry points, shared by every weight layout. The including
// shader declares `override WG` (a power of two), `ROWS`, and its layout's row math:
//   gate_up_partial(tj, i0, k0, step) -> GateUp   rows i0..i0+3 of expert ids[tj]'s gate and up, over
//                                                 reduction units k0, k0 + step, …
//   down_partial(t, d0, k0, step) -> vec4<f32>    rows d0..d0+3 of the down projection, summed over slots
//   store_h(tj, i0, g, u), store_out(t, d0, s)    the epilogues (SiLU(gate)·up; the output rows)
// `decode_*` reduce through workgroup memory (any device); `decode_*_subgroup` (devices with subgroups;
// the `subgroups` variant drops them elsewhere) run one subgroup per workgroup and reduce with
// subgroupAdd: no barriers, no workgroup memory.
var<workgroup> partial: array<vec4<f32>, 2u * WG>;

// Tree-reduces partial[0..WG) (and partial[WG..2WG) when two) into partial[0] (and partial[WG]).
fn reduce_partials(lid: u32, two: bool) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) {
      partial[lid] += partial[lid + s];
      if (two) { partial[WG + lid] += partial[WG + lid + s]; }
    }
    workgroupBarrier();
  }
}

struct GateUp { g: vec4<f32>, u: vec4<f32> }

@compute @workgroup_size(WG)
fn decode_gate_up(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups * P.T * P.K) { return; }
  let tj = g / P.groups;
  let i0 = (g % P.groups) * ROWS;
  let r = gate_up_partial(tj, i0, lid, WG);
  partial[lid] = r.g;
  partial[WG + lid] = r.u;
  reduce_partials(lid, true);
  if (lid == 0u) { store_h(tj, i0, partial[0], partial[WG]); }
}

@compute @workgroup_size(WG)
fn decode_down(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups * P.T) { return; }
  let t = g / P.groups;
  let d0 = (g % P.groups) * ROWS;
  partial[lid] = down_partial(t, d0, lid, WG);
  reduce_partials(lid, false);
  if (lid == 0u) { store_out(t, d0, partial[0]); }
}

// @variant subgroups on
@compute @workgroup_size(WG)
fn decode_gate_up_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups * P.T * P.K) { return; }
  let tj = g / P.groups;
  let i0 = (g % P.groups) * ROWS;
  let r = gate_up_partial(tj, i0, lid, WG);
  let gs = subgroupAdd(r.g);
  let us = subgroupAdd(r.u);
  if (lid == 0u) { store_h(tj, i0, gs, us); }
}

@compute @workgroup_size(WG)
fn decode_down_subgroup(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.groups * P.T) { return; }
  let t = g / P.groups;
  let d0 = (g % P.groups) * ROWS;
  let s = subgroupAdd(down_partial(t, d0, lid, WG));
  if (lid == 0u) { store_out(t, d0, s); }
}
// @variant subgroups off
// @end subgroups
