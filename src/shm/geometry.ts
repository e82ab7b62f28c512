/**
 * Where each buffer of a Shared Buffers region lives: buffer i starts at
 * guest address base + i × bufSize and at byte offset i × bufSize of the
 * mapping. The switch (SharedBuffers) and the guest driver (SharedRegion)
 * share this one definition, so the arithmetic is written once.
 */
import type { SplitRing } from '../virtio/ring';

/** Smallest buffer size (stride) at which headers are loaded ahead: a page. */
export const TOUCH_AHEAD_MIN_STRIDE = 4096;

/**
 * bufAtWords for a oneBlock window, from the geometry's fields passed as
 * values: the zero-copy lane (src/datapath/zc-lane.ts) calls it with
 * locals read once per burst, and inlined it then reloads no field per
 * packet.
 */
export function bufAtInBlock(lo: number, hi: number, baseLo: number, baseHi: number, size: number, shift: number, bufSize: number): number {
  if (hi !== baseHi) return -1;
  const off = (lo - baseLo) | 0;
  if (off < 0 || off >= size) return -1;
  // A power-of-two size: a mask and a shift, no multiplication to check.
  if (shift >= 0) return (off & (bufSize - 1)) === 0 ? off >> shift : -1;
  const b = (off / bufSize) | 0;
  return b * bufSize === off ? b : -1;
}

export class RegionGeometry {
  readonly size: number;
  /**
   * Buffers are far enough apart that each header is on a page of its own,
   * where the hardware prefetchers do not follow a walk over the headers:
   * the switch then loads a burst's headers ahead of the per-packet work
   * (src/datapath/touch-ahead.ts; docs/PERFORMANCE.md, "64 KiB frames").
   */
  readonly touchAhead: boolean;
  /**
   * The base's two 32-bit words, so a descriptor's address is decoded from
   * its own two words with integer arithmetic (the zero-copy fast lane,
   * src/datapath/zc-lane.ts). Valid for the whole window only when
   * oneBlock: the window does not cross a 4 GiB boundary, so every address
   * in it has the high word baseHi. baseLo is the low word as a signed
   * int32 (what `| 0` gives): an integer field, so the arithmetic on it
   * stays 32-bit (base % 2^32 would be a double field, and every use a
   * float operation); a 32-bit store or `| 0` gives the same bits.
   */
  readonly baseLo: number;
  readonly baseHi: number;
  readonly oneBlock: boolean;
  /** log2(bufSize) when it is a power of two (a shift finds the buffer), else -1 (a division does). */
  readonly bufShift: number;

  constructor(readonly base: number, readonly bufSize: number, readonly bufCount: number) {
    this.size = bufCount * bufSize;
    this.touchAhead = bufSize >= TOUCH_AHEAD_MIN_STRIDE;
    this.baseLo = (base % 0x1_0000_0000) | 0;
    this.baseHi = Math.floor(base / 0x1_0000_0000);
    this.oneBlock = this.size > 0 && this.size < 0x8000_0000 && Math.floor((base + this.size - 1) / 0x1_0000_0000) === this.baseHi;
    this.bufShift = bufSize > 0 && (bufSize & (bufSize - 1)) === 0 ? 31 - Math.clz32(bufSize) : -1;
  }

  /** Index of the buffer holding a guest address, or -1 outside the window. */
  indexOf(addr: number): number {
    const off = addr - this.base;
    // The quotient is below 32768, so |0 truncates exactly (and is cheaper than Math.floor).
    return off >= 0 && off < this.size ? (off / this.bufSize) | 0 : -1;
  }

  /** Index of the buffer that starts exactly at a guest address, or -1. */
  indexAt(addr: number): number {
    const b = this.indexOf(addr);
    return b >= 0 && addr === this.base + b * this.bufSize ? b : -1;
  }

  inWindow(addr: number): boolean {
    return addr >= this.base && addr < this.base + this.size;
  }

  /**
   * Write buffer i's address into descriptor id of ring with len, flags and
   * next: from the base's two words when the window is oneBlock, else
   * through the float address.
   */
  setBufDesc(ring: SplitRing, id: number, i: number, len: number, flags: number, next: number): void {
    if (this.oneBlock) ring.setDescWords(id, (this.baseLo + i * this.bufSize) | 0, this.baseHi, len, flags, next);
    else ring.setDesc(id, this.base + i * this.bufSize, len, flags, next);
  }

  /**
   * Index of the buffer starting exactly at the guest address whose 32-bit
   * words are lo and hi (a descriptor's), or -1: with int32 arithmetic when
   * oneBlock (an address in the window is baseLo + off without a carry, so
   * off is an int32 in [0, size) and any other low word gives one outside),
   * else as indexAt.
   */
  bufAtWords(lo: number, hi: number): number {
    if (!this.oneBlock) return this.indexAt(hi * 0x1_0000_0000 + lo);
    return bufAtInBlock(lo, hi, this.baseLo, this.baseHi, this.size, this.bufShift, this.bufSize);
  }

  /** bufAtWords for the address in descriptor id of ring. */
  bufAtDesc(ring: SplitRing, id: number): number {
    return this.bufAtWords(ring.desc32[4 * id], ring.desc32[4 * id + 1]);
  }

  /** Guest address of buffer i. */
  addrOf(i: number): number {
    return this.base + i * this.bufSize;
  }

  /** Byte offset of buffer i inside the mapping. */
  offsetOf(i: number): number {
    return i * this.bufSize;
  }
}

/**
 * One port's view of its domain's buffers (docs/design.md, "Per-port
 * windows"): the geometry at the guest address where that port's VM sees
 * buffer 0, over the switch's one mapping of the region. A SHARED_BUFFERS
 * front-end sees it at the configured base; a VM that maps the region as an
 * ivshmem BAR sees it wherever its firmware put the BAR. Every port has one
 * (one class, so the per-packet calls stay monomorphic).
 */
export class PortWindow extends RegionGeometry {
  /** mem as 16-bit words (the zero-copy lane reads a header's flags and gso_type in one load). */
  readonly mem16: Uint16Array;
  /** mem as 32-bit words (the bridge lane compares a frame's Ethernet addresses in four loads). */
  readonly mem32: Uint32Array;

  constructor(base: number, readonly mem: Uint8Array, bufSize: number, bufCount: number) {
    super(base, bufSize, bufCount);
    this.mem16 = new Uint16Array(mem.buffer, mem.byteOffset, mem.length >>> 1);
    this.mem32 = new Uint32Array(mem.buffer, mem.byteOffset, mem.length >>> 2);
  }
}
