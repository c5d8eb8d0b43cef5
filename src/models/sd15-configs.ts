// Stable Diffusion v1.5's three networks, as the config.json files of its diffusers folder describe them
// (runwayml/stable-diffusion-v1-5: unet/, text_encoder/, vae/). A single-file checkpoint carries weights only,
// so these are what its tensors are read against; the memory plan uses them when no config is at hand.
// Plain data: no GPU, no Node APIs.

import type { ClipTextConfig } from './clip-text';
import type { UNetConfig } from './unet';
import type { VaeConfig } from './vae';

/** unet/config.json of SD1.5: 859,520,964 parameters. */
export const SD15_UNET_CONFIG: UNetConfig = {
  in_channels: 4,
  out_channels: 4,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 768,
  // The number of heads in SD1.x configs (see UNetConfig): 8 heads of width 40, 80, 160, 160.
  attention_head_dim: 8,
  use_linear_projection: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  mid_block_scale_factor: 1,
  downsample_padding: 1,
  act_fn: 'silu',
  sample_size: 64,
};

/** text_encoder/config.json of SD1.5: OpenAI's CLIP ViT-L/14 text tower, 123,060,480 parameters. */
export const SD15_TEXT_ENCODER_CONFIG: ClipTextConfig = {
  hidden_size: 768,
  intermediate_size: 3072,
  num_attention_heads: 12,
  num_hidden_layers: 12,
  max_position_embeddings: 77,
  vocab_size: 49408,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
};

/** vae/config.json of SD1.5: AutoencoderKL with 8x downsampling, 83,653,863 parameters. */
export const SD15_VAE_CONFIG: VaeConfig = {
  in_channels: 3,
  out_channels: 3,
  block_out_channels: [128, 256, 512, 512],
  layers_per_block: 2,
  norm_num_groups: 32,
  latent_channels: 4,
  mid_block_add_attention: true,
  use_quant_conv: true,
  use_post_quant_conv: true,
  scaling_factor: 0.18215,
};

/**
 * scheduler/scheduler_config.json of SD1.5, as its folder ships it (the PNDM scheduler; the app's samplers
 * read only the schedule: 1000 steps, scaled_linear betas from 0.00085 to 0.012, steps_offset 1). No
 * timestep_spacing, as in the original: each sampler then spaces its steps as diffusers does by default.
 */
export const SD15_SCHEDULER_FILE = {
  _class_name: 'PNDMScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
};

/** model_index.json of SD1.5's diffusers folder (without the safety checker and feature extractor). */
export const SD15_MODEL_INDEX = {
  _class_name: 'StableDiffusionPipeline',
  requires_safety_checker: false,
  scheduler: ['diffusers', 'PNDMScheduler'],
  text_encoder: ['transformers', 'CLIPTextModel'],
  tokenizer: ['transformers', 'CLIPTokenizer'],
  unet: ['diffusers', 'UNet2DConditionModel'],
  vae: ['diffusers', 'AutoencoderKL'],
};
