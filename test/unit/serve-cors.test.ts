// `webmoe serve` answers browsers: CORS preflights (OPTIONS) allow the asked-for headers, and every answer,
// errors included, carries Access-Control-Allow-Origin so a page on another origin can read it. The engine is
// never reached here (no model is needed to check the HTTP layer).
import { describe, it, expect, afterAll } from 'vitest';
import { startServer, type RunningServer } from '../../src/server/serve';
import type { Engine, ModelInfo } from '../../src/engine/types';

let server: RunningServer;
afterAll(() => server?.close());

describe('webmoe serve CORS', () => {
  it('preflight, 503 while loading and 200 after, all with CORS headers', async () => {
    server = await startServer({ engine: {} as Engine, port: 0 });
    const origin = 'http://127.0.0.1:4178';
    const pre = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { Origin: origin, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type,x-stainless-os' },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-methods')).toContain('POST');
    expect(pre.headers.get('access-control-allow-headers')).toBe('authorization,content-type,x-stainless-os');
    expect(Number(pre.headers.get('access-control-max-age'))).toBeGreaterThan(0);

    const loading = await fetch(`${server.url}/v1/models`, { headers: { Origin: origin } });
    expect(loading.status).toBe(503);
    expect(loading.headers.get('access-control-allow-origin')).toBe('*');
    expect((await loading.json()).error.code).toBe('NOT_LOADED');

    server.ready({ name: '/models/tiny-test', layers: 1 } as ModelInfo);
    const list = await fetch(`${server.url}/v1/models`, { headers: { Origin: origin } });
    expect(list.status).toBe(200);
    expect(list.headers.get('access-control-allow-origin')).toBe('*');
    expect((await list.json()).data[0].id).toBe('tiny-test');

    const missing = await fetch(`${server.url}/v2/nothing`, { headers: { Origin: origin } });
    expect(missing.status).toBe(404);
    expect(missing.headers.get('access-control-allow-origin')).toBe('*');
  });
});
