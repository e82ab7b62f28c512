/**
 * Descriptor-chain walking with full validation of the ring-level fields:
 * head and next in range, no loops, bounded length, no indirect tables
 * (we never offer VIRTIO_RING_F_INDIRECT_DESC). Addresses and lengths are
 * the caller's to check against its memory map. Results land in a reusable
 * ChainSegments so the hot path allocates nothing.
 */
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_MAX_CHAIN } from './defs';
import { SplitRing } from './ring';

export const CHAIN_BAD_HEAD = -1;
export const CHAIN_BAD_NEXT = -2;
export const CHAIN_LOOP = -3;
export const CHAIN_TOO_LONG = -4;
export const CHAIN_INDIRECT = -5;
/** A device-writable descriptor before a device-readable one (spec 2.7.4.2). */
export const CHAIN_BAD_ORDER = -6;

export class ChainSegments {
  readonly addr = new Float64Array(VIRTQ_MAX_CHAIN);
  readonly len = new Uint32Array(VIRTQ_MAX_CHAIN);
  /** Index of each segment's descriptor (for rewriting addresses on swap). */
  readonly desc = new Uint16Array(VIRTQ_MAX_CHAIN);
  count = 0;
  /** Segments [0, readable) are device-readable, the rest device-writable. */
  readable = 0;
  totalLen = 0;
}

/** Loop detection by generation stamps: O(chain length), no clearing. */
export class ChainWalker {
  private readonly seen: Uint32Array;
  private gen = 0;

  constructor(num: number) {
    this.seen = new Uint32Array(num);
  }

  /** Walk the chain at head into out; returns segment count or a CHAIN_* error. */
  walk(ring: SplitRing, head: number, out: ChainSegments): number {
    const num = ring.num;
    if (head >= num) return CHAIN_BAD_HEAD;
    // Fast path: a lone descriptor (every zero-copy buffer) cannot loop.
    const f0 = ring.descFlags(head);
    if ((f0 & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) === 0) {
      const len = ring.descLen(head);
      out.addr[0] = ring.descAddr(head);
      out.len[0] = len;
      out.desc[0] = head;
      out.count = 1;
      out.readable = f0 & VIRTQ_DESC_F_WRITE ? 0 : 1;
      out.totalLen = len;
      return 1;
    }
    if (++this.gen === 0xffffffff) {
      this.seen.fill(0);
      this.gen = 1;
    }
    const gen = this.gen;
    let i = head;
    let n = 0;
    let total = 0;
    let readable = 0;
    for (;;) {
      if (this.seen[i] === gen) return CHAIN_LOOP;
      this.seen[i] = gen;
      if (n === VIRTQ_MAX_CHAIN) return CHAIN_TOO_LONG;
      const flags = ring.descFlags(i);
      if (flags & VIRTQ_DESC_F_INDIRECT) return CHAIN_INDIRECT;
      const len = ring.descLen(i);
      if (flags & VIRTQ_DESC_F_WRITE) {
        // all readable segments come first
      } else if (readable !== n) {
        return CHAIN_BAD_ORDER;
      } else {
        readable++;
      }
      out.addr[n] = ring.descAddr(i);
      out.len[n] = len;
      out.desc[n] = i;
      total += len;
      n++;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      i = ring.descNext(i);
      if (i >= num) return CHAIN_BAD_NEXT;
    }
    out.count = n;
    out.readable = readable;
    out.totalLen = total;
    return n;
  }
}
