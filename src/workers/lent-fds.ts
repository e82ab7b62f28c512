/**
 * The fds a data-path worker keeps but does not own (docs/design.md,
 * "Data-path workers"): a TAP uplink's, each running ring's call fd. The
 * main thread dups each one for the worker and closes the dup here, once
 * the worker answered that it let go of it, or once its thread exited. Fds
 * are process-wide and a thread's death closes nothing, so a worker that
 * dies leaves none of them open; and since the worker never closes one,
 * no number is closed twice or while another thread watches it.
 */
import { dupFd } from '../../bindings';
import { closeFdQuiet } from '../vhost/memory-table';

export class LentFds {
  private readonly held = new Set<number>();
  private exited = false;

  /** A dup of fd for the worker (throws as dupFd does). */
  lend(fd: number): number {
    if (this.exited) throw new Error('the worker thread has exited');
    const dup = dupFd(fd);
    this.held.add(dup);
    return dup;
  }

  /** The worker answered a request that made it let go of fd: close it. */
  takeBack(fd: number): void {
    if (this.held.delete(fd)) closeFdQuiet(fd);
  }

  /** The worker's thread exited (its loop, its watchers and its mappings are gone): close what it still had. */
  closeAll(): void {
    this.exited = true;
    for (const fd of this.held) closeFdQuiet(fd);
    this.held.clear();
  }

  /** How many are lent now. */
  get count(): number {
    return this.held.size;
  }
}
