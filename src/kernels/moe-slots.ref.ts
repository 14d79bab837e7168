/**
 * CPU reference of slot_remap (kernels/moe-slots.ts): entries [first, first + N) of a routing mapped to
 * expert-cache slots through the slot table; an expert without a slot (NO_SLOT) → slot 0, weight 0.
 */
export function slotRemapRef(ids: Uint32Array, weights: Float32Array, first: number, N: number, slotOf: Uint32Array): { ids: Uint32Array; weights: Float32Array } {
  const outIds = new Uint32Array(N), outW = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    const e = ids[first + i];
    const s = e < slotOf.length ? slotOf[e] : 0xffffffff;
    const ok = s !== 0xffffffff;
    outIds[i] = ok ? s : 0;
    outW[i] = ok ? weights[first + i] : 0;
  }
  return { ids: outIds, weights: outW };
}
