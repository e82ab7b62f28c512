/**
 * One running vring as a data-path worker holds it: its queue over the
 * worker's own mapping, and the worker's own dups of the ring's call and
 * kick fds. The worker watches the kick fd on its own event loop, so a kick
 * wakes the thread that forwards in one hop (docs/design.md, "Threads"):
 * through the main thread it took an epoll wake-up there, a message and a
 * second wake-up here (docs/PERFORMANCE.md, "Data-path workers").
 *
 * The fds are the front-end's: a kick fd that is not an eventfd, or that
 * stays readable, costs this port (the callback's throw goes to onFault,
 * and the control plane disconnects the port), never the worker.
 */
import { dupFd } from '../../bindings';
import { closeFdQuiet } from '../vhost/memory-table';
import { type KickWatch, stopKick, watchKick } from '../vhost/notifier-fd';
import type { DeviceQueue } from '../virtio/device-queue';
import type { VringState } from './messages';

export class WorkerRing {
  /** This worker's dup of the call fd (-1: none), and the main thread's number for the fd it dup'd. */
  callFd = -1;
  callGen = -1;
  private kickGen = -1;
  private kick: KickWatch | null = null;

  constructor(
    /** The main thread's number for this ring: a new number is a new (or remapped) ring. */
    readonly gen: number,
    readonly queue: DeviceQueue,
    /** A kick arrived (counted, then the worker's poll loop wakes). */
    private readonly onKick: () => void,
    /** The kick watcher threw: the port is to be disconnected. */
    private readonly onFault: (where: string, e: unknown) => void,
  ) {}

  /** Take the call and kick fds of want (a new generation of either: a dup of the new fd replaces ours). */
  adopt(want: VringState, index: number): void {
    if (want.callGen !== this.callGen) {
      closeFdQuiet(this.callFd);
      this.callFd = want.callFd >= 0 ? dupFd(want.callFd) : -1;
      this.callGen = want.callGen;
    }
    if (want.kickGen !== this.kickGen) {
      this.stopKick();
      this.kickGen = want.kickGen;
      if (want.kickFd >= 0) this.kick = watchKick(want.kickFd, index, this.onKick, this.onFault);
    }
  }

  private stopKick(): void {
    if (this.kick !== null) stopKick(this.kick);
    this.kick = null;
  }

  /** The ring goes: its watcher stops and its fds close. */
  close(): void {
    this.stopKick();
    closeFdQuiet(this.callFd);
    this.callFd = -1;
  }
}
