/**
 * The Shared Buffers region (docs/protocol.md): one memfd holding bufCount ×
 * bufSize bytes of buffers and, in its last 64 KiB, the region header
 * (region-header.ts); its size is the next power of two that holds both, so
 * QEMU can map it as an ivshmem BAR. Mapped by the switch and by every VM
 * that negotiates SHARED_BUFFERS or maps it as a BAR. VMs see it at guest address `base`; buffer i starts at
 * base + i × bufSize. bufSize is a multiple of 64, so every buffer is
 * cache-line aligned (the region itself is page aligned). The memfd is
 * sealed against shrinking and growing before it is handed out: no VM can
 * pull the memory from under the switch or another VM.
 */
import { HUGE_PAGE_SIZE, adviseHugePages } from '../../bindings';
import { RegionGeometry } from './geometry';
import { MemfdRegion } from './memfd-region';
import { regionSizeFor } from './region-header';

export class SharedBuffers extends RegionGeometry {
  private readonly region: MemfdRegion;
  /** The mapping; per-packet code reads it, so a plain field rather than a getter. */
  readonly mem: Uint8Array;
  readonly buffer: ArrayBuffer;
  /** Bytes of the whole memfd: the buffers, free space, the header (`size` is the buffers' window only). */
  readonly regionSize: number;
  /** The buffers are on 2 MiB pages (useHugePages succeeded): front-ends are told to map them so too. */
  hugePages = false;

  /** `existingFd`: this thread's own mapping of a region made elsewhere (a worker thread's, src/workers/). */
  constructor(bufCount: number, bufSize: number, base: number, existingFd = -1) {
    if (bufSize % 64 !== 0) throw new RangeError(`bufSize ${bufSize} is not a multiple of 64`);
    super(base, bufSize, bufCount);
    this.regionSize = regionSizeFor(bufCount, bufSize);
    this.region = new MemfdRegion('zcswitch-shared-buffers', this.regionSize, true, existingFd);
    this.mem = this.region.mem;
    this.buffer = this.region.buffer;
  }

  /** The memfd handed to front-ends (-1 once closed, and in a worker thread's view of the region, which keeps none). */
  get fd(): number {
    return this.region.fd;
  }

  close(): void {
    this.region.close();
  }

  /**
   * Ask the kernel to back the region with 2 MiB pages. Returns null when
   * it did, else why not (the region works either way, only slower for
   * big buffers: each one is then a TLB miss for whoever touches it).
   */
  useHugePages(): string | null {
    if (this.size < HUGE_PAGE_SIZE) return `region (${this.size} B) is smaller than one huge page`;
    // Only the buffers: the rest of the power-of-two region (up to half of it) is never populated by the switch.
    const err = adviseHugePages(this.buffer, this.size);
    this.hugePages = err === null;
    if (err === null) return null;
    return `madvise(MADV_COLLAPSE) failed: ${err}${err === 'EINVAL' ? ' (a kernel before 6.1?)' : ''}`;
  }
}
