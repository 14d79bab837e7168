// The grouped (MUL_MAT_ID-style) expert passes' tiling (moe_experts.wgsl, gguf_moe.wgsl): the routed rows
// sorted by expert, each expert's rows cut into BM-row tiles, and BN-column blocks of the output. `seg`
// holds [E + 1] row starts, then [E + 1] tile starts (the last = the tile count); the caller's P has E
// and groups (column blocks), and BM, BN are its constants.
struct Tile { e: u32, row0: u32, row1: u32, col0: u32, ok: bool }

// The expert, sorted-row range and column block of linear workgroup `wl`.
fn find_tile(wl: u32) -> Tile { return find_tile_of(wl, BM, BN); }

// The same for tiles of `bm` sorted rows and column blocks of `bn` (the seg's tile starts must count
// tiles of `bm` rows: moe_experts.wgsl's batched passes use bm = 4).
fn find_tile_of(wl: u32, bm: u32, bn: u32) -> Tile {
  var tl: Tile;
  let E = P.E;
  let tile = wl / P.groups;
  tl.col0 = (wl % P.groups) * bn;
  tl.ok = tile < seg[2u * E + 1u];
  if (!tl.ok) { return tl; }
  // largest e with tile_start[e] ≤ tile (empty experts share their successor's start)
  var lo = 0u;
  var hi = E - 1u;
  while (lo < hi) {
    let mid = (lo + hi + 1u) / 2u;
    if (seg[E + 1u + mid] <= tile) { lo = mid; } else { hi = mid - 1u; }
  }
  tl.e = lo;
  tl.row0 = seg[lo] + (tile - seg[E + 1u + lo]) * bm;
  tl.row1 = min(tl.row0 + bm, seg[lo + 1u]);
  return tl;
}
