/**
 * node-llama-cpp (llama.cpp's CPU build) for the GGUF cross-check. It lives in tools/llama-check, its own
 * package with its own lock file, so its per-platform binaries stay out of the main install. The first
 * use installs it there: `npm ci --omit=optional` (the lock's optional packages are every prebuilt build
 * for the platform — CUDA and Vulkan ones too, ~630 MB on linux-x64 — which the check does not use), then
 * only this platform's CPU build. `--ignore-scripts`: its postinstall would only look for a GPU build or
 * compile one.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export const LLAMA_CHECK_DIR = join(import.meta.dirname, '..', '..', 'tools', 'llama-check');
const ENTRY = join(LLAMA_CHECK_DIR, 'node_modules', 'node-llama-cpp', 'dist', 'index.js');
/** The version pinned in tools/llama-check/package.json; its CPU build package has the same version. */
const NODE_LLAMA_CPP_VERSION = '3.21.1';

/** The part of node-llama-cpp's API the cross-check uses (typed here: the package is not installed at typecheck time). */
export interface LlamaSequence {
  evaluateWithMetadata(tokens: number[], metadata: { probabilities: true }, options: { temperature: number }): AsyncGenerator<{ token: number; probabilities: Map<number, number> }, void, void>;
}
export interface LlamaModel {
  tokenize(text: string, specialTokens?: boolean): number[];
  readonly tokens: { readonly bos: number | null; readonly eos: number | null };
  createContext(o: { contextSize: number; threads?: number; flashAttention?: boolean; experimentalKvCacheKeyType?: string; experimentalKvCacheValueType?: string }): Promise<{ getSequence(): LlamaSequence; dispose(): Promise<void> }>;
  dispose(): Promise<void>;
}
export interface NodeLlamaCpp {
  getLlama(o: { gpu: false; build: 'never'; logLevel?: string }): Promise<{ loadModel(o: { modelPath: string; gpuLayers?: number; vocabOnly?: boolean }): Promise<LlamaModel>; dispose(): Promise<void> }>;
}

/** The node-llama-cpp module, installed into tools/llama-check first when missing. */
export async function nodeLlamaCpp(): Promise<NodeLlamaCpp> {
  if (!existsSync(ENTRY)) {
    try {
      const npm = (args: string[]) => execFileSync('npm', [...args, '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: LLAMA_CHECK_DIR, stdio: 'pipe', timeout: 5 * 60_000 });
      npm(['ci', '--omit=optional']);
      npm(['install', '--no-save', '--omit=optional', `@node-llama-cpp/${process.platform}-${process.arch}@${NODE_LLAMA_CPP_VERSION}`]);
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      const tail = (err.stderr?.toString() ?? err.message).trim().split('\n').slice(-8).join('\n');
      throw new Error(`The llama.cpp cross-check needs node-llama-cpp 3.21.1, and \`npm ci\` in tools/llama-check failed:\n${tail}\n` +
        'Install it by hand (cd tools/llama-check && npm ci), or run the other tests without this file.');
    }
  }
  return import(pathToFileURL(ENTRY).href);
}
