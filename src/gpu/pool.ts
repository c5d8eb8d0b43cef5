// Storage buffers are recycled by size class instead of created and destroyed per op: creating GPU buffers
// is slow, and a training step allocates the same shapes every time. Sizes are rounded up to a class (at
// most 1/8 waste above 2 KiB, multiples of 256 bytes below), so a buffer may be larger than asked; kernels
// are always given their true sizes.

import { formatBytes } from '../util/format';

export function sizeClass(byteLength: number): number {
  const size = Math.max(256, Math.ceil(byteLength / 4) * 4);
  const step = 2 ** Math.max(8, Math.floor(Math.log2(size)) - 3);
  return Math.ceil(size / step) * step;
}

/**
 * What the pool counted under one tag at its peak (bytes asked for, and the same buffers' pooled sizes),
 * and per phase the most it had in use beyond what was live when the phase began and what it left live.
 */
export interface PoolAccount {
  atPeak: Map<string, { exact: number; pooled: number }>;
  phases: Map<string, { high: number; left: number }>;
  /** The largest single buffer handed out (pooled size). */
  largest: number;
}

interface Tagged {
  tag: string;
  exact: number;
  /** Acquisition order: a buffer live now and acquired before the peak was live at the peak. */
  seq: number;
}

export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  private readonly live = new Set<GPUBuffer>();
  /**
   * Accounting by tag and phase for the memory plan (models/memory-plan.ts), which runs the real training
   * step on a device that allocates nothing. Off (null) in real runs, where phase() costs one comparison.
   */
  private account: (PoolAccount & { tags: Map<GPUBuffer, Tagged>; liveByTag: Map<string, { exact: number; pooled: number }>; peakSeq: number }) | null = null;
  /** The current phase, and the tag new buffers are counted under (the phase's name but in a tagged() section). */
  private phaseName = '';
  private tag = '';
  private phaseStart = 0;
  private seq = 0;
  /** Bytes currently handed out, and the most ever handed out at once. */
  bytesInUse = 0;
  peakBytesInUse = 0;
  /** Bytes of the buffers the pool holds (in use or idle), and the most it ever held: the device's cost. */
  bytesAllocated = 0;
  peakBytesAllocated = 0;

  constructor(private readonly device: GPUDevice) {}

  acquire(byteLength: number): GPUBuffer {
    const size = sizeClass(byteLength);
    const max = this.device.limits.maxBufferSize;
    if (size > max) {
      throw new Error(
        `A tensor of ${formatBytes(byteLength)} exceeds this GPU's largest buffer ` +
          `(${formatBytes(max)}). Lower the resolution or batch size.`,
      );
    }
    let buffer = this.free.get(size)?.pop();
    if (!buffer) {
      buffer = this.device.createBuffer({
        size,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      });
      this.bytesAllocated += size;
      this.peakBytesAllocated = Math.max(this.peakBytesAllocated, this.bytesAllocated);
    }
    this.live.add(buffer);
    this.bytesInUse += size;
    const peak = this.bytesInUse > this.peakBytesInUse;
    this.peakBytesInUse = Math.max(this.peakBytesInUse, this.bytesInUse);
    if (this.account) this.count(buffer, byteLength, peak);
    return buffer;
  }

  /** Returns a buffer for reuse. Safe right away: later writes are ordered after earlier reads on the queue. */
  release(buffer: GPUBuffer): void {
    if (!this.live.delete(buffer)) throw new Error('BufferPool.release: buffer is not from this pool or was released twice');
    this.bytesInUse -= buffer.size;
    if (this.account) {
      const t = this.account.tags.get(buffer)!;
      this.account.tags.delete(buffer);
      this.addTo(this.account.liveByTag, t.tag, -t.exact, -buffer.size);
    }
    let list = this.free.get(buffer.size);
    if (!list) this.free.set(buffer.size, (list = []));
    list.push(buffer);
  }

  /** Starts counting by tag and phase (see `account`), from a pool with nothing live. */
  startAccount(): void {
    if (this.live.size) throw new Error('BufferPool.startAccount: buffers are already live');
    this.account = { atPeak: new Map(), phases: new Map(), largest: 0, tags: new Map(), liveByTag: new Map(), peakSeq: 0 };
  }

  /** What was counted since startAccount(). */
  accounted(): PoolAccount {
    if (!this.account) throw new Error('BufferPool.accounted: startAccount() was not called');
    this.phase('');
    const { atPeak, phases, largest } = this.account;
    return { atPeak, phases, largest };
  }

  /**
   * Marks where the code stands (the trainer: 'batchInputs', 'referenceForward', ...): buffers acquired from
   * now on are counted under `name`. Only the memory plan reads it.
   */
  phase(name: string): void {
    const a = this.account;
    if (!a) return;
    if (this.phaseName) {
      const p = a.phases.get(this.phaseName) ?? { high: 0, left: 0 };
      p.left = Math.max(p.left, this.bytesInUse - this.phaseStart);
      a.phases.set(this.phaseName, p);
    }
    this.phaseName = this.tag = name;
    this.phaseStart = this.bytesInUse;
  }

  /** Runs `fn` with its buffers counted under `tag`, within the current phase (a checkpointed block's recompute). */
  tagged<T>(tag: string, fn: () => T): T {
    if (!this.account) return fn();
    const outer = this.tag;
    this.tag = tag;
    try {
      return fn();
    } finally {
      this.tag = outer;
    }
  }

  /** Counts a live buffer under another tag from now on, and at the peak if it was live then (gradients of parameters). */
  retag(buffer: GPUBuffer, tag: string): void {
    const a = this.account;
    const t = a?.tags.get(buffer);
    if (!a || !t || t.tag === tag) return;
    this.addTo(a.liveByTag, t.tag, -t.exact, -buffer.size);
    this.addTo(a.liveByTag, tag, t.exact, buffer.size);
    if (t.seq <= a.peakSeq) {
      this.addTo(a.atPeak, t.tag, -t.exact, -buffer.size);
      this.addTo(a.atPeak, tag, t.exact, buffer.size);
    }
    t.tag = tag;
  }

  private count(buffer: GPUBuffer, exact: number, peak: boolean): void {
    const a = this.account!;
    const seq = ++this.seq;
    const tag = this.tag;
    a.tags.set(buffer, { tag, exact, seq });
    this.addTo(a.liveByTag, tag, exact, buffer.size);
    a.largest = Math.max(a.largest, buffer.size);
    // A tagged() section counts toward the phase around it.
    if (this.phaseName) {
      const p = a.phases.get(this.phaseName) ?? { high: 0, left: 0 };
      p.high = Math.max(p.high, this.bytesInUse - this.phaseStart);
      a.phases.set(this.phaseName, p);
    }
    if (peak) {
      a.peakSeq = seq;
      a.atPeak = new Map([...a.liveByTag].map(([k, v]) => [k, { ...v }]));
    }
  }

  private addTo(map: Map<string, { exact: number; pooled: number }>, tag: string, exact: number, pooled: number): void {
    const v = map.get(tag) ?? { exact: 0, pooled: 0 };
    v.exact += exact;
    v.pooled += pooled;
    map.set(tag, v);
  }

  /** Destroys the idle buffers, giving their memory back to the device. */
  trim(): void {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.bytesAllocated -= b.size;
        b.destroy();
      }
    }
    this.free.clear();
  }

  destroyAll(): void {
    this.trim();
    for (const b of this.live) b.destroy();
    this.live.clear();
    this.bytesInUse = 0;
    this.bytesAllocated = 0;
  }
}
