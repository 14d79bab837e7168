/**
 * A rows × columns heatmap on a canvas (layers × experts), with row labels, optional right-hand labels,
 * outlined cells (the current token's experts) and a hover tooltip. Sized to its container's width;
 * redrawn on resize and on demand.
 */

export type Rgb = [number, number, number];

const hex = (h: string): Rgb => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)) as Rgb;

/** A piecewise-linear colour ramp over t ∈ [0, 1]. */
export function ramp(stops: string[]): (t: number) => string {
  const cs = stops.map(hex);
  return (t: number) => {
    const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (cs.length - 1);
    const i = Math.min(cs.length - 2, Math.floor(x));
    const f = x - i;
    const c = cs[i].map((v, k) => Math.round(v + (cs[i + 1][k] - v) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  };
}

/** Sequential: empty cells stay close to the panel colour. */
export const sequential = ramp(['#1c2230', '#1f3a66', '#2f6fd0', '#4fb0f5', '#b8ecff']);
/** Diverging around 0.5 (balanced): blue below, orange above. */
export const diverging = ramp(['#2f6fd0', '#2a4a7c', '#2b313e', '#8a5a2b', '#f08a3c']);

export interface HeatmapConfig {
  rowLabels: string[];
  cols: number;
  /** Maps a cell value (already normalised to [0, 1]) to a colour. */
  color: (t: number) => string;
  rightLabels?: string[];
  /** Header above the right-hand labels. */
  rightHeader?: string;
  tooltip?: (row: number, col: number) => string;
  maxHeight?: number;
}

export class Heatmap {
  private cfg: HeatmapConfig = { rowLabels: [], cols: 0, color: sequential };
  private values = new Float32Array(0);
  private outlined = new Set<number>();
  /** Cells marked with a corner dot (the experts resident on the GPU under expert offload). */
  private marked = new Set<number>();
  private geom = { left: 0, top: 0, cw: 0, ch: 0 };
  private raf = 0;

  constructor(readonly canvas: HTMLCanvasElement, private tip: HTMLElement) {
    new ResizeObserver(() => this.schedule()).observe(canvas.parentElement ?? canvas);
    canvas.addEventListener('mousemove', (ev) => this.hover(ev));
    canvas.addEventListener('mouseleave', () => (this.tip.hidden = true));
  }

  configure(cfg: HeatmapConfig): void {
    this.cfg = cfg;
    this.values = new Float32Array(cfg.rowLabels.length * cfg.cols);
    this.outlined.clear();
    this.marked.clear();
    this.schedule();
  }

  get rows(): number { return this.cfg.rowLabels.length; }

  /** Values in [0, 1], row-major; `outlined` holds row * cols + col indices. */
  set(values: ArrayLike<number>, outlined: Iterable<number> = [], rightLabels?: string[], marked?: Iterable<number>): void {
    if (marked) this.marked = new Set(marked);
    this.values.set(values);
    this.outlined = new Set(outlined);
    if (rightLabels) this.cfg.rightLabels = rightLabels;
    this.schedule();
  }

  schedule(): void {
    if (this.raf) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      this.draw();
    });
  }

  draw(): void {
    const { canvas, cfg } = this;
    const rows = this.rows, cols = cfg.cols;
    const width = Math.max(120, Math.floor(canvas.parentElement?.clientWidth ?? canvas.clientWidth));
    const left = 34, right = cfg.rightLabels ? 48 : 0, top = 16;
    const cw = cols ? (width - left - right) / cols : 0;
    const ch = rows ? Math.max(4, Math.min(Math.max(cw, 10), 22, (cfg.maxHeight ?? 220) / rows)) : 0;
    const height = rows ? Math.ceil(top + rows * ch + 2) : 40;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      canvas.style.width = `${width}px`;
      canvas.style.height = `${height}px`;
    }
    this.geom = { left, top, cw, ch };
    const g = canvas.getContext('2d')!;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    if (!rows || !cols) return;
    const gap = cw >= 5 ? 1 : 0;
    const font = '10px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace';
    g.font = font;
    g.textBaseline = 'middle';
    // Column ticks: as dense as ~22 px allows, on round steps.
    const step = [1, 2, 4, 8, 16, 32, 64].find((s) => s * cw >= 22) ?? 128;
    g.fillStyle = '#7d8598';
    g.textAlign = 'center';
    for (let c = 0; c < cols; c += step) g.fillText(String(c), left + (c + 0.5) * cw, top / 2);
    if (cfg.rightHeader) {
      g.textAlign = 'left';
      g.fillText(cfg.rightHeader, width - right + 6, top / 2);
    }
    const rowStep = Math.max(1, Math.ceil(11 / ch));
    for (let r = 0; r < rows; r++) {
      if (r % rowStep === 0 || r === rows - 1) {
        g.textAlign = 'right';
        g.fillStyle = '#7d8598';
        g.fillText(cfg.rowLabels[r], left - 6, top + (r + 0.5) * ch);
        if (cfg.rightLabels) {
          g.textAlign = 'left';
          g.fillStyle = '#b9c0cf';
          g.fillText(cfg.rightLabels[r] ?? '', width - right + 6, top + (r + 0.5) * ch);
        }
      }
      for (let c = 0; c < cols; c++) {
        g.fillStyle = cfg.color(this.values[r * cols + c]);
        g.fillRect(left + c * cw, top + r * ch, Math.max(1, cw - gap), Math.max(1, ch - gap));
      }
    }
    // Resident experts: a dot in the cell's top-left corner (drawn under the outlines).
    g.fillStyle = '#4ade80';
    const dot = Math.max(2, Math.min(cw, ch) / 3);
    for (const i of this.marked) {
      const r = Math.floor(i / cols), c = i % cols;
      if (r >= rows) continue;
      g.fillRect(left + c * cw + 1, top + r * ch + 1, dot, dot);
    }
    g.strokeStyle = '#ffffff';
    g.lineWidth = 1.5;
    for (const i of this.outlined) {
      const r = Math.floor(i / cols), c = i % cols;
      if (r >= rows) continue;
      g.strokeRect(left + c * cw + 0.75, top + r * ch + 0.75, Math.max(1, cw - gap - 1.5), Math.max(1, ch - gap - 1.5));
    }
  }

  private hover(ev: MouseEvent): void {
    const { left, top, cw, ch } = this.geom;
    const rect = this.canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left, y = ev.clientY - rect.top;
    const c = Math.floor((x - left) / cw), r = Math.floor((y - top) / ch);
    if (!this.cfg.tooltip || !cw || c < 0 || r < 0 || c >= this.cfg.cols || r >= this.rows) {
      this.tip.hidden = true;
      return;
    }
    this.tip.textContent = this.cfg.tooltip(r, c);
    this.tip.hidden = false;
    const tw = this.tip.offsetWidth;
    this.tip.style.left = `${Math.min(window.innerWidth - tw - 8, ev.clientX + 12)}px`;
    this.tip.style.top = `${ev.clientY + 14}px`;
  }
}
