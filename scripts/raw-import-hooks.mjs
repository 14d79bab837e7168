// Node module hooks for running the TypeScript sources directly (bin/webmoe.js in a source checkout,
// through tsx): Vite's `import code from '../../shaders/x.wgsl?raw'` becomes a module whose default
// export is the file's text, as Vite's build makes it; `import b from './x.wasm?base64'` one whose
// default export is the file as base64 (scripts/wasm-base64.mjs does the same for Vite and esbuild).
import { readFile } from 'node:fs/promises';

const SUFFIXES = ['?raw', '?base64'];
const suffixOf = (s) => SUFFIXES.find((x) => s.endsWith(x));

export async function resolve(specifier, context, next) {
  if (suffixOf(specifier) && context.parentURL?.startsWith('file:')) return { url: new URL(specifier, context.parentURL).href, shortCircuit: true };
  return next(specifier, context);
}

export async function load(url, context, next) {
  const suffix = url.startsWith('file:') ? suffixOf(url) : undefined;
  if (suffix) {
    const bytes = await readFile(new URL(url.slice(0, -suffix.length)));
    const value = suffix === '?raw' ? bytes.toString('utf8') : bytes.toString('base64');
    return { format: 'module', source: `export default ${JSON.stringify(value)};`, shortCircuit: true };
  }
  return next(url, context);
}
