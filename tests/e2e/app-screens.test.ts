// The lab's screens in headless Chromium (WebGPU on SwiftShader), driven as a user drives them: through the
// controls' accessible names. The page is the app itself (index.html from Vite's dev server). Screenshots of
// every screen, light and dark, go to test-results/screens/ (README shows copies from docs/screens/).

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserSession, describeLog, openBrowser, ROOT } from '../helpers/browser';
import { GOLDENS } from '../helpers/goldens';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const SHOTS = path.join(ROOT, 'test-results', 'screens');

let b: BrowserSession;
let page: Page;

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
