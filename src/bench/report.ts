/**
 * Tables and schema checks for benchmark reports: shared by `npm run bench` (text tables), the
 * benchmark page (HTML tables) and the tests (schema). Pure TypeScript, no GPU.
 */
import type { BenchReport } from './types';

export type Table = { headers: string[]; rows: string[][]; align: ('l' | 'r')[] };

/** A number with about `digits` significant digits, without exponent for everyday ranges. */
export function fmtNum(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 10 ** digits) return Math.round(x).toLocaleString('en-US');
  if (a < 1e-3) return x.toExponential(1);
  const decimals = Math.max(0, digits - 1 - Math.floor(Math.log10(a)));
  return x.toFixed(Math.min(decimals, 4));
}

export function fmtBytes(b: number | null | undefined): string {
  if (b === null || b === undefined || !Number.isFinite(b)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = b, u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${u ? fmtNum(v, 3) : v.toFixed(0)} ${units[u]}`;
}

export function fmtPct(x: number | null | undefined): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : `${x >= 10 ? x.toFixed(0) : x.toFixed(1)}%`;
}

export function resultsTable(r: BenchReport): Table {
  return {
    headers: ['suite', 'name', 'variant', 'shape', 'median ms', 'GFLOP/s', '% FMA', 'GB/s', '% copy', 'bytes'],
    align: ['l', 'l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r'],
    rows: r.results.map((x) => {
      const timed = x.medianMs > 0;
      return [
        x.suite, x.name, x.variant, x.shape, timed ? fmtNum(x.medianMs, 4) : '–',
        !timed || x.flops === 0 ? '–' : fmtNum(x.gflops), !timed || x.flops === 0 ? '–' : fmtPct(x.pctFma),
        timed ? fmtNum(x.gbps) : '–', timed ? fmtPct(x.pctCopy) : '–', fmtBytes(x.bytes),
      ];
    }),
  };
}

export function peersTable(r: BenchReport): Table {
  return {
    headers: ['suite', 'name', 'shape', 'peer', 'ours ms', 'peer ms', 'peer/ours', 'timing (both sides)', 'note'],
    align: ['l', 'l', 'l', 'l', 'r', 'r', 'r', 'l', 'l'],
    rows: r.peers.map((p) => [
      p.suite, p.name, p.shape ?? '', p.peer, fmtNum(p.oursMs, 4), fmtNum(p.peerMs, 4), Number.isFinite(p.ratio) ? `${fmtNum(p.ratio, 3)}×` : '–',
      p.symmetric ? p.timing ?? '' : `NOT symmetric${p.timing ? ` (${p.timing})` : ''}`, p.note ?? '',
    ]),
  };
}

export function peerChecksTable(r: BenchReport): Table {
  return {
    headers: ['suite', 'peer', 'op', 'shape', 'max |Δ|', 'tolerance', 'ok', 'note'],
    align: ['l', 'l', 'l', 'l', 'r', 'r', 'l', 'l'],
    rows: r.peerChecks.map((c) => [c.suite ?? '', c.peer, c.op, c.shape, fmtNum(c.maxAbsDiff), fmtNum(c.tolerance), c.ok ? 'yes' : 'NO', c.note ?? '']),
  };
}

export function e2eTable(r: BenchReport): Table {
  return {
    headers: ['model', 'prefill tok/s', 'decode tok/s', 'dispatches/tok', 'readbacks/tok', 'bytes/tok', 'min bytes/tok', 'bytes ÷ min'],
    align: ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    rows: r.e2e.map((e) => [
      e.model, fmtNum(e.prefillTokPerS), fmtNum(e.decodeTokPerS), fmtNum(e.dispatchesPerToken), fmtNum(e.readbacksPerToken),
      fmtBytes(e.bytesPerToken), fmtBytes(e.minBytesPerToken), e.minBytesPerToken > 0 ? `${(e.bytesPerToken / e.minBytesPerToken).toFixed(2)}×` : '–',
    ]),
  };
}

/** A monospace table with aligned columns. */
export function renderText(t: Table): string {
  const widths = t.headers.map((h, i) => Math.max(h.length, ...t.rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (t.align[i] === 'r' ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(t.headers), widths.map((w) => '-'.repeat(w)).join('  '), ...t.rows.map(line)].join('\n');
}

export function describeDevice(r: BenchReport): string {
  const d = r.device;
  const name = [d.vendor, d.architecture, d.device, d.description].filter(Boolean).join(' / ') || 'unknown adapter';
  return `${name}${d.isFallbackAdapter ? ' (fallback adapter)' : ''}; features: ${d.features.join(', ') || 'none'}`;
}

/** The first lines of a long message (shader compiler output can run to pages). */
export function shorten(message: string, maxLines = 4, maxChars = 400): string {
  const lines = message.split('\n').filter((l) => l.trim());
  let out = lines.slice(0, maxLines).join('\n    ');
  if (out.length > maxChars) out = out.slice(0, maxChars);
  return out.length < message.trim().length ? `${out} …` : out;
}

/** The whole report as text (what `npm run bench` prints). */
export function formatReport(r: BenchReport): string {
  const c = r.ceilings;
  const parts = [
    `webmoe benchmark (${r.quick ? 'quick' : 'full'}, ${r.env}, ${r.timing} timing) — ${r.timestamp}, ${(r.durationMs / 1000).toFixed(1)} s`,
    `device: ${describeDevice(r)}`,
    `ceilings: FMA ${fmtNum(c.fmaGflops)} GFLOP/s, copy ${fmtNum(c.copyGBps)} GB/s, dispatch overhead ${fmtNum(c.dispatchOverheadUs)} µs, submit round trip ${fmtNum(c.submitRoundTripMs)} ms`,
    '',
    renderText(resultsTable(r)),
  ];
  if (r.peers.length) parts.push('', 'peers (onnxruntime-web on the same device; peer/ours > 1 means webmoe is faster; each row times both sides with the protocol in its timing column, wall clock even in a timestamp run)', renderText(peersTable(r)));
  if (r.peerChecks.length) parts.push('', 'peer output checks (peer against ours on one small shape)', renderText(peerChecksTable(r)));
  if (r.e2e.length) parts.push('', 'end to end', renderText(e2eTable(r)));
  if (r.suiteMs) parts.push('', `time per suite: ${Object.entries(r.suiteMs).map(([k, v]) => `${k} ${(v / 1000).toFixed(1)} s`).join(', ')}`);
  if (r.errors.length) parts.push('', `errors (${r.errors.length}; full messages in the JSON):`, ...r.errors.map((e) => `  ${e.suite}: ${shorten(e.message)}`));
  return parts.join('\n');
}

/** Problems with a parsed report (empty when it is well formed). */
export function validateReport(x: unknown): string[] {
  const p: string[] = [];
  const isObj = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);
  const num = (v: unknown, where: string, { positive = false, finite = true } = {}) => {
    if (typeof v !== 'number' || (finite && !Number.isFinite(v))) p.push(`${where}: not a finite number (${JSON.stringify(v)})`);
    else if (positive && !(v > 0)) p.push(`${where}: must be > 0 (${v})`);
  };
  const str = (v: unknown, where: string) => { if (typeof v !== 'string') p.push(`${where}: not a string`); };
  if (!isObj(x)) return ['report: not an object'];
  if (x.version !== 1) p.push('version: expected 1');
  str(x.timestamp, 'timestamp');
  if (typeof x.timestamp === 'string' && Number.isNaN(Date.parse(x.timestamp))) p.push('timestamp: not a date');
  if (typeof x.quick !== 'boolean') p.push('quick: not a boolean');
  str(x.userAgent, 'userAgent');
  if (x.env !== 'browser' && x.env !== 'node') p.push('env: expected browser or node');
  if (!isObj(x.device)) p.push('device: missing');
  else {
    for (const k of ['vendor', 'architecture', 'device', 'description']) str(x.device[k], `device.${k}`);
    if (!Array.isArray(x.device.features)) p.push('device.features: not an array');
    if (!isObj(x.device.limits) || !Object.keys(x.device.limits).length) p.push('device.limits: missing');
    else for (const [k, v] of Object.entries(x.device.limits)) num(v, `device.limits.${k}`);
  }
  if (!isObj(x.ceilings)) p.push('ceilings: missing');
  else {
    num(x.ceilings.fmaGflops, 'ceilings.fmaGflops', { positive: true });
    num(x.ceilings.copyGBps, 'ceilings.copyGBps', { positive: true });
    num(x.ceilings.dispatchOverheadUs, 'ceilings.dispatchOverheadUs');
    num(x.ceilings.submitRoundTripMs, 'ceilings.submitRoundTripMs', { positive: true });
  }
  const arr = (k: string) => {
    const v = x[k];
    if (!Array.isArray(v)) { p.push(`${k}: not an array`); return []; }
    return v as unknown[];
  };
  arr('results').forEach((r, i) => {
    if (!isObj(r)) return p.push(`results[${i}]: not an object`);
    for (const k of ['suite', 'name', 'variant', 'shape']) str(r[k], `results[${i}].${k}`);
    // medianMs may be 0 on rows that report sizes only (e.g. KV-cache bytes per token).
    num(r.medianMs, `results[${i}].medianMs`);
    if (typeof r.medianMs === 'number' && r.medianMs < 0) p.push(`results[${i}].medianMs: negative`);
    for (const k of ['gflops', 'gbps', 'bytes']) num(r[k], `results[${i}].${k}`);
  });
  arr('peers').forEach((r, i) => {
    if (!isObj(r)) return p.push(`peers[${i}]: not an object`);
    for (const k of ['suite', 'name', 'peer']) str(r[k], `peers[${i}].${k}`);
    for (const k of ['oursMs', 'peerMs', 'ratio']) num(r[k], `peers[${i}].${k}`, { positive: true });
  });
  arr('peerChecks').forEach((r, i) => {
    if (!isObj(r)) return p.push(`peerChecks[${i}]: not an object`);
    for (const k of ['peer', 'op', 'shape']) str(r[k], `peerChecks[${i}].${k}`);
    if (typeof r.ok !== 'boolean') p.push(`peerChecks[${i}].ok: not a boolean`);
  });
  arr('e2e').forEach((r, i) => {
    if (!isObj(r)) return p.push(`e2e[${i}]: not an object`);
    str(r.model, `e2e[${i}].model`);
    for (const k of ['prefillTokPerS', 'decodeTokPerS', 'dispatchesPerToken', 'readbacksPerToken', 'bytesPerToken', 'minBytesPerToken']) num(r[k], `e2e[${i}].${k}`);
  });
  arr('errors').forEach((r, i) => {
    if (!isObj(r)) return p.push(`errors[${i}]: not an object`);
    str(r.suite, `errors[${i}].suite`);
    str(r.message, `errors[${i}].message`);
  });
  arr('suites').forEach((s, i) => str(s, `suites[${i}]`));
  if (!isObj(x.suiteMs)) p.push('suiteMs: missing');
  else for (const [k, v] of Object.entries(x.suiteMs)) num(v, `suiteMs.${k}`);
  num(x.durationMs, 'durationMs');
  return p;
}

/**
 * Two saved reports side by side: every kernel row, peer row and end-to-end row that either has,
 * matched by its identity (suite, name, variant, shape / suite, name, peer, shape / model), with
 * A's and B's figures and B ÷ A. Rows only one report has show '–' on the other side.
 */
export function compareTables(a: BenchReport, b: BenchReport): { results: Table; peers: Table; e2e: Table } {
  const ratio = (x: number | undefined, y: number | undefined) => (x !== undefined && y !== undefined && x > 0 && Number.isFinite(y) ? `${fmtNum(y / x, 3)}×` : '–');
  const join = <T>(xs: T[], ys: T[], key: (t: T) => string) => {
    const order: string[] = [];
    const left = new Map<string, T>(), right = new Map<string, T>();
    for (const x of xs) { const k = key(x); if (!left.has(k) && !right.has(k)) order.push(k); left.set(k, x); }
    for (const y of ys) { const k = key(y); if (!left.has(k) && !right.has(k)) order.push(k); right.set(k, y); }
    return order.map((k) => [left.get(k), right.get(k)] as const);
  };
  const results = join(a.results, b.results, (r) => [r.suite, r.name, r.variant, r.shape].join('\u0000')).map(([x, y]) => {
    const r = (x ?? y)!;
    return [r.suite, r.name, r.variant, r.shape, x ? fmtNum(x.medianMs, 4) : '–', y ? fmtNum(y.medianMs, 4) : '–', ratio(x?.medianMs, y?.medianMs)];
  });
  const peers = join(a.peers, b.peers, (p) => [p.suite, p.name, p.peer, p.shape ?? ''].join('\u0000')).map(([x, y]) => {
    const p = (x ?? y)!;
    return [p.suite, p.name, p.shape ?? '', p.peer, x ? fmtNum(x.ratio, 3) : '–', y ? fmtNum(y.ratio, 3) : '–', x && y && x.symmetric && y.symmetric ? 'both symmetric' : 'not both symmetric'];
  });
  const e2e = join(a.e2e, b.e2e, (e) => e.model).map(([x, y]) => {
    const e = (x ?? y)!;
    return [e.model, x ? fmtNum(x.prefillTokPerS) : '–', y ? fmtNum(y.prefillTokPerS) : '–', ratio(x?.prefillTokPerS, y?.prefillTokPerS), x ? fmtNum(x.decodeTokPerS) : '–', y ? fmtNum(y.decodeTokPerS) : '–', ratio(x?.decodeTokPerS, y?.decodeTokPerS)];
  });
  return {
    results: { headers: ['suite', 'name', 'variant', 'shape', 'A ms', 'B ms', 'B ÷ A'], align: ['l', 'l', 'l', 'l', 'r', 'r', 'r'], rows: results },
    peers: { headers: ['suite', 'name', 'shape', 'peer', 'A peer/ours', 'B peer/ours', 'timing'], align: ['l', 'l', 'l', 'l', 'r', 'r', 'l'], rows: peers },
    e2e: { headers: ['model', 'A prefill tok/s', 'B prefill tok/s', 'B ÷ A', 'A decode tok/s', 'B decode tok/s', 'B ÷ A'], align: ['l', 'r', 'r', 'r', 'r', 'r', 'r'], rows: e2e },
  };
}

/** One line naming a report (for the comparison's A / B headings). */
export function reportLabel(r: BenchReport): string {
  const d = r.device;
  return `${r.timestamp} · ${r.quick ? 'quick' : 'full'} · ${r.env} · ${r.timing} timing · ${[d.vendor, d.architecture, d.description].filter(Boolean).join(' / ') || 'unknown adapter'}`;
}
