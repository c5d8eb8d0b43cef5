// Node-only: a judge's files from a folder (the CLI's --clip / --reward DIR). Every refusal names the
// folder or file and what was expected there.

import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ClipJudge, type JudgeFiles, type JudgeKind, type JudgeOptions } from './clip-judge';
import { parseClipImageConfig } from './preprocess';
import { tokenizerFilesFromJson } from './tokenizer-json';

const EXPORT_HINT = 'a CLIP ONNX export such as Xenova/clip-vit-base-patch32 on Hugging Face has onnx/text_model.onnx, onnx/vision_model.onnx, preprocessor_config.json and the tokenizer files';

/** The first of `names` that exists under one of `dirs`. */
function findFile(dirs: readonly string[], name: string): string | null {
  for (const d of dirs) {
    const p = path.join(d, name);
    if (existsSync(p) && statSync(p).isFile()) return p;
  }
  return null;
}

/** Reads a judge folder: the two ONNX towers (in it or its onnx/ subfolder), preprocessor_config.json, the tokenizer. */
export async function readJudgeFolder(dir: string, kind: JudgeKind): Promise<JudgeFiles> {
  if (!existsSync(dir)) throw new Error(`${dir}: no such folder (expected a CLIP ONNX export: ${EXPORT_HINT})`);
  if (!statSync(dir).isDirectory()) throw new Error(`${dir}: not a folder (expected a CLIP ONNX export: ${EXPORT_HINT})`);
  const dirs = [dir, path.join(dir, 'onnx'), path.join(dir, 'tokenizer')];
  const onnxDirs = dirs.slice(0, 2);
  const towers = ['text_model.onnx', 'vision_model.onnx'].map((name) => {
    const p = findFile(onnxDirs, name);
    if (!p) {
      const combined = findFile(onnxDirs, 'model.onnx') ? ' (model.onnx, one file with both towers, is not read: export the towers apart)' : '';
      throw new Error(`${dir}: no ${name} (looked in ${dir} and ${path.join(dir, 'onnx')})${combined}; ${EXPORT_HINT}`);
    }
    return p;
  });
  const configPath = findFile(dirs.slice(0, 2), 'preprocessor_config.json');
  if (!configPath) throw new Error(`${dir}: no preprocessor_config.json (the image size, crop, mean and std); ${EXPORT_HINT}`);
  const image = parseClipImageConfig(await readFile(configPath, 'utf8'), configPath);

  const vocab = findFile(dirs, 'vocab.json');
  const merges = vocab ? findFile([path.dirname(vocab)], 'merges.txt') : null;
  const tokJson = findFile(dirs, 'tokenizer.json');
  let tokenizer;
  if (vocab && merges) tokenizer = { vocab: await readFile(vocab, 'utf8'), merges: await readFile(merges, 'utf8') };
  else if (tokJson) tokenizer = tokenizerFilesFromJson(await readFile(tokJson, 'utf8'), tokJson);
  else throw new Error(`${dir}: no tokenizer (expected vocab.json and merges.txt, or tokenizer.json); ${EXPORT_HINT}`);

  let logitScale: number | undefined;
  if (kind === 'reward') {
    const rewardPath = findFile(dirs.slice(0, 2), 'reward.json');
    if (!rewardPath) throw new Error(`${dir}: no reward.json; a reward model's folder needs {"logit_scale": number} (the checkpoint's logit_scale, before exp)`);
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(rewardPath, 'utf8'));
    } catch (e) {
      throw new Error(`${rewardPath}: not valid JSON (${(e as Error).message})`);
    }
    const v = (raw as { logit_scale?: unknown } | null)?.logit_scale;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${rewardPath}: "logit_scale" must be a number, got ${JSON.stringify(v)}`);
    logitScale = v;
  }

  const [textBytes, visionBytes] = await Promise.all(towers.map(async (p) => new Uint8Array(await readFile(p))));
  return {
    kind,
    textModel: { bytes: textBytes, name: towers[0] },
    visionModel: { bytes: visionBytes, name: towers[1] },
    image,
    imageConfigName: configPath,
    tokenizer,
    logitScale,
  };
}

/** Loads a judge folder into a ready judge (sessions created, inputs and outputs checked). */
export async function loadJudgeFolder(dir: string, kind: JudgeKind, options?: JudgeOptions): Promise<ClipJudge> {
  return ClipJudge.create(await readJudgeFolder(dir, kind), options);
}
