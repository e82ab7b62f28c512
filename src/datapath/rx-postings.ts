/**
 * What a port's receive queues have posted and the switch holds, by kind
 * (docs/protocol.md, "Ownership" and "Bridge mode"):
 *
 * - shared buffers the VM may be sent (pair mode): found by buffer index in
 *   O(1), because a zero-copy delivery completes the receiver's posting for
 *   the very buffer the sender used (ownership rule 3);
 * - copy targets: chains in the VM's own memory, filled in order;
 * - own empty buffers (bridge mode): filled in order by a swap or a copy.
 *
 * The switch takes rx descriptors off the avail ring when it sees them and
 * keeps them here until it completes them, so a posting is never read twice.
 */
import { HeadFifo } from './head-fifo';

/** A shared-buffer posting packs (rx queue, head): heads are < 32768, queues < 256. */
export const QUEUE_SHIFT = 16;
export const HEAD_MASK = 0xffff;

export const postingQueue = (posting: number): number => posting >>> QUEUE_SHIFT;
export const postingHead = (posting: number): number => posting & HEAD_MASK;

/** What a port's RxPostings hold, in order: for another thread's data path to hold on (a port moving between workers). */
export interface PostingsSnapshot {
  /** byBuf[b]: the posting (queue, head) of shared buffer b, or -1. */
  byBuf: Int32Array;
  /** Per rx queue: copy target heads, oldest first. */
  copyTargets: Int32Array[];
  /** Per rx queue: own empty buffers, oldest first, as head and buffer. */
  ownBufs: { heads: Int32Array; bufs: Int32Array }[];
}

export class RxPostings {
  /**
   * byBuf[b]: the posting (queue, head) of shared buffer b, or -1. Open to
   * the zero-copy fast lane (zc-lane.ts), which posts and takes in the same
   * encoding without a call per packet.
   */
  readonly byBuf: Int32Array;
  private readonly copyTargets: HeadFifo[];
  private readonly ownBufs: HeadFifo[];

  constructor(bufCount: number, queuePairs: number) {
    this.byBuf = new Int32Array(bufCount).fill(-1);
    this.copyTargets = Array.from({ length: queuePairs }, () => new HeadFifo());
    this.ownBufs = Array.from({ length: queuePairs }, () => new HeadFifo());
  }

  // ---- shared buffers the VM may be sent (pair mode)

  /** The posting of shared buffer b, or -1. */
  sharedPosting(b: number): number {
    return this.byBuf[b];
  }

  hasShared(b: number): boolean {
    return this.byBuf[b] >= 0;
  }

  postShared(b: number, q: number, head: number): void {
    this.byBuf[b] = (q << QUEUE_SHIFT) | head;
  }

  /** Take the posting of shared buffer b: returns it, or -1 if there is none. */
  takeShared(b: number): number {
    const p = this.byBuf[b];
    this.byBuf[b] = -1;
    return p;
  }

  // ---- copy targets (chains in the VM's own memory)

  copyTargetCount(q: number): number {
    return this.copyTargets[q].count;
  }

  /** Rx queue q's i-th next copy target head without taking it, or -1. */
  peekCopyTarget(q: number, i = 0): number {
    return this.copyTargets[q].peek(i);
  }

  postCopyTarget(q: number, head: number): void {
    this.copyTargets[q].push(head);
  }

  /** Take rx queue q's oldest copy target; returns its head. */
  takeCopyTarget(q: number): number {
    return this.copyTargets[q].shift();
  }

  /** Take out rx queue q's i-th copy target (a broken posting found while looking ahead). */
  removeCopyTarget(q: number, i: number): void {
    this.copyTargets[q].remove(i);
  }

  // ---- own empty buffers (bridge mode)

  ownCount(q: number): number {
    return this.ownBufs[q].count;
  }

  /** Buffer of rx queue q's oldest own posting (what takeOwn(q) will take), or -1. */
  nextOwnBuf(q: number): number {
    return this.ownBufs[q].peekBuf(0);
  }

  postOwn(q: number, head: number, b: number): void {
    this.ownBufs[q].push(head, b);
  }

  /** Rx queue q's own empty buffers themselves, for the fast lane's loops over locals (zc-lane.ts). */
  ownFifo(q: number): HeadFifo {
    return this.ownBufs[q];
  }

  /** Take rx queue q's oldest own posting; returns its head (its buffer: nextOwnBuf before). */
  takeOwn(q: number): number {
    return this.ownBufs[q].shift();
  }

  /** Everything held, in order (the port moves to another worker's data path: docs/design.md, "Data-path workers"). */
  snapshot(): PostingsSnapshot {
    return {
      byBuf: this.byBuf.slice(),
      copyTargets: this.copyTargets.map((f) => f.toArrays().heads),
      ownBufs: this.ownBufs.map((f) => f.toArrays()),
    };
  }

  /**
   * Hold on to what another data path held for this port (snapshot), so a
   * posting made before a move can be filled after it. Called when the
   * port's rings have just started here, before any round: nothing is held
   * yet, so the order is kept. running(q): rx queue q runs here (the same
   * rings, resumed); postings of one that does not are void, as when a
   * ring stops.
   */
  restore(s: PostingsSnapshot, running: (q: number) => boolean): void {
    if (s.byBuf.length !== this.byBuf.length || s.copyTargets.length !== this.copyTargets.length || s.ownBufs.length !== this.ownBufs.length) {
      throw new RangeError(`rx postings of ${s.byBuf.length} buffers and ${s.copyTargets.length} queues, here ${this.byBuf.length} and ${this.copyTargets.length}`);
    }
    for (let b = 0; b < s.byBuf.length; b++) {
      const p = s.byBuf[b];
      if (p >= 0 && this.byBuf[b] < 0 && running(p >>> QUEUE_SHIFT)) this.byBuf[b] = p;
    }
    for (let q = 0; q < this.copyTargets.length; q++) {
      if (!running(q)) continue;
      for (const head of s.copyTargets[q]) this.copyTargets[q].push(head);
      const own = s.ownBufs[q];
      for (let i = 0; i < own.heads.length; i++) this.ownBufs[q].push(own.heads[i], own.bufs[i]);
    }
  }

  /** Forget what rx queue q had posted (its ring stopped or restarted). */
  clearQueue(q: number): void {
    const byBuf = this.byBuf;
    for (let b = 0; b < byBuf.length; b++) if (byBuf[b] >= 0 && byBuf[b] >>> QUEUE_SHIFT === q) byBuf[b] = -1;
    this.copyTargets[q].clear();
    this.ownBufs[q].clear();
  }
}
