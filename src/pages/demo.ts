/**
 * The demo page (index.html). The engine is the user's choice (kept in localStorage): the worker engine
 * on this GPU (default; the page stays responsive), the service-worker engine on this GPU (the model
 * stays loaded across page navigations; /sw.js), or a remote OpenAI-compatible server. The bundled model
 * loads at start on a local engine; `?model=<url>` loads another model instead, `?model=` (empty) nothing.
 * `?device=wasm|auto|webgpu` chooses where a local engine runs the model (LoadOptions.device; default
 * webgpu): wasm is the WebAssembly engine on the CPU, auto picks it on a software adapter or without WebGPU;
 * `?threads=N` its threads (LoadOptions.threads).
 */
import { createWorkerEngine } from '../engine/worker-client';
import { createServiceWorkerEngine } from '../engine/sw-client';
import { createRemoteEngine } from '../engine/remote';
import { startDemo, type DemoEngine } from './demo/app';
import { loadEngineChoice, type EngineChoice } from './demo/engine-choice';

// Vite builds src/pages/sw.ts to /sw.js (the dev server serves it there too: scripts/sw-at-root.mjs).
const SW_SCRIPT = '/sw.js';

function createEngine(choice: EngineChoice): DemoEngine {
  switch (choice.kind) {
    case 'service-worker':
      return createServiceWorkerEngine({ scriptURL: SW_SCRIPT });
    case 'remote':
      return createRemoteEngine({ baseURL: choice.baseURL, apiKey: choice.apiKey || undefined, model: choice.model || undefined });
    default:
      return createWorkerEngine();
  }
}

const query = new URLSearchParams(location.search);
const param = query.get('model');
const device = query.get('device');
const threads = Number(query.get('threads'));
void startDemo({
  device: device === 'wasm' || device === 'auto' ? device : 'webgpu',
  threads: Number.isInteger(threads) && threads > 0 ? threads : undefined,
  root: document.getElementById('app')!,
  createEngine,
  engineChoice: loadEngineChoice(),
  initialModel: param === null ? './models/webmoe-tiny/' : param || null,
});
