// Node-only: a judge's files from a folder on disk (the CLI's --clip / --reward DIR).

import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ClipJudge, type JudgeFiles, type JudgeKind, type JudgeOptions } from './clip-judge';
import { EXPORT_HINT, readJudgeFiles, type JudgeSource } from './judge-files';

/** A folder on disk as a JudgeSource; files are named by their paths. */
export function judgeSourceFromDir(dir: string): JudgeSource {
  const at = (rel: string) => path.join(dir, ...rel.split('/'));
  return {
    name: dir,
    has: (rel) => existsSync(at(rel)) && statSync(at(rel)).isFile(),
    bytes: async (rel) => new Uint8Array(await readFile(at(rel))),
    text: (rel) => readFile(at(rel), 'utf8'),
    label: at,
  };
}

/** Reads a judge folder: the two ONNX towers (in it or its onnx/ subfolder), preprocessor_config.json, the tokenizer. */
export async function readJudgeFolder(dir: string, kind: JudgeKind): Promise<JudgeFiles> {
  if (!existsSync(dir)) throw new Error(`${dir}: no such folder (expected a CLIP ONNX export: ${EXPORT_HINT})`);
  if (!statSync(dir).isDirectory()) throw new Error(`${dir}: not a folder (expected a CLIP ONNX export: ${EXPORT_HINT})`);
  return readJudgeFiles(judgeSourceFromDir(dir), kind);
}

/** Loads a judge folder into a ready judge (sessions created, inputs and outputs checked). */
export async function loadJudgeFolder(dir: string, kind: JudgeKind, options?: JudgeOptions): Promise<ClipJudge> {
  return ClipJudge.create(await readJudgeFolder(dir, kind), options);
}
