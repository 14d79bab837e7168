// Node module hooks for running the TypeScript sources directly (bin/webmoe.js in a source checkout,
// through tsx): Vite's `import code from '../../shaders/x.wgsl?raw'` becomes a module whose default
// export is the file's text, as Vite's build makes it.
import { readFile } from 'node:fs/promises';

export async function resolve(specifier, context, next) {
  if (specifier.endsWith('?raw') && context.parentURL?.startsWith('file:')) return { url: new URL(specifier, context.parentURL).href, shortCircuit: true };
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (url.startsWith('file:') && url.endsWith('?raw')) {
    const text = await readFile(new URL(url.slice(0, -'?raw'.length)), 'utf8');
    return { format: 'module', source: `export default ${JSON.stringify(text)};`, shortCircuit: true };
  }
  return next(url, context);
}
