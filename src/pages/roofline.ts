/**
 * Roofline chart as an SVG string: arithmetic intensity (flop/byte, log₂) against GFLOP/s (log₁₀),
 * with the measured FMA and copy ceilings as the roof and one point per measured kernel.
 */
import type { BenchResult, Ceilings } from '../bench/types';
import { escapeHtml } from './format';

export interface RooflineOptions { width?: number; height?: number }

const PALETTE = ['#6aa7ff', '#7ee0a1', '#ffb86b', '#c792ea', '#ff7a9a', '#5ad1d1', '#e6d06a', '#9aa5ff'];

export function rooflineSvg(results: BenchResult[], c: Ceilings, o: RooflineOptions = {}): string {
  const W = o.width ?? 520, H = o.height ?? 330;
  const pad = { l: 56, r: 16, t: 14, b: 42 };
  const pts = results
    .filter((r) => r.suite !== 'ceilings' && r.bytes > 0 && (r.flops ?? 0) > 0 && r.gflops > 0)
    .map((r) => ({ r, ai: (r.flops ?? 0) / r.bytes, g: r.gflops }));
  if (!(c.fmaGflops > 0 && c.copyGBps > 0)) return '';
  const ridge = c.fmaGflops / c.copyGBps;
  const ais = [ridge, ...pts.map((p) => p.ai)];
  const x0 = Math.floor(Math.log2(Math.min(...ais) / 4)), x1 = Math.ceil(Math.log2(Math.max(...ais) * 4));
  const gs = [c.fmaGflops, c.copyGBps * 2 ** x0, ...pts.map((p) => p.g)];
  const y0 = Math.floor(Math.log10(Math.min(...gs) / 2)), y1 = Math.ceil(Math.log10(c.fmaGflops * 1.5));
  const X = (ai: number) => pad.l + ((Math.log2(ai) - x0) / (x1 - x0)) * (W - pad.l - pad.r);
  const Y = (g: number) => H - pad.b - ((Math.log10(g) - y0) / (y1 - y0)) * (H - pad.t - pad.b);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" class="roofline" role="img" aria-label="Roofline chart">`);
  // Grid and axes.
  for (let e = x0; e <= x1; e++) {
    const x = X(2 ** e);
    out.push(`<line x1="${x}" y1="${pad.t}" x2="${x}" y2="${H - pad.b}" class="grid"/>`);
    if ((e - x0) % Math.max(1, Math.round((x1 - x0) / 8)) === 0) out.push(`<text x="${x}" y="${H - pad.b + 16}" class="tick" text-anchor="middle">${e >= 0 ? 2 ** e : `1/${2 ** -e}`}</text>`);
  }
  for (let e = y0; e <= y1; e++) {
    const y = Y(10 ** e);
    out.push(`<line x1="${pad.l}" y1="${y}" x2="${W - pad.r}" y2="${y}" class="grid"/>`);
    out.push(`<text x="${pad.l - 6}" y="${y + 4}" class="tick" text-anchor="end">${10 ** e >= 1 ? (10 ** e).toLocaleString('en-US') : (10 ** e).toString()}</text>`);
  }
  out.push(`<text x="${(pad.l + W - pad.r) / 2}" y="${H - 6}" class="axis" text-anchor="middle">arithmetic intensity (flop / byte)</text>`);
  out.push(`<text x="14" y="${(pad.t + H - pad.b) / 2}" class="axis" text-anchor="middle" transform="rotate(-90 14 ${(pad.t + H - pad.b) / 2})">GFLOP/s</text>`);
  // The roof: bandwidth slope up to the ridge, then the FMA peak.
  const aiL = 2 ** x0, aiR = 2 ** x1;
  out.push(`<polyline class="roof" points="${X(aiL)},${Y(c.copyGBps * aiL)} ${X(ridge)},${Y(c.fmaGflops)} ${X(aiR)},${Y(c.fmaGflops)}"/>`);
  out.push(`<text x="${X(aiR) - 4}" y="${Y(c.fmaGflops) - 6}" class="roof-label" text-anchor="end">FMA ${c.fmaGflops.toFixed(1)} GFLOP/s</text>`);
  const mid = Math.sqrt(aiL * ridge);
  out.push(`<text x="${X(mid) + 4}" y="${Y(c.copyGBps * mid) - 8}" class="roof-label" transform="rotate(${-Math.atan2(Y(c.copyGBps * aiL) - Y(c.copyGBps * ridge), X(ridge) - X(aiL)) * 180 / Math.PI} ${X(mid) + 4} ${Y(c.copyGBps * mid) - 8})">copy ${c.copyGBps.toFixed(1)} GB/s</text>`);
  // Points, coloured by suite.
  const suites = [...new Set(pts.map((p) => p.r.suite))];
  for (const p of pts) {
    const col = PALETTE[suites.indexOf(p.r.suite) % PALETTE.length];
    const title = `${p.r.suite} ${p.r.name} ${p.r.variant} ${p.r.shape}: ${p.g.toFixed(2)} GFLOP/s, ${p.ai.toFixed(2)} flop/B`;
    out.push(`<circle cx="${X(p.ai).toFixed(1)}" cy="${Y(p.g).toFixed(1)}" r="4.5" fill="${col}" class="pt"><title>${escapeHtml(title)}</title></circle>`);
  }
  // Legend.
  suites.forEach((s, i) => {
    const x = pad.l + 10, y = pad.t + 14 + i * 16;
    out.push(`<circle cx="${x}" cy="${y - 4}" r="4" fill="${PALETTE[i % PALETTE.length]}"/><text x="${x + 10}" y="${y}" class="legend">${escapeHtml(s)}</text>`);
  });
  out.push('</svg>');
  return out.join('');
}
