// Softmax and log-softmax over rows of length V (vocabulary-sized: up to ~130k and beyond), in two
// passes so a row is spread over many workgroups: `stats` writes each chunk's (max, Σ exp(x − max)),
// then every chunk's workgroup combines its row's partials (M = max m_c, S = Σ s_c·e^(m_c − M)) and
// writes softmax e^(x − M)/S or log-softmax x − M − ln S. Chunks of CH = WG·PER elements.
//
// binding 0: params { rows, V, chunks, log }
// binding 1: x [rows, V] f32                 (stats, apply)
// binding 2: y [rows, V] f32                 (apply)
// binding 3: part [rows, chunks] vec2<f32>   per-chunk (max, sum)
// binding 4: xy [rows, V] f32 (rw)           (apply_inplace: y = f(x) over the same buffer)
struct Params { rows: u32, V: u32, chunks: u32, log: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> xy: array<f32>;

const WG: u32 = 256u;
const PER: u32 = 16u;
const CH: u32 = WG * PER;
var<workgroup> red: array<vec2<f32>, WG>;

// Online (max, sum) merge; a sum of 0 marks an empty partial.
fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
  if (b.y == 0.0) { return a; }
  if (a.y == 0.0) { return b; }
  let m = max(a.x, b.x);
  return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

@compute @workgroup_size(WG)
fn stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= P.rows * P.chunks) { return; }
  let row = g / P.chunks;
  let c = g % P.chunks;
  let base = row * P.V;
  var acc = vec2<f32>(0.0, 0.0);
  for (var e = 0u; e < PER; e++) {
    let i = c * CH + e * WG + lid;             // strided: neighbouring invocations read neighbours
    if (i < P.V) { acc = merge(acc, vec2<f32>(x[base + i], 1.0)); }
  }
  red[lid] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { red[lid] = merge(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  if (lid == 0u) { part[g] = red[0]; }
}

fn row_stats(row: u32) -> vec2<f32> {
  var t = vec2<f32>(0.0, 0.0);
  for (var c = 0u; c < P.chunks; c++) { t = merge(t, part[row * P.chunks + c]); }
  return t;
}

fn f(v: f32, t: vec2<f32>) -> f32 {
  if (P.log != 0u) { return v - t.x - log(t.y); }
  return exp(v - t.x) / t.y;
}

// Workgroup g's chunk: its row's first element, the chunk's first column, the row's stats.
struct Chunk { base: u32, first: u32, t: vec2<f32>, ok: bool }
fn chunk_of(wid: vec3<u32>, nwg: vec3<u32>) -> Chunk {
  var ch: Chunk;
  let g = wid.x + wid.y * nwg.x;
  ch.ok = g < P.rows * P.chunks;
  if (!ch.ok) { return ch; }
  let row = g / P.chunks;
  ch.base = row * P.V;
  ch.first = (g % P.chunks) * CH;
  ch.t = row_stats(row);
  return ch;
}

@compute @workgroup_size(WG)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ch = chunk_of(wid, nwg);
  if (!ch.ok) { return; }
  for (var e = 0u; e < PER; e++) {
    let i = ch.first + e * WG + lid;
    if (i < P.V) { y[ch.base + i] = f(x[ch.base + i], ch.t); }
  }
}

@compute @workgroup_size(WG)
fn apply_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let ch = chunk_of(wid, nwg);
  if (!ch.ok) { return; }
  for (var e = 0u; e < PER; e++) {
    let i = ch.first + e * WG + lid;
    if (i < P.V) { xy[ch.base + i] = f(xy[ch.base + i], ch.t); }
  }
}
