/** `import b64 from './x.wasm?base64'`: the file as base64 (scripts/wasm-base64.mjs, for Vite and esbuild). */
declare module '*.wasm?base64' {
  const base64: string;
  export default base64;
}
