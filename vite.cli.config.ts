// Builds the command-line tool: src/cli/main.ts -> dist-cli/tpo-lab.js, an ES module for Node 20.
// Node builtins and every package dependency stay external (imported at run time from node_modules).

import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { defineConfig } from 'vite';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8')) as {
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
};
const packages = [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.devDependencies ?? {})];
const builtins = new Set(builtinModules);

function isExternal(id: string): boolean {
  if (id.startsWith('node:') || builtins.has(id) || builtins.has(id.split('/')[0])) return true;
  return packages.some((p) => id === p || id.startsWith(`${p}/`));
}

export default defineConfig({
  // No public/ copying, no index.html: a library build for Node.
  publicDir: false,
  build: {
    ssr: 'src/cli/main.ts',
    target: 'node20',
    outDir: 'dist-cli',
    emptyOutDir: true,
    minify: false,
    sourcemap: true,
    rollupOptions: {
      external: isExternal,
      output: { format: 'es', entryFileNames: 'tpo-lab.js' },
    },
  },
  ssr: { target: 'node' },
});
