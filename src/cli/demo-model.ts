// `--model demo`: the built-in demo model, the diffusers folder `npm run build:demo` writes to the repo's
// public/demo/ (src/demo/build.ts). TPO_LAB_DEMO, when set, names another folder (a build elsewhere).

import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from './args';

/** The repository root: the nearest folder above this module whose package.json is tpo-lab's. */
export function repoRoot(from = path.dirname(fileURLToPath(import.meta.url))): string | null {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'tpo-lab') return dir;
      } catch {
        // not a readable package.json: keep looking above
      }
    }
    if (path.dirname(dir) === dir) return null;
  }
}

/** Where `--model demo` points: TPO_LAB_DEMO, else the repo's public/demo. */
export function demoModelDir(env: Record<string, string | undefined>): string {
  if (env.TPO_LAB_DEMO) return path.resolve(env.TPO_LAB_DEMO);
  const root = repoRoot();
  if (!root) throw new UsageError('--model demo: cannot find the TPO Lab repository (its public/demo folder); set TPO_LAB_DEMO to the demo folder');
  return path.join(root, 'public', 'demo');
}

/**
 * A --model argument as a path: "demo" is the built demo model (an error says how to build it when it is
 * not there); anything else is a path relative to `cwd`.
 */
export function resolveModelArg(model: string, io: { cwd: string; env: Record<string, string | undefined> }): string {
  if (model !== 'demo') return path.resolve(io.cwd, model);
  const dir = demoModelDir(io.env);
  if (!existsSync(path.join(dir, 'model_index.json')) || !existsSync(path.join(dir, 'unet', 'diffusion_pytorch_model.safetensors'))) {
    throw new UsageError(`--model demo: the demo model is not built (${dir} holds no model); run npm run build:demo`);
  }
  return dir;
}
