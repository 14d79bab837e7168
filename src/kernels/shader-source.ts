import ggufBlocksWgsl from '../../shaders/lib/gguf_blocks.wgsl?raw';
import kvReadWgsl from '../../shaders/lib/kv_read.wgsl?raw';
import loadWidthWgsl from '../../shaders/lib/load_width.wgsl?raw';
import moeDecodeWgsl from '../../shaders/lib/moe_decode.wgsl?raw';
import moeTilesWgsl from '../../shaders/lib/moe_tiles.wgsl?raw';
import quantDecodeWgsl from '../../shaders/lib/quant_decode.wgsl?raw';
import registerTileWgsl from '../../shaders/lib/register_tile.wgsl?raw';
import tileStoreWgsl from '../../shaders/lib/tile_store.wgsl?raw';
import { ArgumentError } from '../errors';

/**
 * The one way a kernel's WGSL is specialised before it reaches the pipeline cache (scalars that a
 * pipeline may set are `override` constants, passed as `constants` to gpu.pipelines.get):
 *
 *   // @include <lib>              the text of shaders/lib/<lib>.wgsl (once per shader)
 *   // @variant <name> <choice>…   a block kept when `choices[name]` is one of the listed choices,
 *   …                              dropped otherwise; it runs to the next `// @variant <name> …`
 *   // @end <name>                 header or to `// @end <name>`
 *
 * Every variant stays readable in the .wgsl. A name may have several groups of blocks in one file (a
 * group keeps nothing when none of its blocks lists the choice). `consts` replaces the value of a
 * module-scope `const NAME: T = …;` declaration: for the numbers WGSL needs as const-expressions
 * (sizes of function-scope arrays), which `override` constants cannot give.
 */
const LIBRARY: Record<string, string> = {
  gguf_blocks: ggufBlocksWgsl,
  kv_read: kvReadWgsl,
  load_width: loadWidthWgsl,
  moe_decode: moeDecodeWgsl,
  moe_tiles: moeTilesWgsl,
  quant_decode: quantDecodeWgsl,
  register_tile: registerTileWgsl,
  tile_store: tileStoreWgsl,
};

export type ShaderChoices = Record<string, string>;

const INCLUDE = /^\s*\/\/ @include (\w+)\s*$/;
const VARIANT = /^\s*\/\/ @variant (\w+)((?: [\w:.-]+)+)\s*$/;
const END = /^\s*\/\/ @end (\w+)\s*$/;
const DIRECTIVE = /^\s*\/\/ @(include|variant|end)\b/;

/** A comment line that starts like a directive but is not one would silently change what is kept. */
function checkDirectives(code: string) {
  for (const line of code.split('\n')) {
    if (DIRECTIVE.test(line) && !INCLUDE.test(line) && !VARIANT.test(line) && !END.test(line)) {
      throw new ArgumentError(`malformed shader directive '${line.trim()}' (prose must not start a comment with @include, @variant or @end)`);
    }
  }
}

/** Replaces every `// @include lib` line by the library file (its own includes resolved; each file once). */
export function resolveIncludes(code: string, seen = new Set<string>()): string {
  return code.split('\n').map((line) => {
    const m = INCLUDE.exec(line);
    if (!m) return line;
    const name = m[1];
    const lib = LIBRARY[name];
    if (lib === undefined) throw new ArgumentError(`shader includes unknown library '${name}' (known: ${Object.keys(LIBRARY).join(', ')})`);
    if (seen.has(name)) return `// (${name} already included)`;
    seen.add(name);
    return `// ---- ${name} (shaders/lib/${name}.wgsl)\n${resolveIncludes(lib, seen)}\n// ---- end ${name}`;
  }).join('\n');
}

/** Keeps the blocks of variant `name` that list `choice`; throws when no block of `name` lists it. */
function pickVariant(code: string, name: string, choice: string): string {
  const out: string[] = [];
  let inBlock = false, keep = true, found = false, seen = false;
  for (const line of code.split('\n')) {
    const v = VARIANT.exec(line);
    if (v && v[1] === name) {
      const listed = v[2].trim().split(/\s+/);
      inBlock = true;
      seen = true;
      keep = listed.includes(choice);
      found ||= keep;
      continue;
    }
    const e = END.exec(line);
    if (e && e[1] === name) {
      if (!inBlock) throw new ArgumentError(`shader has '// @end ${name}' without a variant block`);
      inBlock = false;
      keep = true;
      continue;
    }
    if (keep) out.push(line);
  }
  if (!seen) throw new ArgumentError(`shader has no variant '${name}'`);
  if (inBlock) throw new ArgumentError(`shader's variant '${name}' has no '// @end ${name}'`);
  if (!found) throw new ArgumentError(`shader has no block for variant ${name}=${choice}`);
  return out.join('\n');
}

function setConst(code: string, name: string, value: number): string {
  const decl = new RegExp(`^(\\s*const ${name}\\s*:\\s*(\\w+)\\s*=\\s*)[^;]+;`, 'm');
  const m = decl.exec(code);
  if (!m) throw new ArgumentError(`shader has no module-scope 'const ${name}'`);
  const type = m[2];
  if ((type === 'u32' || type === 'i32') && !Number.isInteger(value)) throw new ArgumentError(`const ${name}: ${type} = ${value} is not an integer`);
  const literal = type === 'u32' ? `${value}u` : type === 'i32' ? `${value}i` : String(value);
  return code.replace(decl, `$1${literal};`);
}

/**
 * Includes resolved, one choice made for every variant the text has, `consts` set. Throws an
 * ArgumentError for an unknown library, a variant without a choice or a choice without a block.
 */
export function specialise(code: string, choices: ShaderChoices = {}, consts: Record<string, number> = {}): string {
  let out = resolveIncludes(code);
  checkDirectives(out);
  for (const [name, choice] of Object.entries(choices)) out = pickVariant(out, name, choice);
  const left = out.split('\n').map((l) => VARIANT.exec(l)?.[1]).find((n) => n !== undefined);
  if (left) throw new ArgumentError(`shader variant '${left}' needs a choice`);
  for (const [name, value] of Object.entries(consts)) out = setConst(out, name, value);
  return out;
}

/** vec4 loads need the reduction length, strides and offsets to be multiples of 4 (load_width.wgsl). */
export const allMultiplesOf4 = (...xs: number[]) => xs.every((v) => v % 4 === 0);

/** The `load` choice of shaders that include load_width.wgsl. */
export const loadWidth = (vec4: boolean) => (vec4 ? 'vec4' : 'scalar');

/** The `subgroups` choice: blocks that use subgroup operations (and `enable subgroups;`) kept or dropped. */
export const subgroupChoice = (enabled: boolean) => (enabled ? 'on' : 'off');
