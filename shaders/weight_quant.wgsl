// Quantises a weight matrix on the GPU into the q8 / q4 layouts of src/kernels/weight-pack.ts (groups of
// 32 along a row, one f16 scale per group, two scales per u32 word), reading the checkpoint's own element
// format (@variant src: bf16 or f16 pairs per u32 word, or f32). The loader then uploads the checkpoint's
// 2 bytes per weight as they arrived, and neither widens nor quantises on the host.
//
// The result is the host packer's (packWeight) wherever that one is exact:
//   scale  s = f16(fround(amax / Q)): both roundings to nearest even, done on integers (WGSL's f32
//          division is not correctly rounded, so a/Q in f32 could land one ulp off and change s);
//   code   q = clamp(floor(x / s + 1/2), -Q, Q): an f32 estimate corrected with exact comparisons
//          ((k ± 1/2)·s is exact in f32: s has 11 significant bits, |k| ≤ 128 needs 9 more).
// The host computes floor(x · (1/s) + 1/2) in double precision, which can fall just below an exact tie
// x = (k + 1/2)·s when 1/s rounds down; there (and only there) the two codes differ by one step.
// amax is taken on the bit patterns (|x| as u32 is ordered like |x|), so subnormals, which GPUs may
// flush to zero in float arithmetic, still give the exact maximum.
//
// One invocation per pair of consecutive groups in the [rows, G] scale order: it writes one whole scale
// word and whole data words, so no two invocations share a word.
//
// binding 0: params  1: src [rows·k] elements as u32 words  2: dst words [rows, row_words] from dst_offset
//            3: scales (u32 words, two f16 each) from scale_offset
struct Params { rows: u32, k: u32, groups: u32, row_words: u32, dst_offset: u32, scale_offset: u32, pairs: u32, _p: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<storage, read_write> scales: array<u32>;

const GS: u32 = 32u;
// @variant dst q8
const QMAX: i32 = 127;
const BITS: u32 = 8u;
fn field(q: i32) -> u32 { return u32(q) & 0xffu; }
// @variant dst q4
const QMAX: i32 = 7;
const BITS: u32 = 4u;
fn field(q: i32) -> u32 { return u32(q + 8); }
// @end dst
const PER_WORD: u32 = 32u / BITS;
const GROUP_WORDS: u32 = GS / PER_WORD;

// The f32 bit patterns of element i, and of the pair 2j, 2j + 1 (row-major over [rows, k]).
// @variant src bf16
fn elem_bits(i: u32) -> u32 { let w = src[i >> 1u]; return select(w << 16u, w & 0xffff0000u, (i & 1u) == 1u); }
fn elem_pair(j: u32) -> vec2u { let w = src[j]; return vec2u(w << 16u, w & 0xffff0000u); }
// @variant src f16
fn elem_bits(i: u32) -> u32 { let w = src[i >> 1u]; return f16_to_f32_bits(select(w & 0xffffu, w >> 16u, (i & 1u) == 1u)); }
fn elem_pair(j: u32) -> vec2u { let w = src[j]; return vec2u(f16_to_f32_bits(w & 0xffffu), f16_to_f32_bits(w >> 16u)); }
// @variant src f32
fn elem_bits(i: u32) -> u32 { return src[i]; }
fn elem_pair(j: u32) -> vec2u { return vec2u(src[2u * j], src[2u * j + 1u]); }
// @end src

// Exact f16 → f32 bits (unpack2x16float would do, but a GPU may flush the f16 subnormals it produces).
fn f16_to_f32_bits(h: u32) -> u32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0x1fu) { return sign | 0x7f800000u | (m << 13u); }
  if (e != 0u) { return sign | ((e + 112u) << 23u) | (m << 13u); }
  if (m == 0u) { return sign; }
  // subnormal half: m · 2^-24, normalised
  let lead = 31u - countLeadingZeros(m);           // 0..9
  return sign | ((lead + 103u) << 23u) | (((m << (23u - lead)) & 0x7fffffu));
}

// The f32 value of f16 bits (s ≥ 0), exactly.
fn f16_value(h: u32) -> f32 { return bitcast<f32>(f16_to_f32_bits(h)); }

// f16 bits of f32ToF16(Math.fround(a / QMAX)) for the bits of a finite a ≥ 0 (util/half.ts, the host's
// conversion): a/QMAX rounded to f32 (nearest, ties to even), then to f16 (nearest, ties to even).
fn scale_f16_bits(a_bits: u32) -> u32 {
  if (a_bits == 0u) { return 0u; }
  if (a_bits >= 0x7f800000u) { return 0x7c00u; }
  let e = i32(a_bits >> 23u);
  var m = a_bits & 0x7fffffu;
  var ex: i32;                                     // a = m · 2^ex, m in [2^23, 2^24)
  if (e == 0) {
    let lead = 31u - countLeadingZeros(m);
    m = m << (23u - lead);
    ex = -149 - i32(23u - lead);
  } else {
    m = m | 0x800000u;
    ex = e - 150;
  }
  // Long division m / QMAX to 25 significant bits (24 + a rounding bit) and a sticky remainder.
  let q = u32(QMAX);
  var sig = m / q;
  var rem = m % q;
  let len = 32u - countLeadingZeros(sig);           // 17..21 bits before the point
  let frac = 25u - len;
  for (var i = 0u; i < frac; i++) {
    rem = rem << 1u;
    let bit = rem >= q;
    if (bit) { rem -= q; }
    sig = (sig << 1u) | select(0u, 1u, bit);
  }
  // Round to 24 bits (f32): value = keep · 2^x
  var keep = sig >> 1u;
  if ((sig & 1u) == 1u && (rem != 0u || (keep & 1u) == 1u)) { keep += 1u; }
  var x = ex - i32(frac) + 1;
  if (keep == 0x1000000u) { keep = keep >> 1u; x += 1; }
  // f32 → f16 as util/half.ts f32ToF16: the value's exponent is x + 23
  let he = x + 23 + 15;
  if (he >= 31) { return 0x7c00u; }
  if (he <= 0) {
    if (he < -10) { return 0u; }
    let shift = u32(14 - he);                        // 14..24
    var sub = keep >> shift;
    let sub_rem = keep & ((1u << shift) - 1u);
    let tie = 1u << (shift - 1u);
    if (sub_rem > tie || (sub_rem == tie && (sub & 1u) == 1u)) { sub += 1u; }
    return sub;                                      // may round up into the smallest normal: still the right bits
  }
  var bits = (u32(he) << 10u) | ((keep >> 13u) & 0x3ffu);
  let bits_rem = keep & 0x1fffu;
  if (bits_rem > 0x1000u || (bits_rem == 0x1000u && (bits & 1u) == 1u)) { bits += 1u; }
  return bits;                                       // a carry into the exponent (up to Inf) is right too
}

// clamp(floor(x / s + 1/2), -QMAX, QMAX): the largest k with (k - 1/2)·s ≤ x (branch-free: selects).
fn code(x: f32, s: f32, inv: f32) -> i32 {
  let k = clamp(i32(floor(x * inv + 0.5)), -QMAX - 1, QMAX + 1);
  let fk = f32(k);
  let fixed = k - select(0, 1, (fk - 0.5) * s > x) + select(0, 1, (fk + 0.5) * s <= x);
  return select(clamp(fixed, -QMAX, QMAX), 0, s == 0.0);
}

// Group `idx` of the [rows, G] order: writes its data words, returns its scale's f16 bits.
fn quantize_group(idx: u32) -> u32 {
  let n = idx / P.groups;
  let g = idx % P.groups;
  let k0 = g * GS;
  let k1 = min(P.k, k0 + GS);
  let row = n * P.k;
  let w0 = g * GROUP_WORDS;
  // A whole group starting on an even element (always, when K is even): elements in pairs, each source
  // word read once (for bf16/f16, one word holds the pair).
  if (k1 - k0 == GS && ((row + k0) & 1u) == 0u) {
    let base = (row + k0) >> 1u;
    var amax = 0u;
    for (var j = 0u; j < GS / 2u; j++) {
      let p = elem_pair(base + j) & vec2u(0x7fffffffu);
      amax = max(amax, max(p.x, p.y));
    }
    let sbits = scale_f16_bits(amax);
    let s = f16_value(sbits);
    let inv = select(0.0, 1.0 / s, s > 0.0);
    for (var j = 0u; j < GROUP_WORDS; j++) {
      var word = 0u;
      for (var b = 0u; b < PER_WORD; b += 2u) {
        let p = bitcast<vec2f>(elem_pair(base + (j * PER_WORD + b) / 2u));
        word = word | (field(code(p.x, s, inv)) << (b * BITS)) | (field(code(p.y, s, inv)) << ((b + 1u) * BITS));
      }
      dst[P.dst_offset + n * P.row_words + w0 + j] = word;
    }
    return sbits;
  }
  // A partial last group, or an odd start: element by element, the row padding as code 0.
  var amax = 0u;
  for (var k = k0; k < k1; k++) { amax = max(amax, elem_bits(row + k) & 0x7fffffffu); }
  let sbits = scale_f16_bits(amax);
  let s = f16_value(sbits);
  let inv = select(0.0, 1.0 / s, s > 0.0);
  let words = min(GROUP_WORDS, P.row_words - w0);
  for (var j = 0u; j < words; j++) {
    var word = 0u;
    for (var b = 0u; b < PER_WORD; b++) {
      let k = k0 + j * PER_WORD + b;
      var q = 0;
      if (k < k1) { q = code(bitcast<f32>(elem_bits(row + k)), s, inv); }
      word = word | (field(q) << (b * BITS));
    }
    dst[P.dst_offset + n * P.row_words + w0 + j] = word;
  }
  return sbits;
}

@compute @workgroup_size(64)
fn quantize(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = (wid.x + wid.y * nwg.x) * 64u + lid;
  if (t >= P.pairs) { return; }
  let total = P.rows * P.groups;
  let lo = quantize_group(2u * t);
  var hi = 0u;
  if (2u * t + 1u < total) { hi = quantize_group(2u * t + 1u); }
  scales[P.scale_offset + t] = lo | (hi << 16u);
}
