/**
 * Notifier fds (vring kick, call, err) must be eventfds: the switch writes
 * 8 bytes to a call fd from the data path and polls a kick fd with libuv.
 * Anything else (a regular file, /dev/zero, a pipe nobody reads) could make
 * that write fail or block, or the poll fail. What an fd is comes from its
 * /proc/self/fd link (`anon_inode:[eventfd]`), which names other kinds too,
 * for the message; fstat tells file types apart. A checked fd is set
 * O_NONBLOCK, so a saturated counter gives EAGAIN rather than a blocked
 * switch. That alone is not enough for a call fd: the flag belongs to the
 * open file description the front-end shares, and it can clear it again;
 * the call write (eventfdCall, bindings/README.md) is bounded on its own.
 */
import fs from 'node:fs';
import { FdWatcher, dupFd, eventfdDrain, setNonBlocking } from '../../bindings';
import { closeFdQuiet } from './memory-table';

const EVENTFD_LINK = 'anon_inode:[eventfd]';

/** What an fd is, for messages: "an eventfd", "a regular file (/etc/hosts)", "a pipe", "a character device (/dev/zero)"... */
export function describeFd(fd: number): string {
  let link: string;
  try {
    link = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch (e) {
    return `an fd that cannot be identified (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
  }
  if (link === EVENTFD_LINK) return 'an eventfd';
  if (link.startsWith('anon_inode:')) return `an anonymous inode ${link.slice('anon_inode:'.length)}`;
  if (link.startsWith('pipe:')) return 'a pipe';
  if (link.startsWith('socket:')) return 'a socket';
  let kind = 'a file';
  try {
    const st = fs.fstatSync(fd);
    kind = st.isFile() ? 'a regular file'
      : st.isCharacterDevice() ? 'a character device'
      : st.isBlockDevice() ? 'a block device'
      : st.isDirectory() ? 'a directory'
      : st.isFIFO() ? 'a FIFO'
      : st.isSymbolicLink() ? 'a symbolic link'
      : 'a file';
  } catch {
    /* keep "a file" */
  }
  return `${kind} (${link})`;
}

/** True when fd is an eventfd. */
export function isEventfd(fd: number): boolean {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`) === EVENTFD_LINK;
  } catch {
    return false;
  }
}

/**
 * Check a received notifier fd: null when it is an eventfd (now O_NONBLOCK),
 * otherwise what it is instead (for the ProtocolError).
 */
export function notifierProblem(fd: number): string | null {
  if (!isEventfd(fd)) return `is not an eventfd: it is ${describeFd(fd)}`;
  try {
    setNonBlocking(fd, true);
  } catch (e) {
    return `cannot be made non-blocking: ${(e as Error).message}`;
  }
  return null;
}

/** A watched kick fd: our own dup of it, and the libuv watcher on this thread's event loop. */
export interface KickWatch {
  fd: number;
  watcher: FdWatcher;
}

/**
 * Watch kick fd `fd` of vring `index` on this thread's event loop: each
 * time it is readable it is drained and onKick runs; a throw there goes to
 * onFault (it costs the port). The caller keeps fd open while the watcher
 * runs (close the watcher first).
 */
export function watchKickFd(fd: number, index: number, onKick: () => void, onFault: (where: string, e: unknown) => void): FdWatcher {
  let watcher: FdWatcher | null = null;
  try {
    watcher = new FdWatcher(fd, () => {
      try {
        eventfdDrain(fd);
        onKick();
      } catch (e) {
        onFault(`kick watcher of vring ${index}`, e);
      }
    });
    watcher.start();
  } catch (e) {
    watcher?.close();
    throw new Error(`vring ${index}: cannot watch the kick fd: ${(e as Error).message}`);
  }
  return watcher;
}

/**
 * watchKickFd over our own dup of kickFd (the session may close its fd
 * whenever the front-end replaces it). A dup or watcher that cannot be made
 * throws and leaves no fd behind.
 */
export function watchKick(kickFd: number, index: number, onKick: () => void, onFault: (where: string, e: unknown) => void): KickWatch {
  const fd = dupFd(kickFd);
  try {
    return { fd, watcher: watchKickFd(fd, index, onKick, onFault) };
  } catch (e) {
    closeFdQuiet(fd);
    throw e;
  }
}

/** Stop watching and close our dup. */
export function stopKick(k: KickWatch): void {
  k.watcher.close();
  closeFdQuiet(k.fd);
}
