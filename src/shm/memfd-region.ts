/**
 * A memfd of a given size, mapped shared into this process: the building
 * block of the Shared Buffers region (switch) and of a guest driver's own
 * memory. The fd is what travels over vhost-user; the mapping is what the
 * data path reads and writes.
 */
import { closeFd, memfdCreate, memfdCreateSealed, mmapRegion, munmap } from '../../bindings';

export class MemfdRegion {
  /** The memfd (-1 once closed, or for a view of another thread's region, which keeps no fd). */
  fd: number;
  readonly size: number;
  readonly buffer: ArrayBuffer;
  readonly mem: Uint8Array;
  private closed = false;

  /**
   * `sealed`: seal the file's size (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
   * before anyone else sees the fd, so no holder can ftruncate it from under
   * another's mapping (the Shared Buffers region, docs/protocol.md).
   * `existingFd`: no new file; map this one, already sized and sealed, and
   * keep no fd: a worker thread's own mapping of the control plane's region
   * (the mapping keeps the memory; a worker that dies then leaves no fd
   * open, and its mappings go with its environment).
   */
  constructor(name: string, size: number, sealed = false, existingFd = -1) {
    this.size = size;
    this.fd = existingFd >= 0 ? -1 : sealed ? memfdCreateSealed(name, size) : memfdCreate(name, size);
    try {
      this.buffer = mmapRegion(existingFd >= 0 ? existingFd : this.fd, size);
    } catch (e) {
      if (this.fd >= 0) closeFd(this.fd);
      throw e;
    }
    this.mem = new Uint8Array(this.buffer);
  }

  /** Unmap and close; idempotent (a second call must not close a reused fd number). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      munmap(this.buffer);
    } catch {
      /* already unmapped */
    }
    if (this.fd >= 0) closeFd(this.fd);
    this.fd = -1;
  }
}
