/**
 * A front-end's memory as announced by SET_MEM_TABLE: every region mapped
 * once, with guest-physical (descriptor addresses) and front-end-virtual
 * (vring addresses) translation. Lookups are a short linear scan over at
 * most 8 regions with plain numbers (addresses < 2^53), no allocation.
 */
import { closeFd, dupFd, fdSize, mmapShared, munmap } from '../../bindings';
import { forgetGuestMapping, guardGuestMapping } from './guest-faults';
import type { MemRegionDesc } from './codec';
import { ProtocolError } from './codec';
import type { RingPart } from '../virtio/ring';
import { fileIdentity } from '../../bindings';

/** Addresses beyond this are refused: we keep addresses as doubles. */
const MAX_ADDR = 2 ** 52;

export class MemoryTable {
  count: number;
  readonly gpaStart: Float64Array;
  readonly gpaEnd: Float64Array;
  readonly uaStart: Float64Array;
  readonly uaEnd: Float64Array;
  readonly mem: Uint8Array[];
  /** Identity of the file behind each region ("dev:ino", fileIdentity): how the switch spots its own region (an ivshmem BAR). */
  readonly fileIds: string[] = [];
  /** Each region's mmap_offset in its file. */
  readonly mmapOffsets: number[] = [];
  private readonly buffers: ArrayBuffer[];
  /** Guard ids of the mappings (guest-faults.ts). */
  private readonly guards: number[] = [];
  /** keepFds: a dup of each region's fd, open while mapped (a worker thread maps the same memory again: src/workers/). */
  readonly fds: number[] = [];
  /** The regions as announced (what a worker needs to map them again). */
  readonly regions: MemRegionDesc[];

  /**
   * Checks and maps every region; on any failure unmaps what it mapped and
   * closes all fds. `onFault` runs (from pollGuestFaults) when a mapping
   * faults because the front-end's file shrank under it.
   */
  constructor(regions: MemRegionDesc[], fds: number[], onFault: () => void = () => {}, keepFds = false) {
    const n = regions.length;
    this.regions = regions;
    this.count = n;
    this.gpaStart = new Float64Array(n);
    this.gpaEnd = new Float64Array(n);
    this.uaStart = new Float64Array(n);
    this.uaEnd = new Float64Array(n);
    this.mem = [];
    this.buffers = [];
    try {
      for (let i = 0; i < n; i++) {
        const r = regions[i];
        const size = Number(r.memorySize);
        const gpa = Number(r.guestPhysAddr);
        const ua = Number(r.userspaceAddr);
        const off = Number(r.mmapOffset);
        if (size <= 0 || gpa + size > MAX_ADDR || ua + size > MAX_ADDR || off + size > MAX_ADDR) {
          throw new ProtocolError(`SET_MEM_TABLE: region ${i} (gpa 0x${r.guestPhysAddr.toString(16)}, size 0x${r.memorySize.toString(16)}) is empty or out of range`);
        }
        for (let j = 0; j < i; j++) {
          if (gpa < this.gpaEnd[j] && this.gpaStart[j] < gpa + size) {
            throw new ProtocolError(`SET_MEM_TABLE: region ${i} overlaps region ${j} in guest-physical space`);
          }
        }
        checkAgainstFile(i, r, fds[i]);
        this.fileIds.push(fileIdentity(fds[i]));
        this.mmapOffsets.push(off);
        let buf: ArrayBuffer;
        try {
          buf = mmapShared(fds[i], size, off);
        } catch (e) {
          throw new ProtocolError(`SET_MEM_TABLE: cannot map region ${i} (size 0x${size.toString(16)}, offset 0x${off.toString(16)}): ${(e as Error).message}`);
        }
        this.buffers.push(buf);
        if (keepFds) this.fds.push(dupFd(fds[i]));
        this.guards.push(guardGuestMapping(buf, onFault));
        this.mem.push(new Uint8Array(buf));
        this.gpaStart[i] = gpa;
        this.gpaEnd[i] = gpa + size;
        this.uaStart[i] = ua;
        this.uaEnd[i] = ua + size;
      }
    } catch (e) {
      this.unmap();
      throw e;
    } finally {
      // The mappings keep the memory alive; the fds are not needed.
      for (const fd of fds) closeFdQuiet(fd);
    }
  }

  /** Region holding [gpa, gpa+len), or -1. */
  findGpa(gpa: number, len: number): number {
    for (let i = 0; i < this.count; i++) {
      if (gpa >= this.gpaStart[i] && gpa + len <= this.gpaEnd[i]) return i;
    }
    return -1;
  }

  /** True when [gpa, gpa+len) overlaps any region (used to keep the Shared Buffers window clear). */
  overlapsGpa(gpa: number, len: number): boolean {
    for (let i = 0; i < this.count; i++) {
      if (gpa < this.gpaEnd[i] && this.gpaStart[i] < gpa + len) return true;
    }
    return false;
  }

  /** A front-end virtual address range as (buffer, offset), or null. */
  translateUser(ua: number, len: number): RingPart | null {
    for (let i = 0; i < this.count; i++) {
      if (ua >= this.uaStart[i] && ua + len <= this.uaEnd[i]) {
        return { buffer: this.buffers[i], byteOffset: ua - this.uaStart[i] };
      }
    }
    return null;
  }

  unmap(): void {
    // A fault taken before now is still reported to its owner.
    for (const id of this.guards) forgetGuestMapping(id);
    this.guards.length = 0;
    for (const b of this.buffers) {
      try {
        munmap(b);
      } catch {
        /* already unmapped */
      }
    }
    this.buffers.length = 0;
    for (const fd of this.fds) closeFdQuiet(fd);
    this.fds.length = 0;
    this.mem.length = 0;
    this.count = 0;
  }
}

/**
 * Region i must lie inside the file behind its fd: size > 0, mmap_offset +
 * size without 64-bit overflow and at most the file's size (fstat). Checked
 * on the raw 64-bit values, before any conversion to a number.
 */
function checkAgainstFile(i: number, r: MemRegionDesc, fd: number): void {
  const what = `SET_MEM_TABLE: region ${i} (size 0x${r.memorySize.toString(16)}, mmap_offset 0x${r.mmapOffset.toString(16)})`;
  if (r.memorySize === 0n) throw new ProtocolError(`${what} is empty`);
  const end = r.mmapOffset + r.memorySize;
  if (end > 0xffff_ffff_ffff_ffffn) throw new ProtocolError(`${what}: mmap_offset + size overflows 64 bits`);
  let fileSize: number;
  try {
    fileSize = fdSize(fd);
  } catch (e) {
    throw new ProtocolError(`${what}: cannot fstat its fd: ${(e as Error).message}`);
  }
  if (end > BigInt(fileSize)) {
    throw new ProtocolError(`${what} ends at 0x${end.toString(16)}, past the end of its file (0x${fileSize.toString(16)} bytes)`);
  }
}

export function closeFdQuiet(fd: number): void {
  if (fd < 0) return;
  try {
    closeFd(fd);
  } catch {
    /* already closed */
  }
}
