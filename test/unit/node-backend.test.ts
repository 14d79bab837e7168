// How the Node entry picks Dawn's Vulkan driver, and that picking SwiftShader by itself is said
// (pickNodeBackend in src/node.ts, on a scripted file system; the end-to-end notice is in test/gpu/node-engine.test.ts).
import { describe, expect, it } from 'vitest';
import { pickNodeBackend, type VulkanProbe } from '../../src/node';
import { GpuUnavailableError } from '../../src/errors';

/** A file system holding exactly `files` (directories are implied by their files). */
function probe(files: string[]): VulkanProbe {
  const dirs = new Set(files.flatMap((f) => f.split('/').slice(1, -1).map((_, i, parts) => '/' + parts.slice(0, i + 1).join('/'))));
  return {
    exists: (p) => files.includes(p) || dirs.has(p),
    readdir: (p) => [...new Set(files.filter((f) => f.startsWith(p + '/')).map((f) => f.slice(p.length + 1).split('/')[0]))],
  };
}
const CHROMIUM_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

describe('pickNodeBackend', () => {
  it('no GPU driver: picks SwiftShader from Chromium and says so', () => {
    const r = pickNodeBackend({ PLAYWRIGHT_BROWSERS_PATH: '/nowhere' }, probe([CHROMIUM_ICD]), 'linux');
    expect(r.info).toEqual({ backend: 'swiftshader', icd: CHROMIUM_ICD });
    expect(r.notice).toContain('SwiftShader');
    expect(r.notice).toContain(CHROMIUM_ICD);
  });

  it('a render node and a non-lavapipe ICD: the driver, silently', () => {
    const r = pickNodeBackend({}, probe(['/dev/dri/renderD128', '/usr/share/vulkan/icd.d/radeon_icd.x86_64.json', CHROMIUM_ICD]), 'linux');
    expect(r).toEqual({ info: { backend: 'driver' } });
  });

  it('lavapipe alone is not a driver (Dawn cannot use it): SwiftShader, said', () => {
    const r = pickNodeBackend({ PLAYWRIGHT_BROWSERS_PATH: '/nowhere' }, probe(['/dev/dri/renderD128', '/usr/share/vulkan/icd.d/lvp_icd.x86_64.json', CHROMIUM_ICD]), 'linux');
    expect(r.info.backend).toBe('swiftshader');
    expect(r.notice).toBeDefined();
  });

  it('VK_ICD_FILENAMES set by the user is used as given, with no notice', () => {
    expect(pickNodeBackend({ VK_ICD_FILENAMES: CHROMIUM_ICD }, probe([]), 'linux')).toEqual({ info: { backend: 'swiftshader', icd: CHROMIUM_ICD } });
    expect(pickNodeBackend({ VK_ICD_FILENAMES: '/x/nvidia_icd.json' }, probe([]), 'linux')).toEqual({ info: { backend: 'driver', icd: '/x/nvidia_icd.json' } });
  });

  it("finds Playwright's Chromium too", () => {
    const icd = '/pw/chromium-1200/chrome-linux64/vk_swiftshader_icd.json';
    expect(pickNodeBackend({ PLAYWRIGHT_BROWSERS_PATH: '/pw' }, probe([icd]), 'linux').info).toEqual({ backend: 'swiftshader', icd });
  });

  it('nothing usable: a typed error that says what to install', () => {
    expect(() => pickNodeBackend({ PLAYWRIGHT_BROWSERS_PATH: '/nowhere' }, probe([]), 'linux')).toThrow(GpuUnavailableError);
    expect(() => pickNodeBackend({ PLAYWRIGHT_BROWSERS_PATH: '/nowhere' }, probe([]), 'linux')).toThrow(/apt-get install chromium/);
  });

  it('other platforms: the platform API (Metal, D3D12), no probing', () => {
    expect(pickNodeBackend({}, probe([]), 'darwin')).toEqual({ info: { backend: 'platform' } });
  });
});
