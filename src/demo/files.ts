// The files of the demo model folder (public/demo/, written by `npm run build:demo`), as the app fetches
// them from where it is served: a web server lists no folders, so the names are fixed here, once, for the
// build that writes them and the page that reads them.

export const DEMO_MODEL_FILES = [
  'model_index.json',
  'scheduler/scheduler_config.json',
  'tokenizer/vocab.json',
  'tokenizer/merges.txt',
  'tokenizer/tokenizer_config.json',
  'tokenizer/special_tokens_map.json',
  'text_encoder/config.json',
  'text_encoder/model.safetensors',
  'vae/config.json',
  'vae/diffusion_pytorch_model.safetensors',
  'unet/config.json',
  'unet/diffusion_pytorch_model.safetensors',
  'README.md',
] as const;

/** The demo model's name in the app and the CLI (`--model demo`). */
export const DEMO_MODEL_NAME = 'demo';

/** The demo data set: its name in the lab, its size, and the shapes world's seed (the demo model's). */
export const DEMO_DATASET_NAME = 'Shapes (demo)';
export const DEMO_DATASET_SIZE = 48;
export const DEMO_DATASET_SEED = 0;
