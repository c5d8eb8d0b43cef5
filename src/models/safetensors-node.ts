// Reading safetensors files from disk in Node (CLI, tests): slices are read on demand, so a 4 GB checkpoint
// never sits in memory whole.

import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { SafetensorsFile, type ByteSource } from './safetensors';

export interface FileSource extends ByteSource {
  close(): Promise<void>;
}

export async function openFileSource(path: string): Promise<FileSource> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`${path}: ${code === 'ENOENT' ? 'no such file' : `cannot be opened (${code ?? (e as Error).message})`}`);
  }
  const { size } = await handle.stat();
  return {
    name: basename(path),
    size,
    async read(offset, length) {
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(out, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return out.subarray(0, done);
    },
    close: () => handle.close(),
  };
}

export async function openSafetensorsFile(path: string): Promise<{ file: SafetensorsFile; close: () => Promise<void> }> {
  const source = await openFileSource(path);
  try {
    return { file: await SafetensorsFile.open(source), close: () => source.close() };
  } catch (e) {
    await source.close();
    throw e;
  }
}
