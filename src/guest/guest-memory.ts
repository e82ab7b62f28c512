/**
 * The guest driver's own memory: one memfd holding its two vrings and a
 * small pool of private buffers (copy targets for packets from classic
 * peers, and transmit buffers for the copy path). It is shared with the
 * back-end through SET_MEM_TABLE exactly as QEMU shares guest RAM, with a
 * guest-physical address for descriptors and a distinct "user" address for
 * vring addresses, so both translations are exercised.
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

export class GuestMemory extends MemfdRegion {
  readonly rings: RingPlacement[];
  /** Byte offset of private slot 0; slot k is at privBase + k × slotSize. */
  readonly privBase: number;

  constructor(ringSizes: number[], readonly privSlots: number, readonly slotSize: number) {
    let off = 0;
    const rings = ringSizes.map((num) => {
      const desc = off;
      const avail = desc + descTableBytes(num);
      const used = align(avail + availRingBytes(num), 4);
      off = align(used + usedRingBytes(num), PAGE);
      return { num, desc, avail, used };
    });
    super('zcswitch-guest', align(off + privSlots * slotSize, PAGE));
    this.rings = rings;
    this.privBase = off;
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
    return GUEST_GPA + off;
  }

  slotOffset(k: number): number {
    return this.privBase + k * this.slotSize;
  }
}
