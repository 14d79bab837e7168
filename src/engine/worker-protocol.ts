/**
 * What crosses the Worker boundary. Errors keep their name, code and details (comlink's default only
 * keeps the message); model sources cross as URL strings, File lists or directory handles (all
 * structured-clonable) and are turned into ModelSources on the worker side.
 */
import * as Comlink from 'comlink';
import { WebMoeError, type ErrorCode } from '../errors';

export interface SerializedError { name: string; message: string; code?: string; details?: Record<string, unknown>; stack?: string }

let installed = false;
/** Installs the error transfer handler (both sides call this). */
export function installErrorTransfer(): void {
  if (installed) return;
  installed = true;
  const base = Comlink.transferHandlers.get('throw')!;
  Comlink.transferHandlers.set('throw', {
    canHandle: base.canHandle,
    serialize(value: any) {
      const e = value.value;
      if (e instanceof Error) return [{ isError: true, value: serializeError(e) }, []];
      return [{ isError: false, value: e }, []];
    },
    deserialize(serialized: any) {
      if (!serialized.isError) throw serialized.value;
      throw reviveError(serialized.value as SerializedError);
    },
  } as any);
}

/** An error as plain data (structured-clonable), keeping its name, code and details. */
export function serializeError(e: unknown): SerializedError {
  if (!(e instanceof Error)) return { name: 'Error', message: String(e) };
  const s: SerializedError = { name: e.name, message: e.message, stack: e.stack };
  if (e instanceof WebMoeError || typeof (e as { code?: unknown }).code === 'string') {
    s.code = (e as WebMoeError).code;
    s.details = (e as WebMoeError).details;
  }
  return s;
}

/** A WebMoeError (or plain Error) with the same name, code and details as the worker-side error. */
export function reviveError(s: SerializedError): Error {
  const e = s.code ? new WebMoeError(s.code as ErrorCode, s.message, s.details) : new Error(s.message);
  Object.defineProperty(e, 'name', { value: s.name, configurable: true });
  if (s.stack) e.stack = s.stack;
  return e;
}

/** The model references that cross to the worker (structured-clonable; a ModelSource object is not). */
export type WorkerModelRef = string | File[] | FileSystemDirectoryHandle;

export const isDirectoryHandle = (m: unknown): m is FileSystemDirectoryHandle => typeof FileSystemDirectoryHandle !== 'undefined' && m instanceof FileSystemDirectoryHandle;

/** A single File or a FileList as the File[] that crosses to the worker (other references unchanged). */
export function asFileArray<T>(model: T): T | File[] {
  if (typeof File !== 'undefined' && model instanceof File) return [model];
  if (typeof FileList !== 'undefined' && model instanceof FileList) return Array.from(model);
  return model;
}

export function isWorkerModelRef(model: unknown): model is WorkerModelRef {
  return typeof model === 'string' || Array.isArray(model) || isDirectoryHandle(model);
}
