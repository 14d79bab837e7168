/**
 * The demo's WebGPU panels: the device table, and when there is no adapter, why and what the user can
 * do about it (the probe itself is ../adapter.ts, shared with the benchmark page).
 */
import { escapeHtml, fmtBytes } from '../format';
import type { GpuProbe } from '../adapter';

/** The explanation shown instead of the chat when there is no WebGPU. */
export function explainNoWebGpu(p: Extract<GpuProbe, { ok: false }>): string {
  const headline = {
    insecure: 'WebGPU needs a secure context',
    'no-api': 'This browser does not expose WebGPU',
    'no-adapter': 'WebGPU is present, but no GPU adapter is available',
    error: 'Asking for a WebGPU adapter failed',
  }[p.reason];
  const why = {
    insecure: `This page was opened from <code>${escapeHtml(location.origin)}</code>, which is not a secure context, so the browser hides <code>navigator.gpu</code>.`,
    'no-api': '<code>navigator.gpu</code> is missing: the browser is too old, WebGPU is turned off, or it is not yet enabled on this platform.',
    'no-adapter': '<code>navigator.gpu.requestAdapter()</code> returned nothing: the GPU or its driver is blocklisted, hardware acceleration is off, or (in a headless or remote session) there is no usable GPU at all.',
    error: `The browser reported: <code>${escapeHtml(p.detail ?? 'unknown error')}</code>`,
  }[p.reason];
  const todo =
    p.reason === 'insecure'
      ? `<li>Open the page over <b>https://</b>, or from <b>http://localhost</b> / <b>http://127.0.0.1</b> (that is what <code>npm start</code> serves).</li>`
      : `<li><b>Chrome / Edge 113+</b> on Windows, macOS and ChromeOS have WebGPU on by default (Android: Chrome 121+).</li>
         <li><b>Linux</b>: recent Chrome enables WebGPU on some GPUs only; otherwise enable <code>chrome://flags/#enable-unsafe-webgpu</code> (and <code>--enable-features=Vulkan</code>).</li>
         <li><b>Firefox</b> 141+ on Windows (others: Nightly, or <code>dom.webgpu.enabled</code> in <code>about:config</code>); <b>Safari</b> 26+.</li>
         <li>Check that hardware acceleration is on and look at <code>chrome://gpu</code> for “WebGPU: Hardware accelerated”.</li>
         <li>No GPU at all: Chromium can run WebGPU on the CPU with SwiftShader (<code>--enable-unsafe-swiftshader --enable-unsafe-webgpu</code>): correct, but slow.</li>`;
  return `<div class="nogpu" id="nogpu" data-reason="${p.reason}">
    <h2>${headline}</h2>
    <p>${why}</p>
    <p>webmoe runs the model on your GPU through WebGPU. To run it:</p>
    <ul>${todo}</ul>
    <p>Or run it on the CPU with webmoe's WebAssembly engine: <a id="use-wasm" href="?device=wasm">open this page with <code>?device=wasm</code></a> (<code>?device=auto</code> picks WebGPU when there is a GPU).</p>
    <p class="muted">The model was not loaded; nothing was downloaded.</p>
  </div>`;
}

export function deviceTableHtml(p: GpuProbe): string {
  if (!p.ok) return `<p class="muted">No WebGPU adapter (${p.reason}).</p>`;
  const a = p.adapter;
  const row = (k: string, v: string) => `<tr><th>${k}</th><td>${v}</td></tr>`;
  const name = [a.vendor, a.architecture, a.device].filter(Boolean).join(' · ') || 'unknown';
  const l = p.limits;
  return `<table class="kv">
    ${row('Adapter', escapeHtml(name))}
    ${a.description ? row('Description', escapeHtml(a.description)) : ''}
    ${row('Type', a.fallback ? 'software (fallback)' : 'hardware')}
    ${row('Max buffer', fmtBytes(l.maxBufferSize))}
    ${row('Max storage binding', fmtBytes(l.maxStorageBufferBindingSize))}
    ${row('Storage buffers/stage', String(l.maxStorageBuffersPerShaderStage))}
    ${row('Workgroup memory', fmtBytes(l.maxComputeWorkgroupStorageSize))}
    ${row('Invocations/workgroup', String(l.maxComputeInvocationsPerWorkgroup))}
    ${row('shader-f16', p.features.includes('shader-f16') ? 'yes' : 'no')}
    ${row('subgroups', p.features.includes('subgroups') ? 'yes' : 'no')}
    ${row('timestamp-query', p.features.includes('timestamp-query') ? 'yes' : 'no')}
  </table>`;
}
