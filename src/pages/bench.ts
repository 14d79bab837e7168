/**
 * The benchmark page: device description, Run quick / Run full, progress, results with % of the
 * measured ceilings, roofline, peers, end to end, JSON export. The benchmark itself runs in a Worker
 * (src/bench/worker.ts) with the same code as `npm run bench`.
 *
 * Query parameters: auto=1 starts a run on load, quick=1 picks quick mode, suites=a,b selects suites,
 * peers=0 turns the onnxruntime-web peers off, timestamps=1 times with GPU timestamp queries. `window.__webmoeBench` exposes the state to scripts
 * (scripts/bench.mjs and the end-to-end test poll it).
 */
import type { BenchReport } from '../bench/types';
import type { FromWorker, ToWorker } from '../bench/worker';
import { compareTables, e2eTable, fmtBytes, fmtNum, reportLabel, shorten, peerChecksTable, peersTable, resultsTable, validateReport, type Table } from '../bench/report';
import { rooflineSvg } from './roofline';
import { escapeHtml } from './format';
import { probeWebGpu } from './adapter';

export interface BenchPageState {
  status: 'checking' | 'idle' | 'running' | 'done' | 'error' | 'unavailable';
  fraction: number;
  step: string;
  log: string[];
  result: BenchReport | null;
  error: string | null;
}

const state: BenchPageState = { status: 'checking', fraction: 0, step: '', log: [], result: null, error: null };
(window as any).__webmoeBench = state;

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);

function tableHtml(t: Table, opts: { highlight?: (row: string[]) => string } = {}): string {
  const head = t.headers.map((h, i) => `<th class="${t.align[i]}">${escapeHtml(h)}</th>`).join('');
  const body = t.rows.map((r) => `<tr class="${opts.highlight?.(r) ?? ''}">${r.map((c, i) => `<td class="${t.align[i]}">${escapeHtml(c)}</td>`).join('')}</tr>`).join('');
  return `<table class="data"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

// ---- device panel ---------------------------------------------------------------------------------

const KEY_LIMITS = [
  'maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup',
  'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupsPerDimension',
];

function fmtLimit(k: string, v: number): string {
  return /Size$/.test(k) ? fmtBytes(v) : v.toLocaleString('en-US');
}

function renderDevice(d: Pick<BenchReport['device'], 'vendor' | 'architecture' | 'device' | 'description' | 'isFallbackAdapter' | 'features' | 'limits'>) {
  const name = [d.vendor, d.architecture].filter(Boolean).join(' · ') || 'unknown vendor';
  const rows = [
    ['Adapter', escapeHtml(name)],
    ['Description', escapeHtml(d.description || d.device || '—')],
    ['Fallback adapter', d.isFallbackAdapter ? 'yes (software)' : 'no'],
    ...KEY_LIMITS.filter((k) => k in d.limits).map((k) => [escapeHtml(k), fmtLimit(k, d.limits[k])]),
  ];
  const wanted = ['shader-f16', 'subgroups', 'timestamp-query'];
  const chips = wanted.map((f) => `<span class="chip ${d.features.includes(f) ? 'on' : 'off'}">${f}</span>`).join('');
  $('device').innerHTML = `<table class="kv">${rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join('')}</table><div class="chips">${chips}</div>`;
}

async function describeAdapter(): Promise<boolean> {
  const probe = await probeWebGpu();
  if (probe.ok) {
    renderDevice({ ...probe.adapter, isFallbackAdapter: probe.adapter.fallback, features: probe.features, limits: probe.limits });
    return true;
  }
  if (probe.reason === 'insecure' || probe.reason === 'no-api') {
    unavailable(
      'WebGPU is not available in this browser.',
      'Use a recent Chrome or Edge (113 or later) on desktop, or Safari 26 / Firefox 141 or later. The page must be served over https or from localhost. On Linux, Chrome may need <code>--enable-unsafe-webgpu --enable-features=Vulkan</code>.',
    );
  } else {
    unavailable(
      'WebGPU is present, but no GPU adapter was found.',
      'The GPU may be blocklisted or its driver missing. Check <code>chrome://gpu</code>, update the graphics driver, or enable <code>chrome://flags/#enable-unsafe-webgpu</code>.',
    );
  }
  return false;
}

function unavailable(title: string, what: string) {
  state.status = 'unavailable';
  state.error = title;
  const n = $('unavailable');
  n.hidden = false;
  n.innerHTML = `<h2>Cannot benchmark here</h2><p class="notice-title">${escapeHtml(title)}</p><p>${what}</p><p class="muted">Results from other machines can still be compared from their exported JSON files.</p>`;
  $('device').textContent = 'No WebGPU adapter.';
  $('status').textContent = title;
}

// ---- a run ----------------------------------------------------------------------------------------

let worker: Worker | null = null;
let started = 0;
let timer: ReturnType<typeof setInterval> | null = null;

function setButtons(running: boolean) {
  $<HTMLButtonElement>('run-quick').disabled = running;
  $<HTMLButtonElement>('run-full').disabled = running;
  $<HTMLButtonElement>('download').disabled = running || !state.result;
}

function setProgress(fraction: number, step: string) {
  state.fraction = fraction;
  state.step = step;
  $('bar').style.width = `${(100 * fraction).toFixed(1)}%`;
  $('status').textContent = step;
}

function run(quick: boolean) {
  if (state.status === 'running') return;
  const suites = params.get('suites')?.split(',').filter(Boolean);
  const peers = params.get('peers') !== '0';
  const timestamps = params.get('timestamps') === '1';
  state.status = 'running';
  state.result = null;
  state.error = null;
  state.log = [];
  setButtons(true);
  $('errors-panel').hidden = true;
  setProgress(0, `Starting the ${quick ? 'quick' : 'full'} run…`);
  started = performance.now();
  timer = setInterval(() => ($('elapsed').textContent = `${((performance.now() - started) / 1000).toFixed(0)} s`), 500);
  worker ??= new Worker(new URL('../bench/worker.ts', import.meta.url), { type: 'module', name: 'webmoe-bench' });
  worker.onmessage = (ev: MessageEvent<FromWorker>) => {
    const m = ev.data;
    if (m.type === 'progress') {
      setProgress(m.fraction, m.step);
      state.log.push(m.step);
      if (state.log.length > 500) state.log.shift();
    } else if (m.type === 'done') {
      finish(m.report);
    } else if (m.type === 'error') {
      fail(`${m.name}: ${m.message}`);
    }
  };
  worker.onerror = (ev) => {
    fail(`The benchmark worker crashed: ${ev.message || 'unknown error'}`);
    worker?.terminate();
    worker = null;
  };
  worker.postMessage({ type: 'run', quick, suites, peers, timestamps, baseUrl: new URL('./', location.href).href } satisfies ToWorker);
}

function stopTimer() {
  if (timer) clearInterval(timer);
  timer = null;
  $('elapsed').textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`;
}

function fail(message: string) {
  stopTimer();
  state.status = 'error';
  state.error = message;
  $('status').innerHTML = `<span class="bad">Failed: ${escapeHtml(message)}</span>`;
  setButtons(false);
}

function finish(r: BenchReport) {
  stopTimer();
  state.result = r;
  state.status = 'done';
  setProgress(1, `Done: ${r.results.length} kernel results, ${r.peers.length} peer comparisons${r.errors.length ? `, ${r.errors.length} problem(s)` : ''} (${r.quick ? 'quick' : 'full'} run).`);
  render(r);
  setButtons(false);
}

function render(r: BenchReport) {
  renderDevice(r.device);
  for (const el of document.querySelectorAll<HTMLElement>('#ceilings .value')) {
    const v = (r.ceilings as any)[el.dataset.k!];
    el.textContent = fmtNum(v);
  }
  $('results').innerHTML = r.results.length ? tableHtml(resultsTable(r), { highlight: (row) => (row[0] === 'ceilings' ? 'ceiling' : '') }) : '<p class="empty">No results.</p>';
  const svg = rooflineSvg(r.results, r.ceilings);
  $('roofline').innerHTML = svg || '<p class="empty">No ceilings measured.</p>';
  $('peers').innerHTML = r.peers.length ? tableHtml(peersTable(r), { highlight: (row) => (parseFloat(row[6]) >= 1 ? 'win' : 'loss') }) : `<p class="empty">${r.errors.some((e) => /onnxruntime/.test(e.message)) ? 'The peers could not run (see Problems).' : 'No peer comparisons in this run.'}</p>`;
  $('peer-checks').innerHTML = r.peerChecks.length ? `<h3>Peer output checks <span class="hint">the peer's output against ours on a small shape</span></h3>${tableHtml(peerChecksTable(r), { highlight: (row) => (row[6] === 'yes' ? '' : 'bad-row') })}` : '';
  $('e2e').innerHTML = r.e2e.length ? tableHtml(e2eTable(r)) : '<p class="empty">No end-to-end suite in this run.</p>';
  $('errors-panel').hidden = !r.errors.length;
  $('errors').innerHTML = r.errors.map((e) => `<li><b>${escapeHtml(e.suite)}</b>: <span title="${escapeHtml(e.message)}">${escapeHtml(shorten(e.message, 2, 300))}</span></li>`).join('');
}

function download() {
  const r = state.result;
  if (!r) return;
  const blob = new Blob([JSON.stringify(r, null, 2)], { type: 'application/json' });
  const a = document.createElement('a');
  const dev = (r.device.description || r.device.vendor || 'gpu').replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').toLowerCase().slice(0, 40);
  a.href = URL.createObjectURL(blob);
  a.download = `webmoe-bench-${dev}-${r.timestamp.slice(0, 19).replace(/[:T]/g, '-')}.json`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ---- two saved reports side by side ---------------------------------------------------------------

const compared: { a: BenchReport | null; b: BenchReport | null } = { a: null, b: null };

async function readReport(file: File): Promise<BenchReport> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await file.text());
  } catch (e) {
    throw new Error(`${file.name}: not JSON (${(e as Error).message})`);
  }
  const problems = validateReport(parsed);
  if (problems.length) throw new Error(`${file.name}: not a webmoe benchmark report (${problems.slice(0, 3).join('; ')}${problems.length > 3 ? '; …' : ''})`);
  return parsed as BenchReport;
}

function renderComparison() {
  const { a, b } = compared;
  const el = $('compare');
  if (!a || !b) { el.innerHTML = `<p class="empty">${a || b ? 'Pick the other report.' : 'Pick two reports.'}</p>`; return; }
  const t = compareTables(a, b);
  el.dataset.rows = String(t.results.rows.length + t.peers.rows.length + t.e2e.rows.length);
  el.innerHTML = `<p><b>A</b>: ${escapeHtml(reportLabel(a))}<br><b>B</b>: ${escapeHtml(reportLabel(b))}</p>`
    + (a.timing !== b.timing ? `<p class="bad">A uses ${a.timing} timing and B ${b.timing} timing: kernel times are not comparable.</p>` : '')
    + `<h3>Kernels</h3><div class="table-wrap">${tableHtml(t.results)}</div>`
    + (t.peers.rows.length ? `<h3>Peers</h3><div class="table-wrap">${tableHtml(t.peers)}</div>` : '')
    + (t.e2e.rows.length ? `<h3>End to end</h3><div class="table-wrap">${tableHtml(t.e2e)}</div>` : '');
}

function compareInput(which: 'a' | 'b') {
  const input = $<HTMLInputElement>(`compare-${which}`);
  input.addEventListener('change', async () => {
    const file = input.files?.[0];
    compared[which] = null;
    if (file) {
      try {
        compared[which] = await readReport(file);
      } catch (e) {
        $('compare').innerHTML = `<p class="bad">${escapeHtml((e as Error).message)}</p>`;
        return;
      }
    }
    renderComparison();
  });
}

async function main() {
  compareInput('a');
  compareInput('b');
  $('run-quick').addEventListener('click', () => run(true));
  $('run-full').addEventListener('click', () => run(false));
  $('download').addEventListener('click', download);
  const ok = await describeAdapter().catch((e) => {
    unavailable('WebGPU could not be queried.', escapeHtml((e as Error).message));
    return false;
  });
  if (!ok) return;
  state.status = 'idle';
  setButtons(false);
  $('status').textContent = 'Ready. The quick run takes about a minute on a software GPU; the full run several.';
  if (params.get('auto') === '1') run(params.get('quick') === '1');
}

void main();
