import { describe, it, expect } from 'vitest';
import { defineUniforms, type UniformLayout } from '../../src/gpu/uniforms';
import { specialise, type ShaderChoices } from '../../src/kernels/shader-source';
import { ATTENTION_PARAMS, KV_PARAMS } from '../../src/kernels/attention';
import { ELEMENTWISE_PARAMS } from '../../src/kernels/elementwise';
import { GGUF_LINEAR_PARAMS } from '../../src/kernels/gguf-linear';
import { GGUF_MOE_PARAMS } from '../../src/kernels/gguf-moe';
import { LINEAR_PARAMS } from '../../src/kernels/linear';
import { MATMUL_PARAMS } from '../../src/kernels/matmul';
import { MLA_PARAMS } from '../../src/kernels/mla';
import { MOE_DISPATCH_PARAMS, MOE_EXPERT_PARAMS, MOE_GATE_PARAMS } from '../../src/kernels/moe';
import { RMSNORM_PARAMS } from '../../src/kernels/rmsnorm';
import { ROPE_PARAMS } from '../../src/kernels/rope';
import { SAMPLE_PARAMS } from '../../src/kernels/sample';
import { SOFTMAX_PARAMS } from '../../src/kernels/softmax';
import { SPARSE_PARAMS } from '../../src/kernels/sparse';
import { WEIGHT_QUANT_PARAMS } from '../../src/kernels/weight-quant';
import { PARAMS as CEILINGS_PARAMS } from '../../src/bench/ceilings';

/**
 * Every uniform block is declared twice: `struct Params` in the shader and `defineUniforms` in its
 * wrapper. These tests parse each shader's struct (after specialisation) and check it field by field
 * against the layout the wrapper packs: names in order, types, and the bytes `pack` writes at each
 * field's WGSL offset.
 */

const shaders = import.meta.glob('../../shaders/*.wgsl', { query: '?raw', import: 'default', eager: true }) as Record<string, string>;
const source = (name: string) => {
  const code = shaders[`../../shaders/${name}.wgsl`];
  if (code === undefined) throw new Error(`no shaders/${name}.wgsl`);
  return code;
};

interface WgslField { name: string; type: string; offset: number; size: number }

// Size and alignment of the scalar and vector types (WGSL § memory layout).
const TYPE_LAYOUT: Record<string, { size: number; align: number }> = {
  u32: { size: 4, align: 4 }, i32: { size: 4, align: 4 }, f32: { size: 4, align: 4 },
  'vec2<u32>': { size: 8, align: 8 }, 'vec2<i32>': { size: 8, align: 8 }, 'vec2<f32>': { size: 8, align: 8 },
  'vec4<u32>': { size: 16, align: 16 }, 'vec4<i32>': { size: 16, align: 16 }, 'vec4<f32>': { size: 16, align: 16 },
};

/** The fields of `struct Params { … }` with their WGSL offsets, and the struct's size. */
function parseParams(code: string): { fields: WgslField[]; size: number } {
  const m = /struct\s+Params\s*\{([^}]*)\}/.exec(code);
  if (!m) throw new Error('no struct Params');
  if (code.match(/struct\s+Params\b/g)!.length !== 1) throw new Error('more than one struct Params');
  const body = m[1].replace(/\/\/[^\n]*/g, '');
  const fields: WgslField[] = [];
  let offset = 0, align = 4;
  for (const decl of body.split(',').map((s) => s.trim()).filter(Boolean)) {
    const d = /^(\w+)\s*:\s*(.+)$/.exec(decl);
    if (!d) throw new Error(`cannot parse field '${decl}'`);
    const type = d[2].replace(/\s+/g, '');
    const l = TYPE_LAYOUT[type];
    if (!l) throw new Error(`field ${d[1]}: type ${type} not handled by this test`);
    offset = Math.ceil(offset / l.align) * l.align;
    fields.push({ name: d[1], type, offset, size: l.size });
    offset += l.size;
    align = Math.max(align, l.align);
  }
  return { fields, size: Math.ceil(offset / align) * align };
}

/** Where the wrapper's layout disagrees with the shader's struct (empty when they agree). */
function layoutMismatches(code: string, layout: UniformLayout<any>): string[] {
  const wgsl = parseParams(code);
  const names = Object.keys(layout.fields);
  const types = layout.fields as Record<string, string>;
  const out: string[] = [];
  if (names.join(',') !== wgsl.fields.map((f) => f.name).join(',')) {
    out.push(`field order: defineUniforms [${names.join(', ')}], struct Params [${wgsl.fields.map((f) => f.name).join(', ')}]`);
  }
  // Pack a distinct value per field and read each back at the offset the shader reads it from.
  const values = Object.fromEntries(names.map((n, i) => [n, types[n] === 'f32' ? i + 0.5 : i + 1]));
  const bytes = layout.pack(values);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const f of wgsl.fields) {
    if (!(f.name in types)) { out.push(`${f.name}: in struct Params, not in defineUniforms`); continue; }
    if (types[f.name] !== f.type) { out.push(`${f.name}: ${types[f.name]} in defineUniforms, ${f.type} in struct Params`); continue; }
    if (f.offset + f.size > bytes.byteLength) { out.push(`${f.name}: at byte ${f.offset}, past the ${bytes.byteLength}-byte uniform block`); continue; }
    const read = f.type === 'f32' ? view.getFloat32(f.offset, true) : f.type === 'i32' ? view.getInt32(f.offset, true) : view.getUint32(f.offset, true);
    if (read !== values[f.name]) out.push(`${f.name}: the shader reads byte ${f.offset}, pack writes it elsewhere`);
  }
  if (layout.size < wgsl.size) out.push(`size: uniform block ${layout.size} bytes < struct Params ${wgsl.size}`);
  return out;
}

/** Every shader with a uniform block, the choices it is specialised with here, and its wrapper's layout. */
const CASES: { shader: string; choices?: ShaderChoices; layout: UniformLayout<any> }[] = [
  { shader: 'attention_naive', choices: { kv: 'f16' }, layout: ATTENTION_PARAMS },
  { shader: 'flash_attention', choices: { load: 'vec4', dload: 'vec4', kv: 'f16' }, layout: ATTENTION_PARAMS },
  { shader: 'kv_cache', choices: { kv: 'f16' }, layout: KV_PARAMS },
  { shader: 'elementwise', layout: ELEMENTWISE_PARAMS },
  { shader: 'gguf_linear', choices: { gtype: 'q6_k', x: 'vec4', subgroups: 'on', load: 'vec4' }, layout: GGUF_LINEAR_PARAMS },
  { shader: 'gguf_moe', choices: { gtype: 'q4_k', subgroups: 'on', load: 'vec4' }, layout: GGUF_MOE_PARAMS },
  { shader: 'linear', choices: { fmt: 'q8', x: 'vec4', load: 'vec4', subgroups: 'on' }, layout: LINEAR_PARAMS },
  { shader: 'matmul', choices: { load: 'vec4' }, layout: MATMUL_PARAMS },
  { shader: 'gemv', choices: { load: 'scalar', subgroups: 'off' }, layout: MATMUL_PARAMS },
  { shader: 'mla', choices: { subgroups: 'on', kv: 'f16' }, layout: MLA_PARAMS },
  { shader: 'moe_gate', layout: MOE_GATE_PARAMS },
  { shader: 'moe_experts', choices: { load: 'vec4', wfmt: 'mxfp4', act: 'swiglu_oai', bias: 'on', subgroups: 'on' }, layout: MOE_EXPERT_PARAMS },
  { shader: 'moe_dispatch', layout: MOE_DISPATCH_PARAMS },
  { shader: 'rmsnorm', choices: { reduce: 'workgroup' }, layout: RMSNORM_PARAMS },
  { shader: 'rope', layout: ROPE_PARAMS },
  { shader: 'sample', layout: SAMPLE_PARAMS },
  { shader: 'softmax', layout: SOFTMAX_PARAMS },
  { shader: 'sparse', choices: { values: 'q8', cols: 'vnm', rows: 'expert', load: 'vec4', subgroups: 'off' }, layout: SPARSE_PARAMS },
  { shader: 'weight_quant', choices: { src: 'bf16', dst: 'q4' }, layout: WEIGHT_QUANT_PARAMS },
  { shader: 'bench', layout: CEILINGS_PARAMS },
];

describe('uniform layouts: struct Params ↔ defineUniforms', () => {
  it('covers every shader with a uniform block', () => {
    const withUniforms = Object.entries(shaders).filter(([, code]) => code.includes('var<uniform>')).map(([path]) => /(\w+)\.wgsl$/.exec(path)![1]);
    expect(CASES.map((c) => c.shader).sort()).toEqual(withUniforms.sort());
  });

  for (const c of CASES) {
    it(`${c.shader}.wgsl`, () => {
      expect(layoutMismatches(specialise(source(c.shader), c.choices ?? {}), c.layout)).toEqual([]);
    });
  }

  describe('the check fails on a wrong layout', () => {
    const rms = specialise(source('rmsnorm'), { reduce: 'workgroup' });
    it('two fields swapped', () => {
      const swapped = defineUniforms({ rows: 'u32', dim: 'u32', eps: 'f32', x_offset: 'u32', x_stride: 'u32', y_stride: 'u32', y_offset: 'u32', _p: 'u32' });
      const m = layoutMismatches(rms, swapped);
      expect(m.some((s) => s.startsWith('field order'))).toBe(true);
      expect(m).toContain('x_stride: the shader reads byte 12, pack writes it elsewhere');
    });
    it('a field of the wrong type', () => {
      const wrong = defineUniforms({ rows: 'u32', dim: 'u32', eps: 'u32', x_stride: 'u32', x_offset: 'u32', y_stride: 'u32', y_offset: 'u32', _p: 'u32' });
      expect(layoutMismatches(rms, wrong)).toEqual(['eps: u32 in defineUniforms, f32 in struct Params']);
    });
    it('a missing field', () => {
      const short = defineUniforms({ rows: 'u32', dim: 'u32', eps: 'f32', x_stride: 'u32', x_offset: 'u32', y_stride: 'u32', y_offset: 'u32' });
      expect(layoutMismatches(rms, short)).toContain('_p: in struct Params, not in defineUniforms');
    });
    it('offsets follow WGSL alignment (a vec4 after a u32 starts at byte 16)', () => {
      const p = parseParams('struct Params { a: u32, b: vec4<f32>, c: f32 }');
      expect(p.fields.map((f) => f.offset)).toEqual([0, 16, 32]);
      expect(p.size).toBe(48);
      expect(layoutMismatches('struct Params { a: u32, b: vec4<f32> }', defineUniforms({ a: 'u32', b: 'f32' }))).not.toEqual([]);
    });
  });
});
