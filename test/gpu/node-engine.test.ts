// createNodeEngine as a library user meets it: load progress ends with exactly one 'done' carrying the
// totals, and with no GPU driver the SwiftShader fallback is said (console.warn by default, or onNotice).
import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { createNodeEngine, pickNodeBackend } from '../../src/node';
import type { LoadProgress } from '../../src/model/checkpoint';

const ROOT = join(import.meta.dirname, '..', '..');
const MODEL = join(ROOT, 'public', 'models', 'webmoe-tiny');

/** Runs `body` in a fresh Node process on the sources (tsx + the ?raw hooks, as bin/webmoe.js does), without VK_ICD_FILENAMES. */
function runFresh(body: string): string {
  const script = `
    import { register } from 'node:module';
    import { pathToFileURL } from 'node:url';
    (await import('tsx/esm/api')).register();
    register('./scripts/raw-import-hooks.mjs', pathToFileURL('${ROOT}/'));
    const { createNodeEngine } = await import('./src/node.ts');
    ${body}`;
  const env = { ...process.env };
  delete env.VK_ICD_FILENAMES;
  return execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
}

describe('createNodeEngine', () => {
  it("reports progress 'done' exactly once, last, with the totals", async () => {
    const engine = createNodeEngine({ onNotice: () => {} });
    const events: LoadProgress[] = [];
    await engine.load(MODEL, { onProgress: (p) => events.push({ ...p }) });
    const done = events.filter((p) => p.phase === 'done');
    expect(done).toHaveLength(1);
    expect(events.at(-1)).toBe(done[0]);
    expect(done[0].bytesTotal).toBeGreaterThan(0);
    expect(done[0].bytesLoaded).toBe(done[0].bytesTotal);
    expect(done[0].tensorsLoaded).toBe(done[0].tensorsTotal);
    expect(events.some((p) => p.phase === 'weights')).toBe(true);
    await engine.unload();
  });

  it('says when it falls back to SwiftShader: console.warn by default, onNotice when given', () => {
    const env = { ...process.env };
    delete env.VK_ICD_FILENAMES;
    const expected = pickNodeBackend(env).notice; // undefined on a machine with a GPU driver: then nothing is said
    console.log(`SwiftShader notice expected on this machine: ${expected ?? 'none (a GPU driver)'}`);
    const load = `await engine.load(${JSON.stringify(MODEL)}); await engine.unload();`;
    const byDefault = runFresh(`
      const warned = []; console.warn = (m) => warned.push(String(m));
      const engine = createNodeEngine();
      ${load}
      process.stdout.write(JSON.stringify(warned));`);
    const heard = runFresh(`
      const warned = [], noticed = []; console.warn = (m) => warned.push(String(m));
      const engine = createNodeEngine({ onNotice: (m) => noticed.push(m) });
      ${load}
      process.stdout.write(JSON.stringify({ warned, noticed }));`);
    expect(JSON.parse(byDefault)).toEqual(expected ? [expected] : []);
    expect(JSON.parse(heard)).toEqual({ warned: [], noticed: expected ? [expected] : [] });
  });
});
