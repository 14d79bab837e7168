// The service-worker engine's protocol in Node (MessageChannel is the same there): the host's typed
// answers without WebGPU or without a model, and the client's handling of a service worker that was
// replaced by a new instance while a call waited. The real thing, on WebGPU in Chromium's service
// worker, is test/browser/readme-snippets.test.ts and test/e2e/service-worker.spec.ts.
import { fileURLToPath } from 'node:url';
import { describe, it, expect } from 'vitest';
import { ServiceWorkerHost } from '../../src/engine/sw-host';
import { createServiceWorkerEngine, type MessageTarget } from '../../src/engine/sw-client';
import { SW_PROTOCOL, type SwReply } from '../../src/engine/sw-protocol';
import { browserEnvironment } from '../../src/engine/engine';

/** A client whose requests go straight to `host` (as the service worker's message event would). */
const direct = (host: ServiceWorkerHost): (() => Promise<MessageTarget>) => async () => ({
  postMessage: (message, transfer) => void host.handle(message as never, transfer[0] as MessagePort),
});

describe('service-worker engine protocol', () => {
  it('without navigator.gpu in the service worker, load is GPU_UNAVAILABLE naming the worker engine', async () => {
    const host = new ServiceWorkerHost({}, browserEnvironment, () => false);
    const engine = createServiceWorkerEngine({ target: direct(host), keepAliveMs: 0 });
    const err = await engine.load('http://127.0.0.1:1/models/m/').then(() => null, (e) => e);
    expect(err).toMatchObject({ name: 'GpuUnavailableError', code: 'GPU_UNAVAILABLE' });
    expect(err.message).toContain('createWorkerEngine()');
    const s = await engine.status();
    expect(s).toMatchObject({ instance: host.instance, loadCount: 0, model: null, webgpu: false });
    engine.close();
  });

  it('a generation before any load is NOT_LOADED (typed); an aborted call rejects at once; a closed engine rejects', async () => {
    const host = new ServiceWorkerHost({}, browserEnvironment, () => true);
    const engine = createServiceWorkerEngine({ target: direct(host), keepAliveMs: 0 });
    expect((await engine.stats()).loaded).toBe(false); // as the other engines report before a load
    await expect(engine.generate('x').next()).rejects.toMatchObject({ code: 'NOT_LOADED' });
    const ac = new AbortController();
    ac.abort();
    await expect(engine.load('http://127.0.0.1:1/m/', { signal: ac.signal })).rejects.toMatchObject({ code: 'ABORTED' });
    engine.close();
    await expect(engine.status()).rejects.toMatchObject({ code: 'WORKER_CRASHED' });
  });

  it('a call accepted by a service worker instance that is gone rejects with WORKER_CRASHED when a new instance answers', async () => {
    // The first instance accepts a call and is then stopped (never answers); the next request reaches a new one.
    let instance = 'first';
    const target = async (): Promise<MessageTarget> => ({
      postMessage(message, transfer) {
        const port = transfer[0] as MessagePort;
        const m = message as { protocol: string; op: string };
        expect(m.protocol).toBe(SW_PROTOCOL);
        port.postMessage({ type: 'accepted', instance } satisfies SwReply);
        if (instance === 'first') { instance = 'second'; return; }
        port.postMessage({ type: 'result', value: { instance, startedAt: 0, loadCount: 0, model: null, info: null, webgpu: true } } satisfies SwReply);
      },
    });
    const engine = createServiceWorkerEngine({ target, keepAliveMs: 0 });
    const lost = engine.stats();
    lost.catch(() => {});
    await new Promise((r) => setTimeout(r, 10));
    expect((await engine.status()).instance).toBe('second');
    await expect(lost).rejects.toMatchObject({ code: 'WORKER_CRASHED' });
    engine.close();
  });

  it('a ModelSource object cannot cross to the service worker: BAD_ARGUMENT', async () => {
    const engine = createServiceWorkerEngine({ target: async () => ({ postMessage() {} }), keepAliveMs: 0 });
    await expect(engine.load({ description: 'x', text: async () => null, open: async () => null })).rejects.toMatchObject({ code: 'BAD_ARGUMENT' });
    engine.close();
  });
});

describe('service-worker engine plan', () => {
  it("plan() crosses to the service worker: the same memory plan as the in-thread engine's, with no model loaded", async () => {
    const { acquireNodeGpu, nodeModelSource, createNodeEngine } = await import('../../src/node');
    const model = fileURLToPath(new URL('../../public/models/webmoe-tiny/', import.meta.url));
    const host = new ServiceWorkerHost({}, { acquire: (o, log) => acquireNodeGpu({ ...o, log, onNotice: () => {} }), resolve: (m) => nodeModelSource(m) }, () => true);
    const engine = createServiceWorkerEngine({ target: direct(host), keepAliveMs: 0 });
    const local = createNodeEngine({ onNotice: () => {} });
    try {
      const options = { weights: 'q8' as const, contextLength: 256 };
      const plan = await engine.plan!(model, options);
      expect(plan).toEqual(await local.plan(model, options));
      expect(plan).toMatchObject({ contextLength: 256, storage: { weights: 'q8' } });
      expect((await engine.status()).loadCount).toBe(0);
      await expect(engine.plan!(model + 'missing/', options)).rejects.toMatchObject({ name: expect.stringMatching(/Error$/) });
    } finally {
      engine.close();
      await local.unload();
    }
  });
});
