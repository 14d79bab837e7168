/**
 * The site's service worker (built to /sw.js; the dev servers serve it there too): the service-worker
 * engine of the demo, which keeps the model loaded while the user moves between pages. It only
 * installs the engine; it handles no fetches. The lines between the markers are the README's `sw.js`
 * snippet (test/unit/readme-snippets.test.ts maps '../service-worker' to 'webmoe/service-worker').
 */
// README:begin sw.js
// sw.js
import { installServiceWorkerEngine } from '../service-worker';
installServiceWorkerEngine();                         // one engine for every page of the origin
// README:end
