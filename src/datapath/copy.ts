/**
 * The copy path (docs/protocol.md, ownership rule 5; classic virtio): resolve a descriptor chain's
 * guest addresses to (mapped memory, offset) pairs, then copy one chain's
 * bytes into another's. Only used when zero-copy delivery is impossible.
 */
import type { ChainSegments } from '../virtio/chain';
import { VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED } from '../vhost/protocol';
import { VIRTQ_MAX_CHAIN } from '../virtio/defs';
import { netHdrFlags, setNetHdrFlags, setNumBuffers } from '../virtio/net-hdr';
import type { MemoryTable } from '../vhost/memory-table';
import type { PortWindow } from '../shm/geometry';

const EMPTY = new Uint8Array(0);

/** A chain's segments translated into the switch's mappings. */
export class ResolvedChain {
  readonly mem: Uint8Array[] = new Array<Uint8Array>(VIRTQ_MAX_CHAIN).fill(EMPTY);
  readonly off = new Float64Array(VIRTQ_MAX_CHAIN);
  readonly len = new Uint32Array(VIRTQ_MAX_CHAIN);
  count = 0;
  total = 0;
}

/**
 * Translate segments [from, to) of seg. Addresses in the port's window
 * resolve to the region only when the port maps it (shared != null); others go
 * through the port's memory table. False if any byte is outside both.
 */
export function resolveChain(
  seg: ChainSegments, from: number, to: number, mem: MemoryTable | null, shared: PortWindow | null, out: ResolvedChain,
): boolean {
  let k = 0;
  let total = 0;
  for (let i = from; i < to; i++) {
    const a = seg.addr[i];
    const l = seg.len[i];
    if (shared !== null && a >= shared.base && a + l <= shared.base + shared.size) {
      out.mem[k] = shared.mem;
      out.off[k] = a - shared.base;
    } else {
      const r = mem === null ? -1 : mem.findGpa(a, l);
      if (r < 0) return false;
      out.mem[k] = mem!.mem[r];
      out.off[k] = a - mem!.gpaStart[r];
    }
    out.len[k] = l;
    total += l;
    k++;
  }
  out.count = k;
  out.total = total;
  return true;
}

/**
 * Copy bytes of src, from byte `from` of its stream, into dst's segments
 * until either runs out; returns the count.
 */
export function copyChain(src: ResolvedChain, dst: ResolvedChain, from = 0): number {
  let si = 0;
  let so = from;
  while (si < src.count && so >= src.len[si]) {
    so -= src.len[si];
    si++;
  }
  let di = 0;
  let dOff = 0;
  let copied = 0;
  while (si < src.count && di < dst.count) {
    const n = Math.min(src.len[si] - so, dst.len[di] - dOff);
    if (n > 0) {
      const start = src.off[si] + so;
      dst.mem[di].set(src.mem[si].subarray(start, start + n), dst.off[di] + dOff);
      copied += n;
      so += n;
      dOff += n;
    }
    if (so === src.len[si]) {
      si++;
      so = 0;
    }
    if (dOff === dst.len[di]) {
      di++;
      dOff = 0;
    }
  }
  return copied;
}

/**
 * Copy a whole packet (virtio_net_hdr + frame) into a receiver's buffer and
 * make its header the receiver's: our GIFT/RETURNED flags are for the
 * switch only, and the packet fills exactly one buffer.
 */
export function copyPacketInto(src: ResolvedChain, dst: ResolvedChain): void {
  copyChain(src, dst);
  const hdr = dst.mem[0];
  const off = dst.off[0];
  setNetHdrFlags(hdr, off, netHdrFlags(hdr, off) & ~(VIRTIO_NET_HDR_F_GIFT_BUFFER | VIRTIO_NET_HDR_F_RETURNED));
  setNumBuffers(hdr, off, 1);
}
