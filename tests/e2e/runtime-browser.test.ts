// The browser runtime end to end: headless Chromium (WebGPU on SwiftShader) drives the engine worker through
// the page's client, as the app's screens will. The tiny SD1.5-layout model folder and a folder of four
// captioned images are picked with the page's folder inputs; the worker opens the model from the File
// objects, copies the images into OPFS, writes rule-editor negatives, prepares features and trains TDPO.
// Then the recoveries: a run interrupted by a page reload resumes from its checkpoint; a run loses its GPU
// device after its first checkpoint and, after the next one, meets a full storage quota (Chrome DevTools
// Protocol's Storage.overrideQuotaForOrigin); each ends with LoRA weights identical to an uninterrupted
// run's, and nothing stored before is lost. The kohya export is read back by the Node LoRA reader.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { CDPSession } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPngText } from '../../src/data/png-text';
import { decodeLora } from '../../src/models/lora-io';
import { dirModelFiles } from '../../src/models/model-files-node';
import { memorySource, SafetensorsFile } from '../../src/models/safetensors';
import { type UNetConfig } from '../../src/models/unet';
import { readConfig } from '../../src/models/weights';
import type { LabRunEvent, Result } from '../../src/worker/api';
import { type BrowserSession, describeLog, openBrowser } from '../helpers/browser';
import { GOLDENS } from '../helpers/goldens';
import { discPng } from '../helpers/train-data';
import type { RuntimeTestApi } from './pages/runtime';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const tmp = mkdtempSync(path.join(tmpdir(), 'tpo-runtime-'));
const DATASET_DIR = path.join(tmp, 'discs');
/** A run on SwiftShader: three steps of the tiny model take well under a minute; leave room for a slow CI machine. */
const RUN_TIMEOUT = 240_000;

let b: BrowserSession;
let cdp: CDPSession;

type Api = RuntimeTestApi;
async function call<K extends keyof Api>(name: K, ...args: Parameters<Api[K]>): Promise<Awaited<ReturnType<Api[K]>>> {
  return b.page.evaluate(
    ({ name, args }) => ((window as any).runtime[name] as (...a: unknown[]) => Promise<unknown>)(...args),
    { name, args: args as unknown[] },
  ) as Promise<Awaited<ReturnType<Api[K]>>>;
}

/** The value of a call that must succeed (a failure fails the test with its message and the browser log). */
function value<T>(r: Result<T>, what: string): T {
  if (!r.ok) throw new Error(`${what} failed: ${r.error.kind}: ${r.error.message}${describeLog(b.log)}`);
  return r.value;
}

async function openPage(): Promise<void> {
  await b.page.goto(b.url('/tests/e2e/pages/runtime.html'));
  await b.page.waitForFunction(() => document.title === 'runtime e2e ready', null, { timeout: 60_000 });
  // The folder pickers, as a user fills them: Playwright hands Chromium the folders' files.
  await b.page.setInputFiles('#model', TINY);
  await b.page.setInputFiles('#dataset', DATASET_DIR);
}

/** Waits until the run has reported a final status; returns it. */
async function ended(run: string): Promise<Extract<LabRunEvent, { type: 'status' }>> {
  await b.page.waitForFunction((run) => (window as any).runtime.ended(run) !== null, run, { timeout: RUN_TIMEOUT, polling: 250 });
  return (await call('ended', run)) as Extract<LabRunEvent, { type: 'status' }>;
}

async function loraTensors(base64: string): Promise<Map<string, number[]>> {
  const decoded = await decodeLora(await SafetensorsFile.open(memorySource(new Uint8Array(Buffer.from(base64, 'base64')))), await readConfig<UNetConfig>(dirModelFiles(TINY), 'unet'));
  const out = new Map<string, number[]>();
  for (const [name, m] of decoded.lora) {
    out.set(`${name}.down`, [...m.down]);
    out.set(`${name}.up`, [...m.up]);
  }
  return out;
}

async function exported(run: string): Promise<Map<string, number[]>> {
  const r = await call('exportLora', run, 'kohya');
  if (!r.ok) throw new Error(`export of ${run} failed: ${r.error.message}${describeLog(b.log)}`);
  return loraTensors(r.base64);
}

beforeAll(async () => {
  mkdirSync(DATASET_DIR);
  const colours: [string, [number, number, number]][] = [['red', [220, 30, 30]], ['blue', [30, 40, 220]], ['green', [30, 200, 60]], ['yellow', [230, 220, 40]]];
  for (const [i, [name, rgb]] of colours.entries()) {
    writeFileSync(path.join(DATASET_DIR, `disc${i}.png`), discPng(64, rgb, [240, 240, 240], i + 1));
    writeFileSync(path.join(DATASET_DIR, `disc${i}.txt`), `a ${name} circle on the left of a white background`);
  }
  // A real profile: OPFS on disk, surviving the reload as a user's does.
  b = await openBrowser({ persistentProfile: true });
  cdp = await b.context.newCDPSession(b.page);
  // Called by the page from inside a run's event stream: shrink the quota to what is used now.
  await b.page.exposeFunction('tpoFillStorage', async () => {
    const usage = (await cdp.send('Storage.getUsageAndQuota', { origin: b.origin })).usage;
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: b.origin, quotaSize: usage });
  });
  await openPage();
}, 120_000);

afterAll(async () => {
  await b?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('the browser runtime (engine worker + OPFS) on the tiny model', () => {
  let dataset = '';
  let reference: Map<string, number[]>;
  let whole = '';

  it('opens the model folder from files, imports four captioned images, makes rule negatives, prepares features', async () => {
    const probe = await call('probe');
    expect(probe.ok, describeLog(b.log)).toBe(true);
    const model = value(await call('openModel'), 'openModel');
    expect(model).toMatchObject({ name: 'tiny-sd15', kind: 'folder', vae: { downsample: 8 } });

    // Single files are opened over the SD1.5 configs the app ships: a pickle is refused unread, and the tiny
    // checkpoint (not SD1.5-sized) fails the shape check; either way the open model stays open.
    await b.page.setInputFiles('#single', { name: 'model.ckpt', mimeType: 'application/octet-stream', buffer: Buffer.from('not read') });
    expect(await call('openSingleFile')).toMatchObject({ ok: false, error: { kind: 'input', message: expect.stringMatching(/pickle.*safetensors/is) } });
    await b.page.setInputFiles('#single', path.join(GOLDENS, 'tiny-sd15-single.safetensors'));
    const tinySingle = await call('openSingleFile');
    expect(tinySingle, describeLog(b.log)).toMatchObject({ ok: false, error: { kind: 'input' } });
    expect(!tinySingle.ok && tinySingle.error.message).toMatch(/shape/i);

    const imported = value(await call('importDataset', 'discs'), 'importDataset');
    dataset = imported.dataset.id;
    expect(imported.dataset.items).toBe(4);
    expect(await call('progress')).toContainEqual([4, 4]);
    expect(await call('datasetImageSize', dataset, 'disc0.png')).toBeGreaterThan(100); // the copy in OPFS

    const made = value(await call('makeNegatives', dataset), 'makeNegatives');
    expect(made.made).toBe(4);
    expect((await call('pairsEvents')).filter((e) => e.type === 'progress').at(-1)).toMatchObject({ done: 4, total: 4 });
    const items = value(await call('datasetItems', dataset), 'datasetItems');
    expect(items.every((i) => i.negatives.length === 1 && i.negatives[0].source === 'rule' && i.negatives[0].status === 'pending')).toBe(true);

    const prepared = value(await call('prepare', dataset), 'prepareFeatures');
    expect(prepared.features).toBe(12); // 4 images, 4 captions, 4 negatives
    expect((await call('progress')).at(-1)).toEqual([12, 12]);
  }, 240_000);

  it('trains TDPO with events arriving, computes scores, exports a kohya LoRA the Node reader accepts', async () => {
    whole = value(await call('startRun', dataset), 'startRun').run;
    const end = await ended(whole);
    expect(end.status, `${end.error}${describeLog(b.log)}`).toBe('done');
    const events = await call('events', whole);
    expect(events[0]).toMatchObject({ type: 'status', status: 'running' });
    expect(events.some((e) => e.type === 'start')).toBe(true);
    const steps = events.filter((e) => e.type === 'step').map((e) => (e.type === 'step' ? e.report.step : 0));
    expect(steps.length).toBeGreaterThan(0); // throttled: at most one per 200 ms, the last always
    expect(steps.at(-1)).toBe(3);
    expect(events.filter((e) => e.type === 'checkpoint').map((e) => (e.type === 'checkpoint' ? e.step : 0))).toEqual([1, 2, 3].slice(0, events.filter((e) => e.type === 'checkpoint').length));
    // Preview samples: the base model before the first step, and step 3; PNGs with their settings inside.
    const previews = events.filter((e) => e.type === 'preview');
    expect(previews.map((e) => (e.type === 'preview' ? e.step : -1))).toEqual([0, 3]);
    const png = await call('runFile', whole, (previews[1] as { files: string[] }).files[0]);
    const pngBytes = new Uint8Array(Buffer.from(png!, 'base64'));
    expect([...pngBytes.subarray(1, 4)].map((c) => String.fromCharCode(c)).join('')).toBe('PNG');
    expect(JSON.stringify(readPngText(pngBytes))).toMatch(/a red circle on the left/);
    reference = await exported(whole);
    expect(reference.size).toBeGreaterThan(0);
    const scores = value(await call('scores', whole), 'scores');
    expect(scores.filter((s) => s.summary).map((s) => s.split)).toEqual(['train', 'held-out']);
    expect(value(await call('metrics', whole), 'metrics').map((m) => m.step)).toEqual([1, 2, 3]);
  }, RUN_TIMEOUT);

  it('a run interrupted by a page reload resumes from its checkpoint to the same LoRA weights', async () => {
    const run = value(await call('startRun', dataset), 'startRun').run;
    await b.page.waitForFunction((run) => (window as any).runtime.checkpoints(run) >= 1, run, { timeout: RUN_TIMEOUT, polling: 100 });
    await openPage(); // the tab reloads: the worker and its run are gone mid-step
    value(await call('openModel'), 'openModel after the reload');
    const info = value(await call('runInfo', run), 'runInfo');
    expect(info.status).toBe('stopped');
    expect(info.bytes).toBeGreaterThan(1000); // OPFS sizes: its checkpoint at least
    expect(info.step).toBeGreaterThanOrEqual(1);
    expect(info.step).toBeLessThan(3);
    value(await call('resumeRun', run), 'resumeRun');
    const end = await ended(run);
    expect(end.status, `${end.error}${describeLog(b.log)}`).toBe('done');
    expect(await exported(run)).toEqual(reference);
    expect(value(await call('metrics', run), 'metrics').map((m) => m.step)).toEqual([1, 2, 3]);
  }, RUN_TIMEOUT * 2);

  it('a lost GPU device and a full storage quota mid-run are recovered from, with nothing stored lost', async () => {
    const run = value(await call('startRun', dataset, { loseDeviceAt: 1, fillStorageAt: 2 }), 'startRun').run;
    const stopped = await ended(run);
    const events = await call('events', run);
    // The device was destroyed after checkpoint 1: reported with its reason, reopened, resumed from step 1.
    const lost = events.find((e) => e.type === 'device-lost');
    expect(lost, describeLog(b.log)).toMatchObject({ type: 'device-lost', resumeFrom: 1 });
    expect((lost as { message: string }).message).toMatch(/device was lost/i);
    // After checkpoint 2 the quota was shrunk to what was used: the run stops, saying why and what to do.
    expect(stopped, describeLog(b.log)).toMatchObject({ status: 'stopped', errorKind: 'storage-full' });
    expect(stopped.error).toMatch(/not enough storage .* Delete old runs/);
    expect(value(await call('runInfo', run), 'runInfo')).toMatchObject({ status: 'stopped', step: 2 });
    // What was stored before is all there: the dataset, the other runs, their LoRAs.
    expect(value(await call('listDatasets'), 'listDatasets').map((d) => d.items)).toEqual([4]);
    expect(await exported(whole)).toEqual(reference);

    // With room again, the run resumes from checkpoint 2 and ends where the uninterrupted run ended.
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: b.origin });
    value(await call('resumeRun', run), 'resumeRun');
    const end = await ended(run);
    expect(end.status, `${end.error}${describeLog(b.log)}`).toBe('done');
    expect(await exported(run)).toEqual(reference);
    expect(value(await call('metrics', run), 'metrics').map((m) => m.step)).toEqual([1, 2, 3]);
    expect(value(await call('listRuns'), 'listRuns').map((r) => r.status)).toEqual(['done', 'done', 'done']);
  }, RUN_TIMEOUT * 2);
});
