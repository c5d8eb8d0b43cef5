// Dataset import from the layouts people already have:
//   kohya:       a folder of images with a .txt (or .caption) caption beside each one;
//   imagefolder: Hugging Face's metadata.jsonl with file_name and text;
//   csv / jsonl: a file of records with an image-path column and a caption column;
//   trainer:     the trainer's JSONL (image, caption, negatives), which is jsonl with those names.
// Images are checked by their first bytes. Problems are reported with file and line; the import fails on
// them unless it is asked to skip the records concerned.

import Papa from 'papaparse';
import { assignIds } from './dataset';
import { hasImageExtension, IMAGE_SNIFF_BYTES, sniffImage } from './image';
import { detectColumns, isUrl, recordToItem, type RecordColumns, TRAINER_COLUMNS } from './records';
import { baseName, type DatasetSource, dirName, stripBom } from './source';
import { type DatasetItem, DatasetImportError, type DatasetLayout, type ImportProblem, type ImportResult } from './types';

export interface ImportOptions {
  /** Default 'auto': from the data file's name, else from the folder's files. */
  layout?: DatasetLayout | 'auto';
  /** The data file (metadata.jsonl, .csv, .jsonl), relative to the source root. */
  file?: string;
  /** Field names, when the file's own are not among the usual ones (image/file_name/path..., caption/text/prompt...). */
  imageColumn?: string;
  captionColumn?: string;
  /** 'error' (default): throw DatasetImportError listing every problem; 'skip': leave those records out. */
  onInvalid?: 'error' | 'skip';
  /** Check that every image exists and is an image by its first bytes (default true). */
  checkImages?: boolean;
}

const CAPTION_EXTENSIONS = ['txt', 'caption'];

const isHidden = (p: string) => p.split('/').some((seg) => seg.startsWith('.') || seg === '__MACOSX');
const extOf = (p: string) => /\.([^./]+)$/.exec(p)?.[1].toLowerCase() ?? '';
const stemOf = (p: string) => p.replace(/\.[^./]+$/, '');

/** Which layout a data file or a folder's file list is in. */
export function detectLayout(files: readonly string[], file?: string): { layout: DatasetLayout; files: string[] } {
  if (file) {
    const name = baseName(file).toLowerCase();
    if (name === 'metadata.jsonl') return { layout: 'imagefolder', files: [file] };
    if (/\.(csv|tsv)$/.test(name)) return { layout: 'csv', files: [file] };
    return { layout: 'jsonl', files: [file] };
  }
  const visible = files.filter((f) => !isHidden(f));
  const metadata = visible.filter((f) => baseName(f).toLowerCase() === 'metadata.jsonl');
  if (metadata.length) return { layout: 'imagefolder', files: metadata };
  const topData = visible.filter((f) => !f.includes('/') && /\.(jsonl|csv|tsv)$/i.test(f));
  const captions = visible.filter((f) => CAPTION_EXTENSIONS.includes(extOf(f)));
  if (topData.length === 1 && captions.length === 0) return detectLayout(files, topData[0]);
  return { layout: 'kohya', files: visible };
}

/** Imports a dataset from any source (browser files or a Node folder). */
export async function importDataset(source: DatasetSource, options: ImportOptions = {}): Promise<ImportResult> {
  const all = await source.listFiles();
  let layout: DatasetLayout;
  let files: string[];
  if (!options.layout || options.layout === 'auto') {
    ({ layout, files } = detectLayout(all, options.file));
  } else {
    layout = options.layout;
    if (layout === 'kohya') files = all.filter((f) => !isHidden(f));
    else if (options.file) files = [options.file];
    else if (layout === 'imagefolder') files = all.filter((f) => !isHidden(f) && baseName(f).toLowerCase() === 'metadata.jsonl');
    else throw new Error(`the ${layout} layout needs the data file's name`);
  }

  const problems: ImportProblem[] = [];
  const entries: { item: DatasetItem; file?: string; line?: number }[] = [];
  if (layout === 'kohya') {
    await readKohya(source, files, entries, problems, options.checkImages ?? true);
  } else {
    for (const file of files) {
      const text = await source.readText(file);
      const base = { file, baseDir: dirName(file) };
      if (layout === 'csv') readCsv(text, base, options, entries, problems);
      else {
        const fileLayout = readJsonl(text, base, layout, options, entries, problems);
        if (layout === 'jsonl' && fileLayout === 'trainer') layout = 'trainer';
      }
    }
  }

  if (layout !== 'kohya' && (options.checkImages ?? true)) {
    const checked = await Promise.all(entries.map((e) => checkImage(source, e.item.image, e.file, e.line)));
    for (const [i, problem] of checked.entries()) if (problem) problems.push({ ...problem, image: entries[i].item.image });
  }

  const bad = new Set(problems.map((p) => p.image).filter((x): x is string => x !== undefined));
  const badLines = new Set(problems.filter((p) => p.line !== undefined).map((p) => `${p.file}:${p.line}`));
  const items = entries
    .filter((e) => !(e.line !== undefined ? badLines.has(`${e.file}:${e.line}`) : bad.has(e.item.image)))
    .map((e) => e.item);
  if (items.length === 0 && problems.length === 0) {
    problems.push({ code: 'no-data', message: noDataMessage(layout, source.name) });
  }
  problems.sort((a, b) => (a.file ?? '').localeCompare(b.file ?? '') || (a.line ?? 0) - (b.line ?? 0));
  if (problems.length && (options.onInvalid ?? 'error') === 'error') throw new DatasetImportError(problems, layout);
  return { layout, items: assignIds(items), problems, skipped: countRecords(problems) };
}

/** Records that problems concern (a record with two problems counts once). */
function countRecords(problems: readonly ImportProblem[]): number {
  const keys = new Set(problems.filter((p) => p.code !== 'no-data').map((p) => (p.line !== undefined ? `${p.file}:${p.line}` : (p.image ?? p.file ?? p.message))));
  return keys.size;
}

function noDataMessage(layout: DatasetLayout, name: string): string {
  if (layout === 'kohya') return `no images with captions in ${name}: expected image files (png, jpg, webp, gif, bmp) each with a .txt caption of the same name, a metadata.jsonl, or one .csv/.jsonl file`;
  return `no records in ${name}`;
}

export async function checkImage(source: DatasetSource, image: string, file?: string, line?: number): Promise<ImportProblem | null> {
  const at = { file, line };
  if (isUrl(image)) return { ...at, code: 'missing-image', message: `image ${image} is a URL; only local image files can be imported` };
  const head = await source.readHead(image, IMAGE_SNIFF_BYTES);
  if (head === null) return { ...at, code: 'missing-image', message: `image not found: ${image}` };
  if (head.length === 0) return { ...at, code: 'not-an-image', message: `${image} is empty, not an image` };
  if (!sniffImage(head)) return { ...at, code: 'not-an-image', message: `${image} is not an image (its first bytes are not PNG, JPEG, WebP, GIF or BMP)` };
  return null;
}

async function readKohya(source: DatasetSource, files: string[], entries: { item: DatasetItem }[], problems: ImportProblem[], check: boolean): Promise<void> {
  const byStem = new Map<string, string[]>();
  for (const f of files) {
    const stem = stemOf(f);
    byStem.set(stem, [...(byStem.get(stem) ?? []), f]);
  }
  const images = files.filter(hasImageExtension).sort();
  const usedCaptions = new Set<string>();
  const checks = await Promise.all(
    images.map(async (image) => {
      const siblings = byStem.get(stemOf(image)) ?? [];
      const captionFile = CAPTION_EXTENSIONS.map((e) => siblings.find((s) => extOf(s) === e)).find((s) => s !== undefined);
      if (captionFile) usedCaptions.add(captionFile);
      const problem = check ? await checkImage(source, image) : null;
      return { image, captionFile, problem };
    }),
  );
  for (const { image, captionFile, problem } of checks) {
    if (problem) {
      problems.push({ ...problem, image, file: image });
      continue;
    }
    if (!captionFile) {
      problems.push({ code: 'missing-caption', image, file: image, message: `${image} has no caption file (${baseName(stemOf(image))}.txt beside it)` });
      continue;
    }
    const caption = (await source.readText(captionFile)).replace(/\s+/g, ' ').trim();
    if (caption === '') {
      problems.push({ code: 'empty-caption', image, file: captionFile, message: `empty caption: ${captionFile} (for ${image})` });
      continue;
    }
    entries.push({ item: { id: image, image, caption, negatives: [], failures: [], extra: {} } });
  }
  for (const f of files) {
    if (!CAPTION_EXTENSIONS.includes(extOf(f)) || usedCaptions.has(f)) continue;
    const others = (byStem.get(stemOf(f)) ?? []).filter((s) => s !== f && !CAPTION_EXTENSIONS.includes(extOf(s)));
    if (others.length) {
      // A caption beside a file that is not an image by name: say so, after checking its bytes.
      const head = await source.readHead(others[0], IMAGE_SNIFF_BYTES);
      const isImage = head && sniffImage(head);
      problems.push({
        code: 'not-an-image',
        file: f,
        image: others[0],
        message: isImage
          ? `${others[0]} looks like an image but its extension is not png, jpg, jpeg, webp, gif or bmp: rename it`
          : `${others[0]} (captioned by ${f}) is not an image`,
      });
    } else {
      problems.push({ code: 'missing-image', file: f, message: `caption file ${f} has no image beside it (${baseName(stemOf(f))}.png, .jpg, .webp...)` });
    }
  }
}

interface FileBase {
  file: string;
  baseDir: string;
}

function columnsFor(fields: readonly string[], options: ImportOptions, fallback?: RecordColumns): RecordColumns | null {
  const found = detectColumns(fields, { image: options.imageColumn, caption: options.captionColumn });
  if (found.image && found.caption) return { image: found.image, caption: found.caption };
  return fallback ?? null;
}

/** JSONL lines. Returns 'trainer' when its records use the trainer's image/caption names. */
function readJsonl(
  text: string,
  base: FileBase,
  layout: DatasetLayout,
  options: ImportOptions,
  entries: { item: DatasetItem; file?: string; line?: number }[],
  problems: ImportProblem[],
): DatasetLayout {
  const lines = stripBom(text).split(/\r?\n/);
  let kind: DatasetLayout = layout;
  for (const [i, raw] of lines.entries()) {
    const line = i + 1;
    if (raw.trim() === '') continue;
    let record: unknown;
    try {
      record = JSON.parse(raw);
    } catch (e) {
      problems.push({ file: base.file, line, code: 'bad-line', message: `not valid JSON (${(e as Error).message})` });
      continue;
    }
    const fields = record !== null && typeof record === 'object' && !Array.isArray(record) ? Object.keys(record) : [];
    let columns: RecordColumns;
    if (layout === 'imagefolder') {
      // Hugging Face's names, unless the caller names others or the file uses another caption field.
      const caption = options.captionColumn ?? (fields.includes('text') ? 'text' : (detectColumns(fields).caption ?? 'text'));
      columns = { image: options.imageColumn ?? 'file_name', caption };
    } else {
      columns = columnsFor(fields, options) ?? TRAINER_COLUMNS;
      if (columns.image === 'image' && columns.caption === 'caption') kind = 'trainer';
    }
    const result = recordToItem(record, { file: base.file, line, columns, baseDir: base.baseDir });
    if ('problem' in result) problems.push(result.problem);
    else entries.push({ item: result.item, file: base.file, line });
  }
  return kind;
}

function readCsv(
  text: string,
  base: FileBase,
  options: ImportOptions,
  entries: { item: DatasetItem; file?: string; line?: number }[],
  problems: ImportProblem[],
): void {
  const body = stripBom(text);
  // Line of each character offset, for reporting records by the line they start on.
  const lineStarts: number[] = [0];
  for (let i = 0; i < body.length; i++) if (body[i] === '\n') lineStarts.push(i + 1);
  const lineAt = (offset: number) => {
    let lo = 0;
    let hi = lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (lineStarts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo + 1;
  };
  const rows: { data: Record<string, unknown>; line: number; errors: Papa.ParseError[] }[] = [];
  let fields: string[] = [];
  // Records start after the header line (a header with a quoted line break is not supported here).
  let cursor = body.indexOf('\n') + 1;
  Papa.parse<Record<string, unknown>>(body, {
    header: true,
    skipEmptyLines: 'greedy',
    transformHeader: (h) => h.trim(),
    step: (result) => {
      fields = result.meta.fields ?? fields;
      // The record starts at the first non-newline character after the previous record.
      let start = cursor;
      while (start < body.length && (body[start] === '\n' || body[start] === '\r')) start++;
      rows.push({ data: result.data, line: lineAt(start), errors: result.errors });
      cursor = result.meta.cursor;
    },
  });
  const columns = columnsFor(fields, options);
  if (!columns) {
    const missing = [!detectColumns(fields, { image: options.imageColumn }).image ? 'an image-path column (image, file_name, path...)' : '', !detectColumns(fields, { caption: options.captionColumn }).caption ? 'a caption column (caption, text, prompt...)' : '']
      .filter(Boolean)
      .join(' and ');
    problems.push({ file: base.file, line: 1, code: 'bad-line', message: `the header (${fields.join(', ')}) has no ${missing}` });
    return;
  }
  for (const row of rows) {
    if (row.errors.length) {
      problems.push({ file: base.file, line: row.line, code: 'bad-line', message: row.errors.map((e) => e.message).join('; ') });
      continue;
    }
    const record: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(row.data)) if (k !== '__parsed_extra') record[k] = v;
    const result = recordToItem(record, { file: base.file, line: row.line, columns, baseDir: base.baseDir });
    if ('problem' in result) problems.push(result.problem);
    else entries.push({ item: result.item, file: base.file, line: row.line });
  }
}

/** The trainer's JSONL from text alone (no image checks): for reading back an output file. */
export function parseTrainerJsonl(text: string, options: { file?: string; onInvalid?: 'error' | 'skip' } = {}): ImportResult {
  const problems: ImportProblem[] = [];
  const entries: { item: DatasetItem; file?: string; line?: number }[] = [];
  const file = options.file ?? 'data.jsonl';
  readJsonl(text, { file, baseDir: '' }, 'trainer', {}, entries, problems);
  if (problems.length && (options.onInvalid ?? 'error') === 'error') throw new DatasetImportError(problems, 'trainer');
  const badLines = new Set(problems.map((p) => p.line));
  const items = entries.filter((e) => !badLines.has(e.line)).map((e) => e.item);
  return { layout: 'trainer', items: assignIds(items), problems, skipped: countRecords(problems) };
}

