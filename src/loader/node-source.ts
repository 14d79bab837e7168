/**
 * Node-only sources (imported by src/node.ts and the CLI, never by browser code): a file on disk read
 * with positioned reads, and a model directory.
 */
import { open as openFile, readdir, readFile, stat } from 'node:fs/promises';
import { statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { WebMoeError } from '../errors';
import { checkFileName, isGgufName, type ModelSource } from './model-source';
import { checkRange, throwIfAborted, type ByteSource } from './source';

const notFound = (path: string, e: unknown) => new WebMoeError('NOT_FOUND', `${path}: ${(e as Error).message}`, { file: path });

/** A file read with positioned reads (one handle, opened lazily, closed by close()). */
export function fileSource(path: string): ByteSource {
  let handle: Promise<import('node:fs/promises').FileHandle> | null = null;
  let size: number | null = null;
  const h = () => {
    handle ??= openFile(path, 'r').catch((e) => { handle = null; throw notFound(path, e); });
    return handle;
  };
  return {
    name: path,
    async size() {
      if (size === null) {
        try {
          size = (await stat(path)).size;
        } catch (e) {
          throw notFound(path, e);
        }
      }
      return size;
    },
    async read(offset, length, signal, into) {
      throwIfAborted(signal);
      checkRange(path, offset, length, await this.size());
      const out = into && into.length >= length ? into.subarray(0, length) : new Uint8Array(length);
      const fh = await h();
      let pos = 0;
      while (pos < length) {
        throwIfAborted(signal);
        const { bytesRead } = await fh.read(out, pos, Math.min(length - pos, 1 << 26), offset + pos);
        if (bytesRead === 0) throw new WebMoeError('BAD_FORMAT', `${path}: file ended at ${offset + pos} (truncated while reading?)`, { file: path });
        pos += bytesRead;
      }
      return out;
    },
    async close() {
      const p = handle;
      handle = null;
      if (p) await (await p.catch(() => null))?.close();
    },
  };
}

/**
 * A model path on disk: a folder, or a file in one (`model.gguf`, the first of a split GGUF, or a
 * safetensors model's `config.json` / `*.safetensors`), which then names what to load from its folder.
 */
export function localModel(path: string): ModelSource {
  let isFile = false;
  try {
    isFile = statSync(path).isFile();
  } catch {
    // absent: the folder's own NOT_FOUND says so when it is read
  }
  return isFile ? directoryModel(dirname(path), basename(path)) : directoryModel(path);
}

/** A model directory on disk (`named`: the file in it the user named, see ModelSource.named). */
export function directoryModel(dir: string, named?: string): ModelSource {
  const root = resolve(dir);
  const exists = async (p: string) => {
    try {
      return (await stat(p)).isFile();
    } catch {
      return false;
    }
  };
  return {
    description: named && isGgufName(named) ? join(root, named) : root,
    named,
    async list() {
      try {
        return (await readdir(root, { withFileTypes: true })).filter((d) => d.isFile()).map((d) => d.name);
      } catch (e) {
        throw notFound(root, e);
      }
    },
    async text(name) {
      checkFileName(name);
      const p = join(root, name);
      if (!(await exists(p))) return null;
      const bytes = await readFile(p);
      try {
        return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      } catch {
        throw new WebMoeError('BAD_FORMAT', `${p}: not valid UTF-8`, { file: p });
      }
    },
    async open(name) {
      checkFileName(name);
      const p = join(root, name);
      return (await exists(p)) ? fileSource(p) : null;
    },
  };
}
