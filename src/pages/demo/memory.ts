/**
 * Memory panel: the plan of the model being loaded (before its weights download: weights by format,
 * KV cache, activations, gpuBytes, the largest binding), or why it cannot fit this device; then the MLA
 * latent KV cache against what a standard multi-head attention cache would need for the same model
 * (per token, and for the tokens cached now), weights, and all GPU memory.
 */
import type { EngineStats } from '../../engine/types';
import type { MemoryPlan } from '../../model/memory-plan';
import { $, escapeHtml, fmtBytes, fmtNum } from '../format';

export class MemoryView {
  constructor(private root: HTMLElement) {}

  /** Planning `label` (the plan call is on its way). */
  planning(label: string): void {
    const box = $('#memory-plan', this.root);
    box.dataset.state = 'planning';
    $('#memory-plan-model', this.root).textContent = label;
    $('#memory-plan-error', this.root).hidden = true;
  }

  /** The plan a load is checked against, shown before the weights download. */
  showPlan(p: MemoryPlan, label: string): void {
    const box = $('#memory-plan', this.root);
    box.dataset.state = 'fits';
    box.dataset.gpuBytes = String(p.gpuBytes);
    $('#memory-plan-model', this.root).textContent = label;
    $('#memory-plan-error', this.root).hidden = true;
    const row = (id: string, name: string, bytes: number, note = '') =>
      `<tr><th>${name}</th><td id="${id}" data-value="${bytes}">${fmtBytes(bytes)}${note ? ` <small>${note}</small>` : ''}</td></tr>`;
    const formats = Object.entries(p.weights.byFormat).sort((a, b) => b[1] - a[1]);
    $('#memory-plan-table', this.root).innerHTML = [
      ...formats.map(([f, b]) => row(`memory-plan-weights-${f}`, `Weights, ${escapeHtml(f)}`, b)),
      row('memory-plan-kv', 'KV cache', p.kvCache.bytes, `${p.contextLength} tokens, ${p.storage.kvCache}`),
      row('memory-plan-activations', 'Activations', p.activations.bytes, `prefill chunks of ${p.prefillTokens}`),
      row('memory-plan-runtime', 'Runtime buffers', p.runtime.bytes),
      row('memory-plan-gpu', 'GPU memory, planned', p.gpuBytes),
      row('memory-plan-binding', 'Largest binding', p.largestBinding.bytes, escapeHtml(p.largestBinding.name)),
    ].join('');
  }

  /** Why the model cannot be loaded here (the plan's typed error, with what would fit), before any weight download. */
  showPlanError(e: { code?: string; message?: string; details?: Record<string, unknown> }, label: string): void {
    const box = $('#memory-plan', this.root);
    box.dataset.state = 'too-big';
    box.dataset.code = e.code ?? '';
    $('#memory-plan-model', this.root).textContent = label;
    const planned = (e.details?.plan as { gpuBytes?: number } | undefined)?.gpuBytes;
    $('#memory-plan-table', this.root).innerHTML = planned
      ? `<tr><th>GPU memory, planned</th><td id="memory-plan-gpu" data-value="${planned}">${fmtBytes(planned)}</td></tr>`
      : '';
    const err = $('#memory-plan-error', this.root);
    err.textContent = `Does not fit this device, so its weights were not downloaded: ${e.message ?? String(e)}`;
    err.hidden = false;
  }

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
