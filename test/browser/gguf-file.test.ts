// A .gguf picked or dropped in the browser: the official fixture written as GGUF in the page, then loaded
// by the worker engine from a File, a FileList (what <input type=file> gives) and a directory handle, with progress;
// until the GGUF tokenizer lands, text is the typed "tokenizer missing" error.
import { describe, it, expect } from 'vitest';
import { createWorkerEngine } from '../../src/engine/worker-client';
import { memoryModel } from '../../src/loader/model-source';
import { openCheckpoint } from '../../src/model/checkpoint';
import { checkpointToGguf } from '../../src/model/gguf-convert';

async function fixtureGguf(quant: 'f32' | 'q8_0'): Promise<File> {
  const base = '/test/fixtures/deepseek-v3-tiny/';
  const get = async (n: string) => new Uint8Array(await (await fetch(base + n)).arrayBuffer());
  const ck = await openCheckpoint(memoryModel({ 'config.json': await get('config.json'), 'model.safetensors': await get('model.safetensors') }));
  const { file } = await checkpointToGguf(ck, quant);
  return new File([file as Uint8Array<ArrayBuffer>], `tiny-${quant}.gguf`);
}

describe('a .gguf File through the worker engine', () => {
  it('loads from a File and a FileList with progress; text needs the tokenizer (typed error)', async () => {
    const engine = createWorkerEngine();
    try {
      const f32 = await fixtureGguf('f32');
      const phases: string[] = [];
      const info = await engine.load(f32, { weights: 'f32', requireTokenizer: false, onProgress: (p) => phases.push(p.phase) });
      expect(info.layers).toBe(3);
      expect(info.name).toContain('tiny-f32.gguf');
      for (const p of ['config', 'headers', 'weights']) expect(phases).toContain(p); // ('done' may arrive after load resolves: another port)
      expect((await engine.stats()).loaded).toBe(true);
      await expect((async () => { for await (const _ of engine.generate('Hi', { maxTokens: 2 })) void _; })()).rejects.toMatchObject({ code: 'BAD_FORMAT', message: expect.stringMatching(/takes token ids only/) });

      // <input type=file> gives a FileList.
      const dt = new DataTransfer();
      dt.items.add(await fixtureGguf('q8_0'));
      const again = await engine.load(dt.files, { weights: 'f32', requireTokenizer: false });
      expect(again.name).toContain('tiny-q8_0.gguf');
      // Without requireTokenizer: false, the load says what is missing (and the loaded model stays).
      await expect(engine.load(f32, { weights: 'f32' })).rejects.toMatchObject({ code: 'BAD_FORMAT', message: expect.stringMatching(/tiny-f32\.gguf: tokenizer/) });
      expect((await engine.stats()).loaded).toBe(true);

      // A directory handle (OPFS here; showDirectoryPicker gives the same kind) holding one .gguf.
      const root = await navigator.storage.getDirectory();
      const dir = await root.getDirectoryHandle('webmoe-gguf-test', { create: true });
      const w = await (await dir.getFileHandle('tiny-f32.gguf', { create: true })).createWritable();
      await w.write(f32);
      await w.close();
      const fromDir = await engine.load(dir, { weights: 'f32', requireTokenizer: false });
      expect(fromDir.layers).toBe(3);
      await root.removeEntry('webmoe-gguf-test', { recursive: true });
    } finally {
      engine.terminate();
    }
  });
});
