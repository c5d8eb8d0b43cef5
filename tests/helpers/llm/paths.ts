// Where the shared goldens are: beside the repository (CI clones the repo next to a copy of shared/).

import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const goldensDir = path.resolve(repoRoot, '../shared/goldens');
export const tinyModelDir = path.join(goldensDir, 'tiny-sd15');
