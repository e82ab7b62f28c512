/**
 * Socket files that never exist with the umask's mode.
 *
 * The native unixListen() binds and listens in one call, and Node's
 * net.Server does the same, so there is no moment between bind(2) and
 * listen(2) to chmod/chown in; and fchmod() on a socket fd does not touch
 * the file bind(2) made. Instead each socket is bound inside a private
 * staging directory, `<dir>/.zcsXXXXXX/s` (mkdtemp: mode 0700, ours, on the
 * same file system as the final path), given its mode and group there, and
 * only then rename(2)d to its final name. While it sits in the staging
 * directory nobody but us (and root) can reach it, and rename is atomic: the
 * final path goes from "no socket" (or the stale one it replaces) straight
 * to the socket with its final mode and group. A connect() can never see it
 * with the umask's mode.
 *
 * The path a listener was bound to (getsockname) stays the staging path;
 * nothing here uses it. A crash between mkdtemp and the cleanup leaves an
 * empty `.zcsXXXXXX` directory behind, nothing more.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { SocketPerms } from '../config';
import { SocketGroupError } from '../config';

/** Mode and resolved gid (null: leave the group) for one socket; `field` names the config key in errors. */
export interface ResolvedPerms {
  mode: number;
  gid: number | null;
  /** Config key of the group, for errors ("sockets.group", "ports[1].socket.group"). */
  groupField: string;
}

export type { SocketPerms };

function stage(finalPath: string): { dir: string; tmp: string } {
  const dir = fs.mkdtempSync(path.join(path.dirname(finalPath), '.zcs'));
  return { dir, tmp: path.join(dir, 's') };
}

/** chmod/chown the staged socket and move it into place. */
function publish(tmp: string, finalPath: string, perms: ResolvedPerms): void {
  fs.chmodSync(tmp, perms.mode);
  if (perms.gid !== null) {
    try {
      fs.chownSync(tmp, -1, perms.gid);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const hint = err.code === 'EPERM' ? ' (the switch must run as root or as a member of that group)' : '';
      throw new SocketGroupError(perms.groupField, `cannot give ${finalPath} group ${perms.gid}: ${err.code ?? err.message}${hint}`);
    }
  }
  fs.renameSync(tmp, finalPath);
}

/**
 * Bind (and listen) with `bind(tmpPath)`, then give the socket `perms` and
 * move it to `finalPath` (see the file comment). On failure `undo` gets what
 * bind returned and the error is rethrown; the staging directory is always
 * removed.
 */
export function bindSecurely<T>(finalPath: string, perms: ResolvedPerms, bind: (tmpPath: string) => T, undo: (bound: T) => void): T {
  const { dir, tmp } = stage(finalPath);
  try {
    return publishBound(bind(tmp), tmp, finalPath, perms, undo);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The same for a bind that completes asynchronously (net.Server.listen). */
export async function bindSecurelyAsync<T>(
  finalPath: string,
  perms: ResolvedPerms,
  bind: (tmpPath: string) => Promise<T>,
  undo: (bound: T) => void,
): Promise<T> {
  const { dir, tmp } = stage(finalPath);
  try {
    return publishBound(await bind(tmp), tmp, finalPath, perms, undo);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Give the bound socket its permissions and move it into place; on failure undo the bind and rethrow. */
function publishBound<T>(bound: T, tmp: string, finalPath: string, perms: ResolvedPerms, undo: (bound: T) => void): T {
  try {
    publish(tmp, finalPath, perms);
  } catch (e) {
    undo(bound);
    throw e;
  }
  return bound;
}
