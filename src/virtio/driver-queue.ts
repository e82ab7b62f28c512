/**
 * The driver (front-end) side of a split virtqueue, as our guest driver uses
 * it: descriptor allocation, publishing avail entries, reaping used ones,
 * and deciding when the device needs a kick. No allocation after
 * construction.
 */
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY } from './defs';
import { SplitRing, needEvent } from './ring';

export class DriverQueue {
  readonly ring: SplitRing;
  eventIdx: boolean;
  /** Shadow of avail.idx, published in batches. */
  availIdx = 0;
  /** Next used index to reap. */
  lastUsed = 0;
  /** Length field of the entry returned by the last popUsed(). */
  lastUsedLen = 0;
  private kickedAvail = 0;
  /**
   * Free descriptor ids, freeStack[0, freeTop). The guest driver's loops
   * over locals (src/guest/swap-descs.ts) pop and push them directly, as
   * allocDesc and freeDesc do.
   */
  readonly freeStack: Uint16Array;
  freeTop: number;

  constructor(ring: SplitRing, eventIdx: boolean) {
    this.ring = ring;
    this.eventIdx = eventIdx;
    this.freeStack = new Uint16Array(ring.num);
    for (let i = 0; i < ring.num; i++) this.freeStack[i] = ring.num - 1 - i;
    this.freeTop = ring.num;
  }

  /** Descriptors [0, reserved) are never handed out by allocDesc nor taken back by freeDesc: the caller uses them by a rule of its own. */
  reserved = 0;

  get freeDescs(): number {
    return this.freeTop;
  }

  /** A free descriptor id (never a reserved one), or -1 when all are in flight. */
  allocDesc(): number {
    return this.freeTop === 0 ? -1 : this.freeStack[--this.freeTop];
  }

  /** Descriptor id is free again (a reserved one is the caller's: ignored here). */
  freeDesc(id: number): void {
    if (id >= this.reserved) this.freeStack[this.freeTop++] = id;
  }

  /**
   * Keep descriptors [0, n) out of allocDesc (the guest driver gives shared
   * buffer b descriptor b: src/guest/data-path.ts). Only before anything is
   * in flight.
   */
  reserveLow(n: number): void {
    const num = this.ring.num;
    if (this.freeTop !== num - this.reserved) throw new Error('DriverQueue.reserveLow: descriptors are in flight');
    this.reserved = Math.min(n, num);
    this.freeTop = 0;
    for (let i = num - 1; i >= this.reserved; i--) this.freeStack[this.freeTop++] = i;
  }

  addAvail(head: number): void {
    const r = this.ring;
    r.avail[2 + (this.availIdx & r.mask)] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }

  publishAvail(): void {
    Atomics.store(this.ring.avail, 1, this.availIdx);
  }

  /** True when the device asked to be kicked for what was published since the last kick. */
  needsKick(): boolean {
    if (this.availIdx === this.kickedAvail) return false;
    let want: boolean;
    if (this.eventIdx) {
      want = needEvent(Atomics.load(this.ring.used16, 2 + 4 * this.ring.num), this.availIdx, this.kickedAvail);
    } else {
      want = (Atomics.load(this.ring.used16, 0) & VIRTQ_USED_F_NO_NOTIFY) === 0;
    }
    this.kickedAvail = this.availIdx;
    return want;
  }

  usedPending(): number {
    return (Atomics.load(this.ring.used16, 1) - this.lastUsed) & 0xffff;
  }

  /** Reap every used entry unread (the caller needs none of them: GuestDataPath.fixedTx); returns how many. */
  skipUsed(): number {
    const u = Atomics.load(this.ring.used16, 1);
    const n = (u - this.lastUsed) & 0xffff;
    this.lastUsed = u;
    return n;
  }

  /** Reap one used entry: returns its id; its length is in lastUsedLen. */
  popUsed(): number {
    const r = this.ring;
    const slot = this.lastUsed & r.mask;
    this.lastUsedLen = r.used32[2 + 2 * slot];
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    return r.used32[1 + 2 * slot];
  }

  /**
   * Ask for (or stop asking for) calls; returns the used entries pending
   * after the change, to close the sleep race.
   */
  setCalls(on: boolean): number {
    const r = this.ring;
    if (this.eventIdx) {
      if (on) Atomics.store(r.avail, 2 + r.num, this.lastUsed);
    } else {
      Atomics.store(r.avail, 0, on ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT);
    }
    return this.usedPending();
  }
}
