/**
 * Uniform blocks declared once, packed from that declaration. A shader's `struct Params` lists the same
 * fields in the same order; every field is a 4-byte scalar, so the WGSL layout is sequential with the
 * struct padded to 16 bytes.
 */
export type ScalarType = 'u32' | 'i32' | 'f32';
export type UniformDecl = Record<string, ScalarType>;

export interface UniformLayout<D extends UniformDecl> {
  readonly fields: D;
  readonly size: number;
  pack(values: { [K in keyof D]: number }, out?: DataView, offset?: number): Uint8Array;
}

export function defineUniforms<D extends UniformDecl>(fields: D): UniformLayout<D> {
  const names = Object.keys(fields);
  const size = Math.max(16, Math.ceil((names.length * 4) / 16) * 16);
  return {
    fields,
    size,
    pack(values, out, offset = 0) {
      const view = out ?? new DataView(new ArrayBuffer(size));
      names.forEach((name, i) => {
        const v = (values as Record<string, number>)[name];
        if (v === undefined || Number.isNaN(v)) throw new Error(`uniform '${name}' missing`);
        const t = fields[name];
        if (t === 'f32') view.setFloat32(offset + i * 4, v, true);
        else if (t === 'i32') view.setInt32(offset + i * 4, v, true);
        else view.setUint32(offset + i * 4, v >>> 0, true);
      });
      return new Uint8Array(view.buffer, view.byteOffset + offset, size);
    },
  };
}
