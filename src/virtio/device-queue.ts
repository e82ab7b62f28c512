/**
 * The device (back-end) side of a split virtqueue: consume avail entries,
 * produce used entries, and decide when the driver needs a call. Used by the
 * switch for every port's queues. No allocation after construction.
 */
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY } from './defs';
import { SplitRing, needEvent } from './ring';

export class DeviceQueue {
  readonly ring: SplitRing;
  readonly eventIdx: boolean;
  /** Next avail index to consume (free-running u16). */
  lastAvail: number;
  /** Shadow of used.idx, published in batches. */
  usedIdx: number;
  /** used.idx value at the last call we sent (EVENT_IDX bookkeeping). */
  private signalledUsed: number;
  /** used.idx as last published (a store with a full barrier: skip it when nothing changed). */
  private publishedUsed: number;
  private kicksOn = true;

  /**
   * lastAvail comes from SET_VRING_BASE (or a previous incarnation of this
   * queue when memory is remapped); usedIdx from the used ring itself, which
   * is the driver-visible truth.
   */
  constructor(ring: SplitRing, eventIdx: boolean, lastAvail: number, usedIdx: number) {
    this.ring = ring;
    this.eventIdx = eventIdx;
    this.lastAvail = lastAvail & 0xffff;
    this.usedIdx = usedIdx & 0xffff;
    this.signalledUsed = this.usedIdx;
    this.publishedUsed = -1;
  }

  /**
   * Entries the driver has made available and we have not consumed, or -1
   * when the driver claims more than the ring holds (a broken ring).
   */
  availPending(): number {
    const n = (Atomics.load(this.ring.avail, 1) - this.lastAvail) & 0xffff;
    return n > this.ring.num ? -1 : n;
  }

  /** Consume one avail entry; returns the raw head (caller validates < num). */
  popAvail(): number {
    const r = this.ring;
    const head = r.avail[2 + (this.lastAvail & r.mask)];
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return head;
  }

  /** Give back the entry popAvail just took: it stays in the ring for later (back-pressure). */
  unpopAvail(): void {
    this.lastAvail = (this.lastAvail - 1) & 0xffff;
  }

  pushUsed(id: number, len: number): void {
    const r = this.ring;
    const slot = this.usedIdx & r.mask;
    r.used32[1 + 2 * slot] = id;
    r.used32[2 + 2 * slot] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
  }

  /** Make pushed used entries visible to the driver (one store per batch). */
  publishUsed(): void {
    if (this.usedIdx === this.publishedUsed) return;
    Atomics.store(this.ring.used16, 1, this.usedIdx);
    this.publishedUsed = this.usedIdx;
  }

  /** True when entries were published since the last call and the driver wants one. */
  needsCall(): boolean {
    if (this.usedIdx === this.signalledUsed) return false;
    let want: boolean;
    if (this.eventIdx) {
      want = needEvent(Atomics.load(this.ring.avail, 2 + this.ring.num), this.usedIdx, this.signalledUsed);
    } else {
      want = (Atomics.load(this.ring.avail, 0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    this.signalledUsed = this.usedIdx;
    return want;
  }

  /**
   * Ask for (or stop asking for) kicks. With EVENT_IDX, "off" simply stops
   * advancing avail_event: the driver then sees it behind and stays quiet.
   * Returns the pending count observed after the change so the caller can
   * close the race between "ring empty" and "kicks re-enabled".
   */
  setKicks(on: boolean): number {
    const r = this.ring;
    if (this.eventIdx) {
      if (on) Atomics.store(r.used16, 2 + 4 * r.num, this.lastAvail);
    } else if (on !== this.kicksOn) {
      Atomics.store(r.used16, 0, on ? 0 : VIRTQ_USED_F_NO_NOTIFY);
    }
    this.kicksOn = on;
    return this.availPending();
  }
}
