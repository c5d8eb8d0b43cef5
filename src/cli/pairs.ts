// tpo-lab pairs: write mismatched captions (negatives) for every caption of a dataset, with an LLM or the
// rule editor, into the trainer's JSONL. Re-running skips the captions already done. The job itself is
// app/pairs-job.ts (the worker runs it too); here are the options, the files and the terminal.

import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { type PairsEditor, pairsEditor, runPairsJob } from '../app/pairs-job';
import { exportTrainerJsonl } from '../data/export';
import { parseTrainerJsonl } from '../data/import';
import { absoluteImagePath, importPath, relativeImagePath, writeFileAtomic } from '../data/node-fs';
import { type DatasetItem, DatasetImportError, formatProblem } from '../data/types';
import { PRINCIPLE_CHOICES, type PrincipleChoice, PRINCIPLES } from '../data/vocabulary';
import { shapesWorldWords } from '../demo/shapes';
import { LlmError } from '../llm/client';
import { defaultTemplates, type PromptTemplates } from '../llm/principles';
import { loadClipTokenizer } from '../models/tokenizer-node';
import { formatHelp, intOpt, numberOpt, type OptionTable, parseOptions, stringOpt, UsageError } from './args';
import type { Command } from './command';
import { type CliIO, ProgressBar } from './io';

const OPTIONS: OptionTable = {
  data: { type: 'string', value: 'PATH', description: 'dataset: a folder (kohya .txt captions, or metadata.jsonl) or a .csv/.jsonl file' },
  out: { type: 'string', value: 'FILE.jsonl', description: "output in the trainer's JSONL; an existing one is resumed" },
  'llm-url': { type: 'string', value: 'URL', description: 'OpenAI-compatible base URL, e.g. http://localhost:11434/v1 (none: rule editor)' },
  'llm-model': { type: 'string', value: 'NAME', description: 'model name for the endpoint' },
  'api-key-env': { type: 'string', value: 'VAR', description: 'environment variable that holds the API key (never printed)' },
  principles: { type: 'string', value: 'LIST', description: 'comma-separated: content, attribute, spatial, context, mix', default: PRINCIPLES.join(',') },
  'per-caption': { type: 'string', value: 'N', description: 'negatives per caption', default: '1' },
  rules: { type: 'boolean', description: 'use the rule editor even when an LLM is set' },
  seed: { type: 'string', value: 'S', description: 'seed of the rule editor', default: '0' },
  tokenizer: { type: 'string', value: 'PATH', description: 'model folder or tokenizer folder (vocab.json, merges.txt) for the 77-token check' },
  concurrency: { type: 'string', value: 'N', description: 'LLM requests in flight', default: '4' },
  timeout: { type: 'string', value: 'SECONDS', description: 'per-request timeout', default: '60' },
  retries: { type: 'string', value: 'N', description: 'tries per negative when answers are invalid', default: '3' },
  'http-retries': { type: 'string', value: 'N', description: 'retries on 429/5xx/network errors per request', default: '4' },
  temperature: { type: 'string', value: 'T', description: 'LLM sampling temperature', default: '0.7' },
  'json-mode': { type: 'string', value: 'auto|on|off', description: 'ask for response_format json_object', default: 'auto' },
  templates: { type: 'string', value: 'FILE.json', description: 'prompt templates to use: {"system": ..., "content": ..., ...}' },
  'image-column': { type: 'string', value: 'NAME', description: 'image-path field of a CSV/JSONL (default: detected)' },
  'caption-column': { type: 'string', value: 'NAME', description: 'caption field of a CSV/JSONL (default: detected)' },
  'skip-invalid': { type: 'boolean', description: 'skip dataset records with problems instead of stopping' },
  quiet: { type: 'boolean', short: 'q', description: 'no progress bar' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE =
  'tpo-lab pairs --data PATH --out FILE.jsonl [--llm-url URL --llm-model NAME --api-key-env VAR]\n' +
  '         [--principles content,attribute,spatial,context] [--per-caption N] [--rules] [--seed S]';

const DESCRIPTION = `Writes N mismatched captions (negatives) for every caption of a dataset, by the chosen editing
principles, with an OpenAI-compatible LLM or, when no --llm-url is given (or with --rules), the offline
rule editor. Every item goes to the output in the trainer's JSONL with its negatives (status "pending"),
ready to train on or to review. Captions that already have N negatives in the output are skipped, so an
interrupted run resumes where it stopped. Negatives that could not be made are listed with their reason
in the summary and in the item's "failures" field.`;

export const pairsCommand: Command = {
  name: 'pairs',
  summary: 'write mismatched captions (negatives) for a dataset, with an LLM or the rule editor',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runPairs,
};

export function parsePrinciples(list: string): PrincipleChoice[] {
  const parts = list
    .split(',')
    .map((p) => p.trim().toLowerCase())
    .filter(Boolean);
  if (parts.length === 0) throw new UsageError('--principles is empty');
  for (const p of parts) {
    if (!(PRINCIPLE_CHOICES as readonly string[]).includes(p)) throw new UsageError(`unknown principle '${p}' (use ${PRINCIPLE_CHOICES.join(', ')})`);
  }
  return parts as PrincipleChoice[];
}

async function loadTemplates(file: string): Promise<PromptTemplates> {
  let data: unknown;
  try {
    data = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`--templates ${file}: ${(e as Error).message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new UsageError(`--templates ${file}: expected a JSON object`);
  const templates = defaultTemplates();
  for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
    if (k !== 'system' && !(PRINCIPLE_CHOICES as readonly string[]).includes(k)) throw new UsageError(`--templates ${file}: unknown key '${k}'`);
    if (typeof v !== 'string' || !v.trim()) throw new UsageError(`--templates ${file}: '${k}' must be a non-empty string`);
    (templates as Record<string, string>)[k] = v;
  }
  return templates;
}

async function runPairs(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const dataArg = stringOpt(values, 'data');
  const outArg = stringOpt(values, 'out');
  if (!dataArg) throw new UsageError('--data is required');
  if (!outArg) throw new UsageError('--out is required');
  const llmUrl = stringOpt(values, 'llm-url');
  const llmModel = stringOpt(values, 'llm-model');
  const keyEnv = stringOpt(values, 'api-key-env');
  const useRules = values.rules === true || !llmUrl;
  if (llmUrl && !llmModel && values.rules !== true) throw new UsageError('--llm-url needs --llm-model');
  if (llmModel && !llmUrl) throw new UsageError('--llm-model needs --llm-url');
  const principles = parsePrinciples(stringOpt(values, 'principles') ?? PRINCIPLES.join(','));
  const perCaption = intOpt(values, 'per-caption', 1, 1);
  const seedText = stringOpt(values, 'seed') ?? '0';
  const seed = /^-?\d+$/.test(seedText) ? Number(seedText) : seedText;
  const concurrency = intOpt(values, 'concurrency', 1, 4);
  const timeoutS = numberOpt(values, 'timeout', 0.001, 60);
  const tries = intOpt(values, 'retries', 1, 3);
  const httpRetries = intOpt(values, 'http-retries', 0, 4);
  const temperature = numberOpt(values, 'temperature', 0, 0.7);
  const jsonMode = stringOpt(values, 'json-mode') ?? 'auto';
  if (jsonMode !== 'auto' && jsonMode !== 'on' && jsonMode !== 'off') throw new UsageError('--json-mode must be auto, on or off');
  const quiet = values.quiet === true;

  let apiKey: string | undefined;
  if (keyEnv && !useRules) {
    apiKey = io.env[keyEnv];
    if (!apiKey) throw new UsageError(`environment variable ${keyEnv} (named by --api-key-env) is not set or empty`);
  }

  const cwd = io.cwd;
  const dataPath = path.resolve(cwd, dataArg);
  const outPath = path.resolve(cwd, outArg);
  const outDir = path.dirname(outPath);
  const say = (text: string) => io.stderr.write(`${text}\n`);
  if (existsSync(outPath) && statSync(outPath).isDirectory()) throw new UsageError(`--out ${outArg} is a folder; name the .jsonl file to write`);

  // The dataset.
  let imported;
  try {
    imported = await importPath(dataPath, {
      onInvalid: values['skip-invalid'] === true ? 'skip' : 'error',
      imageColumn: stringOpt(values, 'image-column'),
      captionColumn: stringOpt(values, 'caption-column'),
    });
  } catch (e) {
    if (e instanceof DatasetImportError) {
      say(`${dataArg}: ${e.problems.length} problem${e.problems.length === 1 ? '' : 's'} in the dataset:`);
      for (const p of e.problems.slice(0, 30)) say(`  ${formatProblem(p)}`);
      if (e.problems.length > 30) say(`  ... and ${e.problems.length - 30} more`);
      say('Fix them, or pass --skip-invalid to leave those records out.');
      return 1;
    }
    throw e;
  }
  if (imported.problems.length) {
    say(`skipping ${imported.skipped || imported.problems.length} record(s) with problems:`);
    for (const p of imported.problems.slice(0, 10)) say(`  ${formatProblem(p)}`);
    if (imported.problems.length > 10) say(`  ... and ${imported.problems.length - 10} more`);
  }
  // The dataset names images relative to its root, the output relative to its own folder: the job matches
  // them by name, so both become absolute here (and relative to the output again when written).
  const root = imported.root;
  const items = imported.items.map((item) => ({ ...item, image: absoluteImagePath(item, root) }));

  // What an earlier run already wrote.
  let earlier: DatasetItem[] = [];
  if (existsSync(outPath)) {
    let prior;
    try {
      prior = parseTrainerJsonl(await readFile(outPath, 'utf8'), { file: outArg, onInvalid: 'error' });
    } catch (e) {
      if (e instanceof DatasetImportError) {
        say(`${outArg} exists but is not a valid trainer JSONL, so it cannot be resumed:`);
        for (const p of e.problems.slice(0, 10)) say(`  ${formatProblem(p)}`);
        say('Move it away or choose another --out.');
        return 1;
      }
      throw e;
    }
    earlier = prior.items.map((item) => ({ ...item, image: absoluteImagePath(item, outDir) }));
  }

  // The editor.
  let countTokens: ((text: string) => number) | undefined;
  const tokArg = stringOpt(values, 'tokenizer');
  if (tokArg) {
    const tokenizer = await loadClipTokenizer(path.resolve(cwd, tokArg));
    countTokens = (t) => tokenizer.countTokens(t);
  }
  const templatesArg = stringOpt(values, 'templates');
  const templates = !useRules && templatesArg ? await loadTemplates(path.resolve(cwd, templatesArg)) : undefined;
  // A shapes-world data set (the demo's) keeps its negatives to the world's words.
  const words = shapesWorldWords(items.map((item) => item.caption));
  let built: PairsEditor;
  try {
    built = pairsEditor(
      {
        rules: useRules,
        seed,
        words,
        llm: useRules
          ? null
          : { baseUrl: llmUrl!, model: llmModel!, apiKey, concurrency, timeoutMs: timeoutS * 1000, maxRetries: httpRetries, temperature, jsonMode, maxAttempts: tries, templates },
      },
      countTokens,
    );
  } catch (e) {
    if (e instanceof LlmError) throw new UsageError(e.message);
    throw e;
  }
  if (built.editor.source === 'rule') say(`editor: rules (seed ${seed}${words ? '; shapes-world captions: edits keep to its words' : ''})${llmUrl && values.rules === true ? ' (--rules given: the LLM is not used)' : ''}`);
  else say(`editor: LLM ${llmModel} at ${built.url}${apiKey ? ` (API key from $${keyEnv})` : ''}`);
  if (!countTokens) say('note: no --tokenizer given, so the 77-token check uses an estimate');

  // The job; the output is written whole each time, atomically, with image paths relative to it.
  const save = (all: DatasetItem[]) => writeFileAtomic(outPath, exportTrainerJsonl(all, { imagePath: (item) => relativeImagePath(item, root, outDir) }));
  let bar: ProgressBar | undefined;
  let result;
  try {
    result = await runPairsJob({
      items,
      earlier,
      editor: built.editor,
      principles,
      perCaption,
      concurrency: built.concurrency,
      signal: io.signal,
      save,
      apiKey,
      onEvent: (event) => {
        if (event.type === 'start') {
          say(`${event.captions} caption(s): ${event.todo} to do, ${event.alreadyDone} already done; ${perCaption} negative(s) each, principles ${principles.join(',')}`);
          bar = new ProgressBar(io.stderr, event.todo, 'pairs', !quiet);
        } else if (event.type === 'progress') {
          bar?.tick(1, event.failed ? `${event.failed} failed` : '');
        }
      },
    });
  } finally {
    bar?.finish();
  }

  // Summary.
  const out = io.stdout;
  const { failures, serverGone } = result;
  const left = result.todo - result.completed;
  const principleList = Object.entries(result.byPrinciple).map(([p, n]) => `${p} ${n}`).join(', ');
  out.write(`pairs: ${result.captions} caption(s), ${result.completed} done now, ${result.alreadyDone} already done (skipped)\n`);
  out.write(`negatives: ${result.made} made${principleList ? ` (${principleList})` : ''}, ${failures.length} failed\n`);
  if (failures.length) {
    const reasons = new Map<string, number>();
    for (const f of failures) {
      const key = `${f.principle}: ${f.reason}`;
      reasons.set(key, (reasons.get(key) ?? 0) + 1);
    }
    out.write('failed:\n');
    for (const [reason, n] of [...reasons].sort((a, b) => b[1] - a[1])) out.write(`  ${n} x ${reason}\n`);
  }
  out.write(`wrote ${outArg} (${result.items.length} item(s))\n`);
  if (result.cancelled) {
    out.write(`cancelled: ${left} caption(s) left; run the same command again to resume\n`);
    return 130;
  }
  // A run that could not make every negative is not a success: what was made is saved, and the same
  // command tries the rest again.
  if (serverGone) {
    say(`stopped early: ${serverGone}. ${left} caption(s) were not tried; what was made is saved in ${outArg}. Check --llm-url and the server, then run the same command again to resume.`);
    return 1;
  }
  if (failures.length) {
    say(`${failures.length} negative(s) could not be made (listed above); what was made is saved in ${outArg}. Run the same command again to retry them.`);
    return 1;
  }
  return 0;
}
