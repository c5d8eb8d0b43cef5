// Dataset operations (review: accept, reject, edit, history) and export to the trainer's JSONL.

import { describe, expect, it } from 'vitest';
import {
  addManualNegative,
  addNegatives,
  assignIds,
  createItem,
  datasetStats,
  editNegativeCaption,
  liveNegatives,
  removeNegative,
  setNegativePrinciple,
  setNegativeStatus,
} from '../../src/data/dataset';
import { exportTrainerJsonl } from '../../src/data/export';
import { parseTrainerJsonl } from '../../src/data/import';
import type { DatasetItem } from '../../src/data/types';

const T0 = '2025-01-01T00:00:00.000Z';
const T1 = '2025-01-02T00:00:00.000Z';

function sample(): DatasetItem {
  let item = createItem('imgs/a.png', 'a red cube on a table', { split: 'train' });
  item = addNegatives(item, [
    { caption: 'a blue cube on a table', principle: 'attribute', source: 'llm', at: T0 },
    { caption: 'a red cube under a table', principle: 'spatial', source: 'rule', at: T0 },
    { caption: 'two red cubes on a table', principle: 'content', source: 'llm', at: T0 },
  ]);
  return item;
}

describe('dataset operations', () => {
  it('are pure and record history', () => {
    const before = sample();
    const accepted = setNegativeStatus(before, 0, 'accepted', T1);
    expect(before.negatives[0].status).toBe('pending');
    expect(accepted.negatives[0].status).toBe('accepted');
    expect(accepted.negatives[0].history).toEqual([
      { at: T0, action: 'created', by: 'llm', to: 'a blue cube on a table' },
      { at: T1, action: 'status', from: 'pending', to: 'accepted', by: 'manual' },
    ]);
    expect(accepted.negatives[1]).toBe(before.negatives[1]);

    const edited = editNegativeCaption(accepted, 1, '  a red cube   beside a table ', T1);
    expect(edited.negatives[1].caption).toBe('a red cube beside a table');
    expect(edited.negatives[1].source).toBe('rule');
    expect(edited.negatives[1].history.at(-1)).toEqual({ at: T1, action: 'edited', from: 'a red cube under a table', to: 'a red cube beside a table', by: 'manual' });
    expect(() => editNegativeCaption(edited, 1, '   ')).toThrow(/empty/);
    expect(() => setNegativeStatus(edited, 9, 'accepted')).toThrow(RangeError);

    const relabelled = setNegativePrinciple(edited, 2, 'other', T1);
    expect(relabelled.negatives[2].principle).toBe('other');
    const manual = addManualNegative(relabelled, 'a red sphere on a table', 'content', T1);
    expect(manual.negatives[3]).toMatchObject({ source: 'manual', status: 'pending', principle: 'content' });
    expect(removeNegative(manual, 0).negatives).toHaveLength(3);
  });

  it('counts live negatives and statistics', () => {
    let item = sample();
    item = setNegativeStatus(item, 1, 'rejected');
    expect(liveNegatives(item).map((n) => n.principle)).toEqual(['attribute', 'content']);
    const stats = datasetStats([item, createItem('b.png', 'b')]);
    expect(stats).toMatchObject({ items: 2, negatives: 3, itemsWithoutNegatives: 1, byStatus: { pending: 2, rejected: 1, accepted: 0 } });
    expect(stats.byPrinciple).toMatchObject({ attribute: 1, spatial: 1, content: 1 });
    expect(stats.bySource).toEqual({ llm: 2, rule: 1, manual: 0 });
  });

  it('gives repeated images distinct ids', () => {
    const ids = assignIds([createItem('a.png', 'x'), createItem('a.png', 'y'), createItem('b.png', 'z')]).map((i) => i.id);
    expect(ids).toEqual(['a.png', 'a.png#2', 'b.png']);
  });
});

describe('export to the trainer JSONL', () => {
  it('writes every negative with its status, history and unknown fields', () => {
    let item = sample();
    item = setNegativeStatus(item, 0, 'accepted', T1);
    item = setNegativeStatus(item, 1, 'rejected', T1);
    item = { ...item, failures: [{ principle: 'context', source: 'llm', reason: 'identical to the original caption' }] };
    const text = exportTrainerJsonl([item]);
    expect(text.endsWith('\n')).toBe(true);
    const record = JSON.parse(text.trim());
    expect(Object.keys(record)).toEqual(['image', 'caption', 'split', 'negatives', 'failures']);
    expect(record.negatives.map((n: Record<string, unknown>) => [n.caption, n.principle, n.source, n.status])).toEqual([
      ['a blue cube on a table', 'attribute', 'llm', 'accepted'],
      ['a red cube under a table', 'spatial', 'rule', 'rejected'],
      ['two red cubes on a table', 'content', 'llm', 'pending'],
    ]);
    expect(record.negatives[0].history).toHaveLength(2);
    const lean = JSON.parse(exportTrainerJsonl([item], { includeHistory: false, includeFailures: false }).trim());
    expect(lean.negatives[0]).not.toHaveProperty('history');
    expect(lean).not.toHaveProperty('failures');
  });

  it('offers "accepted only", dropping items left without negatives', () => {
    const a = setNegativeStatus(sample(), 2, 'accepted');
    const b = sample();
    const lines = exportTrainerJsonl([a, b], { acceptedOnly: true }).trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]).negatives.map((n: { caption: string }) => n.caption)).toEqual(['two red cubes on a table']);
    expect(exportTrainerJsonl([b], { acceptedOnly: true })).toBe('');
  });

  it('round-trips through the importer', () => {
    let item = sample();
    item = setNegativeStatus(item, 1, 'rejected', T1);
    item = { ...item, negatives: item.negatives.map((n, i) => (i === 0 ? { ...n, extra: { score: 0.5 } } : n)) };
    const back = parseTrainerJsonl(exportTrainerJsonl([item])).items[0];
    expect(back.caption).toBe(item.caption);
    expect(back.extra).toEqual(item.extra);
    expect(back.negatives).toEqual(item.negatives);
  });

  it('rewrites image paths when asked (for a file written elsewhere)', () => {
    const record = JSON.parse(exportTrainerJsonl([sample()], { imagePath: (i) => `../data/${i.image}` }).trim());
    expect(record.image).toBe('../data/imgs/a.png');
  });
});
