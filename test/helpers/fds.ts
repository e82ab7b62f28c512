/**
 * A process's open fds as /proc shows them: which ones refer to the same
 * object as another process's (or this one's), so a test can tell that a
 * switch let go of everything a VM gave it.
 */
import fs from 'node:fs';

/**
 * What the fds of `pid` refer to, where that can be told apart across
 * processes: an eventfd by its id (all eventfds share one anonymous inode;
 * fdinfo's eventfd-id, Linux 6.0+), a file by device and inode. Sockets,
 * pipes, devices and other anonymous inodes are left out.
 */
export function fileIds(pid: number | 'self'): string[] {
  const out: string[] = [];
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    const id = fileId(pid, Number(fd));
    if (id !== null) out.push(id);
  }
  return out;
}

/** fileIds' identity of one fd of `pid`, or null (left out, or closed meanwhile). */
export function fileId(pid: number | 'self', fd: number): string | null {
  try {
    const link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    if (link === 'anon_inode:[eventfd]') {
      const id = /eventfd-id:\s*(\d+)/.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1];
      return id === undefined ? null : `eventfd:${id}`;
    }
    if (!link.startsWith('/') || link.startsWith('/dev/')) return null;
    const s = fs.statSync(`/proc/${pid}/fd/${fd}`);
    return `file:${s.dev}:${s.ino}`;
  } catch {
    return null;
  }
}

/** The fds of `pid` whose link (readlink) starts with `prefix`: `/dev/net/tun`, `/memfd:NAME`. */
export function fdsLinkingTo(pid: number, prefix: string): number[] {
  return fs.readdirSync(`/proc/${pid}/fd`).map(Number).filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(prefix);
    } catch {
      return false;
    }
  });
}

/** What `pid` holds of the memfds whose name starts with `name`: open fds, and mappings (/proc/PID/maps). */
export function memfdHeld(pid: number, name: string): { fds: number; maps: number } {
  const fds = fdsLinkingTo(pid, `/memfd:${name}`).length;
  const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes(`/memfd:${name}`)).length;
  return { fds, maps };
}
