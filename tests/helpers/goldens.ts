// Where the shared goldens live: beside the repository, in ../shared/goldens (a copy of shared/ sits next to
// the checkout in CI too).

import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const GOLDENS = resolve(dirname(fileURLToPath(import.meta.url)), '../../../shared/goldens');
