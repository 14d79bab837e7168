// Rotary position embedding, in place, on the rope slice of each head: pairs rotated by pos·inv_freq[i],
// pos = pos0 + pos_add[0] + row. `// @variant style`: pairs = adjacent (2i, 2i+1) (DeepSeek-V3 / HF
// rope_interleave); halves = (i, i + half) (NeoX / GPT-OSS _apply_rotary_emb on torch.chunk halves).
// One invocation per (row, head, pair). The angle is the float32 product, as torch computes it.
//
// binding 0: params { rows, heads, row_stride, head_stride, offset, half (= rope_dim/2), pos0, n }   (elements)
// binding 1: x [rows, row_stride] f32 (rw)      rope slice of head h of row r at r·row_stride + h·head_stride + offset
// binding 2: inv_freq [half] f32
// binding 3: pos_add [1] u32                    position added to pos0 (a GPU-side decode position; 0 otherwise)
struct Params { rows: u32, heads: u32, row_stride: u32, head_stride: u32, offset: u32, half: u32, pos0: u32, n: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read> pos_add: array<u32>;

override WG: u32 = 64u;

// GPU sin/cos are only specified to 2^-11 absolute error inside [-π, π] (and not at all outside), far
// from the 1e-4 logits the reference needs at positions in the thousands. So the angle is reduced by
// π/2 in three parts (Cody–Waite) and sin/cos evaluated by polynomials on [-π/4, π/4] (error < 1e-7).
const PIO2_1: f32 = 1.5703125;             // π/2 split into parts exact in f32
const PIO2_2: f32 = 4.83751296997070e-4;
const PIO2_3: f32 = 7.54978995489e-8;
fn sincos(a: f32) -> vec2<f32> {
  let k = round(a * 0.636619772367581);
  let r = ((a - k * PIO2_1) - k * PIO2_2) - k * PIO2_3;
  let r2 = r * r;
  let s = r + r * r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362880.0))));
  let c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40320.0))));
  let q = i32(k) & 3;
  if (q == 0) { return vec2<f32>(s, c); }
  if (q == 1) { return vec2<f32>(c, -s); }
  if (q == 2) { return vec2<f32>(-s, -c); }
  return vec2<f32>(-c, s);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= P.n) { return; }
  let i = idx % P.half;
  let rh = idx / P.half;
  let h = rh % P.heads;
  let r = rh / P.heads;
  let pos = P.pos0 + pos_add[0] + r;
  let ang = f32(pos) * inv_freq[i];
  let sc = sincos(ang);
  let s = sc.x;
  let c = sc.y;
  let base = r * P.row_stride + h * P.head_stride + P.offset;
  // @variant style pairs
  let ia = base + 2u * i;
  let ib = ia + 1u;
  // @variant style halves
  let ia = base + i;
  let ib = ia + P.half;
  // @end style
  let u = x[ia];
  let v = x[ib];
  x[ia] = u * c - v * s;
  x[ib] = u * s + v * c;
}
