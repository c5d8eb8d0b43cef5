// Every CLI entry point over the malformed inputs of tests/helpers/malformed.ts: each must be refused with
// a non-zero status and a message naming the file / line / key and what is wrong, print no stack trace,
// finish within its timeout, leave its inputs byte-identical, write nothing, keep an earlier run's outputs
// (metrics.jsonl) intact and close every file it opened. Most cases fail before the GPU opens; the golden
// ones share the test GPU.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli';
import { GOLDENS } from '../helpers/goldens';
import { testGpu } from '../helpers/gpu';
import { type MalformedCase, malformedCases } from '../helpers/malformed';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const tmp = mkdtempSync(path.join(tmpdir(), 'malformed-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** sha256 of every file under dir, by relative path. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, e.name);
      if (e.isDirectory()) walk(full);
      else out.set(path.relative(dir, full), createHash('sha256').update(readFileSync(full)).digest('hex'));
    }
  };
  walk(dir);
  return out;
}

/** Files this process holds open under dir (Linux: /proc/self/fd). */
function openFilesUnder(dir: string): string[] {
  if (!existsSync('/proc/self/fd')) return [];
  const held: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dir + path.sep)) held.push(target);
    } catch {
      // closed in the meantime
    }
  }
  return held;
}

const TIMEOUT_MS = 60_000;

async function runCase(c: MalformedCase, n: number) {
  const dir = path.join(tmp, `case-${n}`);
  mkdirSync(dir);
  const argv = await c.setup(dir);
  const before = snapshot(dir);
  const kept = new Map((c.keep ?? []).map((f) => [f, readFileSync(path.join(dir, f))]));
  const started = Date.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const result = await Promise.race([
    runCli(argv, { cwd: dir, gpu: c.gpu ? await testGpu() : undefined }),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${c.command} hung: no answer within ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS))),
  ]).finally(() => clearTimeout(timer));
  const text = `${result.err}\n${result.out}`;
  const where = `${c.command} ${c.name}\n--- status ${result.status}, output:\n${text}`;
  if (process.env.SHOW_MALFORMED) console.log(`=== ${where}`); // to read every message while reviewing them
  expect(result.status, where).not.toBe(0);
  expect(text, where).toMatch(c.message);
  expect(result.err, `stack trace in stderr: ${where}`).not.toMatch(/^\s+at /m);
  expect(result.err, where).not.toMatch(/Cannot read properties|is not a function|undefined \(reading|\bE[A-Z]{3,}: /);
  expect(snapshot(dir), `inputs changed or outputs written: ${where}`).toEqual(before);
  for (const [f, bytes] of kept) expect(readFileSync(path.join(dir, f)).equals(bytes), `${f} changed: ${where}`).toBe(true);
  expect(openFilesUnder(dir), `files left open: ${where}`).toEqual([]);
  return Date.now() - started;
}

const cases = malformedCases(TINY);

describe('malformed inputs are refused cleanly', () => {
  for (const command of ['golden', 'plan', 'pairs', 'train', 'score', 'export'] as const) {
    const mine = cases.map((c, i) => [c, i] as const).filter(([c]) => c.command === command);
    it(`tpo-lab ${command}: ${mine.length} cases`, { timeout: 10 * 60_000 }, async () => {
      expect(mine.length).toBeGreaterThan(0);
      for (const [c, i] of mine) {
        const ms = await runCase(c, i);
        // Cases that need no GPU are refused before it opens, so they are quick.
        if (!c.gpu) expect(ms, `${c.command} ${c.name} took ${ms} ms`).toBeLessThan(15_000);
      }
    });
  }

  it('the generator covers every entry point with enough variety', () => {
    expect(cases.length).toBeGreaterThanOrEqual(80);
    expect(new Set(cases.map((c) => `${c.command} ${c.name}`)).size).toBe(cases.length);
    expect(statSync(TINY).isDirectory()).toBe(true);
  });
});
