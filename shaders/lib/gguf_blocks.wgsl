// GGUF (ggml) weight blocks decoded from their raw bytes (layouts: docs/gguf.md, CPU twin:
// src/formats/gguf-blocks.ts). The including shader declares `wq: array<u32>` holding the tensor's
// bytes as uploaded (little-endian, padded to whole words plus 16 spare bytes). No shader-f16: halves
// are unpacked with unpack2x16float, accumulation stays f32.
//
// A row is read in units of GG_UNIT weights (a Q8_0/Q4_0 block of 32; two 32-weight sub-blocks of
// Q4_K/Q5_K that share their code bytes, 64; two 16-weight sub-blocks of Q6_K, 32; 4 for F32/F16/BF16,
// masked past K).
// gg_unit(row_base, u, K) reads what unit u of the row at byte row_base shares (offsets, scales);
// gg_w4(unit, i) decodes its weights 4i..4i+3 (i < GG_UV): no per-unit arrays, so the weights stay in
// registers and each is used once per x row. Block sizes are even but not all multiples of 4 (Q8_0
// 34, Q4_0 18, Q6_K 210 bytes): their fields are read through gg_u32 / gg_u16 at any even offset.
// @variant gtype f32 f16 bf16
const GG_UNIT: u32 = 4u;
// @variant gtype q8_0 q4_0 q6_k
const GG_UNIT: u32 = 32u;
// @variant gtype q4_k q5_k
const GG_UNIT: u32 = 64u;   // two sub-blocks sharing their code bytes (low / high nibbles): each word loaded once
// @end gtype
const GG_UV: u32 = GG_UNIT / 4u;
// What a unit's weights share; the fields mean what each type's gg_unit says.
struct GgUnit { o1: u32, o2: u32, sh: u32, k: u32, a: f32, b: f32, c: f32, d: f32 }

// The 4 bytes at even byte offset `off` (two words when it is not word-aligned). Branch-free: both
// forms are computed and selected (neighbouring invocations read blocks of different alignment).
fn gg_u32(off: u32) -> u32 {
  let i = off >> 2u;
  let w0 = wq[i];
  return select(w0, (w0 >> 16u) | (wq[i + 1u] << 16u), (off & 2u) != 0u);
}
// The 2 bytes at even byte offset `off`.
fn gg_u16(off: u32) -> u32 { return (wq[off >> 2u] >> ((off & 2u) * 8u)) & 0xffffu; }
fn gg_half(off: u32) -> f32 { return unpack2x16float(gg_u16(off)).x; }
// Signed bytes of a word (byte 0 first).
fn gg_i8x4(v: u32) -> vec4<f32> {
  return vec4<f32>(vec4<i32>(bitcast<i32>(v << 24u), bitcast<i32>(v << 16u), bitcast<i32>(v << 8u), bitcast<i32>(v)) >> vec4<u32>(24u));
}
// Bit fields `shift + 8·b` (width `mask`) of the four bytes b of v: one scalar shift, then constant
// per-lane shifts (variable per-lane shifts get scalarised by some compilers).
fn gg_fields(v: u32, shift: u32, mask: u32) -> vec4<f32> {
  return vec4<f32>((vec4<u32>(v >> shift) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(mask));
}

// @variant gtype f32
// o1 = byte offset of weight 4u, k = 4u, o2 = K (weights past it are zero)
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit { return GgUnit(row_base + 16u * u, K, 0u, 4u * u, 0.0, 0.0, 0.0, 0.0); }
fn gg_live(g: GgUnit) -> vec4<bool> { return vec4<u32>(g.k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(g.o2); }
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> {
  let v = vec4<f32>(bitcast<f32>(gg_u32(g.o1)), bitcast<f32>(gg_u32(g.o1 + 4u)), bitcast<f32>(gg_u32(g.o1 + 8u)), bitcast<f32>(gg_u32(g.o1 + 12u)));
  return select(vec4<f32>(0.0), v, gg_live(g));
}
// @variant gtype f16
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit { return GgUnit(row_base + 8u * u, K, 0u, 4u * u, 0.0, 0.0, 0.0, 0.0); }
fn gg_live(g: GgUnit) -> vec4<bool> { return vec4<u32>(g.k) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(g.o2); }
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> {
  let v = vec4<f32>(unpack2x16float(gg_u32(g.o1)), unpack2x16float(gg_u32(g.o1 + 4u)));
  return select(vec4<f32>(0.0), v, gg_live(g));
}
// @variant gtype bf16
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit { return GgUnit(row_base + 8u * u, K, 0u, 4u * u, 0.0, 0.0, 0.0, 0.0); }
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
  return GgUnit(off + 2u, 0u, 0u, 0u, gg_half(off), 0.0, 0.0, 0.0);
}
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> { return gg_i8x4(gg_u32(g.o1 + 4u * i)) * g.a; }
// @variant gtype q4_0
// block u: half d, u8 qs[16]: weight i = low nibble of qs[i] − 8, weight 16 + i = its high nibble − 8
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit {
  let off = row_base + 18u * u;
  return GgUnit(off + 2u, 0u, 0u, 0u, gg_half(off), 0.0, 0.0, 0.0);
}
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> { return (gg_fields(gg_u32(g.o1 + 4u * (i & 3u)), 4u * (i >> 2u), 15u) - 8.0) * g.a; }
// @variant gtype q4_k q5_k
// Unit c = u % 4 of block u / 4 is weights 64c..64c+63: sub-blocks j = 2c (low nibbles of
// qs[32c + l]) and 2c + 1 (their high nibbles); w = d·sc_j·q − dmin·m_j with the 6-bit sc_j / m_j of
// the 12 scale bytes at +4 (get_scale_min_k4); Q5_K adds 16 × bit j of qh[l]. Blocks of 144 / 176
// bytes keep every field word-aligned.
// o1 = word of the codes, o2 = word of qh (Q5_K), k = 2c, (a, b) = (d·sc, dmin·m) of sub-block 2c,
// (c, d) of 2c + 1.
fn gg_scale_byte(s: vec3<u32>, k: u32) -> u32 { return (s[k >> 2u] >> ((k & 3u) * 8u)) & 0xffu; }
fn gg_k4_scale(s: vec3<u32>, j: u32) -> vec2<f32> {
  if (j < 4u) { return vec2<f32>(f32(gg_scale_byte(s, j) & 63u), f32(gg_scale_byte(s, j + 4u) & 63u)); }
  return vec2<f32>(f32((gg_scale_byte(s, j + 4u) & 15u) | ((gg_scale_byte(s, j - 4u) >> 6u) << 4u)),
                   f32((gg_scale_byte(s, j + 4u) >> 4u) | ((gg_scale_byte(s, j) >> 6u) << 4u)));
}
fn gg_k4_unit(w0: u32, c: u32, qs: u32) -> GgUnit {
  let dm = unpack2x16float(wq[w0]);
  let s = vec3<u32>(wq[w0 + 1u], wq[w0 + 2u], wq[w0 + 3u]);
  let lo = gg_k4_scale(s, 2u * c) * dm;
  let hi = gg_k4_scale(s, 2u * c + 1u) * dm;
  return GgUnit(w0 + qs + 8u * c, w0 + 4u, 0u, 2u * c, lo.x, lo.y, hi.x, hi.y);
}
// @end gtype
// @variant gtype q4_k
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit { return gg_k4_unit((row_base + 144u * (u >> 2u)) >> 2u, u & 3u, 4u); }
// Branch-free (select): i < 8 is the low-nibble sub-block.
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> {
  let lo = i < 8u;
  return select(g.c, g.a, lo) * gg_fields(wq[g.o1 + (i & 7u)], select(4u, 0u, lo), 15u) - select(g.d, g.b, lo);
}
// @variant gtype q5_k
fn gg_unit(row_base: u32, u: u32, K: u32) -> GgUnit { return gg_k4_unit((row_base + 176u * (u >> 2u)) >> 2u, u & 3u, 12u); }
// The 5-bit codes assembled byte-wise in one word, then unpacked once (as Q6_K).
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> {
  let lo = i < 8u;
  let q = ((wq[g.o1 + (i & 7u)] >> select(4u, 0u, lo)) & 0x0f0f0f0fu) | (((wq[g.o2 + (i & 7u)] >> (g.k + select(1u, 0u, lo))) & 0x01010101u) << 4u);
  return select(g.c, g.a, lo) * gg_fields(q, 0u, 31u) - select(g.d, g.b, lo);
}
// @end gtype
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
                d * f32(bitcast<i32>(sc << 24u) >> 24u), d * f32(bitcast<i32>(sc << 16u) >> 24u), 0.0, 0.0);
}
// The four 6-bit codes are assembled byte-wise in one word (nibbles | 2 high bits << 4) with scalar ops,
// then unpacked to floats once: half the vector work of unpacking nibbles and high bits separately
// (docs/gguf.md, "Q6_K decode").
fn gg_w4(g: GgUnit, i: u32) -> vec4<f32> {
  let lo = (gg_u32(g.o1 + 4u * i) >> g.sh) & 0x0f0f0f0fu;
  let hi = ((gg_u32(g.o2 + 4u * i) >> g.k) & 0x03030303u) << 4u;
  return (gg_fields(lo | hi, 0u, 63u) - 32.0) * select(g.b, g.a, i < 4u);
}
// @end gtype
