// The page's responsiveness while training: the production build (what `npm start` serves) in headless
// Chromium, driven through the screens as a user drives them (model folder, four captioned images, rule
// negatives accepted, a short TDPO run with previews, every screen visited while it runs). Every main-thread task over 50 ms while the run
// goes ('longtask') is recorded, with the scripts that ran in the long animation frames around it
// ('long-animation-frame': source and function), so a long task says where it came from.
// Prints a table and writes tests/bench/results/ui.json; it asserts nothing about timings.
//
//   npx vitest run --config vitest.bench.config.ts tests/bench/ui.bench.test.ts
//   UI_BENCH_STEPS=12 UI_BENCH_MINIFY=0 ...   (more steps; readable function names in the attribution)
//   UI_BENCH_PROFILE=1 ...   (also a CPU profile of the page while training: the functions that took the most)

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { build } from 'vite';
import { afterAll, expect, it } from 'vitest';
import { type BrowserSession, describeLog, openBrowser, ROOT } from '../helpers/browser';
import { GOLDENS } from '../helpers/goldens';
import { discPng } from '../helpers/train-data';

const STEPS = Number(process.env.UI_BENCH_STEPS ?? 8);
const MINIFY = process.env.UI_BENCH_MINIFY !== '0';
const PROFILE = process.env.UI_BENCH_PROFILE === '1';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** The functions with the most time in a CPU profile, their callees included ('total'), the page's own code first. */
function topFunctions(profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }, count: number): string[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const total = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    const seen = new Set<string>();
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const f = byId.get(n)!.callFrame;
      if (!f.url || f.functionName === '(idle)') continue;
      const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\//, '')}:${f.lineNumber + 1}`;
      if (seen.has(key)) continue;
      seen.add(key);
      total.set(key, (total.get(key) ?? 0) + dt);
    }
  });
  return [...total].sort((a, b) => b[1] - a[1]).slice(0, count).map(([k, ms]) => `  ${ms.toFixed(0).padStart(6)} ms  ${k}`);
}
const tmp = mkdtempSync(path.join(tmpdir(), 'tpo-ui-bench-'));
let b: BrowserSession | undefined;

afterAll(async () => {
  await b?.close();
  rmSync(tmp, { recursive: true, force: true });
});

interface Recorded {
  longTasks: { start: number; duration: number }[];
  frames: { start: number; duration: number; blocking: number; scripts: { source: string; fn: string; invoker: string; duration: number }[] }[];
}

it('main-thread tasks over 50 ms while training, production build', async () => {
  const outDir = path.join(tmp, 'dist');
  // Vitest sets NODE_ENV=test, which Vite would keep: React's development build. Build as `npm start` does.
  const nodeEnv = process.env.NODE_ENV;
  process.env.NODE_ENV = 'production';
  try {
    await build({ root: ROOT, configFile: path.join(ROOT, 'vite.config.ts'), mode: 'production', logLevel: 'warn', build: { outDir, emptyOutDir: true, minify: MINIFY } });
  } finally {
    process.env.NODE_ENV = nodeEnv;
  }
  b = await openBrowser({ built: outDir, persistentProfile: true });
  const page = b.page;
  await page.setViewportSize({ width: 1100, height: 900 });
  await page.goto(b.url('/'));
  await page.getByRole('heading', { name: 'TPO Lab', level: 1 }).waitFor({ timeout: 60_000 });
  const tab = (name: string) => page.getByRole('navigation', { name: 'Screens' }).getByRole('button', { name, exact: true }).click();

  await page.getByLabel('Model folder').setInputFiles(path.join(GOLDENS, 'tiny-sd15'));
  await page.getByRole('definition').filter({ hasText: 'tiny-sd15' }).waitFor({ timeout: 60_000 });
  await tab('Data');
  const files: string[] = [];
  for (const [i, [name, rgb]] of ([['red', [220, 30, 30]], ['blue', [30, 40, 220]], ['green', [30, 200, 60]], ['yellow', [230, 220, 40]]] as const).entries()) {
    writeFileSync(path.join(tmp, `disc${i}.png`), discPng(64, [...rgb], [240, 240, 240], i + 1));
    writeFileSync(path.join(tmp, `disc${i}.txt`), `a ${name} circle on the left of a white background`);
    files.push(path.join(tmp, `disc${i}.png`), path.join(tmp, `disc${i}.txt`));
  }
  await page.getByLabel('Dataset name').fill('discs');
  await page.getByLabel('Images', { exact: true }).setInputFiles(files);
  await page.getByLabel('Counts').filter({ hasText: '4 images' }).waitFor({ timeout: 60_000 });
  await tab('Pairs');
  await page.getByRole('button', { name: 'Generate negatives' }).click();
  await page.getByText('Wrote 4 negatives for 4 captions').waitFor({ timeout: 60_000 });
  await page.getByRole('button', { name: 'Accept all' }).click();

  await tab('Train');
  await page.getByLabel('Method', { exact: true }).selectOption('tdpo');
  await page.getByRole('button', { name: 'Quick test' }).click();
  await page.getByLabel('Steps', { exact: true }).fill(String(STEPS));
  await page.getByText('All settings').click();
  for (const [label, value] of [
    ['Resolution (px)', '64'],
    ['LoRA rank', '2'],
    ['Batch size', '2'],
    ['Held-out share', '0.25'],
    ['Checkpoint every (steps)', '2'],
    ['Preview prompts', 'a red circle on the left'],
    ['Previews every (steps)', String(Math.max(1, Math.floor(STEPS / 2)))],
    ['Preview sampling steps', '2'],
  ] as const) {
    await page.getByLabel(label).fill(value);
  }
  await page.evaluate(() => {
    const w = window as unknown as { recorded: Recorded };
    w.recorded = { longTasks: [], frames: [] };
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) w.recorded.longTasks.push({ start: Math.round(e.startTime), duration: Math.round(e.duration) });
    }).observe({ type: 'longtask' });
    new PerformanceObserver((list) => {
      for (const e of list.getEntries() as unknown as { startTime: number; duration: number; blockingDuration: number; scripts: { sourceURL: string; sourceFunctionName: string; invoker: string; duration: number }[] }[]) {
        w.recorded.frames.push({
          start: Math.round(e.startTime),
          duration: Math.round(e.duration),
          blocking: Math.round(e.blockingDuration),
          scripts: e.scripts.map((s) => ({ source: s.sourceURL.replace(/^.*\//, ''), fn: s.sourceFunctionName, invoker: s.invoker, duration: Math.round(s.duration) })),
        });
      }
    }).observe({ type: 'long-animation-frame' });
  });
  const cdp = PROFILE ? await page.context().newCDPSession(page) : null;
  if (cdp) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
    await cdp.send('Profiler.start');
  }
  const started = Date.now();
  await page.getByRole('button', { name: 'Start training' }).click();
  // A user looks around while it trains: every screen once, then back to the charts.
  await page.getByRole('status').filter({ hasText: /Step [1-9]\d* of \d+ · running/ }).waitFor({ timeout: 600_000 });
  for (const name of ['Model', 'Data', 'Pairs', 'Scores', 'Samples', 'Export', 'Train']) {
    await tab(name);
    await page.waitForTimeout(1000);
  }
  await page.getByRole('status').filter({ hasText: `Step ${STEPS} of ${STEPS} · done` }).waitFor({ timeout: 1_800_000 });
  await page.getByRole('img', { name: `a red circle on the left — step ${STEPS}` }).waitFor({ timeout: 60_000 });
  const seconds = (Date.now() - started) / 1000;
  const profile = cdp ? ((await cdp.send('Profiler.stop')) as unknown as { profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] } }).profile : null;
  const recorded = await page.evaluate(() => (window as unknown as { recorded: Recorded }).recorded);
  expect(b.log.filter((l) => !l.includes('favicon')), describeLog(b.log)).toEqual([]);

  const lines = [
    `UI responsiveness while training (${MINIFY ? 'minified' : 'unminified'} production build, ${STEPS} TDPO steps at 64 px with previews, ${seconds.toFixed(0)} s)`,
    `main-thread tasks over 50 ms: ${recorded.longTasks.length}${recorded.longTasks.length ? ` (longest ${Math.max(...recorded.longTasks.map((t) => t.duration))} ms: ${recorded.longTasks.map((t) => t.duration).join(', ')})` : ''}`,
    `long animation frames (over 50 ms, rendering included): ${recorded.frames.length}`,
    ...recorded.frames.map((f) => `  at ${f.start} ms: ${f.duration} ms (blocking ${f.blocking} ms): ${f.scripts.map((s) => `${s.invoker} → ${s.fn || '?'} in ${s.source} ${s.duration} ms`).join('; ') || 'no script (style, layout, paint)'}`),
    ...(profile ? ['main-thread time by function while training (callees included):', ...topFunctions(profile, 40)] : []),
  ];
  console.log(lines.join('\n'));
  mkdirSync(path.join(ROOT, 'tests', 'bench', 'results'), { recursive: true });
  writeFileSync(path.join(ROOT, 'tests', 'bench', 'results', 'ui.json'), `${JSON.stringify({ steps: STEPS, minified: MINIFY, seconds, ...recorded }, null, 2)}\n`);
});
