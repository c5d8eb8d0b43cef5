// The pairs job: writes mismatched captions (negatives) for every caption of a dataset with a caption
// editor, resuming from what an earlier run wrote. `tpo-lab pairs` and the engine worker both run it; the
// caller reads the dataset and the earlier output, and decides where saves go (a JSONL file in Node, OPFS
// in the browser). The API key never leaves this file in a message, an event, a result or a saved item.

import { addNegatives, liveNegatives } from '../data/dataset';
import type { DatasetItem, FailedEdit } from '../data/types';
import type { PrincipleChoice } from '../data/vocabulary';
import { isAbortError, LlmError } from '../llm/client';
import { LlmCaptionEditor } from '../llm/editor';
import { makeNegatives, type NegativesResult, runPool } from '../llm/generate';
import { RuleCaptionEditor } from '../llm/rules';
import { clientFromSettings, hasEndpoint, type LlmSettings } from '../llm/settings';
import type { CaptionEditor } from '../llm/types';

// ---------------------------------------------------------------------------------------------------
// The editor, from plain settings (structured-cloneable, so the worker can receive them from the page).

export interface PairsEditorSettings {
  /** The endpoint; none (or one without URL and model) means the rule editor. */
  llm?: LlmSettings | null;
  /** Use the rule editor even when an endpoint is set. */
  rules?: boolean;
  /** Seed of the rule editor. */
  seed?: number | string;
  /** The only words the rule editor may write (see RuleEditorOptions.words); absent: any. */
  words?: readonly string[];
}

export interface PairsEditor {
  editor: CaptionEditor;
  /** The endpoint as the client sends to it (LLM editor only), for messages. */
  url?: string;
  /** Captions to work on at once: the endpoint's concurrency; 1 for the rule editor, which never waits. */
  concurrency: number;
}

/**
 * The rule editor or the LLM editor the settings ask for. `countTokens` (ClipTokenizer.countTokens, for the
 * 77-token check) is passed beside the settings because a function cannot cross to a worker. Throws
 * LlmError when the endpoint's URL is not usable.
 */
export function pairsEditor(settings: PairsEditorSettings, countTokens?: (text: string) => number): PairsEditor {
  const llm = settings.llm;
  if (settings.rules || !hasEndpoint(llm)) {
    return { editor: new RuleCaptionEditor({ seed: settings.seed, countTokens, words: settings.words ? new Set(settings.words) : undefined }), concurrency: 1 };
  }
  const client = clientFromSettings(llm);
  const editor = new LlmCaptionEditor({ client, templates: llm.templates, maxAttempts: llm.maxAttempts, countTokens, temperature: llm.temperature });
  return { editor, url: client.url, concurrency: llm.concurrency ?? 4 };
}

// ---------------------------------------------------------------------------------------------------
// The job.

export type PairsEvent =
  /** Once, before any caption is tried: how much there is to do. */
  | { type: 'start'; captions: number; todo: number; alreadyDone: number }
  /** After each caption whose negatives were all tried; `failed` counts failed negatives so far. */
  | { type: 'progress'; done: number; total: number; failed: number };

export interface PairsJobOptions {
  /** The dataset's items, in order. */
  items: readonly DatasetItem[];
  /**
   * What an earlier run wrote, to resume: an earlier item stands for the dataset item with the same image
   * and caption, so both lists must name images the same way (the CLI makes both absolute paths). Earlier
   * items the dataset no longer has are kept, after the others.
   */
  earlier?: readonly DatasetItem[];
  editor: CaptionEditor;
  principles: readonly PrincipleChoice[];
  /** Negatives each caption should have; captions that already have them are skipped. */
  perCaption: number;
  /** Captions worked on at once. */
  concurrency: number;
  signal?: AbortSignal;
  /**
   * Writes the whole output (the dataset's items, then the earlier leftovers). Called every `saveEveryMs`
   * while running and once at the end, one call at a time.
   */
  save: (items: DatasetItem[]) => Promise<void>;
  onEvent?: (event: PairsEvent) => void;
  /** The endpoint's API key: kept out of every message, failure and saved item. */
  apiKey?: string;
  /** Default 2000. */
  saveEveryMs?: number;
}

export interface PairsJobResult {
  /** Captions in the dataset. */
  captions: number;
  /** Captions this run had to work on. */
  todo: number;
  /** Captions that already had their negatives (skipped). */
  alreadyDone: number;
  /** Captions of `todo` that this run finished. */
  completed: number;
  /** Negatives made by this run. */
  made: number;
  /** Negatives made by this run, by the principle recorded, in order of first appearance. */
  byPrinciple: Record<string, number>;
  /** Negatives this run could not make, with their reasons. */
  failures: FailedEdit[];
  /** The signal aborted: what was made is saved, the rest can be resumed. */
  cancelled: boolean;
  /** Why the run stopped early because the endpoint is gone (every other caption would fail the same way), or null. */
  serverGone: string | null;
  /** The output as last saved. */
  items: DatasetItem[];
}

interface Slot {
  item: DatasetItem;
  /** Negatives this run has to make for it. */
  need: number;
  index: number;
}

/**
 * Runs the job to the end, a cancellation, or an endpoint that is gone; what was made is saved in every
 * case. Errors other than those (a bug in an editor, a failed save) are thrown after the final save.
 */
export async function runPairsJob(options: PairsJobOptions): Promise<PairsJobResult> {
  const { editor, principles, perCaption, signal } = options;
  const apiKey = options.apiKey;
  // Servers sometimes echo the Authorization header into errors; the client scrubs its own messages, this
  // catches whatever else passes through (an editor's reason, a thrown error).
  const redact = (text: string) => (apiKey && apiKey.length >= 4 ? text.split(apiKey).join('[redacted]') : text);

  // Match the earlier output to the dataset.
  const keyOf = (item: DatasetItem) => `${item.image}\u0000${item.caption}`;
  const previous = new Map<string, DatasetItem[]>();
  for (const item of options.earlier ?? []) {
    const k = keyOf(item);
    previous.set(k, [...(previous.get(k) ?? []), item]);
  }
  const slots: Slot[] = options.items.map((fresh, index) => {
    const earlier = previous.get(keyOf(fresh))?.shift();
    // The dataset's id and image naming win: the earlier item only brings its negatives and fields.
    const item = earlier ? { ...earlier, id: fresh.id, image: fresh.image } : fresh;
    return { item, need: Math.max(0, perCaption - liveNegatives(item).length), index };
  });
  const leftovers = [...previous.values()].flat();
  const todo = slots.filter((s) => s.need > 0);
  const alreadyDone = slots.length - todo.length;
  options.onEvent?.({ type: 'start', captions: slots.length, todo: todo.length, alreadyDone });

  // Saving: every couple of seconds while running, and at the end. Each save writes everything, so a
  // failed periodic save costs nothing once a later one succeeds; the final save's failure is thrown.
  const allItems = () => [...slots.map((s) => s.item), ...leftovers];
  let saving: Promise<void> = Promise.resolve();
  let lastSave = Date.now();
  const save = () => {
    lastSave = Date.now();
    const items = allItems();
    saving = saving.catch(() => {}).then(() => options.save(items));
    return saving;
  };
  const saveEveryMs = options.saveEveryMs ?? 2000;

  let made = 0;
  let ticked = 0;
  // Set when the server cannot be reached (or refuses the key or model): every other caption would fail
  // the same way, so the run stops instead of trying each.
  let serverGone: string | null = null;
  const failures: FailedEdit[] = [];
  const byPrinciple: Record<string, number> = {};
  let pool: { completed: number; cancelled: boolean };
  let done = 0;
  try {
    pool = await runPool(
      todo,
      options.concurrency,
      async (slot) => {
        const live = liveNegatives(slot.item);
        let result: NegativesResult;
        try {
          result = await makeNegatives(editor, {
            caption: slot.item.caption,
            count: slot.need,
            principles,
            offset: slot.index * perCaption + live.length,
            existing: slot.item.negatives.map((n) => n.caption),
            signal,
          });
        } catch (e) {
          if (isAbortError(e)) throw e;
          throw new Error(redact(e instanceof Error ? e.message : String(e)));
        }
        const at = new Date().toISOString();
        const failed = result.failed.map((f) => ({ principle: f.principle, source: f.source, reason: redact(f.reason), attempts: f.attempts, at }));
        slot.item = { ...addNegatives(slot.item, result.made.map((m) => ({ ...m, at }))), failures: failed };
        made += result.made.length;
        for (const m of result.made) byPrinciple[m.principle] = (byPrinciple[m.principle] ?? 0) + 1;
        failures.push(...failed);
        done++;
        if (result.cancelled) throw new LlmError('aborted', 'cancelled');
        if (result.serverGone) {
          serverGone ??= redact(result.serverGone);
          throw new ServerGone();
        }
        ticked++;
        options.onEvent?.({ type: 'progress', done: ticked, total: todo.length, failed: failures.length });
        if (Date.now() - lastSave > saveEveryMs) void save().catch(() => {});
      },
      signal,
    );
  } catch (e) {
    if (!(e instanceof ServerGone)) {
      await save();
      throw e;
    }
    pool = { completed: done, cancelled: false };
  }
  await save();

  return {
    captions: slots.length,
    todo: todo.length,
    alreadyDone,
    completed: pool.completed,
    made,
    byPrinciple,
    failures,
    cancelled: pool.cancelled,
    serverGone,
    items: allItems(),
  };
}

/** Thrown from a caption's task to stop the pool when the server is gone (see isServerGone). */
class ServerGone extends Error {
  constructor() {
    super('the LLM server is gone');
  }
}
