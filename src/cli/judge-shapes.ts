// tpo-lab judge-shapes: scores a folder of images against their shapes-world prompts with the judge of
// src/demo/judge.ts. Each PNG's prompt comes from a .txt beside it (what `tpo-lab shapes` writes), or from
// the PNG's own text: the JSON "tpo-lab" chunk or Automatic1111's "parameters" that `tpo-lab sample` writes.

import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { InputError } from '../app/errors';
import { decodeImageNode } from '../data/decode-node';
import { readPngText } from '../data/png-text';
import { type FactCheck, type JudgeSummary, judgeShapes, summarizeJudgements } from '../demo/judge';
import { formatHelp, type OptionTable, parseOptions, stringOpt, UsageError } from './args';
import type { Command } from './command';
import type { CliIO } from './io';

const OPTIONS: OptionTable = {
  images: { type: 'string', value: 'DIR', description: 'folder of PNGs (from tpo-lab sample, tpo-lab shapes, or PNGs with .txt prompts beside them)' },
  json: { type: 'boolean', description: 'print one JSON object (every image\'s facts, the skipped files, the summary) instead of text' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE = 'tpo-lab judge-shapes --images DIR [--json]';

const DESCRIPTION = `Checks each image of a folder against its shapes-world prompt: for every fact of the
prompt (each shape's kind, colour, size and position, and the background), whether the image shows it. An
image's score is the fraction of its facts shown. Prints each image's score and the facts it misses, then
the mean score and the fraction of facts shown overall and per kind of fact, and for the base model's and
the LoRA's images apart when 'tpo-lab sample --compare' wrote them (*-base.png, *-lora.png). A PNG's
prompt is read from the .txt file of the same name beside it, else from its "tpo-lab" or "parameters" text
(what 'tpo-lab sample' writes). PNGs without a prompt, or whose prompt is not a shapes-world caption, are
listed as skipped.`;

export const judgeShapesCommand: Command = {
  name: 'judge-shapes',
  summary: 'score images against their shapes-world prompts (the demo\'s judge)',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runJudgeShapes,
};

/** The prompt written into a PNG by `tpo-lab sample` (or another A1111-style tool), or null. */
export function promptFromPngText(text: Record<string, string>): string | null {
  if (text['tpo-lab']) {
    try {
      const parsed = JSON.parse(text['tpo-lab']) as { prompt?: unknown };
      if (typeof parsed.prompt === 'string') return parsed.prompt;
    } catch {
      // Not the lab's JSON: fall through to the A1111 text.
    }
  }
  const a1111 = text.parameters;
  if (!a1111) return null;
  // A1111: the prompt's lines, then "Negative prompt: ..." and a line of settings starting "Steps:".
  const lines = a1111.split('\n');
  const end = lines.findIndex((l) => /^(Negative prompt:|Steps: )/.test(l));
  const prompt = (end < 0 ? lines : lines.slice(0, end)).join('\n');
  // The LoRA tag A1111 (and tpo-lab sample) appends is not part of what is asked for.
  return prompt.replace(/\s*<lora:[^>]*>/g, '').trim() || null;
}

interface Judged {
  file: string;
  prompt: string;
  score: number;
  facts: FactCheck[];
}

async function runJudgeShapes(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const imagesArg = stringOpt(values, 'images');
  if (!imagesArg) throw new UsageError('--images is required');
  const dir = path.resolve(io.cwd, imagesArg);
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(`--images ${imagesArg}: ${code === 'ENOENT' ? 'no such folder' : code === 'ENOTDIR' ? 'not a folder' : (e as Error).message}`);
  }
  const present = new Set(names);
  const judged: Judged[] = [];
  const skipped: { file: string; reason: string }[] = [];
  for (const file of names.filter((n) => /\.png$/i.test(n))) {
    let prompt: string | null = null;
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await readFile(path.join(dir, file)));
      const txt = file.replace(/\.png$/i, '.txt');
      if (present.has(txt)) {
        prompt = (await readFile(path.join(dir, txt), 'utf8')).split(/\r?\n/).find((l) => l.trim() !== '') ?? null;
      } else {
        prompt = promptFromPngText(readPngText(bytes));
      }
    } catch (e) {
      skipped.push({ file, reason: (e as Error).message });
      continue;
    }
    if (prompt === null) {
      skipped.push({ file, reason: 'no prompt: no .txt beside it, and no "tpo-lab" or "parameters" text in the PNG' });
      continue;
    }
    try {
      const image = await decodeImageNode(bytes, file);
      const j = judgeShapes(image, prompt);
      judged.push({ file, prompt, score: j.score, facts: j.facts });
    } catch (e) {
      skipped.push({ file, reason: (e as Error).message });
    }
  }
  if (judged.length === 0) {
    const why = skipped.length ? ` (${skipped.length} skipped: ${skipped[0].file}: ${skipped[0].reason}${skipped.length > 1 ? ', ...' : ''})` : '';
    throw new InputError(`--images ${imagesArg}: no PNG with a shapes-world prompt to judge${why}`);
  }
  const summary = summarizeJudgements(judged);
  // `tpo-lab sample --compare` names the base model's images NNN-SEED-base.png and the LoRA's -lora.png:
  // their summaries side by side are the before and after of a run.
  const variants: Record<string, JudgeSummary> = {};
  for (const variant of ['base', 'lora']) {
    const group = judged.filter((j) => j.file.toLowerCase().endsWith(`-${variant}.png`));
    if (group.length) variants[variant] = summarizeJudgements(group);
  }

  if (values.json === true) {
    io.stdout.write(`${JSON.stringify({ images: judged, skipped, summary, variants }, null, 2)}\n`);
    return 0;
  }
  const width = Math.max(4, ...judged.map((j) => j.file.length)) + 2;
  io.stdout.write(`${'file'.padEnd(width)}score  facts  not shown\n`);
  for (const j of judged) {
    const shown = j.facts.filter((f) => f.shown).length;
    const missed = j.facts.filter((f) => !f.shown).map((f) => `${f.fact} (saw ${f.observed})`);
    const row = `${j.file.padEnd(width)}${j.score.toFixed(2).padEnd(7)}${`${shown}/${j.facts.length}`.padEnd(7)}${missed.join('; ')}`;
    io.stdout.write(`${row.trimEnd()}\n`);
  }
  for (const s of skipped) io.stderr.write(`skipped ${s.file}: ${s.reason}\n`);
  const pct = (t: { shown: number; total: number; rate: number }) => `${(100 * t.rate).toFixed(1)}% (${t.shown}/${t.total})`;
  const byKind = (sum: JudgeSummary) =>
    Object.entries(sum.byKind)
      .filter(([, t]) => t.total > 0)
      .map(([k, t]) => `${k} ${pct(t)}`)
      .join(', ');
  io.stdout.write(
    `\nmean score ${summary.meanScore.toFixed(3)} over ${summary.images} image${summary.images === 1 ? '' : 's'}${skipped.length ? ` (${skipped.length} skipped)` : ''}\n` +
      `facts shown: ${pct(summary.facts)}\n` +
      `by kind of fact: ${byKind(summary)}\n`,
  );
  for (const [variant, v] of Object.entries(variants)) {
    io.stdout.write(`${variant === 'base' ? 'base model' : 'LoRA'} (*-${variant}.png): mean score ${v.meanScore.toFixed(3)} over ${v.images}; ${byKind(v)}\n`);
  }
  return 0;
}
