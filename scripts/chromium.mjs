// Finds a Chromium for browser tests and benchmarks, and the flags that give it WebGPU on machines
// without a GPU (SwiftShader). Order: CHROMIUM_PATH, Debian's /usr/bin/chromium, an installed Chrome,
// a Playwright-managed browser.
import { existsSync, readdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

function playwrightBrowsers() {
  const roots = [process.env.PLAYWRIGHT_BROWSERS_PATH, join(homedir(), '.cache', 'ms-playwright')].filter(Boolean);
  const found = [];
  for (const root of roots) {
    if (!existsSync(root)) continue;
    for (const d of readdirSync(root).filter((n) => n.startsWith('chromium')).sort().reverse()) {
      for (const rel of ['chrome-linux/chrome', 'chrome-linux64/chrome', 'chrome-mac/Chromium.app/Contents/MacOS/Chromium', 'chrome-win/chrome.exe']) {
        found.push(join(root, d, rel));
      }
    }
  }
  return found;
}

export function findChromium() {
  const candidates = [
    process.env.CHROMIUM_PATH,
    '/usr/bin/chromium',
    '/usr/bin/chromium-browser',
    '/usr/bin/google-chrome',
    '/usr/bin/google-chrome-stable',
    '/Applications/Google Chrome.app/Contents/MacOS/Google Chrome',
    'C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe',
    ...playwrightBrowsers(),
  ].filter(Boolean);
  return candidates.find((p) => existsSync(p));
}

export const CHROMIUM_MISSING_MESSAGE =
  'No Chromium found for the browser tests. Install one (Debian/Ubuntu: `sudo apt-get install chromium`), ' +
  'or point CHROMIUM_PATH at a Chrome/Chromium binary.';

export function chromiumPath() {
  const p = findChromium();
  if (!p) throw new Error(CHROMIUM_MISSING_MESSAGE);
  return p;
}

/** Flags for headless Chromium with WebGPU. On a machine with a GPU, set WEBMOE_REAL_GPU=1 to use it. */
export function chromiumArgs() {
  const args = [
    '--no-sandbox',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--enable-unsafe-webgpu',
  ];
  if (!process.env.WEBMOE_REAL_GPU) {
    args.push('--enable-features=Vulkan', '--use-angle=swiftshader', '--use-webgpu-adapter=swiftshader');
  }
  return args;
}
