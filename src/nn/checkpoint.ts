// Gradient checkpointing for any block of layers: run it without recording (its activations are freed as it
// goes) and record one node whose backward recomputes the block with a tape of its own and back-propagates
// through that. The memory of one block's activations at a time, for a second forward of it.

import { Ctx, Tape } from './tape';
import type { Tensor } from './tensor';

/**
 * Runs `block` on `inputs` (the tensors it reads besides its weights). With `enabled` and a tape in `ctx`, it
 * runs checkpointed; `params` lists the trained tensors the block reads (LoRA matrices or weights), which the
 * recomputation gives gradients. Without either, it simply runs.
 */
export function checkpointed(ctx: Ctx, enabled: boolean, inputs: Tensor[], params: () => Tensor[], block: (c: Ctx) => Tensor): Tensor {
  if (!enabled || !ctx.tape) return block(ctx);
  const recorded = [...inputs, ...params()];
  const y = block(new Ctx(ctx.gpu, null));
  ctx.tape.record(recorded, y, (dy) => {
    const sub = new Tape();
    // The memory plan counts the recomputed block apart (gpu/pool.ts tags).
    const y2 = ctx.gpu.pool.tagged('recompute', () => block(new Ctx(ctx.gpu, sub)));
    const grads = sub.backward(y2, dy);
    y2.release();
    sub.dispose();
    return recorded.map((t) => grads.get(t));
  });
  return y;
}
