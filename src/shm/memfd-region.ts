/**
 * A memfd of a given size, mapped shared into this process: the building
 * block of the Shared Buffers region (switch) and of a guest driver's own
 * memory. The fd is what travels over vhost-user; the mapping is what the
 * data path reads and writes.
 */
import { closeFd, dupFd, memfdCreate, memfdCreateSealed, mmapRegion, munmap } from '../../bindings';

export class MemfdRegion {
  fd: number;
  readonly size: number;
  readonly buffer: ArrayBuffer;
  readonly mem: Uint8Array;

  /**
   * `sealed`: seal the file's size (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
   * before anyone else sees the fd, so no holder can ftruncate it from under
   * another's mapping (the Shared Buffers region, docs/protocol.md).
   * `existingFd`: no new file; map (a dup of) this one, already sized and sealed.
   */
  constructor(name: string, size: number, sealed = false, existingFd = -1) {
    this.size = size;
    // existingFd: map a region another thread made (a worker's own mapping and its own dup of the fd).
    this.fd = existingFd >= 0 ? dupFd(existingFd) : sealed ? memfdCreateSealed(name, size) : memfdCreate(name, size);
    try {
      this.buffer = mmapRegion(this.fd, size);
    } catch (e) {
      closeFd(this.fd);
      throw e;
    }
    this.mem = new Uint8Array(this.buffer);
  }

  /** Unmap and close; idempotent (a second call must not close a reused fd number). */
  close(): void {
    if (this.fd < 0) return;
    try {
      munmap(this.buffer);
    } catch {
      /* already unmapped */
    }
    closeFd(this.fd);
    this.fd = -1;
  }
}
