/**
 * A fixed-capacity FIFO of descriptor heads (with an optional buffer index
 * each), for rx postings the switch holds until it fills them. Capacity is
 * virtio's largest queue, so it cannot overflow: a ring never has more
 * descriptors outstanding than its size.
 */
export const HEAD_FIFO_CAP = 32768;
const CAP = HEAD_FIFO_CAP;

export class HeadFifo {
  /**
   * Entry i (oldest first) is heads[(first + i) & (CAP - 1)] and the same
   * slot of bufs. Open to the zero-copy fast lane (zc-lane.ts), which pushes
   * and shifts a run of entries over locals and writes first and count back
   * once, as push and shift do one entry at a time.
   */
  readonly heads = new Int32Array(CAP);
  readonly bufs = new Int32Array(CAP);
  first = 0;
  count = 0;

  push(head: number, buf = -1): void {
    const at = (this.first + this.count++) & (CAP - 1);
    this.heads[at] = head;
    this.bufs[at] = buf;
  }

  /** The i-th oldest head without taking it, or -1. */
  peek(i = 0): number {
    return i < this.count ? this.heads[(this.first + i) & (CAP - 1)] : -1;
  }

  /** Take out the i-th oldest entry (a broken posting found while looking ahead). */
  remove(i: number): void {
    for (let k = i; k > 0; k--) {
      const to = (this.first + k) & (CAP - 1);
      const from = (this.first + k - 1) & (CAP - 1);
      this.heads[to] = this.heads[from];
      this.bufs[to] = this.bufs[from];
    }
    this.first = (this.first + 1) & (CAP - 1);
    this.count--;
  }

  /** Buffer index of the i-th oldest entry (-1 if it has none). */
  peekBuf(i = 0): number {
    return i < this.count ? this.bufs[(this.first + i) & (CAP - 1)] : -1;
  }

  shift(): number {
    const at = this.first;
    this.first = (at + 1) & (CAP - 1);
    this.count--;
    return this.heads[at];
  }

  clear(): void {
    this.first = this.count = 0;
  }

  /** The entries, oldest first (a port moving to another worker: not per packet). */
  toArrays(): { heads: Int32Array; bufs: Int32Array } {
    const heads = new Int32Array(this.count);
    const bufs = new Int32Array(this.count);
    for (let i = 0; i < this.count; i++) {
      const at = (this.first + i) & (CAP - 1);
      heads[i] = this.heads[at];
      bufs[i] = this.bufs[at];
    }
    return { heads, bufs };
  }
}
