// GGUF (ggml) weight blocks decoded from their raw bytes (layouts: docs/gguf.md, CPU twin:
// src/formats/gguf-blocks.ts). The including shader declares `wq: array<u32>` holding the tensor's
// bytes as uploaded (little-endian, padded to whole words plus 16 spare bytes). No shader-f16: halves
// are unpacked with unpack2x16float, accumulation stays f32.
//
// A row is read in units of GG_UNIT weights (32 for the block types: a Q8_0/Q4_0 block, a 32-weight
// sub-block of Q4_K/Q5_K, two 16-weight sub-blocks of Q6_K; 4 for F32/F16/BF16, masked past K).
// gg_unit(row_base, u, K) reads what unit u of the row at byte row_base shares (offsets, scales);
// gg_w4(unit, i) decodes its weights 4i..4i+3 (i < GG_UV): no per-unit arrays, so the weights stay in
// registers and each is used once per x row. Block sizes are even but not all multiples of 4 (Q8_0
// 34, Q4_0 18, Q6_K 210 bytes): their fields are read through gg_u32 / gg_u16 at any even offset.
// @variant gtype f32 f16 bf16
const GG_UNIT: u32 = 4u;
// @variant gtype q8_0 q4_0 q4_k q5_k q6_k
const GG_UNIT: u32 = 32u;
// @end gtype
const GG_UV: u32 = GG_UNIT / 4u;
// What a unit's weights share; the fields mean what each type's gg_unit says.
struct GgUnit { o1: u32, o2: u32, sh: u32, k: u32, a: f32, b: f32 }

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
// o1 = byte offset of weight 4u, k = 4u, o2 = K (weights past it are zero)
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit { return GgUnit(row_base + 16u * u, K, 0u, 4u * u, 0.0, 0.0); }
fn gg_live(g: GgUnit) -> vec4<bool> { return vec4<u32>(g.k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(g.o2); }
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> {
  let v = vec4<f32>(bitcast<f32>(gg_u32(g.o1)), bitcast<f32>(gg_u32(g.o1 + 4u)), bitcast<f32>(gg_u32(g.o1 + 8u)), bitcast<f32>(gg_u32(g.o1 + 12u)));
  return select(vec4<f32>(0.0), v, gg_live(g));
}
// @variant gtype f16
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit { return GgUnit(row_base + 8u * u, K, 0u, 4u * u, 0.0, 0.0); }
fn gg_live(g: GgUnit) -> vec4<bool> { return vec4<u32>(g.k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(g.o2); }
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> {
  let v = vec4<f32>(unpack2x16float(gg_u32(g.o1)), unpack2x16float(gg_u32(g.o1 + 4u)));
  return select(vec4<f32>(0.0), v, gg_live(g));
}
// @variant gtype bf16
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit { return GgUnit(row_base + 8u * u, K, 0u, 4u * u, 0.0, 0.0); }
fn gg_live(g: GgUnit) -> vec4<bool> { return vec4<u32>(g.k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(g.o2); }
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> {
  let a = gg_u32(g.o1);
  let b = gg_u32(g.o1 + 4u);
  let v = bitcast<vec4<f32>>(vec4<u32>(a << 16u, a & 0xffff0000u, b << 16u, b & 0xffff0000u));
  return select(vec4<f32>(0.0), v, gg_live(g));
}
// @variant gtype q8_0
// block u: half d, int8 qs[32] (o1 = byte offset of qs, a = d)
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit {
  let off = row_base + 34u * u;
  return GgUnit(off + 2u, 0u, 0u, 0u, gg_half(off), 0.0);
}
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> { return gg_i8x4(gg_u32(g.o1 + 4u * i)) * g.a; }
// @variant gtype q4_0
// block u: half d, u8 qs[16]: weight i = low nibble of qs[i] − 8, weight 16 + i = its high nibble − 8
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit {
  let off = row_base + 18u * u;
  return GgUnit(off + 2u, 0u, 0u, 0u, gg_half(off), 0.0);
}
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> { return (gg_fields(gg_u32(g.o1 + 4u * (i & 3u)), 4u * (i >> 2u), 15u) - 8.0) * g.a; }
// @variant gtype q4_k q5_k
// Sub-block j = u % 8 of block u / 8: w = d·sc_j·q − dmin·m_j, 6-bit sc_j / m_j from the 12 scale
// bytes at +4 (get_scale_min_k4); codes: nibble (low for even j, high for odd j) of qs[32·(j/2) + l],
// plus 16 × bit j of qh[l] for Q5_K. Blocks of 144 / 176 bytes keep every field word-aligned.
// o1 = word of the codes, o2 = word of qh (Q5_K), sh = nibble shift, k = j, a = d·sc_j, b = dmin·m_j.
fn gg_scale_byte(s: vec3<u32>, k: u32) -> u32 { return (s[k >> 2u] >> ((k & 3u) * 8u)) & 0xffu; }
fn gg_k4_unit(w0: u32, j: u32, qs: u32) -> GgUnit {
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
  return GgUnit(w0 + qs + 8u * (j >> 1u), w0 + 4u, 4u * (j & 1u), j, dm.x * f32(sc), dm.y * f32(mn));
}
// @end gtype
// @variant gtype q4_k
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit { return gg_k4_unit((row_base + 144u * (u >> 3u)) >> 2u, u & 7u, 4u); }
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> { return g.a * gg_fields(wq[g.o1 + i], g.sh, 15u) - g.b; }
// @variant gtype q5_k
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit { return gg_k4_unit((row_base + 176u * (u >> 3u)) >> 2u, u & 7u, 12u); }
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> {
  return g.a * (gg_fields(wq[g.o1 + i], g.sh, 15u) + gg_fields(wq[g.o2 + i], g.k, 1u) * 16.0) - g.b;
}
// @variant gtype q6_k
// Unit t = u % 8 of block u / 8 is weights 32t..32t+31: half h = t / 4, quarter k = t % 4. Codes: the
// nibble (low for k < 2, high otherwise) of ql[64h + 32·(k & 1) + l], top 2 bits at 2k of qh[32h + l],
// minus 32; weight 32t + l has int8 scale scales[8h + 2k + l / 16]; w = d·scale·q.
// o1 = byte offset of the ql run, o2 = of the qh run, sh = nibble shift, k = 2k (qh shift),
// a / b = d·scale of weights 0..15 / 16..31.
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit {
  let t = u & 7u;
  let h = t >> 2u;
  let k = t & 3u;
  let off = row_base + 210u * (u >> 3u);
  let d = gg_half(off + 208u);
  let sc = gg_u16(off + 192u + 8u * h + 2u * k);
  return GgUnit(off + 64u * h + 32u * (k & 1u), off + 128u + 32u * h, 4u * (k >> 1u), 2u * k,
                d * f32(bitcast<i32>(sc << 24u) >> 24u), d * f32(bitcast<i32>(sc << 16u) >> 24u));
}
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> {
  let q = gg_fields(gg_u32(g.o1 + 4u * i), g.sh, 15u) + gg_fields(gg_u32(g.o2 + 4u * i), g.k, 3u) * 16.0 - 32.0;
  return q * select(g.b, g.a, i < 4u);
}
// @end gtype
