// The dataset model the app's review screens and the CLI share: images with their true captions and the
// mismatched captions (negatives) written for them.

import type { NegativeSource, NegativeStatus, PrincipleChoice, RecordedPrinciple } from './vocabulary';

/** One change to a negative, newest last. */
export interface HistoryEntry {
  /** ISO time. */
  at: string;
  action: 'created' | 'edited' | 'status' | 'principle';
  from?: string;
  to?: string;
  /** Who made it: 'llm', 'rule' or 'manual' (a person). */
  by?: NegativeSource;
}

export interface Negative {
  caption: string;
  principle: RecordedPrinciple;
  source: NegativeSource;
  status: NegativeStatus;
  history: HistoryEntry[];
  /** Fields this model does not know, kept as they were. */
  extra: Record<string, unknown>;
}

/** A negative the editor could not make, with the reason: recorded, never silently dropped. */
export interface FailedEdit {
  principle: PrincipleChoice;
  source: NegativeSource;
  reason: string;
  attempts?: number;
  at?: string;
}

export interface DatasetItem {
  /** Unique within a dataset (stable across imports of the same data). */
  id: string;
  /** Image path, relative to the dataset root (POSIX separators). */
  image: string;
  caption: string;
  negatives: Negative[];
  failures: FailedEdit[];
  /** Fields of the source record this model does not know, kept as they were. */
  extra: Record<string, unknown>;
}

export type DatasetLayout = 'kohya' | 'imagefolder' | 'csv' | 'jsonl' | 'trainer';

export type ImportProblemCode =
  | 'bad-line'
  | 'missing-image'
  | 'empty-caption'
  | 'missing-caption'
  | 'not-an-image'
  | 'unsupported-record'
  | 'no-data';

export interface ImportProblem {
  code: ImportProblemCode;
  message: string;
  /** The data file (csv/jsonl/metadata.jsonl) or caption file concerned, relative to the root. */
  file?: string;
  /** 1-based line of `file` (for CSV: the record's first line). */
  line?: number;
  image?: string;
}

export interface ImportResult {
  layout: DatasetLayout;
  items: DatasetItem[];
  problems: ImportProblem[];
  /** Records left out because of problems (only when the import was asked to skip them). */
  skipped: number;
}

/** Thrown by an import that found problems and was not asked to skip them. */
export class DatasetImportError extends Error {
  constructor(readonly problems: ImportProblem[], readonly layout?: DatasetLayout) {
    const head = problems.slice(0, 5).map(formatProblem).join('\n  ');
    const more = problems.length > 5 ? `\n  ... and ${problems.length - 5} more` : '';
    super(`dataset import found ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n  ${head}${more}`);
    this.name = 'DatasetImportError';
  }
}

/** "file:line: message" for lists shown to the user. */
export function formatProblem(p: ImportProblem): string {
  const where = p.file ? `${p.file}${p.line ? `:${p.line}` : ''}: ` : '';
  return `${where}${p.message}`;
}
