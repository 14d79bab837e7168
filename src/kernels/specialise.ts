/**
 * The one text specialisation kernels use: the `// @vec-begin … // @vec-end` block of a shader picks
 * the load width. vec4 needs the reduction length, strides and offsets to be multiples of 4; any other
 * shape gets scalar loads with the same kernel structure.
 */
const SCALAR_BLOCK = `alias VecK = f32;
const VK: u32 = 1u;
fn vdot(a: VecK, b: VecK) -> f32 { return a * b; }`;

export function withLoadWidth(code: string, vec4: boolean): string {
  if (vec4) return code;
  const start = code.indexOf('// @vec-begin');
  const end = code.indexOf('// @vec-end');
  if (start < 0 || end < 0) throw new Error('shader has no @vec block');
  return code.slice(0, start) + '// @vec-begin (scalar)\n' + SCALAR_BLOCK + '\n' + code.slice(end);
}

export const allMultiplesOf4 = (...xs: number[]) => xs.every((v) => v % 4 === 0);

/**
 * The `// @subgroup-begin … // @subgroup-end` block holds entry points that use subgroup operations:
 * kept (with `enable subgroups;`) on devices that have the feature, stripped elsewhere.
 */
export function withSubgroups(code: string, enabled: boolean): string {
  const start = code.indexOf('// @subgroup-begin');
  const end = code.indexOf('// @subgroup-end');
  if (start < 0 || end < 0) throw new Error('shader has no @subgroup block');
  return enabled ? `enable subgroups;\n${code}` : code.slice(0, start) + code.slice(end + '// @subgroup-end'.length);
}

const F16_WEIGHTS_BLOCK = `@group(0) @binding(2) var<storage, read> gate_up: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read> down: array<vec2<u32>>;
fn gu(i: u32) -> vec4<f32> { let v = gate_up[i]; return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)); }
fn dn(i: u32) -> vec4<f32> { let v = down[i]; return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)); }`;

// Group-quantised expert stacks (src/kernels/weight.ref.ts packWeight rows, stacked): a row of the
// reduction length RL (D for gate_up, I for down) is rowWords u32 (q8: 4 × int8, q4: 8 × (int4 + 8),
// rows padded to 16 / 32 values) with f16 group scales (pairs per u32) at scales[row · ⌈RL/GS⌉ + k/GS].
// i counts vec4 units of the logical [rows, RL] matrix (RL a multiple of 4).
const QUANT_COMMON = `@group(0) @binding(2) var<storage, read> gate_up: array<u32>;
@group(0) @binding(6) var<storage, read> down: array<u32>;
@group(0) @binding(13) var<storage, read> gate_up_scales: array<u32>;
@group(0) @binding(14) var<storage, read> down_scales: array<u32>;
override GS: u32 = 32u;
fn scale16(pair: u32, i: u32) -> f32 { let p = unpack2x16float(pair); return select(p.x, p.y, (i & 1u) == 1u); }`;
const DECODERS = {
  q8: `fn q8v(v: u32) -> vec4<f32> {
  return vec4<f32>(vec4<i32>(bitcast<i32>(v << 24u), bitcast<i32>(v << 16u), bitcast<i32>(v << 8u), bitcast<i32>(v)) >> vec4<u32>(24u));
}`,
  q4: 'fn q4v(v: u32) -> vec4<f32> { return vec4<f32>(vec4<u32>(v, v >> 4u, v >> 8u, v >> 12u) & vec4<u32>(15u)) - 8.0; }',
};

/** gu / dn for q8 or q4: rows padded to 16 / 32 values (packWeight's rowLayout), i.e. ⌈RL/unit⌉·4 words. */
function quantWeightsBlock(format: 'q8' | 'q4'): string {
  const unit = format === 'q8' ? 16 : 32;
  const load = (buf: string) => (format === 'q8' ? `q8v(${buf}[base + c])` : `q4v(${buf}[base + c / 2u] >> ((c & 1u) * 16u))`);
  const accessor = (fn: string, buf: string, scales: string, RL: string) => `fn ${fn}(i: u32) -> vec4<f32> {
  let c4 = P.${RL} / 4u; let row = i / c4; let c = i - row * c4;
  let base = row * ((P.${RL} + ${unit - 1}u) / ${unit}u * 4u);
  let si = row * ((P.${RL} + GS - 1u) / GS) + (4u * c) / GS;
  return ${load(buf)} * scale16(${scales}[si >> 1u], si);
}`;
  return [QUANT_COMMON, DECODERS[format], accessor('gu', 'gate_up', 'gate_up_scales', 'D'), accessor('dn', 'down', 'down_scales', 'I')].join('\n');
}

/**
 * The `// @wfmt-begin … // @wfmt-end` block declares a kernel's weight bindings and accessors in f32;
 * f16 swaps in packed binary16 storage (4 values per vec2<u32>) decoded to vec4<f32>; q8 / q4 in
 * group-quantised rows with f16 scales. vec4 loads only.
 */
export function withWeightFormat(code: string, format: 'f32' | 'f16' | 'q8' | 'q4'): string {
  if (format === 'f32') return code;
  const start = code.indexOf('// @wfmt-begin');
  const end = code.indexOf('// @wfmt-end');
  if (start < 0 || end < 0) throw new Error('shader has no @wfmt block');
  const block = format === 'f16' ? F16_WEIGHTS_BLOCK : quantWeightsBlock(format);
  return code.slice(0, start) + `// @wfmt-begin (${format})\n` + block + '\n' + code.slice(end);
}
