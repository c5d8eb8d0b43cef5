// The Pairs screen's state: which caption editor writes the negatives (the offline rule editor, or an
// OpenAI-compatible LLM endpoint), the connection test, the generation job, and the review filters. The
// dataset and its items are the data store's (shared with the Data screen); every review change goes
// through its setItems, which saves at once.

import { create } from 'zustand';
import { editNegativeCaption, setNegativeStatus } from '../../data/dataset';
import type { DatasetItem } from '../../data/types';
import type { NegativeStatus, PrincipleChoice, RecordedPrinciple } from '../../data/vocabulary';
import { type ConnectionResult, testConnection } from '../../llm/connection';
import { defaultTemplates, type PromptTemplates } from '../../llm/principles';
import { DEFAULT_LLM_SETTINGS, type LlmSettings } from '../../llm/settings';
import type { EngineError, NegativesRequest } from '../../worker/api';
import type { EngineClient } from '../../worker/client';
import { useDataStore } from '../data/store';
import { engine } from '../engine';

export interface LlmForm {
  baseUrl: string;
  model: string;
  /** In memory only, unless rememberKey. */
  apiKey: string;
  rememberKey: boolean;
  concurrency: number;
}

export type JobState =
  | { status: 'idle' }
  | { status: 'running'; job: string; done: number; total: number; failed: number; cancelling: boolean }
  | { status: 'done'; made: number; todo: number; alreadyDone: number; failures: string[]; cancelled: boolean; serverGone: string | null }
  | { status: 'error'; error: EngineError };

export type ConnectionState = { status: 'idle' } | { status: 'testing' } | ({ status: 'tested' } & { result: ConnectionResult });

export interface ReviewFilter {
  principle: RecordedPrinciple | 'all';
  status: NegativeStatus | 'all';
}

/** One negative of one item: what the review list shows a row for. */
export interface PairRef {
  itemId: string;
  index: number;
}

export interface PairsStore {
  editor: 'rules' | 'llm';
  llm: LlmForm;
  principles: PrincipleChoice[];
  perCaption: number;
  templates: PromptTemplates;
  connection: ConnectionState;
  job: JobState;
  filter: ReviewFilter;
  setEditor(editor: 'rules' | 'llm'): void;
  setLlm(patch: Partial<LlmForm>): void;
  forgetKey(): void;
  setPrinciples(principles: PrincipleChoice[]): void;
  setPerCaption(n: number): void;
  setTemplate(key: keyof PromptTemplates, text: string): void;
  resetTemplate(key: keyof PromptTemplates): void;
  setFilter(patch: Partial<ReviewFilter>): void;
  testConnection(): Promise<void>;
  generate(): Promise<void>;
  cancel(): Promise<void>;
  /** Accepts or rejects one negative (saved at once). */
  setStatus(pair: PairRef, status: NegativeStatus): Promise<void>;
  /**
   * Rewrites one negative (saved at once). Its source stays what it was (who wrote it first); the edit is in
   * its history, by 'manual'. False, with the data store's error set, when the text is empty.
   */
  editNegative(pair: PairRef, caption: string): Promise<boolean>;
  /** Accepts or rejects every negative the filter shows; undoable. */
  setAllStatus(status: NegativeStatus): Promise<void>;
}

// Browser storage: the endpoint (never the key, unless the user ticks "Remember the key on this device").
const SETTINGS_KEY = 'tpo-lab.pairs.llm';
const API_KEY_KEY = 'tpo-lab.pairs.llm-key';

const DEFAULT_FORM: LlmForm = { baseUrl: 'http://localhost:11434/v1', model: '', apiKey: '', rememberKey: false, concurrency: DEFAULT_LLM_SETTINGS.concurrency ?? 4 };

function storage(): Storage | null {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage;
  } catch {
    // Storage can be refused (privacy settings): the settings then last as long as the tab.
    return null;
  }
}

function loadForm(): LlmForm {
  const s = storage();
  if (!s) return DEFAULT_FORM;
  let saved: Partial<LlmForm> = {};
  try {
    saved = JSON.parse(s.getItem(SETTINGS_KEY) ?? '{}') as Partial<LlmForm>;
  } catch {
    // An unreadable entry is replaced on the next change.
  }
  const apiKey = s.getItem(API_KEY_KEY);
  return {
    baseUrl: typeof saved.baseUrl === 'string' ? saved.baseUrl : DEFAULT_FORM.baseUrl,
    model: typeof saved.model === 'string' ? saved.model : DEFAULT_FORM.model,
    concurrency: typeof saved.concurrency === 'number' && saved.concurrency >= 1 ? saved.concurrency : DEFAULT_FORM.concurrency,
    apiKey: apiKey ?? '',
    rememberKey: apiKey !== null,
  };
}

function saveForm(form: LlmForm): void {
  const s = storage();
  if (!s) return;
  try {
    s.setItem(SETTINGS_KEY, JSON.stringify({ baseUrl: form.baseUrl, model: form.model, concurrency: form.concurrency }));
    if (form.rememberKey && form.apiKey) s.setItem(API_KEY_KEY, form.apiKey);
    else s.removeItem(API_KEY_KEY);
  } catch {
    // Storage full or refused: the settings still hold for this tab.
  }
}

/** The prompt templates the user edited (kept on this device), over the defaults. */
const TEMPLATES_KEY = 'tpo-lab.pairs.llm-templates';

function loadTemplates(): PromptTemplates {
  const templates = defaultTemplates();
  let saved: Record<string, unknown> = {};
  try {
    saved = JSON.parse(storage()?.getItem(TEMPLATES_KEY) ?? '{}') as Record<string, unknown>;
  } catch {
    // An unreadable entry is replaced on the next edit.
  }
  for (const key of Object.keys(templates) as (keyof PromptTemplates)[]) if (typeof saved[key] === 'string') templates[key] = saved[key];
  return templates;
}

/** Keeps only the templates that differ from the defaults, so a later version's new defaults still arrive. */
function saveTemplates(templates: PromptTemplates): void {
  const defaults = defaultTemplates();
  const edited = Object.fromEntries(Object.entries(templates).filter(([k, v]) => defaults[k as keyof PromptTemplates] !== v));
  try {
    const s = storage();
    if (Object.keys(edited).length) s?.setItem(TEMPLATES_KEY, JSON.stringify(edited));
    else s?.removeItem(TEMPLATES_KEY);
  } catch {
    // Storage full or refused: the templates still hold for this tab.
  }
}

/** The request's LLM settings from the form. */
export function llmSettings(form: LlmForm, templates: PromptTemplates): LlmSettings {
  return {
    ...DEFAULT_LLM_SETTINGS,
    baseUrl: form.baseUrl.trim(),
    model: form.model.trim(),
    apiKey: form.apiKey.trim() || undefined,
    concurrency: Math.max(1, Math.floor(form.concurrency) || 1),
    templates,
  };
}

/** The negatives the filter shows, in dataset order. */
export function filteredPairs(items: readonly DatasetItem[], filter: ReviewFilter): PairRef[] {
  const out: PairRef[] = [];
  for (const item of items) {
    item.negatives.forEach((n, index) => {
      if (filter.principle !== 'all' && n.principle !== filter.principle) return;
      if (filter.status !== 'all' && n.status !== filter.status) return;
      out.push({ itemId: item.id, index });
    });
  }
  return out;
}

export function createPairsStore(client: () => EngineClient, origin: () => string) {
  const data = useDataStore;
  return create<PairsStore>()((set, get) => ({
    editor: 'rules',
    llm: loadForm(),
    principles: ['mix'],
    perCaption: 1,
    templates: loadTemplates(),
    connection: { status: 'idle' },
    job: { status: 'idle' },
    filter: { principle: 'all', status: 'all' },

    setEditor(editor) {
      set({ editor });
    },

    setLlm(patch) {
      const llm = { ...get().llm, ...patch };
      saveForm(llm);
      // A changed endpoint makes the last test's verdict stale.
      const stale = 'baseUrl' in patch || 'model' in patch || 'apiKey' in patch;
      set({ llm, ...(stale ? { connection: { status: 'idle' } } : {}) });
    },

    forgetKey() {
      get().setLlm({ apiKey: '', rememberKey: false });
    },

    setPrinciples(principles) {
      set({ principles });
    },

    setPerCaption(n) {
      set({ perCaption: Math.max(1, Math.min(16, Math.floor(n) || 1)) });
    },

    setTemplate(key, text) {
      const templates = { ...get().templates, [key]: text };
      saveTemplates(templates);
      set({ templates });
    },

    resetTemplate(key) {
      get().setTemplate(key, defaultTemplates()[key]);
    },

    setFilter(patch) {
      set({ filter: { ...get().filter, ...patch } });
    },

    async testConnection() {
      set({ connection: { status: 'testing' } });
      // From the page, not the worker: both have the page's origin, and here the failure can be told apart
      // and explained before a whole job runs into it.
      const result = await testConnection(llmSettings(get().llm, get().templates), origin());
      set({ connection: { status: 'tested', result } });
    },

    async generate() {
      const { current } = data.getState();
      if (!current || get().job.status === 'running') return;
      const { editor, principles, perCaption } = get();
      const request: NegativesRequest =
        editor === 'llm' ? { llm: llmSettings(get().llm, get().templates), principles, perCaption } : { rules: true, llm: null, principles, perCaption };
      const job = `pairs-${Date.now()}`;
      set({ job: { status: 'running', job, done: 0, total: 0, failed: 0, cancelling: false } });
      const r = await client().lab.makeNegatives(job, current, request, (e) => {
        const now = get().job;
        if (now.status !== 'running') return;
        if (e.type === 'start') set({ job: { ...now, total: e.todo } });
        else set({ job: { ...now, done: e.done, total: e.total, failed: e.failed } });
      });
      // What the job saved (all of it, cancelled or not) is read back, so the review shows it.
      await data.getState().select(current);
      if (!r.ok) return set({ job: { status: 'error', error: r.error } });
      const v = r.value;
      set({
        job: {
          status: 'done',
          made: v.made,
          todo: v.todo,
          alreadyDone: v.alreadyDone,
          failures: v.failures.map((f) => `${f.principle}: ${f.reason}`),
          cancelled: v.cancelled,
          serverGone: v.serverGone,
        },
      });
    },

    async cancel() {
      const job = get().job;
      if (job.status !== 'running') return;
      set({ job: { ...job, cancelling: true } });
      const r = await client().lab.cancelJob(job.job);
      if (!r.ok) set({ job: { status: 'error', error: r.error } });
    },

    async setStatus(pair, status) {
      const { items } = data.getState();
      const next = items.map((item) => (item.id === pair.itemId && item.negatives[pair.index] ? setNegativeStatus(item, pair.index, status) : item));
      await data.getState().setItems(next);
    },

    async editNegative(pair, caption) {
      if (caption.trim() === '') {
        data.setState({ error: { kind: 'input', message: 'A negative cannot be empty: reject it instead.' } });
        return false;
      }
      const { items } = data.getState();
      const next = items.map((item) => (item.id === pair.itemId && item.negatives[pair.index] ? editNegativeCaption(item, pair.index, caption) : item));
      return data.getState().setItems(next);
    },

    async setAllStatus(status) {
      const { items } = data.getState();
      const pairs = filteredPairs(items, get().filter).filter((p) => items.find((i) => i.id === p.itemId)?.negatives[p.index].status !== status);
      if (pairs.length === 0) return;
      const byItem = new Map<string, number[]>();
      for (const p of pairs) byItem.set(p.itemId, [...(byItem.get(p.itemId) ?? []), p.index]);
      const at = new Date().toISOString();
      const next = items.map((item) => (byItem.get(item.id) ?? []).reduce((it, index) => setNegativeStatus(it, index, status, at), item));
      const verb = status === 'accepted' ? 'Accepted' : status === 'rejected' ? 'Rejected' : 'Reset';
      await data.getState().setItems(next, `${verb} ${pairs.length} negative${pairs.length === 1 ? '' : 's'}`);
    },
  }));
}

export const usePairsStore = createPairsStore(engine, () => location.origin);
