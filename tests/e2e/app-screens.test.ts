// The lab's screens in headless Chromium (WebGPU on SwiftShader), driven as a user drives them: through the
// controls' accessible names. The page is the app itself (index.html from Vite's dev server). Screenshots of
// every screen, light and dark, go to test-results/screens/ (README shows copies from docs/screens/).

import { mkdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserSession, describeLog, openBrowser, ROOT } from '../helpers/browser';
import { GOLDENS } from '../helpers/goldens';
import { discPng } from '../helpers/train-data';

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

describe('the Pairs screen', () => {
  // A fake OpenAI-compatible server, as a local LLM server would be: it allows any origin (CORS, with the
  // preflight the Authorization header causes), refuses every key under /bad/, and answers each edit request
  // with the true caption's colour changed.
  let llm: Server;
  let llmBase = '';
  const seen: { path: string; auth: string | undefined }[] = [];
  /** The user messages of the edit requests. */
  const prompts: string[] = [];
  const COLOURS = ['turquoise', 'magenta', 'olive', 'violet', 'amber', 'crimson'];
  let answered = 0;

  const CAPTIONS = [
    'a red circle on the left of a white background',
    'a blue circle on the right of a black background',
    'a green circle in the middle of a grey background',
    'a yellow circle at the top of a white background',
  ];
  const RGB: [number, number, number][] = [
    [220, 40, 40],
    [40, 60, 220],
    [40, 180, 60],
    [230, 210, 40],
  ];

  beforeAll(async () => {
    llm = createServer((req: IncomingMessage, res: ServerResponse) => {
      const cors = { 'access-control-allow-origin': '*', 'access-control-allow-headers': 'authorization, content-type, accept', 'access-control-allow-methods': 'POST, OPTIONS' };
      if (req.method === 'OPTIONS') {
        res.writeHead(204, cors);
        return res.end();
      }
      let text = '';
      req.on('data', (c) => (text += c));
      req.on('end', () => {
        seen.push({ path: req.url ?? '', auth: req.headers.authorization });
        const json = (status: number, body: unknown) => {
          res.writeHead(status, { ...cors, 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        };
        if (req.url?.startsWith('/bad/')) return json(401, { error: { message: 'Incorrect API key provided' } });
        if (req.url !== '/v1/chat/completions') return json(404, { error: 'not found' });
        const body = JSON.parse(text) as { messages: { role: string; content: string }[] };
        const user = body.messages.filter((m) => m.role === 'user').map((m) => m.content).join('\n');
        const caption = /True caption: "([^"]*)"/.exec(user)?.[1];
        if (caption) prompts.push(user);
        // The connection test asks for one word; an edit request quotes the true caption.
        const content = caption
          ? JSON.stringify({ caption: caption.replace(/^a \w+/, `a ${COLOURS[answered++ % COLOURS.length]}`), principle: 'attribute' })
          : 'ok';
        json(200, { choices: [{ message: { role: 'assistant', content }, finish_reason: 'stop' }] });
      });
    });
    await new Promise<void>((resolve) => llm.listen(0, '127.0.0.1', resolve));
    llmBase = `http://127.0.0.1:${(llm.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => llm?.close(() => resolve()));
  });

  const counts = () => page.locator('.review-counts').innerText();

  it('asks for a dataset, then writes negatives with the rule editor and reviews them by keyboard and in bulk, undoably', async () => {
    await page.getByRole('button', { name: 'Pairs', exact: true }).click();
    await page.getByText('Import images on the Data screen first').waitFor();

    // The dataset, imported through the data store in the page as the Data screen would (4 discs, captions).
    const files = CAPTIONS.flatMap((caption, i) => [
      { name: `disc${i}.png`, type: 'image/png', b64: discPng(64, RGB[i], [245, 245, 245], i + 1).toString('base64') },
      { name: `disc${i}.txt`, type: 'text/plain', b64: Buffer.from(caption).toString('base64') },
    ]);
    // A string, not a function: the test's own dynamic imports are rewritten by Vitest, the page's are not.
    await page.evaluate(`(async (files) => {
      const { useDataStore } = await import('/src/ui/data/store.ts');
      const list = files.map((f) => new File([Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0))], f.name, { type: f.type }));
      await useDataStore.getState().importFiles(list, 'discs');
      const { error } = useDataStore.getState();
      if (error) throw new Error(error.message);
    })(${JSON.stringify(files)})`);
    await page.getByRole('heading', { name: 'Review' }).waitFor({ timeout: 60_000 });
    expect(await page.getByText('No negatives yet').count()).toBe(1);

    // The rule editor is the default.
    expect(await page.getByRole('radio', { name: /Rule editor/ }).isChecked()).toBe(true);
    await page.getByRole('button', { name: 'Generate negatives' }).click();
    await page.getByText('Wrote 4 negatives for 4 captions').waitFor({ timeout: 60_000 });
    const rows = page.locator('.pairs > li');
    expect(await rows.count()).toBe(4);
    expect(await counts()).toMatch(/4 pending\s+0 accepted\s+0 rejected/);
    // Every row: a thumbnail read from the dataset, the caption, the negative with its changed words marked.
    await page.locator('.pairs img').nth(3).waitFor();
    expect(await page.locator('.pairs img').evaluateAll((imgs) => imgs.every((i) => (i as HTMLImageElement).complete && (i as HTMLImageElement).naturalWidth === 64))).toBe(true);
    expect(await page.locator('.pairs mark').count()).toBeGreaterThanOrEqual(4);
    expect(await rows.first().innerText()).toMatch(/rule editor · pending/);

    // Keyboard: the first row is accepted with "a"; the second edited with "j", "e".
    const list = page.getByRole('list', { name: 'Pairs to review' });
    await list.focus();
    await page.keyboard.press('a');
    await page.waitForFunction(() => document.querySelector('.review-counts')?.textContent?.includes('1 accepted'));
    expect(await counts()).toMatch(/3 pending\s+1 accepted\s+0 rejected/);
    expect(await rows.nth(1).getAttribute('aria-current')).toBe('true');
    await page.keyboard.press('e');
    const field = rows.nth(1).getByRole('textbox');
    await field.fill('a blue square on the right of a black background');
    await field.press('Enter');
    await rows.nth(1).getByText('edited by hand').waitFor();
    expect(await rows.nth(1).innerText()).toContain('a blue square on the right of a black background');
    await page.keyboard.press('r');
    await page.waitForFunction(() => document.querySelector('.review-counts')?.textContent?.includes('1 rejected'));

    // Bulk, on the filtered set: accept all pending, then undo it.
    await page.getByLabel('Status', { exact: true }).selectOption('pending');
    expect(await rows.count()).toBe(2);
    await page.getByRole('button', { name: 'Accept all' }).click();
    await page.getByText('Accepted 2 negatives.').waitFor();
    expect(await counts()).toMatch(/0 pending\s+3 accepted\s+1 rejected/);
    await page.getByLabel('Status', { exact: true }).selectOption('all');
    await screenshots('pairs');
    await page.getByRole('button', { name: 'Undo', exact: true }).click();
    await page.waitForFunction(() => document.querySelector('.review-counts')?.textContent?.includes('2 pending'));
    expect(await counts()).toMatch(/2 pending\s+1 accepted\s+1 rejected/);
    expect(await page.getByRole('button', { name: 'Undo', exact: true }).count()).toBe(0);
  }, 240_000);

  it('an LLM endpoint: a wrong key is named as such, a working one is tested and writes negatives', async () => {
    await page.getByRole('radio', { name: /LLM endpoint/ }).check();
    await page.getByLabel('Base URL').fill(`${llmBase}/bad/v1`);
    await page.getByLabel('Model').fill('tiny');
    await page.getByLabel('API key').fill('sk-wrong');
    await page.getByRole('button', { name: 'Test connection' }).click();
    const refused = page.getByRole('alert').filter({ hasText: 'refused the API key (HTTP 401)' });
    await refused.waitFor({ timeout: 30_000 });
    expect(await refused.innerText()).not.toContain('sk-wrong');
    await screenshots('pairs-llm-refused');

    await page.getByLabel('Base URL').fill(`${llmBase}/v1`);
    await page.getByLabel('API key').fill('sk-test');
    await page.getByRole('button', { name: 'Test connection' }).click();
    await page.getByText('The server answers').waitFor({ timeout: 30_000 });
    expect(seen.at(-1)).toEqual({ path: '/v1/chat/completions', auth: 'Bearer sk-test' });
    // The key was not asked to be remembered: nothing of it is in the page's storage.
    expect(await page.evaluate(() => JSON.stringify({ ...localStorage }))).not.toContain('sk-test');

    // Remembering the key puts it in this browser's storage; forgetting it takes it out (and off the form).
    await page.getByLabel('Remember the key on this device').check();
    expect(await page.evaluate(() => JSON.stringify({ ...localStorage }))).toContain('sk-test');
    await page.getByRole('button', { name: 'Forget the key' }).click();
    expect(await page.evaluate(() => JSON.stringify({ ...localStorage }))).not.toContain('sk-test');
    expect(await page.getByLabel('API key').inputValue()).toBe('');
    await page.getByLabel('API key').fill('sk-test');

    // An edited template is what the LLM is asked.
    await page.getByText('Prompt templates').click();
    const mix = page.getByRole('group', { name: 'Mix template' });
    const template = mix.getByRole('textbox');
    await template.fill(`${await template.inputValue()}\nPrefer a colour change.`);

    // Each caption has one live negative (the rejected one does not count): two per caption asks for one
    // more for three of them, and two for the caption whose negative was rejected.
    await page.getByLabel('Negatives per caption').fill('2');
    await page.getByRole('button', { name: 'Generate negatives' }).click();
    await page.getByText('Wrote 5 negatives for 4 captions').waitFor({ timeout: 60_000 });
    expect(await counts()).toMatch(/7 pending\s+1 accepted\s+1 rejected/);
    const fromLlm = page.locator('.pairs > li').filter({ hasText: '· LLM ·' });
    expect(await fromLlm.count()).toBe(5);
    expect(await fromLlm.first().locator('mark').first().innerText()).toMatch(/turquoise|magenta|olive|violet|amber|crimson/);
    expect(prompts.length).toBeGreaterThanOrEqual(5);
    expect(prompts.every((p) => p.includes('Prefer a colour change.'))).toBe(true);
    await mix.getByRole('button', { name: 'Reset to default' }).click();
    expect(await template.inputValue()).not.toContain('Prefer a colour change.');
    await page.getByText('Prompt templates').click();
    await screenshots('pairs-llm');

    // The browser reports the deliberate 401 as a failed resource load: that line, and nothing else, is expected.
    const unexpected = b.log.filter((l) => !l.includes('favicon') && !/status of 401 \(Unauthorized\)/.test(l));
    expect(unexpected, describeLog(b.log)).toEqual([]);
  }, 240_000);
});
