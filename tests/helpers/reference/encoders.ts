// Float64 references for the CLIP text encoder and the VAE, written from the definitions (transformers'
// CLIPTextModel, diffusers' AutoencoderKL) with the kernel references, for configs the goldens do not
// cover (other widths, one layer per block, non-square images, batch 3).

import type { ClipTextConfig } from '../../../src/models/clip-text';
import type { VaeConfig } from '../../../src/models/vae';
import { attention } from './attention';
import { conv2d } from './conv2d';
import { activations, map, upsampleNearest2x, type F64 } from './elementwise';
import { embedding, softmax, transpose } from './embedding';
import { linear, matmul } from './matmul';
import { groupNorm, layerNorm } from './norm';

export type Weights = Map<string, F64>;

const addInto = (a: F64, b: F64) => a.map((v, i) => v + b[i % b.length]);

export function clipText(w: Weights, c: ClipTextConfig, ids: number[][]): F64 {
  const batch = ids.length;
  const n = ids[0].length;
  const d = c.hidden_size;
  const g = (k: string) => w.get(k)!;
  const tokens = embedding(g('text_model.embeddings.token_embedding.weight'), ids.flat(), d);
  let x = addInto(tokens, g('text_model.embeddings.position_embedding.weight').subarray(0, n * d));
  const ln = (v: F64, name: string) => layerNorm(v, g(`${name}.weight`), g(`${name}.bias`), d, c.layer_norm_eps);
  const lin = (v: F64, name: string) => {
    const wt = g(`${name}.weight`);
    const out = g(`${name}.bias`).length;
    return linear(v, wt, g(`${name}.bias`), wt.length / out, out);
  };
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `text_model.encoder.layers.${i}`;
    const h = ln(x, `${p}.layer_norm1`);
    const [q, k, v] = ['q_proj', 'k_proj', 'v_proj'].map((m) => lin(h, `${p}.self_attn.${m}`));
    const heads = c.num_attention_heads;
    const att = attention(q, k, v, { batch, nq: n, nk: n, heads, headDim: d / heads, causal: true }).out;
    x = addInto(x, lin(att, `${p}.self_attn.out_proj`));
    const f = map(lin(ln(x, `${p}.layer_norm2`), `${p}.mlp.fc1`), activations[c.hidden_act]);
    x = addInto(x, lin(f, `${p}.mlp.fc2`));
  }
  return ln(x, 'text_model.final_layer_norm');
}

/** A feature map with its shape. */
interface Map4 {
  v: F64;
  n: number;
  c: number;
  h: number;
  w: number;
}

export function vae(w: Weights, cfg: VaeConfig) {
  const g = (k: string) => w.get(k)!;
  const eps = 1e-6;
  const conv = (x: Map4, name: string, stride = 1, pad?: [number, number, number, number]): Map4 => {
    const wt = g(`${name}.weight`);
    const bias = g(`${name}.bias`);
    const cOut = bias.length;
    const k = Math.round(Math.sqrt(wt.length / (cOut * x.c)));
    const p = pad ?? ([(k - 1) / 2, (k - 1) / 2, (k - 1) / 2, (k - 1) / 2] as [number, number, number, number]);
    const d = { n: x.n, cIn: x.c, h: x.h, w: x.w, cOut, kh: k, kw: k, stride, pad: p };
    const ho = Math.floor((x.h + p[0] + p[2] - k) / stride) + 1;
    const wo = Math.floor((x.w + p[1] + p[3] - k) / stride) + 1;
    return { v: conv2d(x.v, wt, bias, d), n: x.n, c: cOut, h: ho, w: wo };
  };
  const norm = (x: Map4, name: string, silu: boolean): Map4 => {
    const y = groupNorm(x.v, g(`${name}.weight`), g(`${name}.bias`), x.n, x.c, x.h * x.w, cfg.norm_num_groups, eps);
    return { ...x, v: silu ? map(y, activations.silu) : y };
  };
  const resnet = (x: Map4, name: string): Map4 => {
    const h = conv(norm(conv(norm(x, `${name}.norm1`, true), `${name}.conv1`), `${name}.norm2`, true), `${name}.conv2`);
    const s = w.has(`${name}.conv_shortcut.weight`) ? conv(x, `${name}.conv_shortcut`) : x;
    return { ...h, v: h.v.map((v, i) => v + s.v[i]) };
  };
  const attn = (x: Map4, name: string): Map4 => {
    const hw = x.h * x.w;
    const t = transpose(norm(x, `${name}.group_norm`, false).v, x.n, x.c, hw);
    const lin = (v: F64, p: string) => linear(v, g(`${name}.${p}.weight`), g(`${name}.${p}.bias`), x.c, x.c);
    const [q, k, v] = ['to_q', 'to_k', 'to_v'].map((p) => lin(t, p));
    const s = matmul(q, k, { m: hw, n: hw, k: x.c, batchA: x.n, batchB: x.n, transB: true }, { alpha: 1 / Math.sqrt(x.c) });
    const o = matmul(softmax(s, hw), v, { m: hw, n: x.c, k: hw, batchA: x.n, batchB: x.n });
    const back = transpose(lin(o, 'to_out.0'), x.n, hw, x.c);
    return { ...x, v: back.map((val, i) => val + x.v[i]) };
  };
  const mid = (x: Map4, name: string) => {
    let h = resnet(x, `${name}.resnets.0`);
    if (cfg.mid_block_add_attention) h = attn(h, `${name}.attentions.0`);
    return resnet(h, `${name}.resnets.1`);
  };
  const blocks = cfg.block_out_channels.length;
  return {
    encode(x: Map4): Map4 {
      let h = conv(x, 'encoder.conv_in');
      for (let i = 0; i < blocks; i++) {
        for (let j = 0; j < cfg.layers_per_block; j++) h = resnet(h, `encoder.down_blocks.${i}.resnets.${j}`);
        if (i < blocks - 1) h = conv(h, `encoder.down_blocks.${i}.downsamplers.0.conv`, 2, [0, 0, 1, 1]);
      }
      h = conv(norm(mid(h, 'encoder.mid_block'), 'encoder.conv_norm_out', true), 'encoder.conv_out');
      return conv(h, 'quant_conv');
    },
    decode(z: Map4): Map4 {
      let h = mid(conv(conv(z, 'post_quant_conv'), 'decoder.conv_in'), 'decoder.mid_block');
      for (let i = 0; i < blocks; i++) {
        for (let j = 0; j <= cfg.layers_per_block; j++) h = resnet(h, `decoder.up_blocks.${i}.resnets.${j}`);
        if (i < blocks - 1) {
          const up = { v: upsampleNearest2x(h.v, h.n * h.c, h.h, h.w), n: h.n, c: h.c, h: 2 * h.h, w: 2 * h.w };
          h = conv(up, `decoder.up_blocks.${i}.upsamplers.0.conv`);
        }
      }
      return conv(norm(h, 'decoder.conv_norm_out', true), 'decoder.conv_out');
    },
  };
}
