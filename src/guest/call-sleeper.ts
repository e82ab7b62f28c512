/**
 * Sleeping until the switch has work for the guest driver: ask for calls on
 * every ring, close the race with what completed meanwhile, then wait on
 * the call eventfds (or, with none, a device polled from user space, a
 * short timer). Not per packet: the data path (data-path.ts) hands its
 * waits here.
 */
import { FdWatcher, eventfdDrain } from '../../bindings';
import type { QueuePair } from './queue-pair';

/** Without call eventfds, how long a sleeping driver waits before polling the used rings again. */
const POLL_SLEEP_MS = 1;

export class CallSleeper {
  private readonly watchers: FdWatcher[] = [];
  private wakeCb: (() => void) | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private readonly pollWake = (): void => {
    this.pollTimer = null;
    const cb = this.wakeCb;
    this.wakeCb = null;
    cb?.();
  };

  constructor(private readonly qps: readonly QueuePair[]) {}

  /** Wake the sleeper (if any) when the switch signals call eventfd fd. */
  watchCall(fd: number): void {
    this.watchers.push(new FdWatcher(fd, () => {
      eventfdDrain(fd);
      const cb = this.wakeCb;
      this.wakeCb = null;
      cb?.();
    }));
  }

  /** Call cb once there is work: at once when something completed while calls were being turned on. */
  waitForWork(cb: () => void): void {
    let pending = 0;
    for (const qp of this.qps) pending += qp.rxq.setCalls(true) + qp.txq.setCalls(true);
    if (pending > 0) {
      this.pollMode();
      setImmediate(cb);
      return;
    }
    this.wakeCb = () => {
      this.pollMode();
      cb();
    };
    if (this.watchers.length === 0) {
      // No call eventfds (a PCI device polled from user space): look again after a short sleep.
      this.pollTimer = setTimeout(this.pollWake, POLL_SLEEP_MS);
      return;
    }
    for (const w of this.watchers) w.start();
  }

  /** Polling: ask the switch for no calls. */
  pollMode(): void {
    for (const qp of this.qps) {
      qp.rxq.setCalls(false);
      qp.txq.setCalls(false);
    }
  }

  /** Stop watching the call eventfds (before they are closed). */
  close(): void {
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
    this.wakeCb = null;
    for (const w of this.watchers) w.close();
    this.watchers.length = 0;
  }
}
