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
const QUEUE_SHIFT = 16;
const HEAD_MASK = 0xffff;

export const postingQueue = (posting: number): number => posting >>> QUEUE_SHIFT;
export const postingHead = (posting: number): number => posting & HEAD_MASK;

export class RxPostings {
  /** byBuf[b]: the posting (queue, head) of shared buffer b, or -1. */
  private readonly byBuf: Int32Array;
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

  /** Take rx queue q's oldest own posting; returns its head (its buffer: nextOwnBuf before). */
  takeOwn(q: number): number {
    return this.ownBufs[q].shift();
  }

  /** Forget what rx queue q had posted (its ring stopped or restarted). */
  clearQueue(q: number): void {
    const byBuf = this.byBuf;
    for (let b = 0; b < byBuf.length; b++) if (byBuf[b] >= 0 && byBuf[b] >>> QUEUE_SHIFT === q) byBuf[b] = -1;
    this.copyTargets[q].clear();
    this.ownBufs[q].clear();
  }
}
