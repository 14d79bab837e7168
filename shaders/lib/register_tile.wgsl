// The inner step of the register-tiled GEMMs (matmul.wgsl, linear.wgsl, sparse.wgsl, moe_experts.wgsl):
// an invocation owns a 4×4 output block held in four vec4 accumulators (acc[i] = row i, component j =
// column j), indexed by constants only: private arrays indexed by loop variables get spilled to memory
// by some compilers (SwiftShader, older mobile drivers). a0..a3 are the block's 4 rows of the
// activation slice, b0..b3 its 4 weight rows, VecK-wide (needs load_width.wgsl's VecK and vdot).
// @include load_width
fn tile_fma(acc: ptr<function, array<vec4<f32>, 4>>, a0: VecK, a1: VecK, a2: VecK, a3: VecK,
            b0: VecK, b1: VecK, b2: VecK, b3: VecK) {
  (*acc)[0] += vec4<f32>(vdot(a0, b0), vdot(a0, b1), vdot(a0, b2), vdot(a0, b3));
  (*acc)[1] += vec4<f32>(vdot(a1, b0), vdot(a1, b1), vdot(a1, b2), vdot(a1, b3));
  (*acc)[2] += vec4<f32>(vdot(a2, b0), vdot(a2, b1), vdot(a2, b2), vdot(a2, b3));
  (*acc)[3] += vec4<f32>(vdot(a3, b0), vdot(a3, b1), vdot(a3, b2), vdot(a3, b3));
}
