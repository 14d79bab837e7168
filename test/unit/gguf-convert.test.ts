// The streamed GGUF converter (model/gguf-convert.ts) on the bundled model: the file it writes piece by
// piece is the one built in memory, checkpoint reads and file writes alternate (host memory holds one
// tensor at a time, however big the model), and a write that fails stops the conversion.
import { fileURLToPath } from 'node:url';
import { describe, it, expect, beforeAll } from 'vitest';
import { readGgufHeader } from '../../src/formats/gguf';
import { writeGguf } from '../../src/formats/gguf-write';
import { bytesSource } from '../../src/loader/source';
import { localModel } from '../../src/loader/node-source';
import { openCheckpoint, type Checkpoint } from '../../src/model/checkpoint';
import { checkpointToGguf, ggufTypeChooser, streamCheckpointToGguf, GGUF_QUANTS } from '../../src/model/gguf-convert';
import { deepseek2Gguf, deepseek2GgufPlan } from '../../src/model/gguf-deepseek2';

const MODEL = fileURLToPath(new URL('../../public/models/webmoe-tiny/', import.meta.url));
let ck: Checkpoint;
beforeAll(async () => { ck = await openCheckpoint(localModel(MODEL)); });

describe('streamCheckpointToGguf', () => {
  it.each(GGUF_QUANTS)('%s: the streamed file is the in-memory file, its tensors are the plan, each written before the next tensor is read', async (quant) => {
    const events: string[] = [];
    const reads = ck.readF32.bind(ck);
    const traced = Object.create(ck, { readF32: { value: (n: string, s?: AbortSignal) => { events.push(`read ${n}`); return reads(n, s); } } }) as Checkpoint;
    const parts: Uint8Array[] = [];
    const r = await streamCheckpointToGguf(traced, quant, (b) => { events.push(`write ${b.length}`); parts.push(b.slice()); });
    const streamed = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    parts.reduce((o, p) => (streamed.set(p, o), o + p.length), 0);
    expect(streamed.length).toBe(r.fileBytes);
    const mem = await checkpointToGguf(ck, quant);
    expect(Buffer.compare(streamed, mem.file)).toBe(0);
    // The same tensors as writeGguf over the all-in-memory deepseek2Gguf (types from the same chooser).
    const header = await readGgufHeader(bytesSource('x.gguf', streamed));
    const all = await deepseek2Gguf(ck.config, (n) => ck.readF32(n), ck.tensors, ggufTypeChooser(ck.config, quant));
    expect([...header.tensors.values()].map((t) => [t.name, t.type.name, t.ne.join('x')])).toEqual(all.map((t) => [t.name, t.type, t.ne.join('x')]));
    const metadata = [...header.metadata];
    expect(Buffer.compare(writeGguf({ metadata, tensors: all }), streamed)).toBe(0);
    // Every checkpoint tensor is read once, and its bytes are written before the next one is read.
    const read = events.filter((e) => e.startsWith('read '));
    expect(new Set(read).size).toBe(read.length);
    // (The bundled model's MTP layer, model.layers.{num_hidden_layers}, is not part of a deepseek2 GGUF.)
    const mainTensors = [...ck.tensors.keys()].filter((n) => Number(/^model\.layers\.(\d+)\./.exec(n)?.[1] ?? -1) < ck.config.numLayers);
    expect(read.length).toBe(mainTensors.length);
    for (let i = 1; i < events.length; i++) if (events[i].startsWith('read ')) expect(events[i - 1], `before ${events[i]}`).toMatch(/^write /);
    // Stacked experts come one expert per write: no write is bigger than the biggest single tensor's bytes.
    const plan = deepseek2GgufPlan(ck.config, ck.tensors, ggufTypeChooser(ck.config, quant));
    const biggestSource = Math.max(...[...ck.tensors.values()].map((t) => t.shape.reduce((a, d) => a * d, 1) * 4));
    const headerBytes = Number(events[0].slice(6));
    for (const e of events.slice(1)) if (e.startsWith('write ')) expect(Number(e.slice(6))).toBeLessThanOrEqual(biggestSource);
    expect(headerBytes).toBeLessThan(r.fileBytes);
    expect(r.tensors).toBe(plan.length);
  }, 60_000);

  it('a write that fails stops the conversion with its error; nothing is read after it', async () => {
    let reads = 0, writes = 0;
    const traced = Object.create(ck, { readF32: { value: (n: string) => { reads++; return ck.readF32(n); } } }) as Checkpoint;
    const err = await streamCheckpointToGguf(traced, 'q8_0', () => { if (++writes === 4) throw new Error('disk full'); }).then(() => null, (e) => e);
    expect(err?.message).toBe('disk full');
    expect(reads).toBe(3); // header, then 3 tensors read and written, the 4th write (3rd tensor's data) fails
  });
});
