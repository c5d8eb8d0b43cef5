// Finding and reading a judge's files in a folder, on any platform: the folder comes as a JudgeSource
// (a folder on disk in Node, clip-judge-node.ts; the files of a folder the user picked in the browser,
// judgeSourceFromFiles below). Every refusal names the folder or file and what was expected there.

import type { JudgeFiles, JudgeKind } from './clip-judge';
import { parseClipImageConfig } from './preprocess';
import { tokenizerFilesFromJson } from './tokenizer-json';

/** A folder's files by relative path ('onnx/text_model.onnx'). */
export interface JudgeSource {
  /** The folder's name for messages. */
  name: string;
  has(rel: string): boolean;
  bytes(rel: string): Promise<Uint8Array>;
  text(rel: string): Promise<string>;
  /** A file's name for messages (its path on disk, or folder/rel). */
  label(rel: string): string;
}

export const EXPORT_HINT =
  'a CLIP ONNX export such as Xenova/clip-vit-base-patch32 on Hugging Face has onnx/text_model.onnx, onnx/vision_model.onnx, preprocessor_config.json and the tokenizer files';

/** The first of `folder + name` for the folders given that exists. */
function find(source: JudgeSource, folders: readonly string[], name: string): string | null {
  for (const f of folders) {
    const rel = f ? `${f}/${name}` : name;
    if (source.has(rel)) return rel;
  }
  return null;
}

/** Reads a judge folder: the two ONNX towers (in it or its onnx/ subfolder), preprocessor_config.json, the tokenizer. */
export async function readJudgeFiles(source: JudgeSource, kind: JudgeKind): Promise<JudgeFiles> {
  const onnxFolders = ['', 'onnx'];
  const towers = ['text_model.onnx', 'vision_model.onnx'].map((name) => {
    const rel = find(source, onnxFolders, name);
    if (!rel) {
      const combined = find(source, onnxFolders, 'model.onnx') ? ' (model.onnx, one file with both towers, is not read: export the towers apart)' : '';
      throw new Error(`${source.name}: no ${name} (looked in ${source.name} and ${source.label('onnx')})${combined}; ${EXPORT_HINT}`);
    }
    return rel;
  });
  const configRel = find(source, onnxFolders, 'preprocessor_config.json');
  if (!configRel) throw new Error(`${source.name}: no preprocessor_config.json (the image size, crop, mean and std); ${EXPORT_HINT}`);
  const image = parseClipImageConfig(await source.text(configRel), source.label(configRel));

  const tokenizerFolders = ['', 'onnx', 'tokenizer'];
  const vocab = tokenizerFolders.map((f) => (f ? `${f}/` : '')).find((p) => source.has(`${p}vocab.json`) && source.has(`${p}merges.txt`));
  const tokJson = find(source, tokenizerFolders, 'tokenizer.json');
  let tokenizer;
  if (vocab !== undefined) tokenizer = { vocab: await source.text(`${vocab}vocab.json`), merges: await source.text(`${vocab}merges.txt`) };
  else if (tokJson) tokenizer = tokenizerFilesFromJson(await source.text(tokJson), source.label(tokJson));
  else throw new Error(`${source.name}: no tokenizer (expected vocab.json and merges.txt, or tokenizer.json); ${EXPORT_HINT}`);

  let logitScale: number | undefined;
  if (kind === 'reward') {
    const rewardRel = find(source, onnxFolders, 'reward.json');
    if (!rewardRel) throw new Error(`${source.name}: no reward.json; a reward model's folder needs {"logit_scale": number} (the checkpoint's logit_scale, before exp)`);
    let raw: unknown;
    try {
      raw = JSON.parse(await source.text(rewardRel));
    } catch (e) {
      throw new Error(`${source.label(rewardRel)}: not valid JSON (${(e as Error).message})`);
    }
    const v = (raw as { logit_scale?: unknown } | null)?.logit_scale;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${source.label(rewardRel)}: "logit_scale" must be a number, got ${JSON.stringify(v)}`);
    logitScale = v;
  }

  const [textBytes, visionBytes] = await Promise.all(towers.map((rel) => source.bytes(rel)));
  return {
    kind,
    textModel: { bytes: textBytes, name: source.label(towers[0]) },
    visionModel: { bytes: visionBytes, name: source.label(towers[1]) },
    image,
    imageConfigName: source.label(configRel),
    tokenizer,
    logitScale,
  };
}

/**
 * The files of a folder the user picked in the browser (<input type="file" webkitdirectory>: each File's
 * webkitRelativePath starts with the folder's name). Paths are taken relative to that folder.
 */
export function judgeSourceFromFiles(files: readonly File[]): JudgeSource {
  const byRel = new Map<string, File>();
  let name = 'the picked folder';
  for (const f of files) {
    const full = (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name;
    const slash = full.indexOf('/');
    if (slash > 0) name = full.slice(0, slash);
    byRel.set(slash > 0 ? full.slice(slash + 1) : full, f);
  }
  const get = (rel: string) => {
    const f = byRel.get(rel);
    if (!f) throw new Error(`${name}/${rel}: no such file`);
    return f;
  };
  return {
    name,
    has: (rel) => byRel.has(rel),
    bytes: async (rel) => new Uint8Array(await get(rel).arrayBuffer()),
    text: (rel) => get(rel).text(),
    label: (rel) => `${name}/${rel}`,
  };
}
