// GGUF files on the WASM engine: the bundled model written as a Q4_K_M GGUF (K-quant blocks) loads on
// WASM with its blocks dequantised at load; in f32 storage its logits equal the CPU reference model on the
// same file (the same dequantised matrices: f32 arithmetic, 1e-4 on logits of magnitude ≤ ~12), and
// 'auto' keeps a quantised GGUF quantised (q8 on WASM) close to them.
import { describe, it, expect, vi } from 'vitest';
import { join } from 'node:path';
import { createEngine } from '../../src/engine/engine';
import { GpuUnavailableError } from '../../src/errors';
import { memoryModel } from '../../src/loader/model-source';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { checkpointToGguf } from '../../src/model/gguf-convert';
import { cpuEngine } from '../helpers/models';

// Converting and loading the bundled model several times: seconds on a shared 2-core machine.
vi.setConfig({ testTimeout: 180_000 });

const MODEL = join(import.meta.dirname, '..', '..', 'public', 'models', 'webmoe-tiny');
const wasmEngine = () => createEngine({}, { acquire: async () => { throw new GpuUnavailableError('no WebGPU in this test'); }, resolve: () => { throw new Error('tests pass ModelSources'); } });

describe('a Q4_K_M GGUF on the WASM engine', () => {
  it('f32 storage equals the CPU reference on the same file; auto is q8 and stays close', async () => {
    const st = await openCheckpoint(localModel(MODEL));
    const file = (await checkpointToGguf(st, 'q4_k_m')).file;
    await st.close();
    const source = () => memoryModel({ 'webmoe-tiny-q4_k_m.gguf': file });
    const toks = [0, 17, 300, 42, 9, 1000, 5, 77, 2048, 12];
    const cpu = cpuEngine();
    await cpu.load(source());
    const want = await cpu.runner.logits(toks, true);
    await cpu.unload();

    const w = wasmEngine();
    const info = await w.load(source(), { device: 'wasm', weights: 'f32' });
    expect(info.weightStorage).toBe('f32');
    const got = await w.runner.logits(toks, true);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Number.isNaN(got[i]) ? Infinity : Math.abs(got[i] - want[i]));
    expect(worst).toBeLessThanOrEqual(1e-4);

    const auto = await w.load(source(), { device: 'wasm' });
    expect(auto.weightStorage).toBe('q8');
    const q = await w.runner.logits(toks, true);
    let d2 = 0, w2 = 0;
    for (let i = 0; i < want.length; i++) { d2 += (q[i] - want[i]) ** 2; w2 += want[i] ** 2; }
    // q8 of already-quantised values: relative RMS of the logits like q8 storage of the F16 model (≈0.3%).
    expect(Math.sqrt(d2 / w2)).toBeLessThan(0.01);
    await expect(w.load(source(), { device: 'wasm', weights: 'gguf' })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    await w.unload();
  });
});
