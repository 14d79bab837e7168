// The KV cache's k / v bindings (2 and 3) and their element reads k_at / v_at, for the attention kernels
// (flash_attention.wgsl, attention_naive.wgsl). `// @variant kv`: f32, or f16 pairs packed in u32 words
// (element i = half i % 2 of word i / 2, low half first; kv_cache.wgsl writes them with pack2x16float, so
// no shader-f16 is needed). Strides and offsets stay in elements either way.
// @variant kv f32
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
fn k_at(i: u32) -> f32 { return k[i]; }
fn v_at(i: u32) -> f32 { return v[i]; }
// @variant kv f16
@group(0) @binding(2) var<storage, read> k: array<u32>;
@group(0) @binding(3) var<storage, read> v: array<u32>;
fn half_of(w: u32, i: u32) -> f32 {
  let p = unpack2x16float(w);
  return select(p.x, p.y, (i & 1u) == 1u);
}
fn k_at(i: u32) -> f32 { return half_of(k[i / 2u], i); }
fn v_at(i: u32) -> f32 { return half_of(v[i / 2u], i); }
// @end kv
