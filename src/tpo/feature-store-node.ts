// Prepared features on disk (CLI): one file of little-endian float32 values per cache key, through the
// same Storage-backed store the browser uses on the OPFS.

import { storageFeatureStore } from '../app/feature-store';
import { folderStorage } from '../cli/folder-storage';
import type { FeatureStore } from './features';

export function dirFeatureStore(dir: string): FeatureStore {
  return storageFeatureStore(folderStorage(dir));
}
