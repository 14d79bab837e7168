// Load width along a kernel's reduction axis (@variant load, picked by the wrapper): `vec4` when the
// reduction length, strides and offsets are multiples of 4, `scalar` otherwise, with the same kernel
// structure. Kernels read VecK values and multiply them with vdot; VK is the elements per VecK.
// @variant load vec4
alias VecK = vec4<f32>;
const VK: u32 = 4u;
fn vdot(a: VecK, b: VecK) -> f32 { return dot(a, b); }
// @variant load scalar
alias VecK = f32;
const VK: u32 = 1u;
fn vdot(a: VecK, b: VecK) -> f32 { return a * b; }
// @end load
