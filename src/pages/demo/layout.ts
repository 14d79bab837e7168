/** The demo's markup (one place; ids and data attributes here are what the views and the e2e test use). */

const slider = (id: string, label: string, min: number, max: number, step: number, value: number, hint: string) => `
  <label class="field slider" title="${label}: ${hint}">
    <span>${label}</span>
    <input type="number" id="${id}" min="${min}" max="${max}" step="${step}" value="${value}">
    <input type="range" id="${id}-range" min="${min}" max="${max}" step="${step}" value="${value}" aria-label="${label}">
  </label>`;

export const LAYOUT = `
<header class="top">
  <div class="brand">webmoe <span class="tag">Mixture-of-Experts on your GPU, in the browser</span></div>
  <div id="status" class="status" data-state="checking" role="status"><i class="dot"></i><span id="status-text">Checking WebGPU…</span></div>
  <nav><a href="./bench.html">Benchmark</a></nav>
</header>
<div id="error-banner" class="banner" role="alert" hidden>
  <div class="banner-text"><strong id="error-name"></strong> <code id="error-code"></code><div id="error-message"></div></div>
  <button type="button" id="error-dismiss" class="icon" aria-label="Dismiss">✕</button>
</div>
<main class="layout">
  <aside class="column left">
    <section class="panel" id="engine-panel">
      <h2>Engine</h2>
      <div class="seg" id="engine-kind" role="radiogroup" aria-label="Engine">
        <button type="button" role="radio" data-kind="worker" aria-checked="true" title="A Worker of this page runs the model on this GPU">Worker</button>
        <button type="button" role="radio" data-kind="service-worker" aria-checked="false" title="The site's service worker runs the model on this GPU: it stays loaded when you move between pages">Service worker</button>
        <button type="button" role="radio" data-kind="remote" aria-checked="false" title="An OpenAI-compatible server (webmoe serve, vLLM, SGLang)">Remote</button>
      </div>
      <form id="remote-form" class="remote-form" hidden>
        <input id="remote-url" type="url" placeholder="http://127.0.0.1:8000/v1" aria-label="Server base URL" spellcheck="false" required>
        <input id="remote-key" type="password" placeholder="API key (optional)" aria-label="API key" autocomplete="off">
        <div class="row">
          <input id="remote-model" placeholder="model id (optional)" title="The server's model id (default: the first it lists)" aria-label="Model id" spellcheck="false">
          <button type="submit" id="remote-connect">Connect</button>
        </div>
      </form>
      <p class="hint" id="engine-status" data-engine="worker"></p>
    </section>
    <section class="panel" id="model-panel">
      <h2>Model</h2>
      <div id="model-name" class="model-name">—</div>
      <div id="model-info" class="facts"></div>
      <div id="load-progress" class="progress" hidden>
        <div class="track"><div class="fill" id="load-bar"></div></div>
        <div class="progress-label" id="load-label"></div>
      </div>
      <form id="url-form" class="row">
        <input id="model-url" type="url" placeholder="URL of a folder or .gguf" aria-label="Model URL (a folder or a .gguf file)" spellcheck="false">
        <button type="submit">Load</button>
      </form>
      <div class="row split">
        <button type="button" id="pick-folder" title="A folder with config.json, tokenizer.json and *.safetensors">Open folder…</button>
        <input type="file" id="folder-input" webkitdirectory multiple hidden>
        <button type="button" id="pick-gguf" title="A llama.cpp GGUF file (deepseek2), or every file of a split one">Open .gguf…</button>
        <input type="file" id="gguf-input" accept=".gguf" multiple hidden>
      </div>
      <p class="hint">Or drop a model folder or a .gguf file anywhere on the page, or load the <button type="button" id="reload-bundled" class="link">bundled model</button> again.</p>
      <ul id="load-notices" class="notices" hidden></ul>
    </section>
    <section class="panel" id="sparse-panel">
      <h2>Sparsity <span class="sub">routed experts</span></h2>
      <div class="seg" id="sparse-mode" role="radiogroup" aria-label="Sparse mode">
        <button type="button" role="radio" data-mode="dense" aria-checked="true">Dense</button>
        <button type="button" role="radio" data-mode="2:4" aria-checked="false">2:4</button>
        <button type="button" role="radio" data-mode="vnm" aria-checked="false">64:2:8</button>
        <button type="button" role="radio" data-mode="2:4-recovered" aria-checked="false" hidden>2:4 recovered</button>
        <button type="button" role="radio" data-mode="64:2:5-recovered" aria-checked="false" hidden>64:2:5 recovered</button>
      </div>
      <p class="hint">2:4 and 64:2:8 reload the model with its expert weights pruned to the pattern (magnitude pruning, no retraining). The recovered modes (bundled model only) load pre-pruned copies fine-tuned with the mask fixed (docs/sparsity.md).</p>
      <table class="grid" id="sparse-table">
        <thead><tr><th>Mode</th><th title="Held-out perplexity of the bundled model in this mode, measured offline (× dense)">ppl</th><th title="Weight bytes on the GPU in this mode">Weights</th><th title="Decode speed of the last reply in this mode">tok/s</th><th title="Greedy probe: leading tokens identical to the dense model's">= dense</th></tr></thead>
        <tbody></tbody>
      </table>
      <div class="row">
        <input id="probe-prompt" value="The jury said that" aria-label="Probe prompt" spellcheck="false">
        <button type="button" id="probe">Probe</button>
      </div>
      <p class="hint">Probe: greedy raw completion of 32 tokens in the current mode, compared token by token with the dense one.</p>
      <div id="probe-output" class="probe-output"></div>
    </section>
    <section class="panel" id="device-panel">
      <h2>Device</h2>
      <div id="gpu-status">Checking WebGPU…</div>
      <p id="backend-status" class="hint" hidden></p>
    </section>
  </aside>

  <section class="chat" id="chat">
    <div class="chat-head">
      <div class="seg" id="mode" role="radiogroup" aria-label="Mode">
        <button type="button" role="radio" data-mode="chat" aria-checked="true">Chat</button>
        <button type="button" role="radio" data-mode="raw" aria-checked="false">Raw completion</button>
      </div>
      <div class="metrics">
        <div title="Time to first token"><span>First token</span><b id="ttft">—</b></div>
        <div><span>Decode</span><b><span id="tokps">—</span> <small>tok/s</small></b></div>
        <div><span>Prefill</span><b><span id="prefill">—</span> <small>tok/s</small></b></div>
        <div><span>Tokens</span><b id="ntokens">0</b></div>
        <div title="Self-speculative decoding with the model's Multi-Token Prediction layer: drafts the model accepted, and tokens per main-model forward (docs/mtp.md)"><span>MTP accepted</span><b id="mtp-accept">—</b></div>
      </div>
      <button type="button" id="reset" class="ghost" title="Start a new conversation">Reset chat</button>
    </div>
    <div id="messages" class="messages">
      <div id="empty" class="empty">
        <h1>Talk to a Mixture-of-Experts model running on your GPU</h1>
        <p id="empty-model">The model is loading…</p>
        <div class="examples" id="examples"></div>
      </div>
    </div>
    <form id="composer" class="composer">
      <textarea id="prompt" rows="2" placeholder="Type a message — Enter to send, Shift+Enter for a new line" aria-label="Prompt"></textarea>
      <div class="composer-actions">
        <button type="submit" id="send" class="primary" disabled>Send</button>
        <button type="button" id="stop" class="danger" hidden>Stop</button>
      </div>
    </form>
    <details class="settings" id="settings" open>
      <summary>Sampling</summary>
      <div class="settings-grid">
        ${slider('temperature', 'Temperature', 0, 2, 0.05, 0.7, '0 = greedy')}
        ${slider('top-k', 'Top-k', 0, 200, 1, 40, '0 = off')}
        ${slider('top-p', 'Top-p', 0.05, 1, 0.01, 0.95, '1 = off')}
        ${slider('rep-penalty', 'Rep. penalty', 1, 2, 0.01, 1.1, 'repetition penalty, 1 = off')}
      </div>
      <div class="settings-row">
        <label class="field inline"><span>Max tokens</span><input type="number" id="max-tokens" min="1" max="4096" step="1" value="128"></label>
        <label class="field inline"><span>Seed</span><input type="number" id="seed" min="0" step="1" placeholder="random"></label>
        <label class="check push" title="Stop when the model emits its end-of-sequence token"><input type="checkbox" id="stop-eos" checked> Stop at end of text</label>
        <label class="check" title="Costs one small readback per token"><input type="checkbox" id="routing-toggle" checked> Record routing</label>
        <label class="check" title="Self-speculative decoding with the model's Multi-Token Prediction layer (docs/mtp.md): the same tokens, two per forward when its draft is accepted. Models with an MTP layer only; replies that record routing decode plainly."><input type="checkbox" id="speculative-toggle" checked> MTP draft</label>
      </div>
    </details>
  </section>

  <aside class="column right">
    <section class="panel" id="routing-panel">
      <h2>Routing <span class="sub" id="routing-shape"></span></h2>
      <h3>This reply</h3>
      <div class="canvas-box"><canvas id="heatmap" data-cells="0" data-tokens="0"></canvas></div>
      <div class="legend"><span>0</span><i class="ramp seq"></i><span id="heatmap-max">max</span></div>
      <p class="hint" id="routing-token">Generate with routing on to see each token’s experts.</p>
      <p class="hint" id="routing-resident" hidden><i class="resident-dot"></i> expert on the GPU (expert offload: the others wait in host memory)</p>
      <div class="h3row"><h3>Cumulative load <span class="sub">since load or reset</span></h3><button type="button" id="reset-load" class="ghost small">Reset</button></div>
      <div class="canvas-box"><canvas id="load-heatmap" data-tokens="0"></canvas></div>
      <div class="legend"><span>½× uniform</span><i class="ramp div"></i><span>2×</span></div>
      <p class="hint"><span id="load-summary">No tokens counted yet.</span><br>Mean MaxVio over MoE layers: <b id="maxvio">—</b></p>
    </section>
    <section class="panel" id="memory-panel">
      <h2>Memory</h2>
      <div id="memory-plan" data-state="none">
        <h3>Plan <span class="sub" id="memory-plan-model">before the weights download</span></h3>
        <table class="kv" id="memory-plan-table"><tr><th>No model planned yet</th><td>—</td></tr></table>
        <p class="hint" id="memory-plan-note">From config.json and the tensor headers alone: a model that cannot fit this device stops here, before its weights download.</p>
        <p class="plan-error" id="memory-plan-error" role="alert" hidden></p>
      </div>
      <h3>Loaded</h3>
      <div class="kvcompare">
        <div class="kvrow"><span>MLA (latent)</span><div class="bar"><i id="bar-mla" class="mla"></i></div><b id="memory-kv-token">—</b></div>
        <div class="kvrow"><span>MHA (standard)</span><div class="bar"><i id="bar-mha" class="mha"></i></div><b id="memory-mha-token">—</b></div>
        <p class="hint">KV bytes per token, all layers. MLA stores <b id="memory-ratio">—</b> less.</p>
      </div>
      <table class="kv">
        <tr><th>Cached tokens</th><td id="memory-cached">—</td></tr>
        <tr><th>KV in use (MLA)</th><td id="memory-kv-used">—</td></tr>
        <tr><th>Same tokens with MHA</th><td id="memory-mha-used">—</td></tr>
        <tr><th>KV cache allocated</th><td id="memory-kv">—</td></tr>
        <tr><th>Weights</th><td id="memory-weights">—</td></tr>
        <tr><th>GPU memory, total</th><td id="memory-gpu">—</td></tr>
        <tr><th>Dispatches per token</th><td id="memory-dispatches">—</td></tr>
      </table>
      <h3>GPU budget <span class="sub">expert offload</span></h3>
      <form id="budget-form" class="row">
        <label class="field inline"><span>Budget (MiB)</span><input type="number" id="gpu-budget" min="1" step="1" placeholder="no limit" aria-label="GPU memory budget in MiB"></label>
        <button type="submit" id="budget-apply">Apply</button>
      </form>
      <p class="hint">Past the budget, each MoE layer keeps only the experts that fit on the GPU and uploads the others when chosen; outputs stay the same. Applying reloads the model; empty = no limit.</p>
      <table class="kv" id="offload-table" hidden>
        <tr><th>Experts on the GPU</th><td id="offload-capacity">—</td></tr>
        <tr><th>Hit rate</th><td id="offload-hit">—</td></tr>
        <tr><th>Uploaded per token</th><td id="offload-bytes">—</td></tr>
        <tr><th>Stalls per token</th><td id="offload-stalls">—</td></tr>
      </table>
    </section>
  </aside>
</main>
<div id="drop-overlay" class="drop-overlay" hidden><div>Drop a model folder to load it</div></div>
<div id="tooltip" class="tooltip" hidden></div>
`;
