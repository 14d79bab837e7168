#!/usr/bin/env node
// Launch shapes of mla_decode (src/kernels/mla.ts mlaDecode) compared in one process on the Node GPU
// (SwiftShader without a GPU): V2-Lite decode (16 heads, latent 512 + rope 64, one token) over an f32
// cache of --cache rows. The variants run round-robin, --rounds times after one warm-up each; per variant
// it prints the median and minimum wall time and the CPU time of the process's other threads (Linux
// /proc/self/task/*/schedstat: SwiftShader's workgroup threads, plus Dawn's and Node's idle ones), which
// is what compares launch shapes on a machine other processes share: wall time swings with their load,
// the work a shape needs far less. Waits yield the JS thread (src/gpu/wait.ts), as every Gpu wait does.
//
//   node tools/mla-decode-cpu.mjs [--cache 8192] [--rounds 7] [--variants JSON]
//
// --variants: a JSON list of { splits?, tuning?, wait? } (splits, tuning: MlaDecodeArgs; wait: 'busy' waits
// as dawn.node does by itself, its JS thread spinning, as `npm run bench -- --busy-wait`), default: the
// plan's shape with one split and 2 splits, and the previous software shape ({ DWG: 16, SQ: 4 }) with
// the same.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const arg = (k, d) => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1] : d; };
const L = Number(arg('cache', 8192));
const rounds = Number(arg('rounds', 7));
const variants = JSON.parse(arg('variants', JSON.stringify([
  { splits: 1 }, { splits: 2 }, { splits: 1, tuning: { DWG: 16, SQ: 4 } }, { splits: 2, tuning: { DWG: 16, SQ: 4 } },
])));

if (!process.env.WEBMOE_REAL_GPU) process.env.VK_ICD_FILENAMES ??= '/usr/lib/chromium/vk_swiftshader_icd.json';
process.env.XDG_RUNTIME_DIR ??= '/tmp';
const { createServer } = await import('vite');
const server = await createServer({ root, configFile: resolve(root, 'vite.config.ts'), logLevel: 'warn', server: { middlewareMode: true, hmr: false } });
const { acquireNodeGpu } = await server.ssrLoadModule('/src/node.ts');
const { mlaDecode, mlaDecodeInfo } = await server.ssrLoadModule('/src/kernels/mla.ts');
const { setYieldingWaits } = await server.ssrLoadModule('/src/gpu/wait.ts');
const gpu = await acquireNodeGpu({ label: 'mla-decode-cpu' });

const otherThreadsMs = () => {
  let ns = 0;
  for (const tid of readdirSync('/proc/self/task')) {
    if (Number(tid) === process.pid) continue;
    try { ns += Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]); } catch { /* thread gone */ }
  }
  return ns / 1e6;
};
const random = (n, seed) => {
  let s = seed >>> 0;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; a[i] = s / 2 ** 32 - 0.5; }
  return a;
};
const H = 16, kvLora = 512, rope = 64, dk = kvLora + rope;
const qa = gpu.buffers.upload('mla-cpu.qa', random(H * dk, 1));
const cache = gpu.buffers.upload('mla-cpu.cache', random(L * dk, 2));
const out = gpu.buffers.create('mla-cpu.out', H * kvLora * 4);
const maxSplits = Math.max(2, ...variants.map((v) => (typeof v.splits === 'number' ? v.splits : 8)));
const scratch = gpu.buffers.create('mla-cpu.split', maxSplits * H * (kvLora + 2) * 4);
const base = { H, kvLora, rope, S: 1, past: L - 1, qa, cache, rowStride: dk, out, scale: 0.1, scratch };
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

const wall = variants.map(() => []), cpu = variants.map(() => []);
for (let round = 0; round <= rounds; round++) {
  for (const [i, v] of variants.entries()) {
    const { wait, ...shape } = v;
    const args = { ...base, ...shape };
    const c0 = otherThreadsMs(), t0 = performance.now();
    const rec = gpu.recorder('mla-cpu');
    mlaDecode(gpu, rec, args);
    rec.submit();
    setYieldingWaits(wait !== 'busy'); // 'busy': dawn.node's own spinning wait
    await gpu.sync();
    const ms = performance.now() - t0, cms = otherThreadsMs() - c0;
    gpu.temps.releaseAll();
    if (round === 0) continue; // warm-up (compiles the pipeline)
    wall[i].push(ms);
    cpu[i].push(cms);
  }
}
for (const [i, v] of variants.entries()) {
  console.log(JSON.stringify({
    cache: L, ...v, kernel: mlaDecodeInfo(gpu, { ...base, splits: v.splits, tuning: v.tuning }).label,
    wallMedianMs: +median(wall[i]).toFixed(1), wallMinMs: +Math.min(...wall[i]).toFixed(1),
    workerCpuMedianMs: +median(cpu[i]).toFixed(1), workerCpuMinMs: +Math.min(...cpu[i]).toFixed(1),
  }));
}
gpu.destroy();
await server.close();
process.exit(0);
