/**
 * The shared buffers this VM owns and has free, and the gift policy
 * (docs/protocol.md, ownership rules 1, 2 and 4).
 *
 * A buffer this VM owns is in this pool, with the application (between
 * alloc() and send(), or between receive() and release()), or in flight on
 * tx; every buffer it does not own is posted on its rx queues (the data
 * path keeps that side). The pool is a stack of buffer indices in a typed
 * array, so taking and returning a buffer allocates nothing.
 *
 * Gift policy: with more than giftHigh buffers free, the VM hands the
 * surplus back to its peer down to giftLow, in chains of at most
 * GIFT_CHAIN_MAX buffers per tx entry, so one-way traffic flows forever.
 * Gifting stops while the peer hands our gifts back (RETURNED: it is gone
 * or cannot take them) and resumes when it shows life again; without that
 * a VM whose peer left would gift and get its gifts back in a tight loop.
 * While paused it still tries once every GIFT_RETRY_MS: a peer that
 * attaches owning nothing (its predecessor had sent everything before it
 * died) cannot show life by sending, and would otherwise wait forever.
 * The pool decides how much to gift; the data path builds the chains.
 */
import { performance } from 'node:perf_hooks';
import { GIFT_CHAIN_MAX } from '../vhost/protocol';

/** While gifts come back RETURNED, try one gift round this often (ms). */
export const GIFT_RETRY_MS = 100;

export class BufferPool {
  private readonly free: Int32Array;
  private top = 0;
  /** Set when a gift of ours came back RETURNED; cleared when the peer shows life. */
  private giftsBlocked = false;
  /** When gifting last paused, or last retried while paused (ms, from now()). */
  private blockedAt = 0;

  constructor(
    /** Most buffers the pool can hold (the region's bufCount). */
    capacity: number,
    /** Gift when more than this many buffers are free (Infinity: never). */
    public giftHigh = Infinity,
    /** Gift down to this many. */
    public giftLow = Infinity,
    /** The clock for the retries while paused (ms); tests pass their own. */
    private readonly now: () => number = () => performance.now(),
  ) {
    this.free = new Int32Array(Math.max(1, capacity));
  }

  /** Free buffers this VM owns. */
  get count(): number {
    return this.top;
  }

  /** A free buffer, or -1 when there is none. */
  alloc(): number {
    return this.top === 0 ? -1 : this.free[--this.top];
  }

  /** Up to max free buffers into out[0, n); returns n (the stack's top first, as alloc() would give them). */
  allocBurst(out: Int32Array, max: number): number {
    const n = Math.min(max, this.top, out.length);
    const free = this.free;
    let top = this.top;
    for (let i = 0; i < n; i++) out[i] = free[--top];
    this.top = top;
    return n;
  }

  /** Buffer b is ours and free again (given at attach, received, handed back, or released). */
  put(b: number): void {
    this.free[this.top++] = b;
  }

  /** put() for bufs[0, n). */
  putBurst(bufs: Int32Array, n: number): void {
    const free = this.free;
    let top = this.top;
    for (let i = 0; i < n; i++) free[top++] = bufs[i];
    this.top = top;
  }

  /**
   * Whether flush() should gift now: above the high watermark, and the peer
   * takes gifts or GIFT_RETRY_MS passed since the pause or the last retry.
   */
  wantsToGift(): boolean {
    if (this.top <= this.giftHigh) return false;
    if (!this.giftsBlocked) return true;
    const t = this.now();
    if (t - this.blockedAt < GIFT_RETRY_MS) return false;
    this.blockedAt = t;
    return true;
  }

  /**
   * Length of the next gift chain: the surplus above giftLow, at most
   * GIFT_CHAIN_MAX and at most the free descriptors on tx and rx (every
   * gifted buffer is first posted on our own rx, rule 2). 0: stop gifting.
   */
  giftChainLength(txRoom: number, rxRoom: number): number {
    let k = this.top - this.giftLow;
    if (k > GIFT_CHAIN_MAX) k = GIFT_CHAIN_MAX;
    if (k > txRoom) k = txRoom;
    if (k > rxRoom) k = rxRoom;
    return k > 0 ? k : 0;
  }

  /** A buffer came back: a gift from the peer (it is alive) or one of ours RETURNED. */
  handedBack(b: number, returned: boolean, wasGift: boolean): void {
    this.free[this.top++] = b;
    if (returned) {
      if (wasGift) {
        this.giftsBlocked = true;
        this.blockedAt = this.now();
      }
    } else {
      this.giftsBlocked = false;
    }
  }

  /** The peer sent us a packet: it is alive, so gifts may flow again. */
  peerAlive(): void {
    this.giftsBlocked = false;
  }

  /** Whether gifting is paused because our gifts came back RETURNED. */
  get blocked(): boolean {
    return this.giftsBlocked;
  }
}
