/**
 * One classification of a transmitted descriptor chain, used by both
 * forwarders, so pair and bridge mode apply the same checks in the same
 * order (docs/protocol.md, "Descriptors"):
 *
 * 1. the chain walked cleanly (head and next in range, no loop, not too long,
 *    no indirect table) and every descriptor is readable;
 * 2. a chain whose first address is not in the Shared Buffers window (or a
 *    port that did not map the region) is copied;
 * 3. a header with no frame (length 12), alone or as a chain of such links,
 *    is a gift: its links are checked one by one (giftLink);
 * 4. anything else in the window is one descriptor starting exactly at a
 *    buffer, within it, and the sender must own that buffer.
 *
 * The switch never reads buffer memory to classify: a gift is known by its
 * length, so a jumbo region costs no TLB miss per descriptor.
 */
import type { OwnershipLedger } from '../shm/ledger';
import type { PortWindow } from '../shm/geometry';
import { CHAIN_BAD_HEAD, CHAIN_BAD_NEXT, CHAIN_INDIRECT, CHAIN_LOOP, CHAIN_TOO_LONG, type ChainSegments } from '../virtio/chain';
import { ETH_MAX_GSO, ETH_MIN_FRAME, VIRTIO_NET_HDR_SIZE } from '../virtio/defs';
import { Drop, type PortCounters } from './counters';

/** Smallest and largest packet (virtio_net_hdr + Ethernet frame) the switch forwards. */
export const MIN_PACKET = VIRTIO_NET_HDR_SIZE + ETH_MIN_FRAME;
export const MAX_PACKET = VIRTIO_NET_HDR_SIZE + ETH_MAX_GSO;

export const enum TxClass {
  /** Refused: the reason is in TxClassifier.drop. */
  Drop,
  /** Not in the region: the payload is copied. */
  Copy,
  /** Empty shared buffers handed to the peer: check each link with giftLink(). */
  Gift,
  /** A packet in shared buffer TxClassifier.buf, owned by the sender. */
  Shared,
}

/** Map a ChainWalker error to its drop reason. */
export function chainDrop(code: number): Drop {
  switch (code) {
    case CHAIN_BAD_HEAD: return Drop.BadHead;
    case CHAIN_BAD_NEXT: return Drop.BadNext;
    case CHAIN_LOOP: return Drop.ChainLoop;
    case CHAIN_TOO_LONG: return Drop.ChainTooLong;
    case CHAIN_INDIRECT: return Drop.Indirect;
    default: return Drop.BadOrder;
  }
}

export class TxClassifier {
  /** Why the last chain was refused (TxClass.Drop, or giftLink() returning -1). */
  drop: Drop = Drop.BadOrder;
  /** The buffer of the last TxClass.Shared chain. */
  buf = -1;

  constructor(
    /** The sender's window: where its VM sees the buffers (PortQueues.setWindow replaces it). */
    public win: PortWindow,
    private readonly ledger: OwnershipLedger,
  ) {}

  /**
   * Classify the chain in seg: cnt is what ChainWalker.walk returned for it
   * (its descriptor count, or a negative error); zeroCopy says whether the
   * sender mapped the region.
   */
  classify(seg: ChainSegments, cnt: number, zeroCopy: boolean, srcId: number): TxClass {
    if (cnt < 0) return this.refuse(chainDrop(cnt));
    if (seg.readable !== cnt) return this.refuse(Drop.BadOrder);
    const shared = this.win;
    const addr = seg.addr[0];
    const b = zeroCopy ? shared.indexOf(addr) : -1;
    if (b < 0) return TxClass.Copy;
    const len = seg.len[0];
    if (cnt > 1 || len === VIRTIO_NET_HDR_SIZE) return TxClass.Gift;
    if (addr !== shared.addrOf(b) || len > shared.bufSize) return this.refuse(Drop.BadZcDesc);
    if (this.ledger.owner[b] !== srcId) return this.refuse(Drop.NotOwner);
    this.buf = b;
    return TxClass.Shared;
  }

  /** Link i of a gift: the buffer, a whole one of 12 bytes owned by the sender; -1 (reason in drop) otherwise. */
  giftLink(seg: ChainSegments, i: number, srcId: number): number {
    const addr = seg.addr[i];
    const b = this.win.indexAt(addr);
    if (b < 0 || seg.len[i] !== VIRTIO_NET_HDR_SIZE) {
      this.drop = Drop.BadZcDesc;
      return -1;
    }
    if (this.ledger.owner[b] !== srcId) {
      this.drop = Drop.NotOwner;
      return -1;
    }
    return b;
  }

  /**
   * A gift where gifts mean nothing (swaps: every VM keeps its count, so the
   * buffers are handed straight back in the tx completion): each link is
   * checked like any gift link and counted, a gift or a drop, on c.
   */
  checkGiftLinks(seg: ChainSegments, cnt: number, srcId: number, c: PortCounters): void {
    for (let i = 0; i < cnt; i++) {
      if (this.giftLink(seg, i, srcId) >= 0) c.giftsIn++;
      else c.drop(this.drop);
    }
  }

  private refuse(reason: Drop): TxClass {
    this.drop = reason;
    return TxClass.Drop;
  }
}
