/**
 * Local model folders: the directory picker (File System Access API where the browser has it) and
 * drag and drop (a directory handle when the browser gives one, else the files read from the dropped
 * entries). Both end as a ModelRef the Worker engine accepts (File[] or FileSystemDirectoryHandle); a
 * dropped .gguf file (or the files of a split one) is a File[] that the loader opens as GGUF.
 */
import type { ModelRef } from '../../engine/types';

type WithPicker = Window & { showDirectoryPicker?: (o?: { mode?: 'read' | 'readwrite'; id?: string }) => Promise<FileSystemDirectoryHandle> };

/** A picked folder; null when the user cancelled; undefined when the browser has no picker (use <input webkitdirectory>). */
export async function pickDirectory(): Promise<FileSystemDirectoryHandle | null | undefined> {
  const w = window as WithPicker;
  if (!w.showDirectoryPicker) return undefined;
  try {
    return await w.showDirectoryPicker({ mode: 'read', id: 'webmoe-model' });
  } catch (e) {
    if ((e as Error)?.name === 'AbortError') return null;
    throw e;
  }
}

type HandleItem = DataTransferItem & { getAsFileSystemHandle?: () => Promise<FileSystemHandle | null> };

/** The dropped folder or files as a model; null when nothing usable was dropped. */
export async function dropToModel(dt: DataTransfer): Promise<{ ref: ModelRef; label: string } | null> {
  const items = [...dt.items].filter((i) => i.kind === 'file') as HandleItem[];
  // Handles and entries must be requested synchronously, while the drop event is being dispatched.
  const handles = items.map((i) => i.getAsFileSystemHandle?.());
  const entries = items.map((i) => i.webkitGetAsEntry?.() ?? null);
  const files = [...dt.files];
  if (items.length === 1 && handles[0]) {
    const h = await handles[0].catch(() => null);
    if (h?.kind === 'directory') return { ref: h as FileSystemDirectoryHandle, label: h.name };
  }
  if (entries.some((e) => e?.isDirectory)) {
    const out: File[] = [];
    for (const e of entries) if (e) await walk(e, out);
    const dir = entries.find((e) => e?.isDirectory);
    return out.length ? { ref: out, label: dir?.name ?? 'dropped folder' } : null;
  }
  return files.length ? { ref: files, label: files.length === 1 ? files[0].name : `${files.length} dropped files` } : null;
}

async function walk(entry: FileSystemEntry, out: File[]): Promise<void> {
  if (entry.isFile) {
    out.push(await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej)));
    return;
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
    if (!batch.length) break;
    for (const e of batch) await walk(e, out);
  }
}
