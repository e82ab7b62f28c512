/**
 * The one runtime check of the config: can the switch make its sockets in
 * `socketDir`? Problems name the directory and the field, like the config's
 * own errors, and the switch exits with status 2 for them (a config
 * problem, not a crash).
 */
import fs from 'node:fs';
import path from 'node:path';

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
 * Create socketDir if needed and check that sockets can be made in it.
 * Throws SocketDirError.
 */
export function prepareSocketDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new SocketDirError(dir, why(e as NodeJS.ErrnoException, dir, 'cannot create the directory'), (e as NodeJS.ErrnoException).code);
  }
  if (!fs.statSync(dir).isDirectory()) throw new SocketDirError(dir, 'exists and is not a directory', 'ENOTDIR');
  try {
    // W_OK says EROFS on a read-only mount even to root; root passes mode bits (and so can make sockets there).
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch (e) {
    throw new SocketDirError(dir, why(e as NodeJS.ErrnoException, dir, 'cannot create sockets in it'), (e as NodeJS.ErrnoException).code);
  }
}

/** A socket in dir could not be made: the same error, for what passed the check above (a race, an odd file system). */
export function socketDirListenError(dir: string, socketPath: string, e: unknown): Error {
  const err = e as NodeJS.ErrnoException;
  if (['EROFS', 'EACCES', 'EPERM', 'ENOENT', 'ENOTDIR'].includes(err.code ?? '')) {
    return new SocketDirError(dir, why(err, dir, `cannot create socket ${socketPath}`), err.code);
  }
  return err;
}
