// The OPFS conformance checks inside a dedicated worker (where the training runtime writes its runs).

import { opfsRoot, opfsStorage } from '../../../src/app/opfs-storage';
import { runStorageChecks } from '../../helpers/storage-conformance';

self.onmessage = async (e: MessageEvent<{ folder: string }>) => {
  try {
    const root = await opfsRoot();
    const base = await root.getDirectoryHandle(e.data.folder, { create: true });
    let i = 0;
    const failures = await runStorageChecks(async () => opfsStorage(await base.getDirectoryHandle(`check-${i++}`, { create: true }), `OPFS worker check ${i}`));
    postMessage({ failures });
  } catch (err) {
    postMessage({ failures: [`worker: ${(err as Error).stack ?? err}`] });
  }
};
