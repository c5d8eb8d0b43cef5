// The trainer's other JSON Lines formats, beside the TPO one (image, caption, negatives: parseTrainerJsonl):
//   Diffusion-DPO: {"prompt": "...", "image_w": "preferred.png", "image_l": "rejected.png"}
//   Diffusion-KTO: {"image": "a.png", "caption": "...", "label": true}
// Image paths are relative to the data file's folder. Unknown fields are kept (in `extra`) and written back.
// Bad lines are reported with their line number; they are skipped only when the caller asks.

import { resolveImagePath } from './records';
import { dirName, stripBom } from './source';
import { DatasetImportError, type ImportProblem } from './types';

/** One Diffusion-DPO pair: two images of one prompt, the preferred (w) and the rejected (l). */
export interface DpoRecord {
  prompt: string;
  /** Preferred image, resolved against the data file's folder (as resolveImagePath does). */
  imageW: string;
  /** Rejected image, resolved likewise. */
  imageL: string;
  /** 1-based line of the data file. */
  line: number;
  /** Fields this model does not know, kept as they were. */
  extra: Record<string, unknown>;
}

/** One Diffusion-KTO example: an image with its caption, labelled desirable (true) or undesirable (false). */
export interface KtoRecord {
  image: string;
  caption: string;
  label: boolean;
  line: number;
  extra: Record<string, unknown>;
}

export interface ParsedRecords<T> {
  records: T[];
  /** Every bad line, with its line number (also in 'skip' mode). */
  problems: ImportProblem[];
  /** Lines left out because of problems (only when asked to skip them). */
  skipped: number;
}

export interface ParseRecordsOptions {
  /** The data file, for messages, and whose folder image paths are relative to (default 'data.jsonl'). */
  file?: string;
  /** Folder image paths are relative to, when not the data file's own. */
  baseDir?: string;
  /** 'error' (default): throw DatasetImportError listing every bad line; 'skip': leave those lines out. */
  onInvalid?: 'error' | 'skip';
}

export type RecordKind = 'tpo' | 'dpo' | 'kto';

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();

/**
 * Which of the trainer's formats a record is in: 'dpo' (image_w and image_l), 'kto' (image and label),
 * 'tpo' (image with caption or negatives), or null.
 */
export function detectRecordKind(firstRecord: unknown): RecordKind | null {
  if (!isObject(firstRecord)) return null;
  const has = (k: string) => k in firstRecord;
  if (has('image_w') && has('image_l')) return 'dpo';
  if (has('image') && has('label')) return 'kto';
  if (has('image') && (has('caption') || has('negatives'))) return 'tpo';
  return null;
}

/** The format of a JSONL file, from its first line that is a JSON object; null when none is recognised. */
export function detectJsonlKind(text: string): RecordKind | null {
  for (const { value } of jsonLines(text)) {
    if (value.ok && isObject(value.record)) return detectRecordKind(value.record);
  }
  return null;
}

type LineValue = { ok: true; record: unknown } | { ok: false; message: string };

/** Non-blank lines of a JSONL text (BOM removed, \n or \r\n), parsed, with their 1-based line numbers. */
function* jsonLines(text: string): Generator<{ line: number; value: LineValue }> {
  const lines = stripBom(text).split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    if (raw.trim() === '') continue;
    let value: LineValue;
    try {
      value = { ok: true, record: JSON.parse(raw) };
    } catch (e) {
      value = { ok: false, message: `not valid JSON (${(e as Error).message})` };
    }
    yield { line: i + 1, value };
  }
}

type Check<T> = { ok: true; value: T } | { ok: false; message: string };

const KIND_NAMES: Record<RecordKind, string> = {
  tpo: 'a TPO record (image, caption, negatives)',
  dpo: 'a Diffusion-DPO record (prompt, image_w, image_l)',
  kto: 'a Diffusion-KTO record (image, caption, label)',
};

/** Shared driver: parse each line, check it, collect problems, throw or skip. */
function parseLines<T>(
  text: string,
  options: ParseRecordsOptions,
  want: RecordKind,
  check: (obj: Record<string, unknown>, line: number, baseDir: string) => Check<T>,
): ParsedRecords<T> {
  const file = options.file ?? 'data.jsonl';
  const baseDir = options.baseDir ?? dirName(file);
  const records: T[] = [];
  const problems: ImportProblem[] = [];
  for (const { line, value } of jsonLines(text)) {
    const at = { file, line, code: 'bad-line' as const };
    if (!value.ok) {
      problems.push({ ...at, message: value.message });
      continue;
    }
    if (!isObject(value.record)) {
      problems.push({ ...at, message: 'not a JSON object' });
      continue;
    }
    const result = check(value.record, line, baseDir);
    if (result.ok) {
      records.push(result.value);
      continue;
    }
    // A record of another of the formats: say so, beside what is missing.
    const kind = detectRecordKind(value.record);
    if (kind !== null && kind !== want) {
      problems.push({ ...at, code: 'unsupported-record', message: `${result.message}: this looks like ${KIND_NAMES[kind]}, not ${KIND_NAMES[want]}` });
    } else {
      problems.push({ ...at, message: result.message });
    }
  }
  if (problems.length && (options.onInvalid ?? 'error') === 'error') throw new DatasetImportError(problems);
  return { records, problems, skipped: problems.length };
}

/** A required, non-blank text field; the issue (missing, not text, blank) otherwise. */
function textField(obj: Record<string, unknown>, key: string, what: string, issues: string[]): string {
  const v = obj[key];
  if (v === undefined || v === null) issues.push(`no ${what} (field "${key}")`);
  else if (typeof v !== 'string') issues.push(`${what} (field "${key}") is not text`);
  else if (v.trim() === '') issues.push(`${what} (field "${key}") is empty`);
  else return v;
  return '';
}

function extraOf(obj: Record<string, unknown>, known: readonly string[]): Record<string, unknown> {
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) if (!known.includes(k)) extra[k] = v;
  return extra;
}

const DPO_FIELDS = ['prompt', 'image_w', 'image_l'] as const;
const KTO_FIELDS = ['image', 'caption', 'label'] as const;

/**
 * Diffusion-DPO JSONL: each line {"prompt", "image_w", "image_l"}, all non-blank text, the two images
 * different. Prompts are put on one line (runs of white space become one space).
 */
export function parseDpoJsonl(text: string, options: ParseRecordsOptions = {}): ParsedRecords<DpoRecord> {
  return parseLines(text, options, 'dpo', (obj, line, baseDir) => {
    const issues: string[] = [];
    const prompt = textField(obj, 'prompt', 'prompt', issues);
    const w = textField(obj, 'image_w', 'preferred image', issues);
    const l = textField(obj, 'image_l', 'rejected image', issues);
    if (issues.length) return { ok: false, message: issues.join('; ') };
    const imageW = resolveImagePath(baseDir, w.trim());
    const imageL = resolveImagePath(baseDir, l.trim());
    if (imageW === imageL) return { ok: false, message: `image_w and image_l are the same image (${imageW}): a pair needs two different images` };
    return { ok: true, value: { prompt: oneLine(prompt), imageW, imageL, line, extra: extraOf(obj, DPO_FIELDS) } };
  });
}

/**
 * A KTO label: true / false, 1 / 0, or the text "desirable" / "undesirable" (any case). Anything else,
 * including "true" as text, is refused rather than guessed.
 */
export function parseKtoLabel(v: unknown): boolean | null {
  if (typeof v === 'boolean') return v;
  if (v === 1 || v === 0) return v === 1;
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase();
    if (s === 'desirable') return true;
    if (s === 'undesirable') return false;
  }
  return null;
}

/**
 * Diffusion-KTO JSONL: each line {"image", "caption", "label"}; label as parseKtoLabel reads it (true,
 * false, 1, 0, "desirable", "undesirable"). Captions are put on one line.
 */
export function parseKtoJsonl(text: string, options: ParseRecordsOptions = {}): ParsedRecords<KtoRecord> {
  return parseLines(text, options, 'kto', (obj, line, baseDir) => {
    const issues: string[] = [];
    const image = textField(obj, 'image', 'image path', issues);
    const caption = textField(obj, 'caption', 'caption', issues);
    let label: boolean | null = null;
    if (obj.label === undefined || obj.label === null) issues.push('no label (field "label": true for desirable, false for undesirable)');
    else if ((label = parseKtoLabel(obj.label)) === null) {
      issues.push(`label ${JSON.stringify(obj.label)} is not true / false (1 / 0 and "desirable" / "undesirable" are accepted too)`);
    }
    if (issues.length || label === null) return { ok: false, message: issues.join('; ') };
    return {
      ok: true,
      value: { image: resolveImagePath(baseDir, image.trim()), caption: oneLine(caption), label, line, extra: extraOf(obj, KTO_FIELDS) },
    };
  });
}

/** A DPO record as one JSONL object: prompt, image_w, image_l, then the unknown fields as they were. */
export function dpoRecordToJson(r: DpoRecord, imagePath: (p: string) => string = (p) => p): Record<string, unknown> {
  const out: Record<string, unknown> = { prompt: r.prompt, image_w: imagePath(r.imageW), image_l: imagePath(r.imageL) };
  for (const [k, v] of Object.entries(r.extra)) if (!(k in out)) out[k] = v;
  return out;
}

/** A KTO record as one JSONL object: image, caption, label (always a JSON boolean), then the unknown fields. */
export function ktoRecordToJson(r: KtoRecord, imagePath: (p: string) => string = (p) => p): Record<string, unknown> {
  const out: Record<string, unknown> = { image: imagePath(r.image), caption: r.caption, label: r.label };
  for (const [k, v] of Object.entries(r.extra)) if (!(k in out)) out[k] = v;
  return out;
}

/** A dataset of the trainer's preference formats: Diffusion-DPO pairs or Diffusion-KTO labelled images. */
export type PreferenceRecords = { kind: 'dpo'; records: DpoRecord[] } | { kind: 'kto'; records: KtoRecord[] };

/** The records as the trainer's JSONL of their kind (image paths through `imagePath`). */
export function formatPreferenceJsonl(data: PreferenceRecords, imagePath: (p: string) => string = (p) => p): string {
  const objects = data.kind === 'dpo' ? data.records.map((r) => dpoRecordToJson(r, imagePath)) : data.records.map((r) => ktoRecordToJson(r, imagePath));
  return objects.map((o) => `${JSON.stringify(o)}\n`).join('');
}

/** Reads the trainer's JSONL of a preference kind; throws DatasetImportError on any bad line. */
export function parsePreferenceJsonl(text: string, kind: PreferenceRecords['kind'], options: ParseRecordsOptions = {}): PreferenceRecords {
  return kind === 'dpo' ? { kind, records: parseDpoJsonl(text, options).records } : { kind, records: parseKtoJsonl(text, options).records };
}

/** Every image the records name, once each, in order of first use. */
export function preferenceImages(data: PreferenceRecords): string[] {
  return [...new Set(data.kind === 'dpo' ? data.records.flatMap((r) => [r.imageW, r.imageL]) : data.records.map((r) => r.image))];
}
