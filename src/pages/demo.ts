/**
 * The demo page (index.html): the engine runs in a Worker (createWorkerEngine) so the page stays
 * responsive; the bundled model loads at start. `?model=<url>` loads another model instead,
 * `?model=` (empty) loads nothing.
 */
import { createWorkerEngine } from '../engine/worker-client';
import { startDemo } from './demo/app';

const param = new URLSearchParams(location.search).get('model');
void startDemo({
  root: document.getElementById('app')!,
  createEngine: () => createWorkerEngine(),
  initialModel: param === null ? './models/webmoe-tiny/' : param || null,
});
