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

/**
 * The `// @wfmt-begin … // @wfmt-end` block declares a kernel's weight bindings and accessors in f32;
 * f16 swaps in packed binary16 storage (4 values per vec2<u32>) decoded to vec4<f32>. vec4 loads only.
 */
export function withF16Weights(code: string, f16: boolean): string {
  if (!f16) return code;
  const start = code.indexOf('// @wfmt-begin');
  const end = code.indexOf('// @wfmt-end');
  if (start < 0 || end < 0) throw new Error('shader has no @wfmt block');
  return code.slice(0, start) + '// @wfmt-begin (f16)\n' + F16_WEIGHTS_BLOCK + '\n' + code.slice(end);
}
