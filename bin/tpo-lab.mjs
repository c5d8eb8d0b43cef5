#!/usr/bin/env node
// Launcher for the tpo-lab command: runs the bundle that `npm run build:cli` writes to dist-cli/.
import { existsSync } from 'node:fs';

const bundle = new URL('../dist-cli/tpo-lab.js', import.meta.url);
if (!existsSync(bundle)) {
  console.error('tpo-lab: dist-cli/tpo-lab.js is missing; run npm run build:cli first');
  process.exit(1);
}
const { main } = await import(bundle.href);
process.exitCode = await main(process.argv.slice(2));
