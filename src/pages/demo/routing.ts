/**
 * Routing view: which experts each MoE layer chose. The upper map accumulates the current reply
 * (share of its tokens routed to each expert) with the current — or hovered — token's experts
 * outlined; the lower map is the engine's cumulative load per expert (relative to a uniform share,
 * blue under, orange over) with MaxVio per layer.
 */
import type { GenerationChunk, LayerLoad, ModelInfo } from '../../engine/types';
import { Heatmap, diverging, sequential } from './heatmap';
import { $, escapeHtml, fmtCount } from '../format';

export class RoutingView {
  private layers: number[] = [];
  private E = 0;
  private K = 0;
  private counts = new Uint32Array(0);
  private tokens: { text: string; experts: Record<number, number[]> }[] = [];
  private pinned: number | null = null;
  private load: LayerLoad[] = [];
  /** Expert offload: per MoE layer, the experts on the GPU (null: every expert resident). */
  private resident: Record<number, number[]> | null = null;
  readonly reply: Heatmap;
  readonly cumulative: Heatmap;

  constructor(private root: HTMLElement, tip: HTMLElement) {
    this.reply = new Heatmap($<HTMLCanvasElement>('#heatmap', root), tip);
    this.cumulative = new Heatmap($<HTMLCanvasElement>('#load-heatmap', root), tip);
  }

  setModel(info: ModelInfo): void {
    this.layers = info.moeLayers.slice();
    this.E = info.experts;
    this.K = info.expertsPerToken;
    this.counts = new Uint32Array(this.layers.length * this.E);
    this.tokens = [];
    this.pinned = null;
    this.resident = null;
    const labels = this.layers.map((l) => `L${l}`);
    this.reply.configure({
      rowLabels: labels,
      cols: this.E,
      color: sequential,
      tooltip: (r, c) => this.replyTip(r, c),
    });
    this.cumulative.configure({
      rowLabels: labels,
      cols: this.E,
      color: diverging,
      rightLabels: labels.map(() => ''),
      rightHeader: 'MaxVio',
      tooltip: (r, c) => this.loadTip(r, c),
    });
    $('#routing-shape', this.root).textContent = `${this.layers.length} MoE layers × ${this.E} experts, top-${this.K}`;
    this.render();
    this.setLoad([]);
  }

  /** A new reply: the accumulated map starts empty. */
  beginReply(): void {
    this.counts.fill(0);
    this.tokens = [];
    this.pinned = null;
    this.render();
  }

  addToken(chunk: GenerationChunk): void {
    if (!chunk.experts || !this.E) return;
    this.tokens.push({ text: chunk.text, experts: chunk.experts });
    this.layers.forEach((layer, r) => {
      for (const e of new Set(chunk.experts![layer] ?? [])) if (e >= 0 && e < this.E) this.counts[r * this.E + e]++;
    });
    this.render();
  }

  /** Outline a given token of the reply (hover in the chat), or the latest one (null). */
  pin(index: number | null): void {
    this.pinned = index !== null && index < this.tokens.length ? index : null;
    this.render();
  }

  private render(): void {
    const n = this.tokens.length;
    let max = 0, nonzero = 0;
    for (const c of this.counts) { if (c > max) max = c; if (c) nonzero++; }
    const vals = Array.from(this.counts, (c) => (max ? c / max : 0));
    const ti = this.pinned ?? n - 1;
    const outlined: number[] = [];
    const tok = this.tokens[ti];
    if (tok) this.layers.forEach((layer, r) => { for (const e of tok.experts[layer] ?? []) outlined.push(r * this.E + e); });
    const marked: number[] = [];
    if (this.resident) this.layers.forEach((layer, r) => { for (const e of this.resident![layer] ?? []) marked.push(r * this.E + e); });
    this.reply.set(vals, outlined, undefined, marked);
    const c = this.reply.canvas;
    c.dataset.resident = String(marked.length);
    c.dataset.tokens = String(n);
    c.dataset.cells = String(nonzero);
    c.dataset.layers = String(this.layers.length);
    c.dataset.experts = String(this.E);
    $('#heatmap-max', this.root).textContent = n ? `${Math.round((100 * max) / n)}% of tokens` : 'max';
    $('#routing-token', this.root).innerHTML = tok
      ? `${this.pinned !== null ? 'Hovered' : 'Latest'} token #${ti + 1} <code>${escapeHtml(JSON.stringify(tok.text))}</code> outlined · ${n} token${n === 1 ? '' : 's'} in this reply`
      : 'Generate with routing on to see each token’s experts.';
  }

  private replyTip(r: number, c: number): string {
    const n = this.tokens.length;
    const k = this.counts[r * this.E + c];
    const where = this.resident ? ((this.resident[this.layers[r]] ?? []).includes(c) ? ' · on the GPU' : ' · offloaded') : '';
    return `layer ${this.layers[r]} · expert ${c}: ${k} of ${n} token${n === 1 ? '' : 's'}${n ? ` (${Math.round((100 * k) / n)}%)` : ''}${where}`;
  }

  /** Expert offload: the experts each layer holds on the GPU now, marked in the reply map (null: all). */
  setResident(resident: Record<number, number[]> | null): void {
    this.resident = resident;
    this.render();
  }

  setLoad(load: LayerLoad[]): void {
    this.load = load;
    const byLayer = new Map(load.map((l) => [l.layer, l]));
    const vals = new Float32Array(this.layers.length * this.E);
    const right: string[] = [];
    let tokens = 0;
    this.layers.forEach((layer, r) => {
      const l = byLayer.get(layer);
      right.push(l ? l.maxVio.toFixed(2) : '—');
      if (!l) return;
      const total = l.counts.reduce((a, b) => a + b, 0);
      if (this.K) tokens = Math.max(tokens, total / this.K);
      for (let e = 0; e < this.E; e++) {
        const ratio = total ? (l.frequency[e] ?? l.counts[e] / total) * this.E : 1;
        const t = ratio > 0 ? Math.max(-1, Math.min(1, Math.log2(ratio))) : -1;
        vals[r * this.E + e] = total ? 0.5 + 0.5 * t : 0.5;
      }
    });
    this.cumulative.set(vals, [], right);
    const vios = load.filter((l) => this.layers.includes(l.layer)).map((l) => l.maxVio);
    const el = $('#maxvio', this.root);
    const canvas = this.cumulative.canvas;
    canvas.dataset.tokens = String(Math.round(tokens));
    if (!vios.length || tokens === 0) {
      el.textContent = '—';
      el.dataset.value = '';
      $('#load-summary', this.root).textContent = 'No tokens counted yet.';
      return;
    }
    const mean = vios.reduce((a, b) => a + b, 0) / vios.length;
    el.textContent = mean.toFixed(3);
    el.dataset.value = String(mean);
    const worst = load.reduce((a, b) => (b.maxVio > a.maxVio ? b : a));
    $('#load-summary', this.root).textContent = `${fmtCount(tokens)} tokens counted (prompts and replies) · worst layer L${worst.layer}: ${worst.maxVio.toFixed(2)}`;
  }

  private loadTip(r: number, c: number): string {
    const l = this.load.find((x) => x.layer === this.layers[r]);
    if (!l) return `layer ${this.layers[r]} · expert ${c}: no data`;
    const total = l.counts.reduce((a, b) => a + b, 0);
    const ratio = total ? (l.counts[c] / total) * this.E : 0;
    return `layer ${l.layer} · expert ${c}: ${fmtCount(l.counts[c])} assignments, ${ratio.toFixed(2)}× a uniform share`;
  }
}
