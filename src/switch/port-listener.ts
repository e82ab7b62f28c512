/**
 * A port's listening socket (server mode): bound securely (socket-file.ts),
 * a socket file left by a dead switch replaced, one of a live switch
 * refused. Every waiting connection is accepted when it is readable: one
 * while no front-end is attached (the port serves it), others refused and
 * closed (logged once every 10 s, as a refused QEMU retries in a tight
 * loop). An accept that fails (EMFILE, ENFILE, ENOMEM...) pauses accepting
 * on this port and retries after a backoff, logged once per streak.
 */
import fs from 'node:fs';
import { FdWatcher, type NativeError, closeFd, unixAccept, unixConnect, unixListen } from '../../bindings';
import { socketDirListenError } from '../config';
import type { Logger } from '../log';
import { closeFdQuiet } from '../vhost/memory-table';
import type { Port } from './port';
import { type ResolvedPerms, bindSecurely } from './socket-file';

export class PortListener {
  private readonly fd: number;
  private readonly watcher: FdWatcher;
  private readonly path: string;
  private readonly cancelRetry: () => void;

  constructor(port: Port, perms: ResolvedPerms, socketDir: string, log: Logger, stopped: () => boolean) {
    removeStaleSocket(port.socketPath, port.name);
    let fd: number;
    try {
      // Bound in a private staging directory, given its mode and group, then renamed into place (socket-file.ts).
      fd = bindSecurely(port.socketPath, perms, (tmp) => unixListen(tmp, 4), closeFd);
    } catch (e) {
      throw socketDirListenError(socketDir, port.socketPath, e);
    }
    let lastBusyLog = -Infinity;
    let refused = 0;
    // accept failures (EMFILE, ENFILE, ENOMEM...): stop watching, retry after a backoff, log once per streak.
    let failures = 0;
    let retry: NodeJS.Timeout | null = null;
    const acceptAll = () => {
      for (;;) {
        let c: number;
        try {
          c = unixAccept(fd);
        } catch (e) {
          const err = e as NativeError;
          const delayMs = Math.min(1000, 50 << Math.min(failures, 5));
          if (failures++ === 0) {
            log.error({ port: port.name, code: err.code, retryMs: delayMs }, `accept failed: ${err.message}; pausing accepts on this port and retrying`);
          }
          watcher.stop();
          retry = setTimeout(() => {
            retry = null;
            if (stopped()) return;
            watcher.start();
            acceptAll();
          }, delayMs);
          retry.unref();
          return;
        }
        // accept worked (a connection, or none waiting): the fd table has room again.
        if (failures > 0) {
          log.info({ port: port.name, failures }, 'accepting connections again');
          failures = 0;
        }
        if (c < 0) return;
        if (port.attached) {
          // A refused QEMU retries in a tight loop: log the first refusal, then once every 10 s.
          const now = Date.now();
          refused++;
          if (now - lastBusyLog >= 10_000) {
            log.warn({ port: port.name, refused }, 'port busy: a front-end is already attached; refusing other connections');
            lastBusyLog = now;
            refused = 0;
          }
          closeFd(c);
          continue;
        }
        try {
          port.accept(c);
        } catch (e) {
          // A connection that cannot be served is closed; the port stays free and the listener goes on.
          log.error({ port: port.name, err: e }, `cannot serve a new connection: ${(e as Error).message}`);
          if (port.attached) port.disconnect(`cannot serve the connection: ${(e as Error).message}`);
          else closeFdQuiet(c);
        }
      }
    };
    const watcher = new FdWatcher(fd, acceptAll);
    watcher.start();
    this.fd = fd;
    this.watcher = watcher;
    this.path = port.socketPath;
    this.cancelRetry = () => retry !== null && clearTimeout(retry);
  }

  /** Stop listening and remove the socket file. */
  close(): void {
    this.cancelRetry();
    this.watcher.close();
    closeFd(this.fd);
    fs.rmSync(this.path, { force: true });
  }
}

/** Why a new port cannot have this socket path (removeStaleSocket would refuse it), or null. Changes nothing. */
export function socketPathProblem(p: string): string | null {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return null;
  }
  if (!st.isSocket()) return `${p} exists and is not a socket; refusing to replace it`;
  try {
    closeFd(unixConnect(p));
  } catch {
    return null;
  }
  return `${p} is in use by another running switch`;
}

/** A socket file left by a dead switch is removed; one with a live listener is an error. */
function removeStaleSocket(p: string, port: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`port ${port}: ${p} exists and is not a socket; refusing to replace it`);
  try {
    const fd = unixConnect(p);
    closeFd(fd);
  } catch {
    fs.rmSync(p, { force: true });
    return;
  }
  throw new Error(`port ${port}: ${p} is in use by another running switch`);
}

