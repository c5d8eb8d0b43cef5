// The lab's screens in headless Chromium (WebGPU on SwiftShader), driven as a user drives them: through the
// controls' accessible names. The page is the app itself (index.html from Vite's dev server). Screenshots of
// every screen, light and dark, go to test-results/screens/ (README shows copies from docs/screens/).

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPngText } from '../../src/data/png-text';
import { decodeLora } from '../../src/models/lora-io';
import { dirModelFiles } from '../../src/models/model-files-node';
import { memorySource, SafetensorsFile } from '../../src/models/safetensors';
import { unetParams, type UNetConfig } from '../../src/models/unet';
import { readConfig } from '../../src/models/weights';
import { type BrowserSession, describeLog, openBrowser, ROOT } from '../helpers/browser';
import { GOLDENS } from '../helpers/goldens';
import { discPng } from '../helpers/train-data';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const SHOTS = path.join(ROOT, 'test-results', 'screens');
const tmp = mkdtempSync(path.join(tmpdir(), 'tpo-screens-'));

/** Four disc images with their .txt captions, as files on disk; returns their paths. */
function discFiles(): string[] {
  const colours: [string, [number, number, number]][] = [['red', [220, 30, 30]], ['blue', [30, 40, 220]], ['green', [30, 200, 60]], ['yellow', [230, 220, 40]]];
  const out: string[] = [];
  for (const [i, [name, rgb]] of colours.entries()) {
    const png = path.join(tmp, `disc${i}.png`);
    const txt = path.join(tmp, `disc${i}.txt`);
    writeFileSync(png, discPng(64, rgb, [240, 240, 240], i + 1));
    writeFileSync(txt, `a ${name} circle on the left of a white background`);
    out.push(png, txt);
  }
  return out;
}

let b: BrowserSession;
let page: Page;

/** Shows a screen through the tab bar. */
async function tab(name: string): Promise<void> {
  await page.getByRole('navigation', { name: 'Screens' }).getByRole('button', { name, exact: true }).click();
}

/** Saves the page in the light and the dark theme. */
async function screenshots(name: string): Promise<void> {
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.screenshot({ path: path.join(SHOTS, `${name}-${scheme}.png`), fullPage: true });
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  b = await openBrowser({ persistentProfile: true });
  page = b.page;
  await page.setViewportSize({ width: 1100, height: 900 });
  await page.goto(b.url('/'));
  await page.getByRole('heading', { name: 'TPO Lab', level: 1 }).waitFor({ timeout: 60_000 });
}, 120_000);

afterAll(async () => {
  await b?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('the Model screen', () => {
  it('opens the model folder, shows its architecture, and says whether training fits', async () => {
    await page.getByLabel('Model folder').setInputFiles(TINY);
    const details = page.getByRole('definition').filter({ hasText: 'tiny-sd15' });
    await details.waitFor({ timeout: 60_000 });
    expect(await page.getByLabel('Model details').innerText()).toMatch(/diffusers folder[\s\S]*parameters/);
    // The plan runs on open, for 512 px; the tiny model fits in 8 GiB.
    const verdict = page.locator('.verdict').filter({ hasText: /Fits|Does not fit/ });
    await verdict.waitFor({ timeout: 60_000 });
    expect(await verdict.innerText()).toMatch(/✓ Fits: a step needs .* of the 8 GiB you have/);

    // A budget too small: the verdict says what to change.
    await page.getByLabel('GPU memory (GiB)').fill('1');
    await page.getByLabel('Gradient checkpointing').uncheck();
    await page.getByLabel('Resolution (px)').fill('1024');
    await page.getByRole('button', { name: 'Check memory' }).click();
    await page.locator('.verdict').filter({ hasText: 'of the 1 GiB' }).waitFor();
    const text = await page.locator('.notice').filter({ hasText: 'of the 1 GiB' }).innerText();
    expect(text).toMatch(/Fits|Does not fit/);
    await page.getByLabel('GPU memory (GiB)').fill('8');
    await page.getByLabel('Gradient checkpointing').check();
    await page.getByLabel('Resolution (px)').fill('512');
    await page.getByRole('button', { name: 'Check memory' }).click();
    await page.locator('.verdict').filter({ hasText: 'of the 8 GiB' }).waitFor();
    await screenshots('model');
  }, 180_000);

  it('a wrong single file is refused with the reason, and the open model stays open', async () => {
    await page.getByLabel('Model file').setInputFiles(path.join(GOLDENS, 'tiny-sd15-single.safetensors'));
    const alert = page.getByRole('alert').filter({ hasText: 'could not be opened' });
    await alert.waitFor({ timeout: 60_000 });
    expect(await alert.innerText()).toMatch(/shape/i);
    expect(await page.getByText('Still open: tiny-sd15.').count()).toBe(1);
    await screenshots('model-error');
    expect(b.log.filter((l) => !l.includes('favicon')), describeLog(b.log)).toEqual([]);
  }, 120_000);
});

describe('the Data screen', () => {
  it('imports four captioned images, edits a caption, removes and restores an item, exports the JSONL', async () => {
    await tab('Data');
    await page.getByLabel('Dataset name').fill('discs');
    await page.getByLabel('Images', { exact: true }).setInputFiles(discFiles());
    const counts = page.getByLabel('Counts');
    await counts.filter({ hasText: '4 images' }).waitFor({ timeout: 60_000 });
    expect(await counts.innerText()).toMatch(/4 images · 0 negatives .* 4 without negatives/);
    await page.getByRole('img', { name: 'a red circle on the left of a white background' }).waitFor();

    // A caption edited and saved with Enter; read back from storage by choosing the dataset again.
    const caption = page.getByLabel('Caption of disc1.png');
    await caption.fill('a blue disc on the left of a white background');
    await caption.press('Enter');
    await expect.poll(() => page.getByLabel('Caption of disc1.png').inputValue()).toBe('a blue disc on the left of a white background');

    // Removed, then restored with Undo.
    await page.getByRole('button', { name: 'Remove disc3.png' }).click();
    await counts.filter({ hasText: '3 images' }).waitFor();
    await page.getByRole('button', { name: 'Undo' }).click();
    await counts.filter({ hasText: '4 images' }).waitFor();

    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export JSONL' }).click()]);
    const saved = path.join(tmp, 'export.jsonl');
    await download.saveAs(saved);
    const lines = readFileSync(saved, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { image: string; caption: string });
    expect(lines.map((l) => l.image)).toEqual(['disc0.png', 'disc1.png', 'disc2.png', 'disc3.png']);
    expect(lines[1].caption).toBe('a blue disc on the left of a white background');

    await page.getByRole('region', { name: 'Dataset' }).getByLabel('Dataset').selectOption({ label: 'discs (4 images)' });
    await expect.poll(() => page.getByLabel('Caption of disc1.png').inputValue()).toBe('a blue disc on the left of a white background');
    await screenshots('data');
    expect(b.log.filter((l) => !l.includes('favicon')), describeLog(b.log)).toEqual([]);
  }, 180_000);
});

describe('the Train screen', () => {
  it('trains TDPO with live charts and previews, pauses and resumes, and survives a reload mid-run', async () => {
    // Negatives for the dataset, through the engine as the Pairs screen makes them.
    const made = await page.evaluate(async (paths) => {
      // import() spelled in a string: Vite's SSR transform rewrites a literal import() in this function into a helper the page lacks.
      const load = new Function('path', 'return import(path)') as (path: string) => Promise<unknown>;
      const { engine } = (await load(paths.engine)) as typeof import('../../src/ui/engine');
      const { useDataStore } = (await load(paths.data)) as typeof import('../../src/ui/data/store');
      const id = useDataStore.getState().current!;
      const r = await engine().lab.makeNegatives('test', id, { principles: ['attribute'], perCaption: 1, rules: true, seed: 3 });
      await useDataStore.getState().select(id);
      return r.ok ? r.value.made : r.error.message;
    }, { engine: '/src/ui/engine.ts', data: '/src/ui/data/store.ts' });
    expect(made).toBe(4);

    await tab('Train');
    await page.getByLabel('Method').selectOption('tdpo');
    await page.getByRole('button', { name: 'Quick test' }).click();
    await page.getByLabel('Steps', { exact: true }).fill('4');
    await page.getByText('All settings').click();
    await page.getByLabel('Resolution (px)').fill('64');
    await page.getByLabel('LoRA rank').fill('2');
    await page.getByLabel('Learning rate').fill('0.001');
    await page.getByLabel('Batch size').fill('2');
    await page.getByLabel('Held-out share').fill('0.25');
    await page.getByLabel('Checkpoint every (steps)').fill('1');
    await page.getByLabel('Preview prompts').fill('a red circle on the left');
    await page.getByLabel('Previews every (steps)').fill('4');
    await page.getByLabel('Preview sampling steps').fill('2');
    await page.getByRole('button', { name: 'Start training' }).click();

    // The charts follow the steps; pause after the first, then go on.
    const loss = page.locator('.chart').filter({ hasText: 'Loss' }).locator('.chart-last');
    await loss.filter({ hasText: 'at step' }).waitFor({ timeout: 180_000 });
    await page.getByRole('button', { name: 'Pause' }).click();
    await page.getByRole('status').filter({ hasText: 'paused' }).waitFor({ timeout: 120_000 });
    await page.getByRole('button', { name: 'Resume' }).click();
    await page.getByRole('status').filter({ hasText: /Step [23] of 4 · running/ }).waitFor({ timeout: 180_000 });

    // The tab reloads mid-run: the run stops with its checkpoint; reopen the model and resume it.
    await page.reload();
    await page.getByRole('heading', { name: 'TPO Lab', level: 1 }).waitFor();
    await page.getByLabel('Model folder').setInputFiles(TINY);
    await page.getByRole('definition').filter({ hasText: 'tiny-sd15' }).waitFor({ timeout: 60_000 });
    await tab('Train');
    const row = page.getByRole('row').filter({ hasText: 'stopped' });
    await row.waitFor({ timeout: 30_000 });
    await row.getByRole('button', { name: /^Open run/ }).click();
    // The curve so far is read back: one continuous line across the reload.
    await loss.filter({ hasText: 'at step' }).waitFor();
    await page.getByRole('button', { name: 'Resume' }).click();
    await page.getByRole('status').filter({ hasText: 'Step 4 of 4 · done' }).waitFor({ timeout: 240_000 });
    expect(await loss.innerText()).toMatch(/at step 4/);
    await page.getByRole('img', { name: 'a red circle on the left — step 4' }).waitFor({ timeout: 30_000 });
    expect(await page.getByRole('img', { name: 'a red circle on the left — base model' }).count()).toBe(1);
    expect(await page.getByRole('row').filter({ hasText: 'done' }).count()).toBe(1);
    await screenshots('train');
    expect(b.log.filter((l) => !l.includes('favicon')), describeLog(b.log)).toEqual([]);
  }, 600_000);
});

describe('the Samples and Export screens', () => {
  /** The tiny model open and a finished run to draw and export: what the tests above leave, made here when run alone. */
  async function prepare(): Promise<string> {
    await tab('Model');
    if ((await page.getByRole('definition').filter({ hasText: 'tiny-sd15' }).count()) === 0) {
      await page.getByLabel('Model folder').setInputFiles(TINY);
      await page.getByRole('definition').filter({ hasText: 'tiny-sd15' }).waitFor({ timeout: 60_000 });
    }
    const paths = { engine: '/src/ui/engine.ts', data: '/src/ui/data/store.ts' };
    const doneRun = () =>
      page.evaluate(async (p) => {
        // import() spelled in a string: Vite's SSR transform rewrites a literal import() in this function into a helper the page lacks.
        const load = new Function('path', 'return import(path)') as (path: string) => Promise<unknown>;
        const { engine } = (await load(p.engine)) as typeof import('../../src/ui/engine');
        const r = await engine().lab.listRuns();
        if (!r.ok) return `listRuns: ${r.error.message}`;
        return r.value.filter((x) => x.status === 'done').sort((a, b) => b.startedAt - a.startedAt)[0]?.id ?? null;
      }, paths);
    const found = await doneRun();
    if (found) return found;
    // None (this describe run alone): import the discs on the Data screen and train a short run through the engine.
    await tab('Data');
    await page.getByLabel('Dataset name').fill('discs');
    await page.getByLabel('Images', { exact: true }).setInputFiles(discFiles());
    await page.getByLabel('Counts').filter({ hasText: '4 images' }).waitFor({ timeout: 60_000 });
    const trained = await page.evaluate(async (p) => {
      const load = new Function('path', 'return import(path)') as (path: string) => Promise<unknown>;
      const { engine } = (await load(p.engine)) as typeof import('../../src/ui/engine');
      const { useDataStore } = (await load(p.data)) as typeof import('../../src/ui/data/store');
      const dataset = useDataStore.getState().current!;
      const made = await engine().lab.makeNegatives('test', dataset, { principles: ['attribute'], perCaption: 1, rules: true, seed: 3 });
      if (!made.ok) return `makeNegatives: ${made.error.message}`;
      let finish: (status: string) => void = () => {};
      const ended = new Promise<string>((r) => (finish = r));
      const started = await engine().lab.startRun(
        { dataset, config: { method: 'tdpo', steps: 2, resolution: 64, rank: 2, lr: 1e-3, batchSize: 2, seed: 7 }, settings: { holdout: 0.25, checkpointEvery: 1, scoreDraws: 1 } },
        (e) => {
          if (e.type === 'status' && e.status !== 'running') finish(e.error ? `${e.status}: ${e.error}` : e.status);
        },
      );
      if (!started.ok) return `startRun: ${started.error.message}`;
      return await ended;
    }, paths);
    expect(trained).toBe('done');
    const run = await doneRun();
    expect(run).toMatch(/^\d{8}-/);
    return run!;
  }

  let run = '';

  it('draws a prompt with the base model and with the LoRA side by side, and saves an image with its parameters', async () => {
    run = await prepare();
    await tab('Samples');
    await page.getByLabel('Prompts').fill('a red circle on the left');
    await page.getByLabel('Seeds').fill('5');
    await page.getByLabel('Run', { exact: true }).selectOption(run);
    await page.getByLabel('LoRA scale value').fill('1');
    await page.getByLabel('Sampling steps').fill('2');
    await page.getByLabel('Width (px)').fill('64');
    await page.getByLabel('Height (px)').fill('64');
    await page.getByRole('button', { name: 'Generate samples' }).click();
    await page.getByRole('img', { name: 'a red circle on the left — seed 5, LoRA at 1' }).waitFor({ timeout: 300_000 });
    expect(await page.getByRole('img', { name: 'a red circle on the left — seed 5, base model' }).count()).toBe(1);

    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: /^Save image: LoRA at 1, seed 5/ }).click()]);
    expect(download.suggestedFilename()).toBe('a-red-circle-on-the-left-5-lora.png');
    const saved = path.join(tmp, 'sample.png');
    await download.saveAs(saved);
    const text = readPngText(new Uint8Array(readFileSync(saved)));
    expect(text.parameters).toMatch(/^a red circle on the left <lora:tpo-tdpo-.*:1>\n.*Steps: 2, .*Seed: 5, Size: 64x64/);
    expect(JSON.parse(text['tpo-lab'])).toMatchObject({ prompt: 'a red circle on the left', seed: 5, loraScale: 1 });

    // A wrong size is refused with what to change.
    await page.getByLabel('Width (px)').fill('60');
    await page.getByRole('button', { name: 'Generate samples' }).click();
    const alert = page.getByRole('alert').filter({ hasText: 'width 60' });
    await alert.waitFor({ timeout: 60_000 });
    expect(await alert.innerText()).toMatch(/multiple of 8/);
    await page.getByLabel('Width (px)').fill('64');
    const loraImage = page.getByRole('img', { name: 'a red circle on the left — seed 5, LoRA at 1' });
    const before = await loraImage.getAttribute('src');
    await page.getByRole('button', { name: 'Generate samples' }).click();
    await alert.waitFor({ state: 'detached' });
    // Drawn again: new images replace the old ones when the whole request is done.
    await expect.poll(() => loraImage.getAttribute('src'), { timeout: 300_000, interval: 1000 }).not.toBe(before);
    expect(await page.getByLabel('Sampling progress').count()).toBe(0);
    await screenshots('samples');
    expect(b.log.filter((l) => !l.includes('favicon')), describeLog(b.log)).toEqual([]);
  }, 900_000);

  it('shows the metadata of the file and exports a kohya fp32 LoRA that the Node reader accepts', async () => {
    run ||= await prepare();
    await tab('Export');
    await page.getByLabel('Run', { exact: true }).selectOption(run);
    await page.getByLabel('Format').selectOption('kohya');
    await page.getByLabel('Precision').selectOption('fp32');
    const table = page.getByRole('table');
    await table.getByRole('rowheader', { name: 'ss_network_dim' }).waitFor({ timeout: 60_000 });
    expect(await table.getByRole('row').filter({ hasText: 'ss_network_dim' }).innerText()).toMatch(/ss_network_dim\s+2/);
    expect(await page.getByLabel('File', { exact: true }).innerText()).toMatch(/fp32/);

    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export LoRA' }).click()]);
    expect(download.suggestedFilename()).toMatch(new RegExp(`^tpo-tdpo-${run}-step\\d+\\.safetensors$`));
    const saved = path.join(tmp, 'lora.safetensors');
    await download.saveAs(saved);
    const params = unetParams(await readConfig<UNetConfig>(dirModelFiles(TINY), 'unet'));
    const file = await SafetensorsFile.open(memorySource(new Uint8Array(readFileSync(saved))));
    const decoded = await decodeLora(file, params);
    expect(decoded.format).toBe('kohya');
    expect(decoded.lora.size).toBeGreaterThan(0);
    expect(file.metadata.ss_network_dim).toBe('2');
    expect([...decoded.lora.values()].every((m) => m.rank === 2)).toBe(true);
    await page.getByRole('status').filter({ hasText: 'Downloaded' }).waitFor();
    await screenshots('export');
    expect(b.log.filter((l) => !l.includes('favicon')), describeLog(b.log)).toEqual([]);
  }, 900_000);
});
