/**
 * A fixed-capacity FIFO of descriptor heads (with an optional buffer index
 * each), for rx postings the switch holds until it fills them. Capacity is
 * virtio's largest queue, so it cannot overflow: a ring never has more
 * descriptors outstanding than its size.
 */
const CAP = 32768;

export class HeadFifo {
  private readonly heads = new Int32Array(CAP);
  private readonly bufs = new Int32Array(CAP);
  private first = 0;
  count = 0;
  /** Buffer index of the entry last returned by shift(). */
  lastBuf = -1;

  push(head: number, buf = -1): void {
    const at = (this.first + this.count++) & (CAP - 1);
    this.heads[at] = head;
    this.bufs[at] = buf;
  }

  peek(): number {
    return this.count > 0 ? this.heads[this.first] : -1;
  }

  shift(): number {
    const at = this.first;
    this.first = (at + 1) & (CAP - 1);
    this.count--;
    this.lastBuf = this.bufs[at];
    return this.heads[at];
  }

  clear(): void {
    this.first = this.count = 0;
  }
}
