// The pairs job on its own (app/pairs-job.ts): in-memory dataset items, a save callback that keeps copies,
// the rule editor, scripted editors, and a loopback OpenAI server for the API key. No files.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PairsEvent, pairsEditor, type PairsJobOptions, runPairsJob } from '../../src/app/pairs-job';
import { createItem } from '../../src/data/dataset';
import type { DatasetItem } from '../../src/data/types';
import { LlmError } from '../../src/llm/client';
import type { CaptionEditor, EditRequest, EditResult } from '../../src/llm/types';
import { errorReply, type FakeServer, startFakeOpenAI } from '../helpers/llm/fake-openai';

const SECRET = 'sk-live-PAIRS-JOB-SECRET-777';

const dataset = (): DatasetItem[] => [
  createItem('a.png', 'a red car parked on a street at night'),
  createItem('b.png', 'two dogs playing in the snow'),
  createItem('c.png', 'a wooden chair to the left of a lamp'),
];

/** Runs the job, recording every save (as a copy) and every event. */
async function run(options: Partial<PairsJobOptions> & Pick<PairsJobOptions, 'editor'>) {
  const saves: DatasetItem[][] = [];
  const events: PairsEvent[] = [];
  const result = await runPairsJob({
    items: dataset(),
    principles: ['attribute', 'context'],
    perCaption: 2,
    concurrency: 1,
    save: async (items) => {
      saves.push(structuredClone(items));
    },
    onEvent: (e) => events.push(e),
    ...options,
  });
  return { result, saves, events, last: saves.at(-1)! };
}

/** An editor that answers from a script: `answer(request, call)` (call counts from 0). */
function scripted(answer: (request: EditRequest, call: number) => Promise<EditResult> | EditResult): CaptionEditor & { calls: EditRequest[] } {
  const calls: EditRequest[] = [];
  return {
    source: 'llm',
    calls,
    edit: async (request) => {
      calls.push(request);
      return answer(request, calls.length - 1);
    },
  };
}

const made = (request: EditRequest): EditResult => ({
  ok: true,
  caption: `${request.caption} (edit ${request.index})`,
  principle: request.principle === 'mix' ? 'content' : request.principle,
  source: 'llm',
  attempts: 1,
});

describe('runPairsJob', () => {
  it('makes negatives for every caption with the rule editor, then resumes without making any', async () => {
    const { editor, concurrency } = pairsEditor({ seed: 5 });
    expect(editor.source).toBe('rule');
    expect(concurrency).toBe(1);
    const first = await run({ editor, concurrency });
    expect(first.result).toMatchObject({ captions: 3, todo: 3, alreadyDone: 0, completed: 3, made: 6, cancelled: false, serverGone: null });
    expect(Object.values(first.result.byPrinciple).reduce((a, b) => a + b, 0)).toBe(6);
    expect(first.events[0]).toEqual({ type: 'start', captions: 3, todo: 3, alreadyDone: 0 });
    expect(first.events.at(-1)).toEqual({ type: 'progress', done: 3, total: 3, failed: 0 });
    expect(first.last).toEqual(first.result.items);
    for (const item of first.last) {
      expect(item.negatives).toHaveLength(2);
      for (const n of item.negatives) {
        expect(n).toMatchObject({ source: 'rule', status: 'pending' });
        expect(['attribute', 'context']).toContain(n.principle);
        expect(n.caption).not.toBe(item.caption);
      }
    }

    // The same job over the first run's output: nothing to do, the output saved as it was.
    const again = await run({ editor, concurrency, earlier: first.result.items });
    expect(again.result).toMatchObject({ todo: 0, alreadyDone: 3, completed: 0, made: 0, failures: [] });
    expect(again.events).toEqual([{ type: 'start', captions: 3, todo: 0, alreadyDone: 3 }]);
    expect(again.last).toEqual(first.last);
  });

  it('matches earlier items by image and caption, keeps the ones the dataset lost, and takes the dataset ids', async () => {
    const editor = scripted(made);
    const earlier = [
      { ...createItem('b.png', 'two dogs playing in the snow', {}, 'old-id'), negatives: [] },
      createItem('gone.png', 'a caption the dataset no longer has'),
      createItem('a.png', 'a different caption for a.png'),
    ];
    const { result } = await run({ editor, earlier, perCaption: 1 });
    expect(result.items.map((i) => [i.id, i.image, i.caption])).toEqual([
      ['a.png', 'a.png', 'a red car parked on a street at night'],
      ['b.png', 'b.png', 'two dogs playing in the snow'],
      ['c.png', 'c.png', 'a wooden chair to the left of a lamp'],
      ['gone.png', 'gone.png', 'a caption the dataset no longer has'],
      ['a.png', 'a.png', 'a different caption for a.png'],
    ]);
    expect(result.items.map((i) => i.negatives.length)).toEqual([1, 1, 1, 0, 0]);
  });

  it('stops when cancelled, with the captions already done saved', async () => {
    const controller = new AbortController();
    // Two captions answer at once; the third waits until the signal aborts, as a slow server would.
    const editor = scripted((request, call) => {
      if (call < 2) return made(request);
      setTimeout(() => controller.abort(new Error('test')), 10);
      return new Promise((_, reject) => request.signal!.addEventListener('abort', () => reject(new LlmError('aborted', 'aborted'))));
    });
    const { result, last } = await run({ editor, perCaption: 1, signal: controller.signal });
    expect(result).toMatchObject({ cancelled: true, completed: 2, made: 2, todo: 3, serverGone: null });
    expect(last.map((i) => i.negatives.length)).toEqual([1, 1, 0]);
    expect(editor.calls).toHaveLength(3);

    // Resuming asks only for the one left.
    const rest = await run({ editor: scripted(made), perCaption: 1, earlier: result.items });
    expect(rest.result).toMatchObject({ todo: 1, alreadyDone: 2, completed: 1, made: 1, cancelled: false });
    expect(rest.last.map((i) => i.negatives.length)).toEqual([1, 1, 1]);
  });

  it('stops early when the editor reports its server gone, and saves what was made', async () => {
    const editor = scripted((request, call) =>
      call === 0 ? made(request) : { ok: false, reason: 'http://x/v1/chat/completions answered 401 Unauthorized', principle: request.principle, source: 'llm', attempts: 1, serverGone: true },
    );
    const { result, last } = await run({ editor, perCaption: 1 });
    expect(result.serverGone).toMatch(/401/);
    expect(result).toMatchObject({ cancelled: false, made: 1, completed: 2, todo: 3 });
    expect(result.failures).toEqual([expect.objectContaining({ reason: expect.stringMatching(/401/), source: 'llm' })]);
    expect(editor.calls).toHaveLength(2); // the third caption is not tried
    expect(last.map((i) => i.negatives.length)).toEqual([1, 0, 0]);
    expect(last[1].failures).toHaveLength(1);
  });

  it('throws an editor error after saving what was made, without the API key', async () => {
    const editor = scripted((request, call) => {
      if (call === 0) return made(request);
      throw new Error(`editor bug while sending Bearer ${SECRET}`);
    });
    const saves: DatasetItem[][] = [];
    const job = runPairsJob({
      items: dataset(),
      editor,
      principles: ['content'],
      perCaption: 1,
      concurrency: 1,
      apiKey: SECRET,
      save: async (items) => {
        saves.push(structuredClone(items));
      },
    });
    await expect(job).rejects.toThrow(/editor bug while sending Bearer \[redacted\]/);
    expect(saves.at(-1)!.map((i) => i.negatives.length)).toEqual([1, 0, 0]);
  });

  it('keeps going when a periodic save fails, and throws when the final one does', async () => {
    let saves = 0;
    const editor = scripted(made);
    const result = await runPairsJob({
      items: dataset(),
      editor,
      principles: ['content'],
      perCaption: 1,
      concurrency: 1,
      saveEveryMs: -1, // save after every caption
      save: async () => {
        saves++;
        if (saves === 1) throw new Error('disk full');
      },
    });
    expect(result.made).toBe(3);
    expect(saves).toBeGreaterThanOrEqual(2);
    await expect(
      runPairsJob({ items: dataset(), editor, principles: ['content'], perCaption: 1, concurrency: 1, save: () => Promise.reject(new Error('disk full')) }),
    ).rejects.toThrow(/disk full/);
  });
});

describe('the API key', () => {
  let server: FakeServer;
  beforeAll(async () => {
    // A server that echoes the Authorization header into its errors, as some do.
    server = await startFakeOpenAI((req) => errorReply(400, `bad request from ${req.headers.authorization}`));
  });
  afterAll(async () => {
    await server.close();
  });

  it('never appears in events, results or saved items, whatever the endpoint echoes', async () => {
    const settings = { llm: { baseUrl: server.baseUrl, model: 'm', apiKey: SECRET, maxRetries: 0, concurrency: 2, maxAttempts: 1 } };
    const built = pairsEditor(structuredClone(settings)); // plain data: it can cross to a worker
    expect(built.editor.source).toBe('llm');
    expect(built.concurrency).toBe(2);
    expect(built.url).toBe(`${server.baseUrl}/chat/completions`);

    const echoing = await run({ editor: built.editor, concurrency: built.concurrency, perCaption: 1, apiKey: SECRET });
    expect(server.requests.every((r) => r.headers.authorization === `Bearer ${SECRET}`)).toBe(true);
    expect(echoing.result.failures).toHaveLength(3);
    expect(echoing.result.failures[0].reason).toMatch(/400/);

    // An editor that leaks the key into its reasons (the client scrubs its own errors; the job must not
    // rely on every editor doing so).
    const leaky = scripted((request) => ({ ok: false, reason: `refused key ${SECRET}`, principle: request.principle, source: 'llm', attempts: 1 }));
    const leaking = await run({ editor: leaky, perCaption: 1, apiKey: SECRET });
    expect(leaking.result.failures[0].reason).toBe('refused key [redacted]');
    const gone = scripted((request) => ({ ok: false, reason: `401 for ${SECRET}`, principle: request.principle, source: 'llm', attempts: 1, serverGone: true }));
    const stopped = await run({ editor: gone, perCaption: 1, apiKey: SECRET });
    expect(stopped.result.serverGone).toBe('401 for [redacted]');

    for (const r of [echoing, leaking, stopped]) {
      expect(JSON.stringify([r.events, r.result, r.saves])).not.toContain(SECRET);
    }
  });

  it('is not needed by the rule editor, which is used when asked for or when there is no endpoint', () => {
    expect(pairsEditor({ llm: { baseUrl: server.baseUrl, model: 'm', apiKey: SECRET }, rules: true }).editor.source).toBe('rule');
    expect(pairsEditor({ llm: { baseUrl: '', model: '' } }).editor.source).toBe('rule');
    expect(pairsEditor({ llm: null }).concurrency).toBe(1);
  });
});
