/**
 * The runtime checks of the config: is `socketDir` safe, and can the switch
 * make its sockets in it? Do the socket groups exist? Problems name the path
 * and the field, like the config's own errors, and the switch exits with
 * status 2 for them (a config problem, not a crash).
 *
 * The rule for socketDir (like OpenSSH's and libvirt's checks of their
 * runtime directories): whoever can write the directory can unlink a port's
 * socket and bind their own in its place, and so receive a VM's handshake.
 * So the directory itself must be
 *   - a real directory, not a symbolic link (lstat);
 *   - owned by the switch's effective user or by root;
 *   - writable by its owner only: no group or other write bit (a sticky bit
 *     does not help: a socket's name can be taken before the switch binds it
 *     or after it exits).
 * A missing directory is created with mode 0750 (group: `sockets.group`
 * when given, so that group may reach the sockets); missing parents are
 * created as by `mkdir -p`. Parents are not checked.
 */
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULTS } from './schema';

/** socketDir cannot hold the switch's sockets. `message` names the path and the field. */
export class SocketDirError extends Error {
  constructor(readonly dir: string, readonly problem: string, readonly code?: string) {
    super(`socketDir "${dir}": ${problem}`);
    this.name = 'SocketDirError';
  }
}

function why(err: NodeJS.ErrnoException, dir: string, doing: string): string {
  switch (err.code) {
    case 'EROFS':
      return `${doing}: the file system is read-only; set socketDir to a writable directory`;
    case 'EACCES':
    case 'EPERM':
      return `${doing}: permission denied; set socketDir to a directory this user may write, or run as its owner`;
    case 'ENOTDIR':
    case 'EEXIST':
      return `${doing}: a part of the path is a file, not a directory (${firstNonDir(dir) ?? dir})`;
    case 'ENOENT':
      return `${doing}: a part of the path does not exist`;
    default:
      return `${doing}: ${err.code ?? ''}${err.code ? ' ' : ''}${err.message}`;
  }
}

/** The first existing prefix of dir that is not a directory, if any. */
function firstNonDir(dir: string): string | undefined {
  let p = path.resolve(dir);
  const parts: string[] = [];
  while (p !== path.dirname(p)) {
    parts.unshift(p);
    p = path.dirname(p);
  }
  for (const q of parts) {
    try {
      if (!fs.statSync(q).isDirectory()) return q;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/**
 * Create socketDir if needed (mode 0750, group `gid` when given), check it is
 * safe (the rule above) and that sockets can be made in it.
 * Throws SocketDirError.
 */
export function prepareSocketDir(dir: string, gid: number | null = null): void {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(dir);
  } catch {
    st = undefined;
  }
  if (st === undefined) {
    try {
      fs.mkdirSync(path.dirname(path.resolve(dir)), { recursive: true });
      fs.mkdirSync(dir, { mode: DEFAULTS.socketDirMode });
      // mkdir's mode passes through the umask; say it exactly. Only now may the group see in.
      if (gid !== null) fs.chownSync(dir, -1, gid);
      fs.chmodSync(dir, DEFAULTS.socketDirMode);
    } catch (e) {
      throw new SocketDirError(dir, why(e as NodeJS.ErrnoException, dir, 'cannot create the directory'), (e as NodeJS.ErrnoException).code);
    }
    st = fs.lstatSync(dir);
  }
  if (st.isSymbolicLink()) {
    throw new SocketDirError(dir, `is a symbolic link (to ${describeLink(dir)}); give the real directory`, 'ELOOP');
  }
  if (!st.isDirectory()) throw new SocketDirError(dir, 'exists and is not a directory', 'ENOTDIR');
  const me = process.geteuid?.() ?? st.uid;
  if (st.uid !== me && st.uid !== 0) {
    throw new SocketDirError(
      dir,
      `is owned by uid ${st.uid}, not by this user (uid ${me}) or root; another user could replace the sockets in it: use a directory of this user's (or remove it to have it created)`,
      'EUNSAFE',
    );
  }
  if ((st.mode & 0o022) !== 0) {
    const who = (st.mode & 0o002) !== 0 ? 'world' : 'group';
    throw new SocketDirError(
      dir,
      `is ${who}-writable (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}); others could replace the sockets in it: chmod go-w it, or use a private directory`,
      'EUNSAFE',
    );
  }
  try {
    // W_OK says EROFS on a read-only mount even to root; root passes mode bits (and so can make sockets there).
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch (e) {
    throw new SocketDirError(dir, why(e as NodeJS.ErrnoException, dir, 'cannot create sockets in it'), (e as NodeJS.ErrnoException).code);
  }
}

function describeLink(p: string): string {
  try {
    return JSON.stringify(fs.readlinkSync(p));
  } catch {
    return 'somewhere';
  }
}

/** A socket group is unknown, or cannot be given to a socket. `message` names the field. */
export class SocketGroupError extends Error {
  constructor(readonly field: string, problem: string) {
    super(`${field}: ${problem}`);
    this.name = 'SocketGroupError';
  }
}

/** name -> gid from the group file (Node has no getgrnam; groups only in NSS/LDAP need a numeric gid). */
export function readGroups(file = '/etc/group'): Map<string, number> {
  const out = new Map<string, number>();
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name && gid !== undefined && /^\d+$/.test(gid) && !out.has(name)) out.set(name, Number(gid));
  }
  return out;
}

/** A configured group as a gid; a name must be in /etc/group. Throws SocketGroupError naming `field`. */
export function resolveGroup(group: string | number | null, field: string, groups: Map<string, number> = readGroups()): number | null {
  if (group === null || typeof group === 'number') return group;
  const gid = groups.get(group);
  if (gid === undefined) throw new SocketGroupError(field, `no group named "${group}" (looked up in /etc/group; give a numeric gid for a group that is not there)`);
  return gid;
}

/** A socket in dir could not be made: the same error, for what passed the check above (a race, an odd file system). */
export function socketDirListenError(dir: string, socketPath: string, e: unknown): Error {
  const err = e as NodeJS.ErrnoException;
  if (['EROFS', 'EACCES', 'EPERM', 'ENOENT', 'ENOTDIR'].includes(err.code ?? '')) {
    return new SocketDirError(dir, why(err, dir, `cannot create socket ${socketPath}`), err.code);
  }
  return err;
}
