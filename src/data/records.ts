// One JSON / CSV record <-> one dataset item, for the trainer's JSONL and the other record layouts.
// Known fields are checked; unknown fields are kept as they were, in `extra`.

import { joinPath } from './source';
import type { DatasetItem, FailedEdit, HistoryEntry, ImportProblem, Negative } from './types';
import {
  NEGATIVE_SOURCES,
  NEGATIVE_STATUSES,
  type NegativeSource,
  type NegativeStatus,
  RECORDED_PRINCIPLES,
  type RecordedPrinciple,
} from './vocabulary';

/** Which record fields hold the image path and the caption. */
export interface RecordColumns {
  image: string;
  caption: string;
}

export const TRAINER_COLUMNS: RecordColumns = { image: 'image', caption: 'caption' };
export const IMAGEFOLDER_COLUMNS: RecordColumns = { image: 'file_name', caption: 'text' };

const IMAGE_COLUMN_NAMES = ['image', 'file_name', 'filename', 'file', 'image_path', 'imagepath', 'path', 'img', 'image_file', 'image_name'];
const CAPTION_COLUMN_NAMES = ['caption', 'text', 'prompt', 'title', 'description', 'caption_text'];

/** Picks the image and caption fields from the names a file uses (exact name first, then case-insensitively). */
export function detectColumns(fields: readonly string[], prefer: Partial<RecordColumns> = {}): Partial<RecordColumns> {
  const find = (names: string[]) => {
    for (const n of names) if (fields.includes(n)) return n;
    for (const n of names) {
      const hit = fields.find((f) => f.trim().toLowerCase() === n);
      if (hit !== undefined) return hit;
    }
    return undefined;
  };
  return { image: prefer.image ?? find(IMAGE_COLUMN_NAMES), caption: prefer.caption ?? find(CAPTION_COLUMN_NAMES) };
}

export function isAbsolutePath(p: string): boolean {
  return p.startsWith('/') || /^[A-Za-z]:[\\/]/.test(p) || p.startsWith('\\\\');
}

export function isUrl(p: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(p);
}

/** The record's image path as a path relative to the source root (or absolute, as it was). */
export function resolveImagePath(dataFileDir: string, image: string): string {
  if (isAbsolutePath(image) || isUrl(image)) return image;
  return joinPath(dataFileDir, image);
}

type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

function parseHistory(value: unknown, where: string): Parsed<HistoryEntry[]> {
  if (value === undefined) return { ok: true, value: [] };
  if (!Array.isArray(value) || !value.every((h) => h !== null && typeof h === 'object' && !Array.isArray(h))) {
    return { ok: false, message: `${where}: history must be a list of objects` };
  }
  return { ok: true, value: value as HistoryEntry[] };
}

function parseNegative(value: unknown, k: number): Parsed<Negative> {
  const where = `negative ${k + 1}`;
  if (typeof value === 'string') value = { caption: value };
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { ok: false, message: `${where} is not an object` };
  const { caption, principle = 'other', source = 'manual', status = 'pending', history, ...extra } = value as Record<string, unknown>;
  if (typeof caption !== 'string' || caption.trim() === '') return { ok: false, message: `${where} has no caption` };
  if (!RECORDED_PRINCIPLES.includes(principle as RecordedPrinciple)) {
    return { ok: false, message: `${where}: principle ${JSON.stringify(principle)} is not one of ${RECORDED_PRINCIPLES.join(', ')}` };
  }
  if (!NEGATIVE_SOURCES.includes(source as NegativeSource)) {
    return { ok: false, message: `${where}: source ${JSON.stringify(source)} is not one of ${NEGATIVE_SOURCES.join(', ')}` };
  }
  if (!NEGATIVE_STATUSES.includes(status as NegativeStatus)) {
    return { ok: false, message: `${where}: status ${JSON.stringify(status)} is not one of ${NEGATIVE_STATUSES.join(', ')}` };
  }
  const h = parseHistory(history, where);
  if (!h.ok) return h;
  return {
    ok: true,
    value: {
      caption: caption.replace(/\s+/g, ' ').trim(),
      principle: principle as RecordedPrinciple,
      source: source as NegativeSource,
      status: status as NegativeStatus,
      history: h.value,
      extra,
    },
  };
}

export interface RecordContext {
  /** The data file, relative to the source root (for messages and for resolving image paths). */
  file: string;
  line: number;
  columns: RecordColumns;
  /** Directory that image paths are relative to (default: the data file's directory). */
  baseDir: string;
}

/**
 * A record as a dataset item, or the problem that stops it. `negatives` and `failures` are read when
 * present (the trainer's format); every other field goes to `extra`.
 */
export function recordToItem(record: unknown, ctx: RecordContext): { item: DatasetItem } | { problem: ImportProblem } {
  const at = { file: ctx.file, line: ctx.line };
  if (record === null || typeof record !== 'object' || Array.isArray(record)) {
    return { problem: { ...at, code: 'bad-line', message: 'not a JSON object' } };
  }
  const obj = record as Record<string, unknown>;
  const { image: imageKey, caption: captionKey } = ctx.columns;
  if (!(captionKey in obj) && 'prompt' in obj && 'image_w' in obj && 'image_l' in obj) {
    return { problem: { ...at, code: 'unsupported-record', message: 'a Diffusion-DPO record (prompt, image_w, image_l) has no single image and caption to edit' } };
  }
  const image = obj[imageKey];
  if (typeof image !== 'string' || image.trim() === '') {
    return { problem: { ...at, code: 'bad-line', message: `no image path (field "${imageKey}")` } };
  }
  const caption = obj[captionKey];
  if (caption === undefined || caption === null) {
    return { problem: { ...at, code: 'bad-line', image, message: `no caption (field "${captionKey}") for ${image}` } };
  }
  if (typeof caption !== 'string') {
    return { problem: { ...at, code: 'bad-line', image, message: `caption (field "${captionKey}") of ${image} is not text` } };
  }
  if (caption.trim() === '') return { problem: { ...at, code: 'empty-caption', image, message: `empty caption for ${image}` } };

  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) if (k !== imageKey && k !== captionKey && k !== 'negatives' && k !== 'failures') extra[k] = v;

  const negatives: Negative[] = [];
  if (obj.negatives !== undefined) {
    if (!Array.isArray(obj.negatives)) return { problem: { ...at, code: 'bad-line', image, message: '"negatives" must be a list' } };
    for (const [k, n] of obj.negatives.entries()) {
      const parsed = parseNegative(n, k);
      if (!parsed.ok) return { problem: { ...at, code: 'bad-line', image, message: parsed.message } };
      negatives.push(parsed.value);
    }
  }
  let failures: FailedEdit[] = [];
  if (obj.failures !== undefined) {
    if (!Array.isArray(obj.failures)) return { problem: { ...at, code: 'bad-line', image, message: '"failures" must be a list' } };
    failures = obj.failures.filter((f): f is FailedEdit => f !== null && typeof f === 'object' && typeof (f as FailedEdit).reason === 'string');
  }
  const imagePath = resolveImagePath(ctx.baseDir, image.trim());
  return {
    item: { id: imagePath, image: imagePath, caption: caption.replace(/\s+/g, ' ').trim(), negatives, failures, extra },
  };
}

export interface RecordOptions {
  /** Keep only accepted negatives (the app's "accepted only" export). */
  acceptedOnly?: boolean;
  /** Write each negative's edit history (default true). */
  includeHistory?: boolean;
  /** Write the failed edits with their reasons (default true). */
  includeFailures?: boolean;
  /** The image path to write (default: item.image as it is). */
  imagePath?: (item: DatasetItem) => string;
}

/** An item as one record of the trainer's JSONL: image, caption, unknown fields, negatives (with status). */
export function itemToRecord(item: DatasetItem, options: RecordOptions = {}): Record<string, unknown> {
  const record: Record<string, unknown> = {
    image: options.imagePath ? options.imagePath(item) : item.image,
    caption: item.caption,
  };
  for (const [k, v] of Object.entries(item.extra)) if (!(k in record)) record[k] = v;
  const negatives = options.acceptedOnly ? item.negatives.filter((n) => n.status === 'accepted') : item.negatives;
  record.negatives = negatives.map((n) => {
    const out: Record<string, unknown> = { caption: n.caption, principle: n.principle, source: n.source, status: n.status };
    for (const [k, v] of Object.entries(n.extra)) if (!(k in out) && k !== 'history') out[k] = v;
    if ((options.includeHistory ?? true) && n.history.length) out.history = n.history;
    return out;
  });
  if ((options.includeFailures ?? true) && item.failures.length) record.failures = item.failures;
  return record;
}
