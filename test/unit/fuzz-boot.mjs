// Worker bootstrap for the fuzz test: registers the TypeScript loader (tsx), then runs the worker module.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.module);
