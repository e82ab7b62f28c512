/**
 * The Shared Buffers region (DESIGN §2): one memfd of bufCount × bufSize
 * bytes, mapped by the switch and by every VM that negotiates
 * SHARED_BUFFERS. VMs see it at guest address `base`; buffer i starts at
 * base + i × bufSize. bufSize is a multiple of 64, so every buffer is
 * cache-line aligned (the region itself is page aligned).
 */
import { HUGE_PAGE_SIZE, adviseHugePages } from '../../bindings';
import { MemfdRegion } from './memfd-region';

export class SharedBuffers extends MemfdRegion {
  constructor(readonly bufCount: number, readonly bufSize: number, readonly base: number) {
    if (bufSize % 64 !== 0) throw new RangeError(`bufSize ${bufSize} is not a multiple of 64`);
    super('zcswitch-shared-buffers', bufCount * bufSize);
  }

  /**
   * Ask the kernel to back the region with 2 MiB pages. Returns null when
   * it did, else why not (the region works either way, only slower for
   * big buffers: each one is then a TLB miss for whoever touches it).
   */
  useHugePages(): string | null {
    if (this.size < HUGE_PAGE_SIZE) return `region (${this.size} B) is smaller than one huge page`;
    const err = adviseHugePages(this.buffer);
    if (err === null) return null;
    return `madvise(MADV_COLLAPSE) failed: ${err}${err === 'EINVAL' ? ' (a kernel before 6.1?)' : ''}`;
  }

  /** Buffer index for a guest address inside the window, or -1. */
  indexOf(addr: number): number {
    const off = addr - this.base;
    // The quotient is below 32768, so |0 truncates exactly (and is cheaper than Math.floor).
    return off >= 0 && off < this.size ? (off / this.bufSize) | 0 : -1;
  }

  inWindow(addr: number): boolean {
    return addr >= this.base && addr < this.base + this.size;
  }

  /** Guest address of buffer i. */
  addrOf(i: number): number {
    return this.base + i * this.bufSize;
  }

  /** Byte offset of buffer i inside mem. */
  offsetOf(i: number): number {
    return i * this.bufSize;
  }
}
