/**
 * Node entry point: the same engine on the `webgpu` package (Dawn). With no GPU driver, Dawn is pointed
 * at a software Vulkan (SwiftShader, shipped with Chromium) before the first device is created.
 */
import { existsSync, readdirSync } from 'node:fs';
import { homedir, totalmem } from 'node:os';
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

function playwrightSwiftShader(env: Record<string, string | undefined>, fs: VulkanProbe): string[] {
  const root = env.PLAYWRIGHT_BROWSERS_PATH ?? join(homedir(), '.cache', 'ms-playwright');
  if (!fs.exists(root)) return [];
  return fs.readdir(root)
    .filter((d) => d.startsWith('chromium'))
    .flatMap((d) => ['chrome-linux/vk_swiftshader_icd.json', 'chrome-linux64/vk_swiftshader_icd.json'].map((f) => join(root, d, f)));
}

/** What the Vulkan probe of pickNodeBackend looks at (the file system, in nodeGPU). */
export interface VulkanProbe {
  exists(path: string): boolean;
  readdir(path: string): string[];
}

const fsProbe: VulkanProbe = { exists: existsSync, readdir: (p) => readdirSync(p) };

/**
 * True when the system has a GPU Vulkan can drive: a render node or an NVIDIA device, and an ICD other
 * than lavapipe (which Dawn cannot use). Mesa's ICD files alone (installed with many desktop packages)
 * do not mean there is a GPU.
 */
function hasVulkanDriver(fs: VulkanProbe): boolean {
  const hasDevice = (fs.exists('/dev/dri') && fs.readdir('/dev/dri').some((f) => f.startsWith('renderD'))) || fs.exists('/dev/nvidiactl');
  if (!hasDevice) return false;
  for (const dir of ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d']) {
    if (!fs.exists(dir)) continue;
    if (fs.readdir(dir).some((f) => f.endsWith('.json') && !f.includes('lvp'))) return true;
  }
  return false;
}

export interface NodeGpuInfo {
  /** 'driver' when a real GPU driver is used, 'swiftshader' when the software adapter was selected. */
  backend: 'driver' | 'swiftshader' | 'platform';
  icd?: string;
}

/**
 * Which Vulkan driver Dawn should use (Linux): the one VK_ICD_FILENAMES names, the system's GPU driver,
 * or else SwiftShader from a Chromium install, which this picks by itself and says so in `notice` (the
 * user did not ask for a CPU adapter, and it is orders of magnitude slower than a GPU).
 */
export function pickNodeBackend(env: Record<string, string | undefined>, fs: VulkanProbe = fsProbe, platform: string = process.platform): { info: NodeGpuInfo; notice?: string } {
  if (platform !== 'linux') return { info: { backend: 'platform' } };
  const named = env.VK_ICD_FILENAMES;
  if (named) return { info: { backend: named.includes('swiftshader') ? 'swiftshader' : 'driver', icd: named } };
  if (hasVulkanDriver(fs)) return { info: { backend: 'driver' } };
  const icd = [...SWIFTSHADER_ICDS, ...playwrightSwiftShader(env, fs)].find((p) => fs.exists(p));
  if (!icd) {
    throw new GpuUnavailableError(
      'No GPU driver and no software Vulkan found. Install Chromium (e.g. `apt-get install chromium`, which ships SwiftShader) ' +
        'or set VK_ICD_FILENAMES to a Vulkan ICD.',
    );
  }
  return {
    info: { backend: 'swiftshader', icd },
    notice: `webmoe: no GPU driver found; using the software adapter SwiftShader (${icd}), which runs WebGPU on the CPU and is far slower than a GPU`,
  };
}

let created: { gpu: GPU; info: NodeGpuInfo } | null = null;

/**
 * The `GPU` object of the `webgpu` package, created once per process. `notice` hears the SwiftShader
 * fallback (once, when it is picked); `log` is kept for callers that pass one function for both.
 */
export async function nodeGPU(log: (msg: string) => void = () => {}, notice: (msg: string) => void = log): Promise<{ gpu: GPU; info: NodeGpuInfo }> {
  if (created) return created;
  const picked = pickNodeBackend(process.env);
  if (picked.info.backend === 'swiftshader' && picked.notice) process.env.VK_ICD_FILENAMES = picked.info.icd;
  if (process.platform === 'linux') process.env.XDG_RUNTIME_DIR ??= '/tmp';
  let mod: any;
  try {
    mod = await import(/* @vite-ignore */ 'webgpu');
  } catch {
    throw new GpuUnavailableError('The `webgpu` package is needed for WebGPU in Node: npm i webgpu');
  }
  Object.assign(globalThis, mod.globals);
  const gpu = mod.create([]) as GPU;
  (globalThis as any).__webmoeDawn = gpu; // keep the native object alive for the process
  created = { gpu, info: picked.info };
  if (picked.notice) notice(picked.notice);
  return created;
}

/** acquireGpu for Node. */
export async function acquireNodeGpu(options: Omit<GpuOptions, 'gpu'> & { log?: (msg: string) => void; onNotice?: (msg: string) => void } = {}): Promise<Gpu> {
  const { log, onNotice, ...gpuOptions } = options;
  const { gpu } = await nodeGPU(log, onNotice ?? log);
  const g = await acquireGpu({ ...gpuOptions, gpu });
  // A CPU adapter's buffers live in system memory: the memory plan is checked against it.
  if (g.adapter.isFallbackAdapter) g.memoryHint = totalmem();
  return g;
}

export interface NodeEngineOptions extends EngineOptions {
  /**
   * Hears what a user should know about the setup: today, that no GPU driver was found and WebGPU runs
   * on SwiftShader (the CPU). Default: `log` when given, else console.warn. `() => {}` silences it.
   */
  onNotice?: (msg: string) => void;
}

/** A model reference string in Node: an http(s) URL (a folder, or a .gguf file), else a local folder or file. */
export function nodeModelSource(model: string): ModelSource {
  return /^https?:\/\//.test(model) ? urlModel(model, { cache: false }) : localModel(model);
}

/** The in-thread engine in Node: Dawn for the GPU, local directories or URLs for models. */
export function createNodeEngine(options: NodeEngineOptions = {}): WebMoeEngine {
  const { onNotice, ...engineOptions } = options;
  const notice = onNotice ?? options.log ?? ((msg: string) => console.warn(msg));
  return createEngine(engineOptions, {
    acquire: (o, log) => acquireNodeGpu({ ...o, log, onNotice: notice }),
    resolve: (model) => nodeModelSource(model),
  });
}
