import { describe, it, expect } from 'vitest';
import { urlModel } from '../../src/loader/model-source';

// Single-page-app servers answer a missing file with index.html and status 200.
const spaFetch: typeof fetch = async (input) => {
  const u = String(input);
  if (u.endsWith('config.json')) return new Response('{"a":1}', { headers: { 'content-type': 'application/json' } });
  return new Response('<!doctype html><html></html>', { status: 200, headers: { 'content-type': 'text/html' } });
};

describe('urlModel on a single-page-app server', () => {
  it('treats an HTML page served for a model file as absent', async () => {
    const m = urlModel('http://127.0.0.1:9/m/', { fetch: spaFetch, cache: false });
    expect(await m.text('config.json')).toBe('{"a":1}');
    expect(await m.text('model.safetensors.index.json')).toBeNull();
    expect(await m.open('model.safetensors')).toBeNull();
  });
});
