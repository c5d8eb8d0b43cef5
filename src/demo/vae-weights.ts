// The demo's AutoencoderKL, constructed rather than trained: every weight is set by the rules below, so the
// encoder averages each f x f patch of the image into the latent's first three channels (red, green, blue
// in [-1, 1]) and the decoder paints each latent pixel back as an f x f block (softened by one blur at full
// size). It is an exact, known VAE of the shapes world's flat colours, built in milliseconds.
//
// Why not trained: the VaeTrainer (src/tpo/vae-trainer.ts) trains this architecture, but on SwiftShader the
// demo's VAE stayed at the mean image for every setting tried within the build's CPU budget (README,
// "The demo model"). The reason is structural: the last GroupNorm before each conv_out removes every
// per-image mean and scale, and a flat-coloured image is almost all mean, so its colour reaches conv_out
// only through patterns the network has to learn first. The construction keeps the colour through those
// norms on purpose:
//
//   - activations carry each colour twice, as +c and -c, so every group's mean is exactly zero, and a
//     pair of constant channels +L and -L (L = LARGE) so every group's variance is L^2 * 2 / C, give or
//     take the colours' share (under 1e-4 of it): the norm becomes a known scale, undone by its weight;
//   - the norm's shift moves every value to SHIFT, where SiLU is a straight line to 1e-4, and conv_out
//     reads (SiLU(SHIFT + c) - SiLU(SHIFT - c)) / (2 SiLU'(SHIFT)), which cancels SiLU's even part: c
//     again, to about 1e-6;
//   - every resnet and the mid-block attention add zero (their last conv or projection is zero), so they
//     pass their input through; Downsample2D averages each 2 x 2 (its 3 x 3 kernel's top-left 2 x 2 taps,
//     1/4 each, never the padded row); Upsample2D copies (nearest 2x, centre tap 1), and the last one
//     blurs with [1 2 1] x [1 2 1] / 16, which greys the image's outermost pixel ring a little.
//
// The latent's fourth channel is zero, and the posterior's log-variance is LOGVAR everywhere (a deterministic
// encoder; sampling adds noise of std e^(LOGVAR/2)). Platform-free.

import { paramsOf } from '../nn/layers/layer';
import { type VaeConfig, VaeLayers } from '../models/vae';

/** The constant pair's value: it sets each norm's variance, so the colours barely move it. */
const LARGE = 100;
/** Where every value sits when it enters SiLU: SiLU(x) = x * sigmoid(x) is x to within 5e-4 there. */
const SHIFT = 10;
/** The posterior's log-variance: std e^-10, about 5e-5. */
const LOGVAR = -20;

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
/** SiLU'(x) = sigmoid(x) (1 + x (1 - sigmoid(x))). */
const siluSlope = (x: number) => sigmoid(x) * (1 + x * (1 - sigmoid(x)));

/** Activation channels: red, green, blue, their negatives, +LARGE, -LARGE; any more channels stay zero. */
const COLOUR = [0, 1, 2];
const NEGATIVE = [3, 4, 5];
const PLUS = 6;
const MINUS = 7;

/** The architectures this construction covers: equal channels (at least 8), one norm group, 3 latent colours. */
export function checkConstructibleVae(config: VaeConfig): void {
  const c = config.block_out_channels;
  if (c.some((x) => x !== c[0]) || c[0] < 8) throw new Error(`constructed VAE: every block needs the same number of channels, at least 8 (got ${c.join(', ')})`);
  if (config.norm_num_groups !== 1) throw new Error(`constructed VAE: norm_num_groups must be 1 (got ${config.norm_num_groups})`);
  if (config.in_channels !== 3 || config.out_channels !== 3 || config.latent_channels < 3) {
    throw new Error('constructed VAE: 3 image channels and at least 3 latent channels');
  }
}

/** Every weight of the constructed AutoencoderKL, by its diffusers name (float32, shapes as vaeParamShapes). */
export function constructedVaeWeights(config: VaeConfig): Map<string, Float32Array> {
  checkConstructibleVae(config);
  const layers = new VaeLayers(config);
  const shapes = paramsOf(layers);
  const { encoder, decoder } = layers;
  const weights = new Map<string, Float32Array>();
  for (const [name, shape] of shapes) weights.set(name, new Float32Array(shape.reduce((a, b) => a * b, 1)));
  const channels = config.block_out_channels[0];
  const latent = config.latent_channels;

  const get = (name: string) => {
    const w = weights.get(name);
    if (!w) throw new Error(`constructed VAE: no tensor ${name}`);
    return w;
  };
  /** Sets tap (ky, kx) of conv `name`'s kernel from input channel i to output channel o. */
  const tap = (name: string, o: number, i: number, ky: number, kx: number, value: number) => {
    const [, inC, k] = shapes.get(`${name}.weight`)!;
    get(`${name}.weight`)[((o * inC + i) * k + ky) * k + kx] = value;
  };
  const centre = (name: string) => (shapes.get(`${name}.weight`)![2] - 1) / 2;

  // Norm weights: every norm scales by 1 by default (the resnets' and the attention's, whose branches add zero).
  for (const [name] of shapes) if (/norm[^.]*\.weight$/.test(name)) get(name).fill(1);

  // Spread colours into the paired layout, with the constant pair from the bias.
  const spread = (name: string) => {
    const k = centre(name);
    for (const c of COLOUR) {
      tap(name, COLOUR[c], c, k, k, 1);
      tap(name, NEGATIVE[c], c, k, k, -1);
    }
    get(`${name}.bias`)[PLUS] = LARGE;
    get(`${name}.bias`)[MINUS] = -LARGE;
  };
  // The last norm: a known scale (the variance the constant pair sets, with colours of mean square 0.5 each),
  // undone by its weight; the shift puts every value where SiLU is straight.
  const lastNorm = (name: string) => {
    const sigma = Math.sqrt((2 * 3 * 0.5 + 2 * LARGE * LARGE) / channels);
    get(`${name}.weight`).fill(sigma);
    get(`${name}.bias`).fill(SHIFT);
  };
  // Reads each colour back from the SiLU outputs of its pair into the output channel of its index, SiLU's even part cancelled.
  const gather = (name: string) => {
    const k = centre(name);
    const w = 1 / (2 * siluSlope(SHIFT));
    for (const c of COLOUR) {
      tap(name, c, COLOUR[c], k, k, w);
      tap(name, c, NEGATIVE[c], k, k, -w);
    }
  };
  const identity = (name: string) => {
    const k = centre(name);
    for (let c = 0; c < shapes.get(`${name}.weight`)![0]; c++) tap(name, c, c, k, k, 1);
  };

  const last = config.block_out_channels.length - 1;

  // Encoder: conv_in spreads the pixel's colour; each downsampler averages 2 x 2; conv_out gathers the mean.
  spread(encoder.conv_in.path);
  for (let i = 0; i < last; i++) {
    const name = encoder.down_blocks[i].sampler!.path;
    for (let c = 0; c < channels; c++) for (const [ky, kx] of [[0, 0], [0, 1], [1, 0], [1, 1]]) tap(name, c, c, ky, kx, 0.25);
  }
  lastNorm(encoder.conv_norm_out.path);
  gather(encoder.conv_out.path);
  get(`${encoder.conv_out.path}.bias`).fill(LOGVAR, latent);
  if (layers.quant_conv) identity(layers.quant_conv.path);
  if (layers.post_quant_conv) identity(layers.post_quant_conv.path);

  // Decoder: conv_in spreads the latent's colour; upsamplers copy, the last one blurs; conv_out gathers.
  spread(decoder.conv_in.path);
  for (let i = 0; i < last; i++) {
    const name = decoder.up_blocks[i].sampler!.path;
    if (i < last - 1) {
      identity(name);
      continue;
    }
    const blur = [1, 2, 1];
    for (let c = 0; c < channels; c++) for (let ky = 0; ky < 3; ky++) for (let kx = 0; kx < 3; kx++) tap(name, c, c, ky, kx, (blur[ky] * blur[kx]) / 16);
  }
  lastNorm(decoder.conv_norm_out.path);
  gather(decoder.conv_out.path);
  return weights;
}
