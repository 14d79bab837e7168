/**
 * The service worker entry (`webmoe/service-worker`): import it in your service worker script and call
 * installServiceWorkerEngine(); pages then use createServiceWorkerEngine() from 'webmoe'.
 *
 *   // sw.js (registered by the page as a module: createServiceWorkerEngine({ scriptURL: '/sw.js' }))
 *   import { installServiceWorkerEngine } from 'webmoe/service-worker';
 *   installServiceWorkerEngine();
 */
export { installServiceWorkerEngine, ServiceWorkerHost, type InstallServiceWorkerEngineOptions } from './engine/sw-host';
export type { ServiceWorkerEngineStatus } from './engine/sw-protocol';
export * from './errors';
