/**
 * Memory panel: the MLA latent KV cache against what a standard multi-head attention cache would need
 * for the same model (per token, and for the tokens cached now), weights, and all GPU memory.
 */
import type { EngineStats } from '../../engine/types';
import { $, fmtBytes, fmtNum } from '../format';

export class MemoryView {
  constructor(private root: HTMLElement) {}

  update(s: EngineStats): void {
    const set = (id: string, text: string, value: number) => {
      const el = $(id, this.root);
      el.textContent = text;
      el.dataset.value = String(value);
    };
    const mla = s.kvBytesPerToken, mha = s.mhaKvBytesPerToken;
    const ratio = mla > 0 ? mha / mla : 0;
    set('#memory-kv-token', fmtBytes(mla), mla);
    set('#memory-mha-token', fmtBytes(mha), mha);
    set('#memory-ratio', ratio ? `${fmtNum(ratio)}×` : '—', ratio);
    const max = Math.max(mla, mha, 1);
    $('#bar-mla', this.root).style.width = `${(100 * mla) / max}%`;
    $('#bar-mha', this.root).style.width = `${(100 * mha) / max}%`;
    set('#memory-cached', `${s.cachedTokens}`, s.cachedTokens);
    set('#memory-kv-used', fmtBytes(s.cachedTokens * mla), s.cachedTokens * mla);
    set('#memory-mha-used', fmtBytes(s.cachedTokens * mha), s.cachedTokens * mha);
    set('#memory-kv', fmtBytes(s.kvCacheBytes), s.kvCacheBytes);
    set('#memory-weights', fmtBytes(s.weightBytes), s.weightBytes);
    set('#memory-gpu', fmtBytes(s.gpuBytes), s.gpuBytes);
    set('#memory-dispatches', s.dispatchesPerToken ? fmtNum(s.dispatchesPerToken) : '—', s.dispatchesPerToken);
  }
}
