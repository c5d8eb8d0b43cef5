// The training methods, by the names the CLI, the app, checkpoints and the memory plan all use: TDPO and TKTO
// (the text preference methods), SFT (the denoising loss alone), and the image preference baselines
// Diffusion-DPO and Diffusion-KTO as dpo and kto. Dependency-free, so the plan can name them without loading
// the loss kernels.

export const LOSS_METHODS = ['tdpo', 'tkto', 'sft', 'dpo', 'kto'] as const;
export type LossMethod = (typeof LOSS_METHODS)[number];
