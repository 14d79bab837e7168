// Decoders of packed weight words to f32 (layouts: src/kernels/weight.ref.ts), shared by linear.wgsl
// and moe_experts.wgsl. Accumulation stays f32; no shader-f16 needed (unpack2x16float, bf16 shifts).

// Signed bytes of v: each moved to the top of an i32 by a constant shift, then arithmetic-shifted down
// (no per-lane variable shifts, which some compilers scalarise).
fn i8x4(v: u32) -> vec4<f32> {
  return vec4<f32>(vec4<i32>(bitcast<i32>(v << 24u), bitcast<i32>(v << 16u), bitcast<i32>(v << 8u), bitcast<i32>(v)) >> vec4<u32>(24u));
}
// Nibbles 0..3 of the low 16 bits of v, minus 8 (q4 stores int4 + 8): masked in place and scaled down
// (exact in f32; constant masks, signed int → float conversion).
const NIB_MASK = vec4<u32>(0xfu, 0xf0u, 0xf00u, 0xf000u);
const NIB_SCALE = vec4<f32>(1.0, 0.0625, 0.00390625, 0.000244140625);
fn q4x4(v: u32) -> vec4<f32> { return vec4<f32>(vec4<i32>(vec4<u32>(v) & NIB_MASK)) * NIB_SCALE - 8.0; }
// Four e4m3fn bytes (fp8, byte 0 first).
fn fp8x4(v: u32) -> vec4<f32> {
  let b = (vec4<u32>(v) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
  let e = (b >> vec4<u32>(3u)) & vec4<u32>(15u);
  let m = b & vec4<u32>(7u);
  // normal: 2^(e−7)·(1 + m/8) = the f32 with exponent e + 120 and mantissa m << 20; subnormal: m·2^−9
  let normal = bitcast<vec4<f32>>(((b & vec4<u32>(0x7fu)) << vec4<u32>(20u)) + vec4<u32>(120u << 23u));
  let mag = select(normal, vec4<f32>(m) * 0.001953125, e == vec4<u32>(0u));
  return select(mag, -mag, (b & vec4<u32>(0x80u)) != vec4<u32>(0u));
}
// Four binary16 values packed two per word.
fn f16x4(v: vec2<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)); }
// Four bfloat16 values packed two per word (element 2j in the low half): a bfloat16 is the top half of
// an f32, so decoding is a shift (exact, no shader-f16 needed).
fn bf16x4(v: vec2<u32>) -> vec4<f32> {
  return bitcast<vec4<f32>>(vec4<u32>(v.x << 16u, v.x & 0xffff0000u, v.y << 16u, v.y & 0xffff0000u));
}
// Binary16 number i of an array stored two per u32, given its word (i >> 1): the f16 group scales.
fn f16_at(word: u32, i: u32) -> f32 {
  let pair = unpack2x16float(word);
  return select(pair.x, pair.y, (i & 1u) == 1u);
}
// Nibbles 0..3 of the low 16 bits of v as OCP FP4 E2M1 (MXFP4 elements; bit 3 = sign). The magnitude
// codes c = 0..7 stand for 0, 0.5, 1, 1.5, 2, 3, 4, 6: with h = c/2 (masked in place and scaled down, as
// q4x4) that is h + max(h − 2, 0) + 2·max(h − 3, 0); the sign bit, masked in place and scaled to 0 or 1,
// gives the factor 1 − 2·s (−0 stays −0). Only constant masks and float arithmetic: per-lane shift
// vectors (vec4 shift amounts that differ by lane) measured several times slower on SwiftShader. Exact.
const FP4_MAG_MASK = vec4<u32>(0x7u, 0x70u, 0x700u, 0x7000u);
const FP4_SIGN_MASK = vec4<u32>(0x8u, 0x80u, 0x800u, 0x8000u);
const FP4_HALF_SCALE = vec4<f32>(0.5, 0.03125, 0.001953125, 0.0001220703125);   // c → c/2 per nibble position
const FP4_SIGN_SCALE = vec4<f32>(0.25, 0.015625, 0.0009765625, 0.00006103515625); // sign bit → 2·s
fn fp4x4(v: u32) -> vec4<f32> {
  let vv = vec4<u32>(v);
  let h = vec4<f32>(vv & FP4_MAG_MASK) * FP4_HALF_SCALE;
  let mag = h + max(h - vec4<f32>(2.0), vec4<f32>(0.0)) + 2.0 * max(h - vec4<f32>(3.0), vec4<f32>(0.0));
  return mag * (vec4<f32>(1.0) - vec4<f32>(vv & FP4_SIGN_MASK) * FP4_SIGN_SCALE);
}
// E8M0 scale byte b (the low 8 bits) → 2^(b − 127): the f32 with exponent field b (b = 0: 2^-127, a
// subnormal that devices may flush to 0; such blocks are below 6·2^-127 anyway).
fn e8m0(b: u32) -> f32 { return select(bitcast<f32>((b & 0xffu) << 23u), bitcast<f32>(0x00400000u), (b & 0xffu) == 0u); }
// Byte i of an array of u32 words (E8M0 scales stored 4 per word, byte i % 4 of word i / 4).
fn byte_at(word: u32, i: u32) -> u32 { return (word >> ((i & 3u) * 8u)) & 0xffu; }
