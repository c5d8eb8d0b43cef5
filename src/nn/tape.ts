// A small tape for reverse-mode autodiff, in the spirit of micrograd: each differentiable op run while a
// tape records pushes one node holding a closure that maps the gradient of its output to gradients of its
// inputs. Only tensors marked `requiresGrad` (the LoRA matrices) and what is computed from them get
// gradients, so frozen weights never cost a gradient buffer.
//
// Memory: every tensor made while recording may be needed by the backward, so the tape owns it (`hold`)
// and releases it in dispose(). Without a tape, forward code releases intermediates as soon as they are
// consumed (Ctx.free), so inference runs at a fraction of the memory.

import type { Gpu } from '../gpu/gpu';
import { add } from './ops/elementwise';
import type { Tensor } from './tensor';

interface Node {
  inputs: Tensor[];
  output: Tensor;
  /** Gradients for each input (undefined where none is needed). */
  backward(dOutput: Tensor): (Tensor | undefined)[];
}

export class Tape {
  private readonly nodes: Node[] = [];
  private readonly held = new Set<Tensor>();

  /** Records an op. Its output requires a gradient iff one of its inputs does. */
  record(inputs: Tensor[], output: Tensor, backward: Node['backward']): void {
    if (!inputs.some((t) => t.requiresGrad)) return;
    output.requiresGrad = true;
    this.nodes.push({ inputs, output, backward });
  }

  /** Takes ownership of a tensor the backward may read; released by dispose(). */
  hold(t: Tensor): void {
    this.held.add(t);
  }

  get size(): number {
    return this.nodes.length;
  }

  /**
   * Back-propagates `dOutput` from `output`. Returns the gradient of every leaf that requires one (tensors
   * marked requiresGrad that no recorded op produced), keyed by tensor. Intermediate gradients are
   * released as soon as they have been used.
   */
  backward(output: Tensor, dOutput: Tensor): Map<Tensor, Tensor> {
    // The tape works on its own reference to dOutput; the caller still owns (and releases) dOutput.
    const grads = new Map<Tensor, Tensor>([[output, dOutput.ref()]]);
    const produced = new Set(this.nodes.map((n) => n.output));
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const node = this.nodes[i];
      const g = grads.get(node.output);
      if (!g) continue;
      grads.delete(node.output);
      const inputGrads = node.backward(g);
      const seen = new Set<Tensor>();
      node.inputs.forEach((input, j) => {
        let gi = inputGrads[j];
        if (!gi) return;
        // An op may pass g itself on (add), or one tensor to two inputs: each holder gets its own reference.
        if (gi === g || seen.has(gi)) gi = gi.ref();
        seen.add(gi);
        if (input.requiresGrad) accumulate(grads, input, gi);
        else gi.release();
      });
      g.release();
    }
    for (const [t, g] of grads) {
      if (produced.has(t)) {
        // A recorded output whose gradient was never consumed: drop it.
        grads.delete(t);
        g.release();
      }
    }
    return grads;
  }

  /** Releases every tensor the tape holds. */
  dispose(): void {
    for (const t of this.held) t.release();
    this.held.clear();
    this.nodes.length = 0;
  }
}

/** Adds `g` to the gradient collected so far for `t` (ownership of `g` passes to the map). */
export function accumulate(grads: Map<Tensor, Tensor>, t: Tensor, g: Tensor): void {
  const prev = grads.get(t);
  if (!prev) {
    grads.set(t, g);
    return;
  }
  const sum = add(prev, g);
  prev.release();
  g.release();
  grads.set(t, sum);
}

/** What forward code runs with: the GPU, and the tape when gradients are wanted. */
export class Ctx {
  constructor(
    readonly gpu: Gpu,
    readonly tape: Tape | null = null,
  ) {}

  /** An intermediate is no longer needed by the forward: released now, or kept for the backward. */
  free(...tensors: Tensor[]): void {
    for (const t of tensors) {
      if (this.tape) this.tape.hold(t);
      else t.release();
    }
  }
}
