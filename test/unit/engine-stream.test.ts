// The engine's push → pull stream bridge (used by the in-thread and the worker engine) and the model
// references both engines take.
import { describe, it, expect } from 'vitest';
import { pullChunks } from '../../src/engine/stream';
import { modelSourceOf } from '../../src/engine/engine';
import { isWorkerModelRef } from '../../src/engine/worker-protocol';
import { memoryModel } from '../../src/loader/model-source';

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('pullChunks', () => {
  it('yields every chunk in order, including ones pushed before the first pull, and returns the result', async () => {
    let stops = 0;
    const it = pullChunks<number, string>(async (emit) => {
      emit(1);
      emit(2);
      await tick();
      emit(3);
      await tick();
      return 'done';
    }, () => stops++);
    const got: number[] = [];
    let r;
    for (;;) {
      r = await it.next();
      if (r.done) break;
      got.push(r.value);
    }
    expect(got).toEqual([1, 2, 3]);
    expect(r.value).toBe('done');
    expect(stops).toBe(0);
  });

  it('starts the task at the first pull, not before', async () => {
    let started = false;
    const it = pullChunks<number, void>(async () => { started = true; }, () => {});
    await tick();
    expect(started).toBe(false);
    await it.next();
    expect(started).toBe(true);
  });

  it('throws what the task rejects with, after the chunks it emitted', async () => {
    const it = pullChunks<number, void>(async (emit) => {
      emit(7);
      await tick();
      throw new RangeError('boom');
    }, () => {});
    expect(await it.next()).toEqual({ value: 7, done: false });
    await expect(it.next()).rejects.toThrow(RangeError);
  });

  it('a consumer that stops early calls stopEarly once; one that reads to the end never does', async () => {
    let stops = 0;
    let finish: () => void = () => {};
    const it = pullChunks<number, void>((emit) => new Promise<void>((resolve) => {
      emit(1);
      finish = resolve;
    }), () => stops++);
    for await (const c of it) { expect(c).toBe(1); break; }
    expect(stops).toBe(1);
    finish();
    await tick();
    expect(stops).toBe(1);
  });
});

describe('model references', () => {
  it('File[] becomes a file-list source, a ModelSource passes through, a string is left to the loader', async () => {
    const files = [new File(['{"a":1}'], 'config.json')];
    const fromFiles = modelSourceOf(files);
    expect(typeof fromFiles).toBe('object');
    expect(await (fromFiles as Exclude<typeof fromFiles, string>).text('config.json')).toBe('{"a":1}');
    const mem = memoryModel({ 'config.json': '{}' });
    expect(modelSourceOf(mem)).toBe(mem);
    expect(modelSourceOf('https://example.com/m/')).toBe('https://example.com/m/');
  });

  it('anything else is a typed BAD_ARGUMENT', () => {
    for (const bad of [42, null, {}, { open: 1, text: 2 }]) {
      expect(() => modelSourceOf(bad as never)).toThrow(expect.objectContaining({ code: 'BAD_ARGUMENT' }));
    }
  });

  it('only structured-clonable references cross to the worker', () => {
    expect(isWorkerModelRef('./models/x/')).toBe(true);
    expect(isWorkerModelRef([new File([''], 'config.json')])).toBe(true);
    expect(isWorkerModelRef(memoryModel({}))).toBe(false);
  });
});
