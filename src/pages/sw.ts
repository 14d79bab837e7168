/**
 * The site's service worker (built to /sw.js): the service-worker engine of the demo, which keeps the
 * model loaded while the user moves between pages. It only installs the engine; it handles no fetches.
 */
import { installServiceWorkerEngine } from '../engine/sw-host';

installServiceWorkerEngine();
