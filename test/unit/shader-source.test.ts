import { describe, it, expect } from 'vitest';
import { specialise, resolveIncludes } from '../../src/kernels/shader-source';
import { ArgumentError } from '../../src/errors';

const lines = (s: string) => s.split('\n').filter((l) => l.trim() && !l.trim().startsWith('//'));

describe('shader specialisation', () => {
  const src = [
    'a',
    '// @variant fmt f32',
    'f32 block',
    '// @variant fmt q8 q4',
    'quant block',
    '// @end fmt',
    'b',
    '// @variant fmt q4',
    'q4 only',
    '// @end fmt',
    'c',
  ].join('\n');

  it('keeps the blocks that list the choice, in every group of the name', () => {
    expect(lines(specialise(src, { fmt: 'f32' }))).toEqual(['a', 'f32 block', 'b', 'c']);
    expect(lines(specialise(src, { fmt: 'q8' }))).toEqual(['a', 'quant block', 'b', 'c']);
    expect(lines(specialise(src, { fmt: 'q4' }))).toEqual(['a', 'quant block', 'b', 'q4 only', 'c']);
  });

  it('rejects a choice no block lists, a variant left without a choice, an unknown variant', () => {
    expect(() => specialise(src, { fmt: 'fp8' })).toThrow(ArgumentError);
    expect(() => specialise(src, {})).toThrow(/variant 'fmt' needs a choice/);
    expect(() => specialise(src, { fmt: 'f32', other: 'x' })).toThrow(/no variant 'other'/);
  });

  it('rejects an unterminated block and prose that looks like a directive', () => {
    expect(() => specialise('// @variant a x\nfoo', { a: 'x' })).toThrow(/no '\/\/ @end a'/);
    expect(() => specialise('// @variant a keeps `this`; see below\n', {})).toThrow(/malformed shader directive/);
  });

  it('includes a library once, with its own variants chosen by the includer', () => {
    const code = specialise('// @include register_tile\n// @include load_width\nx', { load: 'scalar' });
    expect(code.match(/alias VecK/g)).toEqual(['alias VecK']);
    expect(code).toContain('alias VecK = f32;');
    expect(code).toContain('fn tile_fma(');
    expect(() => resolveIncludes('// @include nope')).toThrow(/unknown library 'nope'/);
  });

  it('sets module-scope consts', () => {
    const code = specialise('const BQ: u32 = 16u;  // rows\nconst S: f32 = 1.0;', {}, { BQ: 4, S: 0.5 });
    expect(code).toBe('const BQ: u32 = 4u;  // rows\nconst S: f32 = 0.5;');
    expect(() => specialise('const BQ: u32 = 16u;', {}, { NOPE: 1 })).toThrow(/no module-scope 'const NOPE'/);
    expect(() => specialise('const BQ: u32 = 16u;', {}, { BQ: 1.5 })).toThrow(/not an integer/);
  });
});
