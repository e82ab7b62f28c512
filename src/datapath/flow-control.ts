/**
 * Back-pressure instead of receive livelock (docs/design.md, "Back-pressure"):
 * a frame whose one destination has no rx buffer is not consumed. It stays
 * at the head of the sender's tx ring, as vhost-net leaves a frame in the
 * guest's ring while the tap's queue is full, and the sender sees its ring
 * fill up and slows down. The switch stops serving that tx queue for the
 * round, and a round that found only such work counts as idle, so the poll
 * loop sleeps instead of spinning, and the receiver gets the CPU it needs
 * to post buffers (its rx kick wakes the switch).
 *
 * The wait is bounded per destination: the first frame that finds a port
 * without room starts its clock; once `waitMs` has passed without the port
 * posting a single rx buffer, frames for it are dropped at once, counted
 * as `rx-wait-timeout`, until it posts again. So a stuck receiver holds a
 * sender's ring (and, on a bridge, the frames behind the head for other
 * ports) for at most `waitMs`.
 *
 * One per switch, shared by the forwarder and the DataPath; the clock is
 * read only when a frame finds no room, never on the delivery path.
 */
import { performance } from 'node:perf_hooks';

/** A receiving port's wait state: what FlowControl keeps per destination. */
export interface RxWaiter {
  /** performance.now() when a frame first found this port without room; -1 while it has room. */
  rxWaitSince: number;
}

export class FlowControl {
  /**
   * Earliest deadline (performance.now() ms) of a destination frames wait
   * for, over the current round; Infinity when none. The poll loop sleeps
   * no longer than this.
   */
  wakeAt = Infinity;

  constructor(
    /** forwarding.rxWaitMs: longest wait per destination; 0 drops at once (no back-pressure). A reload may change it. */
    public waitMs: number,
  ) {}

  /** A new round: deadlines are collected afresh. */
  startRound(): void {
    this.wakeAt = Infinity;
  }

  /**
   * A frame for dst found no rx buffer. True: leave it in the sender's ring
   * (dst's deadline has not passed); false: drop it (rx-wait-timeout).
   */
  shouldWait(dst: RxWaiter): boolean {
    if (this.waitMs <= 0) return false;
    const now = performance.now();
    if (dst.rxWaitSince < 0) dst.rxWaitSince = now;
    const deadline = dst.rxWaitSince + this.waitMs;
    if (now >= deadline) return false;
    if (deadline < this.wakeAt) this.wakeAt = deadline;
    return true;
  }
}
