/**
 * The guest driver's own memory: its vrings and a small pool of private
 * buffers (copy targets for packets from classic peers, and transmit
 * buffers for the copy path). Over vhost-user it is a memfd shared with the
 * back-end through SET_MEM_TABLE exactly as QEMU shares guest RAM, with a
 * guest-physical address for descriptors and a distinct "user" address for
 * vring addresses, so both translations are exercised. Inside a VM (the PCI
 * transport) it is a mapped device BAR whose guest-physical address the
 * device can reach (pci/ring-memory.ts).
 */
import { MemfdRegion } from '../shm/memfd-region';
import { availRingBytes, descTableBytes, usedRingBytes, type RingParts } from '../virtio/ring';

export const GUEST_GPA = 0x1_0000_0000;
export const GUEST_UADDR = 0x7f00_0000_0000;

const PAGE = 4096;
const align = (n: number, a: number): number => Math.ceil(n / a) * a;

export interface RingPlacement {
  num: number;
  desc: number;
  avail: number;
  used: number;
}

/** Memory the rings and slots live in, and the guest-physical address of its first byte. */
export interface GuestMemoryBacking {
  readonly buffer: ArrayBuffer;
  /** The fd to share with a vhost-user back-end (-1: none, the device reaches it by address). */
  readonly fd: number;
  readonly gpaBase: number;
  close(): void;
}

/** The default backing: a memfd at GUEST_GPA, shared through SET_MEM_TABLE. */
function memfdBacking(size: number): GuestMemoryBacking {
  const r = new MemfdRegion('zcswitch-guest', size);
  return { buffer: r.buffer, get fd() { return r.fd; }, gpaBase: GUEST_GPA, close: () => r.close() };
}

export class GuestMemory {
  readonly rings: RingPlacement[];
  /** Byte offset of private slot 0; slot k is at privBase + k × slotSize. */
  readonly privBase: number;
  readonly size: number;
  readonly buffer: ArrayBuffer;
  readonly mem: Uint8Array;
  private readonly backing: GuestMemoryBacking;

  /** `backing` gets the size needed and returns memory at least that large. */
  constructor(
    ringSizes: number[], readonly privSlots: number, readonly slotSize: number,
    backing: (size: number) => GuestMemoryBacking = memfdBacking,
  ) {
    let off = 0;
    const rings = ringSizes.map((num) => {
      const desc = off;
      const avail = desc + descTableBytes(num);
      const used = align(avail + availRingBytes(num), 4);
      off = align(used + usedRingBytes(num), PAGE);
      return { num, desc, avail, used };
    });
    this.size = align(off + privSlots * slotSize, PAGE);
    this.backing = backing(this.size);
    if (this.backing.buffer.byteLength < this.size) {
      this.backing.close();
      throw new Error(`guest memory needs ${this.size} bytes, its backing has ${this.backing.buffer.byteLength}`);
    }
    this.buffer = this.backing.buffer;
    this.mem = new Uint8Array(this.buffer, 0, this.size);
    this.rings = rings;
    this.privBase = off;
  }

  get fd(): number {
    return this.backing.fd;
  }

  ringParts(i: number): RingParts {
    const r = this.rings[i];
    return {
      desc: { buffer: this.buffer, byteOffset: r.desc },
      avail: { buffer: this.buffer, byteOffset: r.avail },
      used: { buffer: this.buffer, byteOffset: r.used },
    };
  }

  /** Front-end "user" address of a byte offset (what SET_VRING_ADDR carries). */
  uaddr(off: number): number {
    return GUEST_UADDR + off;
  }

  /** Guest-physical address of a byte offset (what descriptors carry). */
  gpa(off: number): number {
    return this.backing.gpaBase + off;
  }

  slotOffset(k: number): number {
    return this.privBase + k * this.slotSize;
  }

  close(): void {
    this.backing.close();
  }
}
