/**
 * A sharing domain's region, reachable by QEMU as a `memory-backend-file`
 * (docs/qemu.md, "Zero-copy with stock QEMU: the region as an ivshmem BAR").
 *
 * The region stays the sealed memfd (no holder can shrink or grow it, so no
 * mapping of it, ours included, can fault): what is published is a symbolic
 * link `<socketDir>/<domain>.region` to `/proc/<switch pid>/fd/<memfd>`.
 * Opening that path opens the memfd itself (same inode, same seals). The
 * kernel lets a process open it only when it may inspect the switch
 * (ptrace read access: the switch's own user, or root / CAP_SYS_PTRACE), and
 * then checks the memfd's own mode and group, which are set from the socket
 * settings. A tmpfs file under /dev/shm would reach other users too, but it
 * cannot be sealed: any VM's QEMU could truncate it and every mapping of it
 * (the switch's included) would fault; docs/design.md weighs the two.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { SharingDomain } from '../shm/domain';
import type { ResolvedPerms } from './socket-file';

/** Where a domain's region link lives. */
export function regionFilePath(socketDir: string, domain: string): string {
  return path.join(socketDir, `${domain}.region`);
}

/** A QEMU size for a power-of-two byte count ("16M", "128K"). */
export function qemuSize(bytes: number): string {
  if (bytes % 2 ** 30 === 0) return `${bytes / 2 ** 30}G`;
  if (bytes % 2 ** 20 === 0) return `${bytes / 2 ** 20}M`;
  if (bytes % 2 ** 10 === 0) return `${bytes / 2 ** 10}K`;
  return String(bytes);
}

/** The QEMU options that give a port's VM its domain's region as an ivshmem BAR. */
export function qemuIvshmemArgs(port: string, regionPath: string, regionSize: number): string {
  const id = `zcs-${port}`;
  return `-object memory-backend-file,id=${id},mem-path=${regionPath},size=${qemuSize(regionSize)},share=on ` +
    `-device ivshmem-plain,memdev=${id}`;
}

/**
 * Give the region the socket settings' mode and group and link it into
 * socketDir (a link made beside it, then renamed over the final name: the
 * path never names anything else). Returns the path.
 */
export function publishRegionFile(domain: SharingDomain, socketDir: string, perms: ResolvedPerms): string {
  const fd = domain.shared.fd;
  fs.fchmodSync(fd, perms.mode);
  if (perms.gid !== null) fs.fchownSync(fd, -1, perms.gid);
  const final = regionFilePath(socketDir, domain.name);
  const target = `/proc/${process.pid}/fd/${fd}`;
  const tmp = path.join(socketDir, `.${domain.name}.region.${process.pid}`);
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(target, tmp);
  try {
    fs.renameSync(tmp, final);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  domain.regionFile = final;
  return final;
}

/** Remove a domain's link if it is still ours (a newer switch on the same socketDir may have replaced it). */
export function removeRegionFile(domain: SharingDomain): void {
  const file = domain.regionFile;
  if (file === null) return;
  domain.regionFile = null;
  try {
    if (fs.readlinkSync(file) === `/proc/${process.pid}/fd/${domain.shared.fd}`) fs.rmSync(file, { force: true });
  } catch {
    /* already gone */
  }
}
