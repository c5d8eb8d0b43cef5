// Headless Chromium on a page that Vite's dev server serves from the repository root, for e2e tests of
// browser-only code (OPFS, picked files, Web Workers, WebGPU). Any file under the repo can be opened
// (`url('/tests/e2e/pages/storage.html')`); Vite transforms its TypeScript on the fly, so a test page
// imports src/ directly and nothing is built first. WebGPU runs on SwiftShader (the CPU), as in
// docs/DESIGN.md. Console errors, uncaught exceptions and failed requests are collected for failure messages.

import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { createServer, type InlineConfig, preview } from 'vite';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CHROMIUM = '/usr/bin/chromium';

const COMMON_ARGS = ['--no-sandbox', '--disable-gpu-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
/** WebGPU on SwiftShader's Vulkan driver (Debian's chromium package ships it). */
export const WEBGPU_ARGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader', ...COMMON_ARGS];

export interface BrowserSession {
  page: Page;
  context: BrowserContext;
  /** null with `persistentProfile` (Playwright's persistent contexts have no separate Browser). */
  browser: Browser | null;
  /** Vite's dev server, or its preview server with `built`. */
  server: { close(): Promise<void> };
  /** http://127.0.0.1:<port> */
  origin: string;
  /** The address of a path served from the repo root ('/tests/e2e/pages/storage.html'). */
  url(p: string): string;
  /** Console errors and warnings, uncaught exceptions, failed requests, crashes, in order. */
  log: string[];
  /** Opens another page in the same context (same origin storage), logging into `log` too. */
  newPage(): Promise<Page>;
  close(): Promise<void>;
}

export interface BrowserOptions {
  /** Extra Chromium flags, after the WebGPU ones. */
  args?: string[];
  /** Merged into Vite's dev-server config (for example `optimizeDeps.include` for a CommonJS dependency). */
  vite?: InlineConfig;
  /**
   * A real profile folder (deleted on close) instead of Playwright's default off-the-record context, whose
   * OPFS and IndexedDB live in memory: for tests that store much, or that reload the browser.
   */
  persistentProfile?: boolean;
  /**
   * A production build's folder (`vite build --outDir DIR`) to serve with Vite's preview server instead of
   * the dev server: what users run (minified, React's production build), for measurements.
   */
  built?: string;
  /** Show console.log / info lines of the page and its workers on stdout (debugging). */
  echoConsole?: boolean;
  /**
   * Let the app open its built-in demo model and add the demo dataset at start, as it does for a user
   * (src/ui/demo.ts). Off by default: tests open the models and data they check, on a CPU that the demo's
   * opening would otherwise share.
   */
  demoAtStart?: boolean;
}

export async function freePort(): Promise<number> {
  const probe = createNetServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', resolve);
  });
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

function watch(page: Page, log: string[], echo: boolean): void {
  page.on('console', (msg) => {
    const where = msg.worker() ? ' in worker' : '';
    if (msg.type() === 'error' || msg.type() === 'warning') log.push(`[console.${msg.type()}${where}] ${msg.text()}`);
    else if (echo) console.log(`[page${where}] ${msg.text()}`);
  });
  page.on('pageerror', (error) => log.push(`[uncaught] ${error.stack ?? error.message}`));
  page.on('requestfailed', (req) => log.push(`[request failed] ${req.url()}: ${req.failure()?.errorText}`));
  page.on('crash', () => log.push('[crash] the page crashed'));
}

/** Starts Vite's dev server on a free port and a headless Chromium with one page (about:blank). */
export async function openBrowser(options: BrowserOptions = {}): Promise<BrowserSession> {
  // Vite's dependency cache goes to a folder of our own: node_modules/.vite may be shared with other
  // checkouts (a worktree's node_modules link), and two servers rewriting it would trip each other.
  const cacheDir = await mkdtemp(path.join(tmpdir(), 'tpo-vite-'));
  const port = await freePort();
  let server: { close(): Promise<void> } | null = null;
  let browser: Browser | null = null;
  let context: BrowserContext | null = null;
  const profileDir = options.persistentProfile ? await mkdtemp(path.join(tmpdir(), 'tpo-chromium-')) : null;
  const cleanup = async () => {
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await server?.close().catch(() => {});
    await rm(cacheDir, { recursive: true, force: true });
    if (profileDir) await rm(profileDir, { recursive: true, force: true });
  };
  try {
    if (options.built) {
      server = await preview({
        root: ROOT,
        configFile: path.join(ROOT, 'vite.config.ts'),
        logLevel: 'warn',
        build: { outDir: options.built },
        preview: { host: '127.0.0.1', port, strictPort: true },
      });
    } else {
      const dev = await createServer({
        root: ROOT,
        configFile: path.join(ROOT, 'vite.config.ts'),
        cacheDir,
        logLevel: 'warn',
        clearScreen: false,
        ...options.vite,
        server: {
          host: '127.0.0.1',
          port,
          strictPort: true,
          hmr: false,
          // No file watching: tests do not edit sources, and watching the repo costs CPU on a small machine.
          watch: null,
          // Files under the repo root; node_modules may be a link to another checkout's.
          fs: { strict: false },
          ...options.vite?.server,
        },
      });
      await dev.listen();
      server = dev;
    }
    const launch = { executablePath: CHROMIUM, headless: true, args: [...WEBGPU_ARGS, ...(options.args ?? [])] };
    if (profileDir) context = await chromium.launchPersistentContext(profileDir, launch);
    else {
      browser = await chromium.launch(launch);
      context = await browser.newContext();
    }
    const ctx = context;
    if (!options.demoAtStart) {
      // What a user who turned the demo off has in the page's storage (src/ui/demo.ts).
      await ctx.addInitScript(() => {
        localStorage.setItem('tpo-lab.demo.open-at-start', 'no');
        localStorage.setItem('tpo-lab.demo.dataset-added', 'off in tests');
      });
    }
    const log: string[] = [];
    const newPage = async () => {
      const p = await ctx.newPage();
      watch(p, log, options.echoConsole ?? false);
      return p;
    };
    // A persistent context opens with one blank page already.
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    watch(page, log, options.echoConsole ?? false);
    const origin = `http://127.0.0.1:${port}`;
    return {
      page,
      context: ctx,
      browser,
      server,
      origin,
      url: (p) => `${origin}${p.startsWith('/') ? '' : '/'}${p}`,
      log,
      newPage,
      close: cleanup,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** The collected log as a block for a failure message ('' when empty). */
export function describeLog(log: string[]): string {
  return log.length ? `\nbrowser log:\n  ${log.join('\n  ')}` : '';
}
