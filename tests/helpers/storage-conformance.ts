// One conformance suite for every Storage (memory, a folder on disk, the browser's OPFS): the same checks
// run under Vitest in Node (tests/unit/storage.test.ts) and on a page / in a worker in Chromium
// (tests/e2e/storage-browser.test.ts). Platform-free and free of Vitest, so the browser can import it:
// each check throws an Error saying what differed.

import { storageFeatureStore } from '../../src/app/feature-store';
import { readText, type Storage } from '../../src/app/storage';

const enc = new TextEncoder();

function equal(got: unknown, want: unknown, what: string): void {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

async function rejects(f: () => Promise<unknown>, pattern: RegExp, what: string): Promise<void> {
  try {
    await f();
  } catch (e) {
    if (!pattern.test((e as Error).message)) throw new Error(`${what}: threw "${(e as Error).message}", want ${pattern}`);
    return;
  }
  throw new Error(`${what}: did not throw`);
}

const bytes = (...v: number[]) => new Uint8Array(v);
const arr = (b: Uint8Array | null | undefined) => (b ? [...b] : null);

export interface StorageCheck {
  name: string;
  /** `s` is an empty storage of its own. */
  run(s: Storage): Promise<void>;
}

export const storageChecks: StorageCheck[] = [
  {
    name: 'write and read back bytes and text; a missing file is null',
    async run(s) {
      equal(await s.read('nothing.bin'), null, 'missing file');
      await s.write('a.bin', bytes(1, 2, 3));
      equal(arr(await s.read('a.bin')), [1, 2, 3], 'bytes');
      await s.write('a.bin', bytes(9)); // a shorter file replaces the longer one entirely
      equal(arr(await s.read('a.bin')), [9], 'replaced bytes');
      await s.write('deep/er/note.txt', 'héllo');
      equal(await readText(s, 'deep/er/note.txt'), 'héllo', 'text in created folders');
      await s.write('empty', new Uint8Array(0));
      equal(arr(await s.read('empty')), [], 'empty file');
    },
  },
  {
    name: 'append creates the file, then adds to it',
    async run(s) {
      await s.append('logs/metrics.jsonl', '{"step":1}\n');
      await s.append('logs/metrics.jsonl', '{"step":2}\n');
      equal(await readText(s, 'logs/metrics.jsonl'), '{"step":1}\n{"step":2}\n', 'appended');
    },
  },
  {
    name: 'size: a file, a folder with what it holds (a replaced folder counted once), missing is 0',
    async run(s) {
      equal(await s.size('nothing'), 0, 'missing');
      await s.write('run/metrics.jsonl', '12345');
      await s.writeFolder('run/checkpoint', { 'a.bin': bytes(1, 2, 3), 'sub/b.bin': bytes(4) });
      await s.writeFolder('run/checkpoint', { 'a.bin': bytes(1, 2), 'sub/b.bin': bytes(4, 5, 6, 7) });
      equal(await s.size('run/metrics.jsonl'), 5, 'file');
      equal(await s.size('run/checkpoint'), 6, 'replaced folder');
      equal(await s.size('run'), 11, 'folder');
      equal(await s.folder('run').size(), 11, 'a folder storage, whole');
      equal(await s.size(), 11, 'everything');
    },
  },
  {
    name: 'list, exists and remove',
    async run(s) {
      equal(await s.list(), [], 'empty storage');
      equal(await s.list('missing'), [], 'missing folder');
      await s.write('b.txt', 'b');
      await s.write('a/one.txt', '1');
      await s.write('a/two/three.txt', '3');
      equal(await s.list(), ['a', 'b.txt'], 'top level');
      equal(await s.list('a'), ['one.txt', 'two'], 'inside a');
      equal(await s.exists('a'), true, 'folder exists');
      equal(await s.exists('a/two/three.txt'), true, 'file exists');
      equal(await s.exists('a/nope'), false, 'missing');
      await s.remove('a/two');
      equal(await s.list('a'), ['one.txt'], 'after removing a folder');
      await s.remove('b.txt');
      await s.remove('never-was');
      equal(await s.list(), ['a'], 'after removing a file');
    },
  },
  {
    name: 'folder() is a storage of its own inside this one',
    async run(s) {
      const runs = s.folder('runs');
      const run = runs.folder('run-1');
      equal(await run.list(), [], 'a new folder is empty');
      await run.write('state.json', '{}');
      await run.append('log.txt', 'x');
      equal(await readText(s, 'runs/run-1/state.json'), '{}', 'seen from the parent');
      equal(await runs.list(), ['run-1'], 'listed by the middle folder');
      equal(await run.list(), ['log.txt', 'state.json'], 'listed by itself');
      await run.writeFolder('checkpoint', { 'a.bin': bytes(1) });
      equal(arr((await s.readFolder('runs/run-1/checkpoint', ['a.bin']))?.['a.bin']), [1], 'writeFolder through folder()');
      if (!s.name || !run.name.includes('run-1')) throw new Error(`folder name ${JSON.stringify(run.name)} does not say where it is`);
    },
  },
  {
    name: 'writeFolder replaces a folder as a whole; readFolder and list see it under its plain name',
    async run(s) {
      await s.writeFolder('checkpoint', { 'state.json': enc.encode('{"step":1}'), 'lora.safetensors': bytes(1, 1), 'old-only.bin': bytes(7) });
      equal(await s.list(), ['checkpoint'], 'list after the first writeFolder');
      await s.writeFolder('checkpoint', { 'state.json': enc.encode('{"step":2}'), 'lora.safetensors': bytes(2, 2) });
      equal(await s.list(), ['checkpoint'], 'list after the second writeFolder');
      equal(await s.list('checkpoint'), ['lora.safetensors', 'state.json'], 'only the new files');
      const got = await s.readFolder('checkpoint', ['state.json', 'lora.safetensors']);
      equal(got && new TextDecoder().decode(got['state.json']), '{"step":2}', 'new state');
      equal(arr(got?.['lora.safetensors']), [2, 2], 'new weights');
      equal(await s.readFolder('checkpoint', ['state.json', 'old-only.bin']), null, 'a file of the old version is gone');
      equal(await s.readFolder('nothing', ['state.json']), null, 'a missing folder');
      equal(await readText(s, 'checkpoint/state.json'), '{"step":2}', 'read() of a file inside');
      equal(await s.exists('checkpoint'), true, 'exists');
      await s.writeFolder('runs/r/checkpoint', { 'sub/x.bin': bytes(5) });
      equal(arr(await s.read('runs/r/checkpoint/sub/x.bin')), [5], 'nested names and folders');
      await s.remove('checkpoint');
      equal(await s.exists('checkpoint'), false, 'removed');
      equal(await s.list(), ['runs'], 'list after remove');
      await s.writeFolder('checkpoint', { 'state.json': enc.encode('{"step":3}') });
      equal(await readText(s, 'checkpoint/state.json'), '{"step":3}', 'written again after remove');
    },
  },
  {
    name: 'paths that leave the folder are refused',
    async run(s) {
      await rejects(() => s.read('../outside'), /leaves its folder/, 'read ..');
      await rejects(() => s.write('a/../../outside', 'x'), /leaves its folder/, 'write ..');
      await rejects(() => s.writeFolder('..', {}), /leaves its folder/, 'writeFolder ..');
      await rejects(() => s.writeFolder('ok', { '../x': bytes(1) }), /leaves its folder/, 'writeFolder file ..');
      await rejects(() => s.list('..'), /leaves its folder/, 'list ..');
      await rejects(() => s.remove('../x'), /leaves its folder/, 'remove ..');
      await rejects(() => s.append('a\\..\\b', 'x'), /leaves its folder/, 'backslashes');
      if (await s.exists('ok')) throw new Error('a refused writeFolder left its folder behind');
    },
  },
  {
    name: 'the feature store round-trips float32 and treats a cut-short file as a miss',
    async run(s) {
      const store = storageFeatureStore(s.folder('features'));
      equal(await store.get('latent-00ff'), null, 'missing key');
      const values = new Float32Array([1.5, -2.25, 3e-8, 65504]);
      await store.put('latent-00ff', values);
      equal([...((await store.get('latent-00ff')) ?? [])], [...values], 'round trip');
      // little-endian on disk
      equal(arr(await s.read('features/latent-00ff.f32'))?.slice(0, 4), [0, 0, 0xc0, 0x3f], 'little-endian 1.5');
      await s.write('features/text-abc.f32', bytes(1, 2, 3, 4, 5)); // cut short mid-value
      equal(await store.get('text-abc'), null, 'not a multiple of 4');
      await s.write('features/text-abd.f32', new Uint8Array(0));
      equal(await store.get('text-abd'), null, 'empty');
      await rejects(() => store.get('../x'), /malformed/, 'a key that is not a cache key');
      await rejects(() => store.put('Latent-00', values), /malformed/, 'upper case');
    },
  },
];

/** Runs every check on a fresh storage from `make`; returns the failures (name: message), [] when all pass. */
export async function runStorageChecks(make: (name: string) => Promise<Storage>): Promise<string[]> {
  const failures: string[] = [];
  for (const c of storageChecks) {
    try {
      await c.run(await make(c.name));
    } catch (e) {
      failures.push(`${c.name}: ${(e as Error).stack ?? e}`);
    }
  }
  return failures;
}
