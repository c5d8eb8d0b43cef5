// Smoke test of the built app in a real browser: Vite builds it, Vite's preview server serves it on
// localhost, and Debian's headless Chromium opens it with WebGPU on SwiftShader (the CPU). The GPU panel must
// name an adapter and the self-test (SiLU in the engine worker) must pass. A second browser with WebGPU
// switched off must get the "how to enable WebGPU" help, not a blank page. A judge folder opens in the built
// app (ONNX Runtime's wasm binary served from the build's assets).

import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { build, preview, type PreviewServer } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFixtureFolder } from '../helpers/clip-fixture';
import { runCli } from '../helpers/cli';
import { testGpu } from '../helpers/gpu';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';

const COMMON_ARGS = [
  '--no-sandbox',
  '--disable-gpu-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const WEBGPU_ARGS = [
  '--enable-unsafe-webgpu',
  '--enable-features=Vulkan',
  '--use-vulkan=swiftshader',
  '--use-webgpu-adapter=swiftshader',
  ...COMMON_ARGS,
];
/** WebGPU switched off: Chromium then offers no adapter (navigator.gpu may remain, returning null adapters). */
const NO_WEBGPU_ARGS = ['--disable-blink-features=WebGPU', ...COMMON_ARGS];

/** Seconds a software adapter may take to open a device, and to compile and run the self-test. */
const PROBE_TIMEOUT_MS = 60_000;
const SELF_TEST_TIMEOUT_MS = 60_000;

let buildDir = '';
let shotDir = '';
let server: PreviewServer | null = null;
let baseUrl = '';
const browsers: Browser[] = [];

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', resolve);
  });
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

async function buildApp(outDir: string): Promise<void> {
  // Vitest sets NODE_ENV=test, which would give a development build of React.
  const nodeEnv = process.env.NODE_ENV;
  process.env.NODE_ENV = 'production';
  try {
    await build({ root: ROOT, mode: 'production', logLevel: 'warn', build: { outDir, emptyOutDir: true } });
  } finally {
    process.env.NODE_ENV = nodeEnv;
  }
}

/** A page whose console errors, uncaught exceptions and failed requests are kept for failure messages. */
async function openApp(browser: Browser): Promise<{ page: Page; log: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const log: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') {
      log.push(`[console.${msg.type()}${msg.worker() ? ' in worker' : ''}] ${msg.text()}`);
    }
  });
  page.on('pageerror', (error) => log.push(`[uncaught] ${error.stack ?? error.message}`));
  page.on('requestfailed', (req) => log.push(`[request failed] ${req.url()}: ${req.failure()?.errorText}`));
  page.on('crash', () => log.push('[crash] the page crashed'));
  await page.goto(baseUrl);
  return { page, log };
}

/** Runs `step`; if it throws, rethrows with what the GPU panel shows and what the browser logged. */
async function explained<T>(what: string, page: Page, log: string[], step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    const panel = await page
      .locator('section.gpu-panel')
      .innerText({ timeout: 1000 })
      .catch(() => '(GPU panel not found)');
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(
      `${what} failed: ${message}\n\n--- GPU panel ---\n${panel}\n\n--- browser console errors ---\n` +
        (log.length ? log.join('\n') : '(none)'),
    );
  }
}

/** Waits until the GPU panel has finished probing and returns its state. */
async function probeState(page: Page): Promise<string> {
  const panel = page.locator('section.gpu-panel:not([data-state="idle"]):not([data-state="loading"])');
  await panel.waitFor({ timeout: PROBE_TIMEOUT_MS });
  return (await panel.getAttribute('data-state')) ?? '';
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium is not installed at ${CHROMIUM}; the e2e tests need it. Install it with: apt-get install -y chromium`,
    );
  }
  buildDir = await mkdtemp(path.join(tmpdir(), 'tpo-lab-build-'));
  shotDir = await mkdtemp(path.join(tmpdir(), 'tpo-lab-e2e-'));
  await buildApp(buildDir);
  // The demo model the built app serves: the committed one (public/demo/, copied by the build), else a
  // --quick build of it written where the build would have copied it (the app's path is the same; the
  // quick model draws nothing useful).
  if (!existsSync(path.join(buildDir, 'demo', 'model_index.json'))) {
    const quick = await runCli(['build-demo', '--quick', '--out', path.join(buildDir, 'demo'), '--work', path.join(shotDir, 'demo-work')], { cwd: shotDir, gpu: await testGpu() });
    if (quick.status !== 0) throw new Error(`tpo-lab build-demo --quick failed:\n${quick.err}`);
  }
  const port = await freePort();
  server = await preview({
    root: ROOT,
    logLevel: 'warn',
    build: { outDir: buildDir },
    preview: { host: '127.0.0.1', port, strictPort: true, open: false },
  });
  baseUrl = server.resolvedUrls?.local[0] ?? `http://127.0.0.1:${port}/`;
}, 300_000);

afterAll(async () => {
  await Promise.all(browsers.map((b) => b.close().catch(() => undefined)));
  await server?.close();
  if (buildDir) await rm(buildDir, { recursive: true, force: true });
});

describe('with WebGPU (SwiftShader)', () => {
  let page: Page;
  let log: string[];

  beforeAll(async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: WEBGPU_ARGS });
    browsers.push(browser);
    ({ page, log } = await openApp(browser));
  });

  it('shows the adapter, its features and limits', async () => {
    expect(await page.title()).toBe('TPO Lab');
    const state = await explained('Probing the GPU', page, log, () => probeState(page));
    if (state !== 'ready') {
      await explained('Probing the GPU', page, log, async () => {
        throw new Error(`the GPU panel ended in state "${state}", expected "ready"`);
      });
    }

    const facts = await page.getByTestId('adapter-facts').innerText();
    const named = await page.locator('[data-testid="adapter-facts"] dd').allInnerTexts();
    expect(named.slice(0, 4).some((t) => t.trim() !== '' && t !== 'not reported'), `no adapter name in:\n${facts}`).toBe(
      true,
    );
    console.log(`adapter:\n${facts}`);
    if (!/swiftshader/i.test(facts)) console.warn('The adapter is not SwiftShader (a hardware GPU was used).');

    const features = page.locator('ul.features li');
    await expect.poll(() => features.count()).toBe(3);
    for (const name of ['shader-f16', 'subgroups', 'timestamp-query']) {
      expect(await features.filter({ hasText: name }).innerText()).toMatch(/present|absent/);
    }

    const values = await page.locator('table.limits tbody td.num').allInnerTexts();
    expect(values).toHaveLength(6);
    for (const v of values) expect(v).toMatch(/^\d[\d,.]* ?(bytes|KiB|MiB|GiB|TiB)?/);
    expect(log.filter((l) => l.startsWith('[uncaught]'))).toEqual([]);
  });

  it('runs the self-test on the GPU and passes', async () => {
    await page.getByRole('button', { name: 'Run self-test' }).click();
    const result = page.locator('.self-test-result:not([data-state="idle"]):not([data-state="running"])');
    await explained('The self-test', page, log, () => result.waitFor({ timeout: SELF_TEST_TIMEOUT_MS }));
    const outcome = await result.getAttribute('data-state');
    const text = await result.innerText();
    console.log(`self-test: ${text.replace(/\s+/g, ' ')}`);
    if (outcome !== 'passed') {
      await explained('The self-test', page, log, async () => {
        throw new Error(`ended in state "${outcome}": ${text}`);
      });
    }
    expect(text).toMatch(/Passed/);
    // The button is usable again once the test is over.
    await expect.poll(() => page.getByRole('button', { name: 'Run self-test' }).isEnabled()).toBe(true);

    const shot = path.join(shotDir, 'smoke.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${shot}`);
  });

  it('opens with the demo model and the shapes demo dataset, as npm start does', async () => {
    // The page started the demo once the GPU answered (src/ui/demo.ts): a fresh profile, a GPU.
    await explained('Opening the demo model', page, log, () =>
      page.getByRole('definition').filter({ hasText: /^demo \(diffusers folder\)/ }).waitFor({ timeout: 120_000 }),
    );
    expect(await page.getByLabel('Model details').innerText()).toMatch(/native size 64 px/);
    // The Model screen's demo button, under the name the issue fixes for it.
    await expect.poll(() => page.getByRole('button', { name: 'Load demo', exact: true }).isVisible()).toBe(true);
    for (const scheme of ['light', 'dark'] as const) {
      await page.emulateMedia({ colorScheme: scheme });
      await page.screenshot({ path: path.join(shotDir, `demo-model-${scheme}.png`), fullPage: true });
    }
    await page.emulateMedia({ colorScheme: 'light' });
    await page.getByRole('navigation', { name: 'Screens' }).getByRole('button', { name: 'Data', exact: true }).click();
    // Added, and chosen as the dataset to work on.
    const dataset = page.getByLabel('Dataset', { exact: true });
    await explained('Adding the demo dataset', page, log, () => dataset.waitFor({ timeout: 120_000 }));
    await expect.poll(() => dataset.evaluate((s) => (s as HTMLSelectElement).selectedOptions[0]?.textContent ?? ''), { timeout: 120_000 }).toMatch(/^Shapes \(demo\) \(48 images/);
    await page.screenshot({ path: path.join(shotDir, 'demo-data.png'), fullPage: true });
    console.log(`screenshot: ${path.join(shotDir, 'demo-data.png')}`);
    // Everything the demo needs is served with the app: no request failed, nothing was thrown.
    expect(log.filter((l) => /\[uncaught\]|\[request failed\]/.test(l))).toEqual([]);
  });
});

describe('the built app with a judge', () => {
  it("loads ONNX Runtime's wasm from the build's assets and opens a judge folder", async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: WEBGPU_ARGS });
    browsers.push(browser);
    const { page, log } = await openApp(browser);
    // The tiny CLIP-interface judge (tests/helpers/clip-fixture.ts): opening it creates ORT sessions, which
    // fetch the wasm binary from the URL the build gave it.
    const judgeDir = path.join(shotDir, 'clip-judge');
    writeFixtureFolder(judgeDir, { onnxSubfolder: true });
    await page.getByRole('navigation', { name: 'Screens' }).getByRole('button', { name: 'Scores', exact: true }).click();
    await page.getByLabel('Judge folder', { exact: true }).setInputFiles(judgeDir);
    const backend = page.getByLabel('Judge backend', { exact: true });
    await explained('Opening the judge', page, log, () => backend.waitFor({ timeout: 60_000 }));
    expect(await backend.innerText()).toMatch(/^CLIP clip-judge on (WebGPU|wasm \(on the CPU\))$/);
    expect(log.filter((l) => /wasm|\[uncaught\]|\[request failed\]/.test(l))).toEqual([]);
  });

  it('opens it on the wasm backend in a browser without WebGPU', async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: NO_WEBGPU_ARGS });
    browsers.push(browser);
    const { page, log } = await openApp(browser);
    const judgeDir = path.join(shotDir, 'clip-judge-wasm');
    writeFixtureFolder(judgeDir, { onnxSubfolder: true });
    await page.getByRole('navigation', { name: 'Screens' }).getByRole('button', { name: 'Scores', exact: true }).click();
    await page.getByLabel('Judge folder', { exact: true }).setInputFiles(judgeDir);
    const backend = page.getByLabel('Judge backend', { exact: true });
    await explained('Opening the judge without WebGPU', page, log, () => backend.waitFor({ timeout: 60_000 }));
    expect(await backend.innerText()).toBe('CLIP clip-judge-wasm on wasm (on the CPU)');
    expect(log.filter((l) => /wasm|\[uncaught\]|\[request failed\]/.test(l))).toEqual([]);
  });
});

describe('without WebGPU', () => {
  it('explains how to enable WebGPU instead of failing silently', async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: NO_WEBGPU_ARGS });
    browsers.push(browser);
    const { page, log } = await openApp(browser);
    const state = await explained('Probing without WebGPU', page, log, () => probeState(page));
    expect(state).toBe('unavailable');
    const alert = page.getByRole('alert');
    await expect.poll(() => alert.innerText()).toMatch(/WebGPU is not available/);
    const help = await alert.innerText();
    expect(help).toContain('chrome://flags/#enable-unsafe-webgpu');
    expect(help).toMatch(/Firefox Nightly/);
    expect(help).toMatch(/Safari Technology Preview/);
    expect(await page.getByRole('button', { name: 'Run self-test' }).count()).toBe(0);
    await page.screenshot({ path: path.join(shotDir, 'no-webgpu.png'), fullPage: true });
  });
});
