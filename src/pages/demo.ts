import { acquireGpu } from '../gpu/device';
import { WebMoeError } from '../errors';

const status = document.getElementById('gpu-status')!;

function row(k: string, v: string | number) {
  return `<tr><td>${k}</td><td>${v}</td></tr>`;
}

async function showGpu() {
  try {
    const gpu = await acquireGpu();
    const a = gpu.adapter, c = gpu.caps;
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
    status.innerHTML = `
      <table class="kv">
        ${row('Adapter', [a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(' · ') || 'unknown')}
        ${row('Fallback adapter', a.isFallbackAdapter ? 'yes (software)' : 'no')}
        ${row('Max storage binding', mib(c.maxStorageBufferBindingSize))}
        ${row('Max buffer', mib(c.maxBufferSize))}
        ${row('Storage buffers per stage', c.maxStorageBuffersPerStage)}
        ${row('Workgroup storage', `${c.maxComputeWorkgroupStorageSize} B`)}
        ${row('Invocations per workgroup', c.maxComputeInvocationsPerWorkgroup)}
        ${row('shader-f16 / subgroups / timestamps', `${c.f16} / ${c.subgroups} / ${c.timestampQuery}`)}
      </table>
      <div class="chips" style="margin-top:10px">${a.features.map((f) => `<span>${f}</span>`).join('')}</div>`;
    status.dataset.ready = '1';
  } catch (e) {
    const msg = e instanceof WebMoeError ? e.message : String(e);
    status.innerHTML = `<div class="error"><strong>WebGPU is unavailable.</strong><br>${msg}</div>`;
    status.dataset.ready = 'error';
  }
}

void showGpu();
