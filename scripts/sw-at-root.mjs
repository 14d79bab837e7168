/**
 * A Vite plugin for the dev server (npm start) and Vitest's browser server: serves the site's service
 * worker, src/pages/sw.ts, at /sw.js as the production build does (vite.config.ts builds it there), so a
 * page registers '/sw.js' (scope: the whole site) in every mode.
 */
export function serviceWorkerAtRoot() {
  return {
    name: 'webmoe-sw-at-root',
    configureServer(server) {
      server.middlewares.use((req, _res, next) => {
        if (req.url === '/sw.js' || req.url?.startsWith('/sw.js?')) req.url = '/src/pages/sw.ts';
        next();
      });
    },
  };
}
