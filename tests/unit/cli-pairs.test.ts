// `tpo-lab pairs`, run in-process through main() on temporary datasets, with the rule editor and with a
// loopback OpenAI-format server.

import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { captureIO } from '../helpers/cli';
import { parseTrainerJsonl } from '../../src/data/import';
import { parseShapesPrompt, shapesDataset } from '../../src/demo/shapes';
import { main } from '../../src/cli/main';
import { type CliIO, ProgressBar } from '../../src/cli/io';
import { captionReply, chatReply, type FakeServer, startFakeOpenAI } from '../helpers/llm/fake-openai';
import { tempDir, tinyPng } from '../helpers/llm/files';
import { tinyModelDir } from '../helpers/llm/paths';

const SECRET = 'sk-live-VERY-SECRET-4242424242';

const capture = (env: Record<string, string> = {}, signal?: AbortSignal) => captureIO({ env, signal });

const dirs: { cleanup: () => void }[] = [];
afterEach(() => {
  while (dirs.length) dirs.pop()!.cleanup();
});

/** A kohya folder under <tmp>/data and an output path under <tmp>/out. */
function dataset(captions: Record<string, string>) {
  const d = tempDir();
  dirs.push(d);
  for (const [name, caption] of Object.entries(captions)) {
    d.write(`data/${name}.png`, tinyPng());
    d.write(`data/${name}.txt`, caption);
  }
  return { root: d.dir, data: path.join(d.dir, 'data'), out: path.join(d.dir, 'out', 'pairs.jsonl'), write: d.write };
}

function readOut(file: string) {
  return parseTrainerJsonl(readFileSync(file, 'utf8')).items;
}

describe('tpo-lab main', () => {
  it('prints help for the tool and for pairs', async () => {
    let c = capture();
    expect(await main(['--help'], c.io)).toBe(0);
    expect(c.out()).toMatch(/Commands:\n(.*\n)*\s+pairs\s+write mismatched captions/);
    c = capture();
    expect(await main(['pairs', '--help'], c.io)).toBe(0);
    for (const opt of ['--data PATH', '--out FILE.jsonl', '--llm-url URL', '--llm-model NAME', '--api-key-env VAR', '--principles LIST', '--per-caption N', '--rules', '--seed S']) {
      expect(c.out()).toContain(opt);
    }
    c = capture();
    expect(await main(['help', 'pairs'], c.io)).toBe(0);
    expect(c.out()).toMatch(/^Usage: tpo-lab pairs/);
  });

  it('rejects unknown commands and bad arguments with status 2', async () => {
    let c = capture();
    expect(await main(['frobnicate'], c.io)).toBe(2);
    expect(c.err()).toMatch(/unknown command 'frobnicate'/);
    const cases: [string[], RegExp][] = [
      [['pairs', '--out', 'x.jsonl'], /--data is required/],
      [['pairs', '--data', 'd', '--out', 'o', '--principles', 'content,colour'], /unknown principle 'colour'/],
      [['pairs', '--data', 'd', '--out', 'o', '--llm-url', 'http://127.0.0.1:9/v1'], /--llm-url needs --llm-model/],
      [['pairs', '--data', 'd', '--out', 'o', '--per-caption', '0'], /--per-caption must be at least 1/],
      [['pairs', '--data', 'd', '--out', 'o', '--bogus'], /Unknown option '--bogus'/],
      [['pairs', '--data', 'd', '--out', 'o', '--llm-url', 'http://127.0.0.1:9/v1', '--llm-model', 'm', '--api-key-env', 'NOPE_KEY'], /NOPE_KEY .* is not set/],
    ];
    for (const [argv, message] of cases) {
      c = capture();
      expect(await main(argv, c.io), argv.join(' ')).toBe(2);
      expect(c.err()).toMatch(message);
      expect(c.err()).toMatch(/--help/);
    }
  });
});

describe('tpo-lab pairs with the rule editor', () => {
  it('writes every item with its negatives in the trainer JSONL, then resumes', async () => {
    const ds = dataset({ a: 'a red car parked on a street at night', b: 'two dogs playing in the snow', c: 'a wooden chair to the left of a lamp' });
    const argv = ['pairs', '--data', ds.data, '--out', ds.out, '--principles', 'attribute,context', '--per-caption', '2', '--seed', '5', '--tokenizer', tinyModelDir];
    const c = capture();
    expect(await main(argv, c.io)).toBe(0);
    expect(c.err()).toMatch(/editor: rules \(seed 5\)/);
    expect(c.err()).toMatch(/3 caption\(s\): 3 to do, 0 already done/);
    expect(c.err()).toMatch(/pairs: 3\/3 \(100%\)/); // progress, printed plainly when not a terminal
    expect(c.out()).toMatch(/negatives: 6 made \(attribute \d, context \d\), 0 failed/);

    const lines = readFileSync(ds.out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(3);
    for (const line of lines) {
      // image paths are relative to the output file
      expect(line.image).toMatch(/^\.\.\/data\/[abc]\.png$/);
      expect(existsSync(path.resolve(path.dirname(ds.out), line.image))).toBe(true);
      expect(line.negatives).toHaveLength(2);
      for (const n of line.negatives) {
        expect(n).toMatchObject({ source: 'rule', status: 'pending' });
        expect(['attribute', 'context']).toContain(n.principle);
        expect(n.caption).not.toBe(line.caption);
      }
    }
    const first = readFileSync(ds.out, 'utf8');

    // Same command again: nothing to do, nothing changed.
    const again = capture();
    expect(await main(argv, again.io)).toBe(0);
    expect(again.out()).toMatch(/0 done now, 3 already done \(skipped\)/);
    expect(readFileSync(ds.out, 'utf8')).toBe(first);

    // Asking for more adds only the missing ones, keeping the earlier negatives.
    const more = capture();
    expect(await main([...argv.slice(0, 8), '3', ...argv.slice(9)], more.io)).toBe(0);
    expect(more.out()).toMatch(/negatives: 3 made/);
    const items = readOut(ds.out);
    expect(items.map((i) => i.negatives.length)).toEqual([3, 3, 3]);
    expect(items[0].negatives.slice(0, 2).map((n) => n.caption)).toEqual(lines[0].negatives.map((n: { caption: string }) => n.caption));
  });

  it('records negatives it cannot make, with the reason', async () => {
    const ds = dataset({ a: 'a lamp to the left of a chair', b: 'two dogs playing' });
    const c = capture();
    // Negatives that could not be made make the run fail (what was made is kept; a rerun retries the rest).
    expect(await main(['pairs', '--data', ds.data, '--out', ds.out, '--principles', 'spatial', '--rules'], c.io)).toBe(1);
    expect(c.err()).toMatch(/1 negative\(s\) could not be made/);
    expect(c.out()).toMatch(/negatives: 1 made \(spatial 1\), 1 failed/);
    expect(c.out()).toMatch(/failed:\n\s+1 x spatial: no spatial word the rule editor knows in this caption/);
    const items = readOut(ds.out);
    const b = items.find((i) => i.caption === 'two dogs playing')!;
    expect(b.negatives).toEqual([]);
    expect(b.failures).toEqual([expect.objectContaining({ principle: 'spatial', source: 'rule', reason: expect.stringMatching(/no spatial word/) })]);
  });

  it('keeps the negatives of a shapes-world data set inside the world (every one a caption the judge reads)', async () => {
    const scenes = shapesDataset({ seed: 4, count: 16 });
    const ds = dataset(Object.fromEntries(scenes.map((s, i) => [`s${i}`, s.caption])));
    const c = capture();
    await main(['pairs', '--data', ds.data, '--out', ds.out, '--per-caption', '4', '--rules'], c.io);
    expect(c.err()).toMatch(/shapes-world captions: edits keep to its words/);
    const negatives = readOut(ds.out).flatMap((i) => i.negatives);
    expect(negatives.length).toBeGreaterThan(50);
    for (const n of negatives) expect(parseShapesPrompt(n.caption), n.caption).not.toBeNull();
    expect(new Set(negatives.map((n) => n.principle))).toEqual(new Set(['content', 'attribute', 'spatial', 'context']));
  });

  it('stops on dataset problems unless told to skip them', async () => {
    const ds = dataset({ a: 'a red cube' });
    ds.write('data/bad.png', 'not an image');
    ds.write('data/bad.txt', 'a caption');
    let c = capture();
    expect(await main(['pairs', '--data', ds.data, '--out', ds.out], c.io)).toBe(1);
    expect(c.err()).toMatch(/1 problem in the dataset:\n\s+bad\.png: bad\.png is not an image/);
    expect(c.err()).toMatch(/--skip-invalid/);
    expect(existsSync(ds.out)).toBe(false);
    c = capture();
    expect(await main(['pairs', '--data', ds.data, '--out', ds.out, '--skip-invalid'], c.io)).toBe(0);
    expect(readOut(ds.out).map((i) => i.caption)).toEqual(['a red cube']);
  });

  it('reads a CSV and refuses to resume over a broken output', async () => {
    const ds = dataset({});
    ds.write('data/x.png', tinyPng());
    ds.write('data/list.csv', 'image,caption\nx.png,a blue bird above a house\n');
    ds.write('out/pairs.jsonl', 'garbage\n');
    const c = capture();
    expect(await main(['pairs', '--data', path.join(ds.data, 'list.csv'), '--out', ds.out], c.io)).toBe(1);
    expect(c.err()).toMatch(/not a valid trainer JSONL/);
  });
});

describe('tpo-lab pairs with an LLM endpoint', () => {
  let server: FakeServer;
  beforeAll(async () => {
    server = await startFakeOpenAI(() => captionReply('x'));
  });
  afterAll(async () => {
    await server.close();
  });

  /** A model that turns red into green, and echoes any caption without red back unchanged. */
  const editingModel = (req: { body: Record<string, unknown> | null }) => {
    const user = (req.body!.messages as { role: string; content: string }[]).find((m) => m.role === 'user')!.content;
    const original = /True caption: "(.*)"/.exec(user)![1];
    return captionReply(original.replace('red', 'green'), 'attribute');
  };

  it('makes negatives with the LLM, retries invalid answers, and never leaks the key', async () => {
    server.requests.length = 0;
    server.setHandler(editingModel);
    const ds = dataset({ a: 'a red cube on a table', b: 'a blue sphere', c: 'a red bird in a tree' });
    const c = capture({ TPO_TEST_KEY: SECRET });
    const status = await main(
      ['pairs', '--data', ds.data, '--out', ds.out, '--llm-url', server.baseUrl, '--llm-model', 'test-model', '--api-key-env', 'TPO_TEST_KEY', '--principles', 'attribute', '--retries', '2', '--concurrency', '2'],
      c.io,
    );
    expect(status).toBe(1); // one negative could not be made
    expect(server.requests.every((r) => r.headers.authorization === `Bearer ${SECRET}`)).toBe(true);
    expect(server.requests).toHaveLength(4); // a, c once; b twice (identical both times)
    expect(c.out()).toMatch(/negatives: 2 made \(attribute 2\), 1 failed/);
    expect(c.out()).toMatch(/1 x attribute: identical to the original caption \(after 2 tries\)/);
    expect(c.err()).toMatch(/API key from \$TPO_TEST_KEY/);
    const written = readFileSync(ds.out, 'utf8');
    for (const text of [c.out(), c.err(), written]) expect(text).not.toContain(SECRET);
    const items = readOut(ds.out);
    expect(items.find((i) => i.caption === 'a red cube on a table')!.negatives[0]).toMatchObject({ caption: 'a green cube on a table', source: 'llm', principle: 'attribute', status: 'pending' });
  });

  it('reports a failing endpoint per caption, without the key', async () => {
    server.setHandler((req) => ({ status: 401, body: JSON.stringify({ error: { message: `bad key ${req.headers.authorization}` } }) }));
    const ds = dataset({ a: 'a red cube' });
    const c = capture({ K: SECRET });
    expect(await main(['pairs', '--data', ds.data, '--out', ds.out, '--llm-url', server.baseUrl, '--llm-model', 'm', '--api-key-env', 'K'], c.io)).toBe(1);
    expect(c.out()).toMatch(/1 failed/);
    expect(c.err()).toMatch(/stopped early: .*401/);
    expect(c.out()).toMatch(/401/);
    for (const text of [c.out(), c.err(), readFileSync(ds.out, 'utf8')]) expect(text).not.toContain(SECRET);
  });

  it('saves what is done when cancelled, and resumes the rest', async () => {
    server.setHandler((req) => {
      const user = (req.body!.messages as { role: string; content: string }[])[1].content;
      return user.includes('glider') ? { hang: true } : editingModel(req);
    });
    const ds = dataset({ a: 'a red cube', b: 'a red hang glider' });
    const controller = new AbortController();
    const c = capture({}, controller.signal);
    setTimeout(() => controller.abort(new Error('test')), 300);
    const argv = ['pairs', '--data', ds.data, '--out', ds.out, '--llm-url', server.baseUrl, '--llm-model', 'm', '--principles', 'attribute', '--concurrency', '1'];
    expect(await main(argv, c.io)).toBe(130);
    expect(c.out()).toMatch(/cancelled: 1 caption\(s\) left/);
    let items = readOut(ds.out);
    expect(items.map((i) => i.negatives.length)).toEqual([1, 0]);

    server.setHandler((req) => {
      const user = (req.body!.messages as { role: string; content: string }[])[1].content;
      return user.includes('glider') ? captionReply('a blue hang glider') : chatReply('should not be asked');
    });
    const again = capture();
    expect(await main(argv, again.io)).toBe(0);
    expect(again.out()).toMatch(/1 done now, 1 already done/);
    items = readOut(ds.out);
    expect(items.map((i) => i.negatives.map((n) => n.caption))).toEqual([['a green cube'], ['a blue hang glider']]);
  });
});

describe('progress bar', () => {
  it('redraws one line in place on a terminal', () => {
    const writes: string[] = [];
    const bar = new ProgressBar({ write: (s: string) => writes.push(s), isTTY: true, columns: 120 }, 3, 'pairs');
    bar.tick();
    bar.tick(2, '1 failed');
    bar.finish();
    expect(writes.every((w) => w === '\n' || w.startsWith('\r\x1b[2K'))).toBe(true);
    expect(writes.at(-2)).toMatch(/pairs \[#+\] 3\/3 100%  1 failed/);
    expect(writes.at(-1)).toBe('\n');
  });
});
