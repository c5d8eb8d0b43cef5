// The differentiable ops models are written with: each runs its forward kernel and, when the context has a
// tape and an input needs a gradient, records how to get the inputs' gradients from the output's. Only the
// gradients an input needs are computed (frozen weights and the data need none).

import * as A from './ops/attention';
import * as C from './ops/conv2d';
import * as E from './ops/elementwise';
import * as L from './ops/layout';
import * as M from './ops/matmul';
import * as N from './ops/norm';
import * as S from './ops/softmax';
import type { Ctx } from './tape';
import type { Tensor } from './tensor';

export function linear(ctx: Ctx, x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  const y = M.linear(x, weight, bias);
  ctx.tape?.record(bias ? [x, weight, bias] : [x, weight], y, (dy) => {
    const g = M.linearBackward(x, weight, dy, { input: x.requiresGrad, weight: weight.requiresGrad, bias: bias?.requiresGrad });
    return [g.dx, g.dweight, g.dbias];
  });
  return y;
}

export function matmul(ctx: Ctx, a: Tensor, b: Tensor, opts: { transA?: boolean; transB?: boolean; alpha?: number } = {}): Tensor {
  const y = M.matmul(a, b, opts);
  ctx.tape?.record([a, b], y, (dy) => {
    const g = M.matmulBackward(a, b, dy, opts, { a: a.requiresGrad, b: b.requiresGrad });
    return [g.da, g.db];
  });
  return y;
}

export function conv2d(ctx: Ctx, x: Tensor, weight: Tensor, bias: Tensor | undefined, opts: C.Conv2dOptions = {}): Tensor {
  const y = C.conv2d(x, weight, bias, opts);
  ctx.tape?.record(bias ? [x, weight, bias] : [x, weight], y, (dy) => {
    const g = C.conv2dBackward(x, weight, dy, opts, { input: x.requiresGrad, weight: weight.requiresGrad, bias: bias?.requiresGrad });
    return [g.dx, g.dweight, g.dbias];
  });
  return y;
}

function norm(ctx: Ctx, x: Tensor, gamma: Tensor, beta: Tensor, run: () => { y: Tensor; saved: N.NormSaved }): Tensor {
  const { y, saved } = run();
  if (ctx.tape && [x, gamma, beta].some((t) => t.requiresGrad)) {
    ctx.tape.hold(saved.stats);
    ctx.tape.record([x, gamma, beta], y, (dy) => {
      const g = N.normBackward(saved, gamma, dy, { input: x.requiresGrad, affine: gamma.requiresGrad || beta.requiresGrad });
      return [g.dx, g.dgamma, g.dbeta];
    });
  } else {
    saved.stats.release();
  }
  return y;
}

export function groupNorm(ctx: Ctx, x: Tensor, gamma: Tensor, beta: Tensor, groups: number, eps: number): Tensor {
  return norm(ctx, x, gamma, beta, () => N.groupNorm(x, gamma, beta, groups, eps));
}

export function layerNorm(ctx: Ctx, x: Tensor, gamma: Tensor, beta: Tensor, eps: number): Tensor {
  return norm(ctx, x, gamma, beta, () => N.layerNorm(x, gamma, beta, eps));
}

export function activation(ctx: Ctx, x: Tensor, fn: E.Activation): Tensor {
  const y = E.activation(x, fn);
  ctx.tape?.record([x], y, (dy) => [E.activationBackward(x, dy, fn)]);
  return y;
}

export function geglu(ctx: Ctx, x: Tensor): Tensor {
  const y = E.geglu(x);
  ctx.tape?.record([x], y, (dy) => [E.gegluBackward(x, dy)]);
  return y;
}

/** a + b, b broadcast (see elementwise.broadcastOf; `axis` is the last dim of a that b spans). */
export function add(ctx: Ctx, a: Tensor, b: Tensor, axis?: number): Tensor {
  const y = E.add(a, b, axis);
  ctx.tape?.record([a, b], y, (dy) => {
    if (!b.requiresGrad) return [dy, undefined];
    const g = E.addBackward(dy, b.shape, axis);
    return [g.da, g.db];
  });
  return y;
}

export function scale(ctx: Ctx, x: Tensor, alpha: number): Tensor {
  const y = E.scale(x, alpha);
  ctx.tape?.record([x], y, (dy) => [E.scale(dy, alpha)]);
  return y;
}

export function concatChannels(ctx: Ctx, a: Tensor, b: Tensor): Tensor {
  const y = E.concatChannels(a, b);
  ctx.tape?.record([a, b], y, (dy) => {
    const g = E.concatChannelsBackward(dy, a.shape[1]);
    return [g.da, g.db];
  });
  return y;
}

export function upsampleNearest2x(ctx: Ctx, x: Tensor): Tensor {
  const y = E.upsampleNearest2x(x);
  ctx.tape?.record([x], y, (dy) => [E.upsampleNearest2xBackward(dy)]);
  return y;
}

/**
 * Nearest upsampling to [outH, outW]: twice the size is upsampleNearest2x (differentiable); other sizes
 * (a UNet's odd skip sizes when sampling) run forward only, as training sizes always divide evenly.
 */
export function upsampleNearest(ctx: Ctx, x: Tensor, outH: number, outW: number): Tensor {
  if (outH === 2 * x.shape[2] && outW === 2 * x.shape[3]) return upsampleNearest2x(ctx, x);
  if (ctx.tape && x.requiresGrad) throw new Error(`upsampleNearest: no backward from ${x.shape[2]}x${x.shape[3]} to ${outH}x${outW}; train at a size the UNet halves evenly`);
  return E.upsampleNearest(x, outH, outW);
}

export function attention(ctx: Ctx, q: Tensor, k: Tensor, v: Tensor, opts: A.AttentionOptions): Tensor {
  const { out, logsumexp } = A.attention(q, k, v, opts);
  if (ctx.tape && [q, k, v].some((t) => t.requiresGrad)) {
    ctx.tape.hold(logsumexp);
    ctx.tape.record([q, k, v], out, (dOut) => {
      const g = A.attentionBackward(q, k, v, out, logsumexp, dOut, opts);
      return [g.dq, g.dk, g.dv];
    });
  } else {
    logsumexp.release();
  }
  return out;
}

/**
 * The same values with another shape (no copy), as a reference of its own: x and the result are released
 * independently. Its gradient is the output's, reshaped back.
 */
export function reshape(ctx: Ctx, x: Tensor, shape: readonly number[]): Tensor {
  const y = x.ref(shape);
  ctx.tape?.record([x], y, (dy) => [dy.ref(x.shape)]);
  return y;
}

/** Softmax along the last dimension; its backward reads the output, which the tape keeps (ctx.free). */
export function softmax(ctx: Ctx, x: Tensor): Tensor {
  const y = S.softmax(x);
  ctx.tape?.record([x], y, (dy) => [S.softmaxBackward(y, dy)]);
  return y;
}

/** [B, C, ...spatial] -> tokens [B, HW, C]; the gradient goes back the other way. */
export function channelsToTokens(ctx: Ctx, x: Tensor): Tensor {
  const y = L.channelsToTokens(x);
  ctx.tape?.record([x], y, (dy) => [L.tokensToChannels(dy, x.shape.slice(2))]);
  return y;
}

/** Tokens [B, HW, C] -> [B, C, ...spatial]; the gradient goes back the other way. */
export function tokensToChannels(ctx: Ctx, x: Tensor, spatial: readonly number[]): Tensor {
  const y = L.tokensToChannels(x, spatial);
  ctx.tape?.record([x], y, (dy) => [L.channelsToTokens(dy)]);
  return y;
}
