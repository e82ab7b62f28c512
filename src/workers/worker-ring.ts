/**
 * One running vring as a data-path worker holds it: its queue over the
 * worker's own mapping, the call fd it signals and the kick fd it watches,
 * both dups lent by the main thread (lent-fds.ts: the main thread closes
 * them once the worker answered the request that let go of them, or once
 * its thread exited). The worker watches the kick fd on its own event loop,
 * so a kick wakes the thread that forwards in one hop (docs/design.md,
 * "Data-path workers"), not through the main thread's epoll, a message and
 * a second wake-up.
 *
 * The kick fd is the front-end's eventfd: a callback that throws costs the
 * port (onFault: the control plane disconnects it), never the worker.
 */
import type { FdWatcher } from '../../bindings';
import { watchKickFd } from '../vhost/notifier-fd';
import type { DeviceQueue } from '../virtio/device-queue';
import type { VringState } from './messages';

export class WorkerRing {
  /** The call fd lent for this ring (-1: none), and the number (VringSlot.callGen) of the fd it is a dup of. */
  callFd = -1;
  callGen = -1;
  private kickGen = -1;
  private kick: FdWatcher | null = null;

  constructor(
    /** The main thread's number for this ring: a new number is a new (or remapped) ring. */
    readonly gen: number,
    readonly queue: DeviceQueue,
    /** A kick arrived (counted, then the worker's poll loop wakes). */
    private readonly onKick: () => void,
    /** The kick watcher threw: the port is to be disconnected. */
    private readonly onFault: (where: string, e: unknown) => void,
  ) {}

  /** Take want's call and kick fds (a new number for either: the fd lent for it replaces ours, whose watcher stops). */
  adopt(want: VringState, index: number): void {
    this.callFd = want.callFd;
    this.callGen = want.callGen;
    if (want.kickGen === this.kickGen) return;
    this.stopKick();
    this.kickGen = want.kickGen;
    if (want.kickFd >= 0) this.kick = watchKickFd(want.kickFd, index, this.onKick, this.onFault);
  }

  private stopKick(): void {
    this.kick?.close();
    this.kick = null;
  }

  /** The ring goes: its kick watcher stops (the lent fds are the main thread's to close). */
  close(): void {
    this.stopKick();
  }
}
