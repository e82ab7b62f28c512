/**
 * Drives the data path without ever blocking the event loop (docs/design.md, "Notifications"):
 *
 *   busy-poll        run rounds forever, yielding to I/O between slices;
 *   spin-then-sleep  run rounds while there is work and for spinUs after it,
 *                    then re-enable kicks and sleep until one arrives; an
 *                    empty round while spinning calls sched_yield, so the
 *                    spin costs nothing when the VMs need the core (three
 *                    pollers on two cores: 2.8 -> 4.2 Mpps one-way);
 *   eventfd          sleep as soon as a round finds nothing to do.
 *
 * While running, kicks are disabled on every queue (EVENT_IDX / NO_NOTIFY),
 * which is what stops the "fast consumer" kick storm (docs/design.md, "Notifications"). Before
 * sleeping, kicks are re-enabled and the rings re-checked to close the race
 * with a producer that published just before. Tx entries that wait for a
 * receiver's rx buffer (back-pressure) are not pending work: the loop
 * sleeps on them, woken by the receiver's rx kick or, at the latest, by
 * the wait's deadline (PollTarget.wakeAt).
 */
import { performance } from 'node:perf_hooks';
import { schedYield } from '../../bindings';
import type { PollMode } from '../config';

/** Longest slice of rounds before yielding to other I/O (control sockets, accepts). */
const SLICE_MS = 2;

export interface PollTarget {
  /** One pass over every port; returns the number of descriptors handled. */
  round(): number;
  /** Kicks on/off on every queue; returns entries already pending. */
  setKicks(on: boolean): number;
  /** Once at the end of every slice (not per round): housekeeping such as polling guest-memory faults. */
  endSlice?(): void;
  /**
   * performance.now() time by which the loop must run again even without a
   * kick (a back-pressure deadline: frames wait for a receiver until then);
   * Infinity when nothing waits.
   */
  wakeAt?(): number;
}

export class PollLoop {
  private sleeping = true;
  private scheduled = false;
  private stopped = false;
  private idleSince = -1;
  /**
   * Busy time: wall time of the rounds that moved at least one descriptor,
   * since the loop was made (ms). The clock is read after every round (and
   * after each sched_yield, so a yield is never inside an interval), and a
   * round's interval counts only when the round moved something: an idle
   * round, even the one that ends a busy stretch, never counts. Wall time,
   * not CPU time: a preemption during a working round counts.
   */
  busyMs = 0;
  /** Rounds that moved at least one descriptor, since the loop was made. */
  busyRounds = 0;
  /** Wakes a sleeping loop at the back-pressure deadline (PollTarget.wakeAt). */
  private deadlineTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly target: PollTarget,
    /** forwarding.pollMode and spinUs: a reload may change them between slices. */
    public mode: PollMode,
    public spinUs: number,
  ) {}

  /** A kick (or a control change) arrived. */
  wake(): void {
    if (this.deadlineTimer !== null) {
      clearTimeout(this.deadlineTimer);
      this.deadlineTimer = null;
    }
    if (this.stopped || this.scheduled) return;
    if (this.sleeping) {
      this.sleeping = false;
      this.target.setKicks(false);
    }
    this.idleSince = -1;
    this.scheduled = true;
    setImmediate(this.run);
  }

  stop(): void {
    this.stopped = true;
    if (this.deadlineTimer !== null) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = null;
  }

  private readonly deadlineWake = (): void => {
    this.deadlineTimer = null;
    this.wake();
  };

  /** Going to sleep while frames wait for a receiver: wake at their deadline at the latest. */
  private armDeadline(now: number): void {
    const at = this.target.wakeAt?.() ?? Infinity;
    if (at === Infinity) return;
    this.deadlineTimer = setTimeout(this.deadlineWake, Math.max(1, Math.ceil(at - now)));
  }

  private readonly run = (): void => {
    this.scheduled = false;
    if (this.stopped) return;
    const start = performance.now();
    let now = start;
    /** Start of the interval since the last clock read. */
    let since = start;
    do {
      const work = this.target.round();
      now = performance.now();
      if (work > 0) {
        this.busyMs += now - since;
        this.busyRounds++;
        this.idleSince = -1;
      } else if (this.idleSince < 0) this.idleSince = now;
      since = now;
      if (work === 0 && this.mode === 'spin-then-sleep') {
        schedYield();
        // The core may have gone to another process: that is not ours to count.
        since = performance.now();
      }
      if (this.idleSince >= 0 && this.mode !== 'busy-poll') {
        const spin = this.mode === 'eventfd' ? 0 : this.spinUs / 1000;
        if (now - this.idleSince >= spin) {
          if (this.target.setKicks(true) === 0) {
            this.sleeping = true;
            this.armDeadline(now);
            this.target.endSlice?.();
            return;
          }
          this.target.setKicks(false);
          this.idleSince = -1;
        }
      }
    } while (now - start < SLICE_MS);
    this.target.endSlice?.();
    this.scheduled = true;
    setImmediate(this.run);
  };
}
