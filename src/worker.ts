/// <reference lib="webworker" />
/**
 * The Worker entry: an in-thread engine exposed through comlink. It only wires messages; everything
 * else lives in the engine.
 */
import * as Comlink from 'comlink';
import { WorkerHost } from './engine/worker-host';
import { installErrorTransfer } from './engine/worker-protocol';

installErrorTransfer();
Comlink.expose(new WorkerHost());
