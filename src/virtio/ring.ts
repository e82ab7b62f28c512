/**
 * Split virtqueue memory layout (virtio 1.2 §2.7) as typed-array views.
 *
 *   desc  : num × { addr u64, len u32, flags u16, next u16 }   16-byte aligned
 *   avail : flags u16, idx u16, ring[num] u16, used_event u16   2-byte aligned
 *   used  : flags u16, idx u16, ring[num] {id u32, len u32}, avail_event u16
 *
 * The three parts may live in different memory regions (vhost-user gives
 * three addresses), so each is an (ArrayBuffer, byteOffset) pair. 64-bit
 * fields are accessed as two 32-bit halves; indices shared with the other
 * side go through Atomics so the JIT never reorders them with the data.
 */
import { VIRTQ_MAX_SIZE } from './defs';

export const descTableBytes = (num: number): number => 16 * num;
export const availRingBytes = (num: number): number => 6 + 2 * num;
export const usedRingBytes = (num: number): number => 6 + 8 * num;

export interface RingPart {
  buffer: ArrayBuffer;
  byteOffset: number;
}

export interface RingParts {
  desc: RingPart;
  avail: RingPart;
  used: RingPart;
}

export function isValidQueueSize(num: number): boolean {
  return Number.isInteger(num) && num > 0 && num <= VIRTQ_MAX_SIZE && (num & (num - 1)) === 0;
}

/** Why a ring's addresses cannot be used; null when they can. */
export function ringPartsProblem(num: number, parts: RingParts): string | null {
  if (!isValidQueueSize(num)) return `queue size ${num} is not a power of two in 1..${VIRTQ_MAX_SIZE}`;
  const check = (name: string, p: RingPart, bytes: number, align: number): string | null => {
    if (p.byteOffset % align !== 0) return `${name} ring at offset ${p.byteOffset} is not ${align}-byte aligned`;
    if (p.byteOffset + bytes > p.buffer.byteLength) return `${name} ring (${bytes} bytes) runs past the end of its memory region`;
    return null;
  };
  return (
    check('descriptor', parts.desc, descTableBytes(num), 16) ??
    check('avail', parts.avail, availRingBytes(num), 2) ??
    check('used', parts.used, usedRingBytes(num), 4)
  );
}

/** Typed views over one split ring. Callers must check ringPartsProblem first. */
export class SplitRing {
  readonly num: number;
  readonly mask: number;
  /** desc[i]: [4i]=addr lo, [4i+1]=addr hi, [4i+2]=len */
  readonly desc32: Uint32Array;
  /** desc[i]: [8i+6]=flags, [8i+7]=next */
  readonly desc16: Uint16Array;
  /** [0]=flags, [1]=idx, [2+i]=ring[i], [2+num]=used_event */
  readonly avail: Uint16Array;
  /** [0]=flags, [1]=idx, [2+4num]=avail_event */
  readonly used16: Uint16Array;
  /** entry i: [1+2i]=id, [2+2i]=len */
  readonly used32: Uint32Array;

  constructor(num: number, parts: RingParts) {
    this.num = num;
    this.mask = num - 1;
    this.desc32 = new Uint32Array(parts.desc.buffer, parts.desc.byteOffset, 4 * num);
    this.desc16 = new Uint16Array(parts.desc.buffer, parts.desc.byteOffset, 8 * num);
    this.avail = new Uint16Array(parts.avail.buffer, parts.avail.byteOffset, 3 + num);
    this.used16 = new Uint16Array(parts.used.buffer, parts.used.byteOffset, 3 + 4 * num);
    this.used32 = new Uint32Array(parts.used.buffer, parts.used.byteOffset, 1 + 2 * num);
  }

  descAddr(i: number): number {
    return this.desc32[4 * i + 1] * 0x1_0000_0000 + this.desc32[4 * i];
  }
  descLen(i: number): number {
    return this.desc32[4 * i + 2];
  }
  descFlags(i: number): number {
    return this.desc16[8 * i + 6];
  }
  descNext(i: number): number {
    return this.desc16[8 * i + 7];
  }
  setDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    this.desc32[4 * i] = addr >>> 0;
    this.desc32[4 * i + 1] = Math.floor(addr / 0x1_0000_0000);
    this.desc32[4 * i + 2] = len;
    this.desc16[8 * i + 6] = flags;
    this.desc16[8 * i + 7] = next;
  }
  /** setDesc with the address as its two 32-bit words (no float arithmetic per descriptor). */
  setDescWords(i: number, addrLo: number, addrHi: number, len: number, flags: number, next: number): void {
    const d = this.desc32;
    d[4 * i] = addrLo;
    d[4 * i + 1] = addrHi;
    d[4 * i + 2] = len;
    this.desc16[8 * i + 6] = flags;
    this.desc16[8 * i + 7] = next;
  }
  setDescAddr(i: number, addr: number): void {
    this.desc32[4 * i] = addr >>> 0;
    this.desc32[4 * i + 1] = Math.floor(addr / 0x1_0000_0000);
  }

  get usedEventIdx(): number {
    return this.avail[2 + this.num];
  }
  get availEventIdx(): number {
    return this.used16[2 + 4 * this.num];
  }
}

/**
 * vring_need_event (virtio 1.2 §2.7.10): notify if event_idx lies in the
 * window of entries published since the last notification.
 */
export function needEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}
