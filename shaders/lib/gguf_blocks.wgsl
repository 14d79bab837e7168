// GGUF (ggml) weight blocks decoded from their raw bytes (layouts: docs/gguf.md, CPU twin:
// src/formats/gguf-blocks.ts). The including shader declares `wq: array<u32>` holding the tensor's
// bytes as uploaded (little-endian, padded to whole words plus one spare word). No shader-f16: halves
// are unpacked with unpack2x16float, accumulation stays f32.
//
// A row is read in units of GG_UNIT weights (32 for the block types: a Q8_0/Q4_0 block, a 32-weight
// sub-block of Q4_K/Q5_K, two 16-weight sub-blocks of Q6_K; 4 for F32/F16/BF16, masked past K).
// gg_decode(row_base, u, K) writes unit u of the row starting at byte row_base into gw[0..GG_UV).
// Block sizes are even but not all multiples of 4 (Q8_0 34, Q4_0 18, Q6_K 210 bytes): fields are
// read through gg_u32 / gg_u16 at any even byte offset.
// @variant gtype f32 f16 bf16
const GG_UNIT: u32 = 4u;
// @variant gtype q8_0 q4_0 q4_k q5_k q6_k
const GG_UNIT: u32 = 32u;
// @end gtype
const GG_UV: u32 = GG_UNIT / 4u;
var<private> gw: array<vec4<f32>, GG_UV>;

// The 4 bytes at even byte offset `off` (two words when it is not word-aligned).
fn gg_u32(off: u32) -> u32 {
  let i = off >> 2u;
  if ((off & 2u) == 0u) { return wq[i]; }
  return (wq[i] >> 16u) | (wq[i + 1u] << 16u);
}
// The 2 bytes at even byte offset `off`.
fn gg_u16(off: u32) -> u32 { return (wq[off >> 2u] >> ((off & 2u) * 8u)) & 0xffffu; }
fn gg_half(off: u32) -> f32 { return unpack2x16float(gg_u16(off)).x; }
// Signed bytes of a word (byte 0 first).
fn gg_i8x4(v: u32) -> vec4<f32> {
  return vec4<f32>(vec4<i32>(bitcast<i32>(v << 24u), bitcast<i32>(v << 16u), bitcast<i32>(v << 8u), bitcast<i32>(v)) >> vec4<u32>(24u));
}
// Bit fields `shift + 8·b` (width `mask`) of the four bytes b of v.
fn gg_fields(v: u32, shift: u32, mask: u32) -> vec4<f32> {
  return vec4<f32>((vec4<u32>(v) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(mask));
}

// @variant gtype f32
fn gg_decode(row_base: u32, u: u32, K: u32) {
  let k = 4u * u;
  let v = vec4<f32>(bitcast<f32>(gg_u32(row_base + 4u * k)), bitcast<f32>(gg_u32(row_base + 4u * k + 4u)),
                    bitcast<f32>(gg_u32(row_base + 4u * k + 8u)), bitcast<f32>(gg_u32(row_base + 4u * k + 12u)));
  gw[0] = select(vec4<f32>(0.0), v, vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(K));
}
// @variant gtype f16
fn gg_decode(row_base: u32, u: u32, K: u32) {
  let k = 4u * u;
  let v = vec4<f32>(unpack2x16float(gg_u32(row_base + 2u * k)), unpack2x16float(gg_u32(row_base + 2u * k + 4u)));
  gw[0] = select(vec4<f32>(0.0), v, vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(K));
}
// @variant gtype bf16
fn gg_decode(row_base: u32, u: u32, K: u32) {
  let k = 4u * u;
  let a = gg_u32(row_base + 2u * k);
  let b = gg_u32(row_base + 2u * k + 4u);
  let v = bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xffff0000u, b << 16u, b & 0xffff0000u));
  gw[0] = select(vec4<f32>(0.0), v, vec4<u32>(k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(K));
}
// @variant gtype q8_0
// block u: half d at byte 34u, int8 qs[32] after it
fn gg_decode(row_base: u32, u: u32, K: u32) {
  let off = row_base + 34u * u;
  let d = gg_half(off);
  for (var i = 0u; i < 8u; i++) { gw[i] = gg_i8x4(gg_u32(off + 2u + 4u * i)) * d; }
}
// @variant gtype q4_0
// block u: half d, u8 qs[16]: weight i = low nibble of qs[i] − 8, weight 16 + i = its high nibble − 8
fn gg_decode(row_base: u32, u: u32, K: u32) {
  let off = row_base + 18u * u;
  let d = gg_half(off);
  for (var i = 0u; i < 4u; i++) {
    let v = gg_u32(off + 2u + 4u * i);
    gw[i] = (gg_fields(v, 0u, 15u) - 8.0) * d;
    gw[4u + i] = (gg_fields(v, 4u, 15u) - 8.0) * d;
  }
}
// @variant gtype q4_k q5_k
// Sub-block j = u % 8 of block u / 8: w = d·sc_j·q − dmin·m_j, 6-bit sc_j / m_j from the 12 scale
// bytes at +4 (get_scale_min_k4); codes: nibble (low for even j, high for odd j) of qs[32·(j/2) + l],
// plus 16 × bit j of qh[l] for Q5_K. Blocks of 144 / 176 bytes keep every field word-aligned.
fn gg_scale_byte(s: vec3<u32>, k: u32) -> u32 { return (s[k >> 2u] >> ((k & 3u) * 8u)) & 0xffu; }
// (d·sc_j, dmin·m_j) of sub-block j of the block at word w0.
fn gg_k4_scales(w0: u32, j: u32) -> vec2<f32> {
  let dm = unpack2x16float(wq[w0]);
  let s = vec3<u32>(wq[w0 + 1u], wq[w0 + 2u], wq[w0 + 3u]);
  var sc: u32;
  var mn: u32;
  if (j < 4u) {
    sc = gg_scale_byte(s, j) & 63u;
    mn = gg_scale_byte(s, j + 4u) & 63u;
  } else {
    sc = (gg_scale_byte(s, j + 4u) & 15u) | ((gg_scale_byte(s, j - 4u) >> 6u) << 4u);
    mn = (gg_scale_byte(s, j + 4u) >> 4u) | ((gg_scale_byte(s, j) >> 6u) << 4u);
  }
  return vec2<f32>(dm.x * f32(sc), dm.y * f32(mn));
}
// @end gtype
// @variant gtype q4_k
fn gg_decode(row_base: u32, u: u32, K: u32) {
  let j = u & 7u;
  let w0 = (row_base + 144u * (u >> 3u)) >> 2u;
  let sm = gg_k4_scales(w0, j);
  let q0 = w0 + 4u + 8u * (j >> 1u);
  for (var i = 0u; i < 8u; i++) { gw[i] = sm.x * gg_fields(wq[q0 + i], 4u * (j & 1u), 15u) - sm.y; }
}
// @variant gtype q5_k
fn gg_decode(row_base: u32, u: u32, K: u32) {
  let j = u & 7u;
  let w0 = (row_base + 176u * (u >> 3u)) >> 2u;
  let sm = gg_k4_scales(w0, j);
  let q0 = w0 + 12u + 8u * (j >> 1u);
  for (var i = 0u; i < 8u; i++) {
    let q = gg_fields(wq[q0 + i], 4u * (j & 1u), 15u) + gg_fields(wq[w0 + 4u + i], j, 1u) * 16.0;
    gw[i] = sm.x * q - sm.y;
  }
}
// @end gtype
// @variant gtype q6_k
// Unit t = u % 8 of block u / 8 is weights 32t..32t+31: half h = t / 4, quarter k = t % 4. Codes: the
// nibble (low for k < 2, high otherwise) of ql[64h + 32·(k & 1) + l], top 2 bits at 2k of qh[32h + l],
// minus 32; weight 32t + l has int8 scale scales[8h + 2k + l / 16]; w = d·scale·q.
fn gg_decode(row_base: u32, u: u32, K: u32) {
  let t = u & 7u;
  let h = t >> 2u;
  let k = t & 3u;
  let off = row_base + 210u * (u >> 3u);
  let d = gg_half(off + 208u);
  let sc = gg_u16(off + 192u + 8u * h + 2u * k);
  let s0 = d * f32(bitcast<i32>(sc << 24u) >> 24u);
  let s1 = d * f32(bitcast<i32>(sc << 16u) >> 24u);
  let ql = off + 64u * h + 32u * (k & 1u);
  let qh = off + 128u + 32u * h;
  for (var i = 0u; i < 8u; i++) {
    let q = gg_fields(gg_u32(ql + 4u * i), 4u * (k >> 1u), 15u) + gg_fields(gg_u32(qh + 4u * i), 2u * k, 3u) * 16.0 - 32.0;
    gw[i] = q * select(s1, s0, i < 4u);
  }
}
// @end gtype
