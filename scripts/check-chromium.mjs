import { findChromium, CHROMIUM_MISSING_MESSAGE } from './chromium.mjs';
const p = findChromium();
if (!p) {
  console.error(CHROMIUM_MISSING_MESSAGE);
  process.exit(1);
}
console.log(`Chromium for browser tests: ${p}`);
