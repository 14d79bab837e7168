/**
 * The demo page's controller: loads a model into the engine (bundled, URL, folder, drag and drop),
 * streams chat or raw completions, and keeps the routing, memory, sparsity and device views current.
 * The engine is passed in (the page uses the Worker engine), so the page never blocks on the GPU.
 */
import type { ChatMessage, EngineStats, GenerateOptions, GenerationResult, LoadOptions, LoadProgress, ModelInfo, ModelRef, SparsityOptions, SpeculationStats, Engine } from '../../engine/types';
import { $, escapeHtml, fmtBytes, fmtCount, fmtMs, fmtNum } from '../format';
import { LAYOUT } from './layout';
import { ChatView, type Reply } from './chat';
import { RoutingView } from './routing';
import { MemoryView } from './memory';
import { deviceTableHtml, explainNoWebGpu } from './webgpu';
import { probeWebGpu, type GpuProbe } from '../adapter';
import { dropToModel, pickDirectory } from './files';
import { DEFAULT_CHOICE, ENGINE_LABELS, saveEngineChoice, type EngineChoice, type EngineKind } from './engine-choice';
import type { LoadNotice } from '../../engine/types';

/**
 * The worker, service-worker or remote engine, or for UI work a fake: an Engine that may be terminated
 * (worker) or closed (service worker), and may say what its service worker holds.
 */
export interface DemoEngine extends Engine {
  terminate?(): void;
  close?(): void;
  status?(): Promise<{ instance: string; loadCount: number }>;
}

export interface DemoOptions {
  root: HTMLElement;
  /** The engine for a choice (a bad remote URL may throw a typed error). */
  createEngine: (choice: EngineChoice) => DemoEngine;
  /** The engine chosen at start (default: the worker engine); the page stores later choices. */
  engineChoice?: EngineChoice;
  /** The model loaded at start (a URL relative to the page), or null to wait for the user. */
  initialModel: string | null;
  probe?: () => Promise<GpuProbe>;
  /** Where a local engine runs the model (LoadOptions.device; default webgpu). */
  device?: 'webgpu' | 'wasm' | 'auto';
  /** The WASM engine's threads (LoadOptions.threads; default: the cores where the page is cross-origin isolated). */
  threads?: number;
}

type SparseMode = 'dense' | '2:4' | 'vnm' | '2:4-recovered' | '64:2:5-recovered';
/**
 * The panel's modes. Load-time modes prune whatever model is loaded; a `model` mode loads a pre-pruned,
 * recovery-trained sibling of the bundled model (public/models/<model>/, tools/train/recover.py), which
 * runs on the sparse kernels by itself (options undefined: the file's pattern). `quality` names the row of
 * the bundled model's measured table (public/models/sparsity-quality.json, tools/sparse-quality.mjs).
 */
const SPARSE: Record<SparseMode, { label: string; options: SparsityOptions | null | undefined; model?: string; quality: [string, string] }> = {
  dense: { label: 'Dense', options: null, quality: ['dense', '—'] },
  '2:4': { label: '2:4', options: { format: '2:4', apply: 'experts' }, quality: ['2:4', 'magnitude'] },
  vnm: { label: '64:2:8', options: { format: 'vnm', v: 64, m: 8, apply: 'experts' }, quality: ['64:2:8', 'magnitude'] },
  '2:4-recovered': { label: '2:4 recovered', options: undefined, model: 'webmoe-tiny-2-4-recovered', quality: ['2:4', '+ recovery (magnitude mask)'] },
  '64:2:5-recovered': { label: '64:2:5 recovered', options: undefined, model: 'webmoe-tiny-64-2-5-recovered', quality: ['64:2:5', '+ recovery (magnitude mask)'] },
};
/** Measured held-out perplexity of the bundled model per (pattern, pruning) (tools/sparse-quality.mjs --json). */
type QualityTable = { tokens: number; results: Array<{ pattern: string; pruning: string; ppl: number; ratio: number }> };
const PROBE_TOKENS = 32;

type State = 'checking' | 'unsupported' | 'idle' | 'loading' | 'ready' | 'generating' | 'error';

const PHASES: Record<LoadProgress['phase'], string> = {
  config: 'Reading config.json',
  index: 'Reading the weight index',
  headers: 'Reading safetensors headers',
  weights: 'Loading weights',
  upload: 'Uploading to the GPU',
  done: 'Finishing',
};

const EXAMPLES = ['The Fulton County Grand Jury said', 'In the afternoon the children', 'The President told reporters that', 'Music is'];

export class DemoApp {
  private engine: DemoEngine | null = null;
  private info: ModelInfo | null = null;
  private ref: ModelRef | null = null;
  private refLabel = '';
  private sparse: SparseMode = 'dense';
  /** GPU memory budget of the loads (LoadOptions.gpuMemoryBudget), in bytes; null: no limit. */
  private gpuBudget: number | null = null;
  /** The bundled model's URL when it (or one of its recovered siblings) is what is loaded, else null. */
  private bundled: string | null = null;
  private quality: QualityTable | null = null;
  private mode: 'chat' | 'raw' = 'chat';
  private history: ChatMessage[] = [];
  private state: State = 'checking';
  private perMode = new Map<SparseMode, { tokps?: number; weightBytes?: number; probe?: { prompt: string; tokens: number[]; text: string } }>();
  private statsBusy = false;
  private choice: EngineChoice;
  private get device(): 'webgpu' | 'wasm' | 'auto' { return this.o.device ?? 'webgpu'; }
  private gpuOk = false;
  private chat: ChatView;
  private routing: RoutingView;
  private memory: MemoryView;
  private el: (sel: string) => HTMLElement;

  constructor(private o: DemoOptions) {
    o.root.innerHTML = LAYOUT;
    this.el = (sel) => $(sel, o.root);
    this.chat = new ChatView(this.el('#messages'), this.el('#empty'), (i) => this.routing.pin(i));
    this.routing = new RoutingView(this.el('#routing-panel'), this.el('#tooltip'));
    this.memory = new MemoryView(this.el('#memory-panel'));
    this.choice = o.engineChoice ?? { ...DEFAULT_CHOICE };
    this.wire();
    this.renderEngineChoice();
    this.renderSparse();
    this.renderExamples();
  }

  async start(): Promise<void> {
    const probe = await (this.o.probe ?? probeWebGpu)();
    this.el('#gpu-status').innerHTML = deviceTableHtml(probe);
    this.gpuOk = probe.ok;
    this.el('#gpu-status').dataset.ready = probe.ok ? '1' : 'error';
    if (!probe.ok && this.device === 'webgpu') this.el('#empty').innerHTML = explainNoWebGpu(probe);
    await this.connect();
  }

  // ---- engine choice ---------------------------------------------------------------------------

  /** Starts the chosen engine and loads its model (the bundled one locally, the server's remotely). */
  private async connect(): Promise<void> {
    const c = this.choice;
    this.renderEngineChoice();
    // Without WebGPU a local engine can still run the WebAssembly engine (?device=wasm or auto).
    if (c.kind !== 'remote' && !this.gpuOk && this.device === 'webgpu') {
      this.setState('unsupported', 'WebGPU unavailable');
      return;
    }
    try {
      this.engine = this.o.createEngine(c);
    } catch (e) {
      this.showError(e);
      this.setState('error', 'The engine could not start');
      return;
    }
    if (c.kind === 'remote') await this.load(c.model, `${c.model || 'the model'} at ${c.baseURL}`);
    else if (this.o.initialModel) {
      // The bundled model unless the page was given another (?model=<url>): then the URL's last part.
      const url = new URL(this.o.initialModel, location.href).href;
      await this.load(url, /\/models\/webmoe-tiny\/?$/.test(url) ? 'bundled model' : shortName(url));
    }
    else {
      this.setState('idle', 'No model loaded');
      this.el('#empty-model').textContent = 'Load a model by URL, open a folder or a .gguf file, or drop one on the page.';
    }
  }

  /** Switches engines: the old one stops (a service worker keeps its model for other pages). */
  async switchEngine(choice: EngineChoice): Promise<void> {
    if (this.state === 'loading' || this.state === 'checking') return;
    if (this.state === 'generating') this.engine?.abort();
    this.choice = choice;
    saveEngineChoice(choice);
    const old = this.engine;
    this.engine = null;
    old?.terminate?.();
    old?.close?.();
    this.info = null;
    this.ref = null;
    this.perMode.clear();
    this.reset();
    this.el('#model-info').innerHTML = '';
    this.el('#model-name').textContent = '—';
    this.el('#load-notices').innerHTML = '';
    this.el('#load-notices').hidden = true;
    this.el('#error-banner').hidden = true;
    await this.connect();
  }

  private renderEngineChoice(): void {
    const c = this.choice;
    this.el('#engine-kind').querySelectorAll<HTMLElement>('button').forEach((b) => b.setAttribute('aria-checked', String(b.dataset.kind === c.kind)));
    const form = this.el('#remote-form');
    form.hidden = c.kind !== 'remote';
    (this.el('#remote-url') as HTMLInputElement).value = c.baseURL;
    (this.el('#remote-key') as HTMLInputElement).value = c.apiKey;
    (this.el('#remote-model') as HTMLInputElement).value = c.model;
    // Model sources and sparsity are for an engine on this GPU; a server holds its own weights.
    for (const id of ['#url-form', '#sparse-panel']) this.el(id).hidden = c.kind === 'remote';
    this.el('#pick-folder').closest('.row')!.toggleAttribute('hidden', c.kind === 'remote');
    void this.refreshEngineStatus();
  }

  /** What the engine is; for the service worker, its instance and how many loads it ran since it started. */
  private async refreshEngineStatus(): Promise<void> {
    const s = this.el('#engine-status');
    const kind: EngineKind = this.choice.kind;
    s.dataset.engine = kind;
    if (kind === 'remote') s.textContent = `${ENGINE_LABELS.remote}: ${this.choice.baseURL} (OpenAI-compatible API; expert routing and memory stay on the server)`;
    else if (kind === 'worker') s.textContent = 'A Worker of this page runs the model on this GPU; it loads again on every visit.';
    else if (this.engine?.status && this.info) {
      try {
        const st = await this.engine.status();
        s.dataset.instance = st.instance;
        s.dataset.swLoads = String(st.loadCount);
        s.textContent = `Service worker ${st.instance.slice(0, 8)}: ${st.loadCount} model load${st.loadCount === 1 ? '' : 's'} since it started. The model stays loaded while you move between pages.`;
      } catch (e) {
        this.showError(e);
      }
    } else s.textContent = 'The site\'s service worker runs the model on this GPU; it stays loaded while you move between pages.';
  }

  private notice(n: LoadNotice): void {
    const list = this.el('#load-notices');
    const li = document.createElement('li');
    li.dataset.kind = n.kind;
    li.textContent = n.message;
    list.append(li);
    list.hidden = false;
    console.info(`webmoe: ${n.kind}: ${n.message}`);
  }

  // ---- state, errors -------------------------------------------------------------------------

  private setState(state: State, text: string): void {
    this.state = state;
    const s = this.el('#status');
    s.dataset.state = state;
    this.el('#status-text').textContent = text;
    const busy = state === 'loading' || state === 'generating';
    (this.el('#send') as HTMLButtonElement).disabled = state !== 'ready';
    this.el('#send').hidden = state === 'generating';
    this.el('#stop').hidden = state !== 'generating';
    for (const id of ['#probe', '#pick-folder', '#pick-gguf', '#reload-bundled']) (this.el(id) as HTMLButtonElement).disabled = busy || state === 'unsupported';
    this.el('#engine-kind').querySelectorAll('button').forEach((b) => ((b as HTMLButtonElement).disabled = state === 'loading' || state === 'checking'));
    (this.el('#remote-connect') as HTMLButtonElement).disabled = state === 'loading' || state === 'checking';
    (this.el('#url-form button') as HTMLButtonElement).disabled = busy || state === 'unsupported';
    this.el('#sparse-mode').querySelectorAll('button').forEach((b) => ((b as HTMLButtonElement).disabled = busy || state === 'unsupported'));
    (this.el('#probe') as HTMLButtonElement).disabled = state !== 'ready';
  }

  showError(e: unknown): void {
    const err = e as { name?: string; code?: string; message?: string };
    // Minified builds can mangle class names ("q"): fall back to a generic but honest name.
    const name = typeof err?.name === 'string' && /^[A-Z]\w{2,}Error$/.test(err.name) ? err.name : err?.code ? 'WebMoeError' : 'Error';
    this.el('#error-name').textContent = name;
    this.el('#error-code').textContent = err?.code ?? '';
    this.el('#error-code').hidden = !err?.code;
    this.el('#error-message').textContent = err?.message ?? String(e);
    const b = this.el('#error-banner');
    b.dataset.code = err?.code ?? '';
    b.hidden = false;
    console.error(e);
  }

  // ---- loading ---------------------------------------------------------------------------------

  // A recovered mode is a file of the bundled model: another model loads dense by default.
  async load(ref: ModelRef, label: string, sparse: SparseMode = SPARSE[this.sparse].model ? 'dense' : this.sparse): Promise<void> {
    if (!this.engine) return;
    if (this.state === 'generating') this.engine.abort();
    this.setState('loading', `Loading ${label}…`);
    this.el('#load-notices').innerHTML = '';
    this.el('#load-notices').hidden = true;
    this.renderSparse(sparse);
    const bar = this.el('#load-bar'), text = this.el('#load-label'), box = this.el('#load-progress');
    box.hidden = false;
    box.dataset.phase = 'config';
    if (!this.info) this.el('#model-name').textContent = label;
    bar.style.width = '0%';
    text.textContent = 'Starting…';
    let last: LoadProgress | null = null, raf = 0;
    const draw = () => {
      raf = 0;
      const p = last!;
      const frac = p.bytesTotal > 0 ? p.bytesLoaded / p.bytesTotal : p.tensorsTotal > 0 ? p.tensorsLoaded / p.tensorsTotal : 0;
      box.dataset.phase = p.phase;
      box.classList.toggle('indeterminate', !(p.bytesTotal > 0 || p.tensorsTotal > 0));
      bar.style.width = `${(100 * Math.min(1, frac)).toFixed(1)}%`;
      const parts = [PHASES[p.phase]];
      if (p.bytesTotal > 0 || p.tensorsTotal > 0) parts.push(`${Math.floor(100 * Math.min(1, frac))}%`);
      if (p.bytesTotal > 0) parts.push(`${fmtBytes(p.bytesLoaded)} / ${fmtBytes(p.bytesTotal)}`);
      if (p.tensorsTotal > 0) parts.push(`${p.tensorsLoaded} / ${p.tensorsTotal} tensors`);
      text.textContent = parts.join(' · ');
    };
    const t0 = performance.now();
    try {
      // The plan first (config.json and headers only): a model that cannot fit this device says why
      // here, before its weights download. A remote engine's memory is the server's (no plan).
      // (The plan is WebGPU's: the WASM engine checks its 4 GiB memory itself at load.)
      if (this.engine.plan && this.choice.kind !== 'remote' && this.device === 'webgpu') {
        text.textContent = 'Planning GPU memory from config.json and the tensor headers';
        this.memory.planning(label);
        try {
          this.memory.showPlan(await this.engine.plan(ref, { sparsity: SPARSE[sparse].options, gpuMemoryBudget: this.gpuBudget ?? undefined }), label);
        } catch (e) {
          if ((e as { code?: string }).code === 'GPU_LIMIT_EXCEEDED') this.memory.showPlanError(e as Error, label);
          throw e;
        }
      }
      const info = await this.engine.load(ref, {
        ...(this.choice.kind !== 'remote' && this.device !== 'webgpu' ? { device: this.device, threads: this.o.threads } : {}),
        sparsity: SPARSE[sparse].options,
        gpuMemoryBudget: this.gpuBudget ?? undefined,
        onProgress: (p) => {
          if (p.notice) this.notice(p.notice);
          last = p;
          if (!raf) raf = requestAnimationFrame(draw);
        },
      });
      this.info = info;
      const sibling = SPARSE[sparse].model;
      if (!sibling) {
        this.ref = ref;
        this.refLabel = label;
        this.bundled = label === 'bundled model' && typeof ref === 'string' ? ref : null;
      }
      this.sparse = sparse;
      if (this.bundled && !this.quality) void this.loadQuality(this.bundled);
      box.hidden = true;
      const panel = this.el('#model-panel');
      panel.dataset.source = label;
      panel.dataset.loads = String(Number(panel.dataset.loads ?? 0) + 1);
      this.routing.setModel(info);
      this.renderModel(info, performance.now() - t0);
      if (!info.chatTemplate && this.history.length === 0) this.setMode('raw');
      this.setState('ready', `Ready · ${info.sparsity}`);
      void this.refreshStats();
      void this.refreshEngineStatus();
    } catch (e) {
      box.hidden = true;
      this.showError(e);
      if (this.info) this.setState('ready', `Ready · ${this.info.sparsity} (the new load failed)`);
      else {
        this.el('#model-name').textContent = '—';
        this.setState('error', 'Model failed to load');
        this.el('#empty-model').innerHTML = `Could not load <code>${escapeHtml(typeof ref === 'string' ? ref : label)}</code>. Load a model by URL, open a folder or a .gguf file, or drop one on the page.`;
      }
    } finally {
      this.renderSparse();
    }
  }

  private renderModel(info: ModelInfo, ms: number): void {
    const name = shortName(info.name);
    this.el('#model-name').textContent = name;
    this.el('#model-name').title = info.name;
    const fact = (k: string, v: string) => `<div><span>${k}</span><b>${v}</b></div>`;
    this.el('#model-info').innerHTML = [
      fact('Family', `${escapeHtml(info.family)} <small>(${escapeHtml(info.modelType)})</small>`),
      fact('Parameters', `${fmtCount(info.parameters)} <small>(${fmtCount(info.activeParameters)} active)</small>`),
      fact('Layers', `${info.layers} <small>(${info.moeLayers.length} MoE)</small>`),
      fact('Experts', `${info.experts} <small>(top-${info.expertsPerToken})</small>`),
      fact('Weights', `${info.weightStorage}${info.expertStorage && info.expertStorage !== info.weightStorage && !info.expertStorage.startsWith('sparse') && info.expertStorage !== 'none' ? ` (experts ${info.expertStorage})` : ''} · ${info.sparsity}`),
      fact('Context', `${info.contextLength} tokens`),
      fact('Loaded in', fmtMs(ms)),
    ].join('');
    this.el('#empty-model').innerHTML = `<b>${escapeHtml(name)}</b>: ${fmtCount(info.parameters)} parameters, ${info.experts} experts per MoE layer, ${info.expertsPerToken} active per token. ${
      info.chatTemplate ? 'Ask it something, or switch to raw completion.' : 'It has no chat template, so raw completion is selected: type the beginning of a text.'
    }`;
  }

  // ---- generation ------------------------------------------------------------------------------

  private settings(): GenerateOptions {
    const num = (id: string) => Number((this.el(id) as HTMLInputElement).value);
    const seedText = (this.el('#seed') as HTMLInputElement).value.trim();
    const o: GenerateOptions = {
      temperature: num('#temperature'),
      topK: Math.round(num('#top-k')),
      topP: num('#top-p'),
      repetitionPenalty: num('#rep-penalty'),
      maxTokens: Math.max(1, Math.round(num('#max-tokens'))),
      routing: (this.el('#routing-toggle') as HTMLInputElement).checked,
      stopAtEos: (this.el('#stop-eos') as HTMLInputElement).checked,
    };
    if (seedText !== '') o.seed = Math.round(Number(seedText));
    if ((this.el('#speculative-toggle') as HTMLInputElement).checked && this.info?.mtpLayers) o.speculative = 'mtp';
    return o;
  }

  async send(): Promise<void> {
    const input = this.el('#prompt') as HTMLTextAreaElement;
    const text = input.value.trim();
    if (!text || !this.engine || !this.info || this.state !== 'ready') return;
    const opts = this.settings();
    const raw = this.mode === 'raw';
    let userEl: HTMLElement | null = null;
    if (!raw) {
      this.history.push({ role: 'user', content: text });
      userEl = this.chat.addUser(text);
    }
    input.value = '';
    const reply = this.chat.startReply(raw ? text : null, { model: shortName(this.info.name), mode: SPARSE[this.sparse].label });
    this.routing.beginReply();
    const r = await this.stream(reply, raw ? text : this.history.slice(), opts);
    if (!raw) {
      if (r) this.history.push({ role: 'assistant', content: r.text });
      else {
        this.history.pop();
        userEl?.classList.add('failed');
      }
    }
  }

  /** Streams one reply into the chat and the routing view; null when it failed. */
  private async stream(reply: Reply, input: string | ChatMessage[], opts: GenerateOptions): Promise<GenerationResult | null> {
    const engine = this.engine!;
    this.setState('generating', 'Generating…');
    const t0 = performance.now();
    let tFirst = 0, lastPaint = 0;
    const timer = setInterval(() => void this.refreshStats(), 1500);
    try {
      const it = typeof input === 'string' ? engine.generate(input, opts) : engine.chat(input, opts);
      let result: GenerationResult;
      for (;;) {
        const n = await it.next();
        if (n.done) { result = n.value; break; }
        const now = performance.now();
        if (!tFirst) {
          tFirst = now;
          this.el('#ttft').textContent = fmtMs(tFirst - t0);
        }
        reply.push(n.value);
        this.routing.addToken(n.value);
        if (now - lastPaint > 150) {
          lastPaint = now;
          const rate = reply.tokens > 1 ? (reply.tokens - 1) / ((now - tFirst) / 1000) : 0;
          this.el('#tokps').textContent = rate ? fmtNum(rate) : '—';
          this.el('#ntokens').textContent = String(reply.tokens);
          reply.progress(rate, tFirst - t0);
        }
      }
      reply.finish(result);
      this.metrics(result);
      if (result.tokens.length > 1) this.modeStats().tokps = result.decodeTokPerS;
      this.renderSparse();
      return result;
    } catch (e) {
      reply.fail(((e as Error)?.message ?? String(e)).split('\n')[0]);
      this.showError(e);
      return null;
    } finally {
      clearInterval(timer);
      if (this.state === 'generating') this.setState('ready', `Ready · ${this.info?.sparsity ?? ''}`);
      void this.refreshStats();
      void this.refreshEngineStatus();
    }
  }

  private metrics(r: GenerationResult): void {
    this.el('#ttft').textContent = fmtMs(r.timeToFirstTokenMs);
    this.el('#tokps').textContent = r.decodeTokPerS > 0 ? fmtNum(r.decodeTokPerS) : '—';
    this.el('#tokps').dataset.value = String(r.decodeTokPerS);
    this.el('#prefill').textContent = r.prefillTokPerS > 0 ? fmtNum(r.prefillTokPerS) : '—';
    this.el('#ntokens').textContent = String(r.tokens.length);
    this.showSpeculation(r.speculation);
  }

  /** The MTP acceptance rate and tokens per main-model forward (live while generating, from stats()). */
  private showSpeculation(sp: SpeculationStats | undefined): void {
    const el = this.el('#mtp-accept');
    el.textContent = sp?.mode === 'mtp' && sp.drafted > 0 ? `${Math.round(sp.acceptanceRate * 100)}% · ${sp.tokensPerForward.toFixed(2)}/fwd` : '—';
    el.dataset.value = sp?.mode === 'mtp' ? String(sp.acceptanceRate) : '';
  }

  async refreshStats(): Promise<EngineStats | null> {
    if (!this.engine || !this.info || this.statsBusy) return null;
    this.statsBusy = true;
    try {
      const s = await this.engine.stats();
      this.memory.update(s);
      this.renderBackend(s);
      if (s.weightBytes && this.modeStats().weightBytes !== s.weightBytes) {
        this.modeStats().weightBytes = s.weightBytes;
        this.renderSparse();
      }
      this.routing.setLoad(s.expertLoad);
      this.renderOffload(s.offload);
      if (this.state === 'generating') this.showSpeculation(s.speculation);
      return s;
    } catch (e) {
      this.showError(e);
      return null;
    } finally {
      this.statsBusy = false;
    }
  }

  /** Expert offload figures and the resident experts in the routing map (hidden without offload). */
  private renderOffload(o: EngineStats['offload']): void {
    this.el('#offload-table').hidden = !o;
    this.el('#routing-resident').hidden = !o;
    this.routing.setResident(o ? o.resident : null);
    if (!o) return;
    this.el('#offload-capacity').textContent = `${o.capacity} of ${o.experts} per MoE layer`;
    this.el('#offload-hit').textContent = `${(100 * o.hitRate).toFixed(1)}%`;
    this.el('#offload-hit').dataset.value = String(o.hitRate);
    this.el('#offload-bytes').textContent = fmtBytes(o.bytesUploadedPerToken);
    this.el('#offload-stalls').textContent = fmtNum(o.stallsPerToken);
  }

  /** The device panel's "runs on" line: which engine the model runs on and why (engine.stats()). */
  private renderBackend(s: EngineStats): void {
    const el = this.el('#backend-status');
    el.dataset.backend = s.backend ?? '';
    el.hidden = !s.backend;
    if (s.backend) el.innerHTML = `Runs on <b>${s.backend === 'wasm' ? 'WebAssembly (CPU)' : 'WebGPU'}</b>: ${escapeHtml(s.device)}<br><span class="muted">${escapeHtml(s.backendReason ?? '')}</span>`;
  }

  private reset(): void {
    if (this.state === 'generating') this.engine?.abort();
    this.history = [];
    this.chat.clear();
    this.routing.beginReply();
    for (const id of ['#ttft', '#tokps', '#prefill', '#mtp-accept']) this.el(id).textContent = '—';
    this.el('#ntokens').textContent = '0';
  }

  private setMode(mode: 'chat' | 'raw'): void {
    this.mode = mode;
    this.el('#mode').querySelectorAll<HTMLElement>('button').forEach((b) => b.setAttribute('aria-checked', String(b.dataset.mode === mode)));
    (this.el('#prompt') as HTMLTextAreaElement).placeholder =
      mode === 'chat' ? 'Type a message — Enter to send, Shift+Enter for a new line' : 'Type the beginning of a text for the model to continue — Enter to run';
  }

  // ---- sparsity ----------------------------------------------------------------------------------

  private modeStats(m: SparseMode = this.sparse) {
    let s = this.perMode.get(m);
    if (!s) this.perMode.set(m, (s = {}));
    return s;
  }

  private async probe(): Promise<void> {
    if (!this.engine || !this.info || this.state !== 'ready') return;
    const prompt = (this.el('#probe-prompt') as HTMLInputElement).value.trim() || 'The';
    const reply = this.chat.startReply(prompt, { model: shortName(this.info.name), mode: `${SPARSE[this.sparse].label} · probe` });
    this.routing.beginReply();
    const r = await this.stream(reply, prompt, { temperature: 0, maxTokens: PROBE_TOKENS, repetitionPenalty: 1, stopAtEos: false, routing: (this.el('#routing-toggle') as HTMLInputElement).checked });
    if (r) {
      this.modeStats().probe = { prompt, tokens: r.tokens, text: r.text };
      this.renderSparse();
    }
  }

  /** The bundled model's measured sparsity table (a static file next to it); the column stays '—' without it. */
  private async loadQuality(bundled: string): Promise<void> {
    try {
      const r = await fetch(new URL('../sparsity-quality.json', bundled));
      if (!r.ok) return;
      this.quality = (await r.json()) as QualityTable;
      this.renderSparse();
    } catch {
      // offline or not served: the panel works without the measured column
    }
  }

  private renderSparse(pending?: SparseMode): void {
    const current = pending ?? this.sparse;
    this.el('#sparse-mode').querySelectorAll<HTMLElement>('button').forEach((b) => {
      b.setAttribute('aria-checked', String(b.dataset.mode === current));
      if (SPARSE[b.dataset.mode as SparseMode]?.model) b.hidden = !this.bundled;
    });
    const measured = (m: SparseMode) => {
      const q = this.bundled && this.quality?.results.find((r) => r.pattern === SPARSE[m].quality[0] && r.pruning === SPARSE[m].quality[1]);
      return q ? `<td data-value="${q.ppl}" title="held-out perplexity of the bundled model (${this.quality!.tokens} tokens, tools/sparse-quality.mjs)">${q.ppl.toFixed(1)}${m === 'dense' ? '' : ` <small>×${q.ratio.toFixed(2)}</small>`}</td>` : '<td>—</td>';
    };
    const dense = this.perMode.get('dense')?.probe;
    const rows = (Object.keys(SPARSE) as SparseMode[]).filter((m) => !SPARSE[m].model || this.bundled).map((m) => {
      const s = this.perMode.get(m) ?? {};
      let same = '—', title = '';
      if (s.probe) {
        title = s.probe.text;
        if (m === 'dense') same = 'reference';
        else if (!dense) same = 'probe dense first';
        else if (dense.prompt !== s.probe.prompt) same = 'other prompt';
        else {
          let k = 0;
          while (k < dense.tokens.length && k < s.probe.tokens.length && dense.tokens[k] === s.probe.tokens[k]) k++;
          same = `${k} / ${Math.min(dense.tokens.length, s.probe.tokens.length)}`;
        }
      }
      return `<tr data-mode="${m}" class="${m === this.sparse && this.info ? 'current' : ''}"><td>${SPARSE[m].label}</td>${measured(m)}<td>${s.weightBytes ? fmtBytes(s.weightBytes) : '—'}</td><td data-value="${s.tokps ?? ''}">${s.tokps ? fmtNum(s.tokps) : '—'}</td><td title="${escapeHtml(title)}">${same}</td></tr>`;
    });
    this.el('#sparse-table tbody').innerHTML = rows.join('');
    const probes = (Object.keys(SPARSE) as SparseMode[]).filter((m) => this.perMode.get(m)?.probe);
    this.el('#probe-output').innerHTML = probes
      .map((m) => `<div><b>${SPARSE[m].label}</b> ${escapeHtml(this.perMode.get(m)!.probe!.text.trim().slice(0, 160))}</div>`)
      .join('');
  }

  // ---- wiring ------------------------------------------------------------------------------------

  private wire(): void {
    const el = this.el;
    el('#error-dismiss').addEventListener('click', () => (el('#error-banner').hidden = true));
    el('#composer').addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.send();
    });
    el('#prompt').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        void this.send();
      }
    });
    el('#stop').addEventListener('click', () => this.engine?.abort());
    el('#reset').addEventListener('click', () => this.reset());
    el('#mode').addEventListener('click', (ev) => {
      const b = (ev.target as HTMLElement).closest<HTMLElement>('button[data-mode]');
      if (b) this.setMode(b.dataset.mode as 'chat' | 'raw');
    });
    el('#sparse-mode').addEventListener('click', (ev) => {
      const b = (ev.target as HTMLElement).closest<HTMLButtonElement>('button[data-mode]');
      if (!b || b.disabled) return;
      const m = b.dataset.mode as SparseMode;
      const sibling = SPARSE[m].model;
      if (!this.ref) {
        this.sparse = m;
        this.renderSparse();
      } else if (m !== this.sparse) {
        if (sibling && this.bundled) void this.load(new URL(`../${sibling}/`, this.bundled).href, `${SPARSE[m].label} (bundled model)`, m);
        else if (!sibling) void this.load(this.ref, this.refLabel, m);
      }
    });
    el('#probe').addEventListener('click', () => void this.probe());
    el('#budget-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = (this.el('#gpu-budget') as HTMLInputElement).value.trim();
      const mib = v === '' ? null : Number(v);
      if (mib !== null && !(mib > 0)) { this.showError(new Error('The GPU budget must be a positive number of MiB, or empty for no limit')); return; }
      this.gpuBudget = mib === null ? null : Math.floor(mib * 2 ** 20);
      if (this.ref) void this.load(this.ref, this.refLabel);
    });
    el('#engine-kind').addEventListener('click', (ev) => {
      const b = (ev.target as HTMLElement).closest<HTMLButtonElement>('button[data-kind]');
      if (!b || b.disabled) return;
      const kind = b.dataset.kind as EngineKind;
      if (kind === this.choice.kind) return;
      // Remote: show the form first; the switch happens on Connect.
      if (kind === 'remote') {
        this.el('#remote-form').hidden = false;
        this.el('#engine-kind').querySelectorAll<HTMLElement>('button').forEach((x) => x.setAttribute('aria-checked', String(x === b)));
        (this.el('#remote-url') as HTMLInputElement).focus();
        return;
      }
      void this.switchEngine({ ...this.choice, kind });
    });
    el('#remote-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const val = (id: string) => (this.el(id) as HTMLInputElement).value.trim();
      void this.switchEngine({ kind: 'remote', baseURL: val('#remote-url'), apiKey: val('#remote-key'), model: val('#remote-model') });
    });
    el('#reset-load').addEventListener('click', async () => {
      try {
        await this.engine?.resetExpertLoad();
      } catch (e) {
        this.showError(e);
      }
      void this.refreshStats();
    });
    // Sliders and their number boxes mirror each other.
    for (const id of ['temperature', 'top-k', 'top-p', 'rep-penalty']) {
      const range = el(`#${id}-range`) as HTMLInputElement, box = el(`#${id}`) as HTMLInputElement;
      range.addEventListener('input', () => (box.value = range.value));
      box.addEventListener('input', () => (range.value = box.value));
    }
    // Model sources.
    el('#url-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const url = (el('#model-url') as HTMLInputElement).value.trim();
      if (url) void this.load(new URL(url, location.href).href, url);
    });
    el('#reload-bundled').addEventListener('click', () => this.o.initialModel && void this.load(new URL(this.o.initialModel, location.href).href, 'bundled model'));
    const input = el('#folder-input') as HTMLInputElement;
    el('#pick-folder').addEventListener('click', async () => {
      try {
        const dir = await pickDirectory();
        if (dir) void this.load(dir, dir.name);
        else if (dir === undefined) input.click();
      } catch (e) {
        this.showError(e);
      }
    });
    input.addEventListener('change', () => {
      const files = [...(input.files ?? [])];
      input.value = '';
      if (files.length) void this.load(files, (files[0] as File & { webkitRelativePath?: string }).webkitRelativePath?.split('/')[0] || 'local files');
    });
    // A .gguf file (or every split of one): crosses into the worker as File objects, as a folder's files do.
    const gguf = el('#gguf-input') as HTMLInputElement;
    el('#pick-gguf').addEventListener('click', () => gguf.click());
    gguf.addEventListener('change', () => {
      const files = [...(gguf.files ?? [])];
      gguf.value = '';
      if (files.length) void this.load(files, files.length === 1 ? files[0].name : `${files.length} GGUF splits`);
    });
    // Drag and drop anywhere on the page.
    const overlay = el('#drop-overlay');
    let depth = 0;
    const hasFiles = (ev: DragEvent) => !!ev.dataTransfer && [...ev.dataTransfer.types].includes('Files');
    window.addEventListener('dragenter', (ev) => {
      if (!hasFiles(ev)) return;
      depth++;
      overlay.hidden = false;
    });
    window.addEventListener('dragleave', () => {
      if (--depth <= 0) { depth = 0; overlay.hidden = true; }
    });
    window.addEventListener('dragover', (ev) => {
      if (hasFiles(ev)) ev.preventDefault();
    });
    window.addEventListener('drop', (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth = 0;
      overlay.hidden = true;
      if (this.state === 'loading' || this.state === 'unsupported' || this.state === 'checking') return;
      dropToModel(ev.dataTransfer!).then(
        (m) => m && void this.load(m.ref, m.label),
        (e) => this.showError(e),
      );
    });
  }

  private renderExamples(): void {
    const box = this.el('#examples');
    box.innerHTML = `<span class="examples-label">Try a completion:</span>` + EXAMPLES.map((t) => `<button type="button" class="chip" title="Raw completion">${escapeHtml(t)}…</button>`).join('');
    box.addEventListener('click', (ev) => {
      const b = (ev.target as HTMLElement).closest('button');
      if (!b) return;
      // The examples are beginnings of texts: they run as raw completions.
      this.setMode('raw');
      const input = this.el('#prompt') as HTMLTextAreaElement;
      input.value = (b.textContent ?? '').replace(/…$/, '');
      input.focus();
    });
  }
}

/** "http://host/models/webmoe-tiny/" → "webmoe-tiny". */
function shortName(name: string): string {
  const parts = name.replace(/\/+$/, '').split('/');
  return parts[parts.length - 1] || name;
}

export async function startDemo(o: DemoOptions): Promise<DemoApp> {
  const app = new DemoApp(o);
  await app.start();
  return app;
}
