// Operations on dataset items for the review screens and the CLI. Pure: each returns a new item and
// leaves its input as it was, so UI stores can compare by reference.

import type { DatasetItem, FailedEdit, HistoryEntry, Negative } from './types';
import type { NegativeSource, NegativeStatus, RecordedPrinciple } from './vocabulary';

const now = () => new Date().toISOString();

export function createItem(image: string, caption: string, extra: Record<string, unknown> = {}, id?: string): DatasetItem {
  return { id: id ?? image, image, caption, negatives: [], failures: [], extra };
}

export interface NewNegative {
  caption: string;
  principle: RecordedPrinciple;
  source: NegativeSource;
  status?: NegativeStatus;
  at?: string;
}

export function createNegative(n: NewNegative): Negative {
  return {
    caption: n.caption,
    principle: n.principle,
    source: n.source,
    status: n.status ?? 'pending',
    history: [{ at: n.at ?? now(), action: 'created', by: n.source, to: n.caption }],
    extra: {},
  };
}

export function addNegatives(item: DatasetItem, negatives: readonly NewNegative[]): DatasetItem {
  return { ...item, negatives: [...item.negatives, ...negatives.map(createNegative)] };
}

function updateNegative(item: DatasetItem, index: number, change: (n: Negative) => Negative): DatasetItem {
  if (index < 0 || index >= item.negatives.length) throw new RangeError(`item ${item.id} has no negative ${index}`);
  return { ...item, negatives: item.negatives.map((n, i) => (i === index ? change(n) : n)) };
}

function withHistory(n: Negative, entry: HistoryEntry): HistoryEntry[] {
  return [...n.history, entry];
}

/** Accept, reject or reset a negative; the change is recorded in its history. */
export function setNegativeStatus(item: DatasetItem, index: number, status: NegativeStatus, at = now()): DatasetItem {
  return updateNegative(item, index, (n) =>
    n.status === status ? n : { ...n, status, history: withHistory(n, { at, action: 'status', from: n.status, to: status, by: 'manual' }) },
  );
}

/** A person rewrites a negative; its text history is kept (the LLM output is stored as plain text). */
export function editNegativeCaption(item: DatasetItem, index: number, caption: string, at = now()): DatasetItem {
  const text = caption.replace(/\s+/g, ' ').trim();
  if (text === '') throw new Error('a negative caption cannot be empty');
  return updateNegative(item, index, (n) =>
    n.caption === text ? n : { ...n, caption: text, history: withHistory(n, { at, action: 'edited', from: n.caption, to: text, by: 'manual' }) },
  );
}

export function setNegativePrinciple(item: DatasetItem, index: number, principle: RecordedPrinciple, at = now()): DatasetItem {
  return updateNegative(item, index, (n) =>
    n.principle === principle ? n : { ...n, principle, history: withHistory(n, { at, action: 'principle', from: n.principle, to: principle, by: 'manual' }) },
  );
}

/** A negative written by hand. */
export function addManualNegative(item: DatasetItem, caption: string, principle: RecordedPrinciple = 'other', at = now()): DatasetItem {
  return addNegatives(item, [{ caption: caption.replace(/\s+/g, ' ').trim(), principle, source: 'manual', at }]);
}

export function removeNegative(item: DatasetItem, index: number): DatasetItem {
  if (index < 0 || index >= item.negatives.length) throw new RangeError(`item ${item.id} has no negative ${index}`);
  return { ...item, negatives: item.negatives.filter((_, i) => i !== index) };
}

export function setFailures(item: DatasetItem, failures: FailedEdit[]): DatasetItem {
  return { ...item, failures };
}

/** Negatives that count for training and for "already done": every one not rejected. */
export function liveNegatives(item: DatasetItem): Negative[] {
  return item.negatives.filter((n) => n.status !== 'rejected');
}

export interface DatasetStats {
  items: number;
  negatives: number;
  byStatus: Record<NegativeStatus, number>;
  byPrinciple: Record<RecordedPrinciple, number>;
  bySource: Record<NegativeSource, number>;
  failures: number;
  itemsWithoutNegatives: number;
}

export function datasetStats(items: readonly DatasetItem[]): DatasetStats {
  const stats: DatasetStats = {
    items: items.length,
    negatives: 0,
    byStatus: { pending: 0, accepted: 0, rejected: 0 },
    byPrinciple: { content: 0, attribute: 0, spatial: 0, context: 0, other: 0 },
    bySource: { llm: 0, rule: 0, manual: 0 },
    failures: 0,
    itemsWithoutNegatives: 0,
  };
  for (const item of items) {
    stats.failures += item.failures.length;
    if (item.negatives.length === 0) stats.itemsWithoutNegatives++;
    for (const n of item.negatives) {
      stats.negatives++;
      stats.byStatus[n.status]++;
      stats.byPrinciple[n.principle]++;
      stats.bySource[n.source]++;
    }
  }
  return stats;
}

/** Gives every item an id unique in the list (the image path, then "#2", "#3"... for repeats). */
export function assignIds(items: DatasetItem[]): DatasetItem[] {
  const seen = new Map<string, number>();
  return items.map((item) => {
    const base = item.image;
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    const id = n === 1 ? base : `${base}#${n}`;
    return item.id === id ? item : { ...item, id };
  });
}
