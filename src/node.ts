/**
 * Node entry point: the same engine on the `webgpu` package (Dawn). With no GPU driver, Dawn is pointed
 * at a software Vulkan (SwiftShader, shipped with Chromium) before the first device is created.
 */
import { existsSync, readdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { acquireGpu, type Gpu, type GpuOptions } from './gpu/device';
import { GpuUnavailableError } from './errors';
import { createEngine, type WebMoeEngine } from './engine/engine';
import type { EngineOptions } from './engine/types';
import { urlModel, type ModelSource } from './loader/model-source';
import { localModel } from './loader/node-source';

export * from './index';
export { fileSource, directoryModel, localModel } from './loader/node-source';
export { startServer, serveModel, type RunningServer, type ServerOptions, type ServeModelOptions } from './server/serve';

const SWIFTSHADER_ICDS = [
  '/usr/lib/chromium/vk_swiftshader_icd.json',
  '/usr/lib/chromium-browser/vk_swiftshader_icd.json',
  '/opt/google/chrome/vk_swiftshader_icd.json',
];

function playwrightSwiftShader(): string[] {
  const root = process.env.PLAYWRIGHT_BROWSERS_PATH ?? join(homedir(), '.cache', 'ms-playwright');
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((d) => d.startsWith('chromium'))
    .flatMap((d) => ['chrome-linux/vk_swiftshader_icd.json', 'chrome-linux64/vk_swiftshader_icd.json'].map((f) => join(root, d, f)));
}

/**
 * True when the system has a GPU Vulkan can drive: a render node or an NVIDIA device, and an ICD other
 * than lavapipe (which Dawn cannot use). Mesa's ICD files alone (installed with many desktop packages)
 * do not mean there is a GPU.
 */
function hasVulkanDriver(): boolean {
  const hasDevice = (existsSync('/dev/dri') && readdirSync('/dev/dri').some((f) => f.startsWith('renderD'))) || existsSync('/dev/nvidiactl');
  if (!hasDevice) return false;
  for (const dir of ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d']) {
    if (!existsSync(dir)) continue;
    if (readdirSync(dir).some((f) => f.endsWith('.json') && !f.includes('lvp'))) return true;
  }
  return false;
}

export interface NodeGpuInfo {
  /** 'driver' when a real GPU driver is used, 'swiftshader' when the software adapter was selected. */
  backend: 'driver' | 'swiftshader' | 'platform';
  icd?: string;
}

let created: { gpu: GPU; info: NodeGpuInfo } | null = null;

/** The `GPU` object of the `webgpu` package, created once per process. */
export async function nodeGPU(log: (msg: string) => void = () => {}): Promise<{ gpu: GPU; info: NodeGpuInfo }> {
  if (created) return created;
  let info: NodeGpuInfo = { backend: 'platform' };
  if (process.platform === 'linux') {
    if (process.env.VK_ICD_FILENAMES) info = { backend: process.env.VK_ICD_FILENAMES.includes('swiftshader') ? 'swiftshader' : 'driver', icd: process.env.VK_ICD_FILENAMES };
    else if (hasVulkanDriver()) info = { backend: 'driver' };
    else {
      const icd = [...SWIFTSHADER_ICDS, ...playwrightSwiftShader()].find((p) => existsSync(p));
      if (!icd) {
        throw new GpuUnavailableError(
          'No GPU driver and no software Vulkan found. Install Chromium (e.g. `apt-get install chromium`, which ships SwiftShader) ' +
            'or set VK_ICD_FILENAMES to a Vulkan ICD.',
        );
      }
      process.env.VK_ICD_FILENAMES = icd;
      info = { backend: 'swiftshader', icd };
      log(`webmoe: no GPU driver found; using the software adapter SwiftShader (${icd})`);
    }
    process.env.XDG_RUNTIME_DIR ??= '/tmp';
  }
  let mod: any;
  try {
    mod = await import(/* @vite-ignore */ 'webgpu');
  } catch {
    throw new GpuUnavailableError('The `webgpu` package is needed for WebGPU in Node: npm i webgpu');
  }
  Object.assign(globalThis, mod.globals);
  const gpu = mod.create([]) as GPU;
  (globalThis as any).__webmoeDawn = gpu; // keep the native object alive for the process
  created = { gpu, info };
  return created;
}

/** acquireGpu for Node. */
export async function acquireNodeGpu(options: Omit<GpuOptions, 'gpu'> & { log?: (msg: string) => void } = {}): Promise<Gpu> {
  const { gpu } = await nodeGPU(options.log);
  return acquireGpu({ ...options, gpu });
}

/** A model reference string in Node: an http(s) URL (a folder, or a .gguf file), else a local folder or file. */
export function nodeModelSource(model: string): ModelSource {
  return /^https?:\/\//.test(model) ? urlModel(model, { cache: false }) : localModel(model);
}

/** The in-thread engine in Node: Dawn for the GPU, local directories or URLs for models. */
export function createNodeEngine(options: EngineOptions = {}): WebMoeEngine {
  return createEngine(options, {
    acquire: (o, log) => acquireNodeGpu({ ...o, log }),
    resolve: (model) => nodeModelSource(model),
  });
}
