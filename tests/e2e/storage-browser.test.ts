// opfsStorage in headless Chromium: the Storage conformance suite on the page and in a dedicated worker,
// the versions and pointer behind writeFolder (and a crash before the pointer switch), and a real quota:
// Chrome DevTools Protocol's Storage.overrideQuotaForOrigin shrinks this origin's quota, every kind of
// write must then fail with a StorageFullError saying how much it needed, leave what was stored before
// intact, and succeed once the quota is back.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserSession, describeLog, openBrowser } from '../helpers/browser';
import type { StorageTestApi } from './pages/storage';

let b: BrowserSession;

beforeAll(async () => {
  // A real profile: OPFS on disk, as users have it (an off-the-record context keeps it in memory).
  b = await openBrowser({ persistentProfile: true });
  await b.page.goto(b.url('/tests/e2e/pages/storage.html'));
  await b.page.waitForFunction(() => document.title === 'storage e2e ready', null, { timeout: 60_000 });
});

afterAll(async () => {
  await b?.close();
});

/** Calls storageTest[name](...args) on the page. */
function call<K extends keyof StorageTestApi>(name: K, ...args: Parameters<StorageTestApi[K]>): Promise<Awaited<ReturnType<StorageTestApi[K]>>> {
  return b.page.evaluate(
    ({ name, args }) => ((window as any).storageTest[name] as (...a: unknown[]) => Promise<unknown>)(...args),
    { name, args: args as unknown[] },
  ) as Promise<Awaited<ReturnType<StorageTestApi[K]>>>;
}

describe('opfsStorage in Chromium', () => {
  it('passes the Storage conformance suite on the page', async () => {
    expect(await call('conformance'), describeLog(b.log)).toEqual([]);
  });

  it('passes it in a dedicated worker', async () => {
    expect(await call('conformanceInWorker'), describeLog(b.log)).toEqual([]);
  });

  it('keeps writeFolder versions behind a pointer; a crash before the switch leaves the old version current', async () => {
    const r = await call('layoutAndCrash');
    expect(r.afterTwo).toEqual(['checkpoint@2', 'checkpoint@current', 'config.json']);
    expect(r.listed).toEqual(['checkpoint', 'config.json']);
    expect(r.afterCrash).toEqual({ read: '{"step":2}', folder: '{"step":2}', list: ['checkpoint', 'config.json'], inside: ['state.json'] });
    // The next writeFolder numbers past the stale version, removes it and the old one.
    expect(r.afterNext).toEqual({ read: '{"step":4}', raw: ['checkpoint@4', 'checkpoint@current', 'config.json'] });
    expect(r.reserved).toMatch(/reserved/);
  });

  it('requestPersistence and estimate answer without throwing', async () => {
    const r = await call('persistence');
    expect(typeof r.persisted).toBe('boolean');
    expect(r.estimate?.quota).toBeGreaterThan(0);
  });

  it('a write over the quota is a StorageFullError naming what it needs; what was stored stays; with room again it succeeds', async () => {
    const before = await call('quotaSetup');
    expect(before).not.toBeNull();
    const cdp = await b.page.context().newCDPSession(b.page);
    const size = 2 * 1024 * 1024;
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: b.origin, quotaSize: before!.usage + 64 * 1024 });
    const full = await call('quotaWrites', size);
    // The override binds writes, but this Chromium's navigator.storage.estimate() keeps reporting the
    // un-overridden quota, so the message's "free" figure is not checked here.
    for (const [kind, r] of Object.entries({ write: full.write, writeNew: full.writeNew, append: full.append, writeFolder: full.writeFolder })) {
      expect(r, `${kind}${describeLog(b.log)}`).toMatchObject({ ok: false, name: 'StorageFullError', isStorageFull: true });
      expect((r as { message: string }).message, kind).toMatch(/needs 2 MiB/);
      expect((r as { message: string }).message, kind).toMatch(/is free\. Delete old runs/);
    }
    expect(full.writeFolder).toMatchObject({ needed: size + '{"step":2}'.length });
    const intact = await call('quotaIntact');
    expect(intact).toMatchObject({ small: 'kept', newExists: false, metrics: '{"step":1}\n', state: '{"step":1}', loraBytes: 1000, list: ['checkpoint', 'data', 'metrics.jsonl'] });
    expect(intact.raw).toEqual(['checkpoint@1', 'checkpoint@current', 'data', 'metrics.jsonl']);

    // Without quotaSize the override is lifted.
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: b.origin });
    const roomy = await call('quotaWrites', size);
    expect(roomy, describeLog(b.log)).toMatchObject({ write: { ok: true }, writeNew: { ok: true }, append: { ok: true }, writeFolder: { ok: true } });
    const after = await call('quotaIntact');
    expect(after).toMatchObject({ newExists: true, state: '{"step":2}', loraBytes: size });
    await cdp.detach();
  });
});
