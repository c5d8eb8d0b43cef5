// Importing the trainer's preference formats with their images: a Diffusion-DPO JSONL (prompt, image_w,
// image_l) or a Diffusion-KTO JSONL (image, caption, label) beside the images it names. Captioned-image
// layouts go through import.ts instead; this one answers null for them, so a caller tries it first.

import { checkImage, type ImportOptions } from './import';
import { detectJsonlKind, parseDpoJsonl, parseKtoJsonl, type PreferenceRecords } from './preference-records';
import type { DatasetSource } from './source';
import { DatasetImportError, type ImportProblem } from './types';

export type PreferenceImport = PreferenceRecords & {
  /** The data file the records came from, relative to the source's root. */
  file: string;
  /** Records left out (with onInvalid 'skip'), with why. */
  problems: ImportProblem[];
};

/**
 * The source's DPO or KTO records, with image paths relative to the source's root, each image checked (it
 * is there, and its first bytes are an image's); null when the source is not in one of these formats.
 * Bad records throw DatasetImportError listing them all, or are left out with onInvalid 'skip'.
 */
export async function importPreferenceData(source: DatasetSource, options: Pick<ImportOptions, 'file' | 'onInvalid' | 'checkImages'> = {}): Promise<PreferenceImport | null> {
  // The data file: the one named, or the only JSONL at the top (caption files beside the images do not
  // matter: the records name their images).
  const candidates = options.file ? [options.file] : (await source.listFiles()).filter((f) => !f.includes('/') && !f.startsWith('.') && /\.jsonl$/i.test(f) && f.toLowerCase() !== 'metadata.jsonl');
  if (candidates.length !== 1 || !/\.jsonl$/i.test(candidates[0])) return null;
  const file = candidates[0];
  const text = await source.readText(file);
  const kind = detectJsonlKind(text);
  if (kind !== 'dpo' && kind !== 'kto') return null;

  const parsed: PreferenceRecords & { problems: ImportProblem[] } =
    kind === 'dpo' ? { kind, ...parseDpoJsonl(text, { file, onInvalid: 'skip' }) } : { kind, ...parseKtoJsonl(text, { file, onInvalid: 'skip' }) };
  const problems = [...parsed.problems];
  // Each image with the first line that names it, for the messages.
  const lineOf = new Map<string, number>();
  const note = (image: string, line: number) => lineOf.has(image) || lineOf.set(image, line);
  if (parsed.kind === 'dpo') for (const r of parsed.records) (note(r.imageW, r.line), note(r.imageL, r.line));
  else for (const r of parsed.records) note(r.image, r.line);
  const bad = new Set<string>();
  if (options.checkImages ?? true) {
    const images = [...lineOf.keys()];
    const checked = await Promise.all(images.map((image) => checkImage(source, image, file, lineOf.get(image))));
    for (const [i, problem] of checked.entries()) {
      if (!problem) continue;
      bad.add(images[i]);
      problems.push({ ...problem, image: images[i] });
    }
  }
  const keep: PreferenceRecords =
    parsed.kind === 'dpo'
      ? { kind: 'dpo', records: parsed.records.filter((r) => !bad.has(r.imageW) && !bad.has(r.imageL)) }
      : { kind: 'kto', records: parsed.records.filter((r) => !bad.has(r.image)) };
  if (keep.records.length === 0 && problems.length === 0) problems.push({ code: 'no-data', file, message: `no records in ${file}` });
  problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  if (problems.length && (options.onInvalid ?? 'error') === 'error') throw new DatasetImportError(problems, 'jsonl');
  return { ...keep, file, problems };
}
