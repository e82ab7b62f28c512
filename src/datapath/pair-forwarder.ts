/**
 * Pair mode (docs/protocol.md, "Pair mode: swapping
 * buffers" and "Ownership (pair mode)"): every packet a VM transmits goes
 * to its one peer. How a shared buffer moves is the pair exchange
 * (forwarding.pairExchange):
 *
 * - **swap**: as on a bridge, the sender's buffer goes into
 *   the peer's posted own empty buffer's rx descriptor and that empty
 *   buffer comes back in the sender's tx descriptor (src/datapath/swap.ts):
 *   one descriptor and one rx posting per packet. A frame that cannot be
 *   swapped is copied into the peer's copy targets and its tx descriptor is
 *   completed unchanged, so the sender keeps its buffer; a gift is handed
 *   straight back. A frame whose peer has no empty buffer waits (FlowControl).
 * - **gift** (the default): a shared buffer moves by completing the peer's posted rx
 *   descriptor for the same buffer (found by index in its RxPostings) and
 *   the ledger records the new owner; the peer gifts buffers back. A shared
 *   buffer that was not delivered goes back to its sender (RETURNED).
 *
 * Anything else is copied into a classic rx buffer, or dropped with a
 * counted reason.
 *
 * Sharing domains (docs/design.md, "Trust model"): a shared buffer moves only
 * between two ports of one domain. A pair whose ports are in different
 * domains copies every frame into the receiver's copy targets (in its own
 * memory), and the sender's buffer goes back to the sender; gifts go back
 * too. Each port classifies, posts and owns buffers of its own domain only.
 */
import { ChainSegments } from '../virtio/chain';
import { ETH_HDR_MAX, VIRTIO_NET_HDR_SIZE } from '../virtio/defs';
import { Drop, type PortCounters, countRx, countTx } from './counters';
import { ClassicRxFiller } from './classic-rx';
import { ResolvedChain, resolveChain } from './copy';
import { FlowControl } from './flow-control';
import { MirrorDir, mirrorChain } from './mirror';
import type { PortQueues } from './port-queues';
import type { DeviceQueue } from '../virtio/device-queue';
import { Offloads, headerUnread } from './segment';
import { swapBuffers } from './swap';
import { HeaderTouch } from './touch-ahead';
import { MAX_PACKET, MIN_PACKET, TxClass } from './tx-class';
import { giftChainShared, giftShared } from './zc-gifts';
import { forwardMoved, forwardSwapped, laneOpen } from './zc-lane';

export class PairForwarder {
  private readonly seg = new ChainSegments();
  private readonly srcRes = new ResolvedChain();
  private readonly classic = new ClassicRxFiller();
  /** Checks each frame's virtio_net_hdr; cuts or checksums for a receiver that cannot take it as it is. */
  private readonly offloads = new Offloads();
  /** Loads the burst's buffer headers ahead of the per-packet work. */
  private readonly touch = new HeaderTouch();

  constructor(
    /** Most packets per tx queue per round (forwarding.burst; a reload may change it between rounds). */
    public burst: number,
    /** Back-pressure toward a peer without rx buffers (forwarding.rxWaitMs; 0: drop at once). */
    readonly flow = new FlowControl(0),
    /** forwarding.pairExchange is "swap": buffers are swapped, not moved by address (fixed for the switch's life). */
    readonly swap = false,
  ) {}

  /**
   * Move up to `burst` packets from src's tx queue qi to dst; returns how
   * many tx entries were consumed. The per-queue burst is the fairness
   * budget: every queue of every port gets at most this much per round.
   * Stops early, leaving the rest in the ring, when the peer has no room
   * for a copy (back-pressure, FlowControl).
   */
  forward(src: PortQueues, qi: number, dst: PortQueues | null): number {
    src.txBlocked[qi] = 0;
    const n = src.txPending(qi, this.burst);
    if (n === 0) return 0;
    const txq = src.txqs[qi]!;
    // The burst's header misses at once, before the per-packet work (touch-ahead.ts); with small buffers not even a call.
    if (src.zeroCopy && src.win.touchAhead) this.touch.txHeaders(txq, src.win, n);
    // The common case (zc-lane.ts): the fast lane takes the whole burst, and none of the general path's set-up is done.
    const lane = laneOpen(src, dst);
    const k = !lane ? 0 : this.swap ? forwardSwapped(src, qi, txq, dst!, n) : forwardMoved(src, qi, txq, dst!, n);
    return k === n ? n : this.forwardEach(src, qi, txq, dst, n, k, lane);
  }

  /**
   * forward() from entry k of its burst of n on: one entry at a time through
   * the general path, the lane taking every run (and gift chain) it can.
   */
  private forwardEach(src: PortQueues, qi: number, txq: DeviceQueue, dst: PortQueues | null, n: number, k: number, lane: boolean): number {
    const { seg } = this;
    const { ledger, tx } = src;
    const c = src.counters;
    const walker = src.txWalkers[qi]!;
    const num = txq.ring.num;
    const srcId = src.id;
    const dstUp = dst !== null && dst.nq > 0;
    // Zero-copy only within one sharing domain; across domains every frame is copied.
    const dstZc = dstUp && dst!.domain === src.domain;
    // A shared packet moves by the peer's posting for it; anything else is copied into its copy targets.
    const dstMoves = dstZc && dst!.zeroCopy;
    const copyQ = dstUp ? dst!.rxQueueFor(qi) : -1;
    const waits = copyQ >= 0 && this.flow.waitMs > 0;
    const swap = this.swap;
    for (; k < n; k++) {
      if (lane) {
        k += swap ? forwardSwapped(src, qi, txq, dst!, n - k) : forwardMoved(src, qi, txq, dst!, n - k);
        if (k === n) break;
        // A gift chain whose every link the lane can hand over: taken whole, without the walk.
        if (!swap && giftChainShared(src, qi, txq, dst!)) continue;
      }
      const head = txq.popAvail();
      const cnt = walker.walk(txq.ring, head, seg);
      const cls = tx.classify(seg, cnt, src.zeroCopy, srcId);
      if (swap && cls === TxClass.Shared) {
        if (this.swapShared(src, qi, txq, head, dst, dstZc)) continue;
        txq.unpopAvail();
        src.txBlocked[qi] = 1;
        break;
      }
      // Back-pressure (FlowControl): a frame to be copied waits in the ring while the peer has no copy target.
      if (waits && (cls === TxClass.Copy || (cls === TxClass.Shared && !dstMoves)) &&
        seg.totalLen >= MIN_PACKET && seg.totalLen <= MAX_PACKET && !dst!.hasCopyTarget(copyQ)) {
        if (this.flow.shouldWait(dst!)) {
          txq.unpopAvail();
          src.txBlocked[qi] = 1;
          break;
        }
        if (head < num) txq.pushUsed(head, 0);
        c.drop(Drop.RxWaitTimeout);
        if (cls === TxClass.Shared) {
          src.repost(tx.buf, qi);
          if (!src.returnBuffer(tx.buf)) c.drop(Drop.NoReturnSlot);
        }
        continue;
      }
      if (head < num) txq.pushUsed(head, 0);
      // Taken: a shared buffer counts as posted on the sender's rx where it asked for that (rx descriptors by buffer).
      if (cls === TxClass.Shared) src.repost(tx.buf, qi);
      if (cls === TxClass.Drop) {
        c.drop(tx.drop);
        continue;
      }
      if (cls === TxClass.Copy) {
        this.copyPacket(src, qi, dst, cnt);
        continue;
      }
      if (cls === TxClass.Gift) {
        // With swaps a gift means nothing: it is handed straight back.
        if (swap) tx.checkGiftLinks(seg, cnt, srcId, c);
        else this.gifts(src, qi, dstZc ? dst : null, cnt);
        continue;
      }
      const b = tx.buf;
      const len = seg.len[0];
      if (len < MIN_PACKET) {
        c.drop(Drop.TooShort);
        if (!src.returnBuffer(b)) c.drop(Drop.NoReturnSlot);
        continue;
      }
      // A header that goes unread (passesUnread) is read only if the frame ends up copied (copyPacket).
      const unread = dstMoves && this.passesUnread(src, dst!, len);
      const bad = unread ? -1 : this.inspectShared(src, b, len);
      if (bad >= 0) {
        c.drop(bad);
        if (!src.returnBuffer(b)) c.drop(Drop.NoReturnSlot);
        continue;
      }
      // A frame the peer did not negotiate (TSO, an open checksum) takes the copy path, which does the work.
      const dq = dstZc && (unread || this.offloads.fits(dst!.offloadCaps, dst!.mtu)) ? dst!.completeShared(b, len) : -1;
      if (dq >= 0) {
        ledger.transfer(b, dst!.id);
        this.delivered(src, qi, dst!, dq, b, len, !unread && this.offloads.gso);
        continue;
      }
      // No matching rx descriptor at the peer: copy if we can, and in any
      // case hand the buffer back to its sender.
      if (dstUp) this.copyPacket(src, qi, dst, 1);
      else c.drop(Drop.PeerDown);
      if (!src.returnBuffer(b)) c.drop(Drop.NoReturnSlot);
    }
    return k;
  }

  /**
   * Swap exchange: the shared packet in this.seg (buffer tx.buf, tx
   * descriptor head) is swapped with dst's own empty buffer, else copied
   * into its copy targets or dropped; in those cases the tx descriptor is
   * completed unchanged and the sender keeps its buffer. False: nothing was
   * done, the frame waits at the head of the ring for dst's empty buffer.
   */
  private swapShared(src: PortQueues, qi: number, txq: DeviceQueue, head: number, dst: PortQueues | null, dstZc: boolean): boolean {
    const c = src.counters;
    const b = src.tx.buf;
    const len = this.seg.len[0];
    if (len < MIN_PACKET) return this.keep(txq, head, c, Drop.TooShort);
    // A header that goes unread (passesUnread) is read only if the frame ends up copied (copyPacket).
    const unread = dstZc && dst !== null && dst.zeroCopy && this.passesUnread(src, dst, len);
    const bad = unread ? -1 : this.inspectShared(src, b, len);
    if (bad >= 0) return this.keep(txq, head, c, bad);
    if (dst === null || dst.nq === 0) return this.keep(txq, head, c, Drop.PeerDown);
    const dq = dst.rxQueueFor(qi);
    // A frame the peer did not negotiate (TSO, an open checksum) takes the copy path, which does the work.
    const swappable = dstZc && dst.zeroCopy && dq >= 0 && (unread || this.offloads.fits(dst.offloadCaps, dst.mtu));
    // Back-pressure (FlowControl): the frame waits for the peer's empty buffer (or copy target) rather than being dropped.
    if (dq >= 0 && this.flow.waitMs > 0 && !(swappable ? dst.hasOwnBuffer(dq) : dst.hasCopyTarget(dq))) {
      if (this.flow.shouldWait(dst)) return false;
      if (!dst.hasCopyTarget(dq)) return this.keep(txq, head, c, Drop.RxWaitTimeout);
    }
    if (swappable && dst.postings.ownCount(dq) > 0 && swapBuffers(src, txq, head, b, dst, dq, len)) {
      // The frame's bytes stay where they are: the mirror reads them after the swap as before it.
      this.delivered(src, qi, dst, dq, b, len, !unread && this.offloads.gso);
      return true;
    }
    txq.pushUsed(head, 0);
    this.copyPacket(src, qi, dst, 1);
    return true;
  }

  /** Complete tx descriptor head unchanged (the sender keeps its buffer) and count why nothing was delivered. */
  private keep(txq: DeviceQueue, head: number, c: PortCounters, why: Drop): true {
    txq.pushUsed(head, 0);
    c.drop(why);
    return true;
  }

  /**
   * A gift of cnt buffers (1, or a chain of up to GIFT_CHAIN_MAX): each link
   * delivered to the peer's posting for it or handed back. A bad link is
   * counted and skipped. dst is null when the peer is down or in another
   * sharing domain: every link goes back.
   */
  private gifts(src: PortQueues, qi: number, dst: PortQueues | null, cnt: number): void {
    const { seg } = this;
    const { ledger, tx } = src;
    const c = src.counters;
    const dstUp = dst !== null && dst.nq > 0;
    const lane = laneOpen(src, dst);
    for (let i = 0; i < cnt; i++) {
      if (lane) {
        i = giftShared(src, qi, dst!, seg, i, cnt);
        if (i === cnt) break;
      }
      const b = tx.giftLink(seg, i, src.id);
      if (b < 0) {
        c.drop(tx.drop);
        continue;
      }
      c.giftsIn++;
      src.repost(b, qi);
      if (dstUp && dst!.completeShared(b, VIRTIO_NET_HDR_SIZE) >= 0) {
        ledger.transfer(b, dst!.id);
        dst!.counters.giftsOut++;
        continue;
      }
      if (!src.returnBuffer(b)) c.drop(Drop.NoReturnSlot);
    }
  }

  /** Shared buffer b (len bytes with its header) reached dst zero-copy, moved or swapped: mirrors and counters. */
  private delivered(src: PortQueues, qi: number, dst: PortQueues, dq: number, b: number, len: number, gso: boolean): void {
    if (src.mirror !== null || dst.mirror !== null) this.mirrorShared(src, dst, src.shared.offsetOf(b), len);
    const bytes = len - VIRTIO_NET_HDR_SIZE;
    const c = src.counters;
    if (gso) c.gsoFrames++;
    c.zeroCopy++;
    countRx(src, qi, bytes);
    countTx(dst, dq, bytes);
  }

  /**
   * A zero-copy frame of len bytes (header included) from src to dst goes
   * with its header unread (docs/protocol.md, "The header of a zero-copy
   * frame"): dst takes whatever src may ask (headerUnread), and the frame
   * is within dst's MTU (above it only a GSO header could make it fit, so
   * that one is read). The lane (zc-lane.ts, hdrMaskFor) decides alike.
   */
  private passesUnread(src: PortQueues, dst: PortQueues, len: number): boolean {
    return headerUnread(src.txOffloads, dst.offloadCaps) && len - VIRTIO_NET_HDR_SIZE <= dst.mtu + ETH_HDR_MAX;
  }

  /** Check the header of shared buffer b (len bytes); -1 or the Drop reason (offloads.needs says what it asks of the peer). */
  private inspectShared(src: PortQueues, b: number, len: number): number {
    return this.offloads.inspectAt(src.shared.mem, src.shared.offsetOf(b), len);
  }

  private mirrorShared(src: PortQueues, dst: PortQueues, off: number, len: number): void {
    const mem = src.shared.mem;
    const f = off + VIRTIO_NET_HDR_SIZE;
    const n = len - VIRTIO_NET_HDR_SIZE;
    src.mirror?.frame(mem, f, n, MirrorDir.FromVm);
    dst.mirror?.frame(mem, f, n, MirrorDir.ToVm);
  }

  /**
   * Deliver the chain in this.seg by copying into dst's next classic rx
   * buffer (in dst's own memory: never a shared buffer, so never another
   * domain's region). The source resolves through src's own domain.
   */
  private copyPacket(src: PortQueues, qi: number, dst: PortQueues | null, cnt: number): void {
    const c = src.counters;
    const total = this.seg.totalLen;
    if (total < MIN_PACKET) return c.drop(Drop.TooShort);
    if (total > MAX_PACKET) return c.drop(Drop.TooLong);
    if (!resolveChain(this.seg, 0, cnt, src.mem, src.zeroCopy ? src.win : null, this.srcRes)) return c.drop(Drop.BadAddress);
    const bad = this.offloads.inspect(this.srcRes, total);
    if (bad >= 0) return c.drop(bad);
    const dq = dst === null ? -1 : dst.rxQueueFor(qi);
    if (dst === null || dq < 0) return c.drop(Drop.PeerDown);
    if (this.offloads.gso) c.gsoFrames++;
    if (!this.offloads.fits(dst.offloadCaps, dst.mtu)) return this.copyInSoftware(src, qi, dst, dq, total);
    const err = this.classic.fill(dst, dq, this.srcRes, total);
    if (err >= 0) return c.drop(err);
    if (src.mirror !== null) mirrorChain(src.mirror, this.srcRes, VIRTIO_NET_HDR_SIZE, MirrorDir.FromVm);
    if (dst.mirror !== null) mirrorChain(dst.mirror, this.srcRes, VIRTIO_NET_HDR_SIZE, MirrorDir.ToVm);
    const payload = total - VIRTIO_NET_HDR_SIZE;
    c.copied++;
    c.copiedBytes += payload;
    countRx(src, qi, payload);
    countTx(dst, dq, payload);
  }

  /** dst did not negotiate what the frame in srcRes needs (or it is over dst's MTU): cut it or complete its checksum, and copy each frame. */
  private copyInSoftware(src: PortQueues, qi: number, dst: PortQueues, dq: number, total: number): void {
    const c = src.counters;
    const off = this.offloads;
    if (!off.cutsToFit(dst.mtu)) return c.drop(Drop.OverMtu);
    const gso = off.gso;
    off.begin(this.srcRes, total, dst.offloadCaps);
    if (src.mirror !== null) mirrorChain(src.mirror, this.srcRes, VIRTIO_NET_HDR_SIZE, MirrorDir.FromVm);
    countRx(src, qi, total - VIRTIO_NET_HDR_SIZE);
    for (let n = off.next(); n > 0; n = off.next()) {
      const err = this.classic.fill(dst, dq, off.out, n);
      if (err >= 0) {
        c.drop(err);
        continue;
      }
      if (dst.mirror !== null) mirrorChain(dst.mirror, off.out, VIRTIO_NET_HDR_SIZE, MirrorDir.ToVm);
      const payload = n - VIRTIO_NET_HDR_SIZE;
      if (gso) dst.counters.segmented++;
      else dst.counters.checksummed++;
      c.copied++;
      c.copiedBytes += payload;
      countTx(dst, dq, payload);
    }
  }
}
