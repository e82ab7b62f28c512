/**
 * Delivering a copied packet into a receiver's classic rx buffers (chains in
 * its own memory): one chain, or with VIRTIO_NET_F_MRG_RXBUF as many as the
 * packet needs, the count written into the first header's num_buffers.
 * Capacity is checked before any buffer is taken, so a packet that does not
 * fit leaves the receiver's postings untouched. Shared by both forwarders.
 */
import { ChainSegments } from '../virtio/chain';
import { VIRTIO_NET_HDR_F_GIFT_BUFFER, VIRTIO_NET_HDR_F_RETURNED } from '../vhost/protocol';
import { VIRTIO_NET_HDR_SIZE } from '../virtio/defs';
import { netHdrFlags, setNetHdrFlags, setNumBuffers } from '../virtio/net-hdr';
import { Drop } from './counters';
import { ResolvedChain, copyChain, resolveChain } from './copy';
import type { PortQueues } from './port-queues';

/** Most rx chains one packet may use (65535 bytes in ~1.5 KiB buffers needs 43). */
const MAX_MERGE = 64;

export class ClassicRxFiller {
  private readonly seg = new ChainSegments();
  private readonly res: ResolvedChain[] = Array.from({ length: MAX_MERGE }, () => new ResolvedChain());

  /** Copy the packet in src (header + frame, total bytes) to dst's rx queue dq; returns -1 or a Drop. */
  fill(dst: PortQueues, dq: number, src: ResolvedChain, total: number): number {
    const rxq = dst.rxqs[dq]!;
    const walker = dst.rxWalkers[dq]!;
    const mem = dst.mem;
    const postings = dst.postings;
    const most = dst.mergeable ? MAX_MERGE : 1;
    // Pass 1: find enough valid buffers without taking them.
    let n = 0;
    let room = 0;
    while (room < total && n < most) {
      const head = postings.peekCopyTarget(dq, n);
      if (head < 0) return n === 0 ? Drop.NoRxBuffer : dst.mergeable ? Drop.NoRxBuffer : Drop.RxTooSmall;
      const r = this.res[n];
      const c = walker.walk(rxq.ring, head, this.seg);
      if (c < 0 || !resolveChain(this.seg, 0, c, mem, null, r) || (n === 0 && r.len[0] < VIRTIO_NET_HDR_SIZE)) {
        // A broken posting: hand it back empty and look at the next one.
        postings.removeCopyTarget(dq, n);
        rxq.pushUsed(head, 0);
        dst.counters.drop(Drop.BadRxDesc);
        continue;
      }
      room += r.total;
      n++;
    }
    if (room < total) {
      // Without mergeable buffers the one posted buffer is too small: it goes back empty.
      const head = postings.takeCopyTarget(dq);
      rxq.pushUsed(head, 0);
      return Drop.RxTooSmall;
    }
    // Pass 2: take them and copy.
    let off = 0;
    for (let i = 0; i < n; i++) {
      const head = postings.takeCopyTarget(dq);
      const w = copyChain(src, this.res[i], off);
      rxq.pushUsed(head, w);
      off += w;
    }
    const first = this.res[0];
    const hdr = first.mem[0];
    const hoff = first.off[0];
    // Our header flags are for the switch, not for the receiver.
    setNetHdrFlags(hdr, hoff, netHdrFlags(hdr, hoff) & ~(VIRTIO_NET_HDR_F_GIFT_BUFFER | VIRTIO_NET_HDR_F_RETURNED));
    setNumBuffers(hdr, hoff, n);
    return -1;
  }
}
