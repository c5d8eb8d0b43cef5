// Export to the trainer's JSONL: one item per line, each negative with its status as an extra field
// (the trainer trains on every negative that is not rejected; "accepted only" keeps just the accepted).

import { itemToRecord, type RecordOptions } from './records';
import type { DatasetItem } from './types';

export interface ExportOptions extends RecordOptions {
  /** Leave out items that end up with no negatives (default: true with acceptedOnly, else false). */
  omitItemsWithoutNegatives?: boolean;
}

export function exportTrainerJsonl(items: readonly DatasetItem[], options: ExportOptions = {}): string {
  const omit = options.omitItemsWithoutNegatives ?? !!options.acceptedOnly;
  const lines: string[] = [];
  for (const item of items) {
    const record = itemToRecord(item, options);
    if (omit && (record.negatives as unknown[]).length === 0) continue;
    lines.push(JSON.stringify(record));
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}

/** The export as a Blob, for a browser download. */
export function exportTrainerJsonlBlob(items: readonly DatasetItem[], options: ExportOptions = {}): Blob {
  return new Blob([exportTrainerJsonl(items, options)], { type: 'application/jsonl' });
}
