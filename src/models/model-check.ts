// Checking a diffusers model folder for training before any GPU work: every config is read and bounded,
// the three configs agree with each other, each weight file's safetensors header names every tensor its
// config implies with the right shape, and the training resolution fits the model. Only headers are
// read, so this takes milliseconds; the CLI runs it before opening the GPU and the browser app can run it
// when a folder is dropped. Platform-free: it reads through ModelFiles. A single-file checkpoint gets the
// same checks, its tensors read against a configs folder.

import { clipTextConfig, clipTextParamShapes, type ClipTextConfig } from './clip-text';
import { CLIP_MAX_LENGTH } from './tokenizer';
import { checkModelResolution, unetParamShapes, type UNetConfig, validateUNetConfig } from './unet';
import { vaeConfig, vaeParamShapes, type VaeConfig } from './vae';
import { ldmLayoutFromConfigs } from './model-weights';
import type { SafetensorsFile } from './safetensors';
import { checkFolderComponent, checkSingleFileComponent, ModelLoadError, type ModelFiles, readConfig } from './weights';

export interface CheckedModel {
  unet: UNetConfig;
  vae: VaeConfig;
  text: ClipTextConfig;
}

/** Throws a ModelLoadError naming the file and the problem; `resolution` is checked when given. */
export async function checkModelForTraining(files: ModelFiles, options: { resolution?: number } = {}): Promise<CheckedModel> {
  const { unet, vae, text } = await checkModelConfigs(files, options);
  await checkFolderComponent(files, 'unet', unetParamShapes(unet));
  await checkFolderComponent(files, 'vae', vaeParamShapes(vae));
  await checkFolderComponent(files, 'text_encoder', clipTextParamShapes(text));
  return { unet, vae, text };
}

/**
 * The same checks for a single-file (LDM keys) checkpoint read against `configs`, a folder that holds the
 * configs only (the SD1.5 ones the app ships, or a diffusers folder's): headers only, no weight is read.
 */
export async function checkSingleFileForTraining(file: SafetensorsFile, configs: ModelFiles, options: { resolution?: number } = {}): Promise<CheckedModel> {
  const { unet, vae, text } = await checkModelConfigs(configs, options);
  const layout = await ldmLayoutFromConfigs(configs);
  checkSingleFileComponent(file, 'unet', unetParamShapes(unet), layout);
  checkSingleFileComponent(file, 'vae', vaeParamShapes(vae), layout);
  checkSingleFileComponent(file, 'text_encoder', clipTextParamShapes(text), layout);
  return { unet, vae, text };
}

/** The configs part of the check: each read and bounded, and agreeing with each other. */
export async function checkModelConfigs(files: ModelFiles, options: { resolution?: number } = {}): Promise<CheckedModel> {
  const unet = await readConfig<UNetConfig>(files, 'unet');
  try {
    validateUNetConfig(unet);
  } catch (e) {
    throw new ModelLoadError(`${files.name}/${(e as Error).message}`);
  }
  const vae = vaeConfig(await readConfig(files, 'vae'), `${files.name}/vae/config.json`);
  const text = clipTextConfig(await readConfig(files, 'text_encoder'), `${files.name}/text_encoder/config.json`);
  // The networks are fed into each other: their widths must agree.
  if (vae.latent_channels !== unet.in_channels || vae.latent_channels !== unet.out_channels) {
    throw new ModelLoadError(`${files.name}: vae/config.json latent_channels ${vae.latent_channels} differs from unet/config.json in_channels ${unet.in_channels} / out_channels ${unet.out_channels}`);
  }
  if (text.hidden_size !== unet.cross_attention_dim) {
    throw new ModelLoadError(`${files.name}: text_encoder/config.json hidden_size ${text.hidden_size} differs from unet/config.json cross_attention_dim ${unet.cross_attention_dim}`);
  }
  if (text.max_position_embeddings < CLIP_MAX_LENGTH) {
    throw new ModelLoadError(`${files.name}/text_encoder/config.json: max_position_embeddings ${text.max_position_embeddings} is below the ${CLIP_MAX_LENGTH} tokens the tokenizer gives`);
  }
  if (options.resolution !== undefined) {
    try {
      checkModelResolution(options.resolution, unet, vae.block_out_channels.length);
    } catch (e) {
      throw new ModelLoadError(`${(e as Error).message} (${files.name})`);
    }
  }
  return { unet, vae, text };
}
